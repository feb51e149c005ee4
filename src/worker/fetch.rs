//! Fetching: leases a queue's jobs ahead of free slots into the buffer,
//! waiting server-side while the queue is idle.

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use super::{buffer::Buffer, held::Held, shutdown::Signal, Shared};
use crate::{broker::ReserveRequest, job::QueueName};

/// The first pause after a failed reserve; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// The longest pause between two failed reserves.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Fills one queue's buffer.
pub(super) struct Fetcher {
    pub(super) shared: Arc<Shared>,
    /// The queue it reserves from.
    pub(super) queue: QueueName,
    /// Where reserved jobs start being heartbeated.
    pub(super) held: Arc<Held>,
    /// Where reserved jobs wait for a slot.
    pub(super) buffer: Arc<Buffer>,
}

impl Fetcher {
    /// Reserves until `stop` is raised.
    pub(super) async fn run(self, mut stop: Signal) {
        let Fetcher {
            shared,
            queue,
            held,
            buffer,
        } = self;
        let settings = &shared.settings;
        let mut backoff = FIRST_BACKOFF;
        // Whether the last reservation filled the whole request: only slots
        // that starve between two full batches show that the buffer is too
        // small, not slots idle at start or while the queue was empty.
        let mut last_full = false;
        loop {
            let draining = tokio::time::Instant::now();
            let max = tokio::select! {
                biased;
                _ = stop.raised() => return,
                free = buffer.wait_for_space() => free,
            };
            let drain_time = draining.elapsed();
            if stop.is_raised() {
                return;
            }
            let request = ReserveRequest::new(max, settings.lease, settings.idle_wait).worker(shared.worker_id.clone());
            // A reserve call is abandoned on stop only where the broker says
            // that leases nothing; otherwise a lease taken by the dropped call
            // would only come back after it expired.
            let reserve = shared.broker.reserve(&queue, request);
            let result = if shared.broker.reserve_is_cancel_safe() {
                tokio::select! {
                    biased;
                    _ = stop.raised() => return,
                    result = reserve => result,
                }
            } else {
                reserve.await
            };
            let reserved = match result {
                Ok(reserved) => {
                    backoff = FIRST_BACKOFF;
                    reserved
                }
                Err(e) => {
                    shared.counters.broker_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%queue, error = %e, retry_in = ?backoff, "reserve failed; retrying");
                    tokio::select! {
                        _ = stop.raised() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            if reserved.is_empty() {
                last_full = false;
                continue;
            }
            held.hold(&reserved);
            if stop.is_raised() {
                let leases: Vec<_> = reserved.into_iter().map(|r| r.lease).collect();
                held.release(&shared, &leases).await;
                return;
            }
            let full_batch = reserved.len() == max;
            buffer.push(reserved);
            buffer.adapt(full_batch && last_full, drain_time);
            last_full = full_batch;
        }
    }
}
