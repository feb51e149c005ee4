-- reserve: lease up to $2 due jobs of queue $1 for $3 µs, highest priority
-- first, then oldest due, then enqueue order. Rows another transaction is
-- leasing are skipped, never waited for. Each job gets a new fencing token.
-- Returns the leased rows (unordered: the caller sorts by priority, run_at, seq).
-- The commit_mode column: unless the broker makes acknowledgements durable,
-- this transaction commits without waiting for its WAL to reach disk (see
-- docs/postgres.md, "Durability").
WITH picked AS (
    SELECT id FROM {schema}.jobs
    WHERE queue = $1 AND state = 0 AND run_at <= now()
    ORDER BY priority DESC, run_at, seq
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE {schema}.jobs AS j
SET state = 1, token = nextval('{schema}.lease_tokens'), leased_at = now(),
    deadline = now() + $3 * interval '1 microsecond'
FROM picked
WHERE j.id = picked.id
RETURNING j.id, j.token, j.deadline, j.priority, j.run_at, j.seq, j.enqueued_at, j.v, j.attempt, j.max_retries,
          j.kind, j.payload, j.idempotency_key, j.attempts, NULL::timestamptz AS expired_started,
          {commit_mode}
