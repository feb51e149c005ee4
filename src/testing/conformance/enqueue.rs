//! Enqueue and reserve: what goes in comes out, in order, once, when due.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use serde_json::json;

use super::{
    support::{
        assert_within, delta, enqueue_new, ids, job, join, keyed, ms, probe_just_before, queue, request, reserve_now,
        reserve_one, stats, timeless, OrFail, LONG,
    },
    Fixture,
};
use crate::{
    broker::{Backend, EnqueueOutcome, Reservation, ReserveRequest},
    error::Error,
    job::QueueName,
};

/// An enqueued envelope comes back from `reserve` unchanged, with a fresh
/// lease on its queue, a deadline of now + lease, and no expired attempt.
pub async fn envelope_round_trips<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let q = queue(f, "round-trip");
    b.ping().await.or_fail("ping");
    let mut sent = job(f, &q, "round-trip", 1);
    sent.payload = json!({ "nested": { "list": [1, 2.5, "three"], "text": "ünïcødé ✓" }, "none": null }).into();
    sent.idempotency_key = Some("round-trip-1".into());
    sent.max_retries = Some(3);
    let outcomes = b.enqueue(vec![sent.clone()]).await.or_fail("enqueue");
    assert_eq!(outcomes, [EnqueueOutcome::Enqueued(sent.id)]);

    let from = f.now();
    let r = reserve_one(&*b, &q, LONG).await;
    let to = f.now();
    assert_eq!(
        timeless(&r.envelope),
        timeless(&sent),
        "the reserved envelope differs from the enqueued one"
    );
    assert_eq!(r.lease.id, sent.id);
    assert_eq!(r.lease.queue, q);
    assert_eq!(
        r.expired_attempt_started_at, None,
        "a fresh reservation has no expired attempt"
    );
    let (from, to) = (from + delta(LONG), to + delta(LONG));
    assert_within("lease deadline", r.deadline, from, to, f.tolerance());
}

/// Each queue hands out its jobs oldest first, whether they came one per
/// call or in a batch interleaved with another queue's jobs.
pub async fn reserve_is_fifo_per_queue<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let (qa, qb) = (queue(f, "fifo-a"), queue(f, "fifo-b"));
    let mut expected_a = Vec::new();
    for n in 0..5 {
        let j = job(f, &qa, "fifo", n);
        expected_a.push(j.id);
        enqueue_new(&*b, vec![j]).await;
    }
    let batch = vec![
        job(f, &qa, "fifo", 5),
        job(f, &qb, "fifo", 0),
        job(f, &qa, "fifo", 6),
        job(f, &qb, "fifo", 1),
        job(f, &qa, "fifo", 7),
    ];
    let expected_b = vec![batch[1].id, batch[3].id];
    expected_a.extend([batch[0].id, batch[2].id, batch[4].id]);
    enqueue_new(&*b, batch).await;

    let mut got_a = Vec::new();
    for _ in 0..3 {
        got_a.push(reserve_one(&*b, &qa, LONG).await.lease.id);
    }
    got_a.extend(ids(&reserve_now(&*b, &qa, 100, LONG).await));
    assert_eq!(got_a, expected_a, "queue a is not first in, first out");
    assert_eq!(
        ids(&reserve_now(&*b, &qb, 100, LONG).await),
        expected_b,
        "queue b is not FIFO"
    );
}

/// One batch may span queues: one outcome per envelope in order, each job
/// stored on its own queue. Idempotency keys are scoped to a queue.
pub async fn batch_enqueue_spans_queues<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let (qa, qb) = (queue(f, "batch-a"), queue(f, "batch-b"));
    let batch = vec![
        job(f, &qa, "batch", 0),
        job(f, &qb, "batch", 0),
        keyed(job(f, &qa, "batch", 1), "shared-key"),
        keyed(job(f, &qa, "batch", 2), "shared-key"),
        keyed(job(f, &qb, "batch", 1), "shared-key"),
    ];
    let id = |n: usize| batch[n].id;
    let expected = vec![
        EnqueueOutcome::Enqueued(id(0)),
        EnqueueOutcome::Enqueued(id(1)),
        EnqueueOutcome::Enqueued(id(2)),
        EnqueueOutcome::Duplicate(id(2)),
        EnqueueOutcome::Enqueued(id(4)),
    ];
    let outcomes = b.enqueue(batch.clone()).await.or_fail("enqueue");
    assert_eq!(outcomes, expected);
    assert_eq!(stats(&*b, &qa).await.ready, 2);
    assert_eq!(stats(&*b, &qb).await.ready, 2);
    assert_eq!(ids(&reserve_now(&*b, &qa, 10, LONG).await), [id(0), id(2)]);
    assert_eq!(ids(&reserve_now(&*b, &qb, 10, LONG).await), [id(1), id(4)]);
    assert_eq!(b.enqueue(Vec::new()).await.or_fail("enqueue of nothing"), []);
}

