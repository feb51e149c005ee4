//! The broker conformance suite: what every backend, a
//! [`Broker`](crate::Broker) with its [`DeadLetterQueue`](crate::DeadLetterQueue),
//! must do.
//!
//! Each public `async fn` here checks one point of the `# Contract`
//! sections of those traits, against a [`Fixture`] that hands out the
//! backend under test, isolated queue names, and a way to let time pass.
//! A backend's own test file runs all of them with one
//! [`conformance_tests!`](crate::conformance_tests) invocation, which
//! generates one test per case; a backend is done when every case passes.
//! Changing a backend starts by extending this suite.
//!
//! The cases panic with a message on failure, like any test. They keep
//! time-based steps short (leases of 200 to 300 ms, delays of 100 to
//! 300 ms) so a backend whose clock cannot be paused (Redis) still runs
//! the suite in seconds; on a paused tokio clock they take no real time.
//!
//! Capabilities that differ between backends are arguments of a case (the
//! key retention of [`completed_key_released_after_retention`]) or
//! properties of the fixture ([`Fixture::tolerance`]), never a second copy
//! of a test.
//!
//! # Running the suite for a backend
//!
//! ```
//! // tests/<area>/memory.rs
//! use flagship_worker::{broker::DEFAULT_KEY_RETENTION, testing::conformance::MemoryFixture};
//!
//! flagship_worker::conformance_tests! {
//!     fixture: MemoryFixture::new(),
//!     test: #[tokio::test(start_paused = true)],
//!     concurrent_test: #[tokio::test(flavor = "multi_thread", worker_threads = 4)],
//!     key_retention: DEFAULT_KEY_RETENTION,
//! }
//! # fn main() {}
//! ```
//!
//! # Details the contracts leave open, fixed here
//!
//! - Idempotency keys are scoped to a queue: the same key on two queues
//!   stores two jobs ([`batch_enqueue_spans_queues`]).
//! - `reserve` with `max` of 0 is refused with [`Error::InvalidConfig`].
//! - Reservations, retries and the DLQ hand back the envelope as enqueued,
//!   except for the fields the contracts change (`attempt`, `attempts`,
//!   the dead-letter fields) and `run_at`, which `retry_after` moves to the
//!   retry time.
//! - [`list_dead`](crate::DeadLetterQueue::list_dead) returns `next: None`
//!   on the page that holds the last entry, even when that page is full;
//!   a cursor the backend did not hand out is refused.
//! - A dead-letter reason is stored truncated to [`MAX_ERROR_BYTES`], like
//!   an attempt's error.
//! - [`queues`](crate::Broker::queues) lists queues that have had a job,
//!   not queues that were only asked about (`stats`, `reserve`, DLQ calls).

