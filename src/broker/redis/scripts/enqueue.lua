-- Protocol 1: producers in other languages send this script (docs/redis.md, "The enqueue contract").
-- enqueue: store a batch of jobs of one queue.
-- KEYS: 1 jobs, 2 ready, 3 scheduled, 4 unique, 5 completed-keys, 6 job-keys, 7 wake
-- ARGV: four per job: id, envelope JSON, delay in ms (<= 0: ready now),
--       idempotency key ('' for none)
-- A job goes to the ready list of the priority its envelope states (field
-- "priority", -10..=10, absent for 0): see prelude.lua, "Priorities".
-- Returns one entry per job: 1 when stored, or the id of the job already
-- holding its idempotency key (or its own id when that id is already stored).
-- A batch with an id that is not a canonical job id (a UUID in lower-case
-- hyphenated form, 8-4-4-4-12 hex digits), a delay that is not a number, a
-- priority out of range or
-- a wrong number of arguments is refused whole with an error reply that
-- names the first such job: nothing of it is stored.
-- All writes come after all checks, the first one being HSET jobs: when Redis
-- is out of memory that write is refused and nothing at all is stored.
local jobs, ready, scheduled, unique, completed_keys, job_keys = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
check_types({jobs, 'hash', ready, 'list', scheduled, 'zset', unique, 'hash', completed_keys, 'zset', job_keys, 'hash',
  KEYS[7], 'list'})
check_ready_types(ready)
if #ARGV % 4 ~= 0 then
  return redis.error_reply('ERR flagship-worker: enqueue takes four arguments per job (id, envelope, delay ms, ' ..
    'idempotency key), got ' .. #ARGV .. '; nothing was stored')
end
local now = now_ms()
local n = #ARGV / 4

-- Each job's priority (stated in its envelope), and whether one is not 0.
local prios, prioritised = {}, false
local hex4 = '[0-9a-f][0-9a-f][0-9a-f][0-9a-f]'
local canonical = '^' .. hex4 .. hex4 .. '%-' .. hex4 .. '%-' .. hex4 .. '%-' .. hex4 .. '%-' .. hex4 .. hex4 .. hex4 .. '$'
for i = 1, n do
  local base = (i - 1) * 4
  local id = ARGV[base + 1]
  if not string.find(id, canonical) then
    local shown = string.gsub(string.sub(id, 1, 64), '[^%w%-]', '?')
    return redis.error_reply('ERR flagship-worker: job ' .. i .. ' of the batch has id "' .. shown ..
      '", which is not a job id in canonical form (a UUID in lower case with hyphens, ' ..
      'e.g. 0190b6a4-8f1e-7c3a-9d2b-5e6f7a8b9c0d); nothing of the batch was stored. Write ids in lower case')
  end
  if not tonumber(ARGV[base + 3]) then
    return redis.error_reply('ERR flagship-worker: job ' .. i .. ' of the batch has a delay that is not a number ' ..
      '(milliseconds expected); nothing of the batch was stored')
  end
  local p = envelope_priority(ARGV[base + 2])
  if not p then
    return redis.error_reply('ERR flagship-worker: job ' .. i .. ' of the batch has a "priority" that is not an ' ..
      'integer from -10 to 10; nothing of the batch was stored')
  end
  prios[i] = p
  if p ~= 0 then
    prioritised = true
  end
end

local ids = {}
for i = 1, n do
  ids[i] = ARGV[(i - 1) * 4 + 1]
end
local stored = {}
for i = 1, n, 4000 do
  local part = redis.call('HMGET', jobs, unpack(ids, i, math.min(i + 3999, n)))
  for j = 1, #part do
    stored[i + j - 1] = part[j]
  end
end

local out, envelopes, ready_ids, ready_prios, due, held, job_key_pairs, released = {}, {}, {}, {}, {}, {}, {}, {}
local batch_ids, batch_keys = {}, {}
for i = 1, n do
  local base = (i - 1) * 4
  local id, envelope, delay, key = ARGV[base + 1], ARGV[base + 2], tonumber(ARGV[base + 3]), ARGV[base + 4]
  local holder = nil
  if stored[i] or batch_ids[id] then
    holder = id
  elseif key ~= '' then
    holder = batch_keys[key]
    if not holder then
      holder = redis.call('HGET', unique, key)
      if holder then
        local expires = redis.call('ZSCORE', completed_keys, key)
        if expires and tonumber(expires) <= now then
          released[#released + 1] = key
          holder = nil
        end
      end
    end
  end
  if holder then
    out[i] = holder
  else
    out[i] = 1
    batch_ids[id] = true
    envelopes[#envelopes + 1] = id
    envelopes[#envelopes + 1] = envelope
    if key ~= '' then
      batch_keys[key] = id
      held[#held + 1] = key
      held[#held + 1] = id
      job_key_pairs[#job_key_pairs + 1] = id
      job_key_pairs[#job_key_pairs + 1] = key
    end
    if delay > 0 then
      due[#due + 1] = int(now + delay)
      due[#due + 1] = id
    else
      ready_ids[#ready_ids + 1] = id
      ready_prios[#ready_ids] = prios[i]
    end
  end
end

if #envelopes > 0 then
  variadic('HSET', jobs, envelopes)
  if #released > 0 then
    variadic('ZREM', completed_keys, released)
  end
  if #held > 0 then
    variadic('HSET', unique, held)
    variadic('HSET', job_keys, job_key_pairs)
  end
  if prioritised then
    -- From now on, jobs moving back to ready go to their priority's list.
    redis.call('SET', sibling(ready, 'prioritised'), '1')
  end
  if #ready_ids > 0 then
    -- After jobs already due. Not before HSET jobs: that must stay the
    -- first write (see above).
    push_ready(scheduled, ready, now, ready_ids, ready_prios)
  end
  if #due > 0 then
    variadic('ZADD', scheduled, due)
  end
  wake(KEYS[7])
end
return out
