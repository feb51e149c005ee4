//! Operators' control of live jobs: list ready, scheduled and active jobs,
//! pause and resume queues, cancel jobs, and see the running workers.
//!
//! [`JobControl`] is the third side of a [`Backend`](super::Backend), next to
//! [`Broker`](super::Broker) (the workers' side) and
//! [`DeadLetterQueue`](super::DeadLetterQueue) (jobs that gave up).

use std::{fmt, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    envelope::JobEnvelope,
    error::{Error, Result},
    job::{JobId, QueueName},
};

/// The dead-letter reason of a job cancelled by an operator.
pub const CANCEL_REASON: &str = "cancelled by operator";

/// The largest page [`JobControl::list_jobs`] hands out.
pub const MAX_JOB_PAGE: usize = 1_000;

/// How long a backend keeps listing a worker that stopped heartbeating
/// (as [gone](WorkerEntry::gone)) before it MAY forget it.
pub const GONE_WORKER_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// Where a live job (one not dead) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Due: waiting for a worker to reserve it.
    Ready,
    /// Waiting for its run time (delayed, backing off or snoozed).
    Scheduled,
    /// Leased by a worker, running.
    Active,
}

impl JobState {
    /// Every state, in lifecycle order.
    pub const ALL: [JobState; 3] = [JobState::Ready, JobState::Scheduled, JobState::Active];

    /// The state's name: `ready`, `scheduled` or `active`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Ready => "ready",
            JobState::Scheduled => "scheduled",
            JobState::Active => "active",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for JobState {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| {
                Error::InvalidConfig(format!(
                    "`{}` is not a job state; use ready, scheduled or active",
                    s.escape_debug()
                ))
            })
    }
}

/// Which live jobs a listing shows: one queue, one state, optionally one
/// kind and a `run_at` range.
///
/// ```
/// use flagship_worker::{broker::{JobQuery, JobState}, QueueName};
///
/// let query = JobQuery::new(QueueName::new("emails")?, JobState::Ready).kind("send-welcome");
/// # let _ = query;
/// # Ok::<_, flagship_worker::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobQuery {
    /// The queue.
    pub queue: QueueName,
    /// The state.
    pub state: JobState,
    /// Only jobs of this kind.
    pub kind: Option<String>,
    /// Only jobs whose `run_at` is at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only jobs whose `run_at` is before this time.
    pub until: Option<DateTime<Utc>>,
}

impl JobQuery {
    /// Every job of `queue` in `state`.
    pub fn new(queue: QueueName, state: JobState) -> Self {
        JobQuery {
            queue,
            state,
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

    /// Only jobs whose `run_at` lies in `[since, until)`.
    pub fn between(mut self, since: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>) -> Self {
        self.since = since;
        self.until = until;
        self
    }

    /// Whether an envelope in the query's queue and state matches the kind
    /// and time filters.
    pub fn matches(&self, job: &JobEnvelope) -> bool {
        job.queue == self.queue
            && self.kind.as_deref().is_none_or(|k| k == job.kind)
            && self.since.is_none_or(|s| job.run_at >= s)
            && self.until.is_none_or(|u| job.run_at < u)
    }
}

/// The lease of an active job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ActiveLease {
    /// The worker holding the lease (its [`WorkerInfo::id`]), when the
    /// reservation named one.
    pub worker: Option<String>,
    /// When this attempt started (the job was reserved or recovered).
    pub started_at: DateTime<Utc>,
    /// When the lease expires unless extended.
    pub deadline: DateTime<Utc>,
}

impl ActiveLease {
    /// A lease held by `worker` since `started_at`, until `deadline`.
    pub fn new(worker: Option<String>, started_at: DateTime<Utc>, deadline: DateTime<Utc>) -> Self {
        ActiveLease {
            worker,
            started_at,
            deadline,
        }
    }
}

/// A live job as an operator sees it.
///
/// The attempt is the envelope's [`attempt`](JobEnvelope::attempt).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LiveJob {
    /// The job as stored.
    pub envelope: JobEnvelope,
    /// Where it is.
    pub state: JobState,
    /// For an active job: who holds it and until when.
    pub lease: Option<ActiveLease>,
    /// Whether an operator asked to cancel it while it was active
    /// ([`CancelOutcome::Signalled`]).
    pub cancel_requested: bool,
}

