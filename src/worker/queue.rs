//! One queue's tasks inside a worker: a fetcher that leases jobs ahead, long-lived
//! slot tasks that run them, an acker that batches completions, a heartbeat
//! that extends leases, and a recovery loop for expired leases.

use std::{
    any::Any,
    future::{poll_fn, Future},
    panic::AssertUnwindSafe,
    pin::pin,
    sync::{atomic::Ordering, Arc, Mutex},
    task::Poll,
    time::Duration,
};

use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use tokio::{sync::watch, task::JoinSet};
use tracing::Instrument;

use super::{
    acks::AckQueue,
    buffer::{Buffer, Prefetch},
    FinishedJob, JobOutcome, QueueConfig, Shared,
};
use crate::{
    broker::{Lease, LeaseStatus, LeaseToken, Reservation, ReserveRequest},
    envelope::{AttemptRecord, JobEnvelope},
    error::Error,
    handler::{HandlerError, JobContext},
    job::{IdMap, JobId},
    retry::RetryPolicy,
};

/// The most finished jobs waiting for their acknowledgement.
const ACK_BACKLOG: usize = 4 * ACK_BATCH;
/// The most completions sent to the broker in one call.
const ACK_BATCH: usize = 512;
/// The most expired leases recovered in one call.
const RECOVER_BATCH: usize = 256;

pub(super) struct QueueRunner {
    shared: Arc<Shared>,
    config: QueueConfig,
    /// Leases this worker holds for the queue (all on `config.name`),
    /// extended by the heartbeat.
    in_flight: Mutex<IdMap<LeaseToken>>,
}

/// A succeeded job waiting for its batched acknowledgement.
struct Succeeded {
    lease: Lease,
    /// For the observers, once acknowledged (`None` when there are none).
    envelope: Option<Arc<JobEnvelope>>,
    /// How long the handler ran.
    duration: Duration,
}

/// How an attempt ended.
enum Outcome {
    Success,
    Failure {
        error: String,
        permanent: bool,
        retry_after: Option<Duration>,
    },
    /// Shutdown ran out of time: release the job without counting an attempt.
    Aborted,
}

impl Outcome {
    /// A failure no retry can fix: the job goes to the dead-letter queue.
    fn permanent(error: String) -> Self {
        Outcome::Failure {
            error,
            permanent: true,
            retry_after: None,
        }
    }
}

async fn stopped(rx: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which only happens after stopping.
    let _ = rx.wait_for(|stop| *stop).await;
}

impl QueueRunner {
    pub(super) fn new(shared: Arc<Shared>, config: QueueConfig) -> Arc<Self> {
        Arc::new(QueueRunner {
            shared,
            config,
            in_flight: Mutex::new(IdMap::default()),
        })
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, IdMap<LeaseToken>> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) async fn run(self: Arc<Self>, stop: watch::Receiver<bool>, abort: watch::Receiver<bool>) {
        let queue = self.config.name.clone();
        let prefetch = match self.config.prefetch {
            Some(fixed) => Prefetch::fixed(fixed),
            None => {
                let min = self.config.concurrency.max(super::DEFAULT_MIN_PREFETCH);
                let max = (min * super::PREFETCH_GROWTH).min(super::MAX_CONCURRENCY).max(min);
                Prefetch { min, max }
            }
        };
        // More slots than the runtime has threads cannot run at once.
        let threads = tokio::runtime::Handle::current().metrics().num_workers();
        let buffer = Arc::new(Buffer::new(prefetch, threads));
        let acks = Arc::new(AckQueue::new(ACK_BACKLOG));

        let acker = tokio::spawn(self.clone().acker(acks.clone()));
        let mut background = JoinSet::new();
        background.spawn(self.clone().heartbeat());
        background.spawn(self.clone().recovery(stop.clone()));

        let mut slots = JoinSet::new();
        slots.spawn(self.clone().fetcher(buffer.clone(), stop.clone()));
        for _ in 0..self.config.concurrency {
            slots.spawn(
                self.clone()
                    .slot(buffer.clone(), acks.clone(), stop.clone(), abort.clone()),
            );
        }
        while let Some(joined) = slots.join_next().await {
            if let Err(e) = joined {
                tracing::error!(%queue, error = %e, "worker slot failed");
            }
        }
        acks.close();
        // Jobs leased ahead but never started go back to ready.
        let left: Vec<_> = buffer.close().into_iter().map(|r| r.lease).collect();
        self.release(&left).await;
        if let Err(e) = acker.await {
            tracing::error!(%queue, error = %e, "acknowledgement task failed");
        }
        background.shutdown().await;
    }

