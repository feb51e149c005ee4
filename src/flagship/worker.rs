//! [`FlagshipServices`] (stores, channels, settings) and [`FlagshipModule`],
//! which installs every FlagShip handler, queue and schedule on a worker.

use std::{sync::Arc, time::Duration};

use super::{
    control::{ApiKeyControl, FlagControl, StoreControl},
    handlers::{
        AuditHandler, AutoActionHandler, DlqCleanupHandler, HealthCheckHandler, NotificationHandler,
        OperatorAlertHandler, PeriodRolloverHandler, UsageAggregationHandler, UsageIngestionHandler,
    },
    health::{HeartbeatLiveness, WorkerLiveness, HEARTBEAT_INTERVAL},
    jobs::{DlqCleanupJob, HealthCheckJob, PeriodRolloverJob, UsageAggregationJob},
    model::{PeriodKind, WebhookEndpoint},
    notify::{LoggingMailer, LoggingWebhookSender, Mailer, NotConfigured, WebhookSender},
    queues::FLAGSHIP_QUEUES,
    stores::{
        ApiKeyStore, AuditLog, DeliveryLog, FlagStore, HealthStore, MemoryStore, OrgConfigStore, PeriodArchive,
        UsageStore,
    },
};
use crate::{Backend, DeadLetterQueue, Error, QueueConfig, Result, Schedule, WorkerBuilder};

/// When a health check reports a problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthThresholds {
    /// More ready jobs than this on one queue is a problem (default 10 000).
    pub max_ready: u64,
    /// A ready job waiting longer than this is a problem (default 5 minutes).
    pub max_oldest_ready_age: Duration,
    /// More jobs dead-lettered than this since the previous check is a
    /// problem (default 10).
    pub max_dlq_growth: u64,
    /// When every known worker's last heartbeat is older than this, no
    /// worker is alive (default 3 × [`HEARTBEAT_INTERVAL`]).
    pub heartbeat_timeout: Duration,
    /// A maintenance schedule whose run is this late is a missed fire
    /// (default 5 minutes).
    pub missed_fire_grace: Duration,
    /// An active job whose lease deadline passed longer ago than this is
    /// stuck: its worker died or hangs and nothing recovers it (default
    /// [`DEFAULT_STUCK_GRACE`](crate::health::DEFAULT_STUCK_GRACE), 30 s).
    pub stuck_grace: Duration,
}

impl Default for HealthThresholds {
    fn default() -> Self {
        HealthThresholds {
            max_ready: 10_000,
            max_oldest_ready_age: Duration::from_secs(300),
            max_dlq_growth: 10,
            heartbeat_timeout: HEARTBEAT_INTERVAL * 3,
            missed_fire_grace: Duration::from_secs(300),
            stuck_grace: crate::health::DEFAULT_STUCK_GRACE,
        }
    }
}

/// Deployment settings of the FlagShip handlers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagshipSettings {
    /// The sender of notification emails.
    pub email_from: String,
    /// Who receives operator alerts (unhealthy health checks).
    pub operator_emails: Vec<String>,
    /// A webhook that also receives operator alerts.
    pub operator_webhook: Option<WebhookEndpoint>,
    /// How long a usage batch id is remembered, so a redelivered batch is
    /// not counted twice (default 7 days).
    pub batch_dedupe_window: Duration,
    /// How far in the future an event's timestamp may be before it is
    /// refused as a clock error (default 5 minutes).
    pub max_clock_skew: Duration,
    /// When a health check is unhealthy.
    pub health: HealthThresholds,
}

impl Default for FlagshipSettings {
    fn default() -> Self {
        FlagshipSettings {
            email_from: "FlagShip <notifications@flagship.local>".into(),
            operator_emails: Vec::new(),
            operator_webhook: None,
            batch_dedupe_window: Duration::from_secs(7 * 24 * 3600),
            max_clock_skew: Duration::from_secs(300),
            health: HealthThresholds::default(),
        }
    }
}

