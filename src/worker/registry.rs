//! Registration: the worker announces itself to the broker's worker
//! registry while it runs ([`JobControl::register_worker`]), so operators
//! see it, and withdraws at shutdown.

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use super::{QueueConfig, Shared};
use crate::broker::WorkerInfo;

/// What the worker registers: its id, host, process, queues, concurrency,
/// start time, and (refreshed at each heartbeat) the jobs it runs.
pub(super) fn info(shared: &Shared, queues: &[QueueConfig]) -> WorkerInfo {
    let names = queues.iter().map(|q| q.name.clone()).collect();
    let concurrency = queues.iter().map(|q| q.concurrency).sum();
    WorkerInfo::new(shared.worker_id.to_string(), names, concurrency, shared.clock.now())
}

/// How long a registration lasts without a heartbeat: three heartbeats,
/// so one slow broker call does not make the worker look gone.
pub(super) fn ttl(shared: &Shared) -> Duration {
    shared.settings.heartbeat.saturating_mul(3)
}

/// Registers the worker now and again every heartbeat, until aborted.
/// Does nothing on a broker without a registry.
pub(super) async fn heartbeat(shared: Arc<Shared>, mut info: WorkerInfo) {
    let Some(control) = shared.broker.control() else {
        return;
    };
    let ttl = ttl(&shared);
    let mut ticker = tokio::time::interval(shared.settings.heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        info.in_flight = shared.counters.in_flight.load(Ordering::Relaxed);
        if let Err(e) = control.register_worker(&info, ttl).await {
            shared.counters.broker_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(worker.id = %info.id, error = %e, "registering the worker failed");
        }
    }
}

/// Removes the worker's registration (it has stopped).
pub(super) async fn deregister(shared: &Shared) {
    let Some(control) = shared.broker.control() else {
        return;
    };
    if let Err(e) = control.deregister_worker(&shared.worker_id).await {
        shared.counters.broker_errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(worker.id = %shared.worker_id, error = %e, "deregistering the worker failed; it shows as gone once its registration expires");
    }
}
