//! Health: what operators page on, as a report of named checks, and the
//! [`HealthSource`] it comes from. The admin API serves it at
//! `/api/health`, the CLI prints it; domains (such as FlagShip) provide
//! their own source.

use std::{collections::BTreeSet, fmt, sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    broker::{Backend, Broker, DeadFilter, DeadLetterQueue, JobControl, JobQuery, JobState, MAX_JOB_PAGE},
    clock::{Clock, SystemClock},
    error::Result,
    job::QueueName,
};

/// How healthy something is. Ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Working as expected.
    Ok,
    /// Working, but something needs attention (a growing backlog, DLQ growth).
    Degraded,
    /// Not working (the broker is unreachable).
    Down,
}

impl HealthStatus {
    /// `ok`, `degraded` or `down`.
    pub fn as_str(&self) -> &'static str {
        match self {
            HealthStatus::Ok => "ok",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Down => "down",
        }
    }
}

/// One named check inside a [`HealthReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// What was checked, e.g. `broker` or `queue emails`.
    pub name: String,
    /// Its result.
    pub status: HealthStatus,
    /// What was found, for a person to read.
    pub message: String,
}

impl HealthCheck {
    /// A check named `name` with `status` and `message`.
    pub fn new(name: impl Into<String>, status: HealthStatus, message: impl Into<String>) -> Self {
        HealthCheck {
            name: name.into(),
            status,
            message: message.into(),
        }
    }
}

/// The result of a health check run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    /// The worst status of the checks (`ok` when there are none).
    pub status: HealthStatus,
    /// When the checks ran.
    pub checked_at: DateTime<Utc>,
    /// The individual checks.
    pub checks: Vec<HealthCheck>,
}

impl HealthReport {
    /// A report of `checks` run at `checked_at`; its status is the worst of theirs.
    pub fn new(checked_at: DateTime<Utc>, checks: Vec<HealthCheck>) -> Self {
        let status = checks.iter().map(|c| c.status).max().unwrap_or(HealthStatus::Ok);
        HealthReport {
            status,
            checked_at,
            checks,
        }
    }
}

/// Where the latest health report comes from (the admin router's
/// `/api/health`, the CLI's `health`).
///
/// The default, [`BrokerHealth`], checks live on each request. A periodic
/// health-check job (such as the FlagShip maintenance check) can keep its
/// latest result and serve it through this trait instead.
///
/// # Contract
///
/// - [`latest`](HealthSource::latest) MUST return promptly (it serves an
///   HTTP request): a source that runs slow checks runs them elsewhere and
///   returns the last result.
/// - An error means no report could be produced at all; the router answers
///   503 with the error. A reachable-but-broken dependency is a report with
///   status [`HealthStatus::Down`], not an error.
#[async_trait]
pub trait HealthSource: Send + Sync + fmt::Debug + 'static {
    /// The latest health report.
    async fn latest(&self) -> Result<HealthReport>;
}

/// How long an active job may stay past its lease deadline before
/// [`BrokerHealth`] reports it stuck (by default): a live worker recovers an
/// expired lease well within it.
pub const DEFAULT_STUCK_GRACE: Duration = Duration::from_secs(30);

/// How far back [`BrokerHealth`] looks for dead-letter growth by default.
pub const DEFAULT_DLQ_WINDOW: Duration = Duration::from_secs(3600);

