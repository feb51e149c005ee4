//! [`UsageIngestionHandler`]: counts usage batches and raises thresholds.

use std::collections::BTreeMap;

use chrono::TimeDelta;
use sha2::{Digest, Sha256};

use super::{handle_with_process, require_id, JobRun};
use crate::{
    flagship::{
        model::{CounterKey, EnforcementConfig, OrgConfig, Threshold},
        stores::CounterIncrement,
        AutoAction, AutoActionJob, FlagshipServices, Notice, NotificationJob, UsageAlert, UsageIngestionJob,
    },
    EnqueueOptions, HandlerError, JobEnvelope,
};

/// Runs `usage-ingestion` jobs.
///
/// 1. Sums the batch per (organization, metric, period): every metric is
///    counted hourly, and also over each period its limits use.
/// 2. Applies the sums and records the batch id in one atomic store call
///    ([`UsageStore::apply_batch`](crate::flagship::stores::UsageStore::apply_batch)),
///    so a redelivered batch is counted once.
/// 3. For each open period's counter at or past a threshold of its limit
///    that is not yet marked: enqueues a `threshold_warning` or
///    `limit_exceeded` notification and, at the limit, the organization's
///    auto-actions, then marks the threshold. Follow-up jobs carry
///    idempotency keys derived from (counter, threshold), so a crash
///    between enqueueing and marking cannot send them twice; the marker
///    keeps them once per period beyond the broker's key retention.
///
/// A batch that jumps straight past the limit sends `limit_exceeded` only.
/// Usage of an organization without configuration is counted, with no
/// limits.
#[derive(Debug, Clone)]
pub struct UsageIngestionHandler {
    services: FlagshipServices,
}

