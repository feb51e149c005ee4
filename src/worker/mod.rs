//! The [`Worker`]: pulls jobs from a broker and runs their handlers.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    future::Future,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use serde::Serialize;
use tokio::task::JoinSet;

use crate::{
    broker::Broker,
    client::Client,
    clock::{Clock, TokioClock},
    error::{Error, Result},
    handler::{ErasedHandler, Handler, Typed},
    job::{IdBuild, Job, JobId, QueueName},
    retry::RetryPolicy,
    schedule::Schedule,
    schema::{KindSchema, SchemaRegistry},
};

mod acks;
mod buffer;
mod fetch;
mod held;
mod keep;
mod queue;
mod registry;
mod run;
mod settle;
pub(crate) mod shutdown;

/// The most concurrent jobs one queue may run in one worker.
pub const MAX_CONCURRENCY: usize = 10_000;
/// The fewest jobs a queue leases ahead by default, so even a concurrency-1
/// worker has its next jobs at hand instead of waiting on a round trip.
const DEFAULT_MIN_PREFETCH: usize = 32;
/// How far a queue's default prefetch may grow: up to this many times its
/// starting value, and never past [`MAX_CONCURRENCY`] (see
/// [`QueueConfig::prefetch`]).
const PREFETCH_GROWTH: usize = 8;
/// How often a queue's sample goes to the broker's history by default.
const DEFAULT_HISTORY_INTERVAL: Duration = Duration::from_secs(30);
/// The shortest lease accepted.
pub const MIN_LEASE: Duration = Duration::from_millis(100);
/// The longest lease, job timeout or shutdown deadline accepted (one day).
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// How one queue is worked: concurrency, retry policy, job timeout.
///
/// ```
/// use std::time::Duration;
/// use flagship_worker::{QueueConfig, RetryPolicy};
///
/// let emails = QueueConfig::new("emails")?
///     .concurrency(8)
///     .retry_policy(RetryPolicy::linear(3, Duration::from_secs(10)))
///     .job_timeout(Duration::from_secs(30));
/// # Ok::<_, flagship_worker::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// The queue.
    name: QueueName,
    /// Jobs run at once (default 10).
    concurrency: usize,
    /// Policy for kinds without their own (default: 5 retries, exponential).
    retry: RetryPolicy,
    /// A handler running longer fails its attempt (default 5 minutes).
    job_timeout: Duration,
    /// Jobs leased ahead of free slots, so a slot never waits on a round
    /// trip between jobs; `None` adapts it (see [`QueueConfig::prefetch`]).
    prefetch: Option<usize>,
}

impl QueueConfig {
    /// Defaults for `name`: concurrency 10, exponential retries, 5 minute timeout.
    pub fn new(name: impl AsRef<str>) -> Result<Self> {
        Ok(Self::for_queue(QueueName::new(name)?))
    }

    /// Defaults for an already validated queue name.
    pub fn for_queue(name: QueueName) -> Self {
        QueueConfig {
            name,
            concurrency: 10,
            retry: RetryPolicy::exponential(),
            job_timeout: Duration::from_secs(300),
            prefetch: None,
        }
    }

    /// How many jobs of this queue run at once (1 to [`MAX_CONCURRENCY`]).
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// The retry policy for kinds of this queue without one of their own.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// How long one attempt may run before it fails as timed out.
    ///
    /// A handler is interrupted at an `.await`: one that overruns without
    /// awaiting times out at its next `.await`, or finishes if it has none.
    pub fn job_timeout(mut self, timeout: Duration) -> Self {
        self.job_timeout = timeout;
        self
    }

    /// Fixes how many jobs to lease ahead of free slots (1 to
    /// [`MAX_CONCURRENCY`]).
    ///
    /// Leasing ahead hides the broker's round trip between jobs; the cost
    /// is that jobs waiting in this worker's buffer are not available to
    /// other workers meanwhile (they are released at shutdown).
    ///
    /// By default the prefetch adapts. It starts at the concurrency (at
    /// least 32) and doubles, up to 8 times that (and at most
    /// [`MAX_CONCURRENCY`]),
    /// whenever slots ran out of work between two reservations that the
    /// broker filled completely: the jobs are faster than the round trip. It halves back when draining half the buffer takes
    /// longer than 100 ms: the jobs are slow, and other workers should get
    /// the rest. Set it to fix the number, e.g. low for long jobs spread
    /// over many workers.
    pub fn prefetch(mut self, prefetch: usize) -> Self {
        self.prefetch = Some(prefetch);
        self
    }

