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

-- The 27 field names of a slot (after its prefix), in this order.
local function history_fields()
  local fields = {'b', 'c', 'r', 'd', 'n', 'a'}
  for i = 0, 20 do
    fields[#fields + 1] = 'l' .. i
  end
  return fields
end

-- Clears slot `prefix` of `hash` and marks it as holding `bucket`.
local function history_reset(hash, prefix, bucket)
  local fields = history_fields()
  for i = 1, #fields do
    fields[i] = prefix .. fields[i]
  end
  redis.call('HDEL', hash, unpack(fields))
  redis.call('HSET', hash, prefix .. 'b', bucket)
end

-- Whether a `redis.pcall` reply is an error (a key of another type).
local function failed(reply)
  return type(reply) == 'table' and reply.err ~= nil
end

-- The slot prefixes of the minute and hour buckets holding `now`, each
-- cleared first if it held an older bucket. An hour bucket is a whole
-- number of minute buckets, so while the minute slot already holds the
-- current minute the hour slot holds the current hour: one HGET a call.
-- The history never stops an acknowledgement: a history key of another
-- type (written by another program) is left alone, nil is returned for
-- it, and nothing is recorded there (the history read reports the key).
local function history_slots(minutes, hours, now)
  local mb = math.floor(now / tonumber(ARGV[1]))
  local hb = math.floor(now / tonumber(ARGV[3]))
  local m = int(mb % tonumber(ARGV[2])) .. ':'
  local h = int(hb % tonumber(ARGV[4])) .. ':'
  local held = redis.pcall('HGET', minutes, m .. 'b')
  if failed(held) then
    return nil, nil
  end
  if held ~= int(mb) then
    history_reset(minutes, m, int(mb))
    held = redis.pcall('HGET', hours, h .. 'b')
    if failed(held) then
      return m, nil
    end
    if held ~= int(hb) then
      history_reset(hours, h, int(hb))
    end
  end
  return m, h
end

-- Adds `n` to the counter `field` of `hash` in one command: what the
-- prelude's `count` does (a value that is not an integer, written by
-- another program, restarts at `n`) without reading the value first, and
-- never failing the script after its other writes. The acknowledging
-- scripts use it for their stats counters too, which pays for part of
-- the history's cost.
local function add_counter(hash, field, n)
  if failed(redis.pcall('HINCRBY', hash, field, n)) then
    redis.pcall('HSET', hash, field, n)
  end
end

-- Adds `n` to `field` (c, r or d) of the minute and hour buckets holding `now`.
local function history_count(minutes, hours, now, field, n)
  local m, h = history_slots(minutes, hours, now)
  if m then
    add_counter(minutes, m .. field, n)
  end
  if h then
    add_counter(hours, h .. field, n)
  end
end
