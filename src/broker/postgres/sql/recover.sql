-- recover: lease up to $2 jobs of queue $1 whose lease deadline has passed
-- to the caller for $3 µs under new tokens (fencing the old ones), owned by
-- worker $4 (NULL when unknown). Returns them, with when the expired lease
-- had started and whether an operator asked to cancel the job (kept).
-- The commit_mode column: unless the broker makes acknowledgements durable,
-- this transaction commits without waiting for its WAL to reach disk (see
-- docs/postgres.md, "Durability").
WITH expired AS (
    SELECT id, leased_at FROM {schema}.jobs
    WHERE queue = $1 AND state = 1 AND deadline <= now()
    ORDER BY deadline
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE {schema}.jobs AS j
SET token = nextval('{schema}.lease_tokens'), leased_at = now(), deadline = now() + $3 * interval '1 microsecond',
    owner = $4
FROM expired
WHERE j.id = expired.id
RETURNING j.id, j.token, j.deadline, j.priority, j.run_at, j.seq, j.enqueued_at, j.v, j.attempt, j.max_retries,
          j.kind, j.payload, j.idempotency_key, j.attempts, expired.leased_at AS expired_started,
          {commit_mode}, NULL::bigint AS next_due_us, j.cancel_requested
