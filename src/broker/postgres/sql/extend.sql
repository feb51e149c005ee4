-- extend: move the deadline of current leases ($1 ids, $2 tokens) to now
-- + $3 µs. Returns the ids extended, and whether an operator asked to
-- cancel each.
-- The commit_mode column: unless the broker makes acknowledgements durable,
-- this transaction commits without waiting for its WAL to reach disk (see
-- docs/postgres.md, "Durability").
UPDATE {schema}.jobs AS j
SET deadline = now() + $3 * interval '1 microsecond'
FROM unnest($1::uuid[], $2::bigint[]) AS t(id, token)
WHERE j.id = t.id AND j.token = t.token AND j.state = 1
RETURNING j.id, {commit_mode}, j.cancel_requested
