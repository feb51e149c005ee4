//! [`TestWorker`]: run a worker's jobs one at a time from a test, and see
//! what its handlers enqueued.

use std::{
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;

use crate::{
    broker::{Backend, Broker, EnqueueOutcome, Lease, LeaseStatus, QueueStats, Reservation, ReserveRequest},
    client::Client,
    envelope::{AttemptRecord, JobEnvelope},
    error::{Error, Result},
    job::{Job, QueueName},
    worker::{Ran, Worker, WorkerBuilder, WorkerStats},
    MemoryBroker,
};

/// The most jobs [`TestWorker::run_until_empty`] runs before it gives up,
/// so a job that snoozes or retries forever fails the test instead of
/// hanging it.
pub const MAX_TEST_RUNS: usize = 10_000;

/// How long [`TestWorker::run_until_empty`] lets the paused clock run
/// forward to a delayed job: longer than any retry delay.
const LONG_WAIT: Duration = Duration::from_secs(366 * 24 * 3600);

/// A worker for tests: it runs the next job of a queue when asked, returns
/// how it ended, and remembers every job enqueued through it (by the test
/// or by the handlers it runs), on a paused tokio clock.
///
/// It is a real [`Worker`] (same handlers, schemas, retry policies,
/// broker calls) without its background tasks, so each step is one
/// `await` and nothing runs behind the test's back.
///
/// ```
/// use std::time::Duration;
/// use async_trait::async_trait;
/// use flagship_worker::{testing::TestWorker, Handler, HandlerError, Job, JobContext, JobOutcome};
/// # use schemars::JsonSchema; use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize, JsonSchema)] struct SignUp { user: u64 }
/// # impl Job for SignUp { const KIND: &'static str = "sign-up"; const QUEUE: &'static str = "users"; }
/// # #[derive(Serialize, Deserialize, JsonSchema)] struct SendWelcome { user: u64 }
/// # impl Job for SendWelcome { const KIND: &'static str = "send-welcome"; const QUEUE: &'static str = "emails"; }
///
/// struct OnSignUp;
///
/// #[async_trait]
/// impl Handler for OnSignUp {
///     type Job = SignUp;
///     async fn handle(&self, job: SignUp, ctx: &JobContext) -> Result<(), HandlerError> {
///         ctx.client.enqueue(&SendWelcome { user: job.user }).await.map_err(HandlerError::retry)?;
///         Ok(())
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
/// let worker = TestWorker::new(|w| w.handler(OnSignUp))?;
/// worker.client().enqueue(&SignUp { user: 7 }).await?;
///
/// let ran = worker.run_next(SignUp::QUEUE).await?.expect("a job was ready");
/// assert_eq!(ran.outcome, Some(JobOutcome::Completed));
/// worker.assert_enqueued::<SendWelcome>(|welcome| welcome.user == 7);
/// # Ok::<_, flagship_worker::Error>(()) }).unwrap();
/// ```
pub struct TestWorker {
    /// The worker whose jobs run; built on `recorder`.
    worker: Worker,
    /// The broker the worker talks to, remembering what is enqueued.
    recorder: Arc<Recorder>,
}

impl fmt::Debug for TestWorker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestWorker")
            .field("worker", &self.worker)
            .finish_non_exhaustive()
    }
}

impl TestWorker {
    /// A test worker on a fresh [`MemoryBroker`] (on tokio's clock),
    /// configured by `configure` (register handlers, queues, policies).
    pub fn new(configure: impl FnOnce(WorkerBuilder) -> WorkerBuilder) -> Result<Self> {
        Self::on(Arc::new(MemoryBroker::new()), configure)
    }

    /// A test worker on `backend`, configured by `configure`.
    pub fn on(backend: Arc<dyn Backend>, configure: impl FnOnce(WorkerBuilder) -> WorkerBuilder) -> Result<Self> {
        let recorder = Arc::new(Recorder {
            inner: backend,
            enqueued: Mutex::new(Vec::new()),
        });
        let worker = configure(Worker::builder(recorder.clone())).build()?;
        Ok(TestWorker { worker, recorder })
    }

    /// A client on the worker's broker and schemas; what it enqueues is
    /// remembered too.
    pub fn client(&self) -> Client {
        self.worker.client()
    }

