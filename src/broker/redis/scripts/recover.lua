-- recover: take jobs whose lease deadline has passed and lease them anew.
-- KEYS: 1 jobs, 2 active, 3 lease, 4 seq, 5 stats
-- ARGV: 1 max jobs, 2 lease in ms
-- Returns {now-ms, dropped, id, envelope, token, started-ms of the expired lease,
--          1 if an operator asked to cancel the job else 0, ...}.
-- The cancel request is kept on the new lease; the owner is cleared.
-- The old token is fenced: it no longer matches the lease entry. Entries
-- without an envelope (written by another program) have nothing to run:
-- they are dropped, and counted in `dropped` and the stats counter.
local jobs, active, lease, seq, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
check_types({jobs, 'hash', active, 'zset', lease, 'hash', seq, 'string', stats, 'hash'})
check_seq(seq)
local now = now_ms()
local ids = redis.call('ZRANGEBYSCORE', active, '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
if #ids == 0 then
  return {now, 0}
end
-- A removal first: Redis allows it when out of memory, and the writes
-- after it then too.
variadic('ZREM', active, ids)
local entries = redis.call('HMGET', lease, unpack(ids))
local cancels = {}
for i = 1, #ids do
  cancels[i] = cancel_requested(entries[i]) and 'c' or ''
end
local out = {now, 0}
local gone = lease_jobs(active, lease, seq, ids, redis.call('HMGET', jobs, unpack(ids)), now, tonumber(ARGV[2]), out, function(i)
  out[#out + 1] = int((entries[i] and lease_started(entries[i])) or now)
  out[#out + 1] = cancels[i] == 'c' and 1 or 0
end, '', cancels)
if #gone > 0 then
  variadic('HDEL', lease, gone)
  out[2] = #gone
  count(stats, 'dropped', #gone)
end
return out
