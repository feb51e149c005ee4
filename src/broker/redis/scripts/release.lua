-- release: put leased jobs back at the front of ready without counting an attempt.
-- KEYS: 1 active, 2 lease, 3 ready, 4 wake
-- ARGV: pairs: id, lease token
-- Returns one entry per pair: 1 done, 0 lease lost. Released jobs keep their
-- relative order at the front of the queue.
local n = #ARGV / 2
local ids = {}
for i = 1, n do
  ids[i] = ARGV[i * 2 - 1]
end
local entries = redis.call('HMGET', KEYS[2], unpack(ids))
local out, back = {}, {}
for i = 1, n do
  if holds(entries[i], ARGV[i * 2]) then
    out[i] = 1
    back[#back + 1] = ids[i]
  else
    out[i] = 0
  end
end
if #back > 0 then
  variadic('ZREM', KEYS[1], back)
  variadic('HDEL', KEYS[2], back)
  -- LPUSH puts its last argument first: push in reverse to keep the order.
  local reversed = {}
  for i = #back, 1, -1 do
    reversed[#reversed + 1] = back[i]
  end
  variadic('LPUSH', KEYS[3], reversed)
  wake(KEYS[4])
end
return out
