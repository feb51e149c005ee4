-- dead_retry: move dead jobs back to ready, each only if it is unchanged.
-- KEYS: 1 dead, 2 jobs, 3 reasons, 4 ready, 5 wake, 6 scheduled
-- ARGV: triples: id, the envelope as read, the envelope to store
-- Returns one entry per triple: 1 retried, 0 not dead (already retried or
-- deleted), 2 changed since it was read (read it again and retry).
check_types({KEYS[1], 'zset', KEYS[2], 'hash', KEYS[3], 'hash', KEYS[4], 'list', KEYS[5], 'list', KEYS[6], 'zset'})
check_ready_types(KEYS[4])
local out, moved = {}, {}
for i = 1, #ARGV, 3 do
  local id = ARGV[i]
  local result = 0
  if redis.call('ZSCORE', KEYS[1], id) then
    if redis.call('HGET', KEYS[2], id) == ARGV[i + 1] then
      result = 1
      moved[#moved + 1] = id
    else
      result = 2
    end
  end
  out[#out + 1] = result
end
if #moved > 0 then
  variadic('ZREM', KEYS[1], moved)
  variadic('HDEL', KEYS[3], moved)
  local envelopes = {}
  for i = 1, #ARGV, 3 do
    if out[(i + 2) / 3] == 1 then
      envelopes[#envelopes + 1] = ARGV[i]
      envelopes[#envelopes + 1] = ARGV[i + 2]
    end
  end
  variadic('HSET', KEYS[2], envelopes)
  push_ready(KEYS[6], KEYS[4], now_ms(), moved)
  wake(KEYS[5])
end
return out