/// A deterministic notification id for a counter's threshold:
/// `warning-` or `limit-` and 32 hex digits of a SHA-256 of the counter.
fn threshold_notification_id(key: &CounterKey, threshold: Threshold) -> String {
    let digest = Sha256::digest(format!("{key}|{}", threshold.as_str()).as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("{}-{hex}", threshold.as_str())
}

impl UsageIngestionHandler {
    /// A handler on `services`.
    pub fn new(services: FlagshipServices) -> Self {
        UsageIngestionHandler { services }
    }

    /// Counts the batch and raises thresholds. Refuses (permanently)
    /// malformed ids, events further in the future than the allowed clock
    /// skew, and sums that overflow.
    pub async fn process(&self, job: UsageIngestionJob, run: &JobRun) -> Result<(), HandlerError> {
        let services = &self.services;
        require_id("orgId", &job.org_id)?;
        require_id("batchId", &job.batch_id)?;
        let skew = TimeDelta::from_std(services.settings.max_clock_skew).unwrap_or(TimeDelta::MAX);
        let config = services
            .orgs
            .org(&job.org_id)
            .await?
            .unwrap_or_else(|| OrgConfig::new(job.org_id.clone()));

        let mut sums: BTreeMap<CounterKey, u64> = BTreeMap::new();
        for (i, event) in job.events.iter().enumerate() {
            require_id(&format!("events[{i}].metric"), &event.metric)?;
            if event.timestamp > run.now + skew {
                return Err(HandlerError::permanent(format!(
                    "events[{i}] is dated {}, in the future (now {}); fix the producer's clock",
                    event.timestamp, run.now
                )));
            }
            for period in config.counted_periods(&event.metric) {
                let key = CounterKey::containing(&job.org_id, &event.metric, period, event.timestamp);
                let sum = sums.entry(key).or_insert(0);
                *sum = sum.checked_add(event.quantity).ok_or_else(|| {
                    HandlerError::permanent(format!("events of batch `{}` overflow a counter", job.batch_id))
                })?;
            }
        }
        let increments: Vec<CounterIncrement> = sums
            .into_iter()
            .map(|(key, amount)| CounterIncrement { key, amount })
            .collect();
        let outcome = services
            .usage
            .apply_batch(
                &job.org_id,
                &job.batch_id,
                &increments,
                run.now,
                services.settings.batch_dedupe_window,
            )
            .await?;
        if outcome.applied {
            tracing::info!(org = %job.org_id, batch = %job.batch_id, events = job.events.len(), counters = increments.len(), "usage batch counted");
        } else {
            tracing::info!(org = %job.org_id, batch = %job.batch_id, "usage batch already counted; checking thresholds only");
        }

        let mut follow_ups = Vec::new();
        let mut reached_marks = Vec::new();
        for (key, value) in outcome.counters {
            if key.period_end() <= run.now {
                // A late event for a period already closed: counted, and
                // archived by the next rollover, but nothing to enforce.
                continue;
            }
            let Some(limit) = config.limit(&key.metric, key.period) else {
                continue;
            };
            let Some(reached) = limit.reached(value, config.warning_percent) else {
                continue;
            };
            if services.usage.threshold_marked(&key, reached).await? {
                continue;
            }
            let notification_id = threshold_notification_id(&key, reached);
            let percent = if reached == Threshold::Limit {
                100
            } else {
                config.warning_percent
            };
            let alert = UsageAlert::new(key.metric.clone(), percent).with_usage(
                key.period,
                key.period_start,
                limit.limit,
                value,
            );
            tracing::info!(org = %key.org_id, metric = %key.metric, period = %key.period, value, limit = limit.limit, threshold = reached.as_str(), "usage threshold crossed");
            let notice = match reached {
                Threshold::Warning => Notice::ThresholdWarning(alert),
                Threshold::Limit => Notice::LimitExceeded(alert),
            };
            let notification = NotificationJob {
                notification_id: Some(notification_id.clone()),
                org_id: job.org_id.clone(),
                notice,
            };
            follow_ups.push(run.client.envelope(&notification, &EnqueueOptions::new())?);
            if reached == Threshold::Limit {
                // No usage figure in the reason: it is part of each
                // action's identity, so a rerun must produce the same one.
                let reason = format!(
                    "{} reached the {} limit of {} (period starting {})",
                    key.metric, key.period, limit.limit, key.period_start
                );
                enforcement(&config.org_id, &limit.on_exceeded, &reason, run, &mut follow_ups)?;
                reached_marks.push((key.clone(), Threshold::Warning));
            }
            reached_marks.push((key, reached));
        }
        if !follow_ups.is_empty() {
            run.client.enqueue_envelopes(follow_ups).await?;
        }
        for (key, threshold) in reached_marks {
            services.usage.mark_threshold(&key, threshold).await?;
        }
        Ok(())
    }
}

/// The auto-actions of an exceeded limit: each flag disabled and each key
/// blocked, each followed by a notification saying so when `notify` is on.
/// Each job's idempotency key derives from the action's identity, so a
/// rerun enqueues nothing new.
fn enforcement(
    org_id: &str,
    actions: &EnforcementConfig,
    reason: &str,
    run: &JobRun,
    follow_ups: &mut Vec<JobEnvelope>,
) -> Result<(), HandlerError> {
    let flags = actions
        .disable_flags
        .iter()
        .map(|flag| (AutoAction::DisableFeature, flag));
    let keys = actions.block_api_keys.iter().map(|key| (AutoAction::BlockApiKey, key));
    for (action, target) in flags.chain(keys) {
        let notify = actions.notify.then_some((AutoAction::SendNotification, Some(action)));
        for (action, about) in [Some((action, None)), notify].into_iter().flatten() {
            let job = AutoActionJob {
                org_id: org_id.to_owned(),
                action,
                target_id: target.clone(),
                reason: reason.to_owned(),
                about,
            };
            follow_ups.push(run.client.envelope(&job, &EnqueueOptions::new())?);
        }
    }
    Ok(())
}

handle_with_process!(UsageIngestionHandler, UsageIngestionJob);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        flagship::{
            handlers::test_support::*,
            model::PeriodKind,
            stores::{OrgConfigStore, UsageStore},
            UsageEvent, AUTO_ACTIONS_QUEUE, NOTIFICATIONS_QUEUE,
        },
        Broker, Job,
    };

    fn batch(id: &str, quantity: u64, at_: &str) -> UsageIngestionJob {
        UsageIngestionJob {
            org_id: "acme".into(),
            batch_id: id.into(),
            events: vec![
                UsageEvent {
                    metric: "api_calls".into(),
                    quantity,
                    timestamp: at(at_),
                },
                UsageEvent {
                    metric: "storage_mb".into(),
                    quantity: 1,
                    timestamp: at(at_),
                },
            ],
        }
    }

    fn hourly(at_: &str) -> CounterKey {
        CounterKey::containing("acme", "api_calls", PeriodKind::Hourly, at(at_))
    }

    async fn notifications(f: &Fixture) -> Vec<NotificationJob> {
        f.drain(NOTIFICATIONS_QUEUE)
            .await
            .iter()
            .map(|e| e.payload.decode().unwrap())
            .collect()
    }

    #[tokio::test]
    async fn counts_a_batch_once_when_run_twice() {
        let f = Fixture::new();
        f.acme().await;
        let handler = UsageIngestionHandler::new(f.services.clone());
        let run = f.run("2026-01-01T10:30:00Z");
        let job = batch("b-1", 10, "2026-01-01T10:20:00Z");
        handler.process(job.clone(), &run).await.unwrap();
        handler.process(job, &run).await.unwrap();
        assert_eq!(f.store.counter(&hourly("2026-01-01T10:20:00Z")).await.unwrap(), 10);
        let counters = f.store.counters("acme").await.unwrap();
        assert_eq!(counters.len(), 2, "api_calls and storage_mb, hourly only: {counters:?}");
        assert!(notifications(&f).await.is_empty());
    }

    #[tokio::test]
    async fn warns_once_then_enforces_once_at_the_limit() {
        let f = Fixture::new();
        let mut config = f.acme().await;
        config.limits[0].on_exceeded = EnforcementConfig {
            disable_flags: vec!["new-ui".into()],
            block_api_keys: vec!["key-1".into()],
            notify: true,
        };
        f.store.put_org(&config).await.unwrap();
        let handler = UsageIngestionHandler::new(f.services.clone());
        let run = f.run("2026-01-01T10:30:00Z");

        let warn = batch("b-1", 85, "2026-01-01T10:20:00Z");
        handler.process(warn.clone(), &run).await.unwrap();
        handler.process(warn, &run).await.unwrap();
        let sent = notifications(&f).await;
        assert_eq!(sent.len(), 1, "{sent:?}");
        let Notice::ThresholdWarning(alert) = &sent[0].notice else {
            panic!("expected a warning, got {:?}", sent[0]);
        };
        assert_eq!((alert.current, alert.limit, alert.percent), (Some(85), Some(100), 80));
        assert!(f.drain(AUTO_ACTIONS_QUEUE).await.is_empty());

        // Another batch below the limit: no second warning.
        handler
            .process(batch("b-2", 5, "2026-01-01T10:21:00Z"), &run)
            .await
            .unwrap();
        assert!(notifications(&f).await.is_empty());

        let over = batch("b-3", 10, "2026-01-01T10:25:00Z");
        handler.process(over.clone(), &run).await.unwrap();
        handler.process(over, &run).await.unwrap();
        let sent = notifications(&f).await;
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert!(matches!(&sent[0].notice, Notice::LimitExceeded(a) if a.current == Some(100)));
        let actions: Vec<AutoActionJob> = f
            .drain(AUTO_ACTIONS_QUEUE)
            .await
            .iter()
            .map(|e| e.payload.decode().unwrap())
            .collect();
        let summary: Vec<_> = actions.iter().map(|a| (a.action, a.target_id.as_str())).collect();
        assert_eq!(
            summary,
            [
                (AutoAction::DisableFeature, "new-ui"),
                (AutoAction::SendNotification, "new-ui"),
                (AutoAction::BlockApiKey, "key-1"),
                (AutoAction::SendNotification, "key-1"),
            ]
        );
        assert!(
            actions[0].reason.contains("reached the hourly limit of 100"),
            "{}",
            actions[0].reason
        );
        assert_eq!(actions[1].about, Some(AutoAction::DisableFeature));
        assert_eq!(actions[3].about, Some(AutoAction::BlockApiKey));
        assert!(f
            .store
            .threshold_marked(&hourly("2026-01-01T10:00:00Z"), Threshold::Limit)
            .await
            .unwrap());
    }

    async fn actions(f: &Fixture) -> Vec<(AutoAction, String)> {
        f.drain(AUTO_ACTIONS_QUEUE)
            .await
            .iter()
            .map(|e| e.payload.decode::<AutoActionJob>().unwrap())
            .map(|a| (a.action, a.target_id))
            .collect()
    }

    #[tokio::test]
    async fn each_limit_runs_its_own_actions() {
        let f = Fixture::new();
        let mut config = f.acme().await;
        let disable = |flag: &str| EnforcementConfig {
            disable_flags: vec![flag.into()],
            ..EnforcementConfig::default()
        };
        config.limits[0].on_exceeded = disable("api-feature");
        config.limits.push(
            crate::flagship::UsageLimit::new("seats", PeriodKind::Hourly, 10).on_exceeded(EnforcementConfig {
                block_api_keys: vec!["seat-key".into()],
                ..disable("seat-feature")
            }),
        );
        f.store.put_org(&config).await.unwrap();
        let handler = UsageIngestionHandler::new(f.services.clone());
        let run = f.run("2026-01-01T10:30:00Z");

        handler
            .process(batch("b-1", 150, "2026-01-01T10:20:00Z"), &run)
            .await
            .unwrap();
        assert_eq!(
            actions(&f).await,
            [(AutoAction::DisableFeature, "api-feature".to_owned())],
            "exceeding api_calls runs api_calls' actions only"
        );

        let seats = UsageIngestionJob {
            org_id: "acme".into(),
            batch_id: "b-2".into(),
            events: vec![UsageEvent {
                metric: "seats".into(),
                quantity: 12,
                timestamp: at("2026-01-01T10:21:00Z"),
            }],
        };
        handler.process(seats, &run).await.unwrap();
        assert_eq!(
            actions(&f).await,
            [
                (AutoAction::DisableFeature, "seat-feature".to_owned()),
                (AutoAction::BlockApiKey, "seat-key".to_owned())
            ]
        );
    }

    #[tokio::test]
    async fn a_jump_past_the_limit_sends_only_limit_exceeded() {
        let f = Fixture::new();
        f.acme().await;
        let handler = UsageIngestionHandler::new(f.services.clone());
        handler
            .process(
                batch("b-1", 150, "2026-01-01T10:20:00Z"),
                &f.run("2026-01-01T10:30:00Z"),
            )
            .await
            .unwrap();
        let sent = notifications(&f).await;
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].notice.kind(), crate::flagship::NotificationType::LimitExceeded);
        assert_eq!(
            f.broker
                .stats(&crate::QueueName::new(AutoActionJob::QUEUE).unwrap())
                .await
                .unwrap()
                .ready,
            0
        );
    }

    #[tokio::test]
    async fn late_usage_for_a_closed_period_is_counted_without_alerts() {
        let f = Fixture::new();
        f.acme().await;
        let handler = UsageIngestionHandler::new(f.services.clone());
        handler
            .process(
                batch("b-1", 150, "2026-01-01T09:59:00Z"),
                &f.run("2026-01-01T10:01:00Z"),
            )
            .await
            .unwrap();
        assert_eq!(f.store.counter(&hourly("2026-01-01T09:00:00Z")).await.unwrap(), 150);
        assert!(notifications(&f).await.is_empty());
    }

    #[tokio::test]
    async fn refuses_events_from_the_future_and_counts_nothing() {
        let f = Fixture::new();
        f.acme().await;
        let handler = UsageIngestionHandler::new(f.services.clone());
        let err = handler
            .process(batch("b-1", 5, "2026-01-01T12:00:00Z"), &f.run("2026-01-01T10:00:00Z"))
            .await
            .unwrap_err();
        assert!(matches!(err, HandlerError::Permanent(_)));
        assert!(err.to_string().contains("events[0]"), "{err}");
        assert!(f.store.counters("acme").await.unwrap().is_empty());
    }

    #[test]
    fn notification_ids_are_deterministic_and_valid() {
        let key = hourly("2026-01-01T10:00:00Z");
        let id = threshold_notification_id(&key, Threshold::Warning);
        assert_eq!(id, threshold_notification_id(&key, Threshold::Warning));
        assert_ne!(id, threshold_notification_id(&key, Threshold::Limit));
        assert!(crate::flagship::model::is_valid_id(&id), "{id}");
    }
}
