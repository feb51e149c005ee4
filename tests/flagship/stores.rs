//! The store contract: what every implementation of the FlagShip store
//! traits must do. Each implementation's test calls [`store_contract`].

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use flagship_worker::flagship::{
    stores::{
        ApiKeyStore, AuditLog, Channel, CounterIncrement, Delivery, DeliveryLog, FlagStore, HealthStore, MemoryStore,
        OrgConfigStore, PeriodArchive, UsageStore,
    },
    ApiKey, AuditEvent, CounterKey, DailyUsage, Flag, HealthRecord, OrgConfig, PeriodKind, Threshold,
};

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn key(org: &str, period: PeriodKind, t: &str) -> CounterKey {
    CounterKey::containing(org, "api_calls", period, at(t))
}

const WEEK: Duration = Duration::from_secs(7 * 86_400);

/// Runs every check against a fresh store. `org` prefixes the
/// organizations used, so a shared backend can run it more than once.
pub(crate) async fn store_contract<S>(store: Arc<S>, org: &str)
where
    S: AuditLog + UsageStore + PeriodArchive + FlagStore + ApiKeyStore + OrgConfigStore + DeliveryLog + HealthStore,
{
    audit(&*store, org).await;
    batches_apply_once_even_concurrently(store.clone(), org).await;
    thresholds_mark_once(store.clone(), org).await;
    closing_periods_archives_once(&*store, org).await;
    flags_keys_orgs(&*store, org).await;
    deliveries_and_health(&*store, org).await;
}

async fn audit<S: AuditLog>(store: &S, org: &str) {
    let event = |id: &str, t: &str| AuditEvent {
        id: id.into(),
        org_id: org.into(),
        actor: "u".into(),
        action: "flag.updated".into(),
        target_type: "flag".into(),
        target_id: "f".into(),
        occurred_at: at(t),
        metadata: [("k".to_owned(), serde_json::json!([1, "two"]))].into(),
    };
    assert!(store.append(&event("e-2", "2026-01-01T10:00:00Z")).await.unwrap());
    assert!(store.append(&event("e-1", "2026-01-01T10:00:00Z")).await.unwrap());
    assert!(store.append(&event("e-0", "2026-01-01T11:00:00Z")).await.unwrap());
    let mut changed = event("e-1", "2026-01-01T09:00:00Z");
    changed.action = "something.else".into();
    assert!(!store.append(&changed).await.unwrap(), "a duplicate id is ignored");
    let ids: Vec<_> = store.list(org, 10).await.unwrap().into_iter().map(|e| e.id).collect();
    assert_eq!(ids, ["e-1", "e-2", "e-0"], "by time, then id");
    assert_eq!(store.list(org, 1).await.unwrap().len(), 1);
    assert_eq!(
        store.get(org, "e-1").await.unwrap(),
        Some(event("e-1", "2026-01-01T10:00:00Z"))
    );
    assert_eq!(store.get(org, "nope").await.unwrap(), None);
}

async fn batches_apply_once_even_concurrently<S: UsageStore>(store: Arc<S>, org: &str) {
    let hour = key(org, PeriodKind::Hourly, "2026-01-01T10:10:00Z");
    let month = key(org, PeriodKind::Monthly, "2026-01-01T10:10:00Z");
    let increments = vec![
        CounterIncrement {
            key: hour.clone(),
            amount: 5,
        },
        CounterIncrement {
            key: month.clone(),
            amount: 5,
        },
    ];
    let now = at("2026-01-01T10:30:00Z");
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (store, increments, org) = (store.clone(), increments.clone(), org.to_owned());
            tokio::spawn(async move { store.apply_batch(&org, "b-1", &increments, now, WEEK).await.unwrap() })
        })
        .collect();
    let mut applied = 0;
    for task in tasks {
        let outcome = task.await.unwrap();
        applied += usize::from(outcome.applied);
        assert_eq!(outcome.counters, vec![(hour.clone(), 5), (month.clone(), 5)]);
    }
    assert_eq!(applied, 1, "exactly one concurrent call applies the batch");
    let again = store.apply_batch(org, "b-2", &increments, now, WEEK).await.unwrap();
    assert!(again.applied);
    assert_eq!(again.counters[0].1, 10);
    assert_eq!(store.counter(&hour).await.unwrap(), 10);
    let other_org = format!("{org}-other");
    assert!(
        store
            .apply_batch(&other_org, "b-1", &[], now, WEEK)
            .await
            .unwrap()
            .applied,
        "batch ids are per organization"
    );
    assert_eq!(store.counters(org).await.unwrap(), vec![(hour, 10), (month, 10)]);
}

