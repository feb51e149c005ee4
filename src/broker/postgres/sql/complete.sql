-- complete: delete finished jobs whose lease ($1 ids, $2 tokens; sorted by
-- id so concurrent calls lock rows in one order) is current. Their
-- idempotency keys stay held for $3 µs; up to 64 keys whose hold has
-- passed are released. Returns the ids deleted.
-- The commit_mode column: unless the broker makes acknowledgements durable,
-- this transaction commits without waiting for its WAL to reach disk (see
-- docs/postgres.md, "Durability").
WITH done AS (
    DELETE FROM {schema}.jobs AS j
    USING unnest($1::uuid[], $2::bigint[]) AS t(id, token)
    WHERE j.id = t.id AND j.token = t.token AND j.state = 1
    RETURNING j.id, j.queue, j.idempotency_key
), kept AS (
    UPDATE {schema}.idempotency_keys AS k
    SET expires_at = now() + $3 * interval '1 microsecond'
    FROM done
    WHERE done.idempotency_key IS NOT NULL AND k.queue = done.queue AND k.key = done.idempotency_key
      AND k.job_id = done.id
), counted AS (
    INSERT INTO {schema}.counters AS c (queue, shard, completed)
    SELECT queue, (pg_backend_pid() % 16)::smallint, count(*) FROM done GROUP BY queue ORDER BY queue
    ON CONFLICT (queue, shard) DO UPDATE SET completed = c.completed + excluded.completed
), history AS (
    INSERT INTO {schema}.history AS h (queue, resolution, bucket, shard, completed)
    SELECT d.queue, l.resolution, {history_bucket},
           (pg_backend_pid() % 16)::smallint, count(*)
    FROM done d CROSS JOIN {history_widths}
    GROUP BY d.queue, l.resolution, l.width ORDER BY 1, 2
    ON CONFLICT (queue, resolution, bucket, shard) DO UPDATE SET completed = h.completed + excluded.completed
), released AS (
    DELETE FROM {schema}.idempotency_keys
    WHERE ctid = ANY (ARRAY(
        SELECT ctid FROM {schema}.idempotency_keys
        WHERE expires_at <= now()
        ORDER BY expires_at
        LIMIT 64
        FOR UPDATE SKIP LOCKED
    ))
)
SELECT id, {commit_mode} FROM done
