-- flagship-worker: helpers shared by every script (prepended to each one).
-- Scripts take data only through KEYS and ARGV and read time from Redis.

-- Redis time in whole milliseconds since the Unix epoch.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Redis time in milliseconds with microseconds as the fraction.
local function now_ms_precise()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end

-- An integer as decimal text (tostring would switch to exponents).
local function int(n)
  return string.format('%d', n)
end

-- Calls a variadic command with `args` in slices small enough for unpack.
local function variadic(cmd, key, args)
  local n = #args
  for i = 1, n, 4000 do
    redis.call(cmd, key, unpack(args, i, math.min(i + 3999, n)))
  end
end

-- A lease entry is "<token>:<started-ms>"; does it hold `token`?
local function holds(entry, token)
  return entry and string.sub(entry, 1, #token + 1) == token .. ':'
end

-- When the lease in `entry` started, in milliseconds.
local function lease_started(entry)
  local sep = string.find(entry, ':', 1, true)
  return sep and tonumber(string.sub(entry, sep + 1)) or nil
end

-- Wakes one worker blocked on the queue's wake list (at most one token waits).
local function wake(key)
  redis.call('LPUSH', key, '1')
  redis.call('LTRIM', key, 0, 0)
end

-- A member kept in every queue's `active` sorted set (score +inf) and
-- `lease` hash. Longer than 64 bytes, it keeps both in Redis's hashed
-- encodings: the compact ones make each insert and lookup linear in the
-- size, which costs more than the rest of a reservation at a few hundred
-- leased jobs. It never expires and is never a job id.
local SENTINEL = 'flagship-worker:sentinel: keeps this key in its hashed encoding, see docs/redis.md'

local function keep_hashed(active, lease)
  redis.call('ZADD', active, 'NX', '+inf', SENTINEL)
  redis.call('HSETNX', lease, SENTINEL, '')
end
