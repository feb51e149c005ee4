//! Brokers: where jobs wait, are leased and die.
//!
//! [`Broker`] moves jobs through their lifecycle; [`DeadLetterQueue`] is the
//! operators' view of jobs that gave up. Every backend implements both and
//! passes the conformance suite (`testing::conformance`, feature `test-util`).

use std::{fmt, sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    envelope::{AttemptRecord, JobEnvelope},
    error::{Error, Result},
    job::{JobId, QueueName},
};

pub mod control;
pub mod history;
mod live;
pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
mod query;
#[cfg(feature = "redis")]
pub mod redis;
mod view;

pub use control::{
    ActiveLease, CancelOutcome, JobControl, JobCursor, JobPage, JobQuery, JobState, LiveJob, WorkerEntry, WorkerInfo,
    CANCEL_REASON, MAX_JOB_PAGE,
};
pub use history::{HistoryBucket, HistoryLayout, HistorySample, QueueHistory, Resolution, Series};
pub use live::{CancelTally, LiveListing, LiveQuery, LiveSummary};
pub use query::{DeadListing, DeadQuery, DeadSummary, HasJobId, IdPrefix};
pub use view::JobDetail;

/// How long a completed job's idempotency key stays held by default (24 h).
pub const DEFAULT_KEY_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// A fencing token proving that the holder owns a job's current lease.
///
/// Every reservation (and every recovery of an expired lease) issues a new
/// token, so a worker whose lease expired cannot act on the job any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaseToken(pub u64);

impl fmt::Display for LeaseToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// What a worker holds for a leased job: the job, where it lives, and the token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lease {
    /// The job.
    pub id: JobId,
    /// Its queue.
    pub queue: QueueName,
    /// The fencing token of this lease.
    pub token: LeaseToken,
}

/// A job handed to a worker, leased until `deadline`.
///
/// The worker hands it back to [`Broker::retry_after`],
/// [`Broker::snooze`] and [`Broker::dead_letter`], so a backend that
/// rewrites whole envelopes has the one it leased at hand.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Reservation {
    /// The job as stored. Shared: a backend that keeps the envelope in
    /// memory hands it over without copying.
    pub envelope: Arc<JobEnvelope>,
    /// The lease to acknowledge with.
    pub lease: Lease,
    /// When the lease expires unless extended.
    pub deadline: DateTime<Utc>,
    /// For a job returned by [`Broker::recover_expired`]: when the attempt
    /// whose lease expired had started. `None` for a fresh reservation.
    pub expired_attempt_started_at: Option<DateTime<Utc>>,
    /// Whether an operator asked to cancel the job while it was active
    /// ([`JobControl::cancel`]); set on reservations from
    /// [`Broker::recover_expired`], so a job whose worker died after the
    /// request is not run again.
    pub cancel_requested: bool,
}

impl Reservation {
    /// A fresh reservation of `envelope` under `token`, leased until `deadline`.
    pub fn new(envelope: Arc<JobEnvelope>, token: LeaseToken, deadline: DateTime<Utc>) -> Self {
        Reservation {
            lease: Lease {
                id: envelope.id,
                queue: envelope.queue.clone(),
                token,
            },
            envelope,
            deadline,
            expired_attempt_started_at: None,
            cancel_requested: false,
        }
    }

    /// Marks this reservation as the recovery of an expired lease whose
    /// attempt started at `started_at`.
    pub fn recovered(mut self, started_at: DateTime<Utc>) -> Self {
        self.expired_attempt_started_at = Some(started_at);
        self
    }

    /// Marks this reservation as one of a job an operator asked to cancel.
    pub fn cancel_requested(mut self, requested: bool) -> Self {
        self.cancel_requested = requested;
        self
    }
}

/// The result of enqueueing one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EnqueueOutcome {
    /// The job was stored under this id.
    Enqueued(JobId),
    /// A job with the same idempotency key is already known; this is its id.
    /// Nothing was stored.
    Duplicate(JobId),
}

impl EnqueueOutcome {
    /// The id of the stored job (the new one, or the existing duplicate).
    pub fn id(&self) -> JobId {
        match *self {
            EnqueueOutcome::Enqueued(id) | EnqueueOutcome::Duplicate(id) => id,
        }
    }

    /// Whether a job was stored.
    pub fn is_enqueued(&self) -> bool {
        matches!(self, EnqueueOutcome::Enqueued(_))
    }
}

