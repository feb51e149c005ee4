//! [`MemoryBroker`]: the in-process default backend.

mod control;
mod lanes;

use std::{
    collections::{hash_map::Entry, BTreeMap, BTreeSet, HashMap, VecDeque},
    fmt,
    ops::Bound,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard, RwLock,
    },
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::Notify;

mod held;
mod history;

use self::lanes::Lanes;
use held::{Held, Kinds};
use history::{Counted, QueueHistoryState};

use super::{
    check_page_limit, history::HistoryLayout, Broker, DeadCursor, DeadFilter, DeadLetterQueue, DeadPage,
    EnqueueOutcome, Lease, LeaseStatus, LeaseToken, QueueHistory, QueueStats, Reservation, ReserveRequest,
};
use crate::{
    clock::{Clock, TokioClock},
    envelope::{to_chrono, AttemptRecord, JobEnvelope},
    error::{Error, Result},
    job::{IdMap, JobId, QueueName},
};

/// An in-process broker with the full semantics of a shared one: leases
/// with fencing tokens, delayed jobs, idempotency keys, the dead-letter
/// queue, statistics.
///
/// It keeps everything in memory: **jobs are lost when the process exits.**
/// Use it for tests, development, and work that may be dropped on restart;
/// use the Redis broker (feature `redis`) for anything that must survive.
///
/// Each queue has its own lock, never held across an `.await`; idle workers
/// sleep until a job is enqueued or a delayed job falls due, without
/// polling.
///
/// ```
/// use flagship_worker::MemoryBroker;
/// let broker = MemoryBroker::new();
/// # let _ = broker;
/// ```
pub struct MemoryBroker {
    /// Queues by name, created on first use. Read on every call, written
    /// once per queue.
    queues: RwLock<HashMap<QueueName, Arc<Queue>>>,
    /// Where time comes from (tokio's clock by default, so paused-clock
    /// tests work).
    clock: Arc<dyn Clock>,
    /// Source of fencing tokens; unique for the broker's life.
    next_token: AtomicU64,
    /// How long a completed job's idempotency key is kept.
    key_retention: chrono::TimeDelta,
    /// Registered workers by id: what each said, when it was last seen and
    /// when it counts as gone.
    workers: Mutex<BTreeMap<String, control::Registered>>,
    /// The queue history's buckets.
    history_layout: HistoryLayout,
}

impl fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBroker")
            .field("queues", &self.read_queues().len())
            .field("clock", &self.clock)
            .field("key_retention", &self.key_retention)
            .finish()
    }
}

/// The most idle reservers one call wakes, one per job made ready; each
/// woken reserver passes the wake-up on while jobs are left.
const MAX_WAKE: usize = 64;

/// One queue: its state behind a lock, and the wake-up for idle reservers.
#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    /// Idle reservers wait here. `notify_one` per job made ready;
    /// `notify_waiters` when a job is scheduled earlier than every other,
    /// so each waiter recomputes how long to sleep.
    notify: Notify,
    /// Whether a job was ever stored here: [`Broker::queues`] lists only
    /// those, not queues that were merely asked about.
    has_had_jobs: AtomicBool,
    /// Whether an operator paused the queue: `reserve` leases nothing.
    paused: AtomicBool,
}

/// Where [`QueueState::schedule`] put a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placed {
    /// In ready: wake one idle reserver.
    Ready,
    /// Scheduled; `earliest` when no other job is due sooner, so idle
    /// reservers must shorten their sleep.
    Scheduled { earliest: bool },
}

