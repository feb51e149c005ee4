-- stats: queue $1's counts, the age of its oldest ready job (ms), its
-- totals, and whether it is paused.
SELECT
    (SELECT count(*) FROM {schema}.jobs WHERE queue = $1 AND state = 0 AND run_at <= now()) AS ready,
    (SELECT count(*) FROM {schema}.jobs WHERE queue = $1 AND state = 0 AND run_at > now()) AS scheduled,
    (SELECT count(*) FROM {schema}.jobs WHERE queue = $1 AND state = 1) AS active,
    (SELECT count(*) FROM {schema}.jobs WHERE queue = $1 AND state = 2) AS dead,
    (SELECT (extract(epoch FROM now() - min(run_at)) * 1000)::bigint
     FROM {schema}.jobs WHERE queue = $1 AND state = 0 AND run_at <= now()) AS oldest_ready_ms,
    coalesce(sum(completed), 0)::bigint AS completed,
    coalesce(sum(retried), 0)::bigint AS retried,
    coalesce(sum(dead_lettered), 0)::bigint AS dead_lettered,
    EXISTS (SELECT 1 FROM {schema}.paused_queues WHERE name = $1) AS paused
FROM {schema}.counters WHERE queue = $1
