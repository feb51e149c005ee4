-- history_read: the most recent buckets of one resolution of a queue's history.
-- KEYS: 1 history:minute or history:hour
-- ARGV: 1 bucket width ms, 2 buckets kept, 3 how many buckets (1 to kept)
-- Returns {now-ms, then per bucket, oldest first, the 27 fields of its slot
-- (see history.lua) or an empty array when the slot holds another bucket}.
check_types({KEYS[1], 'hash'})
local now = now_ms()
local width, kept, wanted = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local last = math.floor(now / width)
local names = history_fields()
local out = {now}
for bucket = last - wanted + 1, last do
  local prefix = int(bucket % kept) .. ':'
  local fields = {}
  for i = 1, #names do
    fields[i] = prefix .. names[i]
  end
  local values = redis.call('HMGET', KEYS[1], unpack(fields))
  if values[1] == int(bucket) then
    out[#out + 1] = values
  else
    out[#out + 1] = {}
  end
end
return out