/// The default [`HealthSource`]: pings the broker and checks, per queue,
/// what operators page on. On every call.
///
/// A queue's check is `degraded` when any of these holds, and says which:
///
/// - jobs are **stuck in active**: their lease deadline passed more than
///   the [stuck grace](BrokerHealth::stuck_grace) ago (a worker died or
///   hangs, and no worker recovers the lease);
/// - the **dead-letter queue grew**: jobs were dead-lettered within the
///   [window](BrokerHealth::dlq_window) (needs the backend's DLQ: built
///   with [`for_backend`](BrokerHealth::for_backend) or given
///   [`dead_letters`](BrokerHealth::dead_letters));
/// - jobs are ready, the queue is not paused and **no live worker** serves
///   it.
///
/// The report is `ok` only when no queue is degraded and the broker
/// answers; `down` when it does not. The first and last two need the
/// broker's [`JobControl`] ([`Broker::control`]); without it they are not
/// checked. A `workers` check lists the registered workers (gone ones are
/// counted; it is informational).
#[derive(Debug, Clone)]
pub struct BrokerHealth {
    /// What is checked.
    broker: Arc<dyn Broker>,
    /// Its dead-letter queue, for the growth check.
    dlq: Option<Arc<dyn DeadLetterQueue>>,
    /// When the checks ran, as reports say.
    clock: Arc<dyn Clock>,
    /// How long past its deadline a lease counts as stuck.
    stuck_grace: Duration,
    /// How far back dead-letter growth counts.
    dlq_window: Duration,
}

impl BrokerHealth {
    /// Checks `broker` (without the dead-letter growth check), stamping
    /// reports with the system clock.
    pub fn new(broker: Arc<dyn Broker>) -> Self {
        BrokerHealth {
            broker,
            dlq: None,
            clock: Arc::new(SystemClock),
            stuck_grace: DEFAULT_STUCK_GRACE,
            dlq_window: DEFAULT_DLQ_WINDOW,
        }
    }

    /// Checks a whole backend, its dead-letter queue included.
    pub fn for_backend<B: Backend>(backend: Arc<B>) -> Self {
        let dlq: Arc<dyn DeadLetterQueue> = backend.clone();
        Self::new(backend).dead_letters(dlq)
    }

    /// Checks dead-letter growth in `dlq` (the broker's own).
    pub fn dead_letters(mut self, dlq: Arc<dyn DeadLetterQueue>) -> Self {
        self.dlq = Some(dlq);
        self
    }

    /// Stamps reports with `clock` instead; "now" for the checks too.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Reports an active job stuck once its lease deadline is `grace` past
    /// (default [`DEFAULT_STUCK_GRACE`]).
    pub fn stuck_grace(mut self, grace: Duration) -> Self {
        self.stuck_grace = grace;
        self
    }

    /// Counts jobs dead-lettered within `window` as growth (default
    /// [`DEFAULT_DLQ_WINDOW`]).
    pub fn dlq_window(mut self, window: Duration) -> Self {
        self.dlq_window = window;
        self
    }

