//! FlagShip's health as operators see it: the latest health-check record,
//! served as a [`HealthReport`] to the admin API and the CLI.

use std::sync::Arc;

use async_trait::async_trait;

use super::stores::HealthStore;
use crate::{
    clock::{Clock, SystemClock},
    error::Result,
    health::{HealthCheck, HealthReport, HealthSource, HealthStatus},
};

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
