-- history_sample: record a worker's sample of queue $1: ready depth $2,
-- oldest ready age $3 (ms, NULL for none), start latency counts per range
-- $4. The minute bucket keeps its first sample's depth and age, the hour
-- bucket the highest; latencies add. Rows of buckets past what the layout
-- keeps are deleted.
WITH buckets AS (
    SELECT resolution, floor(extract(epoch FROM now()) * 1000 / width)::bigint AS bucket, kept
    FROM (VALUES (0::smallint, {history_minute_ms}::numeric, {history_minutes_kept}::bigint),
                 (1::smallint, {history_hour_ms}::numeric, {history_hours_kept}::bigint)) AS l(resolution, width, kept)
), sampled AS (
    INSERT INTO {schema}.history AS h (queue, resolution, bucket, shard, ready, oldest_ready_age_ms, latency)
    SELECT $1, resolution, bucket, -1, $2, $3, $4::bigint[] FROM buckets ORDER BY resolution
    ON CONFLICT (queue, resolution, bucket, shard) DO UPDATE SET
        ready = CASE WHEN h.resolution = 0 THEN coalesce(h.ready, excluded.ready)
                     ELSE greatest(h.ready, excluded.ready) END,
        oldest_ready_age_ms = CASE WHEN h.resolution = 0
                                   THEN (CASE WHEN h.ready IS NULL THEN excluded.oldest_ready_age_ms
                                              ELSE h.oldest_ready_age_ms END)
                                   ELSE greatest(h.oldest_ready_age_ms, excluded.oldest_ready_age_ms) END,
        latency = (SELECT array_agg(coalesce(a, 0) + coalesce(b, 0) ORDER BY i)
                   FROM unnest(h.latency, excluded.latency) WITH ORDINALITY AS t(a, b, i))
), expired AS (
    DELETE FROM {schema}.history AS h
    USING buckets b
    WHERE h.queue = $1 AND h.resolution = b.resolution AND h.bucket <= b.bucket - b.kept
)
SELECT 1