/// Whether a lease was still held when a worker acted on it (complete,
/// release, extend).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeaseStatus {
    /// The lease was held; the operation took effect.
    Held,
    /// The lease was gone (expired and recovered, or already acknowledged);
    /// nothing changed.
    Lost,
    /// From [`extend`](Broker::extend) only: the lease was held and
    /// extended, and an operator asked to cancel the job
    /// ([`JobControl::cancel`]). The worker signals the handler.
    Cancelled,
}

impl LeaseStatus {
    /// Whether the lease was held (`Held` or `Cancelled`).
    pub fn is_held(self) -> bool {
        matches!(self, LeaseStatus::Held | LeaseStatus::Cancelled)
    }
}

/// What to reserve: how many jobs, for how long, how long to wait, and
/// for whom.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReserveRequest {
    /// Take at most this many jobs (at least 1).
    pub max: usize,
    /// Lease them for this long.
    pub lease: Duration,
    /// When no job is ready, wait up to this long for one (zero: do not wait).
    pub wait: Duration,
    /// The worker taking them ([`WorkerInfo::id`]), recorded as the lease
    /// owner that [`JobControl::list_jobs`] shows.
    pub worker: Option<Arc<str>>,
}

impl ReserveRequest {
    /// Up to `max` jobs leased for `lease`, waiting up to `wait` for one.
    pub fn new(max: usize, lease: Duration, wait: Duration) -> Self {
        ReserveRequest {
            max,
            lease,
            wait,
            worker: None,
        }
    }

    /// Records `worker` as the owner of the leases.
    pub fn worker(mut self, worker: Arc<str>) -> Self {
        self.worker = Some(worker);
        self
    }
}

/// A queue's counts, as the broker sees them now.
///
/// Backends outside this crate build it from [`Default`] and set the fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct QueueStats {
    /// Jobs ready to run now.
    pub ready: u64,
    /// Jobs waiting for their run time (delayed or backing off).
    pub scheduled: u64,
    /// Jobs leased by a worker.
    pub active: u64,
    /// Jobs in the dead-letter queue.
    pub dead: u64,
    /// How long the oldest ready job has been ready, in milliseconds.
    ///
    /// On Redis, right after workers released unstarted jobs (at
    /// shutdown), it can read younger than it is until those jobs run: a
    /// released job goes back to the head of the queue, which may put a
    /// younger one in front of an older one.
    pub oldest_ready_age_ms: Option<u64>,
    /// Jobs completed since the broker started counting.
    pub completed: u64,
    /// Attempts that failed and were scheduled for retry.
    pub retried: u64,
    /// Jobs moved to the dead-letter queue.
    pub dead_lettered: u64,
    /// Records removed because they could not be turned into a job, not
    /// even a dead one: on Redis, a job id in a state set (ready,
    /// scheduled, active) with no stored envelope, which another program
    /// wrote. Each is logged when dropped. Always 0 for a backend whose
    /// storage only the broker writes (the in-memory one).
    pub dropped: u64,
    /// Jobs found stored but in no state (not ready, scheduled, active or
    /// dead) and put back to ready: on Redis, envelopes written without
    /// their id (by another program, or by a script that failed half-way).
    /// Each is logged when put back. Always 0 in memory.
    pub restored: u64,
    /// Whether the queue is paused ([`JobControl::pause`]): workers
    /// reserve nothing from it until it is resumed.
    pub paused: bool,
}

