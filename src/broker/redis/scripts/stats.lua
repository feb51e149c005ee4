-- stats: promote due jobs, then count the queue.
-- KEYS: 1 jobs, 2 ready, 3 scheduled, 4 active, 5 dead, 6 stats
-- ARGV: 1 most scheduled jobs to promote
-- Returns {now-ms, ready, scheduled, active, dead, completed, retried,
--          dead_lettered, envelope of the oldest ready job or false}.
local now = now_ms()
promote_due(KEYS[3], KEYS[2], now, tonumber(ARGV[1]))
local counters = redis.call('HMGET', KEYS[6], 'completed', 'retried', 'dead_lettered')
local head = redis.call('LINDEX', KEYS[2], 0)
local oldest = false
if head then
  oldest = redis.call('HGET', KEYS[1], head)
end
return {
  now,
  redis.call('LLEN', KEYS[2]),
  redis.call('ZCARD', KEYS[3]),
  redis.call('ZCOUNT', KEYS[4], '-inf', '(+inf'),
  redis.call('ZCARD', KEYS[5]),
  tonumber(counters[1] or 0),
  tonumber(counters[2] or 0),
  tonumber(counters[3] or 0),
  oldest,
}