use std::{
    collections::{BTreeSet, HashMap},
    fmt,
    sync::Arc,
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::json;

use crate::{
    broker::{
        memory::MemoryBroker, Backend, DeadCursor, DeadFilter, EnqueueOutcome, Lease, LeaseStatus, LeaseToken,
        QueueStats, Reservation, ReserveRequest, MAX_DEAD_PAGE,
    },
    clock::{Clock, TokioClock},
    envelope::{AttemptRecord, JobEnvelope, MAX_ERROR_BYTES},
    error::{Error, Result},
    job::{JobId, QueueName},
    retry::RetryPolicy,
};

/// What a backend's test gives the suite: the backend, isolated queues, and
/// time.
///
/// Make one fixture per test case. Cases only use queues they get from
/// [`queue`](Fixture::queue), so a fixture may share one backend (one
/// Redis server) between cases as long as its queue names do not collide.
#[async_trait]
pub trait Fixture: Send + Sync {
    /// The backend under test.
    fn backend(&self) -> Arc<dyn Backend>;

    /// A queue name derived from `name` that no other running case uses
    /// (for example `name` behind a per-case prefix).
    fn queue(&self, name: &str) -> Result<QueueName>;

    /// The current time by the backend's clock, within
    /// [`tolerance`](Fixture::tolerance).
    fn now(&self) -> DateTime<Utc>;

    /// Lets `by` pass on the backend's clock: advance a paused clock, or
    /// sleep for a backend whose clock cannot be paused.
    async fn pass(&self, by: Duration);

    /// How far apart the backend's clock and [`now`](Fixture::now) may be,
    /// plus the scheduling jitter of a real clock. Zero for a paused clock,
    /// where the cases then check times exactly; keep it well under 100 ms
    /// otherwise, since time-based cases step in units of 100 ms.
    fn tolerance(&self) -> Duration {
        Duration::ZERO
    }
}

/// The fixture for [`MemoryBroker`]: a fresh broker per case, on tokio's
/// clock.
///
/// Run the cases that pass time on a paused clock
/// (`#[tokio::test(start_paused = true)]`): [`pass`](Fixture::pass) then
/// advances it instantly and times are checked exactly. The broker keeps
/// completed idempotency keys for
/// [`DEFAULT_KEY_RETENTION`](crate::broker::DEFAULT_KEY_RETENTION).
#[derive(Debug, Clone)]
pub struct MemoryFixture {
    /// The broker under test, fresh for this fixture.
    broker: Arc<MemoryBroker>,
    /// The clock the broker reads, kept to answer [`Fixture::now`] exactly.
    clock: TokioClock,
}

impl MemoryFixture {
    /// A fresh broker on a tokio clock starting now.
    pub fn new() -> Self {
        let clock = TokioClock::new();
        MemoryFixture {
            broker: Arc::new(MemoryBroker::with_clock(Arc::new(clock))),
            clock,
        }
    }

    /// The broker, for checks beyond the suite.
    pub fn broker(&self) -> Arc<MemoryBroker> {
        self.broker.clone()
    }
}

impl Default for MemoryFixture {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Fixture for MemoryFixture {
    fn backend(&self) -> Arc<dyn Backend> {
        self.broker.clone()
    }

    fn queue(&self, name: &str) -> Result<QueueName> {
        QueueName::new(name)
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    async fn pass(&self, by: Duration) {
        // On a paused clock the runtime advances to the deadline at once,
        // firing every timer due on the way in order.
        tokio::time::sleep(by).await;
    }
}

/// Generates one test per conformance case for a backend.
///
/// - `fixture`: an expression making a fresh [`Fixture`] for one case. It
///   is evaluated inside the async test, so it may `.await`, and may
///   `return` to skip the case (say, when a server binary is missing).
/// - `test`: the attribute for ordinary cases, e.g.
///   `#[tokio::test(start_paused = true)]` for a backend on tokio's clock.
/// - `concurrent_test`: the attribute for the cases that race tasks against
///   each other; give it a multi-threaded runtime so the race is real.
/// - `key_retention`: how long the fixture's backend remembers completed
///   jobs' idempotency keys.
///
/// See the [module docs](crate::testing::conformance) for an example.
#[macro_export]
macro_rules! conformance_tests {
    (
        fixture: $fixture:expr,
        test: #[$test:meta],
        concurrent_test: #[$concurrent:meta],
        key_retention: $retention:expr $(,)?
    ) => {
        $crate::conformance_tests!(@case [$test] $fixture; envelope_round_trips);
        $crate::conformance_tests!(@case [$test] $fixture; reserve_is_fifo_per_queue);
        $crate::conformance_tests!(@case [$test] $fixture; batch_enqueue_spans_queues);
        $crate::conformance_tests!(@case [$test] $fixture; reserve_takes_at_most_max);
        $crate::conformance_tests!(@case [$concurrent] $fixture; reserve_hands_each_job_to_one_caller);
        $crate::conformance_tests!(@case [$test] $fixture; reserve_waits_and_wakes_on_enqueue);
        $crate::conformance_tests!(@case [$test] $fixture; reserve_wakes_when_delayed_job_falls_due);
        $crate::conformance_tests!(@case [$test] $fixture; delayed_job_not_visible_before_run_at);
        $crate::conformance_tests!(@case [$test] $fixture; acknowledged_lease_is_gone);
        $crate::conformance_tests!(@case [$test] $fixture; stale_lease_is_refused);
        $crate::conformance_tests!(@case [$test] $fixture; expired_lease_is_recovered_and_fenced);
        $crate::conformance_tests!(@case [$test] $fixture; crashing_job_reaches_dead_letter_queue);
        $crate::conformance_tests!(@case [$test] $fixture; retry_after_counts_attempt_and_keeps_history);
        $crate::conformance_tests!(@case [$test] $fixture; snooze_runs_again_without_an_attempt);
        $crate::conformance_tests!(@case [$test] $fixture; release_puts_job_in_front_without_attempt);
        $crate::conformance_tests!(@case [$test] $fixture; extend_moves_deadline);
        $crate::conformance_tests!(@case [$test] $fixture; idempotent_enqueue);
        $crate::conformance_tests!(@case [$concurrent] $fixture; idempotent_enqueue_race);
        $crate::conformance_tests!(@case [$test] $fixture; idempotency_key_lifecycle);
        $crate::conformance_tests!(@case [$test] $fixture; completed_key_released_after_retention, $retention);
        $crate::conformance_tests!(@case [$test] $fixture; stats_count_every_state);
        $crate::conformance_tests!(@case [$test] $fixture; oldest_ready_age_counts_jobs_that_fell_due_unseen);
        $crate::conformance_tests!(@case [$test] $fixture; a_new_job_runs_after_every_job_already_due);
        $crate::conformance_tests!(@case [$test] $fixture; queues_lists_queues_with_jobs);
        $crate::conformance_tests!(@case [$test] $fixture; dead_letter_keeps_job_and_history);
        $crate::conformance_tests!(@case [$test] $fixture; list_dead_filters);
        $crate::conformance_tests!(@case [$test] $fixture; list_dead_pages_without_skips_or_repeats);
        $crate::conformance_tests!(@case [$test] $fixture; list_dead_refuses_bad_page_sizes);
        $crate::conformance_tests!(@case [$test] $fixture; retry_dead_restores_job);
        $crate::conformance_tests!(@case [$concurrent] $fixture; concurrent_retry_dead_reenqueues_once);
        $crate::conformance_tests!(@case [$test] $fixture; retry_dead_matching_filter);
        $crate::conformance_tests!(@case [$test] $fixture; delete_dead);
        $crate::conformance_tests!(@case [$test] $fixture; purge_dead_removes_only_strictly_older);
    };
    (@case [$attr:meta] $fixture:expr; $name:ident $(, $arg:expr)*) => {
        #[$attr]
        async fn $name() {
            let fixture = $fixture;
            $crate::testing::conformance::$name(&fixture $(, $arg)*).await;
        }
    };
}

/// A lease long enough never to expire during a case.
const LONG: Duration = Duration::from_secs(60);

/// How long a case waits for something that must happen promptly before
/// it fails (a guard, never a sleep).
const GUARD: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Enqueue and reserve
// ---------------------------------------------------------------------------

/// An enqueued envelope comes back from `reserve` unchanged, with a fresh
/// lease on its queue, a deadline of now + lease, and no expired attempt.
pub async fn envelope_round_trips<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let q = queue(f, "round-trip");
    b.ping().await.or_fail("ping");
    let mut sent = job(f, &q, "round-trip", 1);
    sent.payload = json!({ "nested": { "list": [1, 2.5, "three"], "text": "ünïcødé ✓" }, "none": null });
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
/// meanwhile wakes it at once, and it does not return before.
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
    f.pass(ms(200)).await;
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
}

/// A waiting `reserve` wakes when a delayed job falls due, not before and
/// not at the end of its wait, even when another waiter that was waiting
/// longer gives up before the job is due.
pub async fn reserve_wakes_when_delayed_job_falls_due<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let q = queue(f, "reserve-due");
    let impatient = spawn_reserve(&b, &q, request(1, LONG, ms(150)));
    tokio::task::yield_now().await;
    f.pass(ms(25)).await;
    let waiter = spawn_reserve(&b, &q, request(1, LONG, Duration::from_secs(5)));
    tokio::task::yield_now().await;
    f.pass(ms(25)).await;
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
    let tol = f.tolerance();
    let delay = ms(300);
    let mut delayed = job(f, &q, "delayed", 0);
    delayed.run_at = f.now() + delta(delay);
    let now_job = job(f, &q, "delayed", 1);
    let (delayed_id, run_at, now_id) = (delayed.id, delayed.run_at, now_job.id);
    enqueue_new(&*b, vec![delayed, now_job]).await;

    let s = stats(&*b, &q).await;
    assert_eq!((s.ready, s.scheduled), (1, 1), "{s:?}");
    assert_eq!(ids(&reserve_now(&*b, &q, 10, LONG).await), [now_id]);
    f.pass(short_of(delay, tol)).await;
    let early = reserve_now(&*b, &q, 10, LONG).await;
    if !still_before(f, run_at, "delayed job") {
        return;
    }
    assert!(early.is_empty(), "a delayed job was handed out before its run_at");
    f.pass(across(tol)).await;
    assert_eq!(
        ids(&reserve_now(&*b, &q, 10, LONG).await),
        [delayed_id],
        "a delayed job was not handed out once due"
    );
}

// ---------------------------------------------------------------------------
// Leases
// ---------------------------------------------------------------------------

/// A lease ends with its acknowledgement: acting on it again is refused.
pub async fn acknowledged_lease_is_gone<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let q = queue(f, "acked");
    enqueue_new(&*b, vec![job(f, &q, "acked", 0), job(f, &q, "acked", 1)]).await;
    let done = reserve_one(&*b, &q, LONG).await;
    assert_eq!(
        b.complete(std::slice::from_ref(&done.lease)).await.or_fail("complete"),
        [LeaseStatus::Held]
    );
    expect_all_refused(f, &*b, &done).await;

    let released = reserve_one(&*b, &q, LONG).await;
    assert_eq!(
        b.release(std::slice::from_ref(&released.lease))
            .await
            .or_fail("release"),
        [LeaseStatus::Held]
    );
    expect_all_refused(f, &*b, &released).await;
    let again = reserve_one(&*b, &q, LONG).await;
    assert_eq!(again.lease.id, released.lease.id);
    assert_ne!(
        again.lease.token, released.lease.token,
        "a new reservation must carry a new token"
    );
    b.complete_one(&again.lease).await.or_fail("complete_one");

    let s = stats(&*b, &q).await;
    assert_eq!((s.ready, s.active, s.completed), (0, 0, 2), "{s:?}");
}