    async fn release(&self, leases: &[Lease]) {
        if leases.is_empty() {
            return;
        }
        match self.shared.broker.release(leases).await {
            Ok(statuses) => {
                let released = statuses.iter().filter(|s| **s == LeaseStatus::Held).count();
                self.shared
                    .counters
                    .released
                    .fetch_add(released as u64, Ordering::Relaxed);
                tracing::info!(queue = %self.config.name, released, "unstarted jobs released");
            }
            Err(e) => {
                self.shared.counters.broker_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(queue = %self.config.name, error = %e, "could not release jobs; they return when their lease expires");
            }
        }
        self.forget(leases);
    }

    /// Leases jobs ahead of free slots, waiting server-side while idle.
    async fn fetcher(self: Arc<Self>, buffer: Arc<Buffer>, mut stop: watch::Receiver<bool>) {
        let queue = self.config.name.clone();
        let settings = &self.shared.settings;
        let mut backoff = Duration::from_millis(50);
        // Whether the last reservation filled the whole request: only slots
        // that starve between two full batches show that the buffer is too
        // small, not slots idle at start or while the queue was empty.
        let mut last_full = false;
        loop {
            let draining = tokio::time::Instant::now();
            let max = tokio::select! {
                biased;
                _ = stopped(&mut stop) => return,
                free = buffer.wait_for_space() => free,
            };
            let drain_time = draining.elapsed();
            if *stop.borrow() {
                return;
            }
            let request = ReserveRequest::new(max, settings.lease, settings.idle_wait);
            // A reserve call is abandoned on stop only where the broker says
            // that leases nothing; otherwise a lease taken by the dropped call
            // would only come back after it expired.
            let reserve = self.shared.broker.reserve(&queue, request);
            let result = if self.shared.broker.reserve_is_cancel_safe() {
                tokio::select! {
                    biased;
                    _ = stopped(&mut stop) => return,
                    result = reserve => result,
                }
            } else {
                reserve.await
            };
            let reserved = match result {
                Ok(reserved) => {
                    backoff = Duration::from_millis(50);
                    reserved
                }
                Err(e) => {
                    self.shared.counters.broker_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%queue, error = %e, retry_in = ?backoff, "reserve failed; retrying");
                    tokio::select! {
                        _ = stopped(&mut stop) => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            if reserved.is_empty() {
                last_full = false;
                continue;
            }
            {
                let mut in_flight = self.in_flight();
                for r in &reserved {
                    in_flight.insert(r.lease.id, r.lease.token);
                }
            }
            if *stop.borrow() {
                let leases: Vec<_> = reserved.into_iter().map(|r| r.lease).collect();
                self.release(&leases).await;
                return;
            }
            let full_batch = reserved.len() == max;
            buffer.push(reserved);
            buffer.adapt(full_batch && last_full, drain_time);
            last_full = full_batch;
        }
    }

    /// A long-lived task running one job at a time.
    async fn slot(
        self: Arc<Self>,
        buffer: Arc<Buffer>,
        acks: Arc<AckQueue<Succeeded>>,
        mut stop: watch::Receiver<bool>,
        abort: watch::Receiver<bool>,
    ) {
        // One context per slot, refilled per job: the shared parts (client,
        // worker id) are cloned once here rather than once per job.
        let mut ctx = JobContext {
            id: JobId::from(uuid::Uuid::nil()),
            kind: String::new(),
            queue: self.config.name.clone(),
            attempt: 0,
            enqueued_at: chrono::DateTime::UNIX_EPOCH,
            started_at: chrono::DateTime::UNIX_EPOCH,
            worker_id: self.shared.worker_id.clone(),
            client: self.shared.client.clone(),
        };
        loop {
            // Cooperate with tokio's budget: jobs can follow each other
            // without the slot ever waiting on a tokio resource.
            tokio::task::consume_budget().await;
            if *stop.borrow() {
                return;
            }
            let next = match buffer.try_pop() {
                Some(reservation) => Some(reservation),
                None => tokio::select! {
                    biased;
                    _ = stopped(&mut stop) => None,
                    next = buffer.pop() => next,
                },
            };
            let Some(reservation) = next else { return };
            self.process(reservation, &mut ctx, &buffer, &acks, abort.clone()).await;
        }
    }

    async fn process(
        &self,
        reservation: Reservation,
        ctx: &mut JobContext,
        buffer: &Buffer,
        acks: &AckQueue<Succeeded>,
        abort: watch::Receiver<bool>,
    ) {
        let span = tracing::info_span!(
            "job",
            job.id = %reservation.envelope.id,
            job.type = %reservation.envelope.kind,
            queue = %reservation.envelope.queue,
            attempt = reservation.envelope.attempt,
        );
        async move {
            let started_at = self.shared.clock.now();
            self.shared.counters.started.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("job started");
            tracing::trace!(payload = %reservation.envelope.payload, "job payload");
            let outcome = self
                .run_handler(&reservation.envelope, started_at, ctx, buffer, abort)
                .await;
            // Recording the outcome may wait on the broker (or on a full
            // acknowledgement queue): let another slot take the next job meanwhile.
            on_first_wait(self.settle(reservation, started_at, outcome, acks), || {
                buffer.hand_off()
            })
            .await;
        }
        .instrument(span)
        .await
    }

    /// Checks the job and runs its handler under the job timeout.
    async fn run_handler(
        &self,
        envelope: &JobEnvelope,
        started_at: DateTime<Utc>,
        ctx: &mut JobContext,
        buffer: &Buffer,
        mut abort: watch::Receiver<bool>,
    ) -> Outcome {
        let shared = &self.shared;
        let Some(registered) = shared.handlers.get(&envelope.kind) else {
            let error = format!(
                "unknown job kind `{}`: no handler is registered for it on queue `{}`",
                envelope.kind, envelope.queue
            );
            return Outcome::permanent(error);
        };
        // The size limit was checked at enqueue; a payload that is
        // already here costs nothing more to check against its schema.
        if let Err(e) = registered.schema.validate(&envelope.payload) {
            return Outcome::permanent(format!("payload refused: {e}"));
        }

        ctx.id = envelope.id;
        ctx.kind.clear();
        ctx.kind.push_str(&envelope.kind);
        if ctx.queue != envelope.queue {
            ctx.queue = envelope.queue.clone();
        }
        ctx.attempt = envelope.attempt;
        ctx.enqueued_at = envelope.enqueued_at;
        ctx.started_at = started_at;
        let ctx: &JobContext = ctx;
        // The call itself is inside the caught future: decoding the payload
        // runs in it, and so does any work a handler does before its first `.await`.
        let run = AssertUnwindSafe(async { registered.handler.call(&envelope.payload, ctx).await }).catch_unwind();
        let deadline = tokio::time::Instant::now() + self.config.job_timeout;
        let timed = attempt(run, deadline, || buffer.hand_off());
        tokio::select! {
            biased;
            result = timed => match result {
                Ok(Ok(Ok(()))) => Outcome::Success,
                Ok(Ok(Err(e))) => {
                    let (permanent, retry_after) = match &e {
                        HandlerError::Permanent(_) => (true, None),
                        HandlerError::RetryAfter(delay, _) => (false, Some(*delay)),
                        HandlerError::Retry(_) => (false, None),
                    };
                    Outcome::Failure { error: e.error().to_string(), permanent, retry_after }
                }
                Ok(Err(panic)) => {
                    shared.counters.panicked.fetch_add(1, Ordering::Relaxed);
                    Outcome::Failure {
                        error: format!("handler panicked: {}", panic_message(&*panic)),
                        permanent: false,
                        retry_after: None,
                    }
                }
                Err(TimedOut) => {
                    shared.counters.timed_out.fetch_add(1, Ordering::Relaxed);
                    Outcome::Failure {
                        error: format!("timed out after {:?}", self.config.job_timeout),
                        permanent: false,
                        retry_after: None,
                    }
                }
            },
            _ = stopped(&mut abort) => Outcome::Aborted,
        }
    }

    fn policy_for(&self, kind: &str) -> &RetryPolicy {
        self.shared.kind_policies.get(kind).unwrap_or(&self.config.retry)
    }

    /// Records how an attempt ended: acknowledge, retry, dead-letter or release.
    async fn settle(
        &self,
        reservation: Reservation,
        started_at: DateTime<Utc>,
        outcome: Outcome,
        acks: &AckQueue<Succeeded>,
    ) {
        match outcome {
            Outcome::Success => {
                tracing::debug!("job succeeded");
                // Only observers need the envelope and the duration (and a
                // second clock read).
                let observed = !self.shared.observers.is_empty();
                let succeeded = Succeeded {
                    lease: reservation.lease,
                    duration: if observed {
                        elapsed(started_at, self.shared.clock.now())
                    } else {
                        Duration::ZERO
                    },
                    envelope: observed.then_some(reservation.envelope),
                };
                // The acker normally outlives every slot; if it ended early,
                // the queue hands back what it held: acknowledge it here.
                if let Err(mut unacknowledged) = acks.push(succeeded).await {
                    self.complete(&mut unacknowledged, &mut Vec::new()).await;
                }
            }
            Outcome::Aborted => {
                tracing::warn!("shutdown deadline passed; job released unfinished");
                self.release(std::slice::from_ref(&reservation.lease)).await;
            }
            Outcome::Failure {
                error,
                permanent,
                retry_after,
            } => {
                self.fail(&reservation, started_at, error, permanent, retry_after).await;
            }
        }
    }

    /// Counts a failed attempt and lets the retry policy decide.
    async fn fail(
        &self,
        reservation: &Reservation,
        started_at: DateTime<Utc>,
        error: String,
        permanent: bool,
        retry_after: Option<Duration>,
    ) {
        let shared = &self.shared;
        let envelope = &reservation.envelope;
        let lease = &reservation.lease;
        let now = shared.clock.now();
        shared.counters.failed.fetch_add(1, Ordering::Relaxed);
        let record = AttemptRecord::failed(started_at, now, error.clone(), Some(shared.worker_id.to_string()));
        let policy = self.policy_for(&envelope.kind);
        let allowed = envelope.max_retries.unwrap_or(policy.max_retries);
        let retry = envelope.attempt + 1;
        let delay = if permanent {
            None
        } else {
            policy
                .delay_with(retry, allowed, rand::random::<f64>())
                .map(|d| retry_after.unwrap_or(d))
        };
        let (outcome, result) = match delay {
            Some(delay) => {
                tracing::warn!(%error, retry, of = allowed, delay = ?delay, "job failed; retry scheduled");
                let result = shared.broker.retry_after(reservation, delay, record).await;
                if result.is_ok() {
                    shared.counters.retried.fetch_add(1, Ordering::Relaxed);
                }
                (JobOutcome::Retried, result)
            }
            None => {
                let reason = if permanent {
                    error
                } else {
                    format!("retries exhausted after {} attempts: {error}", envelope.attempt + 1)
                };
                tracing::warn!(%reason, "job dead-lettered");
                let result = shared.broker.dead_letter(reservation, Some(record), &reason).await;
                if result.is_ok() {
                    shared.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
                }
                (JobOutcome::DeadLettered, result)
            }
        };
        if result.is_ok() {
            self.observe(envelope, outcome, elapsed(started_at, now));
        }
        self.after_ack(lease.id, result);
    }

    /// Tells the worker's observers that an attempt's outcome is recorded.
    fn observe(&self, envelope: &JobEnvelope, outcome: JobOutcome, duration: Duration) {
        if self.shared.observers.is_empty() {
            return;
        }
        let finished = FinishedJob {
            id: envelope.id,
            kind: &envelope.kind,
            queue: &envelope.queue,
            attempt: envelope.attempt,
            outcome,
            duration,
        };
        for observer in &self.shared.observers {
            let observed = std::panic::catch_unwind(AssertUnwindSafe(|| observer.on_job_finished(&finished)));
            if let Err(panic) = observed {
                tracing::error!(job.id = %finished.id, panic = %panic_message(&*panic), "a job observer panicked");
            }
        }
    }

    fn after_ack(&self, id: JobId, result: Result<(), Error>) {
        match result {
            Ok(()) => {}
            Err(Error::LeaseLost(_)) => {
                self.shared.counters.lease_lost.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(job.id = %id, "lease lost before the outcome was recorded; another worker owns the job now");
            }
            Err(Error::CorruptEnvelope { message, .. }) => {
                // The broker could not read the stored job and dead-lettered it itself.
                tracing::warn!(job.id = %id, %message, "stored job is corrupt; the broker dead-lettered it");
            }
            Err(e) => {
                self.shared.counters.broker_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(job.id = %id, error = %e, "could not record the job's outcome; it runs again after its lease expires");
            }
        }
        self.in_flight().remove(&id);
    }

    /// Batches completions into as few broker calls as possible.
    async fn acker(self: Arc<Self>, acks: Arc<AckQueue<Succeeded>>) {
        // However this task ends, slots must not wait on it.
        let _guard = acks.acker_guard();
        let mut batch = Vec::with_capacity(ACK_BATCH);
        let mut leases = Vec::with_capacity(ACK_BATCH);
        while acks.take(&mut batch, ACK_BATCH).await {
            let completing = AssertUnwindSafe(self.complete(&mut batch, &mut leases)).catch_unwind();
            if let Err(panic) = completing.await {
                // The broker's `complete` panicked: whether the batch was
                // recorded is unknown. Stop extending its leases, so the
                // jobs come back when they expire (at least once).
                tracing::error!(
                    queue = %self.config.name,
                    jobs = leases.len(),
                    panic = %panic_message(&*panic),
                    "completing jobs panicked; they run again after their lease expires"
                );
                // `complete` moved the whole batch into `leases` before
                // calling the broker.
                self.forget(&leases);
                leases.clear();
                batch.clear();
            }
        }
    }

    /// Completes `batch`, leaving it and `leases` empty (with their capacity).
    async fn complete(&self, batch: &mut Vec<Succeeded>, leases: &mut Vec<Lease>) {
        let shared = &self.shared;
        // Envelopes and durations, by position in `leases`, when observed.
        let mut observed = Vec::new();
        for succeeded in batch.drain(..) {
            if let Some(envelope) = succeeded.envelope {
                observed.push((leases.len(), envelope, succeeded.duration));
            }
            leases.push(succeeded.lease);
        }
        let mut delay = Duration::from_millis(50);
        for attempt in 1..=5 {
            match shared.broker.complete(leases).await {
                Ok(statuses) => {
                    self.forget(leases);
                    let mut completed = 0;
                    for (lease, status) in leases.iter().zip(&statuses) {
                        match status {
                            LeaseStatus::Held => {
                                completed += 1;
                                tracing::debug!(job.id = %lease.id, queue = %lease.queue, "job completed");
                            }
                            LeaseStatus::Lost => {
                                shared.counters.lease_lost.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(job.id = %lease.id, queue = %lease.queue, "completion refused: lease lost; another worker owns the job now");
                            }
                        }
                    }
                    shared.counters.completed.fetch_add(completed, Ordering::Relaxed);
                    for (at, envelope, duration) in &observed {
                        if statuses.get(*at) == Some(&LeaseStatus::Held) {
                            self.observe(envelope, JobOutcome::Completed, *duration);
                        }
                    }
                    leases.clear();
                    return;
                }
                Err(e) => {
                    shared.counters.broker_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, attempt, jobs = leases.len(), "completing jobs failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
        tracing::error!(
            jobs = leases.len(),
            "could not complete jobs; they run again after their lease expires"
        );
        self.forget(leases);
        leases.clear();
    }

    /// Stops heartbeating `leases`.
    fn forget(&self, leases: &[Lease]) {
        let mut in_flight = self.in_flight();
        for lease in leases {
            in_flight.remove(&lease.id);
        }
    }

    /// Extends the leases of jobs this worker holds; runs until the queue's
    /// runner aborts it, after the last job is settled.
    async fn heartbeat(self: Arc<Self>) {
        let settings = &self.shared.settings;
        let mut ticker = tokio::time::interval(settings.heartbeat);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let leases: Vec<Lease> = self
                .in_flight()
                .iter()
                .map(|(&id, &token)| Lease {
                    id,
                    queue: self.config.name.clone(),
                    token,
                })
                .collect();
            if leases.is_empty() {
                continue;
            }
            match self.shared.broker.extend(&leases, settings.lease).await {
                Ok(statuses) => {
                    for (lease, status) in leases.iter().zip(statuses) {
                        if status == LeaseStatus::Lost {
                            tracing::warn!(job.id = %lease.id, queue = %lease.queue, "lease lost while the job ran");
                        }
                    }
                }
                Err(e) => {
                    self.shared.counters.broker_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "extending leases failed");
                }
            }
        }
    }

    /// Takes jobs whose lease expired (their worker died or hung) and
    /// counts the lost attempt as a failure.
    async fn recovery(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let settings = &self.shared.settings;
        let mut ticker = tokio::time::interval(settings.recovery_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stopped(&mut stop) => return,
            }
            let recovered = match self
                .shared
                .broker
                .recover_expired(&self.config.name, RECOVER_BATCH, settings.lease)
                .await
            {
                Ok(recovered) => recovered,
                Err(e) => {
                    self.shared.counters.broker_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(queue = %self.config.name, error = %e, "recovering expired leases failed");
                    continue;
                }
            };
            for reservation in recovered {
                self.shared.counters.recovered.fetch_add(1, Ordering::Relaxed);
                let envelope = &reservation.envelope;
                let span = tracing::info_span!("job", job.id = %envelope.id, job.type = %envelope.kind, queue = %envelope.queue, attempt = envelope.attempt);
                let started = reservation
                    .expired_attempt_started_at
                    .unwrap_or_else(|| self.shared.clock.now());
                let error = "lease expired: the worker running the job died or stopped heartbeating".to_owned();
                self.fail(&reservation, started, error, false, None)
                    .instrument(span)
                    .await;
            }
        }
    }
}

/// The job's handler ran past its deadline.
struct TimedOut;

/// Runs a handler's future until `deadline`, calling `on_wait` the first
/// time it has to wait.
///
/// The timer is armed only then: a job that finishes in its first poll
/// costs no timer entry. A job whose first poll alone outlasts its timeout
/// still times out, at its first `.await` (a future can only be
/// interrupted there).
async fn attempt<F: Future>(
    run: F,
    deadline: tokio::time::Instant,
    on_wait: impl FnOnce(),
) -> Result<F::Output, TimedOut> {
    let mut run = pin!(run);
    let mut timer = pin!(None::<tokio::time::Sleep>);
    let mut on_wait = Some(on_wait);
    poll_fn(|cx| {
        if let Poll::Ready(output) = run.as_mut().poll(cx) {
            return Poll::Ready(Ok(output));
        }
        if let Some(on_wait) = on_wait.take() {
            on_wait();
            timer.set(Some(tokio::time::sleep_until(deadline)));
        }
        match timer.as_mut().as_pin_mut().map(|sleep| sleep.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Err(TimedOut)),
            _ => Poll::Pending,
        }
    })
    .await
}

/// Runs `future`, calling `on_wait` the first time it has to wait.
async fn on_first_wait<F: Future>(future: F, on_wait: impl FnOnce()) -> F::Output {
    let mut future = pin!(future);
    let mut on_wait = Some(on_wait);
    poll_fn(|cx| {
        let poll = future.as_mut().poll(cx);
        if poll.is_pending() {
            if let Some(on_wait) = on_wait.take() {
                on_wait();
            }
        }
        poll
    })
    .await
}

/// The time from `start` to `end`, zero if the clock went backwards.
fn elapsed(start: DateTime<Utc>, end: DateTime<Utc>) -> Duration {
    (end - start).to_std().unwrap_or_default()
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-text panic payload".to_owned()
    }
}