#[derive(Default)]
struct QueueState {
    /// Every job the queue holds (not yet completed), by id.
    jobs: IdMap<Stored>,
    /// Ready jobs, one lane per priority, each in the order of its jobs'
    /// `run_at` (oldest first). Due scheduled jobs are promoted before any
    /// job is added at the back, so the order holds on a clock that does
    /// not go backwards, and each lane's front is its oldest ready job.
    ready: Lanes,
    /// Delayed and backing-off jobs by due time.
    scheduled: BTreeSet<(DateTime<Utc>, JobId)>,
    /// Leased jobs and their leases. Unordered: it holds only jobs in
    /// flight, so recovery scans it, and reserving or completing a job
    /// costs one hash insert or remove. Kept out of [`Stored`], so that a
    /// waiting job does not carry room for a lease.
    active: IdMap<Leased>,
    /// The job kinds of the queue's waiting jobs, each stored once.
    kinds: Kinds,
    /// Dead jobs by dead-lettered time.
    dead: BTreeSet<(DateTime<Utc>, JobId)>,
    /// Idempotency keys held, with their job.
    keys: HashMap<String, JobId>,
    /// Keys of completed jobs and when they are released.
    completed_keys: VecDeque<(DateTime<Utc>, String)>,
    completed: u64,
    retried: u64,
    dead_lettered: u64,
    /// Per-minute and per-hour counts and samples.
    history: QueueHistoryState,
}

/// A job the queue holds: 24 bytes besides its id, the envelope behind
/// one pointer (see [`Held`]).
struct Stored {
    held: Held,
    state: JobState,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum JobState {
    Ready,
    Scheduled,
    /// Leased: its lease is in [`QueueState::active`].
    Active,
    Dead,
}

/// A lease on a job in flight.
#[derive(Clone)]
struct Leased {
    token: LeaseToken,
    /// The worker the reservation named.
    owner: Option<Arc<str>>,
    /// An operator asked to cancel the job.
    cancel_requested: bool,
    deadline: DateTime<Utc>,
    /// When this attempt started.
    started: DateTime<Utc>,
}

impl Default for MemoryBroker {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBroker {
    /// A broker on tokio's clock with the default key retention (24 h).
    pub fn new() -> Self {
        Self::with_clock(Arc::new(TokioClock::new()))
    }

    /// A broker reading time from `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        MemoryBroker {
            queues: RwLock::new(HashMap::new()),
            clock,
            next_token: AtomicU64::new(1),
            key_retention: chrono::TimeDelta::from_std(super::DEFAULT_KEY_RETENTION).unwrap_or(chrono::TimeDelta::MAX),
            workers: Mutex::new(BTreeMap::new()),
            history_layout: HistoryLayout::default(),
        }
    }

    /// Sets the queue history's buckets (minutes for a day and hours for
    /// 30 days by default).
    pub fn with_history_layout(mut self, layout: HistoryLayout) -> Self {
        self.history_layout = layout;
        self
    }

    /// Sets how long completed jobs' idempotency keys are remembered.
    pub fn with_key_retention(mut self, retention: Duration) -> Result<Self> {
        self.key_retention = to_chrono(retention)?;
        Ok(self)
    }

    fn read_queues(&self) -> std::sync::RwLockReadGuard<'_, HashMap<QueueName, Arc<Queue>>> {
        self.queues.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The queue, created if needed (for enqueue and reserve).
    fn queue_or_create(&self, queue: &QueueName) -> Arc<Queue> {
        if let Some(q) = self.existing(queue) {
            return q;
        }
        let mut queues = self.queues.write().unwrap_or_else(|p| p.into_inner());
        queues.entry(queue.clone()).or_default().clone()
    }

    /// The queue if it was ever used; the read-only and
    /// acknowledging calls never create one, so asking about arbitrary
    /// names does not grow the broker.
    fn existing(&self, queue: &QueueName) -> Option<Arc<Queue>> {
        self.read_queues().get(queue).cloned()
    }

    fn token(&self) -> LeaseToken {
        LeaseToken(self.next_token.fetch_add(1, Ordering::Relaxed))
    }

    fn lease_deadline(&self, now: DateTime<Utc>, lease: Duration) -> Result<DateTime<Utc>> {
        crate::envelope::after(now, lease)
    }