/// `reserve` takes at most `max` jobs, each under its own token, and
/// refuses a `max` of 0.
pub async fn reserve_takes_at_most_max<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let q = queue(f, "reserve-max");
    let jobs: Vec<_> = (0..5).map(|n| job(f, &q, "max", n)).collect();
    let all: Vec<_> = jobs.iter().map(|j| j.id).collect();
    enqueue_new(&*b, jobs).await;

    let first = reserve_now(&*b, &q, 3, LONG).await;
    assert_eq!(ids(&first), all[..3]);
    let second = reserve_now(&*b, &q, 3, LONG).await;
    assert_eq!(ids(&second), all[3..]);
    assert!(
        reserve_now(&*b, &q, 3, LONG).await.is_empty(),
        "an empty queue handed out a job"
    );
    let tokens: BTreeSet<_> = first.iter().chain(&second).map(|r| r.lease.token.0).collect();
    assert_eq!(tokens.len(), 5, "lease tokens must be unique");
    assert_eq!(stats(&*b, &q).await.active, 5);

    let zero = ReserveRequest::new(0, LONG, Duration::ZERO);
    let refused = b.reserve(&q, zero).await;
    assert!(
        matches!(refused, Err(Error::InvalidConfig(_))),
        "max 0 must be refused: {refused:?}"
    );
}

/// Callers racing for jobs each get distinct ones: every job is handed out
/// exactly once.
pub async fn reserve_hands_each_job_to_one_caller<F: Fixture + ?Sized>(f: &F) {
    const JOBS: u64 = 200;
    let b = f.backend();
    let q = queue(f, "reserve-race");
    let jobs: Vec<_> = (0..JOBS).map(|n| job(f, &q, "race", n)).collect();
    let expected: BTreeSet<_> = jobs.iter().map(|j| j.id).collect();
    enqueue_new(&*b, jobs).await;

    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (b, q) = (b.clone(), q.clone());
        tasks.push(tokio::spawn(async move {
            let mut taken = Vec::new();
            loop {
                let got = reserve_now(&*b, &q, 7, LONG).await;
                if got.is_empty() {
                    return taken;
                }
                taken.extend(ids(&got));
            }
        }));
    }
    let mut taken = Vec::new();
    for task in tasks {
        taken.extend(join(task).await);
    }
    let unique: BTreeSet<_> = taken.iter().copied().collect();
    assert_eq!(taken.len(), unique.len(), "a job was handed to two callers");
    assert_eq!(unique, expected, "not every job was handed out");
}

