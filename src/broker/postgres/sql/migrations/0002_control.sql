-- Migration 2: operators' control of live jobs: who holds a lease and
-- whether an operator asked to cancel the job, paused queues, and the
-- worker registry.
--
-- `{schema}` is the broker's schema (quoted); see docs/postgres.md.

-- The worker that reserved a leased job (NULL when unknown or recovered),
-- and whether an operator asked to cancel it while it ran. Both are set at
-- each reservation and meaningful only while the job is leased (state 1).
ALTER TABLE {schema}.jobs
    ADD COLUMN owner text,
    ADD COLUMN cancel_requested boolean NOT NULL DEFAULT false;

-- Queues an operator paused: `reserve` leases nothing from them.
CREATE TABLE {schema}.paused_queues (
    name text COLLATE "C" PRIMARY KEY,
    paused_at timestamptz NOT NULL DEFAULT now()
);

-- Running workers, as they register at each heartbeat: `info` is the
-- worker's JSON description; it counts as gone once `expires_at` passed.
CREATE TABLE {schema}.workers (
    id text COLLATE "C" PRIMARY KEY,
    info text NOT NULL,
    last_seen timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);
