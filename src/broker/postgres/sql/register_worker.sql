-- register_worker: worker $1's heartbeat with its description $2 (JSON),
-- live for $3 µs from now; forgets workers gone for longer than $4 µs.
WITH forgotten AS (
    DELETE FROM {schema}.workers WHERE expires_at < now() - $4 * interval '1 microsecond' AND id <> $1
)
INSERT INTO {schema}.workers (id, info, last_seen, expires_at)
VALUES ($1, $2, now(), now() + $3 * interval '1 microsecond')
ON CONFLICT (id) DO UPDATE SET info = excluded.info, last_seen = excluded.last_seen, expires_at = excluded.expires_at
