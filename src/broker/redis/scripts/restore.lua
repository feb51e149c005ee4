-- restore: put back jobs whose envelope is stored in `jobs` but whose id is
-- in no state set (ready, scheduled, active, dead): a program other than the
-- broker wrote the envelope alone, or a script failed half-way in a version
-- that did not check first. Bounded: one HSCAN page per call, and no look
-- at all while ready is longer than ARGV[2]. Every call goes on with the
-- scan (comparing counts would not do: ids without an envelope in the
-- state sets, also written by others, can hide as many envelopes without one).
-- KEYS: 1 jobs, 2 ready, 3 scheduled, 4 active, 5 dead, 6 stats, 7 wake, 8 restore-cursor
-- ARGV: 1 entries of `jobs` to look at per call (the HSCAN COUNT),
--       2 longest ready list to look for ids in (LPOS is linear in it)
-- Returns {state, id, id, ...}: state 0 when `jobs` is empty, 1 when a page
-- was looked at, 2 when ready was too long to look in this time; then the
-- ids put back at the back of ready (counted in the stats counter `restored`).
local jobs, ready, scheduled, active, dead, stats, cursor_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[8]
check_types({jobs, 'hash', ready, 'list', scheduled, 'zset', active, 'zset', dead, 'zset', stats, 'hash',
  KEYS[7], 'list', cursor_key, 'string'})
check_ready_types(ready)
if redis.call('HLEN', jobs) == 0 then
  redis.call('DEL', cursor_key)
  return {0}
end
local ready_len = ready_count(ready)
if ready_len > tonumber(ARGV[2]) then
  return {2}
end
local cursor = redis.call('GET', cursor_key)
if not cursor or not string.find(cursor, '^%d+$') or #cursor > 20 or
    (#cursor == 20 and cursor > '18446744073709551615') then
  cursor = '0'
end
local page = redis.call('HSCAN', jobs, cursor, 'COUNT', tonumber(ARGV[1]))
local fields, orphans = page[2], {}
for i = 1, #fields, 2 do
  local id = fields[i]
  if not redis.call('ZSCORE', scheduled, id) and not redis.call('ZSCORE', active, id)
      and not redis.call('ZSCORE', dead, id) and not is_ready(ready, id) then
    orphans[#orphans + 1] = id
  end
end
if page[1] == '0' then
  redis.call('DEL', cursor_key)
else
  redis.call('SET', cursor_key, page[1])
end
local out = {1}
if #orphans > 0 then
  push_ready(scheduled, ready, now_ms(), orphans)
  count(stats, 'restored', #orphans)
  wake(KEYS[7])
  for _, id in ipairs(orphans) do
    out[#out + 1] = id
  end
end
return out
