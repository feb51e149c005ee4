//! The worker end to end on the in-memory broker, on tokio's paused clock,
//! one file per topic.
//!
//! A test that only runs jobs one at a time (run the next job, run until
//! the queues are empty, see what was enqueued) drives a
//! [`TestWorker`](flagship_worker::testing::TestWorker). A test of what the
//! worker's background tasks do (shutdown, heartbeats, recovery, jobs
//! overlapping, schedules) runs a real worker with [`start`].

mod bad_input;
mod concurrency;
mod config;
mod control;
mod history;
mod leases;
mod panics_and_timeouts;
mod retries;
mod schedules;
mod shutdown;

use std::{sync::atomic::AtomicBool, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use flagship_worker::{
    broker::{EnqueueOutcome, Lease, LeaseStatus, QueueStats, Reservation},
    AttemptRecord, Broker, EnqueueOptions, Error, Handler, HandlerError, Job, JobContext, JobEnvelope, MemoryBroker,
    QueueName, ReserveRequest, Worker,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

/// The job most tests run.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub(crate) struct Task {
    pub(crate) n: u32,
    #[schemars(length(min = 1))]
    pub(crate) label: String,
}

impl Job for Task {
    const KIND: &'static str = "task";
    const QUEUE: &'static str = "tasks";
}

pub(crate) fn task(n: u32) -> Task {
    Task {
        n,
        label: format!("task-{n}"),
    }
}

/// The queue of [`Task`]s.
pub(crate) fn queue() -> QueueName {
    QueueName::new(Task::QUEUE).unwrap()
}

/// What a handler saw: the job, its attempt number and when it ran.
#[derive(Debug)]
pub(crate) struct Seen<J> {
    pub(crate) job: J,
    pub(crate) attempt: u32,
    pub(crate) at: DateTime<Utc>,
}

/// What a [`Scripted`] handler does with one job.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Behaviour {
    Succeed,
    Fail,
    FailAfter(Duration),
    FailPermanently,
    Snooze(Duration),
    Panic,
    Sleep(Duration),
    /// Blocks its thread, then waits: overruns a timeout before its first `.await`.
    BlockThenSleep(Duration, Duration),
}

/// A handler that reports each job it sees on a channel, then behaves as
/// its closure says for that job and attempt.
pub(crate) struct Scripted<J, F> {
    seen: mpsc::UnboundedSender<Seen<J>>,
    behave: F,
}

impl<J, F: Clone> Clone for Scripted<J, F> {
    fn clone(&self) -> Self {
        Scripted {
            seen: self.seen.clone(),
            behave: self.behave.clone(),
        }
    }
}

#[async_trait]
impl<J, F> Handler for Scripted<J, F>
where
    J: Job,
    F: Fn(&J, u32) -> Behaviour + Send + Sync + 'static,
{
    type Job = J;

    async fn handle(&self, job: J, ctx: &JobContext) -> Result<(), HandlerError> {
        let behaviour = (self.behave)(&job, ctx.attempt);
        let _ = self.seen.send(Seen {
            job,
            attempt: ctx.attempt,
            at: ctx.started_at,
        });
        match behaviour {
            Behaviour::Succeed => Ok(()),
            Behaviour::Fail => Err(HandlerError::retry(format!("failed on attempt {}", ctx.attempt))),
            Behaviour::FailAfter(delay) => Err(HandlerError::retry_after(delay, "rate limited")),
            Behaviour::FailPermanently => Err(HandlerError::permanent("hopeless")),
            Behaviour::Snooze(delay) => Err(HandlerError::snooze(delay)),
            Behaviour::Panic => panic!("handler blew up"),
            Behaviour::Sleep(d) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
            Behaviour::BlockThenSleep(block, sleep) => {
                std::thread::sleep(block);
                tokio::time::sleep(sleep).await;
                Ok(())
            }
        }
    }
}

/// What a [`Scripted`] handler saw, job by job.
pub(crate) type SeenJobs<J> = mpsc::UnboundedReceiver<Seen<J>>;

fn script<J, F>(behave: F) -> (Scripted<J, F>, SeenJobs<J>) {
    let (seen, rx) = mpsc::unbounded_channel();
    (Scripted { seen, behave }, rx)
}

/// A [`Task`] handler that behaves as `behave` says.
pub(crate) fn scripted<F>(behave: F) -> (Scripted<Task, F>, SeenJobs<Task>)
where
    F: Fn(&Task, u32) -> Behaviour + Send + Sync + 'static,
{
    script(behave)
}

/// A [`Scripted`] handler that always succeeds.
pub(crate) type Succeeding<J> = Scripted<J, fn(&J, u32) -> Behaviour>;

/// A handler of `J` that succeeds and reports each job.
pub(crate) fn succeeding<J: Job>() -> (Succeeding<J>, SeenJobs<J>) {
    script(|_, _| Behaviour::Succeed)
}