/// After a lease expires and the job is recovered, the old token is
/// refused by `complete`, `retry_after`, `dead_letter`, `release` and
/// `extend`, and nothing changes; so is a token never handed out.
pub async fn stale_lease_is_refused<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let q = queue(f, "stale");
    let lease = ms(200);
    let j = job(f, &q, "stale", 0);
    let sent = j.clone();
    enqueue_new(&*b, vec![j]).await;
    let stale = reserve_one(&*b, &q, lease).await;
    f.pass(lease + f.tolerance()).await;
    let recovered = b.recover_expired(&q, 10, LONG).await.or_fail("recover_expired");
    assert_eq!(recovered.len(), 1, "the expired lease was not recovered");
    let current = recovered[0].lease.clone();
    assert_ne!(current.token, stale.lease.token, "recovery must issue a new token");

    expect_all_refused(f, &*b, &stale).await;
    let forged = Reservation {
        lease: Lease {
            token: LeaseToken(current.token.0.wrapping_add(1_000_003)),
            ..current.clone()
        },
        ..recovered[0].clone()
    };
    expect_all_refused(f, &*b, &forged).await;

    let s = stats(&*b, &q).await;
    assert_eq!(
        (
            s.ready,
            s.scheduled,
            s.active,
            s.dead,
            s.completed,
            s.retried,
            s.dead_lettered
        ),
        (0, 0, 1, 0, 0, 0, 0),
        "a refused call changed the queue: {s:?}"
    );
    // The current holder still owns the job, and refused calls left no trace on it.
    assert_eq!(b.release(&[current]).await.or_fail("release"), [LeaseStatus::Held]);
    let r = reserve_one(&*b, &q, LONG).await;
    assert_eq!(timeless(&r.envelope), timeless(&sent), "a refused call changed the job");
    b.complete_one(&r.lease).await.or_fail("complete_one");
}

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

    f.pass(short_of(lease, tol)).await;
    let early = b.recover_expired(&q, 10, LONG).await.or_fail("recover_expired");
    if !still_before(f, deadline, "lease deadline") {
        return;
    }
    assert!(early.is_empty(), "a lease was recovered before its deadline");

    f.pass(across(tol)).await;
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
        f.pass(lease + f.tolerance()).await;
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
/// `run_at`, and hides the job until then (or not at all for a past time).
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
    f.pass(short_of(delay, tol)).await;
    let early = reserve_now(&*b, &q, 1, LONG).await;
    if !still_before(f, at, "retry time") {
        return;
    }
    assert!(early.is_empty(), "a retry ran before its time");
    f.pass(across(tol)).await;
    let r = reserve_one(&*b, &q, LONG).await;
    let expected = JobEnvelope {
        attempt: 1,
        attempts: vec![first.clone()],
        ..sent.clone()
    };
    assert_eq!(timeless(&r.envelope), timeless(&expected));
    let drift = (r.envelope.run_at - at).abs().to_std().unwrap_or(Duration::MAX);
    assert!(
        drift <= tol * 2 + ms(1),
        "run_at is {}, expected about {at}",
        r.envelope.run_at
    );

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
    f.pass(short_of(delay, tol)).await;
    let early = reserve_now(&*b, &q, 1, LONG).await;
    if !still_before(f, at, "snooze end") {
        return;
    }
    assert!(early.is_empty(), "a snoozed job ran before its time");
    f.pass(across(tol)).await;
    let r = reserve_one(&*b, &q, LONG).await;
    assert_eq!(
        timeless(&r.envelope),
        timeless(&sent),
        "a snooze must not touch attempt or history"
    );
    let drift = (r.envelope.run_at - at).abs().to_std().unwrap_or(Duration::MAX);
    assert!(
        drift <= tol * 2 + ms(1),
        "run_at is {}, expected about {at}",
        r.envelope.run_at
    );

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

    f.pass(ms(100)).await;
    let new_deadline = f.now() + delta(ms(600));
    let statuses = b.extend(&[a.clone(), gone], ms(600)).await.or_fail("extend");
    assert_eq!(statuses, [LeaseStatus::Held, LeaseStatus::Lost]);
    // Past the old deadline (200 ms), before the new one (700 ms).
    f.pass(ms(300)).await;
    let early = b.recover_expired(&q, 10, LONG).await.or_fail("recover_expired");
    if !still_before(f, new_deadline, "extended lease deadline") {
        return;
    }
    assert!(early.is_empty(), "an extended lease was recovered at its old deadline");
    f.pass(ms(300) + tol).await;
    let recovered = b.recover_expired(&q, 10, LONG).await.or_fail("recover_expired");
    assert_eq!(ids(&recovered), [a.id], "the lease did not expire at its new deadline");
    assert_eq!(b.extend(&[a], LONG).await.or_fail("extend"), [LeaseStatus::Lost]);
}

