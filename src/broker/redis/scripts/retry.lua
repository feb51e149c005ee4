-- retry: record a failed attempt (or a snooze) and schedule the job to run again.
-- KEYS: 1 jobs, 2 active, 3 lease, 4 ready, 5 scheduled, 6 stats, 7 wake
-- ARGV: 1 id, 2 lease token, 3 the updated envelope, 4 delay in ms (<= 0: ready now),
--       5 '1' for a failed attempt (counted as retried), '0' for a snooze
-- Returns 1 done, 0 lease lost (nothing changed).
local id = ARGV[1]
check_types({KEYS[1], 'hash', KEYS[2], 'zset', KEYS[3], 'hash', KEYS[4], 'list', KEYS[5], 'zset', KEYS[6], 'hash',
  KEYS[7], 'list'})
check_ready_types(KEYS[4])
if not end_lease(KEYS[2], KEYS[3], id, ARGV[2]) then
  return 0
end
local now = now_ms()
redis.call('HSET', KEYS[1], id, ARGV[3])
local delay = tonumber(ARGV[4])
if delay > 0 then
  redis.call('ZADD', KEYS[5], int(now + delay), id)
else
  push_ready(KEYS[5], KEYS[4], now, {id})
end
if ARGV[5] == '1' then
  count(KEYS[6], 'retried', 1)
end
-- Ready now, or a new earliest due time a blocked worker must sleep towards.
wake(KEYS[7])
return 1
