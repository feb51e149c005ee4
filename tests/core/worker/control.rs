//! Operators' control as the worker lives it: cancelling a running job,
//! pausing its queue, the worker registry and the lease owner.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use flagship_worker::{
    broker::{CancelOutcome, JobControl, JobQuery, JobState, CANCEL_REASON},
    Broker, DeadLetterQueue, Handler, HandlerError, JobContext, JobId, JobOutcome, MemoryBroker, QueueConfig, Worker,
};
use tokio::sync::mpsc;

use super::{next, queue, scripted, start, task, Behaviour, Task};

/// How long the workers here wait between heartbeats.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// A handler that reports each job it starts, then waits for a cancel (or
/// an hour) and gives up with an error when cancelled, if `cooperative`;
/// one that is not just sleeps for an hour.
struct Waits {
    started: mpsc::UnboundedSender<JobId>,
    /// When it saw the cancel, by tokio's clock.
    cancelled: mpsc::UnboundedSender<tokio::time::Instant>,
    cooperative: bool,
}

#[async_trait]
impl Handler for Waits {
    type Job = Task;

    async fn handle(&self, _: Task, ctx: &JobContext) -> Result<(), HandlerError> {
        let _ = self.started.send(ctx.id);
        if !self.cooperative {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return Ok(());
        }
        tokio::select! {
            _ = ctx.cancelled() => {
                assert!(ctx.is_cancelled());
                let _ = self.cancelled.send(tokio::time::Instant::now());
                Err(HandlerError::retry("stopped: cancelled"))
            }
            _ = tokio::time::sleep(Duration::from_secs(3600)) => Ok(()),
        }
    }
}

struct Setup {
    broker: Arc<MemoryBroker>,
    worker: Worker,
    started: mpsc::UnboundedReceiver<JobId>,
    cancelled: mpsc::UnboundedReceiver<tokio::time::Instant>,
}

fn setup(cooperative: bool, job_timeout: Duration) -> Setup {
    setup_with(cooperative, QueueConfig::for_queue(queue()).job_timeout(job_timeout))
}

fn setup_with(cooperative: bool, config: QueueConfig) -> Setup {
    let broker = Arc::new(MemoryBroker::new());
    let (started_tx, started) = mpsc::unbounded_channel();
    let (cancelled_tx, cancelled) = mpsc::unbounded_channel();
    let worker = Worker::builder(broker.clone())
        .lease(HEARTBEAT * 3)
        .heartbeat(HEARTBEAT)
        .worker_id("control-test-worker")
        .queue(config)
        .handler(Waits {
            started: started_tx,
            cancelled: cancelled_tx,
            cooperative,
        })
        .build()
        .unwrap();
    Setup {
        broker,
        worker,
        started,
        cancelled,
    }
}

