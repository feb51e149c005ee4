-- extend: move the deadline of held leases to now + ARGV[1] ms.
-- KEYS: 1 active, 2 lease
-- ARGV: 1 lease in ms, then pairs: id, lease token
-- Returns one entry per pair: 1 done, 0 lease lost.
local n = (#ARGV - 1) / 2
local ids = {}
for i = 1, n do
  ids[i] = ARGV[i * 2]
end
local entries = redis.call('HMGET', KEYS[2], unpack(ids))
local out, held, deadlines = {}, {}, {}
local deadline = int(now_ms() + tonumber(ARGV[1]))
for i = 1, n do
  if holds(entries[i], ARGV[i * 2 + 1]) then
    out[i] = 1
    held[#held + 1] = ids[i]
    deadlines[#deadlines + 1] = deadline
    deadlines[#deadlines + 1] = ids[i]
  else
    out[i] = 0
  end
end
if #held > 0 then
  -- Remove, then add: a removal first keeps heartbeats working when Redis
  -- is out of memory.
  variadic('ZREM', KEYS[1], held)
  variadic('ZADD', KEYS[1], deadlines)
end
return out
