//! FlagShip: the worker side of a feature-flag and usage-limits product
//! (feature `flagship`).
//!
//! FlagShip's API server emits audit events, usage events and threshold
//! notifications; this module processes them, built only on the crate's
//! public API:
//!
//! | job kind | queue | handler | what it does |
//! |---|---|---|---|
//! | `audit-event` | `flagship:audit` | [`AuditHandler`] | persists an audit event once per id |
//! | `usage-ingestion` | `flagship:usage` | [`UsageIngestionHandler`] | counts a batch once, emits threshold notifications and auto-actions once per threshold |
//! | `notification` | `flagship:notifications` | [`NotificationHandler`] | email and signed webhook, per the org's preferences |
//! | `operator-alert` | `flagship:notifications` | [`OperatorAlertHandler`] | emails the operators |
//! | `auto-action` | `flagship:auto-actions` | [`AutoActionHandler`] | disables a flag, blocks an API key or notifies, and audits it |
//! | `period-rollover` | `flagship:maintenance` | [`PeriodRolloverHandler`] | archives ended periods, starts new ones at zero |
//! | `usage-aggregation` | `flagship:maintenance` | [`UsageAggregationHandler`] | rolls a day's hourly usage into daily totals |
//! | `dlq-cleanup` | `flagship:maintenance` | [`DlqCleanupHandler`] | deletes dead jobs older than 30 days |
//! | `health-check` | `flagship:maintenance` | [`HealthCheckHandler`] | records broker and queue health, alerts operators |
//!
//! Every handler is idempotent: running a job twice leaves the same state
//! and causes no second side effect. State lives behind the traits in
//! [`stores`] ([`stores::MemoryStore`], `RedisStore` with the `redis`
//! feature, `PostgresStore` with the `postgres` feature); auto-actions act
//! on the product's flags and keys through [`control`]; email and webhooks
//! go through [`notify`] (the Resend mailer and the HTTP webhook sender
//! need the `http` feature).
//!
//! [`FlagshipModule`] installs everything on a [`Worker`](crate::Worker)
//! in one call:
//!
//! ```
//! use std::{sync::Arc, time::Duration};
//! use flagship_worker::{flagship::*, MemoryBroker, Worker};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let backend = Arc::new(MemoryBroker::new());
//! let services = FlagshipServices::in_memory().logging_only();
//! let worker = FlagshipModule::new(services.clone(), backend.clone())
//!     .without_schedules()
//!     .install(Worker::builder(backend))?
//!     .build()?;
//! let event = AuditEvent {
//!     id: "evt-1".into(),
//!     org_id: "acme".into(),
//!     actor: "user-7".into(),
//!     action: "flag.created".into(),
//!     target_type: "flag".into(),
//!     target_id: "new-checkout".into(),
//!     occurred_at: chrono::Utc::now(),
//!     metadata: Default::default(),
//! };
//! worker.client().enqueue(&AuditEventJob { event }).await?;
//! worker.run_until(tokio::time::sleep(Duration::from_millis(50))).await?;
//! assert_eq!(services.audit.list("acme", 10).await?.len(), 1);
//! # Ok::<_, flagship_worker::Error>(()) }).unwrap();
//! ```

pub mod control;
pub mod handlers;
mod health;
mod jobs;
pub mod model;
pub mod notify;
mod queues;
pub mod stores;
mod worker;

pub use handlers::{
    AuditHandler, AutoActionHandler, DlqCleanupHandler, HealthCheckHandler, JobRun, NotificationHandler,
    OperatorAlertHandler, PeriodRolloverHandler, UsageAggregationHandler, UsageIngestionHandler,
};
pub use health::{
    FlagshipHealth, Heartbeat, HeartbeatLiveness, WorkerLiveness, HEARTBEAT_INTERVAL, SCHEDULE_SEEN_PREFIX,
    WORKER_SEEN_PREFIX,
};
pub use jobs::{
    register_kinds, ApiKeyBlocked, AuditEvent, AuditEventJob, AutoAction, AutoActionJob, DlqCleanupJob,
    FeatureDisabled, HealthCheckJob, Notice, NotificationJob, OperatorAlertJob, PeriodRolloverJob, UsageAggregationJob,
    UsageAlert, UsageEvent, UsageIngestionJob, DEFAULT_DLQ_RETENTION_DAYS, MAX_USAGE_EVENTS,
};
pub use model::{
    ApiKey, ArchivedPeriod, CounterKey, DailyUsage, EnforcementConfig, Flag, HealthRecord, NotificationPreferences,
    NotificationType, OrgConfig, PeriodKind, QueueHealth, Threshold, UsageLimit, WebhookEndpoint,
};
pub use queues::{
    FlagshipQueue, AUDIT_QUEUE, AUTO_ACTIONS_QUEUE, FLAGSHIP_QUEUES, MAINTENANCE_QUEUE, NOTIFICATIONS_QUEUE,
    NOTIFICATION_RETRY_STEP, USAGE_QUEUE,
};
pub use worker::{
    FlagshipModule, FlagshipServices, FlagshipSettings, HealthThresholds, HEALTH_CHECK_INTERVAL, SCHEDULES,
};
