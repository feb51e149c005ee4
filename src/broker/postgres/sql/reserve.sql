-- reserve: lease up to $2 due jobs of queue $1 for $3 µs to worker $4 (NULL
-- when unknown), highest priority first, then oldest due, then enqueue
-- order; nothing while the queue is paused. Rows another transaction is
-- leasing are skipped, never waited for. Each job gets a new fencing token
-- and no cancel request.
-- Returns the leased rows (unordered: the caller sorts by priority, run_at,
-- seq); when none was leased, one row instead, all NULL but its last
-- column: how long until the first pending job of the queue falls due, in
-- µs (0 when one is due now), or NULL when none is pending or the queue is
-- paused. The last column (cancel_requested) is false. That walks the
-- distinct priorities through the ready index instead of scanning the queue,
-- and runs only when nothing was leased.
-- The commit_mode column: unless the broker makes acknowledgements durable,
-- this transaction commits without waiting for its WAL to reach disk (see
-- docs/postgres.md, "Durability").
WITH RECURSIVE picked AS (
    SELECT id FROM {schema}.jobs
    WHERE queue = $1 AND state = 0 AND run_at <= now()
      AND NOT EXISTS (SELECT 1 FROM {schema}.paused_queues WHERE name = $1)
    ORDER BY priority DESC, run_at, seq
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), leased AS (
    UPDATE {schema}.jobs AS j
    SET state = 1, token = nextval('{schema}.lease_tokens'), leased_at = now(),
        deadline = now() + $3 * interval '1 microsecond', owner = $4, cancel_requested = false
    FROM picked
    WHERE j.id = picked.id
    RETURNING j.id, j.token, j.deadline, j.priority, j.run_at, j.seq, j.enqueued_at, j.v, j.attempt, j.max_retries,
              j.kind, j.payload, j.idempotency_key, j.attempts
), priorities AS (
    (SELECT priority FROM {schema}.jobs WHERE queue = $1 AND state = 0 ORDER BY priority DESC LIMIT 1)
    UNION ALL
    SELECT (SELECT j.priority FROM {schema}.jobs j
            WHERE j.queue = $1 AND j.state = 0 AND j.priority < p.priority
            ORDER BY j.priority DESC LIMIT 1)
    FROM priorities p WHERE p.priority IS NOT NULL
)
SELECT l.*, NULL::timestamptz AS expired_started, {commit_mode}, NULL::bigint AS next_due_us,
       false AS cancel_requested
FROM leased l
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       CASE WHEN EXISTS (SELECT 1 FROM {schema}.paused_queues WHERE name = $1) THEN NULL
            ELSE greatest(0, (extract(epoch FROM min(first_due) - clock_timestamp()) * 1000000)::bigint) END,
       NULL::boolean
FROM (
    SELECT (SELECT j.run_at FROM {schema}.jobs j
            WHERE j.queue = $1 AND j.state = 0 AND j.priority = p.priority
            ORDER BY j.run_at LIMIT 1) AS first_due
    FROM priorities p WHERE p.priority IS NOT NULL
) due
WHERE NOT EXISTS (SELECT 1 FROM leased)