    /// `now` minus `d`, or the earliest time when that is out of range.
    fn before(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
        chrono::TimeDelta::from_std(d)
            .ok()
            .and_then(|d| now.checked_sub_signed(d))
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    /// One queue's check.
    async fn check_queue(
        &self,
        queue: &QueueName,
        now: DateTime<Utc>,
        served: Option<&BTreeSet<QueueName>>,
    ) -> Result<HealthCheck> {
        let stats = self.broker.stats(queue).await?;
        let oldest = stats
            .oldest_ready_age_ms
            .map(|ms| format!(", oldest ready {:.1} s", ms as f64 / 1000.0))
            .unwrap_or_default();
        let paused = if stats.paused { "paused; " } else { "" };
        let mut message = format!(
            "{paused}{} ready, {} scheduled, {} active, {} dead{oldest}",
            stats.ready, stats.scheduled, stats.active, stats.dead
        );
        let mut problems = Vec::new();
        if let Some(control) = self.broker.control() {
            if stats.active > 0 {
                let stuck = stuck_jobs(control, queue, Self::before(now, self.stuck_grace)).await?;
                if stuck > 0 {
                    problems.push(format!(
                        "{stuck} active past their lease by more than {} s (a worker died or hangs and nothing recovers them)",
                        self.stuck_grace.as_secs()
                    ));
                }
            }
            if let Some(served) = served {
                if stats.ready > 0 && !stats.paused && !served.contains(queue) {
                    problems.push(format!("{} ready and no live worker serves the queue", stats.ready));
                }
            }
        }
        if let Some(dlq) = &self.dlq {
            if stats.dead > 0 {
                let since = Self::before(now, self.dlq_window);
                let recent = dlq
                    .count_dead(&DeadFilter::queue(queue.clone()).between(Some(since), None))
                    .await?;
                if recent > 0 {
                    problems.push(format!(
                        "{recent} dead-lettered in the last {} min",
                        self.dlq_window.as_secs() / 60
                    ));
                }
            }
        }
        let status = if problems.is_empty() {
            HealthStatus::Ok
        } else {
            message = format!("{}; {message}", problems.join("; "));
            HealthStatus::Degraded
        };
        Ok(HealthCheck::new(format!("queue {queue}"), status, message))
    }
}

/// How many of `queue`'s active jobs have a lease deadline before `cutoff`.
pub(crate) async fn stuck_jobs(control: &dyn JobControl, queue: &QueueName, cutoff: DateTime<Utc>) -> Result<u64> {
    let query = JobQuery::new(queue.clone(), JobState::Active);
    let mut stuck = 0;
    let mut cursor = None;
    loop {
        let page = control.list_jobs(&query, cursor.as_ref(), MAX_JOB_PAGE).await?;
        stuck += page
            .jobs
            .iter()
            .filter(|job| job.lease.as_ref().is_some_and(|lease| lease.deadline < cutoff))
            .count() as u64;
        match page.next {
            Some(next) => cursor = Some(next),
            None => return Ok(stuck),
        }
    }
}

#[async_trait]
impl HealthSource for BrokerHealth {
    async fn latest(&self) -> Result<HealthReport> {
        let now = self.clock.now();
        let mut checks = Vec::new();
        if let Err(e) = self.broker.ping().await {
            checks.push(HealthCheck::new("broker", HealthStatus::Down, e.to_string()));
            return Ok(HealthReport::new(now, checks));
        }
        checks.push(HealthCheck::new("broker", HealthStatus::Ok, "reachable"));
        let queues = match self.broker.queues().await {
            Ok(queues) => queues,
            Err(e) => {
                checks.push(HealthCheck::new("queues", HealthStatus::Down, e.to_string()));
                return Ok(HealthReport::new(now, checks));
            }
        };
        // The queues live workers serve, when the broker keeps a registry.
        let served = match self.broker.control() {
            Some(control) => match control.workers().await {
                Ok(workers) => {
                    let live: Vec<_> = workers.iter().filter(|w| !w.gone).collect();
                    let gone = workers.len() - live.len();
                    let message = format!("{} live, {gone} gone", live.len());
                    checks.push(HealthCheck::new("workers", HealthStatus::Ok, message));
                    Some(live.iter().flat_map(|w| w.info.queues.iter().cloned()).collect())
                }
                Err(e) => {
                    checks.push(HealthCheck::new("workers", HealthStatus::Degraded, e.to_string()));
                    None
                }
            },
            None => None,
        };
        for queue in queues {
            let check = match self.check_queue(&queue, now, served.as_ref()).await {
                Ok(check) => check,
                Err(e) => HealthCheck::new(format!("queue {queue}"), HealthStatus::Down, e.to_string()),
            };
            checks.push(check);
        }
        Ok(HealthReport::new(now, checks))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_is_as_bad_as_its_worst_check() {
        let now = Utc::now();
        assert_eq!(HealthReport::new(now, vec![]).status, HealthStatus::Ok);
        let checks = vec![
            HealthCheck::new("a", HealthStatus::Ok, ""),
            HealthCheck::new("b", HealthStatus::Degraded, ""),
        ];
        assert_eq!(HealthReport::new(now, checks.clone()).status, HealthStatus::Degraded);
        let mut down = checks;
        down.push(HealthCheck::new("c", HealthStatus::Down, ""));
        assert_eq!(HealthReport::new(now, down).status, HealthStatus::Down);
    }

    fn _object_safe(_: Arc<dyn HealthSource>) {}
}