// ---------------------------------------------------------------------------
// Idempotency keys
// ---------------------------------------------------------------------------

/// A key held by a pending (ready, active or scheduled) job refuses a
/// second job with [`EnqueueOutcome::Duplicate`] naming the holder, also
/// within one batch; jobs without a key are never duplicates.
pub async fn idempotent_enqueue<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let q = queue(f, "idempotent");
    let first = keyed(job(f, &q, "order", 0), "order-42");
    let holder = first.id;
    enqueue_new(&*b, vec![first]).await;
    let dup = |f: &F| keyed(job(f, &q, "order", 1), "order-42");
    assert_duplicate(&*b, dup(f), holder, "ready").await;

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
    const EACH: usize = 50;
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
/// and released then. `retention` is the backend's configured window.
pub async fn completed_key_released_after_retention<F: Fixture + ?Sized>(f: &F, retention: Duration) {
    let b = f.backend();
    let q = queue(f, "key-retention");
    let tol = f.tolerance();
    let first = keyed(job(f, &q, "k", 0), "kept-key");
    let id = first.id;
    enqueue_new(&*b, vec![first]).await;
    let r = reserve_one(&*b, &q, LONG).await;
    let released_at = f.now() + delta(retention);
    b.complete_one(&r.lease).await.or_fail("complete_one");
    f.pass(short_of(retention, tol)).await;
    let early = b.enqueue(vec![keyed(job(f, &q, "k", 1), "kept-key")]).await;
    if !still_before(f, released_at, "key retention") {
        return;
    }
    let held = [EnqueueOutcome::Duplicate(id)];
    assert_eq!(
        early.or_fail("enqueue"),
        held,
        "a completed job's key was released early"
    );
    f.pass(across(tol)).await;
    enqueue_new(&*b, vec![keyed(job(f, &q, "k", 2), "kept-key")]).await;
}

// ---------------------------------------------------------------------------
// Stats and queues
// ---------------------------------------------------------------------------

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
    f.pass(ms(250)).await;
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
    f.pass(ms(450)).await;
    // The delayed job fell due 150 ms ago, unseen; this one is ready now.
    enqueue_new(&*b, vec![job(f, &q, "oldest", 2)]).await;
    f.pass(ms(150)).await;
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
    f.pass(ms(100) + across(tol)).await;
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

// ---------------------------------------------------------------------------
// The dead-letter queue
// ---------------------------------------------------------------------------

