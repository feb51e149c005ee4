//! The broker's contract, case by case.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use flagship_worker::{
    broker::redis::RedisBroker, AttemptRecord, Broker, EnqueueOutcome, Error, JobEnvelope, LeaseStatus,
};
use tokio::time::Instant;

use crate::support::{eventually, job, queue, start, take, wait_for};

#[tokio::test]
async fn jobs_are_reserved_oldest_first_and_completed_once() {
    let Some((_server, broker)) = start().await else { return };
    let q = queue("fifo");
    let jobs: Vec<JobEnvelope> = (0..5).map(|n| job(&q, n)).collect();
    let ids: Vec<_> = jobs.iter().map(|j| j.id).collect();
    let outcomes = broker.enqueue(jobs).await.unwrap();
    assert!(outcomes.iter().all(EnqueueOutcome::is_enqueued));

    let first = broker.reserve(&q, take(3, 30_000)).await.unwrap();
    let rest = broker.reserve(&q, take(10, 30_000)).await.unwrap();
    let got: Vec<_> = first.iter().chain(&rest).map(|r| r.envelope.id).collect();
    assert_eq!(got, ids);
    assert_eq!(first[0].envelope.payload, serde_json::json!({ "n": 0 }));
    let tokens: std::collections::HashSet<_> = first.iter().chain(&rest).map(|r| r.lease.token).collect();
    assert_eq!(tokens.len(), 5, "every lease has its own token");

    let leases: Vec<_> = first.iter().chain(&rest).map(|r| r.lease.clone()).collect();
    assert_eq!(broker.complete(&leases).await.unwrap(), vec![LeaseStatus::Held; 5]);
    assert_eq!(broker.complete(&leases).await.unwrap(), vec![LeaseStatus::Lost; 5]);
    let stats = broker.stats(&q).await.unwrap();
    assert_eq!((stats.ready, stats.active, stats.completed), (0, 0, 5));
    assert!(broker.reserve(&q, take(1, 30_000)).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_expired_lease_is_fenced_after_recovery() {
    let Some((_server, broker)) = start().await else { return };
    let q = queue("fence");
    broker.enqueue(vec![job(&q, 1)]).await.unwrap();
    let old = broker.reserve(&q, take(1, 100)).await.unwrap().remove(0);
    assert!(broker
        .recover_expired(&q, 10, Duration::from_secs(30))
        .await
        .unwrap()
        .is_empty());
    tokio::time::sleep(Duration::from_millis(150)).await;

    let recovered = broker.recover_expired(&q, 10, Duration::from_secs(30)).await.unwrap();
    assert_eq!(recovered.len(), 1);
    let new = &recovered[0];
    assert_eq!(new.lease.id, old.lease.id);
    assert_ne!(new.lease.token, old.lease.token);
    let started = new
        .expired_attempt_started_at
        .expect("recovered jobs say when the lost attempt started");
    assert!((started - Utc::now()).num_seconds().abs() < 5);

    let record = AttemptRecord::failed(Utc::now(), Utc::now(), "zombie", None);
    let now = Duration::ZERO;
    assert_eq!(
        broker.complete(std::slice::from_ref(&old.lease)).await.unwrap(),
        vec![LeaseStatus::Lost]
    );
    assert!(matches!(
        broker.retry_after(&old, now, record.clone()).await,
        Err(Error::LeaseLost(_))
    ));
    assert!(matches!(
        broker.dead_letter(&old, None, "zombie").await,
        Err(Error::LeaseLost(_))
    ));
    assert_eq!(
        broker
            .extend(std::slice::from_ref(&old.lease), Duration::from_secs(1))
            .await
            .unwrap(),
        vec![LeaseStatus::Lost]
    );
    assert_eq!(
        broker.release(std::slice::from_ref(&old.lease)).await.unwrap(),
        vec![LeaseStatus::Lost]
    );
    broker.complete_one(&new.lease).await.unwrap();
    assert_eq!(broker.stats(&q).await.unwrap().completed, 1);
}

#[tokio::test]
async fn a_retry_records_the_attempt_and_waits_for_its_time() {
    let Some((_server, broker)) = start().await else { return };
    let q = queue("retry");
    broker.enqueue(vec![job(&q, 1)]).await.unwrap();
    let r = broker.reserve(&q, take(1, 30_000)).await.unwrap().remove(0);
    let record = AttemptRecord::failed(Utc::now(), Utc::now(), "boom", Some("w1".into()));
    let scheduled = Instant::now();
    broker
        .retry_after(&r, Duration::from_millis(200), record.clone())
        .await
        .unwrap();
    assert!(
        broker.reserve(&q, take(1, 30_000)).await.unwrap().is_empty(),
        "not before its time"
    );
    assert_eq!(broker.stats(&q).await.unwrap().scheduled, 1);

    let again = broker.reserve(&q, wait_for(1, 2_000)).await.unwrap().remove(0);
    let waited = scheduled.elapsed();
    assert!(waited >= Duration::from_millis(190), "ran after {waited:?}");
    assert_eq!(again.envelope.attempt, 1);
    assert_eq!(again.envelope.attempts, vec![record]);
    assert_eq!(broker.stats(&q).await.unwrap().retried, 1);
    assert!(matches!(
        broker
            .retry_after(&r, Duration::ZERO, again.envelope.attempts[0].clone())
            .await,
        Err(Error::LeaseLost(_))
    ));
}

#[tokio::test]
async fn a_delayed_job_runs_within_50_ms_of_its_due_time() {
    let Some((_server, broker)) = start().await else { return };
    let q = queue("delayed");
    let waiter = {
        let (broker, q) = (broker.clone(), q.clone());
        tokio::spawn(async move { broker.reserve(&q, wait_for(1, 3_000)).await })
    };
    // Let the reserver block first.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut delayed = job(&q, 1);
    delayed.run_at = Utc::now() + TimeDelta::milliseconds(300);
    let enqueued = Instant::now();
    broker.enqueue(vec![delayed]).await.unwrap();
    let got = waiter.await.unwrap().unwrap();
    let after = enqueued.elapsed();
    assert_eq!(got.len(), 1);
    assert!(after >= Duration::from_millis(295), "too early: {after:?}");
    assert!(after <= Duration::from_millis(350), "too late: {after:?}");
}

#[tokio::test]
async fn an_idle_reserve_wakes_for_a_new_job() {
    let Some((_server, broker)) = start().await else { return };
    let q = queue("wake");
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let (broker, q) = (broker.clone(), q.clone());
            tokio::spawn(async move { broker.reserve(&q, wait_for(1, 5_000)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let enqueued = Instant::now();
    broker.enqueue((0..3).map(|n| job(&q, n)).collect()).await.unwrap();
    let mut got = 0;
    for waiter in waiters {
        got += waiter.await.unwrap().unwrap().len();
    }
    assert_eq!(got, 3, "each waiter took one job");
    assert!(
        enqueued.elapsed() < Duration::from_secs(1),
        "woken, not timed out: {:?}",
        enqueued.elapsed()
    );
}

#[tokio::test]
async fn idempotency_keys_hold_until_the_retention_ends() {
    let Some((server, _)) = start().await else { return };
    let broker = RedisBroker::builder(server.url())
        .key_retention(Duration::from_millis(300))
        .connect()
        .await
        .unwrap();
    let q = queue("unique");
    let keyed = |n| {
        let mut j = job(&q, n);
        j.idempotency_key = Some("invoice:42".into());
        j
    };
    let first = keyed(1);
    let first_id = first.id;
    let outcomes = broker.enqueue(vec![first.clone(), keyed(2)]).await.unwrap();
    assert_eq!(
        outcomes,
        vec![EnqueueOutcome::Enqueued(first_id), EnqueueOutcome::Duplicate(first_id)]
    );
    assert_eq!(
        broker.enqueue(vec![keyed(3)]).await.unwrap(),
        vec![EnqueueOutcome::Duplicate(first_id)]
    );
    assert_eq!(
        broker.enqueue(vec![first]).await.unwrap(),
        vec![EnqueueOutcome::Duplicate(first_id)],
        "re-sending a stored job stores nothing"
    );

    let r = broker.reserve(&q, take(5, 30_000)).await.unwrap();
    assert_eq!(r.len(), 1);
    broker.complete_one(&r[0].lease).await.unwrap();
    assert_eq!(
        broker.enqueue(vec![keyed(4)]).await.unwrap(),
        vec![EnqueueOutcome::Duplicate(first_id)],
        "a completed job's key is held for the retention window"
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    let late = keyed(5);
    assert_eq!(
        broker.enqueue(vec![late.clone()]).await.unwrap(),
        vec![EnqueueOutcome::Enqueued(late.id)]
    );
    assert_eq!(
        broker.enqueue(vec![keyed(6)]).await.unwrap(),
        vec![EnqueueOutcome::Duplicate(late.id)]
    );
}

#[tokio::test]
async fn released_jobs_go_back_to_the_front_without_an_attempt() {
    let Some((_server, broker)) = start().await else { return };
    let q = queue("release");
    let jobs: Vec<_> = (0..3).map(|n| job(&q, n)).collect();
    let ids: Vec<_> = jobs.iter().map(|j| j.id).collect();
    broker.enqueue(jobs).await.unwrap();
    let held = broker.reserve(&q, take(2, 30_000)).await.unwrap();
    let leases: Vec<_> = held.iter().map(|r| r.lease.clone()).collect();
    assert_eq!(broker.release(&leases).await.unwrap(), vec![LeaseStatus::Held; 2]);
    assert_eq!(broker.release(&leases).await.unwrap(), vec![LeaseStatus::Lost; 2]);
    let again = broker.reserve(&q, take(3, 30_000)).await.unwrap();
    assert_eq!(again.iter().map(|r| r.envelope.id).collect::<Vec<_>>(), ids);
    assert!(again
        .iter()
        .all(|r| r.envelope.attempt == 0 && r.envelope.attempts.is_empty()));
}

#[tokio::test]
async fn extending_a_lease_keeps_the_job_from_recovery() {
    let Some((_server, broker)) = start().await else { return };
    let q = queue("extend");
    broker.enqueue(vec![job(&q, 1)]).await.unwrap();
    let r = broker.reserve(&q, take(1, 200)).await.unwrap().remove(0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let lease = std::slice::from_ref(&r.lease);
    assert_eq!(
        broker.extend(lease, Duration::from_millis(600)).await.unwrap(),
        vec![LeaseStatus::Held]
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(broker
        .recover_expired(&q, 10, Duration::from_secs(1))
        .await
        .unwrap()
        .is_empty());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        broker
            .recover_expired(&q, 10, Duration::from_secs(1))
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn stats_and_queue_names_reflect_the_jobs() {
    let Some((_server, broker)) = start().await else { return };
    let (a, b) = (queue("stats:a"), queue("stats:b"));
    let mut later = job(&a, 2);
    later.run_at = Utc::now() + TimeDelta::seconds(60);
    broker
        .enqueue(vec![job(&a, 1), later, job(&b, 3), job(&a, 4)])
        .await
        .unwrap();
    let held = broker.reserve(&a, take(1, 30_000)).await.unwrap();
    assert_eq!(held.len(), 1);
    let stats = broker.stats(&a).await.unwrap();
    assert_eq!((stats.ready, stats.scheduled, stats.active, stats.dead), (1, 1, 1, 0));
    assert!(stats.oldest_ready_age_ms.is_some());
    assert_eq!(broker.queues().await.unwrap(), vec![a, b]);
    broker.ping().await.unwrap();
}

#[tokio::test]
async fn due_times_follow_redis_time_whatever_the_producer_clock_says() {
    let Some((_server, broker)) = start().await else { return };
    for skew in [TimeDelta::hours(1), TimeDelta::hours(-1)] {
        let q = queue(&format!("skew{}", skew.num_hours()));
        // What a producer on a skewed machine writes: its now, plus 150 ms.
        let skewed_now = Utc::now() + skew;
        let mut delayed = JobEnvelope::new("k", q.clone(), serde_json::json!({}), skewed_now);
        delayed.run_at = skewed_now + TimeDelta::milliseconds(150);
        let enqueued = Instant::now();
        broker.enqueue(vec![delayed]).await.unwrap();
        assert!(
            broker.reserve(&q, take(1, 30_000)).await.unwrap().is_empty(),
            "skew {skew}: early"
        );
        let got = broker.reserve(&q, wait_for(1, 2_000)).await.unwrap();
        assert_eq!(got.len(), 1, "skew {skew}: stuck");
        assert!(enqueued.elapsed() >= Duration::from_millis(145));
    }
}

#[tokio::test]
async fn a_lost_connection_is_unavailable_and_then_recovers() {
    let Some((mut server, broker)) = start().await else {
        return;
    };
    let q = queue("reconnect");
    broker.enqueue(vec![job(&q, 1)]).await.unwrap();
    server.kill();
    let err = broker.reserve(&q, take(1, 30_000)).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(matches!(
        broker.enqueue(vec![job(&q, 2)]).await,
        Err(Error::Unavailable(_))
    ));
    server.start_again();
    eventually("the broker reconnects", Duration::from_secs(10), || {
        let broker = broker.clone();
        async move { broker.ping().await.is_ok() }
    })
    .await;
    broker.enqueue(vec![job(&q, 3)]).await.unwrap();
    assert_eq!(broker.reserve(&q, take(5, 30_000)).await.unwrap().len(), 1);
}
