-- history_sample: record a worker's sample of a queue in its history.
-- KEYS: 1 history:minute, 2 history:hour
-- ARGV: 1-4 the history layout (see history.lua), 5 ready depth,
--       6 oldest ready age in ms ('' for none), 7-27 start latency counts per range
-- The minute bucket keeps its first sample's depth and age (one sample per
-- minute across workers); the hour bucket keeps the highest; latencies add.
-- Returns 1.
check_types({KEYS[1], 'hash', KEYS[2], 'hash'})
local now = now_ms()
local m, h = history_slots(KEYS[1], KEYS[2], now)
local ready, age = ARGV[5], ARGV[6]
if redis.call('HEXISTS', KEYS[1], m .. 'n') == 0 then
  redis.call('HSET', KEYS[1], m .. 'n', ready)
  if age ~= '' then
    redis.call('HSET', KEYS[1], m .. 'a', age)
  end
end
local function keep_highest(field, value)
  if value == '' then
    return
  end
  local held = tonumber(redis.call('HGET', KEYS[2], h .. field))
  if not held or held < tonumber(value) then
    redis.call('HSET', KEYS[2], h .. field, value)
  end
end
keep_highest('n', ready)
keep_highest('a', age)
for i = 0, 20 do
  local n = tonumber(ARGV[7 + i])
  if n and n > 0 then
    add_counter(KEYS[1], m .. 'l' .. i, n)
    add_counter(KEYS[2], h .. 'l' .. i, n)
  end
end
return 1
