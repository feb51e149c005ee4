-- reserve: promote due jobs, then lease up to ARGV[1] ready jobs, highest priority
-- first, oldest first within one priority (see prelude.lua, "Priorities").
-- KEYS: 1 jobs, 2 ready, 3 scheduled, 4 active, 5 lease, 6 seq, 7 wake, 8 stats, 9 paused
-- ARGV: 1 max jobs, 2 lease in ms, 3 most scheduled jobs to promote,
--       4 what the caller knew before a wake-up token woke it: the due time
--       (ms) of the first scheduled job, '' for none, or '-' when it was not
--       woken by a token, 5 the reserving worker's id ('' when unknown)
-- A paused queue (KEYS[9] exists) leases nothing: the reply is {now, -1, 0},
-- and the caller waits for the wake-up token `resume` pushes.
-- Returns {now-ms, next-due-in-ms or -1, dropped, id, envelope, token, id, envelope, token, ...}.
-- next-due is only given when nothing was taken from ready: how long until
-- the first scheduled job falls due. An id without an envelope (written by
-- another program) is dropped: there is nothing to run. `dropped` says how
-- many were, and the stats counter `dropped` counts them.
-- A woken caller that finds nothing ready but a first due time other than
-- the one it knew passes the token on: every blocked worker then learns the
-- new due time in turn (Redis wakes the longest-blocked first), and the
-- turn ends at a worker that already knew it.
local jobs, ready, scheduled, active, lease, seq, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[8]
check_types({jobs, 'hash', ready, 'list', scheduled, 'zset', active, 'zset', lease, 'hash', seq, 'string',
  KEYS[7], 'list', stats, 'hash'})
check_ready_types(ready)
if redis.call('EXISTS', KEYS[9]) == 1 then
  return {now_ms(), -1, 0}
end
-- Before LPOP: INCRBY on a sequence that is not a number would fail after it.
check_seq(seq)
local now = now_ms()

-- Removals first: they are allowed when Redis is out of memory, and the
-- writes after them then are too, so workers keep draining a full Redis.
promote_due(scheduled, ready, now, tonumber(ARGV[3]))

local ids = take_ready(ready, tonumber(ARGV[1]))
if not ids then
  local first = redis.call('ZRANGE', scheduled, 0, 0, 'WITHSCORES')
  local next_due = -1
  if first[2] then
    next_due = math.max(0, tonumber(first[2]) - now)
    local knew = ARGV[4]
    if knew ~= '-' and (knew == '' or tonumber(knew) ~= tonumber(first[2])) then
      wake(KEYS[7])
    end
  end
  return {now, next_due, 0}
end

local out = {now, -1, 0}
local gone = lease_jobs(active, lease, seq, ids, redis.call('HMGET', jobs, unpack(ids)), now, tonumber(ARGV[2]), out,
  nil, ARGV[5])
if #gone > 0 then
  out[3] = #gone
  count(stats, 'dropped', #gone)
end
-- Pass the baton: another idle worker can take what is left.
if any_ready(ready) then
  wake(KEYS[7])
end
return out
