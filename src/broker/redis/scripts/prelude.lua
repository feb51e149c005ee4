-- flagship-worker: helpers shared by every script (prepended to each one).
-- Scripts take data only through KEYS and ARGV and read time from Redis.

-- Every script checks what can fail before its first write: Redis keeps
-- the writes a script made before an error, so a failure after them would
-- leave jobs half moved. Keys of the wrong type stop the script at once
-- (check_types); a counter or the token sequence holding something other
-- than a number is repaired rather than failing (count, check_seq).

-- Stops the script with an error, before it writes anything, when one of
-- `types` (key, type, key, type, ...) holds another type than the broker
-- keeps there: another program wrote it. A missing key is fine.
local function check_types(types)
  for i = 1, #types, 2 do
    local found = redis.call('TYPE', types[i])['ok']
    if found ~= 'none' and found ~= types[i + 1] then
      error({err = 'ERR flagship-worker: key ' .. types[i] .. ' holds a ' .. found .. ', not the ' ..
        types[i + 1] .. ' the broker keeps there; another program wrote it. Nothing was changed. ' ..
        'Rename the key away (and move its jobs back by hand), then the queue works again; see docs/redis.md'})
    end
  end
end

-- Adds `n` to the counter `field` of the stats hash `stats`. A value that
-- is not an integer (written by another program) restarts the counter at
-- `n` instead of failing the script after its other writes.
local function count(stats, field, n)
  local v = redis.call('HGET', stats, field)
  if not v or (string.find(v, '^%-?%d+$') and #v <= 18) then
    redis.call('HINCRBY', stats, field, n)
  else
    redis.call('HSET', stats, field, n)
  end
end

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

-- A lease entry is "<token>:<started-ms>:<cancel>:<owner>": `cancel` is
-- 'c' once an operator asked to cancel the job ('' before), `owner` the id
-- of the worker that reserved it ('' when unknown). Entries written before
-- those fields existed end after <started-ms>. Does `entry` hold `token`?
local function holds(entry, token)
  return entry and string.sub(entry, 1, #token + 1) == token .. ':'
end

-- When the lease in `entry` started, in milliseconds.
local function lease_started(entry)
  return tonumber(string.match(entry, '^[^:]*:(%d+)'))
end

-- Whether an operator asked to cancel the job leased in `entry`.
local function cancel_requested(entry)
  return entry and string.match(entry, '^[^:]*:[^:]*:c:') ~= nil
end

-- The largest lease token kept exact: tokens are Lua numbers (doubles).
local MAX_TOKEN = 9007199254740992 - 4294967296

-- Makes sure the lease token sequence `seq` counts on from a number. Any
-- other value (written by another program) would fail INCRBY after the
-- script's first writes, so it is replaced, before them, by Redis's time
-- in microseconds: above every token handed out since the sequence began
-- (or was last repaired) unless more than a million a second were.
local function check_seq(seq)
  local v = redis.call('GET', seq)
  if v and not (string.find(v, '^%d+$') and #v <= 16 and tonumber(v) <= MAX_TOKEN) then
    local t = redis.call('TIME')
    local fresh = string.format('%d', tonumber(t[1]) * 1000000 + tonumber(t[2]))
    redis.log(redis.LOG_WARNING, 'flagship-worker: ' .. seq .. ' did not hold a token count; restarted it at ' .. fresh)
    redis.call('SET', seq, fresh)
  end
end

-- Priorities. Jobs of priority 0 wait in the queue's `ready` list; jobs of
-- another priority p (-10..=10, higher reserved first) in `ready:<p>`, a
-- list of its own. The sorted set `priorities` holds (scored by itself)
-- every p != 0 whose list may hold jobs; the string `prioritised` exists
-- once the queue was sent a job of priority != 0 (only then do scripts read
-- envelopes to learn where a job goes back to). Those keys are named after
-- the ready key the script is given (same {hash tag}, same slot).

-- The name of the queue's key `name`, beside its ready key `ready` ("{q}:ready").
local function sibling(ready, name)
  return string.sub(ready, 1, -6) .. name
end

-- The ready list of priority `p`.
local function ready_list(ready, p)
  if p == 0 then
    return ready
  end
  return ready .. ':' .. int(p)
end

-- The priority an envelope states: 0 when it states none (the field is
-- omitted at 0), nil when it states one that is not an integer in -10..=10.
-- Envelopes without the text "priority" are not decoded.
local function envelope_priority(envelope)
  if not envelope or not string.find(envelope, '"priority"', 1, true) then
    return 0
  end
  local ok, decoded = pcall(cjson.decode, envelope)
  if not ok or type(decoded) ~= 'table' or decoded.priority == nil then
    return 0
  end
  local p = decoded.priority
  if type(p) ~= 'number' or p ~= math.floor(p) or p < -10 or p > 10 then
    return nil
  end
  return p
end

-- Every ready list of the queue, in reservation order (highest priority
-- first), with its priority: {{key, p}, ...}.
local function ready_lists(ready)
  local ps = redis.call('ZREVRANGE', sibling(ready, 'priorities'), 0, -1)
  local out, base_done = {}, false
  for _, p in ipairs(ps) do
    p = tonumber(p)
    if p and p ~= 0 then
      if p < 0 and not base_done then
        out[#out + 1] = {ready, 0}
        base_done = true
      end
      out[#out + 1] = {ready_list(ready, p), p}
    end
  end
  if not base_done then
    out[#out + 1] = {ready, 0}
  end
  return out
end

-- check_types for the keys of priorities: the set of priorities in use, the
-- marker and every ready list the set names.
local function check_ready_types(ready)
  local set = sibling(ready, 'priorities')
  check_types({set, 'zset', sibling(ready, 'prioritised'), 'string'})
  if redis.call('EXISTS', set) == 0 then
    return -- only `ready`, which the caller checks
  end
  local types = {}
  for _, l in ipairs(ready_lists(ready)) do
    types[#types + 1] = l[1]
    types[#types + 1] = 'list'
  end
  check_types(types)
end

-- How many jobs are ready at any priority.
local function ready_count(ready)
  local n = 0
  for _, l in ipairs(ready_lists(ready)) do
    n = n + redis.call('LLEN', l[1])
  end
  return n
end

-- Whether a job is ready at any priority.
local function any_ready(ready)
  return redis.call('LLEN', ready) > 0 or
    (redis.call('EXISTS', sibling(ready, 'priorities')) == 1 and ready_count(ready) > 0)
end

-- Forgets priority `p` in the set of priorities in use when its list is empty.
local function forget_if_empty(ready, key, p)
  if p ~= 0 and redis.call('LLEN', key) == 0 then
    redis.call('ZREM', sibling(ready, 'priorities'), int(p))
  end
end

-- Takes up to `n` ready ids, highest priority first, oldest first within
-- one; false when none is ready.
local function take_ready(ready, n)
  local set = sibling(ready, 'priorities')
  if redis.call('EXISTS', set) == 0 then
    return redis.call('LPOP', ready, n)
  end
  local taken = {}
  for _, l in ipairs(ready_lists(ready)) do
    if #taken >= n then
      break
    end
    local ids = redis.call('LPOP', l[1], n - #taken)
    if ids then
      for _, id in ipairs(ids) do
        taken[#taken + 1] = id
      end
    end
    forget_if_empty(ready, l[1], l[2])
  end
  if #taken == 0 then
    return false
  end
  return taken
end

-- Puts `ids` in the ready lists of their priorities: at the back (RPUSH),
-- or at the front keeping their order when `front`. `prios` gives each id's
-- priority; without it they are read from the envelopes in `jobs`, if the
-- queue ever had a job of priority != 0 (else all are 0).
local function push_lists(ready, ids, front, prios)
  if #ids == 0 then
    return
  end
  if not prios and redis.call('EXISTS', sibling(ready, 'prioritised')) == 1 then
    prios = {}
    local jobs = sibling(ready, 'jobs')
    for i = 1, #ids, 4000 do
      local part = redis.call('HMGET', jobs, unpack(ids, i, math.min(i + 3999, #ids)))
      for j = 1, #part do
        prios[i + j - 1] = envelope_priority(part[j]) or 0
      end
    end
  end
  local groups, order = {}, {}
  for i, id in ipairs(ids) do
    local p = (prios and prios[i]) or 0
    if not groups[p] then
      groups[p] = {}
      order[#order + 1] = p
    end
    local g = groups[p]
    g[#g + 1] = id
  end
  for _, p in ipairs(order) do
    local g = groups[p]
    if front then
      local reversed = {}
      for i = #g, 1, -1 do
        reversed[#reversed + 1] = g[i]
      end
      variadic('LPUSH', ready_list(ready, p), reversed)
    else
      variadic('RPUSH', ready_list(ready, p), g)
    end
    if p ~= 0 then
      redis.call('ZADD', sibling(ready, 'priorities'), int(p), int(p))
    end
  end
end

-- Removes `id` from whichever ready list holds it; 1 when one did, else 0.
local function remove_ready(ready, id)
  for _, l in ipairs(ready_lists(ready)) do
    if redis.call('LREM', l[1], 1, id) == 1 then
      forget_if_empty(ready, l[1], l[2])
      return 1
    end
  end
  return 0
end

-- Whether a ready list holds `id` (LPOS: linear in the lists' lengths).
local function is_ready(ready, id)
  for _, l in ipairs(ready_lists(ready)) do
    if redis.call('LPOS', l[1], id) then
      return true
    end
  end
  return false
end

-- Most due jobs one script promotes besides what it was asked for.
local PROMOTE_LIMIT = 1000

-- Moves up to `limit` scheduled jobs due by `now` to the back of their
-- ready lists, in due order; returns how many it moved.
local function promote_due(scheduled, ready, now, limit)
  local due = redis.call('ZRANGEBYSCORE', scheduled, '-inf', now, 'LIMIT', 0, limit)
  if #due > 0 then
    variadic('ZREM', scheduled, due)
    push_lists(ready, due, false)
  end
  return #due
end

-- Adds `ids`, ready as of `now`, at the back of their ready lists, after
-- the jobs that fell due before them, so each list stays in run-time order
-- and its head is its oldest job (what `stats` reports the age of). When
-- more jobs are due than one call promotes, `ids` join them in `scheduled`
-- instead, due now: the next promotion puts them in order. `prios` as for
-- push_lists.
local function push_ready(scheduled, ready, now, ids, prios)
  if promote_due(scheduled, ready, now, PROMOTE_LIMIT) < PROMOTE_LIMIT then
    push_lists(ready, ids, false, prios)
  else
    local due = {}
    for _, id in ipairs(ids) do
      due[#due + 1] = int(now)
      due[#due + 1] = id
    end
    variadic('ZADD', scheduled, due)
  end
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

-- Checks the `id token` pairs of ARGV from position `from` against the
-- lease hash. Returns one status per pair (1 held, 0 lost), the held ids
-- and the lease entries of all the pairs.
local function check_leases(lease, from)
  local ids = {}
  for i = from, #ARGV, 2 do
    ids[#ids + 1] = ARGV[i]
  end
  local entries = redis.call('HMGET', lease, unpack(ids))
  local out, held = {}, {}
  for i = 1, #ids do
    if holds(entries[i], ARGV[from + i * 2 - 1]) then
      out[i] = 1
      held[#held + 1] = ids[i]
    else
      out[i] = 0
    end
  end
  return out, held, entries
end

-- Ends the leases of `ids` (removals only).
local function end_leases(active, lease, ids)
  variadic('ZREM', active, ids)
  variadic('HDEL', lease, ids)
end

-- Ends the lease of one job if `token` holds it; false when it does not.
local function end_lease(active, lease, id, token)
  if not holds(redis.call('HGET', lease, id), token) then
    return false
  end
  end_leases(active, lease, {id})
  return true
end

-- Leases the jobs `ids` whose `envelopes` exist under new tokens (from
-- `seq`) until now + lease_ms, for the worker `owner` ('' or nil when
-- unknown), keeping the cancel requests `cancels[i]` ('c') if given. For
-- each appends id, envelope and token to `out`, then calls `more(i)` if
-- given. Returns the ids without an envelope.
local function lease_jobs(active, lease, seq, ids, envelopes, now, lease_ms, out, more, owner, cancels)
  local token = redis.call('INCRBY', seq, #ids) - #ids
  local deadline = int(now + lease_ms)
  local started = ':' .. int(now) .. ':'
  local tail = ':' .. (owner or '')
  local deadlines, leases, gone = {}, {}, {}
  for i, id in ipairs(ids) do
    token = token + 1
    if envelopes[i] then
      local t = int(token)
      deadlines[#deadlines + 1] = deadline
      deadlines[#deadlines + 1] = id
      leases[#leases + 1] = id
      leases[#leases + 1] = t .. started .. ((cancels and cancels[i]) or '') .. tail
      out[#out + 1] = id
      out[#out + 1] = envelopes[i]
      out[#out + 1] = t
      if more then
        more(i)
      end
    else
      gone[#gone + 1] = id
    end
  end
  if #deadlines > 0 then
    keep_hashed(active, lease)
    variadic('ZADD', active, deadlines)
    variadic('HSET', lease, leases)
  end
  return gone
end
