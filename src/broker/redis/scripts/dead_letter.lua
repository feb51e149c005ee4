-- dead_letter: move a leased job to the dead-letter queue.
-- KEYS: 1 jobs, 2 active, 3 lease, 4 dead, 5 reasons, 6 stats, 7 history:minute, 8 history:hour
-- ARGV: 1-4 the history layout (history.lua), 5 id, 6 lease token, 7 the updated envelope
--       ('' keeps the stored text, for envelopes that cannot be decoded), 8 reason,
--       9 the id to file it under ('' keeps ARGV[5]; used when the stored id
--       is not a canonical job id), 10 the id to file it under instead when
--       another job is already stored under ARGV[9] ('' for none: then it
--       stays under ARGV[5])
-- Returns 1 done, 0 lease lost (nothing changed).
-- The dead zset's score is the dead-lettered time: ms with a microsecond fraction.
local id = ARGV[5]
check_types({KEYS[1], 'hash', KEYS[2], 'zset', KEYS[3], 'hash', KEYS[4], 'zset', KEYS[5], 'hash', KEYS[6], 'hash'})
if not holds(redis.call('HGET', KEYS[3], id), ARGV[6]) then
  return 0
end
-- Never file a job over another one.
local dead_id = id
for i = 9, 10 do
  local candidate = ARGV[i]
  if dead_id == id and candidate and candidate ~= '' and candidate ~= id
      and redis.call('HEXISTS', KEYS[1], candidate) == 0 then
    dead_id = candidate
  end
end
local now = now_ms_precise()
-- Removals first (see reserve).
end_leases(KEYS[2], KEYS[3], {id})
if dead_id ~= id then
  local stored = redis.call('HGET', KEYS[1], id)
  redis.call('HDEL', KEYS[1], id)
  if stored then
    redis.call('HSET', KEYS[1], dead_id, stored)
  end
end
if ARGV[7] ~= '' then
  redis.call('HSET', KEYS[1], dead_id, ARGV[7])
end
redis.call('ZADD', KEYS[4], string.format('%.3f', now), dead_id)
redis.call('HSET', KEYS[5], dead_id, ARGV[8])
add_counter(KEYS[6], 'dead_lettered', 1)
history_count(KEYS[7], KEYS[8], now, 'd', 1)
return 1
