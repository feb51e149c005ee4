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
local entries = redis.call('HMGET', lease, unpack(ids))
local envelopes = redis.call('HMGET', jobs, unpack(ids))
local token = redis.call('INCRBY', KEYS[4], #ids) - #ids
local deadline = int(now + tonumber(ARGV[2]))
local started = ':' .. int(now)
local out, deadlines, leases, gone = {now}, {}, {}, {}
for i, id in ipairs(ids) do
  token = token + 1
  if envelopes[i] then
    local t = int(token)
    deadlines[#deadlines + 1] = deadline
    deadlines[#deadlines + 1] = id
    leases[#leases + 1] = id
    leases[#leases + 1] = t .. started
    out[#out + 1] = id
    out[#out + 1] = envelopes[i]
    out[#out + 1] = t
    out[#out + 1] = int((entries[i] and lease_started(entries[i])) or now)
  else
    gone[#gone + 1] = id
  end
end
-- Entries without an envelope (written by hand) have nothing to run.
if #gone > 0 then
  variadic('ZREM', active, gone)
  variadic('HDEL', lease, gone)
end
if #deadlines > 0 then
  keep_hashed(active, lease)
  variadic('ZREM', active, ids)
  variadic('ZADD', active, deadlines)
  variadic('HSET', lease, leases)
end
return out
