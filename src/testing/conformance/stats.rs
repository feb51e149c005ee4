//! Stats and queues: what `stats` counts and `queues` lists.

use std::{collections::BTreeSet, time::Duration};

use serde_json::json;

use super::{
    support::{across, delta, enqueue_new, failure, job, ms, queue, reserve_now, reserve_one, stats, OrFail, LONG},
    Fixture,
};
use crate::broker::{DeadFilter, QueueStats};

/// `stats` counts jobs in every state, the age of the oldest ready job, and
/// the completed, retried and dead-lettered totals.
pub async fn stats_count_every_state<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let q = queue(f, "stats");
    let tol = f.tolerance();
    assert_eq!(
        stats(&*b, &q).await,
        QueueStats::default(),
        "a queue without jobs has all-zero stats"
    );

    let mut jobs: Vec<_> = (0..4).map(|n| job(f, &q, "stats", n)).collect();
    let oldest = jobs[0].run_at;
    let mut delayed = job(f, &q, "stats", 4);
    delayed.run_at = f.now() + chrono::TimeDelta::hours(1);
    jobs.push(delayed);
    enqueue_new(&*b, jobs).await;
    f.advance(ms(250)).await;
    let from = f.now() - delta(tol);
    let s = stats(&*b, &q).await;
    let to = f.now() + delta(tol);
    assert_eq!((s.ready, s.scheduled, s.active, s.dead), (4, 1, 0, 0), "{s:?}");
    let age = s.oldest_ready_age_ms.or_fail("oldest_ready_age_ms with jobs ready");
    let (low, high) = ((from - oldest).num_milliseconds(), (to - oldest).num_milliseconds());
    assert!(
        (low..=high).contains(&(age as i64)),
        "oldest ready age is {age} ms, expected {low} to {high} (250 on a paused clock)"
    );

    let held = reserve_now(&*b, &q, 3, LONG).await;
    assert_eq!(stats(&*b, &q).await.active, 3);
    b.complete_one(&held[0].lease).await.or_fail("complete_one");
    b.retry_after(&held[1], Duration::from_secs(3600), failure(f, "x"))
        .await
        .or_fail("retry_after");
    b.dead_letter(&held[2], None, "x").await.or_fail("dead_letter");
    let s = stats(&*b, &q).await;
    let expected = QueueStats {
        ready: 1,
        scheduled: 2,
        active: 0,
        dead: 1,
        oldest_ready_age_ms: s.oldest_ready_age_ms,
        completed: 1,
        retried: 1,
        dead_lettered: 1,
        dropped: 0,
        restored: 0,
        paused: false,
    };
    assert_eq!(s, expected);

    reserve_one(&*b, &q, LONG).await;
    let s = stats(&*b, &q).await;
    assert_eq!((s.ready, s.active, s.oldest_ready_age_ms), (0, 1, None), "{s:?}");
}

/// The oldest ready age is that of the job ready longest, even when a
/// delayed job fell due while nothing looked at the queue and a newer job
/// was enqueued after: the delayed job counts from its due time.
pub async fn oldest_ready_age_counts_jobs_that_fell_due_unseen<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let q = queue(f, "oldest");
    let tol = f.tolerance();
    let mut delayed = job(f, &q, "oldest", 1);
    delayed.run_at = f.now() + delta(ms(300));
    let due = delayed.run_at;
    enqueue_new(&*b, vec![delayed]).await;
    f.advance(ms(450)).await;
    // The delayed job fell due 150 ms ago, unseen; this one is ready now.
    enqueue_new(&*b, vec![job(f, &q, "oldest", 2)]).await;
    f.advance(ms(150)).await;
    let from = f.now() - delta(tol);
    let s = stats(&*b, &q).await;
    let to = f.now() + delta(tol);
    assert_eq!(s.ready, 2, "{s:?}");
    let age = s.oldest_ready_age_ms.or_fail("oldest_ready_age_ms with jobs ready");
    let (low, high) = ((from - due).num_milliseconds(), (to - due).num_milliseconds());
    assert!(
        (low..=high).contains(&(age as i64)),
        "oldest ready age is {age} ms, expected {low} to {high}: the delayed job's age \
         (300 on a paused clock), not the newer job's (150)"
    );
    // It is also the first job reserved.
    let first = reserve_one(&*b, &q, LONG).await;
    assert_eq!(
        first.envelope.payload,
        json!({ "n": 1 }),
        "the job that fell due first runs first"
    );
}

/// A job enqueued while many delayed jobs have fallen due unseen (more than
/// a backend promotes in one step) still runs after all of them.
pub async fn a_new_job_runs_after_every_job_already_due<F: Fixture + ?Sized>(f: &F) {
    const DUE: u64 = 1_500;
    let b = f.backend();
    let q = queue(f, "many-due");
    let tol = f.tolerance();
    let delayed: Vec<_> = (0..DUE)
        .map(|n| {
            let mut job = job(f, &q, "due", n);
            job.run_at = f.now() + delta(ms(100));
            job
        })
        .collect();
    enqueue_new(&*b, delayed).await;
    f.advance(ms(100) + across(tol)).await;
    let newest = job(f, &q, "new", DUE);
    let newest_id = newest.id;
    enqueue_new(&*b, vec![newest]).await;
    let mut order = Vec::new();
    while order.len() < DUE as usize + 1 {
        let got = reserve_now(&*b, &q, 500, LONG).await;
        assert!(!got.is_empty(), "only {} of {} jobs were ready", order.len(), DUE + 1);
        order.extend(got.into_iter().map(|r| r.envelope.id));
    }
    assert_eq!(
        order.iter().position(|id| *id == newest_id),
        Some(DUE as usize),
        "the job enqueued last must run after the {DUE} that fell due before it"
    );
}

/// `queues` lists every queue that has had a job, once, including after
/// its jobs are gone, and not queues that were only asked about.
pub async fn queues_lists_queues_with_jobs<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let (qa, qb, asked) = (queue(f, "listed-a"), queue(f, "listed-b"), queue(f, "only-asked"));
    enqueue_new(&*b, vec![job(f, &qa, "q", 0), job(f, &qb, "q", 0), job(f, &qa, "q", 1)]).await;
    let drained = reserve_now(&*b, &qb, 10, LONG).await;
    b.complete_one(&drained[0].lease).await.or_fail("complete_one");
    stats(&*b, &asked).await;
    reserve_now(&*b, &asked, 1, LONG).await;
    b.count_dead(&DeadFilter::queue(asked.clone()))
        .await
        .or_fail("count_dead");
    b.list_dead(&DeadFilter::queue(asked.clone()), None, 10)
        .await
        .or_fail("list_dead");

    let queues = b.queues().await.or_fail("queues");
    let unique: BTreeSet<_> = queues.iter().collect();
    assert_eq!(unique.len(), queues.len(), "a queue is listed twice: {queues:?}");
    assert!(
        queues.contains(&qa) && queues.contains(&qb),
        "a queue with jobs is missing: {queues:?}"
    );
    assert!(
        !queues.contains(&asked),
        "a queue that never had a job is listed: {queues:?}"
    );
}