/// A job queue backend.
///
/// # Contract
///
/// All methods are safe to call concurrently from many tasks and, for
/// shared backends, many processes. Every state change is atomic: a crash
/// between two calls never leaves a job half-moved.
///
/// - [`enqueue`](Broker::enqueue) MUST store each envelope whose
///   idempotency key (if any) is not held, and MUST NOT store one whose key
///   is held by a job that is pending, active, dead, or completed within
///   the backend's retention window; that one gets
///   [`EnqueueOutcome::Duplicate`] with the holder's id. Under any race,
///   exactly one job per key is stored. Keys are scoped to a queue. A job
///   MUST NOT be reserved before `run_at − enqueued_at` has passed on the
///   backend's clock since it was stored: delays are measured by the
///   backend, so producers with skewed clocks neither start jobs early nor
///   leave them stuck. The backend MAY rewrite `enqueued_at` and `run_at`
///   to its own clock.
/// - [`reserve`](Broker::reserve) MUST hand out each ready job to one
///   caller at a time, highest [`priority`](JobEnvelope::priority) first
///   and oldest first within a priority (FIFO), with a fresh
///   [`LeaseToken`], and MUST refuse a `max` of 0 with
///   [`Error::InvalidConfig`]. On a paused queue ([`JobControl::pause`])
///   it MUST lease nothing. When nothing is ready it MUST wait up to
///   `request.wait` for work and MUST wake for a newly enqueued or newly
///   due job without polling in a busy loop. A stored envelope the backend
///   cannot decode MUST be dead-lettered with the reason, never returned,
///   dropped or retried.
/// - [`complete`](Broker::complete), [`retry_after`](Broker::retry_after),
///   [`snooze`](Broker::snooze), [`dead_letter`](Broker::dead_letter),
///   [`release`](Broker::release) and [`extend`](Broker::extend) MUST act
///   only if the lease's token is the job's current one; otherwise they
///   change nothing and report [`LeaseStatus::Lost`] (or
///   [`Error::LeaseLost`]).
/// - `retry_after`, `snooze` and `dead_letter` receive the [`Reservation`]
///   the backend handed out, envelope included: a backend MAY write the
///   stored job from it (the fencing token guarantees nobody else changed
///   the job meanwhile) and MUST NOT need a copy of its own.
/// - [`retry_after`](Broker::retry_after) and [`dead_letter`](Broker::dead_letter)
///   MUST append the attempt record to the job's history.
///   `retry_after` MUST increment `attempt`, set `run_at` to the retry
///   time and make the job ready once `delay` has passed on the backend's
///   clock; `dead_letter` MUST store its reason truncated to
///   [`MAX_ERROR_BYTES`](crate::envelope::MAX_ERROR_BYTES). Nothing ever
///   removes history.
/// - [`snooze`](Broker::snooze) MUST make the job ready once `delay` has
///   passed, with `run_at` set to that time, and MUST NOT change
///   `attempt`, the history or the retry counters: a snoozed job has not
///   failed.
/// - [`release`](Broker::release) MUST put the job back at the front of
///   ready without counting an attempt.
/// - [`recover_expired`](Broker::recover_expired) MUST take jobs whose
///   lease deadline has passed, fence the old token, and hand them to the
///   caller under a new lease with
///   [`Reservation::expired_attempt_started_at`] set; the caller then
///   records the failed attempt through `retry_after` or `dead_letter`.
/// - Time (due times, lease deadlines) is decided by the backend's clock.
/// - [`queues`](Broker::queues) MUST list each queue that has had a job,
///   and not queues that were only asked about.
/// - A backend MAY batch or pipeline internally; it MAY keep completed
///   idempotency keys for a bounded retention window only.
#[async_trait]
pub trait Broker: Send + Sync + fmt::Debug + 'static {
    /// Stores jobs (one batch may span queues). Returns one outcome per
    /// envelope, in order.
    async fn enqueue(&self, jobs: Vec<JobEnvelope>) -> Result<Vec<EnqueueOutcome>>;

    /// Leases up to `request.max` ready jobs of `queue`, waiting up to
    /// `request.wait` when none is ready. An empty result means none came.
    async fn reserve(&self, queue: &QueueName, request: ReserveRequest) -> Result<Vec<Reservation>>;

    /// Acknowledges finished jobs: they leave the broker (their idempotency
    /// key is kept for the retention window). One status per lease, in order.
    async fn complete(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>>;

    /// Schedules a failed job to run again once `delay` has passed (on the
    /// backend's clock), recording the attempt.
    async fn retry_after(&self, job: &Reservation, delay: Duration, attempt: AttemptRecord) -> Result<()>;

    /// Runs a job again once `delay` has passed without counting an
    /// attempt: the handler asked to wait (see [`HandlerError::Snooze`](crate::HandlerError::Snooze)).
    async fn snooze(&self, job: &Reservation, delay: Duration) -> Result<()>;

    /// Moves a job to the dead-letter queue with `reason`, recording the
    /// attempt if there was one.
    async fn dead_letter(&self, job: &Reservation, attempt: Option<AttemptRecord>, reason: &str) -> Result<()>;

    /// Puts leased jobs back at the front of ready without counting an
    /// attempt (graceful shutdown). One status per lease, in order.
    async fn release(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>>;

    /// Moves the deadline of held leases to now + `lease`. One status per
    /// lease, in order.
    async fn extend(&self, leases: &[Lease], lease: Duration) -> Result<Vec<LeaseStatus>>;

    /// Takes up to `max` jobs of `queue` whose lease has expired and leases
    /// them to the caller for `lease` (see the contract).
    async fn recover_expired(&self, queue: &QueueName, max: usize, lease: Duration) -> Result<Vec<Reservation>>;

    /// The queue's counts.
    async fn stats(&self, queue: &QueueName) -> Result<QueueStats>;

    /// Every queue the broker has seen a job for.
    async fn queues(&self) -> Result<Vec<QueueName>>;

    /// Whether dropping a [`reserve`](Broker::reserve) future before it
    /// completes is guaranteed to leave nothing leased (a backend MAY lease
    /// and then hand the jobs back to the front of ready, without counting
    /// an attempt, once it sees nobody waits for them). When `true`, a
    /// worker shutting down abandons an idle reserve at once instead of
    /// waiting for it to return. Defaults to `false`.
    fn reserve_is_cancel_safe(&self) -> bool {
        false
    }

    /// The backend's per-queue history, if it keeps one: workers record
    /// their samples there. Defaults to `None`; every backend of this crate
    /// keeps one (wrappers pass their inner backend's on).
    fn queue_history(&self) -> Option<&dyn QueueHistory> {
        None
    }

    /// The backend's operator side, through which a worker registers
    /// itself ([`JobControl::register_worker`]). Backends that implement
    /// [`JobControl`] return `Some(self)`; a wrapper passes its inner
    /// backend's on. Defaults to `None`: the worker then runs unregistered.
    fn control(&self) -> Option<&dyn JobControl> {
        None
    }

    /// Checks that the backend is reachable.
    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    /// Acknowledges one finished job; [`Error::LeaseLost`] if its lease was gone.
    async fn complete_one(&self, lease: &Lease) -> Result<()> {
        match self.complete(std::slice::from_ref(lease)).await?.first() {
            Some(LeaseStatus::Held) => Ok(()),
            _ => Err(Error::LeaseLost(lease.id)),
        }
    }
}

/// Which dead jobs a DLQ operation applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadFilter {
    /// The queue.
    pub queue: QueueName,
    /// Only jobs of this kind.
    pub kind: Option<String>,
    /// Only jobs dead-lettered at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only jobs dead-lettered before this time.
    pub until: Option<DateTime<Utc>>,
}

