-- complete: acknowledge finished jobs; they leave the queue.
-- KEYS: 1 jobs, 2 active, 3 lease, 4 job-keys, 5 unique, 6 completed-keys, 7 stats,
--       8 history:minute, 9 history:hour
-- ARGV: 1-4 the history layout (history.lua), 5 idempotency-key retention in ms,
--       then pairs: id, lease token
-- Returns one entry per pair: 1 done, 0 lease lost (nothing changed).
-- A completed job's idempotency key stays held for the retention window;
-- keys whose window has passed are released here, a bounded number per call.
local jobs, active, lease, job_keys, unique, completed_keys = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
check_types({jobs, 'hash', active, 'zset', lease, 'hash', job_keys, 'hash', unique, 'hash', completed_keys, 'zset',
  KEYS[7], 'hash'})
local now = now_ms()
local out, done = check_leases(lease, 6)

if #done > 0 then
  end_leases(active, lease, done)
  variadic('HDEL', jobs, done)
  if redis.call('EXISTS', job_keys) == 1 then
    local keys = redis.call('HMGET', job_keys, unpack(done))
    local expiring, keyed = {}, {}
    local until_ms = int(now + tonumber(ARGV[5]))
    for i = 1, #done do
      if keys[i] then
        expiring[#expiring + 1] = until_ms
        expiring[#expiring + 1] = keys[i]
        keyed[#keyed + 1] = done[i]
      end
    end
    if #keyed > 0 then
      variadic('HDEL', job_keys, keyed)
      variadic('ZADD', completed_keys, expiring)
    end
  end
  add_counter(KEYS[7], 'completed', #done)
  history_count(KEYS[8], KEYS[9], now, 'c', #done)
end

local expired = redis.call('ZRANGEBYSCORE', completed_keys, '-inf', now, 'LIMIT', 0, #done + 16)
if #expired > 0 then
  variadic('ZREM', completed_keys, expired)
  variadic('HDEL', unique, expired)
end
return out
