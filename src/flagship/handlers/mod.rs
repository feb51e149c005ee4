//! The FlagShip handlers, one per file, each with its unit tests.
//!
//! Every handler does its work in a `process(job, &JobRun)` method that
//! [`Handler::handle`](crate::Handler::handle) calls with the worker's
//! context; tests call `process` directly with a [`JobRun`] of their
//! choosing (a fixed time, a given job id).

use std::future::Future;

use chrono::{DateTime, Utc};

use super::{notify::DeliveryError, stores::Channel, FlagshipServices};
use crate::{Client, HandlerError, JobContext, JobId};

mod aggregation;
mod audit;
mod auto_action;
mod dlq_cleanup;
mod health;
mod notification;
mod operator_alert;
mod rollover;
mod usage;

pub use aggregation::UsageAggregationHandler;
pub use audit::AuditHandler;
pub use auto_action::{AutoActionHandler, WORKER_ACTOR};
pub use dlq_cleanup::DlqCleanupHandler;
pub use health::{HealthCheckHandler, REALERT_INTERVAL};
pub use notification::NotificationHandler;
pub use operator_alert::OperatorAlertHandler;
pub use rollover::PeriodRolloverHandler;
pub use usage::UsageIngestionHandler;

/// What a FlagShip handler uses of the job's context: its id, its attempt,
/// the time, and a client for follow-up jobs.
#[derive(Debug, Clone)]
pub struct JobRun {
    /// The job's id: stable across retries, the base of deterministic ids.
    pub job_id: JobId,
    /// Failed attempts before this one.
    pub attempt: u32,
    /// When the job was first enqueued.
    pub enqueued_at: DateTime<Utc>,
    /// The time this attempt runs at.
    pub now: DateTime<Utc>,
    /// Enqueues follow-up jobs.
    pub client: Client,
}

impl JobRun {
    /// The run the worker describes in `ctx`.
    pub fn from_context(ctx: &JobContext) -> Self {
        JobRun {
            job_id: ctx.id,
            attempt: ctx.attempt,
            enqueued_at: ctx.enqueued_at,
            now: ctx.started_at,
            client: ctx.client.clone(),
        }
    }

    /// A first attempt of a new job at `now`, enqueueing through `client`
    /// (for tests and for running a handler outside a worker).
    pub fn new(client: Client, now: DateTime<Utc>) -> Self {
        JobRun {
            job_id: JobId::new(),
            attempt: 0,
            enqueued_at: now,
            now,
            client,
        }
    }
}

/// Implements [`Handler`](crate::Handler) for a FlagShip handler by
/// calling its `process` method.
macro_rules! handle_with_process {
    ($handler:ty, $job:ty) => {
        #[async_trait::async_trait]
        impl $crate::Handler for $handler {
            type Job = $job;

            async fn handle(&self, job: $job, ctx: &$crate::JobContext) -> Result<(), $crate::HandlerError> {
                self.process(job, &$crate::flagship::handlers::JobRun::from_context(ctx))
                    .await
            }
        }
    };
}
use handle_with_process;

/// Refuses (permanently) an identifier that does not match
/// [`ID_PATTERN`](super::model::ID_PATTERN): payloads are checked against
/// their schema before a worker runs them, this guards direct calls.
fn require_id(field: &str, value: &str) -> Result<(), HandlerError> {
    if super::model::is_valid_id(value) {
        Ok(())
    } else {
        Err(HandlerError::permanent(format!(
            "{field} `{}` is not a valid identifier (pattern {})",
            value.escape_debug(),
            super::model::ID_PATTERN
        )))
    }
}

/// Delivers through `channel` unless the delivery log says notification
/// `key` already went out that way, and records a success (as sent, or as
/// logged for a logging channel). A failed delivery is added to
/// `failures`; `Err(_)` is a store that could not be read or written.
async fn deliver_once(
    services: &FlagshipServices,
    key: &str,
    channel: Channel,
    now: DateTime<Utc>,
    send: impl Future<Output = Result<(), DeliveryError>>,
    failures: &mut Vec<(Channel, DeliveryError)>,
) -> Result<(), crate::Error> {
    let deliveries = &*services.deliveries;
    if deliveries.delivered(key, channel).await? {
        tracing::debug!(notification = %key, channel = channel.as_str(), "already delivered; not sent again");
        return Ok(());
    }
    let via = match channel {
        Channel::Email => services.mailer.delivery(),
        Channel::Webhook => services.webhooks.delivery(),
    };
    match send.await {
        Ok(()) => {
            deliveries.record_delivery(key, channel, via, now).await?;
            tracing::info!(notification = %key, channel = channel.as_str(), delivery = via.as_str(), "notification delivered");
        }
        Err(e) => {
            tracing::warn!(notification = %key, channel = channel.as_str(), error = %e, "delivery failed");
            failures.push((channel, e));
        }
    }
    Ok(())
}