impl LiveJob {
    /// A ready or scheduled job.
    pub fn waiting(envelope: JobEnvelope, state: JobState) -> Self {
        LiveJob {
            envelope,
            state,
            lease: None,
            cancel_requested: false,
        }
    }

    /// An active job under `lease`.
    pub fn active(envelope: JobEnvelope, lease: ActiveLease, cancel_requested: bool) -> Self {
        LiveJob {
            envelope,
            state: JobState::Active,
            lease: Some(lease),
            cancel_requested,
        }
    }

    /// The key a listing orders by: `run_at`, then id.
    pub fn order_key(&self) -> (DateTime<Utc>, JobId) {
        (self.envelope.run_at, self.envelope.id)
    }
}

/// A position in a live-job listing: pass it back to get the next page.
///
/// Opaque text; backends make it with [`JobCursor::new`] (or
/// [`JobCursor::after`]), callers only pass it back.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobCursor(String);

impl JobCursor {
    /// A cursor holding a backend's position text.
    pub fn new(position: impl Into<String>) -> Self {
        JobCursor(position.into())
    }

    /// The cursor past the job ordered at `key` (`run_at`, id): the form
    /// every backend in this crate uses.
    pub fn after((run_at, id): (DateTime<Utc>, JobId)) -> Self {
        JobCursor(format!("{}:{id}", run_at.timestamp_nanos_opt().unwrap_or_default()))
    }

    /// The (`run_at`, id) a cursor made by [`JobCursor::after`] points past;
    /// [`Error::InvalidConfig`] for any other text.
    pub fn position(&self) -> Result<(DateTime<Utc>, JobId)> {
        let bad = || Error::InvalidConfig(format!("`{}` is not a job listing cursor", self.0.escape_debug()));
        let (nanos, id) = self.0.split_once(':').ok_or_else(bad)?;
        let nanos: i64 = nanos.parse().map_err(|_| bad())?;
        Ok((DateTime::from_timestamp_nanos(nanos), id.parse().map_err(|_| bad())?))
    }

    /// The position text, as the backend made it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One page of live jobs.
#[derive(Debug, Clone)]
pub struct JobPage {
    /// The jobs, oldest `run_at` first (then by id).
    pub jobs: Vec<LiveJob>,
    /// Where the next page starts; `None` on the page holding the last job.
    pub next: Option<JobCursor>,
}

impl JobPage {
    /// The page of `limit` jobs at most from `matching` (every job of the
    /// query, in any order) after `cursor`: sorts, skips and cuts. For
    /// backends that gather the whole state (the in-memory one, Redis).
    pub fn from_unsorted(mut matching: Vec<LiveJob>, cursor: Option<&JobCursor>, limit: usize) -> Result<Self> {
        check_job_page_limit(limit)?;
        let after = cursor.map(JobCursor::position).transpose()?;
        if let Some(after) = after {
            matching.retain(|job| job.order_key() > after);
        }
        matching.sort_by_key(LiveJob::order_key);
        let next = (matching.len() > limit).then(|| JobCursor::after(matching[limit - 1].order_key()));
        matching.truncate(limit);
        Ok(JobPage { jobs: matching, next })
    }
}

/// Checks a listing page size against [`MAX_JOB_PAGE`].
pub fn check_job_page_limit(limit: usize) -> Result<()> {
    if limit == 0 || limit > MAX_JOB_PAGE {
        return Err(Error::InvalidConfig(format!(
            "page size {limit} must be between 1 and {MAX_JOB_PAGE}"
        )));
    }
    Ok(())
}

/// What [`JobControl::cancel`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CancelOutcome {
    /// The job was ready or scheduled: it is now in the dead-letter queue
    /// with reason [`CANCEL_REASON`].
    DeadLettered,
    /// The job is active: its worker learns of the request at its next
    /// heartbeat and the job ends in the dead-letter queue as cancelled,
    /// unless its handler finishes successfully first.
    Signalled,
    /// No live job with that id is in the queue (it finished, is dead, or
    /// never existed).
    NotFound,
}

