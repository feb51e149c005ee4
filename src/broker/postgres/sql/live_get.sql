-- live_get: live job $2 of queue $1, as live_list returns it, with its
-- state first ('ready', 'scheduled' or 'active'); no row when it is dead or
-- not there.
SELECT CASE WHEN state = 1 THEN 'active' WHEN run_at <= now() THEN 'ready' ELSE 'scheduled' END AS live_state,
       id, run_at, enqueued_at, v, attempt, max_retries, kind, payload, idempotency_key, attempts,
       priority, owner, leased_at, deadline, cancel_requested
FROM {schema}.jobs
WHERE queue = $1 AND id = $2 AND state IN (0, 1)
