-- queues: every queue that has had a job, by name.
SELECT name FROM {schema}.queues ORDER BY name
