-- dead_delete: delete dead jobs and release their idempotency keys.
-- KEYS: 1 dead, 2 jobs, 3 reasons, 4 job-keys, 5 unique
-- ARGV: 1 only entries with a score below this ('' for any), then ids
-- Returns the number deleted; ids not dead (or not old enough) are left alone.
check_types({KEYS[1], 'zset', KEYS[2], 'hash', KEYS[3], 'hash', KEYS[4], 'hash', KEYS[5], 'hash'})
local below = nil
if ARGV[1] ~= '' then
  below = tonumber(ARGV[1])
end
local gone = {}
for i = 2, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and (not below or tonumber(score) < below) then
    gone[#gone + 1] = ARGV[i]
  end
end
if #gone == 0 then
  return 0
end
variadic('ZREM', KEYS[1], gone)
variadic('HDEL', KEYS[2], gone)
variadic('HDEL', KEYS[3], gone)
local keys = redis.call('HMGET', KEYS[4], unpack(gone))
local release, keyed = {}, {}
for i = 1, #gone do
  local key = keys[i]
  if key and redis.call('HGET', KEYS[5], key) == gone[i] then
    release[#release + 1] = key
  end
  if key then
    keyed[#keyed + 1] = gone[i]
  end
end
if #keyed > 0 then
  variadic('HDEL', KEYS[4], keyed)
end
if #release > 0 then
  variadic('HDEL', KEYS[5], release)
end
return #gone
