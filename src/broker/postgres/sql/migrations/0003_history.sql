-- Migration 3: the queue history (see docs/postgres.md, "Queue history").
--
-- One row per queue, resolution (0 minute, 1 hour), bucket (ms since the
-- epoch divided by the bucket width) and shard. Acknowledgements count into
-- shards by server process, as the counters do, so concurrent ones rarely
-- wait on one row; workers' samples (ready depth, oldest ready age, start
-- latencies per range) go in shard -1. Reads sum the shards. Rows older
-- than the layout keeps are deleted when samples are recorded.
CREATE TABLE {schema}.history (
    queue text COLLATE "C" NOT NULL,
    resolution smallint NOT NULL,
    bucket bigint NOT NULL,
    shard smallint NOT NULL,
    completed bigint NOT NULL DEFAULT 0,
    retried bigint NOT NULL DEFAULT 0,
    dead_lettered bigint NOT NULL DEFAULT 0,
    ready bigint,
    oldest_ready_age_ms bigint,
    latency bigint[],
    PRIMARY KEY (queue, resolution, bucket, shard)
);
