//! Retries and lease recovery: `retry_after`, `snooze`, `release`,
//! `extend`, and jobs whose lease expired.

use std::{collections::HashMap, time::Duration};

use chrono::{DateTime, Utc};

use super::{
    support::{
        assert_near, assert_within, delta, enqueue_new, expect_all_refused, failure, get_dead, ids, job, keyed, ms,
        probe_just_before, queue, request, reserve_now, reserve_one, stats, still_before, timeless, OrFail, GUARD,
        LONG,
    },
    Fixture,
};
use crate::{
    broker::{Backend, LeaseStatus, Reservation},
    envelope::{AttemptRecord, JobEnvelope},
    job::QueueName,
    retry::RetryPolicy,
};

/// `recover_expired` takes only jobs whose lease deadline has passed, at
/// most `max` per call, under a new lease whose
/// `expired_attempt_started_at` says when the lost attempt started; the old
/// token is fenced and the attempt is not counted yet.
pub async fn expired_lease_is_recovered_and_fenced<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let q = queue(f, "expired");
    let tol = f.tolerance();
    let lease = ms(300);
    let jobs = vec![job(f, &q, "expired", 0), job(f, &q, "expired", 1)];
    let sent: HashMap<_, _> = jobs.iter().map(|j| (j.id, j.clone())).collect();
    enqueue_new(&*b, jobs).await;
    let reserved_from = f.now();
    let first = reserve_now(&*b, &q, 2, lease).await;
    let reserved_to = f.now();
    assert_eq!(first.len(), 2);
    let deadline = first.iter().map(|r| r.deadline).min().or_fail("a deadline");

    let probe = b.recover_expired(&q, 10, LONG);
    let Some(early) = probe_just_before(f, lease, deadline, "lease deadline", probe).await else {
        return;
    };
    assert!(
        early.or_fail("recover_expired").is_empty(),
        "a lease was recovered before its deadline"
    );

    let recovered_from = f.now() + delta(LONG);
    let mut recovered = b.recover_expired(&q, 1, LONG).await.or_fail("recover_expired");
    assert_eq!(recovered.len(), 1, "recover_expired must take at most `max` jobs");
    recovered.extend(b.recover_expired(&q, 10, LONG).await.or_fail("recover_expired"));
    let recovered_to = f.now() + delta(LONG);
    assert_eq!(recovered.len(), 2, "an expired lease was not recovered");
    assert!(
        b.recover_expired(&q, 10, LONG)
            .await
            .or_fail("recover_expired")
            .is_empty(),
        "a recovered job was recovered again under its new lease"
    );

    for r in &recovered {
        let old = first
            .iter()
            .find(|o| o.lease.id == r.lease.id)
            .or_fail("recovered a job that was not reserved");
        assert_ne!(r.lease.token, old.lease.token, "recovery must issue a new token");
        assert_eq!(
            timeless(&r.envelope),
            timeless(&sent[&r.lease.id]),
            "recovery changed the job (or counted the attempt)"
        );
        let started = r
            .expired_attempt_started_at
            .or_fail("a recovered reservation must say when the lost attempt started");
        assert_within("expired attempt start", started, reserved_from, reserved_to, tol);
        assert_within("new lease deadline", r.deadline, recovered_from, recovered_to, tol);
        assert_eq!(
            b.complete(std::slice::from_ref(&old.lease)).await.or_fail("complete"),
            [LeaseStatus::Lost]
        );
    }
    let s = stats(&*b, &q).await;
    assert_eq!((s.active, s.ready), (2, 0), "{s:?}");
    let leases: Vec<_> = recovered.iter().map(|r| r.lease.clone()).collect();
    assert_eq!(b.complete(&leases).await.or_fail("complete"), [LeaseStatus::Held; 2]);
}

