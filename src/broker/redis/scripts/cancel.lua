-- cancel: an operator cancels a live job.
-- KEYS: 1 jobs, 2 ready, 3 scheduled, 4 active, 5 lease, 6 dead, 7 reasons, 8 stats,
--       9 history:minute, 10 history:hour
-- ARGV: 1-4 the history layout (history.lua), 5 id, 6 the stored envelope as
--       the caller read it, 7 the envelope to store once dead (dead-lettered
--       time and reason set), 8 the reason
-- Returns 1 when the job was ready or scheduled and is now dead (no attempt
-- recorded), 2 when it is active: the request is stored in its lease entry
-- (`extend` reports it, `recover` keeps it), 0 when no live job has the id,
-- 3 when the stored envelope is not the one the caller read (nothing
-- changed: read it again). LREM makes cancelling a ready job linear in the
-- length of ready.
local jobs, ready, scheduled, active, lease = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
check_types({jobs, 'hash', ready, 'list', scheduled, 'zset', active, 'zset', lease, 'hash', KEYS[6], 'zset',
  KEYS[7], 'hash', KEYS[8], 'hash'})
check_ready_types(ready)
local id = ARGV[5]
if redis.call('ZSCORE', active, id) then
  local entry = redis.call('HGET', lease, id)
  if not entry then
    return 0
  end
  if not cancel_requested(entry) then
    local token, started, rest = string.match(entry, '^([^:]*):(%d+)(.*)$')
    if not token then
      return 0
    end
    local owner = string.match(rest, '^:[^:]*:(.*)$') or ''
    redis.call('HSET', lease, id, token .. ':' .. started .. ':c:' .. owner)
  end
  return 2
end
local stored = redis.call('HGET', jobs, id)
if not stored then
  return 0
end
if stored ~= ARGV[6] then
  return 3
end
-- Removals first (see reserve).
if redis.call('ZREM', scheduled, id) == 0 and remove_ready(ready, id) == 0 then
  return 0
end
local now = now_ms_precise()
redis.call('HSET', jobs, id, ARGV[7])
redis.call('ZADD', KEYS[6], string.format('%.3f', now), id)
redis.call('HSET', KEYS[7], id, ARGV[8])
count(KEYS[8], 'dead_lettered', 1)
history_count(KEYS[9], KEYS[10], now_ms(), 'd', 1)
return 1
