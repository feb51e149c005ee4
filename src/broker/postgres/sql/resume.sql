-- resume: resume queue $1 and wake its idle workers (on commit). Returns
-- whether it was paused.
WITH resumed AS (
    DELETE FROM {schema}.paused_queues WHERE name = $1 RETURNING name
)
SELECT EXISTS (SELECT 1 FROM resumed) AS was_paused,
       (SELECT count(*) FROM (SELECT pg_notify('{channel}', $1)) n) AS woken
