//! The leases a queue's tasks hold: fetching adds them, settling forgets
//! them, lease keeping extends them.

use std::sync::{atomic::Ordering, Arc, Mutex, MutexGuard};

use super::Shared;
use crate::{
    broker::{Lease, LeaseStatus, LeaseToken, Reservation},
    job::{IdMap, JobId, QueueName},
};

/// The leases one queue of a worker holds, by job.
pub(super) struct Held {
    /// The queue every lease here belongs to.
    queue: QueueName,
    /// Tokens by job: what the heartbeat extends. A lease leaves once its
    /// job's outcome is recorded (or given up on).
    tokens: Mutex<IdMap<LeaseToken>>,
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

    fn lock(&self) -> MutexGuard<'_, IdMap<LeaseToken>> {
        // Inserts and removes cannot leave the map inconsistent.
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts holding the leases of `reserved`.
    pub(super) fn hold(&self, reserved: &[Reservation]) {
        let mut tokens = self.lock();
        for r in reserved {
            tokens.insert(r.lease.id, r.lease.token);
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
            .map(|(&id, &token)| Lease {
                id,
                queue: self.queue.clone(),
                token,
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