    /// Runs a leased job again once `delay` has passed: as a retry that
    /// records `failed` (counting an attempt), or snoozed when `None`.
    fn reschedule(&self, lease: &Lease, delay: Duration, failed: Option<AttemptRecord>) -> Result<()> {
        let now = self.clock.now();
        let at = crate::envelope::after(now, delay)?;
        let q = self.existing(&lease.queue).ok_or(Error::LeaseLost(lease.id))?;
        let placed = {
            let mut state = q.lock();
            if state.take_active(lease).is_none() {
                return Err(Error::LeaseLost(lease.id));
            }
            // Due jobs first, keeping ready in `run_at` order.
            state.promote_due(now);
            let retried = failed.is_some();
            if let Some(job) = state.jobs.get_mut(&lease.id) {
                job.held.update(lease.id, &lease.queue, |envelope| {
                    if let Some(record) = failed {
                        envelope.attempt += 1;
                        envelope.attempts.push(record);
                    }
                    envelope.run_at = at;
                });
            }
            if retried {
                state.retried += 1;
                state.history.count(&self.history_layout, now, Counted::Retried, 1);
            }
            state.schedule(lease.id, at, now)
        };
        match placed {
            Some(Placed::Ready) => q.wake(1, false),
            Some(Placed::Scheduled { earliest }) => q.wake(0, earliest),
            None => {}
        }
        Ok(())
    }
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // A panic while holding the lock cannot leave the state half-changed
        // in a way later calls depend on, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes idle reservers after `ready` jobs became ready and, if
    /// `earlier_due`, a job was scheduled sooner than any other. Call after
    /// releasing the lock.
    fn wake(&self, ready: usize, earlier_due: bool) {
        if earlier_due {
            self.notify.notify_waiters();
        }
        for _ in 0..ready.min(MAX_WAKE) {
            self.notify.notify_one();
        }
    }
}

impl QueueState {
    /// Moves due scheduled jobs to ready; returns the next due time left.
    fn promote_due(&mut self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        while let Some(&(due, id)) = self.scheduled.first() {
            if due > now {
                return Some(due);
            }
            self.scheduled.pop_first();
            if let Some(job) = self.jobs.get_mut(&id) {
                job.state = JobState::Ready;
                self.ready.push_back(id, job.held.priority());
            }
        }
        None
    }

    fn release_expired_keys(&mut self, now: DateTime<Utc>) {
        while let Some((until, _)) = self.completed_keys.front() {
            if *until > now {
                break;
            }
            if let Some((_, key)) = self.completed_keys.pop_front() {
                // Only release the key if no newer job took it meanwhile.
                if let Some(id) = self.keys.get(&key) {
                    if !self.jobs.contains_key(id) {
                        self.keys.remove(&key);
                    }
                }
            }
        }
    }

    /// Leases a stored job under `token` until `deadline`; returns the
    /// reservation and the job's lease before, if it had one.
    fn lease(
        &mut self,
        id: JobId,
        queue: &QueueName,
        token: LeaseToken,
        deadline: DateTime<Utc>,
        now: DateTime<Utc>,
        owner: Option<&Arc<str>>,
    ) -> Option<(Reservation, Option<Leased>)> {
        let job = self.jobs.get_mut(&id)?;
        job.state = JobState::Active;
        let envelope = job.held.shared(id, queue);
        // A recovered job keeps an operator's cancel request.
        let cancel_requested = self.active.get(&id).is_some_and(|leased| leased.cancel_requested);
        let previous = self.active.insert(
            id,
            Leased {
                owner: owner.cloned(),
                cancel_requested,
                token,
                deadline,
                started: now,
            },
        );
        let lease = Lease {
            id,
            queue: queue.clone(),
            token,
        };
        let reservation = Reservation {
            envelope,
            lease,
            deadline,
            expired_attempt_started_at: None,
            cancel_requested,
        };
        Some((reservation, previous))
    }