impl DeadFilter {
    /// Every dead job of `queue`.
    pub fn queue(queue: QueueName) -> Self {
        DeadFilter {
            queue,
            kind: None,
            since: None,
            until: None,
        }
    }

    /// Only jobs of `kind`.
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = Some(kind.into());
        self
    }

    /// Only jobs dead-lettered in `[since, until)`.
    pub fn between(mut self, since: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>) -> Self {
        self.since = since;
        self.until = until;
        self
    }

    /// Whether a dead envelope matches the filter.
    pub fn matches(&self, job: &JobEnvelope) -> bool {
        let at = job.dead_lettered_at;
        job.queue == self.queue
            && self.kind.as_deref().is_none_or(|k| k == job.kind)
            && self.since.is_none_or(|s| at.is_some_and(|at| at >= s))
            && self.until.is_none_or(|u| at.is_some_and(|at| at < u))
    }
}

/// A position in a DLQ listing: pass it back to get the next page.
///
/// Opaque text; stable across calls while the entries it points past exist.
/// Backends make it with [`DeadCursor::new`]; callers only pass it back
/// (or carry it through a URL as [`as_str`](DeadCursor::as_str)).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeadCursor(String);

impl DeadCursor {
    /// A cursor holding a backend's position text.
    pub fn new(position: impl Into<String>) -> Self {
        DeadCursor(position.into())
    }

