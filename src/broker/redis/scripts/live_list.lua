-- live_list: every job of one state, for operators' listings (the caller
-- filters, orders and pages; reading the whole state is linear in its size).
-- KEYS: 1 jobs, 2 the state's key (ready list, scheduled or active zset), 3 lease
-- For 'ready', every priority's list is read (named after KEYS[2]).
-- ARGV: 1 the state: 'ready', 'scheduled' or 'active'
-- Returns {now-ms, id, envelope or false, extra, ...}: extra is '' for a
-- ready job, its due time (ms) for a scheduled one, and
-- "<deadline-ms> <lease entry>" for an active one.
local jobs, state, lease = KEYS[1], KEYS[2], KEYS[3]
local kind = ARGV[1]
local ids, extras = {}, {}
if kind == 'ready' then
  check_types({jobs, 'hash', state, 'list'})
  check_ready_types(state)
  for _, l in ipairs(ready_lists(state)) do
    for _, id in ipairs(redis.call('LRANGE', l[1], 0, -1)) do
      ids[#ids + 1] = id
      extras[#ids] = ''
    end
  end
else
  check_types({jobs, 'hash', state, 'zset', lease, 'hash'})
  local scored = redis.call('ZRANGEBYSCORE', state, '-inf', '(+inf', 'WITHSCORES')
  for i = 1, #scored, 2 do
    ids[#ids + 1] = scored[i]
    extras[#extras + 1] = scored[i + 1]
  end
  if kind == 'active' and #ids > 0 then
    local entries = redis.call('HMGET', lease, unpack(ids))
    for i = 1, #ids do
      extras[i] = extras[i] .. ' ' .. (entries[i] or '')
    end
  end
end
local out = {now_ms()}
for i = 1, #ids, 4000 do
  local part = {}
  for j = i, math.min(i + 3999, #ids) do
    part[#part + 1] = ids[j]
  end
  local envelopes = redis.call('HMGET', jobs, unpack(part))
  for j = 1, #part do
    out[#out + 1] = part[j]
    out[#out + 1] = envelopes[j]
    out[#out + 1] = extras[i + j - 1]
  end
end
return out