/// With nothing ready, `reserve` waits its full `wait`; a job enqueued
/// meanwhile wakes it at once, and it does not return before. One batch
/// wakes as many waiters as it has jobs.
pub async fn reserve_waits_and_wakes_on_enqueue<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let q = queue(f, "reserve-wait");
    let wait = ms(300);
    let started = tokio::time::Instant::now();
    let got = b.reserve(&q, request(1, LONG, wait)).await.or_fail("reserve");
    assert!(got.is_empty(), "an empty queue handed out a job");
    let waited = started.elapsed();
    assert!(
        waited + f.tolerance() >= wait,
        "reserve returned after {waited:?}, before its wait of {wait:?}"
    );

    let waiter = spawn_reserve(&b, &q, request(3, LONG, Duration::from_secs(5)));
    tokio::task::yield_now().await;
    f.advance(ms(200)).await;
    assert!(!waiter.is_finished(), "reserve returned before any job was enqueued");
    let j = job(f, &q, "wake", 0);
    let id = j.id;
    enqueue_new(&*b, vec![j]).await;
    let (got, waited) = join(waiter).await;
    assert_eq!(ids(&got), [id], "the waiting reserve did not get the enqueued job");
    assert!(
        waited < ms(200) + Duration::from_secs(1),
        "reserve took {waited:?}: it was not woken by the enqueue"
    );

    let waiters: Vec<_> = (0..3)
        .map(|_| spawn_reserve(&b, &q, request(1, LONG, Duration::from_secs(5))))
        .collect();
    tokio::task::yield_now().await;
    f.advance(ms(100)).await;
    let batch: Vec<_> = (1..=3).map(|n| job(f, &q, "wake", n)).collect();
    let expected: BTreeSet<_> = batch.iter().map(|j| j.id).collect();
    enqueue_new(&*b, batch).await;
    let mut taken = BTreeSet::new();
    for waiter in waiters {
        let (got, waited) = join(waiter).await;
        assert_eq!(got.len(), 1, "a waiter went without a job of the batch");
        assert!(
            waited < ms(100) + Duration::from_secs(1),
            "reserve took {waited:?}: it was not woken by the batch"
        );
        taken.extend(ids(&got));
    }
    assert_eq!(taken, expected, "the waiters did not take the batch's jobs");
}

/// A waiting `reserve` wakes when a delayed job falls due, not before and
/// not at the end of its wait, even when another waiter that was waiting
/// longer gives up before the job is due.
pub async fn reserve_wakes_when_delayed_job_falls_due<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let q = queue(f, "reserve-due");
    let impatient = spawn_reserve(&b, &q, request(1, LONG, ms(150)));
    tokio::task::yield_now().await;
    f.advance(ms(25)).await;
    let waiter = spawn_reserve(&b, &q, request(1, LONG, Duration::from_secs(5)));
    tokio::task::yield_now().await;
    f.advance(ms(25)).await;
    let delay = ms(300);
    let mut j = job(f, &q, "due", 0);
    j.run_at = f.now() + delta(delay);
    let (id, run_at) = (j.id, j.run_at);
    enqueue_new(&*b, vec![j]).await;
    let (early, _) = join(impatient).await;
    assert!(early.is_empty(), "a waiter gave up with a job not yet due");
    let (got, waited) = join(waiter).await;
    assert_eq!(ids(&got), [id], "the waiting reserve did not get the job that fell due");
    assert!(
        f.now() + delta(f.tolerance()) >= run_at,
        "the delayed job was handed out before its run_at"
    );
    assert!(
        waited < ms(25) + delay + Duration::from_secs(1),
        "reserve took {waited:?}: it was not woken when the job fell due"
    );
}

/// A job whose `run_at` is in the future is scheduled, not ready, until
/// `run_at`; it does not hold back ready jobs behind it.
pub async fn delayed_job_not_visible_before_run_at<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let q = queue(f, "delayed");
    let delay = ms(300);
    let mut delayed = job(f, &q, "delayed", 0);
    delayed.run_at = f.now() + delta(delay);
    let now_job = job(f, &q, "delayed", 1);
    let (delayed_id, run_at, now_id) = (delayed.id, delayed.run_at, now_job.id);
    enqueue_new(&*b, vec![delayed, now_job]).await;

    let s = stats(&*b, &q).await;
    assert_eq!((s.ready, s.scheduled), (1, 1), "{s:?}");
    assert_eq!(ids(&reserve_now(&*b, &q, 10, LONG).await), [now_id]);
    let probe = reserve_now(&*b, &q, 10, LONG);
    let Some(early) = probe_just_before(f, delay, run_at, "delayed job", probe).await else {
        return;
    };
    assert!(early.is_empty(), "a delayed job was handed out before its run_at");
    assert_eq!(
        ids(&reserve_now(&*b, &q, 10, LONG).await),
        [delayed_id],
        "a delayed job was not handed out once due"
    );
}

/// Starts a `reserve` in a task; it answers with the jobs and how long the
/// call took.
fn spawn_reserve(
    b: &Arc<dyn Backend>,
    q: &QueueName,
    request: ReserveRequest,
) -> tokio::task::JoinHandle<(Vec<Reservation>, Duration)> {
    let (b, q) = (b.clone(), q.clone());
    tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let got = b.reserve(&q, request).await.or_fail("reserve");
        (got, started.elapsed())
    })
}
