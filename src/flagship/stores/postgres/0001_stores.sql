-- Migration 1 of the FlagShip stores: every table PostgresStore keeps.
-- `{schema}` is the store's schema (quoted); the migration runner fills it in.

-- The audit trail: one row per (organization, event id); a duplicate id is
-- ignored. Indexed for an audit page: an organization's events by time,
-- by target and by actor.
CREATE TABLE {schema}.audit_events (
    org_id text NOT NULL,
    id text NOT NULL,
    occurred_at timestamptz NOT NULL,
    actor text NOT NULL,
    action text NOT NULL,
    target_type text NOT NULL,
    target_id text NOT NULL,
    metadata jsonb NOT NULL DEFAULT '{}',
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, id)
);
CREATE INDEX audit_events_by_time ON {schema}.audit_events (org_id, occurred_at, id);
CREATE INDEX audit_events_by_target ON {schema}.audit_events (org_id, target_type, target_id, occurred_at);
CREATE INDEX audit_events_by_actor ON {schema}.audit_events (org_id, actor, occurred_at);

-- Live usage counters: one per (organization, metric, period length, period start).
CREATE TABLE {schema}.usage_counters (
    org_id text NOT NULL,
    metric text NOT NULL,
    period text NOT NULL,
    period_start timestamptz NOT NULL,
    period_end timestamptz NOT NULL,
    value bigint NOT NULL CHECK (value >= 0),
    PRIMARY KEY (org_id, metric, period, period_start)
);
-- Rollover finds the ended periods of one length.
CREATE INDEX usage_counters_by_end ON {schema}.usage_counters (period, period_end);

-- Usage batches already counted, until they may be forgotten.
CREATE TABLE {schema}.usage_batches (
    org_id text NOT NULL,
    batch_id text NOT NULL,
    forget_at timestamptz NOT NULL,
    PRIMARY KEY (org_id, batch_id)
);
CREATE INDEX usage_batches_by_forget_at ON {schema}.usage_batches (forget_at);

-- Thresholds (warning, limit) handled for live counters.
CREATE TABLE {schema}.threshold_markers (
    org_id text NOT NULL,
    metric text NOT NULL,
    period text NOT NULL,
    period_start timestamptz NOT NULL,
    threshold text NOT NULL,
    PRIMARY KEY (org_id, metric, period, period_start, threshold)
);

-- Closed periods' totals.
CREATE TABLE {schema}.usage_archive (
    org_id text NOT NULL,
    metric text NOT NULL,
    period text NOT NULL,
    period_start timestamptz NOT NULL,
    total bigint NOT NULL,
    archived_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, metric, period, period_start)
);
CREATE INDEX usage_archive_by_start ON {schema}.usage_archive (period, period_start);

-- Daily usage aggregated from the hourly archive.
CREATE TABLE {schema}.daily_usage (
    org_id text NOT NULL,
    day date NOT NULL,
    metric text NOT NULL,
    total bigint NOT NULL,
    peak_hour_total bigint NOT NULL,
    active_hours integer NOT NULL,
    PRIMARY KEY (org_id, day, metric)
);

-- The crate's own copy of flags and API keys (the store-backed
-- FlagControl and ApiKeyControl; a deployment acting on its own tables
-- uses PostgresControl instead).
CREATE TABLE {schema}.flags (
    org_id text NOT NULL,
    key text NOT NULL,
    enabled boolean NOT NULL,
    disabled_reason text,
    updated_at timestamptz,
    PRIMARY KEY (org_id, key)
);
CREATE TABLE {schema}.api_keys (
    org_id text NOT NULL,
    id text NOT NULL,
    blocked boolean NOT NULL,
    blocked_reason text,
    blocked_at timestamptz,
    PRIMARY KEY (org_id, id)
);

-- Organizations' configuration (the OrgConfig JSON).
CREATE TABLE {schema}.org_configs (
    org_id text PRIMARY KEY,
    config jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Which channel delivered which notification, and how (`sent`, or
-- `logged` for logging-only delivery).
CREATE TABLE {schema}.deliveries (
    notification_key text NOT NULL,
    channel text NOT NULL,
    via text NOT NULL,
    delivered_at timestamptz NOT NULL,
    PRIMARY KEY (notification_key, channel)
);
CREATE INDEX deliveries_by_time ON {schema}.deliveries (delivered_at);

-- The latest health report (one row).
CREATE TABLE {schema}.health_reports (
    id smallint PRIMARY KEY CHECK (id = 1),
    checked_at timestamptz NOT NULL,
    report jsonb NOT NULL
);

-- When things the health check watches were last seen: workers'
-- heartbeats (`worker:<id>`) and maintenance runs (`schedule:<name>`).
CREATE TABLE {schema}.seen (
    name text PRIMARY KEY,
    seen_at timestamptz NOT NULL
);
