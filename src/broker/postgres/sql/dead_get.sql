-- dead_get: dead job $2 of queue $1.
SELECT id, dead_at, dead_reason, enqueued_at, run_at, v, attempt, max_retries, kind, payload, idempotency_key, attempts,
       priority
FROM {schema}.jobs
WHERE id = $2 AND queue = $1 AND state = 2