/// Everything the FlagShip handlers use: the stores, the controls acting
/// on flags and API keys, the delivery channels and the settings. Cheap to
/// clone.
///
/// No channel is configured until one is given: a notification then fails
/// (permanently, naming the missing setting), and [`FlagshipModule::install`]
/// refuses to start without a mailer. [`logging_only`](Self::logging_only)
/// opts into channels that only log, recorded as `logged` (not `sent`) in
/// the delivery log.
///
/// ```
/// use std::sync::Arc;
/// use flagship_worker::flagship::{notify::LoggingMailer, stores::MemoryStore, FlagshipServices};
///
/// let services = FlagshipServices::from_store(Arc::new(MemoryStore::new()))
///     .with_mailer(Arc::new(LoggingMailer::new()));
/// assert!(services.settings.operator_emails.is_empty());
/// ```
#[derive(Debug, Clone)]
pub struct FlagshipServices {
    /// The audit trail.
    pub audit: Arc<dyn AuditLog>,
    /// Usage counters, batch de-duplication, threshold markers.
    pub usage: Arc<dyn UsageStore>,
    /// Closed periods and daily usage.
    pub archive: Arc<dyn PeriodArchive>,
    /// Feature flags.
    pub flags: Arc<dyn FlagStore>,
    /// API keys.
    pub api_keys: Arc<dyn ApiKeyStore>,
    /// Turns flags off for `disable_feature` auto-actions (default: in
    /// [`flags`](Self::flags)).
    pub flag_control: Arc<dyn FlagControl>,
    /// Blocks keys for `block_api_key` auto-actions (default: in
    /// [`api_keys`](Self::api_keys)).
    pub api_key_control: Arc<dyn ApiKeyControl>,
    /// Organizations' configuration.
    pub orgs: Arc<dyn OrgConfigStore>,
    /// Which channels delivered which notifications.
    pub deliveries: Arc<dyn DeliveryLog>,
    /// The latest health report, heartbeats and maintenance runs.
    pub health: Arc<dyn HealthStore>,
    /// Which workers are alive (default: the heartbeats in [`health`](Self::health)).
    pub liveness: Arc<dyn WorkerLiveness>,
    /// Sends email.
    pub mailer: Arc<dyn Mailer>,
    /// Sends webhooks.
    pub webhooks: Arc<dyn WebhookSender>,
    /// Deployment settings.
    pub settings: FlagshipSettings,
}

impl FlagshipServices {
    /// Every store backed by `store`, auto-actions on its flags and keys,
    /// no channel configured and default settings.
    pub fn from_store<S>(store: Arc<S>) -> Self
    where
        S: AuditLog + UsageStore + PeriodArchive + FlagStore + ApiKeyStore + OrgConfigStore + DeliveryLog + HealthStore,
    {
        let control = Arc::new(StoreControl::new(store.clone(), store.clone()));
        FlagshipServices {
            flag_control: control.clone(),
            api_key_control: control,
            audit: store.clone(),
            usage: store.clone(),
            archive: store.clone(),
            flags: store.clone(),
            api_keys: store.clone(),
            orgs: store.clone(),
            deliveries: store.clone(),
            liveness: Arc::new(HeartbeatLiveness::new(store.clone())),
            health: store,
            mailer: Arc::new(NotConfigured),
            webhooks: Arc::new(NotConfigured),
            settings: FlagshipSettings::default(),
        }
    }

    /// Everything in memory ([`MemoryStore`]), no channel configured.
    pub fn in_memory() -> Self {
        Self::from_store(Arc::new(MemoryStore::new()))
    }

    /// Channels that only log: a [`LoggingMailer`] and a
    /// [`LoggingWebhookSender`], for demos and tests. Nobody is told; the
    /// delivery log says `logged`.
    pub fn logging_only(self) -> Self {
        self.with_mailer(Arc::new(LoggingMailer::new()))
            .with_webhooks(Arc::new(LoggingWebhookSender::new()))
    }

    /// Disables flags with `control` (e.g. a `PostgresControl` on the
    /// product's own table).
    pub fn with_flag_control(mut self, control: Arc<dyn FlagControl>) -> Self {
        self.flag_control = control;
        self
    }

    /// Reads which workers are alive from `liveness` (e.g. a worker
    /// registry) instead of the heartbeats in the health store.
    pub fn with_liveness(mut self, liveness: Arc<dyn WorkerLiveness>) -> Self {
        self.liveness = liveness;
        self
    }

    /// Blocks API keys with `control`.
    pub fn with_api_key_control(mut self, control: Arc<dyn ApiKeyControl>) -> Self {
        self.api_key_control = control;
        self
    }

    /// Sends email with `mailer`.
    pub fn with_mailer(mut self, mailer: Arc<dyn Mailer>) -> Self {
        self.mailer = mailer;
        self
    }

    /// Sends webhooks with `webhooks`.
    pub fn with_webhooks(mut self, webhooks: Arc<dyn WebhookSender>) -> Self {
        self.webhooks = webhooks;
        self
    }