    /// The position text, as the backend made it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One page of a DLQ listing.
#[derive(Debug, Clone)]
pub struct DeadPage {
    /// The dead jobs, oldest dead-lettered first.
    pub jobs: Vec<JobEnvelope>,
    /// Where the next page starts; `None` at the end.
    pub next: Option<DeadCursor>,
}

/// The largest DLQ page a backend hands out.
pub const MAX_DEAD_PAGE: usize = 1_000;

/// The dead-letter queue: jobs that gave up, kept for operators.
///
/// # Contract
///
/// - Dead jobs keep their payload and full attempt history, and MUST NOT
///   be reserved until retried.
/// - [`list_dead`](DeadLetterQueue::list_dead) MUST order by
///   dead-lettered time, then id, and page without skipping or repeating
///   entries that exist for the whole listing; `next` MUST be `None` on the
///   page holding the last entry. `limit` of 0 or above
///   [`MAX_DEAD_PAGE`] MUST be refused with [`Error::InvalidConfig`], and
///   so MUST a cursor the backend did not hand out.
/// - [`retry_dead`](DeadLetterQueue::retry_dead) MUST move the job back to
///   ready with `attempt` reset to 0, its history kept and its dead-letter
///   fields cleared, atomically: of concurrent retries of one job exactly
///   one returns `true`.
/// - [`purge_dead`](DeadLetterQueue::purge_dead) MUST remove exactly the
///   entries dead-lettered strictly before `older_than`.
/// - Deleting or purging a dead job releases its idempotency key.
#[async_trait]
pub trait DeadLetterQueue: Send + Sync + fmt::Debug + 'static {
    /// One page of dead jobs matching `filter`, after `cursor`.
    async fn list_dead(&self, filter: &DeadFilter, cursor: Option<&DeadCursor>, limit: usize) -> Result<DeadPage>;

    /// One dead job.
    async fn get_dead(&self, queue: &QueueName, id: JobId) -> Result<Option<JobEnvelope>>;

    /// Moves a dead job back to ready. `false` if it was not dead (already
    /// retried, deleted, or never there).
    async fn retry_dead(&self, queue: &QueueName, id: JobId) -> Result<bool>;

    /// Retries every dead job matching `filter`; returns how many.
    ///
    /// Provided: lists every matching job first, then retries each, so a
    /// retried job that dies again meanwhile is not retried twice in one
    /// call. Backends MAY do it in fewer round trips.
    async fn retry_dead_matching(&self, filter: &DeadFilter) -> Result<u64> {
        let mut ids = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.list_dead(filter, cursor.as_ref(), MAX_DEAD_PAGE).await?;
            ids.extend(page.jobs.iter().map(|job| job.id));
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let mut retried = 0;
        for id in ids {
            retried += u64::from(self.retry_dead(&filter.queue, id).await?);
        }
        Ok(retried)
    }

    /// Deletes a dead job. `false` if it was not there.
    async fn delete_dead(&self, queue: &QueueName, id: JobId) -> Result<bool>;

    /// Deletes the dead jobs of `queue` dead-lettered before `older_than`;
    /// returns how many.
    async fn purge_dead(&self, queue: &QueueName, older_than: DateTime<Utc>) -> Result<u64>;

    /// How many dead jobs match `filter`.
    ///
    /// Provided: pages through [`list_dead`](DeadLetterQueue::list_dead).
    /// Backends SHOULD count without reading every job.
    async fn count_dead(&self, filter: &DeadFilter) -> Result<u64> {
        let mut count = 0;
        let mut cursor = None;
        loop {
            let page = self.list_dead(filter, cursor.as_ref(), MAX_DEAD_PAGE).await?;
            count += page.jobs.len() as u64;
            match page.next {
                Some(next) => cursor = Some(next),
                None => return Ok(count),
            }
        }
    }
}

/// A complete backend: a [`Broker`] with its [`DeadLetterQueue`],
/// [`JobControl`] and [`QueueHistory`].
///
/// Implemented for every type that is both; use `Arc<dyn Backend>` to hold
/// any backend, and upcast it where one side is wanted
/// (`let broker: Arc<dyn Broker> = backend;`).
pub trait Backend: Broker + DeadLetterQueue + JobControl + QueueHistory {}

impl<T: Broker + DeadLetterQueue + JobControl + QueueHistory> Backend for T {}

/// Checks a DLQ page size against [`MAX_DEAD_PAGE`].
pub(crate) fn check_page_limit(limit: usize) -> Result<()> {
    if limit == 0 || limit > MAX_DEAD_PAGE {
        return Err(Error::InvalidConfig(format!(
            "page size {limit} must be between 1 and {MAX_DEAD_PAGE}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn _object_safe(_: Box<dyn Broker>, _: Box<dyn DeadLetterQueue>, _: Arc<dyn Backend>) {}

    fn _upcasts(backend: Arc<dyn Backend>) -> (Arc<dyn Broker>, Arc<dyn DeadLetterQueue>, Arc<dyn JobControl>) {
        (backend.clone(), backend.clone(), backend)
    }
}
