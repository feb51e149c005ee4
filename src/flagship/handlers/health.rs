//! [`HealthCheckHandler`]: checks the broker and queues, alerts operators.

use std::time::Duration;

use chrono::TimeDelta;

use super::{handle_with_process, operator_alert::deliver_operator_alert, JobRun};
use crate::{
    flagship::{
        model::{HealthRecord, QueueHealth},
        FlagshipModule, FlagshipServices, HealthCheckJob, OperatorAlertJob, FLAGSHIP_QUEUES, SCHEDULE_SEEN_PREFIX,
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
/// It also reports jobs stuck in active (their lease deadline passed more
/// than [`HealthThresholds::stuck_grace`](crate::flagship::HealthThresholds::stuck_grace)
/// ago), "no live worker" when every worker's heartbeat
/// ([`FlagshipServices::liveness`]) is older than the heartbeat timeout,
/// and a missed fire for each maintenance schedule whose next run after its
/// last recorded one is overdue.
///
/// An unhealthy report enqueues an [`OperatorAlertJob`] when the previous
/// report was healthy, and then at most once per [`REALERT_INTERVAL`] while
/// the problem lasts; when the broker is unreachable or refuses the job,
/// the alert goes out directly through the mailer and the operators'
/// webhook. Running the same check job again keeps its report and sends
/// no second alert.
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
                self.raise(&alert_for(report), report.broker_reachable, run).await?;
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
                if stats.active > 0 {
                    problems.extend(self.stuck(broker.as_ref(), &QueueName::new(queue.name)?, run).await);
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

        problems.extend(self.dead_workers(run).await?);
        problems.extend(self.missed_fires(run).await?);

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
            self.raise(&alert_for(&report), reachable, run).await?;
        }
        Ok(())
    }

    /// Enqueues the alert, or delivers it directly when the broker is
    /// unreachable or refuses the job.
    async fn raise(&self, alert: &OperatorAlertJob, reachable: bool, run: &JobRun) -> Result<(), HandlerError> {
        if reachable {
            match run.client.enqueue(alert).await {
                Ok(_) => return Ok(()),
                Err(e) => {
                    tracing::warn!(error = %e, alert = %alert.alert_id, "alert not enqueued; delivering it directly")
                }
            }
        } else {
            tracing::warn!(alert = %alert.alert_id, "broker unreachable; delivering the alert directly");
        }
        deliver_operator_alert(&self.services, alert, run.now).await
    }

    /// Jobs of `queue` active past their lease by more than the stuck
    /// grace: their worker died or hangs, and nothing recovers them.
    async fn stuck(&self, broker: &dyn crate::Broker, queue: &QueueName, run: &JobRun) -> Option<String> {
        let control = broker.control()?;
        let grace = self.services.settings.health.stuck_grace;
        let cutoff = run.now.checked_sub_signed(TimeDelta::from_std(grace).ok()?)?;
        match crate::health::stuck_jobs(control, queue, cutoff).await {
            Ok(0) => None,
            Ok(stuck) => Some(format!(
                "{queue}: {stuck} jobs active past their lease by more than {} s (a worker died or hangs and nothing recovers them)",
                grace.as_secs()
            )),
            Err(e) => Some(format!("{queue}: active jobs unavailable: {e}")),
        }
    }

    /// "No live worker" when workers report heartbeats and none is recent.
    async fn dead_workers(&self, run: &JobRun) -> Result<Option<String>, HandlerError> {
        let workers = self.services.liveness.last_seen().await?;
        let Some((worker, newest)) = workers.into_iter().max_by_key(|(_, at)| *at) else {
            return Ok(None);
        };
        let timeout = self.services.settings.health.heartbeat_timeout;
        let age = (run.now - newest).to_std().unwrap_or_default();
        Ok((age > timeout).then(|| {
            format!(
                "no live worker: the latest heartbeat (worker {worker}) is {} s old, more than {} s",
                age.as_secs(),
                timeout.as_secs()
            )
        }))
    }

    /// A problem per maintenance schedule whose next run after its last
    /// recorded one is overdue by more than the grace.
    async fn missed_fires(&self, run: &JobRun) -> Result<Vec<String>, HandlerError> {
        let grace = TimeDelta::from_std(self.services.settings.health.missed_fire_grace).unwrap_or(TimeDelta::MAX);
        let seen = self.services.health.seen(SCHEDULE_SEEN_PREFIX).await?;
        let mut problems = Vec::new();
        for schedule in FlagshipModule::schedules()? {
            let name = format!("{SCHEDULE_SEEN_PREFIX}{}", schedule.name());
            let Some((_, last)) = seen.iter().find(|(n, _)| *n == name) else {
                continue;
            };
            if let Some(due) = schedule.next_after(*last).filter(|due| *due + grace < run.now) {
                problems.push(format!(
                    "schedule {} missed its run due at {due} (last ran {last})",
                    schedule.name()
                ));
            }
        }
        Ok(problems)
    }
}

