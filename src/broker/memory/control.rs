//! [`JobControl`] for [`MemoryBroker`]: listing live jobs, pausing queues,
//! cancelling jobs and the worker registry, all in memory.

use std::{sync::atomic::Ordering, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{JobState as Stage, Leased, MemoryBroker, QueueState, Stored};
use crate::{
    broker::control::{
        ActiveLease, CancelOutcome, JobControl, JobCursor, JobPage, JobQuery, JobState, LiveJob, WorkerEntry,
        WorkerInfo, CANCEL_REASON, GONE_WORKER_RETENTION,
    },
    envelope::to_chrono,
    error::Result,
    job::{JobId, QueueName},
};

/// A worker's registry entry.
#[derive(Debug, Clone)]
pub(super) struct Registered {
    info: WorkerInfo,
    last_seen: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

/// A stored job as an operator sees it; `None` when it is dead.
fn live(id: JobId, queue: &QueueName, stored: &Stored, leased: Option<&Leased>) -> Option<LiveJob> {
    let envelope = stored.held.to_envelope(id, queue);
    Some(match stored.state {
        Stage::Ready => LiveJob::waiting(envelope, JobState::Ready),
        Stage::Scheduled => LiveJob::waiting(envelope, JobState::Scheduled),
        Stage::Active => {
            let leased = leased?;
            let owner = leased.owner.as_deref().map(str::to_owned);
            LiveJob::active(
                envelope,
                ActiveLease::new(owner, leased.started, leased.deadline),
                leased.cancel_requested,
            )
        }
        Stage::Dead => return None,
    })
}

impl QueueState {
    /// Every job of the query's state matching it, unordered.
    fn matching(&self, query: &JobQuery) -> Vec<LiveJob> {
        let ids: Box<dyn Iterator<Item = &JobId>> = match query.state {
            JobState::Ready => Box::new(self.ready.iter()),
            JobState::Scheduled => Box::new(self.scheduled.iter().map(|(_, id)| id)),
            JobState::Active => Box::new(self.active.keys()),
        };
        ids.filter_map(|id| Some((*id, self.jobs.get(id)?)))
            .filter(|(id, stored)| {
                stored
                    .held
                    .inspect(*id, &query.queue, |envelope| query.matches(envelope))
            })
            .filter_map(|(id, stored)| live(id, &query.queue, stored, self.active.get(&id)))
            .collect()
    }

    /// Moves a ready or scheduled job to the dead-letter queue as
    /// cancelled, or flags an active one.
    fn cancel(&mut self, queue: &QueueName, id: JobId, now: DateTime<Utc>) -> CancelOutcome {
        let Some(job) = self.jobs.get_mut(&id) else {
            return CancelOutcome::NotFound;
        };
        match job.state {
            Stage::Dead => return CancelOutcome::NotFound,
            Stage::Active => {
                let Some(leased) = self.active.get_mut(&id) else {
                    return CancelOutcome::NotFound;
                };
                leased.cancel_requested = true;
                return CancelOutcome::Signalled;
            }
            Stage::Ready => {
                self.ready.remove(id, job.held.priority());
            }
            Stage::Scheduled => {
                self.scheduled.remove(&(job.held.run_at(), id));
            }
        }
        job.held.update(id, queue, |envelope| {
            envelope.dead_lettered_at = Some(now);
            envelope.dead_letter_reason = Some(CANCEL_REASON.to_owned());
        });
        job.state = Stage::Dead;
        self.dead.insert((now, id));
        self.dead_lettered += 1;
        CancelOutcome::DeadLettered
    }
}

impl MemoryBroker {
    fn registry(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, Registered>> {
        self.workers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the queue's paused flag; whether it changed.
    fn set_paused(&self, queue: &QueueName, paused: bool) -> bool {
        let q = self.queue_or_create(queue);
        let changed = q.paused.swap(paused, Ordering::AcqRel) != paused;
        if changed && !paused {
            // Idle reservers slept through the pause: wake them all.
            q.notify.notify_waiters();
        }
        changed
    }
}

#[async_trait]
impl JobControl for MemoryBroker {
    async fn list_jobs(&self, query: &JobQuery, cursor: Option<&JobCursor>, limit: usize) -> Result<JobPage> {
        let now = self.clock.now();
        let matching = match self.existing(&query.queue) {
            Some(q) => {
                let mut state = q.lock();
                state.promote_due(now);
                state.matching(query)
            }
            None => Vec::new(),
        };
        JobPage::from_unsorted(matching, cursor, limit)
    }

    async fn get_job(&self, queue: &QueueName, id: JobId) -> Result<Option<LiveJob>> {
        let Some(q) = self.existing(queue) else {
            return Ok(None);
        };
        let state = q.lock();
        Ok(state
            .jobs
            .get(&id)
            .and_then(|stored| live(id, queue, stored, state.active.get(&id))))
    }

    async fn pause(&self, queue: &QueueName) -> Result<bool> {
        let changed = self.set_paused(queue, true);
        tracing::info!(%queue, changed, "queue paused");
        Ok(changed)
    }

    async fn resume(&self, queue: &QueueName) -> Result<bool> {
        let changed = self.set_paused(queue, false);
        tracing::info!(%queue, changed, "queue resumed");
        Ok(changed)
    }

    async fn cancel(&self, queue: &QueueName, id: JobId) -> Result<CancelOutcome> {
        let now = self.clock.now();
        let Some(q) = self.existing(queue) else {
            return Ok(CancelOutcome::NotFound);
        };
        let outcome = {
            let mut state = q.lock();
            let outcome = state.cancel(queue, id, now);
            if outcome == CancelOutcome::DeadLettered {
                state
                    .history
                    .count(&self.history_layout, now, super::history::Counted::DeadLettered, 1);
            }
            outcome
        };
        tracing::info!(job.id = %id, %queue, ?outcome, "job cancelled by operator");
        Ok(outcome)
    }

    async fn register_worker(&self, info: &WorkerInfo, ttl: Duration) -> Result<()> {
        let now = self.clock.now();
        let expires_at = crate::envelope::after(now, ttl)?;
        let retention = to_chrono(GONE_WORKER_RETENTION)?;
        let mut registry = self.registry();
        // Forget workers gone for longer than the retention.
        registry.retain(|_, w| w.expires_at + retention > now);
        registry.insert(
            info.id.clone(),
            Registered {
                info: info.clone(),
                last_seen: now,
                expires_at,
            },
        );
        Ok(())
    }

    async fn deregister_worker(&self, id: &str) -> Result<bool> {
        Ok(self.registry().remove(id).is_some())
    }

    async fn workers(&self) -> Result<Vec<WorkerEntry>> {
        let now = self.clock.now();
        Ok(self
            .registry()
            .values()
            .map(|w| WorkerEntry::new(w.info.clone(), w.last_seen, w.expires_at, now))
            .collect())
    }
}
