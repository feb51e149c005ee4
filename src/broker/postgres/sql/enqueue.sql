-- enqueue: store a batch of jobs (of any queues) in one statement, checking
-- idempotency keys and ids already stored.
-- $1 ids, $2 queues, $3 kinds, $4 payloads (JSON text), $5 delays in µs,
-- $6 attempts so far, $7 max retries, $8 attempt histories (JSON text or
-- NULL), $9 the batch's queues (each once), $10 priorities, $11 idempotency
-- keys (NULL for none; unique per queue within the batch).
-- A key held by a pending, leased or dead job, or by a job completed within
-- the retention, refuses the job; an expired one is taken over. A job whose
-- id is stored already is refused. Idle workers are woken when the
-- transaction commits.
-- Returns one row with a NULL position that sends the wake-ups, then a row
-- (position in the batch from 1, the job holding its key or NULL, whether
-- it was stored) for each job with a key and each job not stored: every
-- job not listed was stored.
WITH input AS (
    SELECT *
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::integer[], $7::integer[],
                $8::text[], $11::text[], $10::smallint[])
        WITH ORDINALITY AS t(id, queue, kind, payload, delay_us, attempt, max_retries, attempts, key, priority, ord)
), registered AS (
    INSERT INTO {schema}.queues (name) SELECT unnest($9::text[]) ON CONFLICT DO NOTHING
), claimed AS (
    INSERT INTO {schema}.idempotency_keys AS k (queue, key, job_id)
    SELECT queue, key, id FROM input WHERE key IS NOT NULL ORDER BY queue, key
    ON CONFLICT (queue, key) DO UPDATE
        SET job_id = CASE WHEN k.expires_at <= now() THEN excluded.job_id ELSE k.job_id END,
            expires_at = CASE WHEN k.expires_at <= now() THEN NULL ELSE k.expires_at END
    RETURNING k.queue, k.key, k.job_id
), stored AS (
    INSERT INTO {schema}.jobs (id, queue, kind, payload, idempotency_key, run_at, attempt, max_retries, attempts,
                               priority)
    SELECT i.id, i.queue, i.kind, i.payload, i.key, now() + i.delay_us * interval '1 microsecond', i.attempt,
           i.max_retries, i.attempts, i.priority
    FROM input i
    WHERE i.key IS NULL
       OR EXISTS (SELECT 1 FROM claimed c WHERE c.queue = i.queue AND c.key = i.key AND c.job_id = i.id)
    ORDER BY i.ord
    ON CONFLICT (id) DO NOTHING
    RETURNING id
)
SELECT NULL::bigint AS ord, NULL::uuid AS holder, NULL::boolean AS stored
FROM (SELECT count(*) FROM (SELECT pg_notify('{channel}', q) FROM unnest($9::text[]) q) n) woken
UNION ALL
SELECT i.ord, c.job_id, s.id IS NOT NULL
FROM input i
LEFT JOIN claimed c ON c.queue = i.queue AND c.key = i.key
LEFT JOIN stored s ON s.id = i.id
WHERE i.key IS NOT NULL OR s.id IS NULL
