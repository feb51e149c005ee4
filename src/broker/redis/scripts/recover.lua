-- recover: take jobs whose lease deadline has passed and lease them anew.
-- KEYS: 1 jobs, 2 active, 3 lease, 4 seq
-- ARGV: 1 max jobs, 2 lease in ms
-- Returns {now-ms, id, envelope, token, started-ms of the expired lease, ...}.
-- The old token is fenced: it no longer matches the lease entry.
local jobs, active, lease = KEYS[1], KEYS[2], KEYS[3]
local now = now_ms()
local ids = redis.call('ZRANGEBYSCORE', active, '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
if #ids == 0 then
  return {now}
end
-- A removal first: Redis allows it when out of memory, and the writes
-- after it then too.
variadic('ZREM', active, ids)
local entries = redis.call('HMGET', lease, unpack(ids))
local out = {now}
local gone = lease_jobs(active, lease, KEYS[4], ids, redis.call('HMGET', jobs, unpack(ids)), now, tonumber(ARGV[2]), out, function(i)
  out[#out + 1] = int((entries[i] and lease_started(entries[i])) or now)
end)
-- Entries without an envelope (written by hand) have nothing to run.
if #gone > 0 then
  variadic('HDEL', lease, gone)
end
return out
