-- pause: pause queue $1. Returns a row when it was not paused before.
INSERT INTO {schema}.paused_queues (name) VALUES ($1)
ON CONFLICT DO NOTHING
RETURNING name
