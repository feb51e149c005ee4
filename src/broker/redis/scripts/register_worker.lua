-- register_worker: a worker's heartbeat in the worker registry.
-- KEYS: 1 the registry hash (worker id -> "<seen-ms> <expires-ms> <info JSON>")
-- ARGV: 1 worker id, 2 ttl in ms, 3 the worker's info (JSON), 4 how long
--       gone workers are kept (ms)
-- Stores the entry stamped with Redis's time, and forgets workers gone
-- (expired) for longer than ARGV[4], and entries that are not in that form.
-- Returns 1.
local registry = KEYS[1]
check_types({registry, 'hash'})
local now = now_ms()
local all = redis.call('HGETALL', registry)
local forget = {}
for i = 1, #all, 2 do
  local expires = tonumber(string.match(all[i + 1], '^%d+ (%d+) '))
  if not expires or expires + tonumber(ARGV[4]) <= now then
    forget[#forget + 1] = all[i]
  end
end
if #forget > 0 then
  variadic('HDEL', registry, forget)
end
redis.call('HSET', registry, ARGV[1], int(now) .. ' ' .. int(now + tonumber(ARGV[2])) .. ' ' .. ARGV[3])
return 1