/// A dead job keeps its payload and history, records when and why it died
/// (the reason truncated), and is never reserved or recovered.
pub async fn dead_letter_keeps_job_and_history<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let q = queue(f, "dead");
    let tol = f.tolerance();
    let sent = keyed(job(f, &q, "dead", 0), "dead-1");
    let id = sent.id;
    enqueue_new(&*b, vec![sent.clone()]).await;
    let r = reserve_one(&*b, &q, LONG).await;
    let record = failure(f, "boom");
    let from = f.now();
    b.dead_letter(&r, Some(record.clone()), "permanent: boom")
        .await
        .or_fail("dead_letter");
    let to = f.now();
    let dead = get_dead(&*b, &q, id).await.or_fail("the dead job is not in the DLQ");
    let at = dead.dead_lettered_at.or_fail("dead_lettered_at");
    assert_within("dead_lettered_at", at, from, to, tol);
    let expected = JobEnvelope {
        attempts: vec![record],
        dead_lettered_at: Some(at),
        dead_letter_reason: Some("permanent: boom".into()),
        ..sent
    };
    assert_eq!(
        timeless(&dead),
        timeless(&expected),
        "dead_letter must keep the job and append the attempt"
    );

    let long = dead_job_with(&*b, job(f, &q, "dead", 1), None, &"x".repeat(3 * MAX_ERROR_BYTES)).await;
    assert!(
        long.attempts.is_empty(),
        "dead_letter without an attempt must not add one"
    );
    let reason = long.dead_letter_reason.or_fail("dead_letter_reason");
    assert!(
        reason.len() <= MAX_ERROR_BYTES && reason.starts_with("xxx"),
        "the reason must be truncated to {MAX_ERROR_BYTES} bytes, it has {}",
        reason.len()
    );

    let live = job(f, &q, "live", 0);
    let live_id = live.id;
    enqueue_new(&*b, vec![live]).await;
    assert_eq!(get_dead(&*b, &q, live_id).await, None, "get_dead returned a live job");
    assert_eq!(get_dead(&*b, &q, JobId::new()).await, None, "get_dead invented a job");
    assert_eq!(
        ids(&reserve_now(&*b, &q, 10, ms(100)).await),
        [live_id],
        "a dead job was handed out"
    );
    f.pass(ms(100) + tol).await;
    let recovered = b.recover_expired(&q, 10, LONG).await.or_fail("recover_expired");
    assert_eq!(ids(&recovered), [live_id], "a dead job was recovered");
    let s = stats(&*b, &q).await;
    assert_eq!((s.dead, s.dead_lettered), (2, 2), "{s:?}");
}

/// `list_dead` and `count_dead` apply the queue, kind and time filters,
/// ordered by dead-lettered time, then id.
pub async fn list_dead_filters<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let (q, other) = (queue(f, "dlq-filter"), queue(f, "dlq-filter-other"));
    let a0 = dead_job(f, &*b, job(f, &q, "alpha", 0), "x").await;
    let b0 = dead_job(f, &*b, job(f, &q, "beta", 0), "x").await;
    dead_job(f, &*b, job(f, &other, "alpha", 0), "x").await;
    f.pass(ms(300)).await;
    let a1 = dead_job(f, &*b, job(f, &q, "alpha", 1), "x").await;
    let b1 = dead_job(f, &*b, job(f, &q, "beta", 1), "x").await;
    let t1 = dead_time(&a1).min(dead_time(&b1));

    let all = DeadFilter::queue(q.clone());
    let cases = [
        (all.clone(), vec![&a0, &b0, &a1, &b1]),
        (all.clone().kind("alpha"), vec![&a0, &a1]),
        (all.clone().kind("gamma"), vec![]),
        (all.clone().between(Some(t1), None), vec![&a1, &b1]),
        (all.clone().between(None, Some(t1)), vec![&a0, &b0]),
        (
            all.clone().kind("beta").between(Some(dead_time(&a0)), Some(t1)),
            vec![&b0],
        ),
    ];
    for (filter, expected) in cases {
        let mut expected: Vec<_> = expected.into_iter().map(|j| (dead_time(j), j.id)).collect();
        expected.sort();
        let page = b.list_dead(&filter, None, MAX_DEAD_PAGE).await.or_fail("list_dead");
        let got: Vec<_> = page.jobs.iter().map(|j| (dead_time(j), j.id)).collect();
        assert_eq!(got, expected, "list_dead with {filter:?}");
        assert_eq!(page.next, None, "a complete listing must not point to a next page");
        let count = b.count_dead(&filter).await.or_fail("count_dead");
        assert_eq!(count, expected.len() as u64, "count_dead with {filter:?}");
    }
}

/// Paging through the DLQ with a cursor returns every entry once, in
/// order, ending with `next: None` (also on an exact page boundary), even
/// when entries already listed are deleted or retried meanwhile.
pub async fn list_dead_pages_without_skips_or_repeats<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let q = queue(f, "dlq-pages");
    for n in 0..25 {
        dead_job(f, &*b, job(f, &q, "page", n), "x").await;
        if n % 5 == 4 {
            // Entries dead-lettered at one instant exercise the id tie-break.
            f.pass(ms(1)).await;
        }
    }
    let filter = DeadFilter::queue(q.clone());
    let full = b.list_dead(&filter, None, MAX_DEAD_PAGE).await.or_fail("list_dead");
    let full: Vec<_> = full.jobs.iter().map(|j| (dead_time(j), j.id)).collect();
    let mut sorted = full.clone();
    sorted.sort();
    assert_eq!(full, sorted, "the DLQ is not ordered by dead-lettered time, then id");
    assert_eq!(full.len(), 25);
    let full: Vec<_> = full.into_iter().map(|(_, id)| id).collect();

    for (limit, pages) in [(7, 4), (5, 5), (25, 1), (30, 1)] {
        let (listed, count) = list_all(&*b, &filter, limit).await;
        assert_eq!(listed, full, "paging by {limit} skipped, repeated or reordered entries");
        assert_eq!(count, pages, "paging 25 entries by {limit} took {count} pages");
    }

    // Entries listed already go away while the listing goes on.
    let first = b.list_dead(&filter, None, 7).await.or_fail("list_dead");
    let cursor = first.next.or_fail("a next page after 7 of 25");
    let page_ids: Vec<_> = first.jobs.iter().map(|j| j.id).collect();
    assert!(b.delete_dead(&q, page_ids[6]).await.or_fail("delete_dead"));
    assert!(b.retry_dead(&q, page_ids[2]).await.or_fail("retry_dead"));
    let mut rest = Vec::new();
    let mut next = Some(cursor);
    while let Some(cursor) = next {
        let page = b.list_dead(&filter, Some(&cursor), 7).await.or_fail("list_dead");
        rest.extend(page.jobs.iter().map(|j| j.id));
        next = page.next;
    }
    assert_eq!(
        rest,
        full[7..],
        "deleting listed entries disturbed the rest of the listing"
    );

    let garbage = DeadCursor::new("not a cursor");
    let refused = b.list_dead(&filter, Some(&garbage), 7).await;
    assert!(refused.is_err(), "a cursor the backend never handed out was accepted");
}

