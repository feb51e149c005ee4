-- history_read: the buckets of queue $1 at resolution $2 (0 minute, 1 hour)
-- of width $3 ms, the $4 most recent ones, by the database's clock. Returns
-- the time now (ms) on every row, then per bucket stored: its number, the
-- counts summed over shards, the sample and the latency counts; one row
-- with a NULL bucket when none is stored.
WITH t AS (
    SELECT floor(extract(epoch FROM now()) * 1000)::bigint AS now_ms
)
SELECT t.now_ms, h.bucket,
       coalesce(sum(h.completed), 0)::bigint, coalesce(sum(h.retried), 0)::bigint,
       coalesce(sum(h.dead_lettered), 0)::bigint,
       max(h.ready), max(h.oldest_ready_age_ms),
       max(h.latency)
FROM t LEFT JOIN {schema}.history h
    ON h.queue = $1 AND h.resolution = $2
   AND h.bucket > t.now_ms / $3 - $4 AND h.bucket <= t.now_ms / $3
GROUP BY t.now_ms, h.bucket
ORDER BY h.bucket
