-- live_list: up to $7 live jobs of queue $1 in state $2 ('ready': due,
-- 'scheduled': not due yet, 'active': leased), of kind $3 (NULL: any), with
-- run_at in [$4, $5) (NULL: unbounded), after (run_at, id) $6 (NULL: from
-- the start; its id part is $8), in (run_at, id) order.
-- Returns id, run_at, the stored columns (enqueued_at, v, attempt,
-- max_retries, kind, payload, idempotency_key, attempts), priority, owner,
-- leased_at, deadline, cancel_requested.
SELECT id, run_at, enqueued_at, v, attempt, max_retries, kind, payload, idempotency_key, attempts,
       priority, owner, leased_at, deadline, cancel_requested
FROM {schema}.jobs
WHERE queue = $1
  AND CASE $2
        WHEN 'ready' THEN state = 0 AND run_at <= now()
        WHEN 'scheduled' THEN state = 0 AND run_at > now()
        ELSE state = 1
      END
  AND ($3::text IS NULL OR kind = $3)
  AND ($4::timestamptz IS NULL OR run_at >= $4)
  AND ($5::timestamptz IS NULL OR run_at < $5)
  AND ($6::timestamptz IS NULL OR (run_at, id) > ($6, $8::uuid))
ORDER BY run_at, id
LIMIT $7
