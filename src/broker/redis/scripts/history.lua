-- Queue history (prepended after the prelude to the scripts that record it).
-- Two hashes per queue, {q}:history:minute and {q}:history:hour, each a ring
-- of `kept` slots: slot s = bucket % kept holds the fields
--   s:b  the bucket number (ms since the epoch / width) the slot holds now
--   s:c  completed, s:r retried, s:d dead-lettered
--   s:n  ready depth sampled, s:a oldest ready age sampled (ms)
--   s:l0 .. s:l20  start latencies counted per range (see docs/redis.md)
-- A slot whose s:b is not the bucket asked for is stale: it is cleared
-- before its first write and read as empty, so buckets expire by
-- construction and each hash holds at most `kept` slots.
-- The layout comes first in ARGV: 1 minute width ms, 2 minutes kept,
-- 3 hour width ms, 4 hours kept.

local HISTORY_FIELDS = {'b', 'c', 'r', 'd', 'n', 'a'}
for i = 0, 20 do
  HISTORY_FIELDS[#HISTORY_FIELDS + 1] = 'l' .. i
end

-- The slot prefix of the bucket holding `now` in `hash`, cleared first if it
-- held an older bucket.
local function history_slot(hash, width, kept, now)
  local bucket = math.floor(now / width)
  local prefix = int(bucket % kept) .. ':'
  local held = redis.call('HGET', hash, prefix .. 'b')
  if held ~= int(bucket) then
    local fields = {}
    for i = 1, #HISTORY_FIELDS do
      fields[i] = prefix .. HISTORY_FIELDS[i]
    end
    redis.call('HDEL', hash, unpack(fields))
    redis.call('HSET', hash, prefix .. 'b', int(bucket))
  end
  return prefix
end

-- The slot prefixes of the minute and hour buckets holding `now`.
local function history_slots(minutes, hours, now)
  return history_slot(minutes, tonumber(ARGV[1]), tonumber(ARGV[2]), now),
    history_slot(hours, tonumber(ARGV[3]), tonumber(ARGV[4]), now)
end

-- Adds `n` to `field` (c, r or d) of the minute and hour buckets holding `now`.
local function history_count(minutes, hours, now, field, n)
  local m, h = history_slots(minutes, hours, now)
  count(minutes, m .. field, n)
  count(hours, h .. field, n)
end