    /// The backend under the worker, for its dead-letter queue and stats.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.recorder.inner
    }

    /// The worker's counters so far.
    pub fn stats(&self) -> WorkerStats {
        self.worker.stats()
    }

    /// Runs the next job of `queue` that is ready now and returns how it
    /// ended; `None` when no job is ready. Delayed jobs and retries become
    /// ready once the paused clock reaches them (`tokio::time::advance`).
    pub async fn run_next(&self, queue: &str) -> Result<Option<Ran>> {
        self.worker.run_next(&QueueName::new(queue)?, Duration::ZERO).await
    }

    /// Runs jobs of every queue the worker runs until none is ready or
    /// scheduled, letting the paused clock run forward to delayed jobs and
    /// retries. Returns what ran, in order.
    ///
    /// Delayed jobs of different queues run in the order they are due,
    /// on a broker whose [`reserve`](Broker::reserve) is cancel safe (the
    /// memory broker's is); on another, the first waiting queue's run first.
    ///
    /// Fails after [`MAX_TEST_RUNS`] jobs, so a job that keeps coming back
    /// fails the test instead of hanging it.
    pub async fn run_until_empty(&self) -> Result<Vec<Ran>> {
        let queues: Vec<QueueName> = self.worker.queue_names().cloned().collect();
        let broker = self.worker.broker();
        let mut ran = Vec::new();
        loop {
            let mut progressed = false;
            for queue in &queues {
                while let Some(one) = self.worker.run_next(queue, Duration::ZERO).await? {
                    record(&mut ran, one)?;
                    progressed = true;
                }
            }
            if progressed {
                continue;
            }
            // Nothing ready: wait for a delayed job, which on a paused
            // clock moves time straight to it.
            let mut delayed = Vec::new();
            for queue in &queues {
                if broker.stats(queue).await?.scheduled > 0 {
                    delayed.push(queue);
                }
            }
            let Some(&first) = delayed.first() else {
                return Ok(ran);
            };
            // With several queues waiting, the first job due among them
            // runs first. Waiting on all of them at once is safe only if an
            // abandoned wait leases nothing; otherwise wait on the first.
            if delayed.len() > 1 && broker.reserve_is_cancel_safe() {
                let waits = delayed.iter().map(|queue| {
                    // Released at once: any lease the broker accepts.
                    let request = ReserveRequest::new(1, Duration::from_secs(60), LONG_WAIT);
                    Box::pin(broker.reserve(queue, request))
                });
                let (due, _, _) = futures_util::future::select_all(waits).await;
                // The clock is at the first due job now: hand it back to
                // ready, where the next round runs it.
                let leases: Vec<Lease> = due?.into_iter().map(|job| job.lease).collect();
                broker.release(&leases).await?;
            } else if let Some(one) = self.worker.run_next(first, LONG_WAIT).await? {
                record(&mut ran, one)?;
            }
        }
    }

    /// Every job enqueued through this worker so far (by the test's client
    /// or by handlers), oldest first, whatever happened to it since.
    pub fn enqueued(&self) -> Vec<JobEnvelope> {
        self.recorder.enqueued.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The payloads of every job of type `J` enqueued through this worker.
    pub fn enqueued_of<J: Job>(&self) -> Vec<J> {
        self.enqueued()
            .into_iter()
            .filter(|e| e.kind == J::KIND)
            .filter_map(|e| e.payload.decode().ok())
            .collect()
    }

    /// Panics unless a job of type `J` for which `matches` holds was
    /// enqueued through this worker; the message lists what was enqueued.
    #[track_caller]
    pub fn assert_enqueued<J: Job>(&self, matches: impl Fn(&J) -> bool) {
        if self.enqueued_of::<J>().iter().any(matches) {
            return;
        }
        let kinds: Vec<String> = self.enqueued().iter().map(|e| e.kind.clone()).collect();
        panic!(
            "no `{}` job matching the predicate was enqueued; enqueued kinds: {kinds:?}",
            J::KIND
        );
    }
}

/// Adds `one` to what ran; fails once [`MAX_TEST_RUNS`] jobs have run.
fn record(ran: &mut Vec<Ran>, one: Ran) -> Result<()> {
    ran.push(one);
    if ran.len() >= MAX_TEST_RUNS {
        return Err(Error::InvalidConfig(format!(
            "jobs still ran after {MAX_TEST_RUNS} runs; a handler keeps retrying or snoozing"
        )));
    }
    Ok(())
}

/// A broker that passes every call through and remembers what is enqueued.
#[derive(Debug)]
struct Recorder {
    inner: Arc<dyn Backend>,
    enqueued: Mutex<Vec<JobEnvelope>>,
}

#[async_trait]
impl Broker for Recorder {
    async fn enqueue(&self, jobs: Vec<JobEnvelope>) -> Result<Vec<EnqueueOutcome>> {
        let outcomes = self.inner.enqueue(jobs.clone()).await?;
        let mut enqueued = self.enqueued.lock().unwrap_or_else(|p| p.into_inner());
        for (job, outcome) in jobs.into_iter().zip(&outcomes) {
            if outcome.is_enqueued() {
                enqueued.push(job);
            }
        }
        Ok(outcomes)
    }
    async fn reserve(&self, queue: &QueueName, request: ReserveRequest) -> Result<Vec<Reservation>> {
        self.inner.reserve(queue, request).await
    }
    async fn complete(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>> {
        self.inner.complete(leases).await
    }
    async fn retry_after(&self, job: &Reservation, delay: Duration, attempt: AttemptRecord) -> Result<()> {
        self.inner.retry_after(job, delay, attempt).await
    }
    async fn snooze(&self, job: &Reservation, delay: Duration) -> Result<()> {
        self.inner.snooze(job, delay).await
    }
    async fn dead_letter(&self, job: &Reservation, attempt: Option<AttemptRecord>, reason: &str) -> Result<()> {
        self.inner.dead_letter(job, attempt, reason).await
    }
    async fn release(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>> {
        self.inner.release(leases).await
    }
    async fn extend(&self, leases: &[Lease], lease: Duration) -> Result<Vec<LeaseStatus>> {
        self.inner.extend(leases, lease).await
    }
    async fn recover_expired(&self, queue: &QueueName, max: usize, lease: Duration) -> Result<Vec<Reservation>> {
        self.inner.recover_expired(queue, max, lease).await
    }
    async fn stats(&self, queue: &QueueName) -> Result<QueueStats> {
        self.inner.stats(queue).await
    }
    async fn queues(&self) -> Result<Vec<QueueName>> {
        self.inner.queues().await
    }
    fn reserve_is_cancel_safe(&self) -> bool {
        self.inner.reserve_is_cancel_safe()
    }
    fn control(&self) -> Option<&dyn crate::broker::JobControl> {
        Some(&*self.inner)
    }
    fn queue_history(&self) -> Option<&dyn crate::broker::QueueHistory> {
        self.inner.queue_history()
    }
    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }
}
