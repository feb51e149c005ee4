//! What the cases share: unwrapping with a message, making jobs and
//! queues, time arithmetic, and calls that must succeed.

use std::{fmt, future::Future, time::Duration};

use chrono::{DateTime, Utc};
use serde_json::json;

use super::Fixture;
use crate::{
    broker::{Backend, EnqueueOutcome, LeaseStatus, QueueStats, Reservation, ReserveRequest},
    envelope::{AttemptRecord, JobEnvelope},
    error::{Error, Result},
    job::{JobId, QueueName},
};

/// A lease long enough never to expire during a case.
pub(super) const LONG: Duration = Duration::from_secs(60);

/// How long a case waits for something that must happen promptly before
/// it fails (a guard, never a sleep).
pub(super) const GUARD: Duration = Duration::from_secs(10);

/// Unwraps with a message naming the call that failed and its error.
pub(super) trait OrFail<T> {
    fn or_fail(self, what: &str) -> T;
}

impl<T, E: fmt::Display> OrFail<T> for std::result::Result<T, E> {
    #[track_caller]
    fn or_fail(self, what: &str) -> T {
        match self {
            Ok(value) => value,
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

impl<T> OrFail<T> for Option<T> {
    #[track_caller]
    fn or_fail(self, what: &str) -> T {
        match self {
            Some(value) => value,
            None => panic!("{what}: nothing there"),
        }
    }
}

pub(super) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// How long to let pass to stand short of `d` from now by twice the
/// tolerance and 1 ms: once for the clocks' disagreement, once for a real
/// clock oversleeping (see [`still_before`]).
fn short_of(d: Duration, tolerance: Duration) -> Duration {
    d.saturating_sub(tolerance * 2 + ms(1))
}

/// How long to let pass after [`short_of`] to stand past `d` by the
/// tolerance.
pub(super) fn across(tolerance: Duration) -> Duration {
    ms(1) + tolerance * 3
}

/// Lets time pass to just short of `at`, which is `by` from now, awaits
/// `probe` there (a look at something that must not have happened yet),
/// then lets time pass across `at`. Returns what the probe found, or
/// `None` when the clock overslept `at` and the probe proved nothing: the
/// case then stops (see [`still_before`]).
pub(super) async fn probe_just_before<F: Fixture + ?Sized, T>(
    f: &F,
    by: Duration,
    at: DateTime<Utc>,
    what: &str,
    probe: impl Future<Output = T>,
) -> Option<T> {
    let tolerance = f.tolerance();
    f.advance(short_of(by, tolerance)).await;
    let found = probe.await;
    if !still_before(f, at, what) {
        return None;
    }
    f.advance(across(tolerance)).await;
    Some(found)
}

/// The envelope without the times a backend may rewrite to its own clock.
pub(super) fn timeless(envelope: &JobEnvelope) -> JobEnvelope {
    JobEnvelope {
        enqueued_at: DateTime::UNIX_EPOCH,
        run_at: DateTime::UNIX_EPOCH,
        ..envelope.clone()
    }
}

pub(super) fn delta(d: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX)
}

#[track_caller]
pub(super) fn queue<F: Fixture + ?Sized>(f: &F, name: &str) -> QueueName {
    f.queue(name).or_fail("the fixture's queue name")
}

pub(super) fn job<F: Fixture + ?Sized>(f: &F, queue: &QueueName, kind: &str, n: u64) -> JobEnvelope {
    JobEnvelope::new(kind, queue.clone(), json!({ "n": n }), f.now())
}

pub(super) fn keyed(mut job: JobEnvelope, key: &str) -> JobEnvelope {
    job.idempotency_key = Some(key.to_owned());
    job
}

pub(super) fn failure<F: Fixture + ?Sized>(f: &F, error: &str) -> AttemptRecord {
    let now = f.now();
    AttemptRecord::failed(now, now, error, Some("conformance".into()))
}

pub(super) fn request(max: usize, lease: Duration, wait: Duration) -> ReserveRequest {
    ReserveRequest::new(max, lease, wait)
}

pub(super) fn ids(reserved: &[Reservation]) -> Vec<JobId> {
    reserved.iter().map(|r| r.lease.id).collect()
}

pub(super) fn dead_time(job: &JobEnvelope) -> DateTime<Utc> {
    job.dead_lettered_at.or_fail("a DLQ entry without dead_lettered_at")
}

/// Asserts that `actual`, a time the backend took between `from` and `to`
/// by the fixture's clock, lies there within the tolerance.
#[track_caller]
pub(super) fn assert_within(
    what: &str,
    actual: DateTime<Utc>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    tolerance: Duration,
) {
    let (from, to) = (from - delta(tolerance), to + delta(tolerance));
    assert!(
        from <= actual && actual <= to,
        "{what} is {actual}, expected between {from} and {to}"
    );
}

/// Asserts that `actual`, a time the backend set to `expected` by its own
/// clock, is `expected` within twice the tolerance and 1 ms.
#[track_caller]
pub(super) fn assert_near(what: &str, actual: DateTime<Utc>, expected: DateTime<Utc>, tolerance: Duration) {
    let drift = (actual - expected).abs().to_std().unwrap_or(Duration::MAX);
    assert!(
        drift <= tolerance * 2 + ms(1),
        "{what} is {actual}, expected about {expected}"
    );
}

/// Whether the backend's clock is surely still short of `at`: only then
/// does a "not yet" check just made prove anything. Always so on a paused
/// clock; a loaded machine may oversleep a real one past `at`, and the case
/// then stops with a warning instead of failing falsely.
pub(super) fn still_before<F: Fixture + ?Sized>(f: &F, at: DateTime<Utc>, what: &str) -> bool {
    let before = f.now() + delta(f.tolerance()) < at;
    if !before {
        tracing::warn!(
            deadline = what,
            "the clock overslept the deadline; the rest of the case is skipped"
        );
    }
    before
}

/// Enqueues jobs that must all be stored.
pub(super) async fn enqueue_new(b: &dyn Backend, jobs: Vec<JobEnvelope>) {
    let expected: Vec<_> = jobs.iter().map(|j| EnqueueOutcome::Enqueued(j.id)).collect();
    let outcomes = b.enqueue(jobs).await.or_fail("enqueue");
    assert_eq!(outcomes, expected, "every job must be stored");
}

pub(super) async fn assert_duplicate(b: &dyn Backend, job: JobEnvelope, holder: JobId, while_: &str) {
    let outcomes = b.enqueue(vec![job]).await.or_fail("enqueue");
    assert_eq!(
        outcomes,
        [EnqueueOutcome::Duplicate(holder)],
        "the key of a {while_} job must refuse a second job"
    );
}

pub(super) async fn reserve_now(b: &dyn Backend, q: &QueueName, max: usize, lease: Duration) -> Vec<Reservation> {
    b.reserve(q, request(max, lease, Duration::ZERO))
        .await
        .or_fail("reserve")
}

pub(super) async fn reserve_one(b: &dyn Backend, q: &QueueName, lease: Duration) -> Reservation {
    let mut got = reserve_now(b, q, 1, lease).await;
    assert_eq!(got.len(), 1, "expected a ready job on {q}");
    got.remove(0)
}

pub(super) async fn stats(b: &dyn Backend, q: &QueueName) -> QueueStats {
    b.stats(q).await.or_fail("stats")
}

pub(super) async fn get_dead(b: &dyn Backend, q: &QueueName, id: JobId) -> Option<JobEnvelope> {
    b.get_dead(q, id).await.or_fail("get_dead")
}

/// Enqueues `job`, reserves it and dead-letters it with one failed attempt;
/// returns it as the DLQ holds it.
pub(super) async fn dead_job<F: Fixture + ?Sized>(
    f: &F,
    b: &dyn Backend,
    job: JobEnvelope,
    reason: &str,
) -> JobEnvelope {
    dead_job_with(b, job, Some(failure(f, "failed")), reason).await
}

pub(super) async fn dead_job_with(
    b: &dyn Backend,
    job: JobEnvelope,
    record: Option<AttemptRecord>,
    reason: &str,
) -> JobEnvelope {
    let (id, q) = (job.id, job.queue.clone());
    enqueue_new(b, vec![job]).await;
    let r = reserve_one(b, &q, LONG).await;
    assert_eq!(r.lease.id, id, "the case left another job ready on {q}");
    b.dead_letter(&r, record, reason).await.or_fail("dead_letter");
    get_dead(b, &q, id).await.or_fail("the dead job is not in the DLQ")
}

/// Checks that every lease operation refuses `lease` and reports it lost.
pub(super) async fn expect_all_refused<F: Fixture + ?Sized>(f: &F, b: &dyn Backend, job: &Reservation) {
    let lease = &job.lease;
    let lost = |r: Result<()>| matches!(r, Err(Error::LeaseLost(id)) if id == lease.id);
    assert_eq!(
        b.complete(std::slice::from_ref(lease)).await.or_fail("complete"),
        [LeaseStatus::Lost]
    );
    assert!(lost(b.complete_one(lease).await), "complete_one accepted a lost lease");
    let retried = b.retry_after(job, Duration::ZERO, failure(f, "zombie")).await;
    assert!(lost(retried), "retry_after accepted a lost lease");
    let snoozed = b.snooze(job, Duration::ZERO).await;
    assert!(lost(snoozed), "snooze accepted a lost lease");
    let dead = b.dead_letter(job, Some(failure(f, "zombie")), "zombie").await;
    assert!(lost(dead), "dead_letter accepted a lost lease");
    assert_eq!(
        b.release(std::slice::from_ref(lease)).await.or_fail("release"),
        [LeaseStatus::Lost]
    );
    assert_eq!(
        b.extend(std::slice::from_ref(lease), LONG).await.or_fail("extend"),
        [LeaseStatus::Lost]
    );
}

/// Waits for a task (with a guard), passing on its panic if it failed.
pub(super) async fn join<T>(task: tokio::task::JoinHandle<T>) -> T {
    match tokio::time::timeout(GUARD, task)
        .await
        .or_fail("the task did not finish in time")
    {
        Ok(value) => value,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("the task did not finish: {e}"),
    }
}
