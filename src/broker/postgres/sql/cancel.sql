-- cancel: an operator cancels job $2 of queue $1. A pending job moves to
-- the dead-letter queue with reason $3 (no attempt recorded, counted as
-- dead-lettered); a leased one gets its cancel request stored, for
-- `extend` to report. Returns 'dead' or 'signalled'; no row when no live
-- job has the id.
WITH target AS (
    SELECT id, state FROM {schema}.jobs
    WHERE queue = $1 AND id = $2 AND state IN (0, 1)
    FOR UPDATE
), signalled AS (
    UPDATE {schema}.jobs AS j SET cancel_requested = true
    FROM target t WHERE j.id = t.id AND t.state = 1
    RETURNING 'signalled'::text AS outcome
), dead AS (
    UPDATE {schema}.jobs AS j SET state = 2, dead_at = now(), dead_reason = $3
    FROM target t WHERE j.id = t.id AND t.state = 0
    RETURNING 'dead'::text AS outcome
), counted AS (
    INSERT INTO {schema}.counters AS c (queue, shard, dead_lettered)
    SELECT $1, (pg_backend_pid() % 16)::smallint, count(*) FROM dead HAVING count(*) > 0
    ON CONFLICT (queue, shard) DO UPDATE SET dead_lettered = c.dead_lettered + excluded.dead_lettered
), history AS (
    INSERT INTO {schema}.history AS h (queue, resolution, bucket, shard, dead_lettered)
    SELECT $1, l.resolution, {history_bucket},
           (pg_backend_pid() % 16)::smallint, count(*)
    FROM dead d CROSS JOIN {history_widths}
    GROUP BY l.resolution, l.width ORDER BY 1, 2
    ON CONFLICT (queue, resolution, bucket, shard) DO UPDATE SET dead_lettered = h.dead_lettered + excluded.dead_lettered
)
SELECT outcome FROM signalled
UNION ALL
SELECT outcome FROM dead
