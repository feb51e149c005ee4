-- next_due: how long until the first pending job of queue $1 falls due, in
-- µs (0 when one is due now), or NULL when none is pending. Walks the
-- distinct priorities through the ready index instead of scanning the queue.
WITH RECURSIVE priorities AS (
    (SELECT priority FROM {schema}.jobs WHERE queue = $1 AND state = 0 ORDER BY priority DESC LIMIT 1)
    UNION ALL
    SELECT (SELECT j.priority FROM {schema}.jobs j
            WHERE j.queue = $1 AND j.state = 0 AND j.priority < p.priority
            ORDER BY j.priority DESC LIMIT 1)
    FROM priorities p WHERE p.priority IS NOT NULL
)
SELECT greatest(0, (extract(epoch FROM min(first_due) - clock_timestamp()) * 1000000)::bigint)
FROM (
    SELECT (SELECT j.run_at FROM {schema}.jobs j
            WHERE j.queue = $1 AND j.state = 0 AND j.priority = p.priority
            ORDER BY j.run_at LIMIT 1) AS first_due
    FROM priorities p WHERE p.priority IS NOT NULL
) due