handle_with_process!(HealthCheckHandler, HealthCheckJob);

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use async_trait::async_trait;

    use super::*;
    use crate::{
        broker::{EnqueueOutcome, Lease, LeaseStatus, QueueStats, Reservation, ReserveRequest},
        flagship::{
            handlers::test_support::*, stores::HealthStore, AuditEvent, AuditEventJob, Heartbeat, NOTIFICATIONS_QUEUE,
        },
        AttemptRecord, Broker, Client, Error, JobEnvelope,
    };

    /// A broker that cannot be reached.
    #[derive(Debug)]
    struct Down;

    fn down<T>() -> crate::Result<T> {
        Err(Error::Unavailable("connection refused".into()))
    }

    #[async_trait]
    impl Broker for Down {
        async fn enqueue(&self, _: Vec<JobEnvelope>) -> crate::Result<Vec<EnqueueOutcome>> {
            down()
        }
        async fn reserve(&self, _: &QueueName, _: ReserveRequest) -> crate::Result<Vec<Reservation>> {
            down()
        }
        async fn complete(&self, _: &[Lease]) -> crate::Result<Vec<LeaseStatus>> {
            down()
        }
        async fn retry_after(&self, _: &Reservation, _: Duration, _: AttemptRecord) -> crate::Result<()> {
            down()
        }
        async fn snooze(&self, _: &Reservation, _: Duration) -> crate::Result<()> {
            down()
        }
        async fn dead_letter(&self, _: &Reservation, _: Option<AttemptRecord>, _: &str) -> crate::Result<()> {
            down()
        }
        async fn release(&self, _: &[Lease]) -> crate::Result<Vec<LeaseStatus>> {
            down()
        }
        async fn extend(&self, _: &[Lease], _: Duration) -> crate::Result<Vec<LeaseStatus>> {
            down()
        }
        async fn recover_expired(&self, _: &QueueName, _: usize, _: Duration) -> crate::Result<Vec<Reservation>> {
            down()
        }
        async fn stats(&self, _: &QueueName) -> crate::Result<QueueStats> {
            down()
        }
        async fn queues(&self) -> crate::Result<Vec<QueueName>> {
            down()
        }
        async fn ping(&self) -> crate::Result<()> {
            down()
        }
    }

    async fn check(f: &Fixture, at_: &str) -> HealthRecord {
        HealthCheckHandler::new(f.services.clone())
            .process(HealthCheckJob {}, &f.run(at_))
            .await
            .unwrap();
        f.services.health.latest().await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn alerts_on_dlq_growth_since_the_previous_check() {
        let mut f = Fixture::new();
        f.services.settings.health.max_dlq_growth = 1;
        assert!(check(&f, "2026-01-01T10:00:00Z").await.healthy);
        for id in ["e-1", "e-2"] {
            enqueue_audit(&f.client, id).await;
        }
        let queue = QueueName::new(crate::flagship::AUDIT_QUEUE).unwrap();
        let reserved = f
            .broker
            .reserve(&queue, ReserveRequest::new(10, Duration::from_secs(60), Duration::ZERO))
            .await
            .unwrap();
        for job in &reserved {
            f.broker.dead_letter(job, None, "broken").await.unwrap();
        }
        let report = check(&f, "2026-01-01T10:01:00Z").await;
        assert_eq!((report.dead_total, report.dlq_growth), (2, 2));
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.contains("2 jobs dead-lettered since the previous check")),
            "{:?}",
            report.problems
        );
        assert_eq!(f.drain(NOTIFICATIONS_QUEUE).await.len(), 1, "operators alerted");
    }

    #[tokio::test]
    async fn alerts_when_a_job_is_stuck_in_active_past_its_lease() {
        let f = Fixture::new();
        enqueue_audit(&f.client, "e-1").await;
        let queue = QueueName::new(crate::flagship::AUDIT_QUEUE).unwrap();
        let reserved = f
            .broker
            .reserve(&queue, ReserveRequest::new(1, Duration::from_secs(60), Duration::ZERO))
            .await
            .unwrap();
        let deadline = reserved[0].deadline;
        let within = check(&f, &(deadline + TimeDelta::seconds(29)).to_rfc3339()).await;
        assert!(within.healthy, "within the grace: {:?}", within.problems);
        let report = check(&f, &(deadline + TimeDelta::seconds(31)).to_rfc3339()).await;
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.contains("1 jobs active past their lease by more than 30 s")),
            "{:?}",
            report.problems
        );
        assert_eq!(f.drain(NOTIFICATIONS_QUEUE).await.len(), 1, "operators alerted");
    }

    #[tokio::test]
    async fn alerts_when_no_worker_has_a_recent_heartbeat() {
        let f = Fixture::new();
        assert!(
            check(&f, "2026-01-01T10:00:00Z").await.healthy,
            "no heartbeats: nothing to judge"
        );
        f.store
            .record_seen("worker:w-1", at("2026-01-01T10:00:00Z"))
            .await
            .unwrap();
        assert!(
            check(&f, "2026-01-01T10:01:00Z").await.healthy,
            "a heartbeat a minute old"
        );
        let report = check(&f, "2026-01-01T10:05:00Z").await;
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.starts_with("no live worker") && p.contains("w-1")),
            "{:?}",
            report.problems
        );
        let heartbeat = Heartbeat::new(f.store.clone(), "w-2");
        heartbeat.beat().await.unwrap();
        let names: Vec<_> = f
            .services
            .liveness
            .last_seen()
            .await
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["w-1", "w-2"]);
    }

    #[tokio::test]
    async fn alerts_when_a_maintenance_schedule_misses_its_run() {
        let f = Fixture::new();
        let rollover = crate::flagship::PeriodRolloverHandler::new(f.services.clone());
        rollover
            .process(
                crate::flagship::PeriodRolloverJob {
                    period: crate::flagship::PeriodKind::Hourly,
                },
                &f.run("2026-01-01T10:00:00Z"),
            )
            .await
            .unwrap();
        assert!(check(&f, "2026-01-01T11:04:00Z").await.healthy, "within the grace");
        let report = check(&f, "2026-01-01T11:06:00Z").await;
        assert_eq!(
            report.problems,
            ["schedule flagship:rollover-hourly missed its run due at 2026-01-01 11:00:00 UTC (last ran 2026-01-01 10:00:00 UTC)"]
        );
    }

    #[tokio::test]
    async fn alerts_directly_through_the_mailer_when_the_broker_is_down() {
        let mut f = Fixture::new();
        f.services.settings.operator_emails = vec!["oncall@flagship.test".into()];
        let handler = HealthCheckHandler::new(f.services.clone());
        let run = JobRun::new(Client::new(Arc::new(Down)), at("2026-01-01T10:00:00Z"));
        handler.process(HealthCheckJob {}, &run).await.unwrap();
        handler.process(HealthCheckJob {}, &run).await.unwrap();
        let report = f.services.health.latest().await.unwrap().unwrap();
        assert!(!report.broker_reachable);
        let sent = f.mailer.sent();
        assert_eq!(sent.len(), 1, "one alert, sent without the broker");
        assert!(sent[0].text().contains("broker unreachable"), "{}", sent[0].text());
    }

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