/// A page size of 0 or above [`MAX_DEAD_PAGE`] is refused.
pub async fn list_dead_refuses_bad_page_sizes<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let q = queue(f, "dlq-limits");
    dead_job(f, &*b, job(f, &q, "limit", 0), "x").await;
    let filter = DeadFilter::queue(q);
    for limit in [0, MAX_DEAD_PAGE + 1] {
        let refused = b.list_dead(&filter, None, limit).await;
        assert!(
            matches!(refused, Err(Error::InvalidConfig(_))),
            "page size {limit} must be refused: {refused:?}"
        );
    }
    let page = b.list_dead(&filter, None, MAX_DEAD_PAGE).await.or_fail("list_dead");
    assert_eq!(page.jobs.len(), 1);
    assert_eq!(b.list_dead(&filter, None, 1).await.or_fail("list_dead").jobs.len(), 1);
}

/// `retry_dead` moves a dead job back to ready with `attempt` 0, its
/// history kept and its dead-letter fields cleared; it is `false` for a job
/// that is not dead.
pub async fn retry_dead_restores_job<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let q = queue(f, "dlq-retry");
    let mut sent = keyed(job(f, &q, "retry", 0), "dlq-retry-1");
    sent.max_retries = Some(1);
    enqueue_new(&*b, vec![sent.clone()]).await;
    let r = reserve_one(&*b, &q, LONG).await;
    let first = failure(f, "first");
    b.retry_after(&r, Duration::ZERO, first.clone())
        .await
        .or_fail("retry_after");
    let r = reserve_one(&*b, &q, LONG).await;
    let second = failure(f, "second");
    b.dead_letter(&r, Some(second.clone()), "retries exhausted")
        .await
        .or_fail("dead_letter");
    let dead = get_dead(&*b, &q, sent.id).await.or_fail("the job is not dead");
    assert_eq!((dead.attempt, dead.attempts.len()), (1, 2));

    assert!(b.retry_dead(&q, sent.id).await.or_fail("retry_dead"));
    assert_eq!(get_dead(&*b, &q, sent.id).await, None, "a retried job is still dead");
    assert!(
        !b.retry_dead(&q, sent.id).await.or_fail("retry_dead"),
        "a job was retried twice"
    );
    let s = stats(&*b, &q).await;
    assert_eq!((s.ready, s.dead), (1, 0), "{s:?}");
    let r = reserve_one(&*b, &q, LONG).await;
    let expected = JobEnvelope {
        attempt: 0,
        attempts: vec![first, second],
        dead_lettered_at: None,
        dead_letter_reason: None,
        run_at: r.envelope.run_at,
        ..sent
    };
    assert_eq!(
        timeless(&r.envelope),
        timeless(&expected),
        "retry_dead must keep the job and its history"
    );

    assert!(
        !b.retry_dead(&q, r.lease.id).await.or_fail("retry_dead"),
        "a live job was retried"
    );
    assert!(
        !b.retry_dead(&q, JobId::new()).await.or_fail("retry_dead"),
        "an unknown job was retried"
    );
    assert_eq!(stats(&*b, &q).await.active, 1);
}

/// Concurrent retries of one dead job re-enqueue it once: exactly one call
/// returns `true`.
pub async fn concurrent_retry_dead_reenqueues_once<F: Fixture + ?Sized>(f: &F) {
    const JOBS: usize = 8;
    const TASKS: usize = 8;
    let b = f.backend();
    let q = queue(f, "dlq-retry-race");
    let mut dead = Vec::new();
    for n in 0..JOBS {
        dead.push(dead_job(f, &*b, job(f, &q, "race", n as u64), "x").await.id);
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (b, q, barrier, dead) = (b.clone(), q.clone(), barrier.clone(), dead.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut won = Vec::new();
            for id in dead {
                if b.retry_dead(&q, id).await.or_fail("retry_dead") {
                    won.push(id);
                }
            }
            won
        }));
    }
    let mut won = Vec::new();
    for task in tasks {
        won.extend(join(task).await);
    }
    won.sort();
    let mut expected = dead.clone();
    expected.sort();
    assert_eq!(won, expected, "each dead job must be retried by exactly one caller");
    let s = stats(&*b, &q).await;
    assert_eq!((s.ready, s.dead), (JOBS as u64, 0), "{s:?}");
    assert_eq!(reserve_now(&*b, &q, 100, LONG).await.len(), JOBS);
}

