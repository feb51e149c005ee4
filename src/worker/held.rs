//! The leases a queue's tasks hold: fetching adds them, settling forgets
//! them, lease keeping extends them.

use std::sync::{atomic::Ordering, Arc, Mutex, MutexGuard};

use super::Shared;
use crate::{
    broker::{Lease, LeaseStatus, LeaseToken, Reservation},
    cancellation::Cancellation,
    job::{IdMap, JobId, QueueName},
};

/// A held lease: its token, and the signal its handler watches for an
/// operator's cancel.
struct Holding {
    token: LeaseToken,
    cancellation: Cancellation,
}

/// The leases one queue of a worker holds, by job.
pub(super) struct Held {
    /// The queue every lease here belongs to.
    queue: QueueName,
    /// Leases by job: what the heartbeat extends, and the cancellation it
    /// raises when the broker reports a job cancelled. A lease leaves once
    /// its job's outcome is recorded (or given up on).
    tokens: Mutex<IdMap<Holding>>,
}

impl Held {
    pub(super) fn new(queue: QueueName) -> Self {
        Held {
            queue,
            tokens: Mutex::new(IdMap::default()),
        }
    }

    /// The queue these leases belong to.
    pub(super) fn queue(&self) -> &QueueName {
        &self.queue
    }

    fn lock(&self) -> MutexGuard<'_, IdMap<Holding>> {
        // Inserts and removes cannot leave the map inconsistent.
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts holding the leases of `reserved`.
    pub(super) fn hold(&self, reserved: &[Reservation]) {
        let mut tokens = self.lock();
        for r in reserved {
            let holding = Holding {
                token: r.lease.token,
                cancellation: Cancellation::new(),
            };
            if r.cancel_requested {
                holding.cancellation.cancel();
            }
            tokens.insert(r.lease.id, holding);
        }
    }

    /// The cancellation signal of the held job `id` (a fresh one, never
    /// raised, if it is not held).
    pub(super) fn cancellation(&self, id: JobId) -> Cancellation {
        self.lock().get(&id).map(|h| h.cancellation.clone()).unwrap_or_default()
    }

    /// Raises the cancellation signal of the held job `id`; whether it is held.
    pub(super) fn cancel(&self, id: JobId) -> bool {
        match self.lock().get(&id) {
            Some(holding) => {
                holding.cancellation.cancel();
                true
            }
            None => false,
        }
    }

    /// Stops holding (and extending) these leases.
    pub(super) fn forget(&self, leases: &[Lease]) {
        let mut tokens = self.lock();
        for lease in leases {
            tokens.remove(&lease.id);
        }
    }

    /// Stops holding (and extending) the lease of `id`.
    pub(super) fn forget_one(&self, id: JobId) {
        self.lock().remove(&id);
    }

    /// Every lease held now.
    pub(super) fn leases(&self) -> Vec<Lease> {
        self.lock()
            .iter()
            .map(|(&id, holding)| Lease {
                id,
                queue: self.queue.clone(),
                token: holding.token,
            })
            .collect()
    }

    /// Puts unstarted jobs back at the front of ready (shutdown) and stops
    /// holding them; if the broker cannot be reached they come back when
    /// their lease expires.
    pub(super) async fn release(&self, shared: &Arc<Shared>, leases: &[Lease]) {
        if leases.is_empty() {
            return;
        }
        match shared.broker.release(leases).await {
            Ok(statuses) => {
                let released = statuses.iter().filter(|s| **s == LeaseStatus::Held).count();
                shared.counters.released.fetch_add(released as u64, Ordering::Relaxed);
                tracing::info!(queue = %self.queue, released, "unstarted jobs released");
            }
            Err(e) => {
                shared.counters.broker_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(queue = %self.queue, error = %e, "could not release jobs; they return when their lease expires");
            }
        }
        self.forget(leases);
    }
}
