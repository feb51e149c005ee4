-- dead_list: one page of the dead-letter queue, oldest dead-lettered first (read only).
-- KEYS: 1 dead, 2 jobs, 3 reasons
-- ARGV: 1 lowest score (inclusive, or '-inf'), 2 highest score (exclusive, or '+inf'),
--       3 score of the entry to start after ('' from the start), 4 its id, 5 page size
-- Returns {id, score, envelope or false, reason or false, ...}, ordered by
-- score, then id.
local low, high = ARGV[1], ARGV[2]
if high ~= '+inf' then
  high = '(' .. high
end
local after_score, after_id = nil, ARGV[4]
if ARGV[3] ~= '' then
  after_score = tonumber(ARGV[3])
  if low == '-inf' or after_score >= tonumber(low) then
    low = ARGV[3]
  end
end
local limit = tonumber(ARGV[5])
local ids, scores = {}, {}
local offset = 0
while #ids < limit do
  local batch = redis.call('ZRANGEBYSCORE', KEYS[1], low, high, 'WITHSCORES', 'LIMIT', offset, limit * 2)
  if #batch == 0 then
    break
  end
  offset = offset + #batch / 2
  for i = 1, #batch, 2 do
    local id, score = batch[i], batch[i + 1]
    local skip = after_score and tonumber(score) == after_score and id <= after_id
    if not skip and #ids < limit then
      ids[#ids + 1] = id
      scores[#scores + 1] = score
    end
  end
end
if #ids == 0 then
  return {}
end
local envelopes = redis.call('HMGET', KEYS[2], unpack(ids))
local reasons = redis.call('HMGET', KEYS[3], unpack(ids))
local out = {}
for i = 1, #ids do
  out[#out + 1] = ids[i]
  out[#out + 1] = scores[i]
  out[#out + 1] = envelopes[i]
  out[#out + 1] = reasons[i]
end
return out
