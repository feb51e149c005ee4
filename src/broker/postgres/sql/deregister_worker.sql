-- deregister_worker: remove worker $1's entry. Returns a row when there was one.
DELETE FROM {schema}.workers WHERE id = $1 RETURNING id
