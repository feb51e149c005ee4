-- dead_retry: move up to $5 dead jobs of queue $1 back to pending, due now,
-- with `attempt` reset and their history and idempotency key kept: job $6
-- alone, or (with $6 NULL) those of kind $2 (NULL: any) dead-lettered in
-- [$3, $4) (NULL: unbounded), oldest first. A row another transaction is
-- retrying is waited for and then left out, so of concurrent retries of a
-- job exactly one moves it. Wakes idle workers. Returns the ids moved.
WITH picked AS (
    SELECT id FROM {schema}.jobs
    WHERE queue = $1 AND state = 2
      AND ($6::uuid IS NULL OR id = $6)
      AND ($2::text IS NULL OR kind = $2)
      AND ($3::timestamptz IS NULL OR dead_at >= $3)
      AND ($4::timestamptz IS NULL OR dead_at < $4)
    ORDER BY dead_at, id
    LIMIT $5
    FOR UPDATE
), moved AS (
    UPDATE {schema}.jobs AS j
    SET state = 0, attempt = 0, run_at = now(), dead_at = NULL, dead_reason = NULL
    FROM picked
    WHERE j.id = picked.id
    RETURNING j.id, j.queue
)
SELECT id, (SELECT count(*) FROM (SELECT pg_notify('{channel}', q.queue) FROM (SELECT DISTINCT queue FROM moved) q) n) AS woken
FROM moved
