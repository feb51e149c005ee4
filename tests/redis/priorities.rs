//! Priorities on Redis: where jobs of each priority wait (a ready list per
//! priority other than 0, and the set of priorities in use), and jobs
//! coming back to ready by the ways the conformance suite cannot drive on
//! Redis's clock: a backed-off retry falling due, and an orphan restored.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use flagship_worker::{
    broker::{redis::RedisBroker, CancelOutcome, JobControl, JobState},
    AttemptRecord, Broker, JobEnvelope, JobId, QueueName,
};
use redis::Commands;

use crate::support::{eventually, job, queue, start, take};

fn with(q: &QueueName, n: u64, priority: i8) -> JobEnvelope {
    let mut j = job(q, n);
    j.priority = priority;
    j
}

/// The ids of up to `max` jobs reserved now, in reservation order.
async fn reserve_ids(broker: &RedisBroker, q: &QueueName, max: usize) -> Vec<JobId> {
    let got = broker.reserve(q, take(max, 30_000)).await.unwrap();
    got.iter().map(|r| r.envelope.id).collect()
}

/// Each priority other than 0 has a list of its own in the queue's hash
/// tag, listed in `priorities` while it holds jobs; priority 0 keeps the
/// `ready` list. An emptied list's priority leaves the set, whether it was
/// emptied by reservation or by a cancel.
#[tokio::test]
async fn each_priority_has_its_list_in_the_queue_slot_until_it_empties() {
    let Some((server, broker)) = start().await else { return };
    let q = queue("prio-keys");
    let (base, high, low, gone) = (with(&q, 0, 0), with(&q, 1, 5), with(&q, 2, -3), with(&q, 3, 7));
    broker
        .enqueue(vec![base.clone(), high.clone(), low.clone(), gone.clone()])
        .await
        .unwrap();
    let mut conn = server.connection();
    let len = |conn: &mut redis::Connection, key: &str| -> usize { conn.llen(key).unwrap() };
    assert_eq!(len(&mut conn, "{prio-keys}:ready"), 1);
    assert_eq!(len(&mut conn, "{prio-keys}:ready:5"), 1);
    assert_eq!(len(&mut conn, "{prio-keys}:ready:-3"), 1);
    let in_use: Vec<String> = conn.zrange("{prio-keys}:priorities", 0, -1).unwrap();
    assert_eq!(in_use, ["-3", "5", "7"]);
    let got = broker.get_job(&q, gone.id).await.unwrap().unwrap();
    assert_eq!((got.state, got.envelope.priority), (JobState::Ready, 7));

    assert_eq!(broker.cancel(&q, gone.id).await.unwrap(), CancelOutcome::DeadLettered);
    let in_use: Vec<String> = conn.zrange("{prio-keys}:priorities", 0, -1).unwrap();
    assert_eq!(in_use, ["-3", "5"], "a list emptied by a cancel leaves the set");
    assert_eq!(broker.stats(&q).await.unwrap().ready, 3);

    let order = reserve_ids(&broker, &q, 10).await;
    assert_eq!(order, [high.id, base.id, low.id], "highest priority first");
    let exists: bool = conn.exists("{prio-keys}:priorities").unwrap();
    assert!(!exists, "every list is empty: no priority is in use");
}

/// A job retried with a backoff waits in `scheduled`, then falls due into
/// its own priority's list: ahead of an older job of a lower priority.
#[tokio::test]
async fn a_backed_off_retry_falls_due_into_its_priority() {
    let Some((_server, broker)) = start().await else { return };
    let q = queue("prio-backoff");
    let (low, high) = (with(&q, 0, -1), with(&q, 1, 3));
    broker.enqueue(vec![high.clone()]).await.unwrap();
    let r = broker.reserve(&q, take(1, 30_000)).await.unwrap().remove(0);
    assert_eq!(r.envelope.id, high.id);
    let record = AttemptRecord::failed(Utc::now(), Utc::now(), "try again later", None);
    broker
        .retry_after(&r, Duration::from_millis(100), record)
        .await
        .unwrap();
    broker.enqueue(vec![low.clone()]).await.unwrap();
    // Reading the stats promotes due jobs.
    eventually("the retry falls due", Duration::from_secs(5), || {
        let (broker, q) = (broker.clone(), q.clone());
        async move { broker.stats(&q).await.unwrap().ready == 2 }
    })
    .await;
    let order = reserve_ids(&broker, &q, 2).await;
    assert_eq!(order, [high.id, low.id], "the retried job returns to its priority");
}

/// A job whose id another program took out of its ready list is found by
/// the orphan scan and put back into its priority's list.
#[tokio::test]
async fn an_orphan_is_restored_into_its_priority() {
    let Some((server, broker)) = start().await else { return };
    let q = queue("prio-orphan");
    let (base, high) = (with(&q, 0, 0), with(&q, 1, 4));
    broker.enqueue(vec![base.clone(), high.clone()]).await.unwrap();
    let removed: usize = server
        .connection()
        .lrem("{prio-orphan}:ready:4", 1, high.id.to_string())
        .unwrap();
    assert_eq!(removed, 1);
    // Recovery runs the orphan scan.
    broker.recover_expired(&q, 10, Duration::from_secs(30)).await.unwrap();
    assert_eq!(broker.stats(&q).await.unwrap().restored, 1);
    let order = reserve_ids(&broker, &q, 2).await;
    assert_eq!(order, [high.id, base.id], "the restored job is back in its priority");
}

/// The oldest ready age covers every priority's list: an old job of a low
/// priority is what the age reports.
#[tokio::test]
async fn the_oldest_ready_age_covers_every_priority() {
    let Some((_server, broker)) = start().await else { return };
    let q = queue("prio-age");
    let mut old = with(&q, 0, -2);
    old.run_at = Utc::now() - TimeDelta::minutes(10);
    broker.enqueue(vec![with(&q, 1, 0), with(&q, 2, 6), old]).await.unwrap();
    let age = broker.stats(&q).await.unwrap().oldest_ready_age_ms.unwrap();
    assert!(age >= 600_000, "the age must be the low-priority job's: {age} ms");
}
