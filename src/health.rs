//! Health: what operators page on, as a report of named checks, and the
//! [`HealthSource`] it comes from. The admin API serves it at
//! `/api/health`, the CLI prints it; domains (such as FlagShip) provide
//! their own source.

use std::{fmt, sync::Arc};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    broker::Broker,
    clock::{Clock, SystemClock},
    error::Result,
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

/// The default [`HealthSource`]: pings the broker and reports each queue's
/// backlog, on every call.
#[derive(Debug, Clone)]
pub struct BrokerHealth {
    /// What is checked.
    broker: Arc<dyn Broker>,
    /// When the checks ran, as reports say.
    clock: Arc<dyn Clock>,
}

impl BrokerHealth {
    /// Checks `broker`, stamping reports with the system clock.
    pub fn new(broker: Arc<dyn Broker>) -> Self {
        BrokerHealth {
            broker,
            clock: Arc::new(SystemClock),
        }
    }

    /// Stamps reports with `clock` instead.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
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
        for queue in queues {
            let check = match self.broker.stats(&queue).await {
                Ok(stats) => {
                    let oldest = stats
                        .oldest_ready_age_ms
                        .map(|ms| format!(", oldest ready {:.1} s", ms as f64 / 1000.0))
                        .unwrap_or_default();
                    let message = format!(
                        "{} ready, {} scheduled, {} active, {} dead{oldest}",
                        stats.ready, stats.scheduled, stats.active, stats.dead
                    );
                    HealthCheck::new(format!("queue {queue}"), HealthStatus::Ok, message)
                }
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
