-- dead_letter: end the leases ($1 ids, $2 tokens) of jobs and move them to
-- the dead-letter queue with reasons $3 and histories $4 (NULL keeps the
-- stored one). Returns the ids moved.
-- The commit_mode column: unless the broker makes acknowledgements durable,
-- this transaction commits without waiting for its WAL to reach disk (see
-- docs/postgres.md, "Durability").
WITH dead AS (
    UPDATE {schema}.jobs AS j
    SET state = 2, token = NULL, leased_at = NULL, deadline = NULL, dead_at = now(), dead_reason = t.reason,
        attempts = coalesce(t.attempts, j.attempts)
    FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::text[]) AS t(id, token, reason, attempts)
    WHERE j.id = t.id AND j.token = t.token AND j.state = 1
    RETURNING j.id, j.queue
), counted AS (
    INSERT INTO {schema}.counters AS c (queue, shard, dead_lettered)
    SELECT queue, (pg_backend_pid() % 16)::smallint, count(*) FROM dead GROUP BY queue ORDER BY queue
    ON CONFLICT (queue, shard) DO UPDATE SET dead_lettered = c.dead_lettered + excluded.dead_lettered
), history AS (
    INSERT INTO {schema}.history AS h (queue, resolution, bucket, shard, dead_lettered)
    SELECT d.queue, l.resolution, {history_bucket},
           (pg_backend_pid() % 16)::smallint, count(*)
    FROM dead d CROSS JOIN {history_widths}
    GROUP BY d.queue, l.resolution, l.width ORDER BY 1, 2
    ON CONFLICT (queue, resolution, bucket, shard) DO UPDATE SET dead_lettered = h.dead_lettered + excluded.dead_lettered
)
SELECT id, {commit_mode} FROM dead
