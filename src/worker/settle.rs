//! Settling: records how each attempt ended. Successes are acknowledged
//! in batches by the acker; failures go through the retry policy's
//! [`decide`](crate::RetryPolicy::decide) to one broker call.

use std::{
    panic::AssertUnwindSafe,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use chrono::{DateTime, Utc};
use futures_util::FutureExt;

use super::{
    acks::AckQueue,
    held::Held,
    run::{panic_message, Ended},
    FinishedJob, JobOutcome, Shared,
};
use crate::{
    broker::{Lease, LeaseStatus, Reservation, CANCEL_REASON},
    envelope::{AttemptRecord, JobEnvelope},
    error::{Error, Result},
    handler::HandlerError,
    retry::{Decision, RetryPolicy},
};

/// The most finished jobs waiting for their acknowledgement.
pub(super) const ACK_BACKLOG: usize = 4 * ACK_BATCH;
/// The most completions sent to the broker in one call.
const ACK_BATCH: usize = 512;
/// How often a failed batch of completions is sent again before its jobs
/// are left to come back through lease expiry.
const COMPLETE_TRIES: u32 = 5;

/// A succeeded job waiting for its batched acknowledgement.
pub(super) struct Succeeded {
    lease: Lease,
    /// For the observers, once acknowledged (`None` when there are none).
    envelope: Option<Arc<JobEnvelope>>,
    /// How long the handler ran.
    duration: Duration,
}

/// Records one queue's outcomes.
pub(super) struct Settler {
    pub(super) shared: Arc<Shared>,
    /// The queue's policy, for kinds without one of their own.
    pub(super) retry: RetryPolicy,
    /// Leases stop being extended once their outcome is recorded.
    pub(super) held: Arc<Held>,
    /// Succeeded jobs on their way to the acker.
    pub(super) acks: Arc<AckQueue<Succeeded>>,
}

impl Settler {
    /// Records how an attempt ended: acknowledge, retry, snooze,
    /// dead-letter or release.
    pub(super) async fn settle(&self, reservation: Reservation, started_at: DateTime<Utc>, ended: Ended) {
        match ended {
            Ended::Succeeded => {
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
                if let Err(mut unacknowledged) = self.acks.push(succeeded).await {
                    self.complete(&mut unacknowledged, &mut Vec::new()).await;
                }
            }
            Ended::Failed(error) => {
                self.fail(&reservation, started_at, error).await;
            }
            Ended::Refused(reason) => {
                self.refuse(&reservation, started_at, reason).await;
            }
            Ended::Cancelled => {
                self.cancel(&reservation, started_at).await;
            }
            // An operator asked to cancel it: the cancel holds, rather than
            // the job running again elsewhere.
            Ended::Aborted if self.held.cancellation(reservation.lease.id).is_cancelled() => {
                self.cancel(&reservation, started_at).await;
            }
            Ended::Aborted => {
                tracing::warn!("shutdown deadline passed; job released unfinished");
                let lease = std::slice::from_ref(&reservation.lease);
                self.held.release(&self.shared, lease).await;
            }
        }
    }

    /// Records a failed attempt as the retry policy decides; returns the
    /// outcome if the broker recorded it.
    pub(super) async fn fail(
        &self,
        job: &Reservation,
        started_at: DateTime<Utc>,
        error: HandlerError,
    ) -> Option<JobOutcome> {
        let shared = &self.shared;
        let envelope = &job.envelope;
        let policy = shared.kind_policies.get(&envelope.kind).unwrap_or(&self.retry);
        let decision = policy.decide(&error, envelope, rand::random::<f64>());
        let now = shared.clock.now();
        let record = || {
            let message = error.error().map(ToString::to_string).unwrap_or_default();
            AttemptRecord::failed(started_at, now, message, Some(shared.worker_id.to_string()))
        };
        if !matches!(decision, Decision::Snooze { .. }) {
            shared.counters.failed.fetch_add(1, Ordering::Relaxed);
        }
        let (outcome, result) = match decision {
            Decision::Retry { delay } => {
                let retry = envelope.attempt + 1;
                let allowed = envelope.max_retries.unwrap_or(policy.max_retries);
                tracing::warn!(error = %error, retry, of = allowed, delay = ?delay, "job failed; retry scheduled");
                let result = shared.broker.retry_after(job, delay, record()).await;
                count_if_ok(&result, &shared.counters.retried);
                (JobOutcome::Retried, result)
            }
            Decision::Snooze { delay } => {
                tracing::info!(delay = ?delay, "job snoozed");
                let result = shared.broker.snooze(job, delay).await;
                count_if_ok(&result, &shared.counters.snoozed);
                (JobOutcome::Snoozed, result)
            }
            Decision::DeadLetter { reason } => {
                tracing::warn!(%reason, "job dead-lettered");
                let result = shared.broker.dead_letter(job, Some(record()), &reason).await;
                count_if_ok(&result, &shared.counters.dead_lettered);
                (JobOutcome::DeadLettered, result)
            }
        };
        if result.is_ok() {
            self.observe(envelope, outcome, elapsed(started_at, now));
        }
        self.after_outcome(job.lease.id, result).then_some(outcome)
    }

    /// Dead-letters a job that cannot run as it is, counted as refused;
    /// returns the outcome if the broker recorded it.
    pub(super) async fn refuse(
        &self,
        job: &Reservation,
        started_at: DateTime<Utc>,
        reason: String,
    ) -> Option<JobOutcome> {
        tracing::warn!(%reason, "job refused; dead-lettered");
        self.bury(job, started_at, &reason, JobOutcome::Refused).await
    }

    /// Dead-letters a job an operator cancelled while it ran (or before
    /// its expired lease was recovered), recording the attempt.
    pub(super) async fn cancel(&self, job: &Reservation, started_at: DateTime<Utc>) -> Option<JobOutcome> {
        tracing::info!("job cancelled by operator; dead-lettered");
        self.bury(job, started_at, CANCEL_REASON, JobOutcome::Cancelled).await
    }

    /// Dead-letters a job at once, without retries, for `reason`: a
    /// refused or cancelled one (`outcome`).
    async fn bury(
        &self,
        job: &Reservation,
        started_at: DateTime<Utc>,
        reason: &str,
        outcome: JobOutcome,
    ) -> Option<JobOutcome> {
        let shared = &self.shared;
        let now = shared.clock.now();
        shared.counters.failed.fetch_add(1, Ordering::Relaxed);
        let record = AttemptRecord::failed(started_at, now, reason, Some(shared.worker_id.to_string()));
        let result = shared.broker.dead_letter(job, Some(record), reason).await;
        if result.is_ok() {
            shared.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
            let counter = match outcome {
                JobOutcome::Cancelled => &shared.counters.cancelled,
                _ => &shared.counters.refused,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            self.observe(&job.envelope, outcome, elapsed(started_at, now));
        }
        self.after_outcome(job.lease.id, result).then_some(outcome)
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

    /// Logs and counts what went wrong recording an outcome, and stops
    /// holding the lease; whether the outcome was recorded.
    fn after_outcome(&self, id: crate::job::JobId, result: Result<()>) -> bool {
        let recorded = result.is_ok();
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
        self.held.forget_one(id);
        recorded
    }

    /// Batches completions into as few broker calls as possible, until the
    /// queue is closed and drained.
    pub(super) async fn acker(self: Arc<Self>) {
        // However this task ends, slots must not wait on it.
        let _guard = self.acks.acker_guard();
        let mut batch = Vec::with_capacity(ACK_BATCH);
        let mut leases = Vec::with_capacity(ACK_BATCH);
        while self.acks.take(&mut batch, ACK_BATCH).await {
            let completing = AssertUnwindSafe(self.complete(&mut batch, &mut leases)).catch_unwind();
            if let Err(panic) = completing.await {
                // The broker's `complete` panicked: whether the batch was
                // recorded is unknown. Stop extending its leases, so the
                // jobs come back when they expire (at least once).
                tracing::error!(
                    queue = %self.held.queue(),
                    jobs = leases.len(),
                    panic = %panic_message(&*panic),
                    "completing jobs panicked; they run again after their lease expires"
                );
                // `complete` moved the whole batch into `leases` before
                // calling the broker.
                self.held.forget(&leases);
                leases.clear();
                batch.clear();
            }
        }
    }

    /// Acknowledges one succeeded job at once, without the acker; whether
    /// the broker recorded it.
    #[cfg(feature = "test-util")]
    pub(super) async fn complete_now(&self, job: Reservation, started_at: DateTime<Utc>) -> bool {
        let duration = elapsed(started_at, self.shared.clock.now());
        let mut batch = vec![Succeeded {
            lease: job.lease,
            envelope: Some(job.envelope),
            duration,
        }];
        self.complete(&mut batch, &mut Vec::new()).await == 1
    }

    /// Completes `batch`, leaving it and `leases` empty (with their
    /// capacity); returns how many the broker acknowledged.
    async fn complete(&self, batch: &mut Vec<Succeeded>, leases: &mut Vec<Lease>) -> u64 {
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
        for attempt in 1..=COMPLETE_TRIES {
            match shared.broker.complete(leases).await {
                Ok(statuses) => {
                    self.held.forget(leases);
                    let mut completed = 0;
                    for (lease, status) in leases.iter().zip(&statuses) {
                        match status {
                            LeaseStatus::Held | LeaseStatus::Cancelled => {
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
                        if statuses.get(*at).is_some_and(|s| s.is_held()) {
                            self.observe(envelope, JobOutcome::Completed, *duration);
                        }
                    }
                    leases.clear();
                    return completed;
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
        self.held.forget(leases);
        leases.clear();
        0
    }
}

fn count_if_ok(result: &Result<()>, counter: &std::sync::atomic::AtomicU64) {
    if result.is_ok() {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The time from `start` to `end`, zero if the clock went backwards.
pub(super) fn elapsed(start: DateTime<Utc>, end: DateTime<Utc>) -> Duration {
    (end - start).to_std().unwrap_or_default()
}