    /// The queue's name.
    pub fn name(&self) -> &QueueName {
        &self.name
    }

    fn validate(&self) -> Result<()> {
        let queue = &self.name;
        if self.concurrency == 0 || self.concurrency > MAX_CONCURRENCY {
            return Err(Error::InvalidConfig(format!(
                "queue `{queue}`: concurrency {} must be between 1 and {MAX_CONCURRENCY}",
                self.concurrency
            )));
        }
        if self.prefetch.is_some_and(|p| p == 0 || p > MAX_CONCURRENCY) {
            return Err(Error::InvalidConfig(format!(
                "queue `{queue}`: prefetch must be between 1 and {MAX_CONCURRENCY}"
            )));
        }
        check_duration(
            &format!("queue `{queue}`: job timeout"),
            self.job_timeout,
            Duration::from_millis(1),
        )?;
        self.retry
            .validate()
            .map_err(|e| Error::InvalidConfig(format!("queue `{queue}`: {e}")))
    }
}

/// The error for a [`QueueConfig`] whose queue no handler of the worker
/// runs on, naming the queues that have handlers.
fn unhandled_queue(
    queue: &QueueName,
    handled: &BTreeSet<&QueueName>,
    schedules: &[Schedule],
    registry: &SchemaRegistry,
) -> Error {
    let handled = if handled.is_empty() {
        "this worker has no handlers".to_owned()
    } else {
        let names: Vec<String> = handled.iter().map(|q| format!("`{q}`")).collect();
        format!("the queues with handlers are {}", names.join(", "))
    };
    let scheduled: Vec<String> = schedules
        .iter()
        .filter(|s| registry.get(s.kind()).is_some_and(|k| k.queue() == queue))
        .map(|s| format!("`{}`", s.name()))
        .collect();
    let hint = if scheduled.is_empty() {
        "fix the queue's name, or register a handler for its jobs".to_owned()
    } else {
        format!(
            "schedule {} enqueues onto it, but a schedule needs no QueueConfig: configure the queue in the worker \
             that handles its jobs, or register the handler here",
            scheduled.join(", ")
        )
    };
    Error::InvalidConfig(format!(
        "queue `{queue}` is configured but no handler runs on it, so its jobs would be dead-lettered as unknown kinds; {handled}; {hint}"
    ))
}

fn check_duration(what: &str, value: Duration, min: Duration) -> Result<()> {
    if value < min || value > MAX_DURATION {
        return Err(Error::InvalidConfig(format!(
            "{what} of {value:?} must be between {min:?} and {MAX_DURATION:?}"
        )));
    }
    Ok(())
}

/// Worker-wide settings, shared by every queue's tasks.
#[derive(Debug, Clone)]
struct Settings {
    /// How long a reservation is leased before another worker may recover it.
    lease: Duration,
    /// How often in-flight leases are extended.
    heartbeat: Duration,
    /// How often expired leases are looked for.
    recovery_interval: Duration,
    /// How long graceful shutdown waits for running jobs before releasing them.
    shutdown_timeout: Duration,
    /// How long an idle reserve call waits for work before trying again.
    idle_wait: Duration,
    /// How often each queue's depth and start latencies go to the
    /// broker's history.
    history_interval: Duration,
}

/// Counters of what a worker has done since it started (see [`WorkerStats`]).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) started: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) snoozed: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) panicked: AtomicU64,
    pub(crate) timed_out: AtomicU64,
    pub(crate) recovered: AtomicU64,
    pub(crate) released: AtomicU64,
    pub(crate) lease_lost: AtomicU64,
    pub(crate) broker_errors: AtomicU64,
    /// Jobs started and not settled yet (not a lifetime counter: what the
    /// worker registry shows).
    pub(crate) in_flight: AtomicU64,
}

