//! Idempotency keys: one job per key while the key is held.

use std::{sync::Arc, time::Duration};

use serde_json::json;

use super::{
    support::{
        assert_duplicate, dead_job, delta, enqueue_new, failure, job, join, keyed, probe_just_before, queue,
        reserve_now, reserve_one, stats, OrFail, LONG,
    },
    Fixture,
};
use crate::{
    broker::{EnqueueOutcome, LeaseStatus},
    envelope::JobEnvelope,
};

/// A key held by a pending (ready, active or scheduled) job refuses a
/// second job with [`EnqueueOutcome::Duplicate`] naming the holder, also
/// within one batch and when the stored envelope itself is sent again; jobs
/// without a key are never duplicates.
pub async fn idempotent_enqueue<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let q = queue(f, "idempotent");
    let first = keyed(job(f, &q, "order", 0), "order-42");
    let holder = first.id;
    enqueue_new(&*b, vec![first.clone()]).await;
    let dup = |f: &F| keyed(job(f, &q, "order", 1), "order-42");
    assert_duplicate(&*b, dup(f), holder, "ready").await;
    // A producer retrying its enqueue sends the same envelope, id and all.
    assert_duplicate(&*b, first, holder, "ready").await;

    let (x, y) = (
        keyed(job(f, &q, "x", 0), "batch-key"),
        keyed(job(f, &q, "x", 1), "batch-key"),
    );
    let outcomes = b.enqueue(vec![x.clone(), y]).await.or_fail("enqueue");
    assert_eq!(
        outcomes,
        [EnqueueOutcome::Enqueued(x.id), EnqueueOutcome::Duplicate(x.id)]
    );
    let plain = vec![job(f, &q, "plain", 0), job(f, &q, "plain", 0)];
    enqueue_new(&*b, plain).await;
    assert_eq!(stats(&*b, &q).await.ready, 4, "a duplicate was stored");

    let r = reserve_one(&*b, &q, LONG).await;
    assert_eq!(r.lease.id, holder);
    assert_duplicate(&*b, dup(f), holder, "active").await;
    b.retry_after(&r, Duration::from_secs(3600), failure(f, "later"))
        .await
        .or_fail("retry_after");
    assert_duplicate(&*b, dup(f), holder, "scheduled for retry").await;
}

/// Under a race of 64 tasks each enqueueing 50 jobs with one key, exactly
/// one job is stored and the 3,199 others are told its id.
pub async fn idempotent_enqueue_race<F: Fixture + ?Sized>(f: &F) {
    const TASKS: usize = 64;
    const EACH: usize = 10;
    let b = f.backend();
    let q = queue(f, "idempotent-race");
    let now = f.now();
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (b, q, barrier) = (b.clone(), q.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut outcomes = Vec::with_capacity(EACH);
            for n in 0..EACH {
                let j = JobEnvelope::new("race", q.clone(), json!({ "task": t, "n": n }), now);
                let j = keyed(j, "the-one-key");
                outcomes.extend(b.enqueue(vec![j]).await.or_fail("enqueue"));
            }
            outcomes
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.extend(join(task).await);
    }
    let stored: Vec<_> = outcomes.iter().filter(|o| o.is_enqueued()).map(|o| o.id()).collect();
    let [stored] = stored.as_slice() else {
        panic!("{} jobs were stored for one key, expected 1", stored.len())
    };
    let duplicates = outcomes
        .iter()
        .filter(|o| **o == EnqueueOutcome::Duplicate(*stored))
        .count();
    assert_eq!(
        duplicates,
        TASKS * EACH - 1,
        "every other enqueue must name the stored job"
    );
    assert_eq!(stats(&*b, &q).await.ready, 1);
}

/// A dead job keeps its key (also after a DLQ retry); deleting or purging
/// it releases the key; a completed job's key is kept.
pub async fn idempotency_key_lifecycle<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let q = queue(f, "key-lifecycle");
    let dead = dead_job(f, &*b, keyed(job(f, &q, "k", 0), "dead-key"), "boom").await;
    assert_duplicate(&*b, keyed(job(f, &q, "k", 1), "dead-key"), dead.id, "dead").await;
    assert!(b.retry_dead(&q, dead.id).await.or_fail("retry_dead"));
    assert_duplicate(
        &*b,
        keyed(job(f, &q, "k", 2), "dead-key"),
        dead.id,
        "retried from the DLQ",
    )
    .await;
    let r = reserve_one(&*b, &q, LONG).await;
    b.dead_letter(&r, None, "again").await.or_fail("dead_letter");
    assert!(b.delete_dead(&q, dead.id).await.or_fail("delete_dead"));
    enqueue_new(&*b, vec![keyed(job(f, &q, "k", 3), "dead-key")]).await;
    let r = reserve_one(&*b, &q, LONG).await;
    b.complete_one(&r.lease).await.or_fail("complete_one");

    let purged = dead_job(f, &*b, keyed(job(f, &q, "k", 4), "purged-key"), "boom").await;
    let dead_at = purged.dead_lettered_at.or_fail("dead_lettered_at");
    let older_than = dead_at + chrono::TimeDelta::milliseconds(1);
    assert_eq!(b.purge_dead(&q, older_than).await.or_fail("purge_dead"), 1);
    enqueue_new(&*b, vec![keyed(job(f, &q, "k", 5), "purged-key")]).await;

    let done = keyed(job(f, &q, "k", 6), "done-key");
    let done_id = done.id;
    enqueue_new(&*b, vec![done]).await;
    let held = reserve_now(&*b, &q, 10, LONG).await;
    let leases: Vec<_> = held.iter().map(|r| r.lease.clone()).collect();
    assert_eq!(b.complete(&leases).await.or_fail("complete"), [LeaseStatus::Held; 2]);
    assert_duplicate(&*b, keyed(job(f, &q, "k", 7), "done-key"), done_id, "completed").await;
}

/// A completed job's key is held until `retention` after its completion
/// and released then, when the next job with it takes it over.
/// `retention` is the backend's configured window.
pub async fn completed_key_released_after_retention<F: Fixture + ?Sized>(f: &F, retention: Duration) {
    let b = f.backend();
    let q = queue(f, "key-retention");
    let first = keyed(job(f, &q, "k", 0), "kept-key");
    let id = first.id;
    enqueue_new(&*b, vec![first]).await;
    let r = reserve_one(&*b, &q, LONG).await;
    let released_at = f.now() + delta(retention);
    b.complete_one(&r.lease).await.or_fail("complete_one");
    let probe = b.enqueue(vec![keyed(job(f, &q, "k", 1), "kept-key")]);
    let Some(early) = probe_just_before(f, retention, released_at, "key retention", probe).await else {
        return;
    };
    let held = [EnqueueOutcome::Duplicate(id)];
    assert_eq!(
        early.or_fail("enqueue"),
        held,
        "a completed job's key was released early"
    );
    let taker = keyed(job(f, &q, "k", 2), "kept-key");
    let taker_id = taker.id;
    enqueue_new(&*b, vec![taker]).await;
    let dup = keyed(job(f, &q, "k", 3), "kept-key");
    assert_duplicate(&*b, dup, taker_id, "newly enqueued").await;
}