    /// The job's lease, if `lease` is its current one.
    fn leased(&mut self, lease: &Lease) -> Option<&mut Leased> {
        self.active.get_mut(&lease.id).filter(|held| held.token == lease.token)
    }

    /// Ends the job's lease if `lease` is its current one; the job stays.
    fn take_active(&mut self, lease: &Lease) -> Option<Leased> {
        match self.active.entry(lease.id) {
            Entry::Occupied(held) if held.get().token == lease.token => Some(held.remove()),
            _ => None,
        }
    }

    /// Removes a job held under `lease` for good (it completed); `None`
    /// when the lease is not current.
    fn remove_active(&mut self, lease: &Lease) -> Option<Stored> {
        self.take_active(lease)?;
        self.jobs.remove(&lease.id)
    }

    /// Puts a stored job in ready, or in scheduled until `run_at`.
    fn schedule(&mut self, id: JobId, run_at: DateTime<Utc>, now: DateTime<Utc>) -> Option<Placed> {
        let job = self.jobs.get_mut(&id)?;
        if run_at <= now {
            job.state = JobState::Ready;
            self.ready.push_back(id, job.held.priority());
            Some(Placed::Ready)
        } else {
            job.state = JobState::Scheduled;
            self.scheduled.insert((run_at, id));
            let earliest = self.scheduled.first() == Some(&(run_at, id));
            Some(Placed::Scheduled { earliest })
        }
    }

    /// Removes a dead job for good, releasing its idempotency key; `false`
    /// if the job is not dead.
    fn remove_dead(&mut self, id: JobId) -> bool {
        if self.jobs.get(&id).is_none_or(|job| job.state != JobState::Dead) {
            return false;
        }
        let Some(stored) = self.jobs.remove(&id) else {
            return false;
        };
        if let Some(at) = stored.held.dead_lettered_at() {
            self.dead.remove(&(at, id));
        }
        if let Some(key) = stored.held.idempotency_key() {
            self.keys.remove(key);
        }
        true
    }

    fn retry_dead(&mut self, queue: &QueueName, id: JobId, now: DateTime<Utc>) -> bool {
        let Some(job) = self.jobs.get_mut(&id) else {
            return false;
        };
        if job.state != JobState::Dead {
            return false;
        }
        let mut dead_at = None;
        job.held.update(id, queue, |envelope| {
            dead_at = envelope.dead_lettered_at.take();
            envelope.dead_letter_reason = None;
            envelope.attempt = 0;
            envelope.run_at = now;
        });
        let priority = job.held.priority();
        job.state = JobState::Ready;
        if let Some(at) = dead_at {
            self.dead.remove(&(at, id));
        }
        // Due jobs first, keeping ready in `run_at` order.
        self.promote_due(now);
        self.ready.push_back(id, priority);
        true
    }

    fn dead_ids(
        &self,
        filter: &DeadFilter,
        after: Option<(DateTime<Utc>, JobId)>,
    ) -> impl Iterator<Item = (DateTime<Utc>, JobId)> + '_ {
        let start = match after {
            Some(key) => Bound::Excluded(key),
            None => Bound::Unbounded,
        };
        let filter = filter.clone();
        self.dead
            .range((start, Bound::Unbounded))
            .filter(move |(_, id)| {
                self.jobs
                    .get(id)
                    .is_some_and(|j| j.held.inspect(*id, &filter.queue, |envelope| filter.matches(envelope)))
            })
            .copied()
    }
}

fn encode_cursor((at, id): (DateTime<Utc>, JobId)) -> DeadCursor {
    DeadCursor::new(format!("{}:{id}", at.timestamp_nanos_opt().unwrap_or_default()))
}