    /// Uses `settings`.
    pub fn with_settings(mut self, settings: FlagshipSettings) -> Self {
        self.settings = settings;
        self
    }
}

/// The cron schedules of the FlagShip maintenance jobs (UTC, seconds first).
pub const SCHEDULES: [(&str, &str); 5] = [
    ("flagship:rollover-hourly", "0 0 * * * *"),
    ("flagship:rollover-daily", "0 0 0 * * *"),
    ("flagship:rollover-monthly", "0 0 0 1 * *"),
    ("flagship:usage-aggregation", "0 5 0 * * *"),
    ("flagship:dlq-cleanup", "0 0 3 * * Sun"),
];

/// How often the health check runs.
pub const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// Installs the FlagShip module on a worker: every handler, the five
/// queues with their retry policies, and the maintenance schedules
/// (rollover at each hour, day and month boundary; daily aggregation at
/// 00:05; weekly DLQ cleanup on Sundays at 03:00; a health check every
/// minute).
///
/// ```
/// use std::sync::Arc;
/// use flagship_worker::{flagship::{FlagshipServices, FlagshipModule}, MemoryBroker, Worker};
///
/// let backend = Arc::new(MemoryBroker::new());
/// let worker = FlagshipModule::new(FlagshipServices::in_memory().logging_only(), backend.clone())
///     .install(Worker::builder(backend))?
///     .build()?;
/// # let _ = worker;
/// # Ok::<_, flagship_worker::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct FlagshipModule {
    /// What the handlers use.
    services: FlagshipServices,
    /// The dead-letter queue the weekly cleanup purges.
    dead_letters: Arc<dyn DeadLetterQueue>,
    /// Whether to install the maintenance schedules.
    schedules: bool,
    /// Jobs run at once per queue.
    concurrency: usize,
    /// Per-queue exceptions to `concurrency`, as (queue, jobs at once).
    queue_concurrency: Vec<(String, usize)>,
}

impl FlagshipModule {
    /// FlagShip on `services`, cleaning up `backend`'s dead-letter queue.
    pub fn new<B: Backend>(services: FlagshipServices, backend: Arc<B>) -> Self {
        Self::with_dead_letters(services, backend)
    }

    /// FlagShip on `services`, cleaning up `dead_letters`.
    pub fn with_dead_letters(services: FlagshipServices, dead_letters: Arc<dyn DeadLetterQueue>) -> Self {
        FlagshipModule {
            services,
            dead_letters,
            schedules: true,
            concurrency: 10,
            queue_concurrency: Vec::new(),
        }
    }

    /// Leaves the maintenance schedules out (another process runs them, or
    /// a test enqueues maintenance jobs itself).
    pub fn without_schedules(mut self) -> Self {
        self.schedules = false;
        self
    }

    /// How many jobs of each FlagShip queue run at once (default 10).
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// The services the handlers use.
    pub fn services(&self) -> &FlagshipServices {
        &self.services
    }

    /// Runs `concurrency` jobs of `queue` at once (others keep the
    /// default of [`concurrency`](Self::concurrency)). An unknown queue
    /// name is refused by [`install`](Self::install).
    pub fn queue_concurrency(mut self, queue: impl Into<String>, concurrency: usize) -> Self {
        self.queue_concurrency.push((queue.into(), concurrency));
        self
    }