/// `retry_dead_matching` retries exactly the dead jobs its filter matches
/// (queue, kind, time) and keeps their history.
pub async fn retry_dead_matching_filter<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let (q, other) = (queue(f, "dlq-match"), queue(f, "dlq-match-other"));
    let mut alpha = BTreeSet::new();
    for n in 0..3 {
        alpha.insert(dead_job(f, &*b, job(f, &q, "alpha", n), "x").await.id);
    }
    dead_job(f, &*b, job(f, &q, "beta", 0), "x").await;
    dead_job(f, &*b, job(f, &other, "alpha", 0), "x").await;
    f.pass(ms(300)).await;
    let late_beta = dead_job(f, &*b, job(f, &q, "beta", 1), "x").await;

    let all = DeadFilter::queue(q.clone());
    assert_eq!(
        b.retry_dead_matching(&all.clone().kind("alpha")).await.or_fail("retry"),
        3
    );
    let retried = reserve_now(&*b, &q, 100, LONG).await;
    assert_eq!(ids(&retried).into_iter().collect::<BTreeSet<_>>(), alpha);
    assert!(
        retried.iter().all(|r| r.envelope.attempts.len() == 1),
        "history was lost"
    );
    assert_eq!(
        b.count_dead(&DeadFilter::queue(other.clone())).await.or_fail("count"),
        1
    );

    let since = all.clone().kind("beta").between(Some(dead_time(&late_beta)), None);
    assert_eq!(b.retry_dead_matching(&since).await.or_fail("retry"), 1);
    assert_eq!(ids(&reserve_now(&*b, &q, 100, LONG).await), [late_beta.id]);
    assert_eq!(b.count_dead(&all).await.or_fail("count"), 1);
    assert_eq!(b.retry_dead_matching(&all).await.or_fail("retry"), 1);
    assert_eq!(b.retry_dead_matching(&all).await.or_fail("retry"), 0);
    assert_eq!(b.count_dead(&DeadFilter::queue(other)).await.or_fail("count"), 1);
}

/// `delete_dead` removes a dead job for good and is `false` for a job that
/// is not dead, which it leaves alone.
pub async fn delete_dead<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let q = queue(f, "dlq-delete");
    let dead = dead_job(f, &*b, job(f, &q, "delete", 0), "x").await;
    assert!(b.delete_dead(&q, dead.id).await.or_fail("delete_dead"));
    assert!(
        !b.delete_dead(&q, dead.id).await.or_fail("delete_dead"),
        "deleted twice"
    );
    assert_eq!(get_dead(&*b, &q, dead.id).await, None);
    assert!(
        !b.retry_dead(&q, dead.id).await.or_fail("retry_dead"),
        "a deleted job was retried"
    );
    assert_eq!(
        b.count_dead(&DeadFilter::queue(q.clone())).await.or_fail("count_dead"),
        0
    );

    let live = job(f, &q, "live", 0);
    let live_id = live.id;
    enqueue_new(&*b, vec![live]).await;
    assert!(
        !b.delete_dead(&q, live_id).await.or_fail("delete_dead"),
        "a live job was deleted"
    );
    assert_eq!(ids(&reserve_now(&*b, &q, 10, LONG).await), [live_id]);
    let s = stats(&*b, &q).await;
    assert_eq!((s.dead, s.active, s.ready), (0, 1, 0), "{s:?}");
}

