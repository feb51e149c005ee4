-- Protocol 1: producers in other languages send this script (docs/redis.md, "The enqueue contract").
-- enqueue: store a batch of jobs of one queue.
-- KEYS: 1 jobs, 2 ready, 3 scheduled, 4 unique, 5 completed-keys, 6 job-keys, 7 wake
-- ARGV: four per job: id, envelope JSON, delay in ms (<= 0: ready now),
--       idempotency key ('' for none)
-- Returns one entry per job: 1 when stored, or the id of the job already
-- holding its idempotency key (or its own id when that id is already stored).
-- All writes come after all checks, the first one being HSET jobs: when Redis
-- is out of memory that write is refused and nothing at all is stored.
local jobs, ready, scheduled, unique, completed_keys, job_keys = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local now = now_ms()
local n = #ARGV / 4

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

local out, envelopes, ready_ids, due, held, job_key_pairs, released = {}, {}, {}, {}, {}, {}, {}
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
  if #ready_ids > 0 then
    -- After jobs already due. Not before HSET jobs: that must stay the
    -- first write (see above).
    push_ready(scheduled, ready, now, ready_ids)
  end
  if #due > 0 then
    variadic('ZADD', scheduled, due)
  end
  wake(KEYS[7])
end
return out