/// A snapshot of a worker's lifecycle counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct WorkerStats {
    /// Attempts started.
    pub started: u64,
    /// Jobs completed and acknowledged.
    pub completed: u64,
    /// Attempts that failed (any reason).
    pub failed: u64,
    /// Failed attempts scheduled for a retry.
    pub retried: u64,
    /// Attempts whose handler asked to run the job later
    /// ([`HandlerError::Snooze`](crate::HandlerError::Snooze)); not failures.
    pub snoozed: u64,
    /// Jobs moved to the dead-letter queue, refused ones included.
    pub dead_lettered: u64,
    /// Jobs dead-lettered without running because they cannot run as they
    /// are: an unknown kind, or a payload (from a producer that did not
    /// validate it) that its schema refuses or that does not decode.
    pub refused: u64,
    /// Jobs an operator cancelled while they ran, dead-lettered as
    /// cancelled ([`JobControl::cancel`](crate::broker::JobControl::cancel)).
    pub cancelled: u64,
    /// Attempts whose handler panicked.
    pub panicked: u64,
    /// Attempts that ran past the job timeout.
    pub timed_out: u64,
    /// Jobs recovered from an expired lease.
    pub recovered: u64,
    /// Jobs released back to ready at shutdown.
    pub released: u64,
    /// Acknowledgements refused because the lease was gone.
    pub lease_lost: u64,
    /// Broker calls that failed.
    pub broker_errors: u64,
}

impl Counters {
    fn snapshot(&self) -> WorkerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WorkerStats {
            started: get(&self.started),
            completed: get(&self.completed),
            failed: get(&self.failed),
            retried: get(&self.retried),
            snoozed: get(&self.snoozed),
            dead_lettered: get(&self.dead_lettered),
            refused: get(&self.refused),
            cancelled: get(&self.cancelled),
            panicked: get(&self.panicked),
            timed_out: get(&self.timed_out),
            recovered: get(&self.recovered),
            released: get(&self.released),
            lease_lost: get(&self.lease_lost),
            broker_errors: get(&self.broker_errors),
        }
    }
}

/// How an attempt ended, as told to a [`JobObserver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JobOutcome {
    /// The handler succeeded and the broker acknowledged the job.
    Completed,
    /// The attempt failed and the job is scheduled to run again.
    Retried,
    /// The handler asked to run the job later; no attempt was counted.
    Snoozed,
    /// The attempt failed and the job is in the dead-letter queue.
    DeadLettered,
    /// The job could not run as it is (unknown kind, a payload its schema
    /// refuses or that does not decode) and is in the dead-letter queue.
    Refused,
    /// An operator cancelled the job while it ran and its handler did not
    /// finish it: it is in the dead-letter queue as cancelled.
    Cancelled,
}

impl JobOutcome {
    /// A short name for logs and metric labels: `completed`, `retried`,
    /// `snoozed`, `dead_lettered`, `refused`, `cancelled`.
    pub fn as_str(&self) -> &'static str {
        match self {
            JobOutcome::Completed => "completed",
            JobOutcome::Retried => "retried",
            JobOutcome::Snoozed => "snoozed",
            JobOutcome::DeadLettered => "dead_lettered",
            JobOutcome::Refused => "refused",
            JobOutcome::Cancelled => "cancelled",
        }
    }
}

/// One finished attempt, as told to a [`JobObserver`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct FinishedJob<'a> {
    /// The job.
    pub id: JobId,
    /// Its kind.
    pub kind: &'a str,
    /// Its queue.
    pub queue: &'a QueueName,
    /// The attempt that finished (0 for the first run).
    pub attempt: u32,
    /// How it ended.
    pub outcome: JobOutcome,
    /// From the attempt's start to the handler's end, by the worker's
    /// clock. For a recovered expired lease: from the lost attempt's start
    /// to its recovery; for a job that could not run: near zero.
    pub duration: Duration,
}

/// Watches the attempts a worker finishes, for metrics or logs; set it
/// with [`WorkerBuilder::observer`].
///
/// # Contract
///
/// - [`on_job_finished`](JobObserver::on_job_finished) is called once per
///   attempt whose outcome the broker recorded: after the acknowledgement
///   for [`JobOutcome::Completed`], after `retry_after` or `dead_letter`
///   succeeded for the others. It is not called for jobs released at
///   shutdown, nor for outcomes the broker refused (lease lost, broker
///   error), which show in [`WorkerStats`] instead.
/// - It runs on the worker's own tasks: it MUST return quickly and MUST
///   NOT block (record a counter, send on a channel).
pub trait JobObserver: Send + Sync + 'static {
    /// An attempt finished and its outcome is recorded.
    fn on_job_finished(&self, job: &FinishedJob<'_>);
}

