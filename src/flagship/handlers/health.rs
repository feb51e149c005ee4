//! [`HealthCheckHandler`]: checks the broker and queues, alerts operators.

use std::time::Duration;

use chrono::TimeDelta;

use super::{handle_with_process, JobRun};
use crate::{
    flagship::{
        model::{HealthRecord, QueueHealth},
        FlagshipServices, HealthCheckJob, OperatorAlertJob, FLAGSHIP_QUEUES,
    },
    HandlerError, QueueName,
};

/// While a problem lasts, operators are reminded this often.
pub const REALERT_INTERVAL: Duration = Duration::from_secs(3600);

/// Runs `health-check` jobs: pings the broker, reads each FlagShip queue's
/// depth, oldest ready job age and dead count, compares the dead count with
/// the previous check's, and records a [`HealthRecord`] that
/// [`HealthStore::latest`](crate::flagship::stores::HealthStore::latest)
/// returns (for the admin API).
///
/// An unhealthy report enqueues an [`OperatorAlertJob`] when the previous
/// report was healthy, and then at most once per [`REALERT_INTERVAL`] while
/// the problem lasts. Running the same check job again keeps its report
/// and sends no second alert.
#[derive(Debug, Clone)]
pub struct HealthCheckHandler {
    services: FlagshipServices,
}

fn alert_for(report: &HealthRecord) -> OperatorAlertJob {
    OperatorAlertJob {
        alert_id: format!("health-{}", report.check_id),
        subject: format!("{} health problem(s) in the FlagShip worker", report.problems.len()),
        body: format!(
            "Health check {} at {} found:\n- {}",
            report.check_id,
            report.checked_at,
            report.problems.join("\n- ")
        ),
    }
}

impl HealthCheckHandler {
    /// A handler on `services`.
    pub fn new(services: FlagshipServices) -> Self {
        HealthCheckHandler { services }
    }

    /// Checks, records, and alerts when due.
    pub async fn process(&self, _job: HealthCheckJob, run: &JobRun) -> Result<(), HandlerError> {
        let services = &self.services;
        let thresholds = &services.settings.health;
        let check_id = run.job_id.to_string();
        let previous = services.health.latest().await?;
        if let Some(report) = previous.as_ref().filter(|p| p.check_id == check_id) {
            // This check ran before; only its alert may not have been enqueued.
            if report.last_alert_at == Some(report.checked_at) {
                run.client.enqueue(&alert_for(report)).await?;
            }
            return Ok(());
        }

        let broker = run.client.broker();
        let mut problems = Vec::new();
        let reachable = match broker.ping().await {
            Ok(()) => true,
            Err(e) => {
                problems.push(format!("broker unreachable: {e}"));
                false
            }
        };
        let mut queues = Vec::new();
        if reachable {
            for queue in FLAGSHIP_QUEUES {
                let stats = match broker.stats(&QueueName::new(queue.name)?).await {
                    Ok(stats) => stats,
                    Err(e) => {
                        problems.push(format!("{}: stats unavailable: {e}", queue.name));
                        continue;
                    }
                };
                if stats.ready > thresholds.max_ready {
                    problems.push(format!(
                        "{}: {} ready jobs, more than {}",
                        queue.name, stats.ready, thresholds.max_ready
                    ));
                }
                let max_age = u64::try_from(thresholds.max_oldest_ready_age.as_millis()).unwrap_or(u64::MAX);
                if let Some(age) = stats.oldest_ready_age_ms.filter(|age| *age > max_age) {
                    problems.push(format!(
                        "{}: oldest ready job waited {} s, longer than {} s",
                        queue.name,
                        age / 1000,
                        max_age / 1000
                    ));
                }
                queues.push(QueueHealth {
                    queue: queue.name.to_owned(),
                    ready: stats.ready,
                    scheduled: stats.scheduled,
                    active: stats.active,
                    dead: stats.dead,
                    oldest_ready_age_ms: stats.oldest_ready_age_ms,
                });
            }
        }
        let dead_total = queues.iter().map(|q| q.dead).sum();
        let dlq_growth = previous
            .as_ref()
            .map_or(0, |p| u64::saturating_sub(dead_total, p.dead_total));
        if dlq_growth > thresholds.max_dlq_growth {
            problems.push(format!(
                "{dlq_growth} jobs dead-lettered since the previous check, more than {}",
                thresholds.max_dlq_growth
            ));
        }

        let healthy = problems.is_empty();
        let last_alert = previous.as_ref().filter(|p| !p.healthy).and_then(|p| p.last_alert_at);
        let realert = TimeDelta::from_std(REALERT_INTERVAL).unwrap_or(TimeDelta::MAX);
        let alert_due = !healthy && last_alert.is_none_or(|at| run.now - at >= realert);
        let report = HealthRecord {
            check_id,
            checked_at: run.now,
            healthy,
            broker_reachable: reachable,
            queues,
            dead_total,
            dlq_growth,
            problems,
            last_alert_at: if alert_due {
                Some(run.now)
            } else if healthy {
                None
            } else {
                last_alert
            },
        };
        services.health.record_health(&report).await?;
        if healthy {
            tracing::debug!(dead_total, "health check passed");
        } else {
            tracing::warn!(problems = ?report.problems, alert = alert_due, "health check failed");
        }
        if alert_due {
            run.client.enqueue(&alert_for(&report)).await?;
        }
        Ok(())
    }
}

