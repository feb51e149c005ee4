-- workers: the worker registry with Redis's time, to tell gone workers.
-- KEYS: 1 the registry hash
-- Returns {now-ms, id, entry, id, entry, ...}.
check_types({KEYS[1], 'hash'})
local out = {now_ms()}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all do
  out[#out + 1] = all[i]
end
return out