    /// Registers the handlers, queues and schedules on `builder`. Refuses
    /// services without a mailer (see [`FlagshipServices::logging_only`])
    /// and concurrency for a queue FlagShip does not have.
    pub fn install(self, mut builder: WorkerBuilder) -> Result<WorkerBuilder> {
        if !self.services.mailer.is_configured() {
            return Err(Error::InvalidConfig(
                "FlagShip has no mailer: configure one with FlagshipServices::with_mailer (a ResendMailer; for                  `flagship-worker run`, set FLAGSHIP_RESEND_API_KEY and FLAGSHIP_EMAIL_FROM), or opt into                  logging-only delivery with FlagshipServices::logging_only"
                    .into(),
            ));
        }
        if let Some((unknown, _)) = self
            .queue_concurrency
            .iter()
            .find(|(name, _)| !FLAGSHIP_QUEUES.iter().any(|q| q.name == name))
        {
            return Err(Error::InvalidConfig(format!(
                "concurrency is set for queue `{}`, which is not a FlagShip queue; use one of {}",
                unknown.escape_debug(),
                FLAGSHIP_QUEUES.iter().map(|q| q.name).collect::<Vec<_>>().join(", ")
            )));
        }
        for queue in FLAGSHIP_QUEUES {
            let concurrency = self
                .queue_concurrency
                .iter()
                .rev()
                .find(|(name, _)| name == queue.name)
                .map_or(self.concurrency, |(_, c)| *c);
            builder = builder.queue(
                QueueConfig::new(queue.name)?
                    .retry_policy(queue.retry)
                    .concurrency(concurrency),
            );
        }
        let s = &self.services;
        builder = builder
            .handler(AuditHandler::new(s.clone()))
            .handler(UsageIngestionHandler::new(s.clone()))
            .handler(NotificationHandler::new(s.clone()))
            .handler(OperatorAlertHandler::new(s.clone()))
            .handler(AutoActionHandler::new(s.clone()))
            .handler(PeriodRolloverHandler::new(s.clone()))
            .handler(UsageAggregationHandler::new(s.clone()))
            .handler(DlqCleanupHandler::new(self.dead_letters.clone()))
            .handler(HealthCheckHandler::new(s.clone()));
        if self.schedules {
            for schedule in Self::schedules()? {
                builder = builder.schedule(schedule);
            }
        }
        Ok(builder)
    }

    /// The maintenance schedules [`install`](Self::install) adds.
    pub fn schedules() -> Result<Vec<Schedule>> {
        let [hourly, daily, monthly, aggregation, cleanup] = SCHEDULES;
        Ok(vec![
            Schedule::cron(
                hourly.0,
                hourly.1,
                &PeriodRolloverJob {
                    period: PeriodKind::Hourly,
                },
            )?,
            Schedule::cron(
                daily.0,
                daily.1,
                &PeriodRolloverJob {
                    period: PeriodKind::Daily,
                },
            )?,
            Schedule::cron(
                monthly.0,
                monthly.1,
                &PeriodRolloverJob {
                    period: PeriodKind::Monthly,
                },
            )?,
            Schedule::cron(aggregation.0, aggregation.1, &UsageAggregationJob { day: None })?,
            Schedule::cron(cleanup.0, cleanup.1, &DlqCleanupJob::default())?,
            Schedule::every("flagship:health-check", HEALTH_CHECK_INTERVAL, &HealthCheckJob {})?,
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryBroker;

    #[test]
    fn refuses_to_start_without_a_mailer_or_with_an_unknown_queue() {
        let backend = Arc::new(MemoryBroker::new());
        let install = |services: FlagshipServices| {
            FlagshipModule::new(services, backend.clone()).install(crate::Worker::builder(backend.clone()))
        };
        let err = install(FlagshipServices::in_memory()).unwrap_err().to_string();
        assert!(
            err.contains("no mailer") && err.contains("FLAGSHIP_RESEND_API_KEY"),
            "{err}"
        );
        assert!(install(FlagshipServices::in_memory().logging_only()).is_ok());
        let err = FlagshipModule::new(FlagshipServices::in_memory().logging_only(), backend.clone())
            .queue_concurrency("flagship:nope", 3)
            .install(crate::Worker::builder(backend.clone()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("flagship:nope"), "{err}");
    }

    fn at(s: &str) -> chrono::DateTime<chrono::Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn schedules_fire_at_utc_boundaries() {
        let schedules = FlagshipModule::schedules().unwrap();
        let next = |name: &str, after: &str| {
            schedules
                .iter()
                .find(|s| s.name() == name)
                .unwrap()
                .next_after(at(after))
                .unwrap()
        };
        assert_eq!(
            next("flagship:rollover-hourly", "2026-03-31T23:59:59Z"),
            at("2026-04-01T00:00:00Z")
        );
        assert_eq!(
            next("flagship:rollover-daily", "2026-03-31T12:00:00Z"),
            at("2026-04-01T00:00:00Z")
        );
        assert_eq!(
            next("flagship:rollover-monthly", "2026-03-02T00:00:00Z"),
            at("2026-04-01T00:00:00Z")
        );
        assert_eq!(
            next("flagship:usage-aggregation", "2026-03-31T12:00:00Z"),
            at("2026-04-01T00:05:00Z")
        );
        // 2026-04-05 is a Sunday.
        assert_eq!(
            next("flagship:dlq-cleanup", "2026-04-01T00:00:00Z"),
            at("2026-04-05T03:00:00Z")
        );
        assert_eq!(
            next("flagship:health-check", "2026-04-01T00:00:30Z"),
            at("2026-04-01T00:01:00Z")
        );
    }
}