async fn thresholds_mark_once<S: UsageStore>(store: Arc<S>, org: &str) {
    let hour = key(org, PeriodKind::Hourly, "2026-01-01T10:10:00Z");
    assert!(!store.threshold_marked(&hour, Threshold::Warning).await.unwrap());
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (store, hour) = (store.clone(), hour.clone());
            tokio::spawn(async move { store.mark_threshold(&hour, Threshold::Warning).await.unwrap() })
        })
        .collect();
    let mut won = 0;
    for task in tasks {
        won += usize::from(task.await.unwrap());
    }
    assert_eq!(won, 1);
    assert!(store.threshold_marked(&hour, Threshold::Warning).await.unwrap());
    assert!(!store.threshold_marked(&hour, Threshold::Limit).await.unwrap());
}

async fn closing_periods_archives_once<S: UsageStore + PeriodArchive>(store: &S, org: &str) {
    let hour = key(org, PeriodKind::Hourly, "2026-01-01T10:10:00Z");
    let month = key(org, PeriodKind::Monthly, "2026-01-01T10:10:00Z");
    let before_end = store
        .close_periods(PeriodKind::Hourly, at("2026-01-01T10:59:59Z"))
        .await
        .unwrap();
    assert!(before_end.iter().all(|p| p.key.org_id != org), "the hour has not ended");
    let closed = store
        .close_periods(PeriodKind::Hourly, at("2026-01-01T11:00:00Z"))
        .await
        .unwrap();
    let mine: Vec<_> = closed.iter().filter(|p| p.key.org_id == org).collect();
    assert_eq!(mine.len(), 1);
    assert_eq!((mine[0].key.clone(), mine[0].total), (hour.clone(), 10));
    let again = store
        .close_periods(PeriodKind::Hourly, at("2026-01-01T11:00:00Z"))
        .await
        .unwrap();
    assert!(again.iter().all(|p| p.key.org_id != org), "nothing left to close");
    assert_eq!(store.counter(&hour).await.unwrap(), 0);
    assert!(
        !store.threshold_marked(&hour, Threshold::Warning).await.unwrap(),
        "markers reset"
    );
    assert_eq!(
        store.counter(&month).await.unwrap(),
        10,
        "other period lengths untouched"
    );

    // A late event for the closed hour is added to its archive by the next close.
    let late = [CounterIncrement {
        key: hour.clone(),
        amount: 3,
    }];
    store
        .apply_batch(org, "late", &late, at("2026-01-01T11:05:00Z"), WEEK)
        .await
        .unwrap();
    store
        .close_periods(PeriodKind::Hourly, at("2026-01-01T11:05:00Z"))
        .await
        .unwrap();
    let archived = store
        .archived(
            PeriodKind::Hourly,
            at("2026-01-01T10:00:00Z"),
            at("2026-01-01T11:00:00Z"),
        )
        .await
        .unwrap();
    let mine: Vec<_> = archived.iter().filter(|p| p.key.org_id == org).collect();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].total, 13);

    let day = at("2026-01-01T00:00:00Z").date_naive();
    let usage = DailyUsage {
        org_id: org.into(),
        metric: "api_calls".into(),
        day,
        total: 13,
        peak_hour_total: 13,
        active_hours: 1,
    };
    store.put_daily(&usage).await.unwrap();
    store.put_daily(&usage).await.unwrap();
    let next = day.succ_opt().unwrap();
    assert_eq!(store.daily(org, day, next).await.unwrap(), vec![usage]);
    assert!(store
        .daily(org, next, next.succ_opt().unwrap())
        .await
        .unwrap()
        .is_empty());
}