handle_with_process!(HealthCheckHandler, HealthCheckJob);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        flagship::{handlers::test_support::*, AuditEvent, AuditEventJob, NOTIFICATIONS_QUEUE},
        Client,
    };

    async fn enqueue_audit(client: &Client, id: &str) {
        let event = AuditEvent {
            id: id.into(),
            org_id: "acme".into(),
            actor: "a".into(),
            action: "x".into(),
            target_type: "t".into(),
            target_id: "t".into(),
            occurred_at: at("2026-01-01T00:00:00Z"),
            metadata: Default::default(),
        };
        client.enqueue(&AuditEventJob { event }).await.unwrap();
    }

    #[tokio::test]
    async fn records_a_healthy_report_readable_as_the_latest() {
        let f = Fixture::new();
        let handler = HealthCheckHandler::new(f.services.clone());
        let run = f.run("2026-01-01T10:00:00Z");
        handler.process(HealthCheckJob {}, &run).await.unwrap();
        let report = f.services.health.latest().await.unwrap().unwrap();
        assert!(report.healthy, "{report:?}");
        assert!(report.broker_reachable);
        assert_eq!(report.queues.len(), 5);
        assert_eq!(report.check_id, run.job_id.to_string());
    }

    #[tokio::test]
    async fn alerts_once_per_problem_and_again_after_the_reminder_interval() {
        let mut f = Fixture::new();
        f.services.settings.health.max_ready = 0;
        let handler = HealthCheckHandler::new(f.services.clone());
        enqueue_audit(&f.client, "e-1").await;

        let first = f.run("2026-01-01T10:00:00Z");
        handler.process(HealthCheckJob {}, &first).await.unwrap();
        handler.process(HealthCheckJob {}, &first).await.unwrap();
        let report = f.services.health.latest().await.unwrap().unwrap();
        assert!(!report.healthy);
        assert!(
            report.problems[0].contains("flagship:audit: 1 ready jobs"),
            "{:?}",
            report.problems
        );
        let alerts = f.drain(NOTIFICATIONS_QUEUE).await;
        assert_eq!(alerts.len(), 1, "one alert for the same check run twice");
        assert_eq!(alerts[0].kind, "operator-alert");

        handler
            .process(HealthCheckJob {}, &f.run("2026-01-01T10:01:00Z"))
            .await
            .unwrap();
        assert!(
            f.drain(NOTIFICATIONS_QUEUE).await.is_empty(),
            "no reminder within the hour"
        );
        handler
            .process(HealthCheckJob {}, &f.run("2026-01-01T11:00:00Z"))
            .await
            .unwrap();
        assert_eq!(f.drain(NOTIFICATIONS_QUEUE).await.len(), 1, "a reminder after an hour");
    }
}