/// A job that crashes its worker every time (never acknowledged, its lease
/// always expires) still reaches the DLQ once the recovering caller has
/// followed its retry policy: 1 + `max_retries` lost attempts, each in the
/// history; it does not loop forever.
pub async fn crashing_job_reaches_dead_letter_queue<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let q = queue(f, "crashing");
    let lease = ms(200);
    let policy = RetryPolicy::exponential_with(2, ms(100));
    let j = job(f, &q, "crashing", 0);
    let id = j.id;
    enqueue_new(&*b, vec![j]).await;

    let mut crashes = 0u32;
    let mut starts = Vec::new();
    for round in 0..10u32 {
        // A worker takes the job (waiting for its backoff to pass) and dies.
        let taken = b.reserve(&q, request(1, lease, GUARD)).await.or_fail("reserve");
        let [taken] = taken.as_slice() else {
            panic!(
                "round {round}: the job was not handed out again (got {} jobs)",
                taken.len()
            )
        };
        assert_eq!(taken.envelope.attempt, round, "the lost attempts were not counted");
        crashes += 1;

        // Another worker's recovery loop finds the expired lease and
        // records the lost attempt as its retry policy says.
        f.advance(lease + f.tolerance()).await;
        let recovered = b.recover_expired(&q, 10, lease).await.or_fail("recover_expired");
        let [r] = recovered.as_slice() else {
            panic!(
                "round {round}: the expired lease was not recovered (got {} jobs)",
                recovered.len()
            )
        };
        let started = r.expired_attempt_started_at.or_fail("expired_attempt_started_at");
        starts.push(started);
        let record = AttemptRecord::failed(started, f.now(), "lease expired: worker crashed", None);
        let allowed = r.envelope.max_retries.unwrap_or(policy.max_retries);
        match policy.delay_with(r.envelope.attempt + 1, allowed, 0.0) {
            Some(delay) => b.retry_after(r, delay, record).await.or_fail("retry_after"),
            None => {
                b.dead_letter(r, Some(record), "retries exhausted: lease expired")
                    .await
                    .or_fail("dead_letter");
                break;
            }
        }
    }
    assert_eq!(crashes, 1 + policy.max_retries, "the job ran a wrong number of times");
    let dead = get_dead(&*b, &q, id)
        .await
        .or_fail("the crashing job is not in the DLQ");
    let recorded: Vec<_> = dead.attempts.iter().map(|a| a.started_at).collect();
    assert_eq!(recorded, starts, "the DLQ entry lacks the lost attempts");
    assert_eq!(dead.attempt, policy.max_retries);
    assert!(
        reserve_now(&*b, &q, 10, LONG).await.is_empty(),
        "a dead job was handed out"
    );
    let s = stats(&*b, &q).await;
    assert_eq!(
        (s.ready, s.scheduled, s.active, s.dead, s.retried, s.dead_lettered),
        (0, 0, 0, 1, 2, 1),
        "{s:?}"
    );
}

/// `retry_after` increments `attempt`, appends the attempt record, moves
/// `run_at`, and hides the job until then (or not at all for a past time);
/// the lease it ended is refused by every call once the job runs again.
pub async fn retry_after_counts_attempt_and_keeps_history<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let q = queue(f, "retry-at");
    let tol = f.tolerance();
    let sent = keyed(job(f, &q, "retry", 0), "retry-at-1");
    enqueue_new(&*b, vec![sent.clone()]).await;

    let r = reserve_one(&*b, &q, LONG).await;
    let first = failure(f, "first failure");
    let delay = ms(300);
    let at = f.now() + delta(delay);
    b.retry_after(&r, delay, first.clone()).await.or_fail("retry_after");
    let s = stats(&*b, &q).await;
    assert_eq!((s.ready, s.scheduled, s.active, s.retried), (0, 1, 0, 1), "{s:?}");
    let failed = r;
    let Some(r) = reserve_once_due(f, &*b, &q, delay, at, "retry time").await else {
        return;
    };
    // The lease the retry ended stays ended under the job's new one.
    expect_all_refused(f, &*b, &failed).await;
    let expected = JobEnvelope {
        attempt: 1,
        attempts: vec![first.clone()],
        ..sent.clone()
    };
    assert_eq!(timeless(&r.envelope), timeless(&expected));
    assert_near("run_at", r.envelope.run_at, at, tol);

    let second = failure(f, "second failure");
    b.retry_after(&r, Duration::ZERO, second.clone())
        .await
        .or_fail("retry_after");
    let r = reserve_one(&*b, &q, LONG).await;
    assert_eq!(r.envelope.attempt, 2);
    assert_eq!(
        r.envelope.attempts,
        [first, second],
        "history must be appended, oldest first"
    );
    assert_eq!(stats(&*b, &q).await.retried, 2);
}