/// The next job the handler sees, within an hour of virtual time.
pub(crate) async fn next<J>(seen: &mut SeenJobs<J>) -> Seen<J> {
    tokio::time::timeout(Duration::from_secs(3600), seen.recv())
        .await
        .expect("the handler was not called within an hour of virtual time")
        .expect("handler channel closed")
}

/// Every job the handler has seen and not yet reported.
pub(crate) fn seen_so_far<J>(seen: &mut SeenJobs<J>) -> Vec<Seen<J>> {
    std::iter::from_fn(|| seen.try_recv().ok()).collect()
}

/// Enqueues tasks `0..n` through `worker`'s client, in one batch.
pub(crate) async fn enqueue_tasks(worker: &Worker, n: u32) {
    let jobs: Vec<_> = (0..n).map(task).collect();
    worker
        .client()
        .enqueue_batch(&jobs, EnqueueOptions::new())
        .await
        .unwrap();
}

/// A worker running in the background, until [`Running::stop`].
pub(crate) struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), Error>>,
}

/// Runs `worker` (its queues, schedules, heartbeats and recovery) in the background.
pub(crate) fn start(worker: &Worker) -> Running {
    let (stop, stopped) = oneshot::channel();
    let worker = worker.clone();
    Running {
        stop,
        task: tokio::spawn(async move { worker.run_until(stopped).await }),
    }
}

impl Running {
    /// Stops the worker, which must still be running, and waits for its
    /// shutdown: clean, within a minute.
    pub(crate) async fn stop(self) {
        self.stop.send(()).expect("the worker is still running");
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("the worker stops within a minute")
            .expect("the worker's task did not panic")
            .expect("the worker shut down cleanly");
    }
}

/// Runs `worker` until `queue`'s stats satisfy `done` (looked at every
/// 10 ms, within an hour of virtual time), then stops it.
pub(crate) async fn run_until_stats(
    worker: &Worker,
    broker: &dyn Broker,
    queue: &QueueName,
    done: impl Fn(&QueueStats) -> bool,
) {
    let running = start(worker);
    tokio::time::timeout(Duration::from_secs(3600), async {
        while !done(&broker.stats(queue).await.unwrap()) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the queue got there within an hour of virtual time");
    running.stop().await;
}

/// A memory broker that can be made to misbehave: slow to record failures
/// (a network round trip), panicking on the next `complete`, or refusing
/// to enqueue as unreachable for a while (an outage).
#[derive(Debug, Default)]
pub(crate) struct Faulty {
    inner: MemoryBroker,
    /// How long `retry_after`, `snooze` and `dead_letter` take.
    pub(crate) settle_delay: Duration,
    /// Panic in the next `complete` call.
    pub(crate) panic_next_complete: AtomicBool,
    /// While tokio's clock is in this range, `enqueue` fails with
    /// [`Error::Unavailable`].
    pub(crate) enqueue_down: Option<std::ops::Range<tokio::time::Instant>>,
}

#[async_trait]
impl Broker for Faulty {
    async fn enqueue(&self, jobs: Vec<JobEnvelope>) -> Result<Vec<EnqueueOutcome>, Error> {
        if let Some(down) = &self.enqueue_down {
            if down.contains(&tokio::time::Instant::now()) {
                return Err(Error::Unavailable("the broker is down for this test".into()));
            }
        }
        self.inner.enqueue(jobs).await
    }
    async fn reserve(&self, queue: &QueueName, request: ReserveRequest) -> Result<Vec<Reservation>, Error> {
        self.inner.reserve(queue, request).await
    }
    async fn complete(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>, Error> {
        if self
            .panic_next_complete
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            panic!("broker bug while completing");
        }
        self.inner.complete(leases).await
    }
    async fn retry_after(&self, job: &Reservation, delay: Duration, attempt: AttemptRecord) -> Result<(), Error> {
        tokio::time::sleep(self.settle_delay).await;
        self.inner.retry_after(job, delay, attempt).await
    }
    async fn snooze(&self, job: &Reservation, delay: Duration) -> Result<(), Error> {
        tokio::time::sleep(self.settle_delay).await;
        self.inner.snooze(job, delay).await
    }
    async fn dead_letter(&self, job: &Reservation, attempt: Option<AttemptRecord>, reason: &str) -> Result<(), Error> {
        tokio::time::sleep(self.settle_delay).await;
        self.inner.dead_letter(job, attempt, reason).await
    }
    async fn release(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>, Error> {
        self.inner.release(leases).await
    }
    async fn extend(&self, leases: &[Lease], lease: Duration) -> Result<Vec<LeaseStatus>, Error> {
        self.inner.extend(leases, lease).await
    }
    async fn recover_expired(&self, queue: &QueueName, max: usize, lease: Duration) -> Result<Vec<Reservation>, Error> {
        self.inner.recover_expired(queue, max, lease).await
    }
    async fn stats(&self, queue: &QueueName) -> Result<QueueStats, Error> {
        self.inner.stats(queue).await
    }
    async fn queues(&self) -> Result<Vec<QueueName>, Error> {
        self.inner.queues().await
    }
}
