-- extend: move the deadline of held leases to now + ARGV[1] ms.
-- KEYS: 1 active, 2 lease
-- ARGV: 1 lease in ms, then pairs: id, lease token
-- Returns one entry per pair: 1 done, 2 done and an operator asked to
-- cancel the job, 0 lease lost.
check_types({KEYS[1], 'zset', KEYS[2], 'hash'})
local out, held, entries = check_leases(KEYS[2], 2)
for i = 1, #out do
  if out[i] == 1 and cancel_requested(entries[i]) then
    out[i] = 2
  end
end
if #held > 0 then
  local deadline = int(now_ms() + tonumber(ARGV[1]))
  local deadlines = {}
  for i = 1, #held do
    deadlines[#deadlines + 1] = deadline
    deadlines[#deadlines + 1] = held[i]
  end
  -- Remove, then add: a removal first keeps heartbeats working when Redis
  -- is out of memory.
  variadic('ZREM', KEYS[1], held)
  variadic('ZADD', KEYS[1], deadlines)
end
return out
