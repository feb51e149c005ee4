//! One queue inside a worker: the tasks that fetch, run, settle and keep
//! leases, wired together; work flows one way between them.
//!
//! ```text
//! fetch ──▶ buffer ──▶ slots (run) ──▶ settle ──▶ acker ──▶ broker
//!                                        ▲
//!            keep: heartbeat, recovery ──┘
//! ```

use std::{panic::AssertUnwindSafe, sync::Arc};

use futures_util::FutureExt;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::{
    acks::AckQueue,
    buffer::{Buffer, Prefetch},
    fetch::Fetcher,
    held::Held,
    keep,
    run::{on_first_wait, panic_message, Runner},
    settle::{Settler, ACK_BACKLOG},
    shutdown::Shutdown,
    QueueConfig, Shared,
};
use crate::{broker::Reservation, handler::JobContext, job::JobId};

/// Runs one queue until shutdown, and returns once every job it held is
/// settled or released.
pub(super) async fn run_queue(shared: Arc<Shared>, config: QueueConfig, shutdown: Shutdown) {
    let queue = config.name.clone();
    // More slots than the runtime has threads cannot run at once.
    let threads = tokio::runtime::Handle::current().metrics().num_workers();
    let buffer = Arc::new(Buffer::new(prefetch(&config), threads));
    let held = Arc::new(Held::new(queue.clone()));
    let settler = Arc::new(Settler {
        shared: shared.clone(),
        retry: config.retry,
        held: held.clone(),
        acks: Arc::new(AckQueue::new(ACK_BACKLOG)),
    });
    let runner = Arc::new(Runner {
        shared: shared.clone(),
        job_timeout: config.job_timeout,
        latency: Arc::default(),
    });

    let acker = tokio::spawn(settler.clone().acker());
    let mut background = JoinSet::new();
    background.spawn(keep::heartbeat(shared.clone(), held.clone()));
    background.spawn(keep::recovery(settler.clone(), shutdown.stop.clone()));
    let sampler = tokio::spawn(keep::history(
        shared.clone(),
        queue.clone(),
        runner.latency.clone(),
        shutdown.stop.clone(),
    ));

    let mut slots = JoinSet::new();
    let fetcher = Fetcher {
        shared: shared.clone(),
        queue: queue.clone(),
        held: held.clone(),
        buffer: buffer.clone(),
    };
    slots.spawn(fetcher.run(shutdown.stop.clone()));
    for _ in 0..config.concurrency {
        slots.spawn(slot(runner.clone(), settler.clone(), buffer.clone(), shutdown.clone()));
    }
    while let Some(joined) = slots.join_next().await {
        if let Err(e) = joined {
            tracing::error!(%queue, error = %e, "worker slot failed");
        }
    }
    settler.acks.close();
    // Jobs leased ahead but never started go back to ready.
    let left: Vec<_> = buffer.close().into_iter().map(|r| r.lease).collect();
    held.release(&shared, &left).await;
    if let Err(e) = acker.await {
        tracing::error!(%queue, error = %e, "acknowledgement task failed");
    }
    background.shutdown().await;
    if let Err(e) = sampler.await {
        tracing::error!(%queue, error = %e, "history sampling task failed");
    }
}

/// Runs one reserved job of `config`'s queue to its recorded outcome, with
/// no tasks around it (for [`TestWorker`](crate::testing::TestWorker)).
#[cfg(feature = "test-util")]
pub(super) async fn run_one(shared: &Arc<Shared>, config: &QueueConfig, job: Reservation) -> super::Ran {
    let span = tracing::info_span!(
        "job",
        job.id = %job.envelope.id,
        job.type = %job.envelope.kind,
        queue = %job.envelope.queue,
        attempt = job.envelope.attempt,
    );
    run_one_in_span(shared, config, job).instrument(span).await
}

#[cfg(feature = "test-util")]
async fn run_one_in_span(shared: &Arc<Shared>, config: &QueueConfig, job: Reservation) -> super::Ran {
    use super::run::Ended;

    let held = Arc::new(Held::new(config.name.clone()));
    held.hold(std::slice::from_ref(&job));
    let settler = Settler {
        shared: shared.clone(),
        retry: config.retry,
        held,
        acks: Arc::new(AckQueue::new(1)),
    };
    let runner = Runner {
        shared: shared.clone(),
        job_timeout: config.job_timeout,
        latency: Arc::default(),
    };
    let mut ctx = JobContext::new(
        &job.envelope,
        &shared.worker_id,
        shared.clock.now(),
        shared.client.clone(),
    );
    ctx.cancellation = settler.held.cancellation(job.lease.id);
    // Never raised: a single run is not shut down.
    let (_keep, mut abort) = super::shutdown::signal();
    let started_at = shared.clock.now();
    shared
        .counters
        .started
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let ended = runner.run(&job.envelope, started_at, &mut ctx, || {}, &mut abort).await;
    let mut ran = super::Ran {
        id: job.envelope.id,
        kind: job.envelope.kind.clone(),
        attempt: job.envelope.attempt,
        outcome: None,
        error: None,
    };
    ran.outcome = match ended {
        Ended::Succeeded => settler
            .complete_now(job, started_at)
            .await
            .then_some(super::JobOutcome::Completed),
        Ended::Failed(error) => {
            // A snooze is not a failure: it has no error to show.
            ran.error = error.error().map(ToString::to_string);
            settler.fail(&job, started_at, error).await
        }
        Ended::Refused(reason) => {
            ran.error = Some(reason.clone());
            settler.refuse(&job, started_at, reason).await
        }
        Ended::Cancelled => {
            ran.error = Some(crate::broker::CANCEL_REASON.to_owned());
            settler.cancel(&job, started_at).await
        }
        Ended::Aborted => None,
    };
    ran
}

