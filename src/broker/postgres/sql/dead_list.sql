-- dead_list: up to $7 dead jobs of queue $1, oldest dead-lettered first
-- (then by id), of kind $2 (NULL: any), dead-lettered in [$3, $4) (NULL:
-- unbounded), after the entry ($5, $6) (NULL: from the start).
SELECT id, dead_at, dead_reason, enqueued_at, run_at, v, attempt, max_retries, kind, payload, idempotency_key, attempts,
       priority
FROM {schema}.jobs
WHERE queue = $1 AND state = 2
  AND ($2::text IS NULL OR kind = $2)
  AND ($3::timestamptz IS NULL OR dead_at >= $3)
  AND ($4::timestamptz IS NULL OR dead_at < $4)
  AND ($5::timestamptz IS NULL OR (dead_at, id) > ($5, $6::uuid))
ORDER BY dead_at, id
LIMIT $7
