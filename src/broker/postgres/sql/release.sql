-- release: end the leases ($1 ids, $2 tokens) of unstarted jobs and make
-- them pending again where their due time puts them, without counting an
-- attempt. Wakes idle workers. Returns the ids released.
-- The commit_mode column: unless the broker makes acknowledgements durable,
-- this transaction commits without waiting for its WAL to reach disk (see
-- docs/postgres.md, "Durability").
WITH back AS (
    UPDATE {schema}.jobs AS j
    SET state = 0, token = NULL, leased_at = NULL, deadline = NULL
    FROM unnest($1::uuid[], $2::bigint[]) AS t(id, token)
    WHERE j.id = t.id AND j.token = t.token AND j.state = 1
    RETURNING j.id, j.queue
)
SELECT id, (SELECT count(*) FROM (SELECT pg_notify('{channel}', q.queue) FROM (SELECT DISTINCT queue FROM back) q) n) AS woken,
       {commit_mode}
FROM back
