-- release: put leased jobs back at the front of their priority's ready list without counting an attempt.
-- KEYS: 1 active, 2 lease, 3 ready, 4 wake
-- ARGV: pairs: id, lease token
-- Returns one entry per pair: 1 done, 0 lease lost. Released jobs keep their
-- relative order at the front of the queue.
check_types({KEYS[1], 'zset', KEYS[2], 'hash', KEYS[3], 'list', KEYS[4], 'list'})
check_ready_types(KEYS[3])
local out, back = check_leases(KEYS[2], 1)
if #back > 0 then
  end_leases(KEYS[1], KEYS[2], back)
  push_lists(KEYS[3], back, true)
  wake(KEYS[4])
end
return out