async fn flags_keys_orgs<S: FlagStore + ApiKeyStore + OrgConfigStore>(store: &S, org: &str) {
    let now = at("2026-01-01T10:00:00Z");
    assert_eq!(store.disable_flag(org, "f", "r", now).await.unwrap(), None);
    store.put_flag(&Flag::enabled(org, "f")).await.unwrap();
    assert_eq!(store.disable_flag(org, "f", "limit", now).await.unwrap(), Some(true));
    assert_eq!(store.disable_flag(org, "f", "again", now).await.unwrap(), Some(false));
    let flag = store.flag(org, "f").await.unwrap().unwrap();
    assert!(!flag.enabled);
    assert_eq!(flag.disabled_reason.as_deref(), Some("limit"));

    assert_eq!(store.block_api_key(org, "k", "r", now).await.unwrap(), None);
    store.put_api_key(&ApiKey::active(org, "k")).await.unwrap();
    assert_eq!(store.block_api_key(org, "k", "limit", now).await.unwrap(), Some(true));
    assert_eq!(store.block_api_key(org, "k", "again", now).await.unwrap(), Some(false));
    assert_eq!(store.api_key(org, "k").await.unwrap().unwrap().blocked_at, Some(now));

    let mut config = OrgConfig::new(org);
    config.notifications.email_recipients = vec!["ops@example.com".into()];
    store.put_org(&config).await.unwrap();
    assert_eq!(store.org(org).await.unwrap(), Some(config.clone()));
    config.warning_percent = 0;
    assert!(
        store.put_org(&config).await.is_err(),
        "invalid configurations are refused"
    );
    assert_eq!(store.org(&format!("{org}-unknown")).await.unwrap(), None);
}

async fn deliveries_and_health<S: DeliveryLog + HealthStore>(store: &S, org: &str) {
    let key = format!("{org}:n-1");
    assert!(!store.delivered(&key, Channel::Email).await.unwrap());
    store
        .record_delivery(&key, Channel::Email, Delivery::Sent, at("2026-01-01T10:00:00Z"))
        .await
        .unwrap();
    assert!(store.delivered(&key, Channel::Email).await.unwrap());
    assert!(!store.delivered(&key, Channel::Webhook).await.unwrap());
    store
        .record_delivery(&key, Channel::Webhook, Delivery::Logged, at("2026-01-01T10:00:00Z"))
        .await
        .unwrap();
    assert_eq!(
        store.delivery(&key, Channel::Email).await.unwrap(),
        Some(Delivery::Sent)
    );
    assert_eq!(
        store.delivery(&key, Channel::Webhook).await.unwrap(),
        Some(Delivery::Logged),
        "a logged delivery is not recorded as sent"
    );

    let report = |id: &str| HealthRecord {
        check_id: format!("{org}-{id}"),
        checked_at: at("2026-01-01T10:00:00Z"),
        healthy: true,
        broker_reachable: true,
        queues: vec![],
        dead_total: 0,
        dlq_growth: 0,
        problems: vec![],
        last_alert_at: None,
    };
    store.record_health(&report("1")).await.unwrap();
    store.record_health(&report("2")).await.unwrap();
    assert_eq!(store.latest().await.unwrap(), Some(report("2")));

    let worker = |n: u8| format!("worker:{org}-{n}");
    store.record_seen(&worker(1), at("2026-01-01T10:00:00Z")).await.unwrap();
    store.record_seen(&worker(2), at("2026-01-01T10:00:00Z")).await.unwrap();
    store.record_seen(&worker(1), at("2026-01-01T10:01:00Z")).await.unwrap();
    store
        .record_seen(&format!("schedule:{org}"), at("2026-01-01T10:00:00Z"))
        .await
        .unwrap();
    let seen = store.seen(&format!("worker:{org}-")).await.unwrap();
    assert_eq!(
        seen,
        vec![
            (worker(1), at("2026-01-01T10:01:00Z")),
            (worker(2), at("2026-01-01T10:00:00Z"))
        ],
        "the latest time per name, only names with the prefix"
    );
}

#[tokio::test]
async fn memory_store_meets_the_contract() {
    store_contract(Arc::new(MemoryStore::new()), "acme").await;
}
