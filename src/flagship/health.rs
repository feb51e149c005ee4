//! FlagShip's health as operators see it: the latest health-check record,
//! served as a [`HealthReport`] to the admin API and the CLI; and which
//! workers are alive ([`WorkerLiveness`], fed by [`Heartbeat`]).

use std::{fmt, future::Future, sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::stores::HealthStore;
use crate::{
    clock::{Clock, SystemClock},
    error::Result,
    health::{HealthCheck, HealthReport, HealthSource, HealthStatus},
};

/// The prefix of workers' heartbeat names in [`HealthStore::seen`].
pub const WORKER_SEEN_PREFIX: &str = "worker:";
/// The prefix of maintenance runs' names in [`HealthStore::seen`]
/// (followed by the schedule's name, e.g. `schedule:flagship:rollover-hourly`).
pub const SCHEDULE_SEEN_PREFIX: &str = "schedule:";
/// How often a [`Heartbeat`] says its worker is alive by default.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(20);

/// Which workers are alive, for the health check's "no live worker" alert.
///
/// # Contract
///
/// [`last_seen`](WorkerLiveness::last_seen) MUST return every worker it
/// knows of with the time it was last seen alive; an empty list means no
/// worker reports liveness (the check then says nothing).
#[async_trait]
pub trait WorkerLiveness: Send + Sync + fmt::Debug + 'static {
    /// Each known worker and when it was last seen alive.
    async fn last_seen(&self) -> Result<Vec<(String, DateTime<Utc>)>>;
}

/// Liveness from the heartbeats [`Heartbeat`] records in a [`HealthStore`].
#[derive(Debug, Clone)]
pub struct HeartbeatLiveness {
    /// Where heartbeats are recorded.
    store: Arc<dyn HealthStore>,
}

impl HeartbeatLiveness {
    /// Reads heartbeats from `store`.
    pub fn new(store: Arc<dyn HealthStore>) -> Self {
        HeartbeatLiveness { store }
    }
}

#[async_trait]
impl WorkerLiveness for HeartbeatLiveness {
    async fn last_seen(&self) -> Result<Vec<(String, DateTime<Utc>)>> {
        let seen = self.store.seen(WORKER_SEEN_PREFIX).await?;
        Ok(seen
            .into_iter()
            .map(|(name, at)| (name[WORKER_SEEN_PREFIX.len()..].to_owned(), at))
            .collect())
    }
}

/// Records that a worker process is alive, every [`HEARTBEAT_INTERVAL`]
/// while it runs, as `worker:<id>` in a [`HealthStore`].
#[derive(Debug, Clone)]
pub struct Heartbeat {
    /// Where the heartbeats go.
    store: Arc<dyn HealthStore>,
    /// The worker's id.
    worker: String,
    /// The time of each beat.
    clock: Arc<dyn Clock>,
}

impl Heartbeat {
    /// Heartbeats of worker `worker` into `store`, on the system clock.
    pub fn new(store: Arc<dyn HealthStore>, worker: impl Into<String>) -> Self {
        Heartbeat {
            store,
            worker: worker.into(),
            clock: Arc::new(SystemClock),
        }
    }

    /// Records one heartbeat now.
    pub async fn beat(&self) -> Result<()> {
        let name = format!("{WORKER_SEEN_PREFIX}{}", self.worker);
        self.store.record_seen(&name, self.clock.now()).await
    }

    /// Beats every `interval` until `shutdown` completes; a failed beat is
    /// logged and the next one tried.
    pub async fn run_until(&self, interval: Duration, shutdown: impl Future) {
        let beats = async {
            loop {
                if let Err(e) = self.beat().await {
                    tracing::warn!(worker = %self.worker, error = %e, "heartbeat not recorded");
                }
                tokio::time::sleep(interval).await;
            }
        };
        tokio::select! {
            () = beats => {}
            _ = shutdown => {}
        }
    }
}

/// A [`HealthSource`] serving the latest FlagShip health check (the
/// `health-check` maintenance job's record, kept in a [`HealthStore`]).
///
/// The broker being unreachable is `down`, any other problem `degraded`;
/// before the first check has run, the report is `degraded` and says so.
#[derive(Debug, Clone)]
pub struct FlagshipHealth {
    /// Where the health-check job records its results.
    store: Arc<dyn HealthStore>,
    /// Stamps the report served before the first check has run.
    clock: Arc<dyn Clock>,
}

impl FlagshipHealth {
    /// Reads records from `store`.
    pub fn new(store: Arc<dyn HealthStore>) -> Self {
        FlagshipHealth {
            store,
            clock: Arc::new(SystemClock),
        }
    }

    /// Reads the time from `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

#[async_trait]
impl HealthSource for FlagshipHealth {
    async fn latest(&self) -> Result<HealthReport> {
        let Some(report) = self.store.latest().await? else {
            let check = HealthCheck::new(
                "flagship health check",
                HealthStatus::Degraded,
                "no health check has run yet; the FlagShip worker schedules one",
            );
            return Ok(HealthReport::new(self.clock.now(), vec![check]));
        };
        let mut checks = Vec::new();
        let broker = if report.broker_reachable {
            HealthCheck::new("broker", HealthStatus::Ok, "reachable")
        } else {
            HealthCheck::new("broker", HealthStatus::Down, "unreachable")
        };
        checks.push(broker);
        for queue in &report.queues {
            let message = format!(
                "{} ready, {} scheduled, {} active, {} dead",
                queue.ready, queue.scheduled, queue.active, queue.dead
            );
            checks.push(HealthCheck::new(
                format!("queue {}", queue.queue),
                HealthStatus::Ok,
                message,
            ));
        }
        checks.push(HealthCheck::new(
            "dlq growth",
            HealthStatus::Ok,
            format!(
                "{} dead in total, {} new since the previous check",
                report.dead_total, report.dlq_growth
            ),
        ));
        for problem in &report.problems {
            checks.push(HealthCheck::new("problem", HealthStatus::Degraded, problem.clone()));
        }
        if !report.healthy && report.problems.is_empty() && report.broker_reachable {
            checks.push(HealthCheck::new(
                "flagship health check",
                HealthStatus::Degraded,
                "reported unhealthy",
            ));
        }
        Ok(HealthReport::new(report.checked_at, checks))
    }
}