/// A handler with its kind's compiled schema, looked up once per job.
pub(crate) struct Registered {
    pub(crate) handler: Arc<dyn ErasedHandler>,
    pub(crate) schema: Arc<KindSchema>,
}

/// Everything a running worker's tasks share.
pub(crate) struct Shared {
    /// Where jobs are reserved from and their outcomes recorded.
    pub(crate) broker: Arc<dyn Broker>,
    /// Attempt start and end times (the injected clock, so tests can pause it).
    pub(crate) clock: Arc<dyn Clock>,
    /// Handed to handlers in their context, to enqueue follow-up jobs;
    /// schedules enqueue their ticks through it.
    pub(crate) client: Client,
    /// By kind; looked up once per job, so hashed with the cheap hasher.
    pub(crate) handlers: HashMap<String, Registered, IdBuild>,
    /// Retry policies of kinds that override their queue's.
    pub(crate) kind_policies: HashMap<String, RetryPolicy>,
    /// What [`Worker::stats`] reads.
    pub(crate) counters: Counters,
    /// Names this worker in attempt records and logs.
    pub(crate) worker_id: Arc<str>,
    /// Told about every finished attempt (metrics).
    pub(crate) observers: Vec<Arc<dyn JobObserver>>,
    /// Leases, heartbeats and waits, the same for every queue.
    settings: Settings,
}

/// Runs handlers for jobs from a broker, with retries, leases, heartbeats,
/// expired-lease recovery, schedules and graceful shutdown.
///
/// Build it with [`Worker::builder`]; run it with [`Worker::run_until`].
///
/// ```
/// use std::{sync::Arc, time::Duration};
/// use async_trait::async_trait;
/// use flagship_worker::{Handler, HandlerError, Job, JobContext, MemoryBroker, Worker};
/// # use schemars::JsonSchema; use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize, JsonSchema)] struct Ping { n: u32 }
/// # impl Job for Ping { const KIND: &'static str = "ping"; const QUEUE: &'static str = "default"; }
/// struct Pong;
/// #[async_trait]
/// impl Handler for Pong {
///     type Job = Ping;
///     async fn handle(&self, job: Ping, _: &JobContext) -> Result<(), HandlerError> {
///         assert_eq!(job.n, 1);
///         Ok(())
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let worker = Worker::builder(Arc::new(MemoryBroker::new())).handler(Pong).build()?;
/// worker.client().enqueue(&Ping { n: 1 }).await?;
/// worker.run_until(tokio::time::sleep(Duration::from_millis(100))).await?;
/// assert_eq!(worker.stats().completed, 1);
/// # Ok::<_, flagship_worker::Error>(()) }).unwrap();
/// ```
#[derive(Clone)]
pub struct Worker {
    /// What the running tasks share; clones of the worker share it too.
    shared: Arc<Shared>,
    /// One set of tasks per queue runs each of these.
    queues: Arc<Vec<QueueConfig>>,
    /// Run beside the queues, each as its own task.
    schedules: Arc<Vec<Schedule>>,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.shared.worker_id)
            .field("queues", &self.queues)
            .field("kinds", &self.shared.handlers.keys().collect::<Vec<_>>())
            .field("settings", &self.shared.settings)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// Starts building a worker on `broker`.
    pub fn builder(broker: Arc<dyn Broker>) -> WorkerBuilder {
        WorkerBuilder::new(broker)
    }

    /// A client on the same broker and registry.
    pub fn client(&self) -> Client {
        self.shared.client.clone()
    }

    /// The worker's id, as recorded in attempt records.
    pub fn id(&self) -> &str {
        &self.shared.worker_id
    }

    /// The worker's counters so far.
    pub fn stats(&self) -> WorkerStats {
        self.shared.counters.snapshot()
    }

    /// Runs until `shutdown` resolves, then shuts down gracefully: stops
    /// taking jobs, waits up to the shutdown timeout for running jobs, and
    /// releases whatever has not finished back to ready (no attempt is
    /// counted). Returns once every job this worker held is acknowledged,
    /// scheduled for retry, dead-lettered or released.
    ///
    /// `shutdown` is any future; its output is ignored, so a
    /// `oneshot::Receiver` works as it is (dropping its sender stops the
    /// worker too), as do `tokio::signal::ctrl_c()` and a timer.
    pub async fn run_until<F: Future>(&self, shutdown: F) -> Result<()> {
        let (stop, stop_signal) = shutdown::signal();
        let (abort, abort_signal) = shutdown::signal();
        let signals = shutdown::Shutdown {
            stop: stop_signal.clone(),
            abort: abort_signal,
        };
        let mut tasks = JoinSet::new();
        tracing::info!(worker.id = %self.shared.worker_id, queues = self.queues.len(), "worker started");
        let info = registry::info(&self.shared, &self.queues);
        let registration = tokio::spawn(registry::heartbeat(self.shared.clone(), info));
        for config in self.queues.iter() {
            tasks.spawn(queue::run_queue(self.shared.clone(), config.clone(), signals.clone()));
        }
        for schedule in self.schedules.iter() {
            let schedule = schedule.clone();
            let client = self.shared.client.clone();
            let clock = self.shared.clock.clone();
            tasks.spawn(schedule.run(client, clock, stop_signal.clone()));
        }

        shutdown.await;
        tracing::info!(worker.id = %self.shared.worker_id, "worker shutting down");
        stop.raise();
        let deadline = tokio::time::sleep(self.shared.settings.shutdown_timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                joined = tasks.join_next() => match joined {
                    None => break,
                    Some(Err(e)) if e.is_panic() => tracing::error!(error = %e, "worker task panicked"),
                    Some(_) => {}
                },
                _ = &mut deadline, if !abort.is_raised() => {
                    tracing::warn!(worker.id = %self.shared.worker_id, "shutdown deadline passed; releasing unfinished jobs");
                    abort.raise();
                }
            }
        }
        registration.abort();
        registry::deregister(&self.shared).await;
        tracing::info!(worker.id = %self.shared.worker_id, "worker stopped");
        Ok(())
    }
}