/// A running worker, as it registers itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WorkerInfo {
    /// The worker's id (unique per process run).
    pub id: String,
    /// The host it runs on.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// The queues it serves.
    pub queues: Vec<QueueName>,
    /// How many jobs it runs at once, over all its queues.
    pub concurrency: usize,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Jobs it holds right now.
    pub in_flight: u64,
}

impl WorkerInfo {
    /// A worker `id` on this host and process, serving `queues`.
    pub fn new(id: impl Into<String>, queues: Vec<QueueName>, concurrency: usize, started_at: DateTime<Utc>) -> Self {
        WorkerInfo {
            id: id.into(),
            host: hostname(),
            pid: std::process::id(),
            queues,
            concurrency,
            started_at,
            in_flight: 0,
        }
    }
}

/// This machine's host name, as well as the environment tells it
/// (`HOSTNAME`, `/etc/hostname`), or `unknown`.
fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// A registered worker as [`JobControl::workers`] lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WorkerEntry {
    /// What the worker said at its last heartbeat.
    pub info: WorkerInfo,
    /// When that heartbeat reached the broker (the broker's clock).
    pub last_seen: DateTime<Utc>,
    /// When the worker counts as gone unless it heartbeats again.
    pub expires_at: DateTime<Utc>,
    /// Whether `expires_at` has passed: the worker stopped heartbeating
    /// (it crashed, hung or lost the broker) without deregistering.
    pub gone: bool,
}

impl WorkerEntry {
    /// An entry seen at `last_seen`, live until `expires_at`, judged at `now`.
    pub fn new(info: WorkerInfo, last_seen: DateTime<Utc>, expires_at: DateTime<Utc>, now: DateTime<Utc>) -> Self {
        WorkerEntry {
            info,
            last_seen,
            expires_at,
            gone: expires_at <= now,
        }
    }
}