/// The queue's prefetch: fixed, or adapting from the concurrency up.
fn prefetch(config: &QueueConfig) -> Prefetch {
    match config.prefetch {
        Some(fixed) => Prefetch::fixed(fixed),
        None => {
            let min = config.concurrency.max(super::DEFAULT_MIN_PREFETCH);
            let max = (min * super::PREFETCH_GROWTH).min(super::MAX_CONCURRENCY).max(min);
            Prefetch { min, max }
        }
    }
}

/// A long-lived task running one job at a time until shutdown.
async fn slot(runner: Arc<Runner>, settler: Arc<Settler>, buffer: Arc<Buffer>, mut shutdown: Shutdown) {
    // One context per slot, refilled per job: the shared parts (client,
    // worker id) are cloned once here rather than once per job.
    let shared = &runner.shared;
    let mut ctx = JobContext {
        id: JobId::from(uuid::Uuid::nil()),
        kind: String::new(),
        queue: settler.held.queue().clone(),
        attempt: 0,
        enqueued_at: chrono::DateTime::UNIX_EPOCH,
        started_at: chrono::DateTime::UNIX_EPOCH,
        worker_id: shared.worker_id.clone(),
        client: shared.client.clone(),
        cancellation: Default::default(),
    };
    loop {
        // Cooperate with tokio's budget: jobs can follow each other
        // without the slot ever waiting on a tokio resource.
        tokio::task::consume_budget().await;
        if shutdown.stop.is_raised() {
            return;
        }
        let next = match buffer.try_pop() {
            Some(reservation) => Some(reservation),
            None => tokio::select! {
                biased;
                _ = shutdown.stop.raised() => None,
                next = buffer.pop() => next,
            },
        };
        let Some(reservation) = next else { return };
        process(&runner, &settler, reservation, &mut ctx, &buffer, &mut shutdown).await;
    }
}

/// Runs one job in its span and settles it.
async fn process(
    runner: &Runner,
    settler: &Settler,
    reservation: Reservation,
    ctx: &mut JobContext,
    buffer: &Buffer,
    shutdown: &mut Shutdown,
) {
    let envelope = &reservation.envelope;
    let span = tracing::info_span!(
        "job",
        job.id = %envelope.id,
        job.type = %envelope.kind,
        queue = %envelope.queue,
        attempt = envelope.attempt,
    );
    async move {
        let shared = &runner.shared;
        let started_at = shared.clock.now();
        shared
            .counters
            .started
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        runner
            .latency
            .record((started_at - reservation.envelope.run_at).to_std().unwrap_or_default());
        tracing::debug!("job started");
        tracing::trace!(payload = %reservation.envelope.payload, "job payload");
        ctx.cancellation = settler.held.cancellation(reservation.lease.id);
        shared.counters.in_flight.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Cancelled while it waited in the buffer (the heartbeat said so),
        // or recovered with a cancel request: it does not start.
        let ended = if ctx.is_cancelled() {
            tracing::info!("job cancelled by operator before it started; not run");
            super::run::Ended::Cancelled
        } else {
            runner
                .run(
                    &reservation.envelope,
                    started_at,
                    ctx,
                    || buffer.hand_off(),
                    &mut shutdown.abort,
                )
                .await
        };
        // Recording the outcome may wait on the broker (or on a full
        // acknowledgement queue): let another slot take the next job meanwhile.
        let id = reservation.lease.id;
        let settling = AssertUnwindSafe(settler.settle(reservation, started_at, ended)).catch_unwind();
        if let Err(panic) = on_first_wait(settling, || buffer.hand_off()).await {
            // A broker bug: whether the outcome was recorded is unknown. The
            // slot goes on; the lease is no longer extended, so the job
            // comes back once it expires (at least once).
            tracing::error!(panic = %panic_message(&*panic), "recording the job's outcome panicked; it runs again after its lease expires");
            settler.held.forget_one(id);
        }
        shared.counters.in_flight.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
    .instrument(span)
    .await
}