/// `purge_dead` removes exactly the queue's entries dead-lettered strictly
/// before `older_than`.
pub async fn purge_dead_removes_only_strictly_older<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let (q, other) = (queue(f, "dlq-purge"), queue(f, "dlq-purge-other"));
    let d0 = dead_job(f, &*b, job(f, &q, "purge", 0), "x").await;
    dead_job(f, &*b, job(f, &other, "purge", 0), "x").await;
    f.pass(ms(300)).await;
    let d1 = dead_job(f, &*b, job(f, &q, "purge", 1), "x").await;
    let d2 = dead_job(f, &*b, job(f, &q, "purge", 2), "x").await;
    f.pass(ms(300)).await;
    let d3 = dead_job(f, &*b, job(f, &q, "purge", 3), "x").await;
    let all = DeadFilter::queue(q.clone());
    let remaining = |page: Vec<JobEnvelope>| page.into_iter().map(|j| j.id).collect::<BTreeSet<_>>();

    let long_ago = dead_time(&d0) - chrono::TimeDelta::days(1);
    assert_eq!(b.purge_dead(&q, long_ago).await.or_fail("purge_dead"), 0);
    let t1 = dead_time(&d1).min(dead_time(&d2));
    assert_eq!(b.purge_dead(&q, t1).await.or_fail("purge_dead"), 1);
    let left = b.list_dead(&all, None, 10).await.or_fail("list_dead").jobs;
    assert_eq!(remaining(left), BTreeSet::from([d1.id, d2.id, d3.id]));
    assert_eq!(get_dead(&*b, &q, d0.id).await, None);

    assert_eq!(b.purge_dead(&q, dead_time(&d3)).await.or_fail("purge_dead"), 2);
    let left = b.list_dead(&all, None, 10).await.or_fail("list_dead").jobs;
    assert_eq!(
        remaining(left),
        BTreeSet::from([d3.id]),
        "an entry at `older_than` was purged"
    );
    assert_eq!(b.count_dead(&DeadFilter::queue(other)).await.or_fail("count_dead"), 1);
    assert_eq!(stats(&*b, &q).await.dead, 1);
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Unwraps with a message naming the call that failed and its error.
trait OrFail<T> {
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

fn ms(n: u64) -> Duration {
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
fn across(tolerance: Duration) -> Duration {
    ms(1) + tolerance * 3
}

/// The envelope without the times a backend may rewrite to its own clock.
fn timeless(envelope: &JobEnvelope) -> JobEnvelope {
    JobEnvelope {
        enqueued_at: DateTime::UNIX_EPOCH,
        run_at: DateTime::UNIX_EPOCH,
        ..envelope.clone()
    }
}

fn delta(d: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX)
}

#[track_caller]
fn queue<F: Fixture + ?Sized>(f: &F, name: &str) -> QueueName {
    f.queue(name).or_fail("the fixture's queue name")
}

fn job<F: Fixture + ?Sized>(f: &F, queue: &QueueName, kind: &str, n: u64) -> JobEnvelope {
    JobEnvelope::new(kind, queue.clone(), json!({ "n": n }), f.now())
}

fn keyed(mut job: JobEnvelope, key: &str) -> JobEnvelope {
    job.idempotency_key = Some(key.to_owned());
    job
}

fn failure<F: Fixture + ?Sized>(f: &F, error: &str) -> AttemptRecord {
    let now = f.now();
    AttemptRecord::failed(now, now, error, Some("conformance".into()))
}

fn request(max: usize, lease: Duration, wait: Duration) -> ReserveRequest {
    ReserveRequest { max, lease, wait }
}

fn ids(reserved: &[Reservation]) -> Vec<JobId> {
    reserved.iter().map(|r| r.lease.id).collect()
}

fn dead_time(job: &JobEnvelope) -> DateTime<Utc> {
    job.dead_lettered_at.or_fail("a DLQ entry without dead_lettered_at")
}

/// Asserts that `actual`, a time the backend took between `from` and `to`
/// by the fixture's clock, lies there within the tolerance.
#[track_caller]
fn assert_within(what: &str, actual: DateTime<Utc>, from: DateTime<Utc>, to: DateTime<Utc>, tolerance: Duration) {
    let (from, to) = (from - delta(tolerance), to + delta(tolerance));
    assert!(
        from <= actual && actual <= to,
        "{what} is {actual}, expected between {from} and {to}"
    );
}

/// Whether the backend's clock is surely still short of `at`: only then
/// does a "not yet" check just made prove anything. Always so on a paused
/// clock; a loaded machine may oversleep a real one past `at`, and the case
/// then stops with a warning instead of failing falsely.
fn still_before<F: Fixture + ?Sized>(f: &F, at: DateTime<Utc>, what: &str) -> bool {
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
async fn enqueue_new(b: &dyn Backend, jobs: Vec<JobEnvelope>) {
    let expected: Vec<_> = jobs.iter().map(|j| EnqueueOutcome::Enqueued(j.id)).collect();
    let outcomes = b.enqueue(jobs).await.or_fail("enqueue");
    assert_eq!(outcomes, expected, "every job must be stored");
}

async fn assert_duplicate(b: &dyn Backend, job: JobEnvelope, holder: JobId, while_: &str) {
    let outcomes = b.enqueue(vec![job]).await.or_fail("enqueue");
    assert_eq!(
        outcomes,
        [EnqueueOutcome::Duplicate(holder)],
        "the key of a {while_} job must refuse a second job"
    );
}

async fn reserve_now(b: &dyn Backend, q: &QueueName, max: usize, lease: Duration) -> Vec<Reservation> {
    b.reserve(q, request(max, lease, Duration::ZERO))
        .await
        .or_fail("reserve")
}

async fn reserve_one(b: &dyn Backend, q: &QueueName, lease: Duration) -> Reservation {
    let mut got = reserve_now(b, q, 1, lease).await;
    assert_eq!(got.len(), 1, "expected a ready job on {q}");
    got.remove(0)
}

async fn stats(b: &dyn Backend, q: &QueueName) -> QueueStats {
    b.stats(q).await.or_fail("stats")
}

async fn get_dead(b: &dyn Backend, q: &QueueName, id: JobId) -> Option<JobEnvelope> {
    b.get_dead(q, id).await.or_fail("get_dead")
}

/// Enqueues `job`, reserves it and dead-letters it with one failed attempt;
/// returns it as the DLQ holds it.
async fn dead_job<F: Fixture + ?Sized>(f: &F, b: &dyn Backend, job: JobEnvelope, reason: &str) -> JobEnvelope {
    dead_job_with(b, job, Some(failure(f, "failed")), reason).await
}

async fn dead_job_with(b: &dyn Backend, job: JobEnvelope, record: Option<AttemptRecord>, reason: &str) -> JobEnvelope {
    let (id, q) = (job.id, job.queue.clone());
    enqueue_new(b, vec![job]).await;
    let r = reserve_one(b, &q, LONG).await;
    assert_eq!(r.lease.id, id, "the case left another job ready on {q}");
    b.dead_letter(&r, record, reason).await.or_fail("dead_letter");
    get_dead(b, &q, id).await.or_fail("the dead job is not in the DLQ")
}

/// Lists the whole DLQ of `filter` by pages of `limit`; returns the ids and
/// the number of pages.
async fn list_all(b: &dyn Backend, filter: &DeadFilter, limit: usize) -> (Vec<JobId>, usize) {
    let mut listed = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<DeadCursor> = None;
    loop {
        let page = b.list_dead(filter, cursor.as_ref(), limit).await.or_fail("list_dead");
        pages += 1;
        assert!(
            !page.jobs.is_empty() || (pages == 1 && page.next.is_none()),
            "page {pages} by {limit} is empty"
        );
        assert!(page.jobs.len() <= limit, "a page holds more than its limit");
        if page.next.is_some() {
            assert_eq!(page.jobs.len(), limit, "a page before the last is not full");
        }
        listed.extend(page.jobs.iter().map(|j| j.id));
        match page.next {
            Some(next) => cursor = Some(next),
            None => return (listed, pages),
        }
        assert!(pages <= MAX_DEAD_PAGE, "paging does not end");
    }
}

/// Checks that every lease operation refuses `lease` and reports it lost.
async fn expect_all_refused<F: Fixture + ?Sized>(f: &F, b: &dyn Backend, job: &Reservation) {
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

/// Waits for a task (with a guard), passing on its panic if it failed.
async fn join<T>(task: tokio::task::JoinHandle<T>) -> T {
    match tokio::time::timeout(GUARD, task)
        .await
        .or_fail("the task did not finish in time")
    {
        Ok(value) => value,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("the task did not finish: {e}"),
    }
}