fn decode_cursor(cursor: &DeadCursor) -> Result<(DateTime<Utc>, JobId)> {
    let bad = || Error::InvalidConfig(format!("`{}` is not a DLQ cursor from this broker", cursor.as_str()));
    let (nanos, id) = cursor.as_str().split_once(':').ok_or_else(bad)?;
    let nanos: i64 = nanos.parse().map_err(|_| bad())?;
    Ok((DateTime::from_timestamp_nanos(nanos), id.parse().map_err(|_| bad())?))
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn enqueue(&self, jobs: Vec<JobEnvelope>) -> Result<Vec<EnqueueOutcome>> {
        let now = self.clock.now();
        let mut outcomes = Vec::with_capacity(jobs.len());
        // Group runs of the same queue under one lock.
        let mut iter = jobs.into_iter().peekable();
        while let Some(first) = iter.next() {
            let q = self.queue_or_create(&first.queue);
            let (mut ready, mut earlier_due) = (0usize, false);
            {
                let mut state = q.lock();
                state.release_expired_keys(now);
                // Due jobs first, keeping ready in `run_at` order.
                state.promote_due(now);
                let mut next = Some(first);
                while let Some(mut job) = next.take() {
                    if let Some(key) = &job.idempotency_key {
                        match state.keys.entry(key.clone()) {
                            Entry::Occupied(holder) => {
                                outcomes.push(EnqueueOutcome::Duplicate(*holder.get()));
                                next = iter.next_if(|j| j.queue == job.queue);
                                continue;
                            }
                            Entry::Vacant(vacant) => {
                                vacant.insert(job.id);
                            }
                        }
                    }
                    // Measure the delay on this broker's clock.
                    let delay = (job.run_at - job.enqueued_at).max(chrono::TimeDelta::zero());
                    job.enqueued_at = now;
                    job.run_at = now + delay;
                    let id = job.id;
                    let run_at = job.run_at;
                    let queue = job.queue.clone();
                    let held = Held::waiting(job, &mut state.kinds);
                    state.jobs.insert(
                        id,
                        Stored {
                            held,
                            state: JobState::Scheduled,
                        },
                    );
                    match state.schedule(id, run_at, now) {
                        Some(Placed::Ready) => ready += 1,
                        Some(Placed::Scheduled { earliest }) => earlier_due |= earliest,
                        None => {}
                    }
                    q.has_had_jobs.store(true, Ordering::Relaxed);
                    tracing::debug!(job.id = %id, queue = %queue, "job enqueued");
                    outcomes.push(EnqueueOutcome::Enqueued(id));
                    next = iter.next_if(|j| j.queue == queue);
                }
            }
            q.wake(ready, earlier_due);
        }
        Ok(outcomes)
    }

    /// Jobs are taken without an `.await` in between, so a dropped call
    /// leases nothing.
    fn reserve_is_cancel_safe(&self) -> bool {
        true
    }

    fn control(&self) -> Option<&dyn super::JobControl> {
        Some(self)
    }

    fn queue_history(&self) -> Option<&dyn QueueHistory> {
        Some(self)
    }

    async fn reserve(&self, queue: &QueueName, request: ReserveRequest) -> Result<Vec<Reservation>> {
        if request.max == 0 {
            return Err(Error::InvalidConfig("reserve needs max of at least 1".into()));
        }
        let q = self.queue_or_create(queue);
        // `None`: a wait too long to represent, i.e. wait for work forever.
        let give_up = tokio::time::Instant::now().checked_add(request.wait);
        loop {
            // Registered before looking at the queue, so a job enqueued
            // between the look and the sleep still wakes this call.
            let notified = q.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = self.clock.now();
            let deadline = self.lease_deadline(now, request.lease)?;
            let next_due = {
                let mut state = q.lock();
                let next_due = state.promote_due(now);
                // Paused: lease nothing; `resume` wakes every waiter.
                let ready = if q.paused.load(Ordering::Acquire) {
                    0
                } else {
                    state.ready.len()
                };
                let take = request.max.min(ready);
                if take > 0 {
                    let mut out = Vec::with_capacity(take);
                    for _ in 0..take {
                        let Some(id) = state.ready.pop_front() else { break };
                        let owner = request.worker.as_ref();
                        if let Some((reservation, _)) = state.lease(id, queue, self.token(), deadline, now, owner) {
                            out.push(reservation);
                        }
                    }
                    let more_ready = !state.ready.is_empty();
                    drop(state);
                    if more_ready {
                        // Pass the baton: another idle reserver can take the rest.
                        q.notify.notify_one();
                    }
                    return Ok(out);
                }
                next_due
            };
            let left = give_up.map_or(Duration::MAX, |at| {
                at.saturating_duration_since(tokio::time::Instant::now())
            });
            if left.is_zero() {
                return Ok(Vec::new());
            }
            let until_due = next_due
                .map(|due| (due - now).to_std().unwrap_or(Duration::ZERO))
                .unwrap_or(Duration::MAX);
            // Woken by a new job, an earlier due time, or the timer.
            let _ = tokio::time::timeout(left.min(until_due), notified).await;
        }
    }

    async fn complete(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>> {
        let now = self.clock.now();
        let mut statuses = Vec::with_capacity(leases.len());
        // Completed envelopes are freed after the lock is released, so the
        // allocator's work does not lengthen the queue's critical section.
        let mut finished = Vec::with_capacity(leases.len());
        for group in leases.chunk_by(|a, b| a.queue == b.queue) {
            let Some(q) = self.existing(&group[0].queue) else {
                statuses.extend(group.iter().map(|_| LeaseStatus::Lost));
                continue;
            };
            let mut state = q.lock();
            let before = state.completed;
            for lease in group {
                let Some(stored) = state.remove_active(lease) else {
                    statuses.push(LeaseStatus::Lost);
                    continue;
                };
                state.completed += 1;
                if let Some(key) = stored.held.idempotency_key() {
                    let until = now + self.key_retention;
                    state.completed_keys.push_back((until, key.to_owned()));
                }
                finished.push(stored);
                statuses.push(LeaseStatus::Held);
            }
            let done = state.completed - before;
            if done > 0 {
                state.history.count(&self.history_layout, now, Counted::Completed, done);
            }
            state.release_expired_keys(now);
        }
        drop(finished);
        Ok(statuses)
    }

    async fn retry_after(&self, job: &Reservation, delay: Duration, attempt: AttemptRecord) -> Result<()> {
        self.reschedule(&job.lease, delay, Some(attempt))
    }

    async fn snooze(&self, job: &Reservation, delay: Duration) -> Result<()> {
        self.reschedule(&job.lease, delay, None)
    }

    async fn dead_letter(&self, job: &Reservation, attempt: Option<AttemptRecord>, reason: &str) -> Result<()> {
        let lease = &job.lease;
        let now = self.clock.now();
        let q = self.existing(&lease.queue).ok_or(Error::LeaseLost(lease.id))?;
        let mut state = q.lock();
        if state.take_active(lease).is_none() {
            return Err(Error::LeaseLost(lease.id));
        }
        if let Some(job) = state.jobs.get_mut(&lease.id) {
            job.held.update(lease.id, &lease.queue, |envelope| {
                envelope.attempts.extend(attempt);
                envelope.dead_lettered_at = Some(now);
                envelope.dead_letter_reason = Some(crate::envelope::truncate_error(reason.to_owned()));
            });
            job.state = JobState::Dead;
        }
        state.dead.insert((now, lease.id));
        state.dead_lettered += 1;
        state.history.count(&self.history_layout, now, Counted::DeadLettered, 1);
        Ok(())
    }

    async fn release(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>> {
        let mut statuses = Vec::with_capacity(leases.len());
        for group in leases.chunk_by(|a, b| a.queue == b.queue) {
            let Some(q) = self.existing(&group[0].queue) else {
                statuses.extend(group.iter().map(|_| LeaseStatus::Lost));
                continue;
            };
            let mut released = 0;
            {
                let mut state = q.lock();
                // Released jobs go back where their `run_at` puts them (the
                // front, unless another worker released an older job
                // first), keeping ready in `run_at` order.
                for lease in group.iter().rev() {
                    if state.take_active(lease).is_none() {
                        statuses.push(LeaseStatus::Lost);
                        continue;
                    }
                    let state = &mut *state;
                    if let Some(job) = state.jobs.get_mut(&lease.id) {
                        job.state = JobState::Ready;
                        let (run_at, priority) = (job.held.run_at(), job.held.priority());
                        let jobs = &state.jobs;
                        state.ready.insert_by(lease.id, priority, |id| {
                            jobs.get(id).is_some_and(|j| j.held.run_at() < run_at)
                        });
                    }
                    statuses.push(LeaseStatus::Held);
                    released += 1;
                }
            }
            let start = statuses.len() - group.len();
            statuses[start..].reverse();
            q.wake(released, false);
        }
        Ok(statuses)
    }

    async fn extend(&self, leases: &[Lease], lease: Duration) -> Result<Vec<LeaseStatus>> {
        let now = self.clock.now();
        let new_deadline = self.lease_deadline(now, lease)?;
        let mut statuses = Vec::with_capacity(leases.len());
        for group in leases.chunk_by(|a, b| a.queue == b.queue) {
            let Some(q) = self.existing(&group[0].queue) else {
                statuses.extend(group.iter().map(|_| LeaseStatus::Lost));
                continue;
            };
            let mut state = q.lock();
            for held in group {
                let Some(leased) = state.leased(held) else {
                    statuses.push(LeaseStatus::Lost);
                    continue;
                };
                leased.deadline = new_deadline;
                statuses.push(if leased.cancel_requested {
                    LeaseStatus::Cancelled
                } else {
                    LeaseStatus::Held
                });
            }
        }
        Ok(statuses)
    }

    async fn recover_expired(&self, queue: &QueueName, max: usize, lease: Duration) -> Result<Vec<Reservation>> {
        let now = self.clock.now();
        let deadline = self.lease_deadline(now, lease)?;
        let Some(q) = self.existing(queue) else {
            return Ok(Vec::new());
        };
        let mut state = q.lock();
        let state = &mut *state;
        // The active set holds only jobs in flight: scan it, oldest deadline first.
        let mut expired: Vec<(DateTime<Utc>, JobId)> = state
            .active
            .iter()
            .filter(|(_, leased)| leased.deadline <= now)
            .map(|(id, leased)| (leased.deadline, *id))
            .collect();
        expired.sort_unstable();
        expired.truncate(max);
        let mut out = Vec::with_capacity(expired.len());
        for (_, id) in expired {
            let Some((mut reservation, previous)) = state.lease(id, queue, self.token(), deadline, now, None) else {
                continue;
            };
            if let Some(previous) = previous {
                reservation.expired_attempt_started_at = Some(previous.started);
            }
            tracing::warn!(job.id = %id, queue = %queue, "lease expired; job recovered");
            out.push(reservation);
        }
        Ok(out)
    }

    async fn stats(&self, queue: &QueueName) -> Result<QueueStats> {
        let now = self.clock.now();
        let Some(q) = self.existing(queue) else {
            return Ok(QueueStats::default());
        };
        let mut state = q.lock();
        // Idle reservers sleep until the first due time themselves; no
        // wake-up is needed for jobs promoted here.
        state.promote_due(now);
        // Each lane is in `run_at` order: the oldest is one of the fronts.
        let oldest_ready_age_ms = state
            .ready
            .fronts()
            .filter_map(|id| state.jobs.get(id))
            .map(|job| job.held.run_at())
            .min()
            .map(|run_at| (now - run_at).num_milliseconds().max(0) as u64);
        Ok(QueueStats {
            ready: state.ready.len() as u64,
            scheduled: state.scheduled.len() as u64,
            active: state.active.len() as u64,
            dead: state.dead.len() as u64,
            oldest_ready_age_ms,
            completed: state.completed,
            retried: state.retried,
            dead_lettered: state.dead_lettered,
            // Only this broker writes its storage: nothing is ever stored
            // without a state, or in a state without its job.
            dropped: 0,
            restored: 0,
            paused: q.paused.load(Ordering::Acquire),
        })
    }

    async fn queues(&self) -> Result<Vec<QueueName>> {
        let mut names: Vec<_> = self
            .read_queues()
            .iter()
            .filter(|(_, q)| q.has_had_jobs.load(Ordering::Relaxed))
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        Ok(names)
    }
}

#[async_trait]
impl DeadLetterQueue for MemoryBroker {
    async fn list_dead(&self, filter: &DeadFilter, cursor: Option<&DeadCursor>, limit: usize) -> Result<DeadPage> {
        check_page_limit(limit)?;
        let after = cursor.map(decode_cursor).transpose()?;
        let Some(q) = self.existing(&filter.queue) else {
            return Ok(DeadPage {
                jobs: Vec::new(),
                next: None,
            });
        };
        let state = q.lock();
        let keys: Vec<_> = state.dead_ids(filter, after).take(limit + 1).collect();
        let next = (keys.len() > limit).then(|| encode_cursor(keys[limit - 1]));
        let jobs = keys
            .iter()
            .take(limit)
            .filter_map(|(_, id)| Some(state.jobs.get(id)?.held.to_envelope(*id, &filter.queue)))
            .collect();
        Ok(DeadPage { jobs, next })
    }

    async fn get_dead(&self, queue: &QueueName, id: JobId) -> Result<Option<JobEnvelope>> {
        let Some(q) = self.existing(queue) else {
            return Ok(None);
        };
        let state = q.lock();
        Ok(state
            .jobs
            .get(&id)
            .filter(|j| j.state == JobState::Dead)
            .map(|j| j.held.to_envelope(id, queue)))
    }

    async fn retry_dead(&self, queue: &QueueName, id: JobId) -> Result<bool> {
        let now = self.clock.now();
        let Some(q) = self.existing(queue) else {
            return Ok(false);
        };
        let retried = q.lock().retry_dead(queue, id, now);
        if retried {
            tracing::info!(job.id = %id, queue = %queue, "dead job retried");
            q.wake(1, false);
        }
        Ok(retried)
    }

    async fn retry_dead_matching(&self, filter: &DeadFilter) -> Result<u64> {
        let now = self.clock.now();
        let Some(q) = self.existing(&filter.queue) else {
            return Ok(0);
        };
        let count = {
            let mut state = q.lock();
            let ids: Vec<_> = state.dead_ids(filter, None).map(|(_, id)| id).collect();
            ids.into_iter()
                .filter(|id| state.retry_dead(&filter.queue, *id, now))
                .count()
        };
        q.wake(count, false);
        tracing::info!(queue = %filter.queue, count, "dead jobs retried");
        Ok(count as u64)
    }

    async fn delete_dead(&self, queue: &QueueName, id: JobId) -> Result<bool> {
        let Some(q) = self.existing(queue) else {
            return Ok(false);
        };
        let deleted = q.lock().remove_dead(id);
        Ok(deleted)
    }

    async fn purge_dead(&self, queue: &QueueName, older_than: DateTime<Utc>) -> Result<u64> {
        let Some(q) = self.existing(queue) else {
            return Ok(0);
        };
        let mut state = q.lock();
        let ids: Vec<_> = state
            .dead
            .iter()
            .take_while(|(at, _)| *at < older_than)
            .map(|(_, id)| *id)
            .collect();
        let purged = ids.into_iter().filter(|id| state.remove_dead(*id)).count();
        Ok(purged as u64)
    }

    async fn count_dead(&self, filter: &DeadFilter) -> Result<u64> {
        let Some(q) = self.existing(&filter.queue) else {
            return Ok(0);
        };
        let state = q.lock();
        Ok(state.dead_ids(filter, None).count() as u64)
    }
}
