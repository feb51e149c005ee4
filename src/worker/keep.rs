//! Lease keeping: extends the leases a queue holds while their jobs run,
//! and recovers jobs whose lease expired elsewhere (their worker died or
//! hung), counting the lost attempt as a failure.

use std::sync::{atomic::Ordering, Arc};

use tracing::Instrument;

use super::{held::Held, settle::Settler, shutdown::Signal, Shared};
use crate::{
    broker::{
        history::{HistorySample, LatencyRecorder},
        LeaseStatus,
    },
    handler::HandlerError,
    job::QueueName,
};

/// The most expired leases recovered in one call.
const RECOVER_BATCH: usize = 256;

/// Extends the leases in `held` every heartbeat; runs until the queue's
/// runner aborts it, after the last job is settled.
pub(super) async fn heartbeat(shared: Arc<Shared>, held: Arc<Held>) {
    let settings = &shared.settings;
    let mut ticker = tokio::time::interval(settings.heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let leases = held.leases();
        if leases.is_empty() {
            continue;
        }
        match shared.broker.extend(&leases, settings.lease).await {
            Ok(statuses) => {
                for (lease, status) in leases.iter().zip(statuses) {
                    match status {
                        LeaseStatus::Held => {}
                        LeaseStatus::Lost => {
                            tracing::warn!(job.id = %lease.id, queue = %lease.queue, "lease lost while the job ran");
                        }
                        LeaseStatus::Cancelled => {
                            if held.cancel(lease.id) {
                                tracing::info!(job.id = %lease.id, queue = %lease.queue, "job cancelled by operator; handler signalled");
                            }
                        }
                    }
                }
            }
            Err(e) => {
                shared.counters.broker_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "extending leases failed");
            }
        }
    }
}

/// Takes the queue's jobs whose lease expired and records their lost
/// attempt through `settler`, until `stop` is raised.
pub(super) async fn recovery(settler: Arc<Settler>, mut stop: Signal) {
    let shared = &settler.shared;
    let queue = settler.held.queue();
    let settings = &shared.settings;
    let mut ticker = tokio::time::interval(settings.recovery_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.raised() => return,
        }
        let recovered = match shared
            .broker
            .recover_expired(queue, RECOVER_BATCH, settings.lease)
            .await
        {
            Ok(recovered) => recovered,
            Err(e) => {
                shared.counters.broker_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%queue, error = %e, "recovering expired leases failed");
                continue;
            }
        };
        for reservation in recovered {
            shared.counters.recovered.fetch_add(1, Ordering::Relaxed);
            let envelope = &reservation.envelope;
            let span = tracing::info_span!("job", job.id = %envelope.id, job.type = %envelope.kind, queue = %envelope.queue, attempt = envelope.attempt);
            let started = reservation
                .expired_attempt_started_at
                .unwrap_or_else(|| shared.clock.now());
            if reservation.cancel_requested {
                // Cancelled while its worker ran it, then the worker died:
                // the operator's request stands.
                settler.cancel(&reservation, started).instrument(span).await;
                continue;
            }
            let error = HandlerError::retry("lease expired: the worker running the job died or stopped heartbeating");
            settler.fail(&reservation, started, error).instrument(span).await;
        }
    }
}

/// Sends the queue's sample to the broker's history every history
/// interval, and once more when `stop` is raised: the ready depth and
/// oldest ready age from [`Broker::stats`](crate::Broker::stats), and the
/// start latencies `latency` counted meanwhile. Does nothing on a broker
/// without a history.
pub(super) async fn history(shared: Arc<Shared>, queue: QueueName, latency: Arc<LatencyRecorder>, mut stop: Signal) {
    if shared.broker.queue_history().is_none() {
        return;
    }
    let mut ticker = tokio::time::interval(shared.settings.history_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let last = tokio::select! {
            _ = ticker.tick() => false,
            _ = stop.raised() => true,
        };
        record_sample(&shared, &queue, &latency).await;
        if last {
            return;
        }
    }
}

/// One sample of `queue` to the broker's history; latencies that could not
/// be recorded go with the next one.
async fn record_sample(shared: &Shared, queue: &QueueName, latency: &LatencyRecorder) {
    let Some(history) = shared.broker.queue_history() else {
        return;
    };
    let stats = match shared.broker.stats(queue).await {
        Ok(stats) => stats,
        Err(e) => {
            shared.counters.broker_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%queue, error = %e, "reading the queue's depth for its history failed");
            return;
        }
    };
    let sample = HistorySample::new(stats.ready, stats.oldest_ready_age_ms, latency.take());
    if let Err(e) = history.record_sample(queue, &sample).await {
        latency.restore(&sample.latency);
        shared.counters.broker_errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%queue, error = %e, "recording the queue's history sample failed");
    }
}
