-- dead_get: one dead job (read only).
-- KEYS: 1 dead, 2 jobs, 3 reasons
-- ARGV: 1 id
-- Returns {score, envelope or false, reason or false}, or {} when the job is not dead.
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then
  return {}
end
return {score, redis.call('HGET', KEYS[2], ARGV[1]), redis.call('HGET', KEYS[3], ARGV[1])}