/// One job a [`TestWorker`](crate::testing::TestWorker) ran, and how it ended.
#[cfg(feature = "test-util")]
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Ran {
    /// The job.
    pub id: JobId,
    /// Its kind.
    pub kind: String,
    /// The attempt that ran (0 for the first).
    pub attempt: u32,
    /// How the broker recorded it; `None` when it could not (lease lost,
    /// broker error).
    pub outcome: Option<JobOutcome>,
    /// What the handler (or the worker, for a job it refused) said when
    /// the attempt did not succeed.
    pub error: Option<String>,
}

#[cfg(feature = "test-util")]
impl Worker {
    /// Reserves one job of `queue`, waiting up to `wait` for one, and runs
    /// it to its recorded outcome; `None` when none came.
    pub(crate) async fn run_next(&self, queue: &QueueName, wait: Duration) -> Result<Option<Ran>> {
        let Some(config) = self.queues.iter().find(|c| &c.name == queue) else {
            let known: Vec<_> = self.queues.iter().map(|c| c.name.to_string()).collect();
            return Err(Error::InvalidConfig(format!(
                "this worker runs no queue `{queue}`; it runs: {}",
                known.join(", ")
            )));
        };
        let request = crate::broker::ReserveRequest::new(1, self.shared.settings.lease, wait)
            .worker(self.shared.worker_id.clone());
        let Some(job) = self.shared.broker.reserve(queue, request).await?.into_iter().next() else {
            return Ok(None);
        };
        Ok(Some(queue::run_one(&self.shared, config, job).await))
    }

    /// The queues this worker runs.
    pub(crate) fn queue_names(&self) -> impl Iterator<Item = &QueueName> {
        self.queues.iter().map(|c| &c.name)
    }

    /// The broker the worker was built on.
    pub(crate) fn broker(&self) -> &Arc<dyn Broker> {
        &self.shared.broker
    }
}

/// Registers one handler's job kind in the worker's schema registry.
type RegisterSchema = Box<dyn FnOnce(&SchemaRegistry) -> Result<()> + Send>;

