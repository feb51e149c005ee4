-- stats: promote due jobs, then count the queue.
-- KEYS: 1 jobs, 2 ready, 3 scheduled, 4 active, 5 dead, 6 stats, 7 paused
-- ARGV: 1 most scheduled jobs to promote
-- Returns {now-ms, ready, scheduled, active, dead, completed, retried,
--          dead_lettered, dropped, restored, {envelope of each ready list's head, ...},
--          1 if the queue is paused else 0}.
-- A counter holding something other than a number reads as 0.
check_types({KEYS[1], 'hash', KEYS[2], 'list', KEYS[3], 'zset', KEYS[4], 'zset', KEYS[5], 'zset', KEYS[6], 'hash'})
check_ready_types(KEYS[2])
local now = now_ms()
promote_due(KEYS[3], KEYS[2], now, tonumber(ARGV[1]))
local counters = redis.call('HMGET', KEYS[6], 'completed', 'retried', 'dead_lettered', 'dropped', 'restored')
local function counter(i)
  local n = tonumber(counters[i] or 0)
  if not n or n ~= n or n < 0 or n > 9007199254740992 then
    return 0
  end
  return math.floor(n)
end
-- The head of each priority's ready list is its oldest job; the caller
-- picks the oldest of them.
local heads, ready = {}, 0
for _, l in ipairs(ready_lists(KEYS[2])) do
  local head = redis.call('LINDEX', l[1], 0)
  if head then
    heads[#heads + 1] = redis.call('HGET', KEYS[1], head) or false
    ready = ready + redis.call('LLEN', l[1])
  end
end
return {
  now,
  ready,
  redis.call('ZCARD', KEYS[3]),
  redis.call('ZCOUNT', KEYS[4], '-inf', '(+inf'),
  redis.call('ZCARD', KEYS[5]),
  counter(1),
  counter(2),
  counter(3),
  counter(4),
  counter(5),
  heads,
  redis.call('EXISTS', KEYS[7]),
}
