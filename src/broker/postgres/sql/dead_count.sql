-- dead_count: how many dead jobs of queue $1 are of kind $2 (NULL: any)
-- and were dead-lettered in [$3, $4) (NULL: unbounded).
SELECT count(*)
FROM {schema}.jobs
WHERE queue = $1 AND state = 2
  AND ($2::text IS NULL OR kind = $2)
  AND ($3::timestamptz IS NULL OR dead_at >= $3)
  AND ($4::timestamptz IS NULL OR dead_at < $4)