/// Builds a [`Worker`]; every setting is checked by [`build`](WorkerBuilder::build).
pub struct WorkerBuilder {
    broker: Arc<dyn Broker>,
    registry: Option<Arc<SchemaRegistry>>,
    clock: Arc<dyn Clock>,
    handlers: Vec<(String, QueueName, Arc<dyn ErasedHandler>)>,
    register: Vec<RegisterSchema>,
    kind_policies: HashMap<String, RetryPolicy>,
    queues: BTreeMap<QueueName, QueueConfig>,
    schedules: Vec<Schedule>,
    lease: Duration,
    heartbeat: Option<Duration>,
    recovery_interval: Option<Duration>,
    shutdown_timeout: Duration,
    idle_wait: Duration,
    history_interval: Duration,
    worker_id: Option<String>,
    observers: Vec<Arc<dyn JobObserver>>,
    errors: Vec<Error>,
}

impl fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("queues", &self.queues)
            .field("kinds", &self.handlers.iter().map(|h| &h.0).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl WorkerBuilder {
    fn new(broker: Arc<dyn Broker>) -> Self {
        WorkerBuilder {
            broker,
            registry: None,
            clock: Arc::new(TokioClock::new()),
            handlers: Vec::new(),
            register: Vec::new(),
            kind_policies: HashMap::new(),
            queues: BTreeMap::new(),
            schedules: Vec::new(),
            lease: Duration::from_secs(30),
            heartbeat: None,
            recovery_interval: None,
            shutdown_timeout: Duration::from_secs(30),
            idle_wait: Duration::from_secs(1),
            history_interval: DEFAULT_HISTORY_INTERVAL,
            worker_id: None,
            observers: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// Configures a queue. Queues of registered handlers that are not
    /// configured get [`QueueConfig::new`]'s defaults. A configured queue
    /// must have a handler in this worker: [`build`](Self::build) refuses
    /// one without (a misspelt name, usually).
    pub fn queue(mut self, config: QueueConfig) -> Self {
        self.queues.insert(config.name.clone(), config);
        self
    }

    /// Registers a handler for its job kind (and the kind's schema).
    pub fn handler<H: Handler>(mut self, handler: H) -> Self {
        let kind = <H::Job as Job>::KIND;
        match QueueName::new(<H::Job as Job>::QUEUE) {
            Ok(queue) => {
                if self.handlers.iter().any(|(k, _, _)| k == kind) {
                    self.errors.push(Error::ConflictingKind(kind.to_owned()));
                }
                self.handlers.push((kind.to_owned(), queue, Arc::new(Typed(handler))));
                self.register
                    .push(Box::new(|registry| registry.register::<H::Job>().map(drop)));
            }
            Err(e) => self.errors.push(e),
        }
        self
    }

    /// Uses `policy` for jobs of `J` instead of their queue's policy.
    pub fn retry_policy_for<J: Job>(mut self, policy: RetryPolicy) -> Self {
        self.kind_policies.insert(J::KIND.to_owned(), policy);
        self
    }

    /// Shares a schema registry (and its payload limit) with other clients.
    pub fn registry(mut self, registry: Arc<SchemaRegistry>) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Reads time from `clock` (default: [`TokioClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Runs `schedule` in this worker. Any number of workers may run the
    /// same schedule: each tick still enqueues one job.
    pub fn schedule(mut self, schedule: Schedule) -> Self {
        self.schedules.push(schedule);
        self
    }

    /// How long a reserved job is leased (default 30 s). A worker that
    /// dies loses its jobs' leases after this long; they are then recovered.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How often running jobs' leases are extended (default: a third of the lease).
    pub fn heartbeat(mut self, interval: Duration) -> Self {
        self.heartbeat = Some(interval);
        self
    }

    /// How often expired leases are looked for (default: half the lease).
    pub fn recovery_interval(mut self, interval: Duration) -> Self {
        self.recovery_interval = Some(interval);
        self
    }

    /// How long graceful shutdown waits for running jobs (default 30 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// How often each queue's ready depth, oldest ready age and the start
    /// latencies measured meanwhile go to the broker's queue history
    /// (default 30 s, so every minute bucket gets a sample).
    pub fn history_interval(mut self, interval: Duration) -> Self {
        self.history_interval = interval;
        self
    }

    /// How long one idle reserve call waits for work (default 1 s).
    pub fn idle_wait(mut self, wait: Duration) -> Self {
        self.idle_wait = wait;
        self
    }

    /// Names this worker in attempt records and logs (default: process id
    /// and a random suffix).
    pub fn worker_id(mut self, id: impl Into<String>) -> Self {
        self.worker_id = Some(id.into());
        self
    }

    /// Tells `observer` about every finished attempt (see [`JobObserver`]).
    /// May be called more than once; every observer is told.
    pub fn observer(mut self, observer: Arc<dyn JobObserver>) -> Self {
        self.observers.push(observer);
        self
    }

    /// Checks the configuration and builds the worker.
    ///
    /// Fails with [`Error::InvalidConfig`] for an invalid setting, for a
    /// worker with neither handlers nor schedules, and for a
    /// [`QueueConfig`] whose queue none of the handlers runs on (the error
    /// names the queues that have handlers).
    pub fn build(mut self) -> Result<Worker> {
        if let Some(error) = self.errors.into_iter().next() {
            return Err(error);
        }
        if self.handlers.is_empty() && self.schedules.is_empty() {
            return Err(Error::InvalidConfig(
                "the worker has no handlers and no schedules; register a handler with `.handler(...)`".into(),
            ));
        }
        check_duration("lease", self.lease, MIN_LEASE)?;
        let heartbeat = self.heartbeat.unwrap_or(self.lease / 3);
        if heartbeat.is_zero() || heartbeat >= self.lease {
            return Err(Error::InvalidConfig(format!(
                "heartbeat of {heartbeat:?} must be above zero and shorter than the lease of {:?}",
                self.lease
            )));
        }
        let recovery_interval = self.recovery_interval.unwrap_or(self.lease / 2);
        check_duration("recovery interval", recovery_interval, Duration::from_millis(10))?;
        check_duration("shutdown timeout", self.shutdown_timeout, Duration::ZERO)?;
        check_duration("idle wait", self.idle_wait, Duration::from_millis(1))?;
        check_duration("history interval", self.history_interval, Duration::from_millis(10))?;
        for (kind, policy) in &self.kind_policies {
            policy
                .validate()
                .map_err(|e| Error::InvalidConfig(format!("job kind `{kind}`: {e}")))?;
        }

        let registry = self.registry.unwrap_or_default();
        for register in self.register.drain(..) {
            register(&registry)?;
        }
        for schedule in &self.schedules {
            schedule.register(&registry)?;
        }
        // A configured queue without a handler would be worked anyway: its
        // jobs dead-lettered as unknown kinds, and the handled queue it was
        // meant for (a typo, usually) left on the default settings.
        let handled: BTreeSet<&QueueName> = self.handlers.iter().map(|(_, queue, _)| queue).collect();
        if let Some(config) = self.queues.values().find(|c| !handled.contains(&c.name)) {
            return Err(unhandled_queue(config.name(), &handled, &self.schedules, &registry));
        }
        let mut handlers = HashMap::default();
        for (kind, queue, handler) in self.handlers {
            self.queues
                .entry(queue.clone())
                .or_insert_with(|| QueueConfig::for_queue(queue));
            let schema = registry.get(&kind).ok_or_else(|| Error::UnknownKind(kind.clone()))?;
            handlers.insert(kind, Registered { handler, schema });
        }
        for config in self.queues.values() {
            config.validate()?;
        }

        let worker_id: Arc<str> = self
            .worker_id
            .unwrap_or_else(|| format!("worker-{}-{:08x}", std::process::id(), rand::random::<u32>()))
            .into();
        let client = Client::with_registry(self.broker.clone(), registry.clone()).with_clock(self.clock.clone());
        let shared = Shared {
            broker: self.broker,
            clock: self.clock,
            client,
            handlers,
            kind_policies: self.kind_policies,
            counters: Counters::default(),
            worker_id,
            observers: self.observers,
            settings: Settings {
                lease: self.lease,
                heartbeat,
                recovery_interval,
                shutdown_timeout: self.shutdown_timeout,
                idle_wait: self.idle_wait,
                history_interval: self.history_interval,
            },
        };
        Ok(Worker {
            shared: Arc::new(shared),
            queues: Arc::new(self.queues.into_values().collect()),
            schedules: Arc::new(self.schedules),
        })
    }
}
