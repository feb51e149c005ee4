-- Migration 1: the jobs table, idempotency keys, the queue registry, counters,
-- and the `enqueue` function for producers in other languages.
--
-- `{schema}` is the broker's schema (quoted) and `{channel}` its notification
-- channel; the migration runner fills both in. See docs/postgres.md.

-- Every job the broker holds: pending (ready once `run_at` has passed),
-- leased, or dead. A completed job's row is deleted.
CREATE TABLE {schema}.jobs (
    id uuid PRIMARY KEY,
    -- When the job may run, on the database's clock.
    run_at timestamptz NOT NULL,
    -- Enqueue order: breaks ties between jobs due at the same time.
    seq bigint GENERATED ALWAYS AS IDENTITY (CACHE 1000),
    enqueued_at timestamptz NOT NULL DEFAULT now(),
    -- The current lease (state 1): its fencing token, when it started and
    -- when it expires unless extended. NULL otherwise.
    token bigint,
    leased_at timestamptz,
    deadline timestamptz,
    -- When the job was dead-lettered (state 2).
    dead_at timestamptz,
    -- 0 pending, 1 leased, 2 dead.
    state smallint NOT NULL DEFAULT 0,
    -- Higher runs first among due jobs of a queue.
    priority smallint NOT NULL DEFAULT 0,
    -- The envelope version the row was written for.
    v smallint NOT NULL DEFAULT 1,
    -- Failed attempts so far (0 on the first run).
    attempt integer NOT NULL DEFAULT 0,
    -- Per-job override of the retry policy's retry count.
    max_retries integer,
    -- Names and keys compare byte by byte ("C"): cheaper than the
    -- database's collation in every index, and the order Rust sorts in.
    queue text COLLATE "C" NOT NULL,
    kind text COLLATE "C" NOT NULL,
    -- The payload as JSON text.
    payload text NOT NULL,
    idempotency_key text COLLATE "C",
    -- Finished attempts, a JSON array of attempt records; NULL for none.
    attempts text,
    -- Why the job was dead-lettered (state 2).
    dead_reason text
) WITH (
    -- Rows live for seconds: vacuum often, and without sleeping.
    autovacuum_vacuum_scale_factor = 0.0,
    autovacuum_vacuum_threshold = 5000,
    autovacuum_vacuum_insert_scale_factor = 0.0,
    autovacuum_vacuum_insert_threshold = 50000,
    autovacuum_vacuum_cost_delay = 0,
    autovacuum_analyze_scale_factor = 0.05
);

-- Reservation order: a queue's pending jobs by priority, due time, enqueue order.
CREATE INDEX jobs_ready ON {schema}.jobs (queue, priority DESC, run_at, seq) WHERE state = 0;
-- Lease recovery: a queue's leased jobs by deadline.
CREATE INDEX jobs_leased ON {schema}.jobs (queue, deadline) WHERE state = 1;
-- The dead-letter queue, in listing order.
CREATE INDEX jobs_dead ON {schema}.jobs (queue, dead_at, id) WHERE state = 2;

-- Idempotency keys held: by a job the table holds (expires_at NULL), or by
-- a completed job until expires_at.
CREATE TABLE {schema}.idempotency_keys (
    queue text COLLATE "C" NOT NULL,
    key text COLLATE "C" NOT NULL,
    job_id uuid NOT NULL,
    expires_at timestamptz,
    PRIMARY KEY (queue, key)
);
CREATE INDEX idempotency_keys_expiring ON {schema}.idempotency_keys (expires_at) WHERE expires_at IS NOT NULL;

-- Every queue that has had a job.
CREATE TABLE {schema}.queues (
    name text COLLATE "C" PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Totals per queue, spread over shards (by server process) so that
-- concurrent acknowledgements rarely wait on one row; `stats` sums them.
CREATE TABLE {schema}.counters (
    queue text COLLATE "C" NOT NULL,
    shard smallint NOT NULL,
    completed bigint NOT NULL DEFAULT 0,
    retried bigint NOT NULL DEFAULT 0,
    dead_lettered bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (queue, shard)
);

-- Lease tokens: every reservation and every recovery takes a new one.
CREATE SEQUENCE {schema}.lease_tokens AS bigint CACHE 1000;

-- Enqueues one job, as the Rust client does: registers the queue, claims
-- the idempotency key (if any), stores the job and wakes idle workers when
-- the transaction commits. Returns the id of the stored job and `true`, or
-- the id of the job holding the key and `false`. The payload is checked
-- against the kind's JSON Schema when a worker reserves the job; one it
-- refuses goes to the dead-letter queue. `delay` counts from the start of
-- the calling transaction on the database's clock.
CREATE FUNCTION {schema}.enqueue(
    queue text,
    kind text,
    payload jsonb,
    delay interval DEFAULT interval '0',
    idempotency_key text DEFAULT NULL,
    max_retries integer DEFAULT NULL,
    priority smallint DEFAULT 0,
    OUT job_id uuid,
    OUT enqueued boolean
) LANGUAGE plpgsql AS $fn$
DECLARE
    new_id uuid := gen_random_uuid();
BEGIN
    IF queue !~ '^[A-Za-z0-9:._-]{1,128}$' THEN
        RAISE EXCEPTION 'queue name % must be 1 to 128 ASCII letters, digits and ": - _ ."', quote_literal(queue)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF idempotency_key IS NOT NULL AND (octet_length(idempotency_key) NOT BETWEEN 1 AND 512) THEN
        RAISE EXCEPTION 'idempotency key must be 1 to 512 bytes' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF delay < interval '0' THEN
        delay := interval '0';
    END IF;
    INSERT INTO {schema}.queues (name) VALUES (enqueue.queue) ON CONFLICT DO NOTHING;
    IF idempotency_key IS NOT NULL THEN
        INSERT INTO {schema}.idempotency_keys AS k (queue, key, job_id)
        VALUES (enqueue.queue, enqueue.idempotency_key, new_id)
        ON CONFLICT ON CONSTRAINT idempotency_keys_pkey DO UPDATE
            SET job_id = CASE WHEN k.expires_at <= now() THEN excluded.job_id ELSE k.job_id END,
                expires_at = CASE WHEN k.expires_at <= now() THEN NULL ELSE k.expires_at END
        RETURNING k.job_id INTO job_id;
        IF job_id <> new_id THEN
            enqueued := false;
            RETURN;
        END IF;
    END IF;
    INSERT INTO {schema}.jobs (id, queue, kind, payload, idempotency_key, run_at, max_retries, priority)
    VALUES (new_id, enqueue.queue, enqueue.kind, enqueue.payload::text, enqueue.idempotency_key,
            now() + delay, enqueue.max_retries, enqueue.priority);
    PERFORM pg_notify('{channel}', enqueue.queue);
    job_id := new_id;
    enqueued := true;
END
$fn$;