/// Waits (virtual time) until the job is dead with the operator's reason.
async fn dead_as_cancelled(broker: &MemoryBroker, id: JobId) {
    tokio::time::timeout(Duration::from_secs(3600), async {
        loop {
            if let Some(dead) = broker.get_dead(&queue(), id).await.unwrap() {
                assert_eq!(dead.dead_letter_reason.as_deref(), Some(CANCEL_REASON));
                assert_eq!(dead.attempts.len(), 1, "the cancelled attempt is recorded");
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the cancelled job reached the DLQ within an hour of virtual time");
}

#[tokio::test(start_paused = true)]
async fn a_handler_sees_the_cancel_within_a_heartbeat_and_the_job_dies_as_cancelled() {
    let mut s = setup(true, Duration::from_secs(3600));
    let running = start(&s.worker);
    s.worker.client().enqueue(&task(1)).await.unwrap();
    let id = s.started.recv().await.unwrap();
    let active = s
        .broker
        .list_jobs(&JobQuery::new(queue(), JobState::Active), None, 10)
        .await
        .unwrap();
    let lease = active.jobs[0].lease.clone().unwrap();
    assert_eq!(lease.worker.as_deref(), Some("control-test-worker"), "the lease owner");

    let asked = tokio::time::Instant::now();
    assert_eq!(s.broker.cancel(&queue(), id).await.unwrap(), CancelOutcome::Signalled);
    let seen = s.cancelled.recv().await.unwrap();
    assert!(
        seen - asked <= HEARTBEAT,
        "the handler saw the cancel {:?} after it",
        seen - asked
    );
    dead_as_cancelled(&s.broker, id).await;
    running.stop().await;
    let stats = s.worker.stats();
    assert_eq!(
        (stats.cancelled, stats.dead_lettered, stats.retried),
        (1, 1, 0),
        "{stats:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_handler_ignoring_the_cancel_is_ended_by_its_timeout_as_cancelled() {
    let timeout = Duration::from_secs(60);
    let mut s = setup(false, timeout);
    let running = start(&s.worker);
    s.worker.client().enqueue(&task(1)).await.unwrap();
    let id = s.started.recv().await.unwrap();
    let began = tokio::time::Instant::now();
    assert_eq!(s.broker.cancel(&queue(), id).await.unwrap(), CancelOutcome::Signalled);
    dead_as_cancelled(&s.broker, id).await;
    let took = tokio::time::Instant::now() - began;
    assert!(
        took >= timeout - HEARTBEAT && took <= timeout + HEARTBEAT,
        "the job ended {took:?} after it started, not at its timeout"
    );
    running.stop().await;
    let stats = s.worker.stats();
    assert_eq!(
        (stats.cancelled, stats.timed_out, stats.retried),
        (1, 1, 0),
        "{stats:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_paused_queue_is_not_reserved_until_resumed() {
    let broker = Arc::new(MemoryBroker::new());
    let (handler, mut seen) = scripted(|_, _| Behaviour::Succeed);
    let worker = Worker::builder(broker.clone()).handler(handler).build().unwrap();
    assert!(broker.pause(&queue()).await.unwrap());
    let running = start(&worker);
    worker.client().enqueue(&task(1)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert!(seen.try_recv().is_err(), "a job of a paused queue ran");
    let stats = broker.stats(&queue()).await.unwrap();
    assert!(stats.paused && stats.ready == 1, "{stats:?}");

    assert!(broker.resume(&queue()).await.unwrap());
    let run = next(&mut seen).await;
    assert_eq!(run.job.n, 1);
    running.stop().await;
    assert_eq!(worker.stats().completed, 1);
}

#[tokio::test(start_paused = true)]
async fn a_running_worker_is_registered_and_deregisters_at_shutdown() {
    let broker = Arc::new(MemoryBroker::new());
    let (handler, _seen) = scripted(|_, _| Behaviour::Succeed);
    let worker = Worker::builder(broker.clone())
        .heartbeat(HEARTBEAT)
        .worker_id("registered-worker")
        .queue(QueueConfig::for_queue(queue()).concurrency(3))
        .handler(handler)
        .build()
        .unwrap();
    let running = start(&worker);
    tokio::time::sleep(Duration::from_millis(1)).await;
    let workers = broker.workers().await.unwrap();
    assert_eq!(workers.len(), 1, "{workers:?}");
    let entry = &workers[0];
    assert_eq!(entry.info.id, "registered-worker");
    assert_eq!((entry.info.queues.clone(), entry.info.concurrency), (vec![queue()], 3));
    assert_eq!(entry.info.pid, std::process::id());
    let first_seen = entry.last_seen;
    tokio::time::sleep(HEARTBEAT * 4).await;
    let again = broker.workers().await.unwrap();
    assert!(
        again[0].last_seen > first_seen && !again[0].gone,
        "heartbeats refresh it: {again:?}"
    );
    running.stop().await;
    assert!(
        broker.workers().await.unwrap().is_empty(),
        "a stopped worker deregisters"
    );
}

/// `JobOutcome::Cancelled` has its name for logs and metrics.
#[test]
fn the_cancelled_outcome_is_named() {
    assert_eq!(JobOutcome::Cancelled.as_str(), "cancelled");
}

#[tokio::test(start_paused = true)]
async fn a_job_cancelled_while_its_dead_worker_held_it_is_not_run_again() {
    let broker = Arc::new(MemoryBroker::new());
    let (handler, mut seen) = scripted(|_, _| Behaviour::Succeed);
    let worker = Worker::builder(broker.clone())
        .lease(Duration::from_secs(2))
        .recovery_interval(Duration::from_millis(500))
        .handler(handler)
        .build()
        .unwrap();
    worker.client().enqueue(&task(1)).await.unwrap();
    // A worker that reserves the job and dies; the operator cancels it.
    let request = flagship_worker::ReserveRequest::new(1, Duration::from_secs(2), Duration::ZERO);
    let crashed = broker.reserve(&queue(), request).await.unwrap();
    let id = crashed[0].lease.id;
    assert_eq!(broker.cancel(&queue(), id).await.unwrap(), CancelOutcome::Signalled);

    let running = start(&worker);
    dead_as_cancelled(&broker, id).await;
    running.stop().await;
    assert!(seen.try_recv().is_err(), "a cancelled job ran again");
    let stats = worker.stats();
    assert_eq!(
        (stats.recovered, stats.cancelled, stats.retried),
        (1, 1, 0),
        "{stats:?}"
    );
}

/// Finishes its job when it sees the cancel: the work was done, so the job
/// completes.
struct FinishesOnCancel(mpsc::UnboundedSender<JobId>);

#[async_trait]
impl Handler for FinishesOnCancel {
    type Job = Task;

    async fn handle(&self, _: Task, ctx: &JobContext) -> Result<(), HandlerError> {
        let _ = self.0.send(ctx.id);
        ctx.cancelled().await;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_handler_that_finishes_after_the_cancel_completes_the_job() {
    let broker = Arc::new(MemoryBroker::new());
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let worker = Worker::builder(broker.clone())
        .heartbeat(HEARTBEAT)
        .handler(FinishesOnCancel(started_tx))
        .build()
        .unwrap();
    let running = start(&worker);
    worker.client().enqueue(&task(1)).await.unwrap();
    let id = started.recv().await.unwrap();
    assert_eq!(broker.cancel(&queue(), id).await.unwrap(), CancelOutcome::Signalled);
    tokio::time::timeout(Duration::from_secs(3600), async {
        while worker.stats().completed == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the job completed within an hour of virtual time");
    running.stop().await;
    assert_eq!(
        broker.get_dead(&queue(), id).await.unwrap(),
        None,
        "a finished job is not dead"
    );
    assert_eq!(worker.stats().cancelled, 0);
}

#[tokio::test(start_paused = true)]
async fn a_job_cancelled_while_it_waits_in_the_buffer_never_starts() {
    let mut s = setup_with(true, QueueConfig::for_queue(queue()).concurrency(1));
    let first = s.worker.client().enqueue(&task(1)).await.unwrap().id();
    let second = s.worker.client().enqueue(&task(2)).await.unwrap().id();
    let running = start(&s.worker);
    assert_eq!(s.started.recv().await.unwrap(), first);
    // The second is leased into the buffer behind the first (prefetch).
    assert_eq!(
        s.broker.cancel(&queue(), second).await.unwrap(),
        CancelOutcome::Signalled,
        "the prefetched job is leased"
    );
    // One heartbeat brings the cancel to the worker; then the first ends.
    tokio::time::sleep(HEARTBEAT * 2).await;
    assert_eq!(
        s.broker.cancel(&queue(), first).await.unwrap(),
        CancelOutcome::Signalled
    );
    dead_as_cancelled(&s.broker, first).await;
    dead_as_cancelled(&s.broker, second).await;
    assert!(s.started.try_recv().is_err(), "the cancelled second job never started");
    running.stop().await;
}
