-- live_get: one live job, for operators.
-- KEYS: 1 jobs, 2 ready, 3 scheduled, 4 active, 5 lease
-- ARGV: 1 id
-- Returns {state, envelope, extra} as live_list's entries ('active',
-- 'scheduled' or 'ready'), or {} when no live job has the id (LPOS makes
-- finding a ready job linear in the length of ready).
local jobs, ready, scheduled, active, lease = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
check_types({jobs, 'hash', ready, 'list', scheduled, 'zset', active, 'zset', lease, 'hash'})
check_ready_types(ready)
local id = ARGV[1]
local envelope = redis.call('HGET', jobs, id)
if not envelope then
  return {}
end
local deadline = redis.call('ZSCORE', active, id)
if deadline then
  return {'active', envelope, deadline .. ' ' .. (redis.call('HGET', lease, id) or '')}
end
local due = redis.call('ZSCORE', scheduled, id)
if due then
  return {'scheduled', envelope, due}
end
if is_ready(ready, id) then
  return {'ready', envelope, ''}
end
return {}