/// What the worker should do after some channels failed: nothing if none
/// did; retry after the longest Retry-After if a receiver asked for one;
/// retry with backoff if any failure was transient; otherwise give up.
fn delivery_outcome(failures: Vec<(Channel, DeliveryError)>) -> Result<(), HandlerError> {
    if failures.is_empty() {
        return Ok(());
    }
    let message = failures
        .iter()
        .map(|(channel, e)| format!("{}: {e}", channel.as_str()))
        .collect::<Vec<_>>()
        .join("; ");
    let retry_after = failures
        .iter()
        .filter_map(|(_, e)| match e {
            DeliveryError::RetryAfter { delay, .. } => Some(*delay),
            _ => None,
        })
        .max();
    if let Some(delay) = retry_after {
        Err(HandlerError::retry_after(delay, message))
    } else if failures.iter().any(|(_, e)| !e.is_permanent()) {
        Err(HandlerError::retry(message))
    } else {
        Err(HandlerError::permanent(message))
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    //! What the handler tests share: services on a memory store and broker.

    use std::sync::Arc;

    use chrono::{DateTime, Utc};

    use super::JobRun;
    use crate::{
        flagship::{
            model::{OrgConfig, PeriodKind, UsageLimit, WebhookEndpoint},
            notify::{LoggingMailer, LoggingWebhookSender},
            stores::{MemoryStore, OrgConfigStore},
            FlagshipServices,
        },
        Broker, Client, JobEnvelope, MemoryBroker, QueueName, ReserveRequest,
    };

    pub(crate) struct Fixture {
        pub(crate) store: Arc<MemoryStore>,
        pub(crate) broker: Arc<MemoryBroker>,
        pub(crate) mailer: LoggingMailer,
        pub(crate) webhooks: LoggingWebhookSender,
        pub(crate) services: FlagshipServices,
        pub(crate) client: Client,
    }

    pub(crate) fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    impl Fixture {
        pub(crate) fn new() -> Self {
            let store = Arc::new(MemoryStore::new());
            let broker = Arc::new(MemoryBroker::new());
            let mailer = LoggingMailer::new();
            let webhooks = LoggingWebhookSender::new();
            let services = FlagshipServices::from_store(store.clone())
                .with_mailer(Arc::new(mailer.clone()))
                .with_webhooks(Arc::new(webhooks.clone()));
            let client = Client::new(broker.clone());
            crate::flagship::register_kinds(client.registry()).unwrap();
            Fixture {
                store,
                broker,
                mailer,
                webhooks,
                services,
                client,
            }
        }

        pub(crate) fn run(&self, now: &str) -> JobRun {
            JobRun::new(self.client.clone(), at(now))
        }

        /// An org `acme` with an hourly limit of 100 `api_calls`, email and
        /// webhook channels.
        pub(crate) async fn acme(&self) -> OrgConfig {
            let mut config = OrgConfig::new("acme");
            config
                .limits
                .push(UsageLimit::new("api_calls", PeriodKind::Hourly, 100));
            config.notifications.email_recipients = vec!["ops@acme.test".into()];
            config.notifications.webhook = Some(WebhookEndpoint {
                url: "https://hooks.acme.test/flagship".into(),
                secret: "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".into(),
            });
            self.store.put_org(&config).await.unwrap();
            config
        }

        /// Every job waiting on `queue`, oldest first (taken off the queue).
        pub(crate) async fn drain(&self, queue: &str) -> Vec<Arc<JobEnvelope>> {
            let request = ReserveRequest::new(1000, std::time::Duration::from_secs(60), std::time::Duration::ZERO);
            let reserved = self
                .broker
                .reserve(&QueueName::new(queue).unwrap(), request)
                .await
                .unwrap();
            let leases: Vec<_> = reserved.iter().map(|r| r.lease.clone()).collect();
            self.broker.complete(&leases).await.unwrap();
            reserved.into_iter().map(|r| r.envelope).collect()
        }
    }
}
