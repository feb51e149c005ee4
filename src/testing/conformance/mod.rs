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
//! The cases live in one file per topic, in the order the macro runs
//! them: enqueue and reserve (and dropping reserve calls), leases, retries (`retry_after`, `snooze`,
//! `release`, `extend`, recovery of expired leases), idempotency keys,
//! stats and queues, the queue history (buckets fill, add up to the
//! counters, expire; see [`short_history_layout`] for backends on a real
//! clock), the dead-letter queue, and operators' control (live jobs by
//! state, pause, cancel, priorities, the worker registry). All are
//! re-exported here.
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
//! - `reserve` with `max` of 0 is refused with
//!   [`Error::InvalidConfig`](crate::Error::InvalidConfig).
//! - Reservations, retries and the DLQ hand back the envelope as enqueued,
//!   except for the fields the contracts change (`attempt`, `attempts`,
//!   the dead-letter fields) and `run_at`, which `retry_after` moves to the
//!   retry time.
//! - [`list_dead`](crate::DeadLetterQueue::list_dead) returns `next: None`
//!   on the page that holds the last entry, even when that page is full;
//!   a cursor the backend did not hand out is refused.
//! - A dead-letter reason is stored truncated to
//!   [`MAX_ERROR_BYTES`](crate::envelope::MAX_ERROR_BYTES), like
//!   an attempt's error.
//! - [`queues`](crate::Broker::queues) lists queues that have had a job,
//!   not queues that were only asked about (`stats`, `reserve`, DLQ calls).

mod cancel;
mod control;
mod dead_letters;
mod enqueue;
mod history;
mod idempotency;
mod leases;
mod retries;
mod stats;
mod support;

pub use cancel::dropped_reserve_leaves_nothing_leased;
pub use control::{
    cancel_active_job_is_signalled, cancel_ready_and_scheduled_jobs, jobs_return_to_their_priority, list_jobs_by_state,
    list_jobs_pages_without_skips_or_repeats, pause_stops_reservations_until_resumed, priorities_order_reservations,
    worker_registry,
};
pub use dead_letters::{
    concurrent_retry_dead_reenqueues_once, dead_letter_keeps_job_and_history, delete_dead, list_dead_filters,
    list_dead_pages_without_skips_or_repeats, list_dead_refuses_bad_page_sizes, purge_dead_removes_only_strictly_older,
    retry_dead_matching_filter, retry_dead_restores_job,
};
pub use enqueue::{
    batch_enqueue_spans_queues, delayed_job_not_visible_before_run_at, envelope_round_trips,
    reserve_hands_each_job_to_one_caller, reserve_is_fifo_per_queue, reserve_takes_at_most_max,
    reserve_waits_and_wakes_on_enqueue, reserve_wakes_when_delayed_job_falls_due,
};
pub use history::{
    history_adds_up_to_the_counters, history_buckets_expire, history_buckets_fill, short_history_layout,
};
pub use idempotency::{
    completed_key_released_after_retention, idempotency_key_lifecycle, idempotent_enqueue, idempotent_enqueue_race,
};
pub use leases::{acknowledged_lease_is_gone, stale_lease_is_refused};
pub use retries::{
    crashing_job_reaches_dead_letter_queue, expired_lease_is_recovered_and_fenced, extend_moves_deadline,
    release_puts_job_in_front_without_attempt, retry_after_counts_attempt_and_keeps_history,
    snooze_runs_again_without_an_attempt,
};
pub use stats::{
    a_new_job_runs_after_every_job_already_due, oldest_ready_age_counts_jobs_that_fell_due_unseen,
    queues_lists_queues_with_jobs, stats_count_every_state,
};

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::{
    broker::{memory::MemoryBroker, Backend},
    clock::{Clock, TokioClock},
    error::Result,
    job::QueueName,
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
    async fn advance(&self, by: Duration);

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
/// (`#[tokio::test(start_paused = true)]`): [`advance`](Fixture::advance) then
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

    async fn advance(&self, by: Duration) {
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
        $crate::conformance_tests!(@case [$concurrent] $fixture; dropped_reserve_leaves_nothing_leased);
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
        $crate::conformance_tests!(@case [$test] $fixture; history_buckets_fill);
        $crate::conformance_tests!(@case [$test] $fixture; history_adds_up_to_the_counters);
        $crate::conformance_tests!(@case [$test] $fixture; history_buckets_expire);
        $crate::conformance_tests!(@case [$test] $fixture; dead_letter_keeps_job_and_history);
        $crate::conformance_tests!(@case [$test] $fixture; list_dead_filters);
        $crate::conformance_tests!(@case [$test] $fixture; list_dead_pages_without_skips_or_repeats);
        $crate::conformance_tests!(@case [$test] $fixture; list_dead_refuses_bad_page_sizes);
        $crate::conformance_tests!(@case [$test] $fixture; retry_dead_restores_job);
        $crate::conformance_tests!(@case [$concurrent] $fixture; concurrent_retry_dead_reenqueues_once);
        $crate::conformance_tests!(@case [$test] $fixture; retry_dead_matching_filter);
        $crate::conformance_tests!(@case [$test] $fixture; delete_dead);
        $crate::conformance_tests!(@case [$test] $fixture; purge_dead_removes_only_strictly_older);
        $crate::conformance_tests!(@case [$test] $fixture; list_jobs_by_state);
        $crate::conformance_tests!(@case [$test] $fixture; list_jobs_pages_without_skips_or_repeats);
        $crate::conformance_tests!(@case [$test] $fixture; pause_stops_reservations_until_resumed);
        $crate::conformance_tests!(@case [$test] $fixture; cancel_ready_and_scheduled_jobs);
        $crate::conformance_tests!(@case [$test] $fixture; cancel_active_job_is_signalled);
        $crate::conformance_tests!(@case [$test] $fixture; priorities_order_reservations);
        $crate::conformance_tests!(@case [$test] $fixture; jobs_return_to_their_priority);
        $crate::conformance_tests!(@case [$test] $fixture; worker_registry);
    };
    (@case [$attr:meta] $fixture:expr; $name:ident $(, $arg:expr)*) => {
        #[$attr]
        async fn $name() {
            let fixture = $fixture;
            $crate::testing::conformance::$name(&fixture $(, $arg)*).await;
        }
    };
}