/// Operators' control of live jobs and queues.
///
/// # Contract
///
/// - [`list_jobs`](JobControl::list_jobs) MUST list exactly the jobs of the
///   query's queue in its state that match its filters, ordered by
///   `run_at`, then id, and page without skipping or repeating jobs that
///   stay in that state for the whole listing; `next` MUST be `None` on the
///   page holding the last job. A `limit` of 0 or above [`MAX_JOB_PAGE`]
///   MUST be refused with [`Error::InvalidConfig`], and so MUST a cursor the
///   backend did not hand out. A scheduled job that fell due MAY be listed
///   as scheduled until something promotes it. Active jobs MUST carry their
///   [`ActiveLease`]: the worker named in the reservation
///   ([`ReserveRequest::worker`](super::ReserveRequest::worker)), when the
///   attempt started and the current deadline.
/// - [`get_job`](JobControl::get_job) MUST return the live job with that
///   id in that queue, or `None` (dead jobs are the DLQ's).
/// - [`pause`](JobControl::pause) MUST be durable (it survives worker and,
///   for shared backends, broker restarts) until
///   [`resume`](JobControl::resume). While a queue is paused,
///   [`reserve`](super::Broker::reserve) on it MUST lease nothing (it MAY
///   wait up to its `wait` and return empty), whoever calls it;
///   [`enqueue`](super::Broker::enqueue), lease operations on jobs already
///   active and [`recover_expired`](super::Broker::recover_expired) MUST
///   keep working. [`QueueStats::paused`](super::QueueStats::paused) MUST
///   say whether the queue is paused. Resuming MUST wake idle reservers.
///   Both return whether they changed anything.
/// - [`cancel`](JobControl::cancel) of a ready or scheduled job MUST move it
///   to the dead-letter queue with reason [`CANCEL_REASON`], without
///   recording an attempt, atomically. Of an active job it MUST store the
///   request on the job and change nothing else: the next
///   [`extend`](super::Broker::extend) of the current lease MUST report
///   [`LeaseStatus::Cancelled`](super::LeaseStatus::Cancelled) (extending
///   the lease all the same), a
///   [`recover_expired`](super::Broker::recover_expired) reservation of it
///   MUST have [`Reservation::cancel_requested`](super::Reservation::cancel_requested)
///   set, and the worker decides the end. The request MUST be cleared when
///   the job leaves active (a retried dead job starts afresh).
/// - [`register_worker`](JobControl::register_worker) MUST store or
///   replace the worker's entry, stamped with the backend's time, live for
///   `ttl`; [`workers`](JobControl::workers) MUST list every registered
///   worker not deregistered, with those whose `ttl` passed marked
///   [gone](WorkerEntry::gone), ordered by id; it MAY forget gone workers
///   after [`GONE_WORKER_RETENTION`].
///   [`deregister_worker`](JobControl::deregister_worker) MUST remove the
///   entry and return whether there was one.
#[async_trait]
pub trait JobControl: Send + Sync + fmt::Debug + 'static {
    /// One page of live jobs matching `query`, after `cursor`.
    async fn list_jobs(&self, query: &JobQuery, cursor: Option<&JobCursor>, limit: usize) -> Result<JobPage>;

    /// One live job.
    async fn get_job(&self, queue: &QueueName, id: JobId) -> Result<Option<LiveJob>>;

    /// How many live jobs match `query`.
    ///
    /// Provided: pages through [`list_jobs`](JobControl::list_jobs).
    /// Backends SHOULD count without reading every job.
    async fn count_jobs(&self, query: &JobQuery) -> Result<u64> {
        let mut count = 0;
        let mut cursor = None;
        loop {
            let page = self.list_jobs(query, cursor.as_ref(), MAX_JOB_PAGE).await?;
            count += page.jobs.len() as u64;
            match page.next {
                Some(next) => cursor = Some(next),
                None => return Ok(count),
            }
        }
    }

    /// Stops workers from reserving `queue`'s jobs until resumed. `false`
    /// when it was already paused.
    async fn pause(&self, queue: &QueueName) -> Result<bool>;

    /// Lets workers reserve `queue`'s jobs again. `false` when it was not
    /// paused.
    async fn resume(&self, queue: &QueueName) -> Result<bool>;

    /// Cancels a live job (see the contract).
    async fn cancel(&self, queue: &QueueName, id: JobId) -> Result<CancelOutcome>;

    /// Records a worker's heartbeat: it is live for `ttl` from now.
    async fn register_worker(&self, info: &WorkerInfo, ttl: Duration) -> Result<()>;

    /// Removes a worker's entry (it shut down). `false` if there was none.
    async fn deregister_worker(&self, id: &str) -> Result<bool>;

    /// Every registered worker, by id, the gone ones marked.
    async fn workers(&self) -> Result<Vec<WorkerEntry>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn _object_safe(_: Box<dyn JobControl>) {}

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let key = (DateTime::from_timestamp_nanos(1_700_000_000_123_456_789), JobId::new());
        assert_eq!(JobCursor::after(key).position().unwrap(), key);
        for bad in ["", "x", "1:nope", "a:0190b6a4-8f1e-7c3a-9d2b-5e6f7a8b9c0d"] {
            assert!(JobCursor::new(bad).position().is_err(), "{bad}");
        }
    }

    #[test]
    fn states_parse_from_their_names() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>().unwrap(), state);
        }
        assert!("dead".parse::<JobState>().is_err());
    }
}
