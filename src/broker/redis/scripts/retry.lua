-- retry: record a failed attempt (or a snooze) and schedule the job to run again.
-- KEYS: 1 jobs, 2 active, 3 lease, 4 ready, 5 scheduled, 6 stats, 7 wake,
--       8 history:minute, 9 history:hour
-- ARGV: 1-4 the history layout (history.lua), 5 id, 6 lease token, 7 the updated envelope,
--       8 delay in ms (<= 0: ready now),
--       9 '1' for a failed attempt (counted as retried), '0' for a snooze
-- Returns 1 done, 0 lease lost (nothing changed).
local id = ARGV[5]
check_types({KEYS[1], 'hash', KEYS[2], 'zset', KEYS[3], 'hash', KEYS[4], 'list', KEYS[5], 'zset', KEYS[6], 'hash',
  KEYS[7], 'list'})
check_ready_types(KEYS[4])
if not end_lease(KEYS[2], KEYS[3], id, ARGV[6]) then
  return 0
end
local now = now_ms()
redis.call('HSET', KEYS[1], id, ARGV[7])
local delay = tonumber(ARGV[8])
if delay > 0 then
  redis.call('ZADD', KEYS[5], int(now + delay), id)
else
  push_ready(KEYS[5], KEYS[4], now, {id})
end
if ARGV[9] == '1' then
  add_counter(KEYS[6], 'retried', 1)
  history_count(KEYS[8], KEYS[9], now, 'r', 1)
end
-- Ready now, or a new earliest due time a blocked worker must sleep towards.
wake(KEYS[7])
return 1
