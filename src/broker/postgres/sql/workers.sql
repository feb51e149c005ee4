-- workers: every registered worker by id, with the database's time.
SELECT id, info, last_seen, expires_at, now() AS now FROM {schema}.workers ORDER BY id
