-- reschedule: end the lease ($1 id, $2 token) of a job and make it pending
-- again, due in $3 µs, with attempt $4 and history $5; $6 is 1 for a failed
-- attempt (counted as retried), 0 for a snooze. Wakes idle workers.
-- Returns one row when the lease was current, none otherwise.
-- The commit_mode column: unless the broker makes acknowledgements durable,
-- this transaction commits without waiting for its WAL to reach disk (see
-- docs/postgres.md, "Durability").
WITH moved AS (
    UPDATE {schema}.jobs
    SET state = 0, token = NULL, leased_at = NULL, deadline = NULL,
        run_at = now() + $3 * interval '1 microsecond', attempt = $4, attempts = $5
    WHERE id = $1 AND token = $2 AND state = 1
    RETURNING queue
), counted AS (
    INSERT INTO {schema}.counters AS c (queue, shard, retried)
    SELECT queue, (pg_backend_pid() % 16)::smallint, $6::bigint FROM moved WHERE $6::bigint > 0
    ON CONFLICT (queue, shard) DO UPDATE SET retried = c.retried + excluded.retried
), history AS (
    INSERT INTO {schema}.history AS h (queue, resolution, bucket, shard, retried)
    SELECT m.queue, l.resolution, {history_bucket},
           (pg_backend_pid() % 16)::smallint, $6::bigint
    FROM moved m CROSS JOIN {history_widths}
    WHERE $6::bigint > 0
    ORDER BY 1, 2
    ON CONFLICT (queue, resolution, bucket, shard) DO UPDATE SET retried = h.retried + excluded.retried
)
SELECT queue, (SELECT count(*) FROM (SELECT pg_notify('{channel}', m.queue)) n) AS woken, {commit_mode}
FROM moved m