/// `snooze` runs the job again once its delay has passed, without
/// counting an attempt: `attempt`, the history and the retry counter stay
/// as they were, and `run_at` moves to the snooze's end.
pub async fn snooze_runs_again_without_an_attempt<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let q = queue(f, "snooze");
    let tol = f.tolerance();
    let sent = job(f, &q, "snooze", 0);
    enqueue_new(&*b, vec![sent.clone()]).await;

    let r = reserve_one(&*b, &q, LONG).await;
    let delay = ms(300);
    let at = f.now() + delta(delay);
    b.snooze(&r, delay).await.or_fail("snooze");
    let s = stats(&*b, &q).await;
    assert_eq!((s.ready, s.scheduled, s.active, s.retried), (0, 1, 0, 0), "{s:?}");
    let Some(r) = reserve_once_due(f, &*b, &q, delay, at, "snooze end").await else {
        return;
    };
    assert_eq!(
        timeless(&r.envelope),
        timeless(&sent),
        "a snooze must not touch attempt or history"
    );
    assert_near("run_at", r.envelope.run_at, at, tol);

    // Snoozing never uses up retries: a failure after it is the first.
    b.snooze(&r, Duration::ZERO).await.or_fail("snooze");
    let r = reserve_one(&*b, &q, LONG).await;
    b.retry_after(&r, Duration::ZERO, failure(f, "after snoozes"))
        .await
        .or_fail("retry_after");
    let r = reserve_one(&*b, &q, LONG).await;
    assert_eq!((r.envelope.attempt, r.envelope.attempts.len()), (1, 1));
    let s = stats(&*b, &q).await;
    assert_eq!((s.retried, s.dead_lettered), (1, 0), "{s:?}");
}

/// `release` puts jobs back in front of ready, in their order, without
/// counting an attempt; a stale lease in the same call is refused alone.
pub async fn release_puts_job_in_front_without_attempt<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let q = queue(f, "release");
    let jobs: Vec<_> = (0..3).map(|n| job(f, &q, "release", n)).collect();
    let sent: Vec<_> = jobs.clone();
    let all: Vec<_> = jobs.iter().map(|j| j.id).collect();
    enqueue_new(&*b, jobs).await;

    let held = reserve_now(&*b, &q, 2, LONG).await;
    let leases: Vec<_> = held.iter().map(|r| r.lease.clone()).collect();
    assert_eq!(b.release(&leases).await.or_fail("release"), [LeaseStatus::Held; 2]);
    let s = stats(&*b, &q).await;
    assert_eq!((s.ready, s.active, s.retried), (3, 0, 0), "{s:?}");

    let again = reserve_now(&*b, &q, 3, LONG).await;
    assert_eq!(ids(&again), all, "released jobs must come back first, in order");
    for (r, sent) in again.iter().zip(&sent) {
        assert_eq!(
            timeless(&r.envelope),
            timeless(sent),
            "release changed the job (or counted an attempt)"
        );
    }
    let mixed = [leases[0].clone(), again[2].lease.clone()];
    assert_eq!(
        b.release(&mixed).await.or_fail("release"),
        [LeaseStatus::Lost, LeaseStatus::Held]
    );
    assert_eq!(ids(&reserve_now(&*b, &q, 3, LONG).await), [all[2]]);
}

/// `extend` moves a held lease's deadline to now + lease, so the job is not
/// recoverable before the new deadline and is after it.
pub async fn extend_moves_deadline<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let q = queue(f, "extend");
    let tol = f.tolerance();
    enqueue_new(&*b, vec![job(f, &q, "extend", 0), job(f, &q, "extend", 1)]).await;
    let held = reserve_now(&*b, &q, 2, ms(200)).await;
    let (a, gone) = (held[0].lease.clone(), held[1].lease.clone());
    b.complete_one(&gone).await.or_fail("complete_one");

    f.advance(ms(100)).await;
    let new_deadline = f.now() + delta(ms(600));
    let statuses = b.extend(&[a.clone(), gone], ms(600)).await.or_fail("extend");
    assert_eq!(statuses, [LeaseStatus::Held, LeaseStatus::Lost]);
    // Past the old deadline (200 ms), before the new one (700 ms).
    f.advance(ms(300)).await;
    let early = b.recover_expired(&q, 10, LONG).await.or_fail("recover_expired");
    if !still_before(f, new_deadline, "extended lease deadline") {
        return;
    }
    assert!(early.is_empty(), "an extended lease was recovered at its old deadline");
    f.advance(ms(300) + tol).await;
    let recovered = b.recover_expired(&q, 10, LONG).await.or_fail("recover_expired");
    assert_eq!(ids(&recovered), [a.id], "the lease did not expire at its new deadline");
    assert_eq!(b.extend(&[a], LONG).await.or_fail("extend"), [LeaseStatus::Lost]);
}

/// Checks that `q` hands out nothing before `at`, `delay` from now, then
/// reserves the one job that is due from then on. `None` when the clock
/// overslept `at` (see [`probe_just_before`]).
async fn reserve_once_due<F: Fixture + ?Sized>(
    f: &F,
    b: &dyn Backend,
    q: &QueueName,
    delay: Duration,
    at: DateTime<Utc>,
    what: &str,
) -> Option<Reservation> {
    let early = probe_just_before(f, delay, at, what, reserve_now(b, q, 1, LONG)).await?;
    assert!(early.is_empty(), "a job was handed out before its {what}");
    Some(reserve_one(b, q, LONG).await)
}
