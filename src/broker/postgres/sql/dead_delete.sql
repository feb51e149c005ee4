-- dead_delete: delete up to $4 dead jobs of queue $1: job $2 alone, or
-- (with $2 NULL) those dead-lettered before $3, oldest first. Their
-- idempotency keys are released. Returns how many were deleted.
WITH gone AS (
    DELETE FROM {schema}.jobs
    WHERE id IN (
        SELECT id FROM {schema}.jobs
        WHERE queue = $1 AND state = 2
          AND ($2::uuid IS NULL OR id = $2)
          AND ($3::timestamptz IS NULL OR dead_at < $3)
        ORDER BY dead_at, id
        LIMIT $4
        FOR UPDATE
    )
    RETURNING id, queue, idempotency_key
), freed AS (
    DELETE FROM {schema}.idempotency_keys AS k
    USING gone
    WHERE gone.idempotency_key IS NOT NULL AND k.queue = gone.queue AND k.key = gone.idempotency_key
      AND k.job_id = gone.id
)
SELECT count(*) FROM gone
