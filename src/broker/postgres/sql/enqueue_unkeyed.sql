-- enqueue_unkeyed: store a batch of jobs without idempotency keys in one
-- statement, the fast way: a plain insert, no per-row conflict handling.
-- $1 to $10 as for `enqueue`. A job whose id is stored already fails the
-- whole statement with a unique violation (nothing is stored); the broker
-- then sends the batch again with `enqueue`, which reports it.
-- Returns the number of wake-ups sent (one per queue, on commit).
WITH stored AS (
    INSERT INTO {schema}.jobs (id, queue, kind, payload, run_at, attempt, max_retries, attempts, priority)
    SELECT id, queue, kind, payload, now() + delay_us * interval '1 microsecond', attempt, max_retries, attempts,
           priority
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::integer[], $7::integer[],
                $8::text[], $10::smallint[])
        WITH ORDINALITY AS t(id, queue, kind, payload, delay_us, attempt, max_retries, attempts, priority, ord)
    ORDER BY ord
), registered AS (
    INSERT INTO {schema}.queues (name) SELECT unnest($9::text[]) ON CONFLICT DO NOTHING
)
SELECT count(*) FROM (SELECT pg_notify('{channel}', q) FROM unnest($9::text[]) q) n
