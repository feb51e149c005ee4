//! The worker end to end on the in-memory broker, on tokio's paused clock.

use std::{
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use flagship_worker::{
    broker::{EnqueueOutcome, Lease, LeaseStatus, QueueStats, Reservation},
    AttemptRecord, Broker, Client, DeadFilter, DeadLetterQueue, EnqueueOptions, Error, FinishedJob, Handler,
    HandlerError, Job, JobContext, JobEnvelope, JobObserver, JobOutcome, MemoryBroker, MissedTicks, QueueConfig,
    QueueName, ReserveRequest, RetryPolicy, Schedule, TokioClock, Worker,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
struct Task {
    n: u32,
    #[schemars(length(min = 1))]
    label: String,
}

impl Job for Task {
    const KIND: &'static str = "task";
    const QUEUE: &'static str = "tasks";
}

fn task(n: u32) -> Task {
    Task {
        n,
        label: format!("task-{n}"),
    }
}

fn queue() -> QueueName {
    QueueName::new(Task::QUEUE).unwrap()
}

/// What a handler saw: the job, its attempt number and when it ran.
#[derive(Debug)]
struct Seen {
    n: u32,
    attempt: u32,
    at: DateTime<Utc>,
}

/// A handler whose behaviour per call is given by a closure.
struct Scripted<F> {
    seen: mpsc::UnboundedSender<Seen>,
    behave: F,
}

#[async_trait]
impl<F> Handler for Scripted<F>
where
    F: Fn(&Task, u32) -> Behaviour + Send + Sync + 'static,
{
    type Job = Task;

    async fn handle(&self, job: Task, ctx: &JobContext) -> Result<(), HandlerError> {
        let _ = self.seen.send(Seen {
            n: job.n,
            attempt: ctx.attempt,
            at: ctx.started_at,
        });
        match (self.behave)(&job, ctx.attempt) {
            Behaviour::Succeed => Ok(()),
            Behaviour::Fail => Err(HandlerError::retry(format!(
                "job {} failed on attempt {}",
                job.n, ctx.attempt
            ))),
            Behaviour::FailAfter(delay) => Err(HandlerError::retry_after(delay, "rate limited")),
            Behaviour::FailPermanently => Err(HandlerError::permanent("hopeless")),
            Behaviour::Panic => panic!("handler blew up"),
            Behaviour::Sleep(d) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Behaviour {
    Succeed,
    Fail,
    FailAfter(Duration),
    FailPermanently,
    Panic,
    Sleep(Duration),
}

fn scripted<F>(behave: F) -> (Scripted<F>, mpsc::UnboundedReceiver<Seen>)
where
    F: Fn(&Task, u32) -> Behaviour + Send + Sync + 'static,
{
    let (seen, rx) = mpsc::unbounded_channel();
    (Scripted { seen, behave }, rx)
}

/// Runs `worker` in the background; send on the returned channel to stop it.
fn spawn(worker: &Worker) -> (oneshot::Sender<()>, tokio::task::JoinHandle<Result<(), Error>>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let worker = worker.clone();
    let handle = tokio::spawn(async move {
        worker
            .run_until(async {
                let _ = stopped.await;
            })
            .await
    });
    (stop, handle)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(Duration::from_secs(3600), rx.recv())
        .await
        .expect("the handler was not called within an hour of virtual time")
        .expect("handler channel closed")
}

#[tokio::test(start_paused = true)]
async fn a_job_that_always_fails_is_tried_six_times_with_exact_backoff_then_dead_lettered() {
    let broker = Arc::new(MemoryBroker::new());
    let (handler, mut seen) = scripted(|_, _| Behaviour::Fail);
    let worker = Worker::builder(broker.clone()).handler(handler).build().unwrap();
    worker.client().enqueue(&task(1)).await.unwrap();
    let (stop, running) = spawn(&worker);

    let mut runs = Vec::new();
    for _ in 0..6 {
        runs.push(next(&mut seen).await);
    }
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    assert!(seen.try_recv().is_err(), "no seventh attempt");

    assert_eq!(runs.iter().map(|r| r.attempt).collect::<Vec<_>>(), [0, 1, 2, 3, 4, 5]);
    let gaps: Vec<_> = runs
        .windows(2)
        .map(|w| (w[1].at - w[0].at).num_milliseconds())
        .collect();
    assert_eq!(gaps, [1_000, 2_000, 4_000, 8_000, 16_000]);

    let page = broker.list_dead(&DeadFilter::queue(queue()), None, 10).await.unwrap();
    assert_eq!(page.jobs.len(), 1);
    let dead = &page.jobs[0];
    assert_eq!(dead.attempts.len(), 6);
    let recorded: Vec<_> = dead
        .attempts
        .windows(2)
        .map(|w| (w[1].started_at - w[0].finished_at).num_milliseconds())
        .collect();
    assert_eq!(recorded, [1_000, 2_000, 4_000, 8_000, 16_000]);
    assert!(dead
        .attempts
        .iter()
        .all(|a| a.error.as_deref().is_some_and(|e| e.contains("failed on attempt"))));
    let reason = dead.dead_letter_reason.as_deref().unwrap();
    assert!(reason.contains("retries exhausted after 6 attempts"), "{reason}");
    let stats = worker.stats();
    assert_eq!(
        (stats.started, stats.failed, stats.retried, stats.dead_lettered),
        (6, 6, 5, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn bad_input_from_the_broker_goes_to_the_dlq_at_once_and_the_worker_keeps_going() {
    let broker = Arc::new(MemoryBroker::new());
    let (handler, mut seen) = scripted(|_, _| Behaviour::Succeed);
    let worker = Worker::builder(broker.clone()).handler(handler).build().unwrap();

    // A foreign producer wrote these straight into the broker, bypassing validation.
    let now = Utc::now();
    let unknown = JobEnvelope::new("no-such-kind", queue(), serde_json::json!({}), now);
    let malformed = JobEnvelope::new(
        Task::KIND,
        queue(),
        serde_json::json!({ "n": "one", "label": "x" }),
        now,
    );
    let (unknown_id, malformed_id) = (unknown.id, malformed.id);
    broker.enqueue(vec![unknown, malformed]).await.unwrap();
    worker.client().enqueue(&task(7)).await.unwrap();

    let (stop, running) = spawn(&worker);
    assert_eq!(next(&mut seen).await.n, 7, "the good job still runs");
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();

    let unknown = broker
        .get_dead(&queue(), unknown_id)
        .await
        .unwrap()
        .expect("unknown kind dead-lettered");
    assert!(unknown
        .dead_letter_reason
        .unwrap()
        .contains("unknown job kind `no-such-kind`"));
    assert_eq!(unknown.attempts.len(), 1, "dead at once, no retries");
    let malformed = broker
        .get_dead(&queue(), malformed_id)
        .await
        .unwrap()
        .expect("bad payload dead-lettered");
    let reason = malformed.dead_letter_reason.unwrap();
    assert!(reason.contains("/n"), "reason names the JSON path: {reason}");
    assert_eq!(malformed.attempts.len(), 1);
    assert_eq!(worker.stats().retried, 0);
}

#[tokio::test(start_paused = true)]
async fn invalid_payloads_are_refused_at_enqueue_with_the_json_path_and_nothing_is_stored() {
    let broker = Arc::new(MemoryBroker::new());
    let client = Client::new(broker.clone());
    client.registry().register::<Task>().unwrap();

    let err = client
        .enqueue_raw(
            "task",
            serde_json::json!({ "n": 1, "label": "" }),
            EnqueueOptions::new(),
        )
        .await
        .unwrap_err();
    match &err {
        Error::InvalidPayload { path, .. } => assert_eq!(path, "/label"),
        other => panic!("expected InvalidPayload, got {other}"),
    }
    assert!(err.to_string().contains("/label"));
    assert!(matches!(
        client
            .enqueue_raw("task", serde_json::json!("not an object"), EnqueueOptions::new())
            .await,
        Err(Error::InvalidPayload { .. })
    ));
    assert!(matches!(
        client
            .enqueue_raw("unknown", serde_json::json!({}), EnqueueOptions::new())
            .await,
        Err(Error::UnknownKind(_))
    ));
    // A batch with one bad job enqueues nothing.
    let batch = [
        task(1),
        Task {
            n: 2,
            label: String::new(),
        },
    ];
    assert!(client.enqueue_batch(&batch, EnqueueOptions::new()).await.is_err());
    let stats = broker.stats(&queue()).await.unwrap();
    assert_eq!(stats.ready + stats.scheduled, 0);
}

#[tokio::test(start_paused = true)]
async fn oversized_payloads_are_refused() {
    let broker = Arc::new(MemoryBroker::new());
    let registry = Arc::new(flagship_worker::SchemaRegistry::new().with_max_payload_bytes(1024));
    let client = Client::with_registry(broker.clone(), registry);
    let big = Task {
        n: 1,
        label: "x".repeat(2048),
    };
    assert!(matches!(
        client.enqueue(&big).await,
        Err(Error::PayloadTooLarge { limit: 1024, .. })
    ));
    assert_eq!(broker.stats(&queue()).await.unwrap().ready, 0);
}

#[tokio::test(start_paused = true)]
async fn graceful_shutdown_completes_or_releases_every_job_in_flight() {
    let broker = Arc::new(MemoryBroker::new());
    // Even jobs finish quickly; odd ones would run for an hour.
    let (handler, mut seen) = scripted(|job, _| {
        if job.n % 2 == 0 {
            Behaviour::Sleep(Duration::from_millis(10))
        } else {
            Behaviour::Sleep(Duration::from_secs(3600))
        }
    });
    let worker = Worker::builder(broker.clone())
        .queue(
            QueueConfig::new("tasks")
                .unwrap()
                .concurrency(64)
                .job_timeout(Duration::from_secs(7200)),
        )
        .shutdown_timeout(Duration::from_secs(1))
        .handler(handler)
        .build()
        .unwrap();
    let jobs: Vec<_> = (0..100).map(task).collect();
    worker
        .client()
        .enqueue_batch(&jobs, EnqueueOptions::new())
        .await
        .unwrap();

    let (stop, running) = spawn(&worker);
    for _ in 0..64 {
        next(&mut seen).await;
    }
    // 64 jobs running, the rest leased ahead or ready: now shut down.
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();

    let stats = broker.stats(&queue()).await.unwrap();
    let worker_stats = worker.stats();
    assert_eq!(stats.active, 0, "nothing left leased");
    assert_eq!(stats.scheduled + stats.dead, 0);
    assert_eq!(
        stats.completed + stats.ready,
        100,
        "every job completed or back in ready: {stats:?}"
    );
    assert!(stats.completed >= 1 && stats.ready >= 32, "{stats:?}");
    assert_eq!(worker_stats.completed, stats.completed);
    assert_eq!(worker_stats.failed, 0, "releasing at shutdown counts no attempt");

    // The released jobs are intact: a new worker finishes all of them.
    let (handler, _seen) = scripted(|_, _| Behaviour::Succeed);
    let second = Worker::builder(broker.clone()).handler(handler).build().unwrap();
    let (stop, running) = spawn(&second);
    while broker.stats(&queue()).await.unwrap().completed < 100 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    assert!(second.stats().completed > 0);
    let after = broker.stats(&queue()).await.unwrap();
    assert_eq!(
        after.retried + after.dead_lettered,
        0,
        "no job lost an attempt to the shutdown"
    );
}

/// Counts how many of its jobs run at once. Each job waits at a barrier
/// for as many as the queue's concurrency: if fewer ever overlap, the jobs
/// never finish.
struct Overlap {
    running: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
    done: std::sync::atomic::AtomicUsize,
    barrier: tokio::sync::Barrier,
    all_done: tokio::sync::Notify,
    total: usize,
}

#[async_trait]
impl Handler for Overlap {
    type Job = Task;

    async fn handle(&self, _: Task, _: &JobContext) -> Result<(), HandlerError> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        self.barrier.wait().await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        if self.done.fetch_add(1, Ordering::SeqCst) + 1 == self.total {
            self.all_done.notify_one();
        }
        Ok(())
    }
}

/// Slots take jobs back to back and wake each other only when a job waits:
/// waiting jobs must still overlap up to the queue's concurrency, and never
/// beyond it.
async fn waiting_jobs_overlap_up_to_the_concurrency(paused_clock: bool) {
    let broker = Arc::new(MemoryBroker::new());
    let handler = Arc::new(Overlap {
        running: Default::default(),
        most: Default::default(),
        done: Default::default(),
        barrier: tokio::sync::Barrier::new(50),
        all_done: Default::default(),
        total: 200,
    });
    let worker = Worker::builder(broker.clone())
        .queue(QueueConfig::new("tasks").unwrap().concurrency(50))
        .handler(handler.clone())
        .build()
        .unwrap();
    let (stop, running) = spawn(&worker);
    if paused_clock {
        // Let every slot go idle first (instant on the paused clock), so
        // jobs reach them through wake-ups rather than by being there at start.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let jobs: Vec<_> = (0..200).map(task).collect();
    worker
        .client()
        .enqueue_batch(&jobs, EnqueueOptions::new())
        .await
        .unwrap();
    // Fails (rather than hangs) if fewer than 50 jobs ever overlap.
    tokio::time::timeout(Duration::from_secs(60), handler.all_done.notified())
        .await
        .expect("200 jobs in barriers of 50 finish only if 50 run at once");
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    assert_eq!(
        handler.most.load(Ordering::SeqCst),
        50,
        "never more than the concurrency"
    );
    assert_eq!(worker.stats().completed, 200);
}

#[tokio::test(start_paused = true)]
async fn waiting_jobs_overlap_up_to_the_concurrency_on_one_thread() {
    waiting_jobs_overlap_up_to_the_concurrency(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_jobs_overlap_up_to_the_concurrency_on_two_threads() {
    waiting_jobs_overlap_up_to_the_concurrency(false).await;
}

#[tokio::test(start_paused = true)]
async fn panics_and_timeouts_are_retryable_failures_and_the_worker_survives() {
    let broker = Arc::new(MemoryBroker::new());
    let (handler, mut seen) = scripted(|_, attempt| match attempt {
        0 => Behaviour::Panic,
        1 => Behaviour::Sleep(Duration::from_secs(60)),
        _ => Behaviour::Succeed,
    });
    let worker = Worker::builder(broker.clone())
        .queue(QueueConfig::new("tasks").unwrap().job_timeout(Duration::from_secs(5)))
        .handler(handler)
        .build()
        .unwrap();
    worker.client().enqueue(&task(1)).await.unwrap();
    let (stop, running) = spawn(&worker);
    let attempts: Vec<_> = [next(&mut seen).await, next(&mut seen).await, next(&mut seen).await]
        .iter()
        .map(|s| s.attempt)
        .collect();
    assert_eq!(attempts, [0, 1, 2]);
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    let stats = worker.stats();
    assert_eq!(
        (stats.panicked, stats.timed_out, stats.retried, stats.completed),
        (1, 1, 2, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn permanent_errors_dead_letter_at_once_and_retry_after_waits_as_told() {
    let broker = Arc::new(MemoryBroker::new());
    let (handler, mut seen) = scripted(|job, attempt| match (job.n, attempt) {
        (1, _) => Behaviour::FailPermanently,
        (2, 0) => Behaviour::FailAfter(Duration::from_secs(42)),
        _ => Behaviour::Succeed,
    });
    let worker = Worker::builder(broker.clone()).handler(handler).build().unwrap();
    let client = worker.client();
    let permanent = client.enqueue(&task(1)).await.unwrap().id();
    client.enqueue(&task(2)).await.unwrap();
    let (stop, running) = spawn(&worker);
    let mut runs = Vec::new();
    for _ in 0..3 {
        runs.push(next(&mut seen).await);
    }
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();

    let job2: Vec<_> = runs.iter().filter(|s| s.n == 2).collect();
    assert_eq!((job2[1].at - job2[0].at).num_seconds(), 42);
    let dead = broker.get_dead(&queue(), permanent).await.unwrap().unwrap();
    assert_eq!(dead.attempts.len(), 1);
    assert!(dead.dead_letter_reason.unwrap().contains("hopeless"));
}

#[tokio::test(start_paused = true)]
async fn an_expired_lease_is_recovered_and_counted_as_a_failed_attempt() {
    let broker = Arc::new(MemoryBroker::new());
    let (handler, mut seen) = scripted(|_, _| Behaviour::Succeed);
    let worker = Worker::builder(broker.clone())
        .lease(Duration::from_secs(2))
        .recovery_interval(Duration::from_millis(500))
        .handler(handler)
        .build()
        .unwrap();
    worker.client().enqueue(&task(1)).await.unwrap();

    // A worker that reserves the job and then dies.
    let request = ReserveRequest::new(1, Duration::from_secs(2), Duration::ZERO);
    let crashed = broker.reserve(&queue(), request).await.unwrap();
    assert_eq!(crashed.len(), 1);

    let (stop, running) = spawn(&worker);
    let run = next(&mut seen).await;
    assert_eq!(run.attempt, 1, "the lost attempt counts");
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    assert_eq!(worker.stats().recovered, 1);
    // The dead worker comes back: its lease is fenced.
    assert!(matches!(
        broker.complete_one(&crashed[0].lease).await,
        Err(Error::LeaseLost(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn heartbeats_keep_a_long_job_leased() {
    let broker = Arc::new(MemoryBroker::new());
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let (handler, mut seen) = scripted(move |_, _| {
        counted.fetch_add(1, Ordering::SeqCst);
        Behaviour::Sleep(Duration::from_secs(10))
    });
    let worker = Worker::builder(broker.clone())
        .lease(Duration::from_secs(1))
        .recovery_interval(Duration::from_millis(200))
        .handler(handler)
        .build()
        .unwrap();
    worker.client().enqueue(&task(1)).await.unwrap();
    let (stop, running) = spawn(&worker);
    next(&mut seen).await;
    while broker.stats(&queue()).await.unwrap().completed == 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "ten seconds on a one-second lease, never recovered"
    );
    assert_eq!(worker.stats().recovered, 0);
}

#[tokio::test(start_paused = true)]
async fn kind_policies_override_the_queue_policy() {
    let broker = Arc::new(MemoryBroker::new());
    let (handler, mut seen) = scripted(|_, _| Behaviour::Fail);
    let worker = Worker::builder(broker.clone())
        .handler(handler)
        .retry_policy_for::<Task>(RetryPolicy::linear(2, Duration::from_secs(3)))
        .build()
        .unwrap();
    worker.client().enqueue(&task(1)).await.unwrap();
    let (stop, running) = spawn(&worker);
    let runs = [next(&mut seen).await, next(&mut seen).await, next(&mut seen).await];
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    assert_eq!((runs[1].at - runs[0].at).num_seconds(), 3);
    assert_eq!((runs[2].at - runs[1].at).num_seconds(), 6);
    assert_eq!(broker.count_dead(&DeadFilter::queue(queue())).await.unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_dead_job_retried_from_the_dlq_runs_again_with_its_history() {
    let broker = Arc::new(MemoryBroker::new());
    let calls = AtomicU32::new(0);
    let (handler, mut seen) = scripted(move |_, _| {
        if calls.fetch_add(1, Ordering::SeqCst) == 0 {
            Behaviour::FailPermanently
        } else {
            Behaviour::Succeed
        }
    });
    let worker = Worker::builder(broker.clone()).handler(handler).build().unwrap();
    let id = worker.client().enqueue(&task(1)).await.unwrap().id();
    let (stop, running) = spawn(&worker);
    next(&mut seen).await;
    while broker.get_dead(&queue(), id).await.unwrap().is_none() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(broker.retry_dead(&queue(), id).await.unwrap());
    let rerun = next(&mut seen).await;
    assert_eq!(rerun.attempt, 0, "a DLQ retry starts a fresh round of attempts");
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    let stats = broker.stats(&queue()).await.unwrap();
    assert_eq!((stats.completed, stats.dead), (1, 0));
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct Tick {}

impl Job for Tick {
    const KIND: &'static str = "tick";
    const QUEUE: &'static str = "maintenance";
}

struct CountTicks(mpsc::UnboundedSender<DateTime<Utc>>);

#[async_trait]
impl Handler for CountTicks {
    type Job = Tick;
    async fn handle(&self, _: Tick, ctx: &JobContext) -> Result<(), HandlerError> {
        let _ = self.0.send(ctx.started_at);
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn two_workers_running_one_schedule_enqueue_one_job_per_tick() {
    // One clock for the broker and both workers, starting a second past a tick.
    let clock = Arc::new(TokioClock::starting_at("2026-01-01T00:00:01Z".parse().unwrap()));
    let broker = Arc::new(MemoryBroker::with_clock(clock.clone()));
    let (ticks_tx, mut ticks) = mpsc::unbounded_channel();
    let make = || {
        let schedule = Schedule::every("every-ten", Duration::from_secs(10), &Tick {})
            .unwrap()
            .on_missed(MissedTicks::Skip);
        Worker::builder(broker.clone())
            .clock(clock.clone())
            .handler(CountTicks(ticks_tx.clone()))
            .schedule(schedule)
            .build()
            .unwrap()
    };
    let (a, b) = (make(), make());
    let (stop_a, run_a) = spawn(&a);
    let (stop_b, run_b) = spawn(&b);
    tokio::time::sleep(Duration::from_secs(35)).await;
    stop_a.send(()).unwrap();
    stop_b.send(()).unwrap();
    run_a.await.unwrap().unwrap();
    run_b.await.unwrap().unwrap();
    let mut seen = Vec::new();
    while let Ok(t) = ticks.try_recv() {
        seen.push(t);
    }
    assert_eq!(seen.len(), 3, "35 s hold three 10 s ticks, each run once: {seen:?}");
    assert!(
        seen.iter().all(|t| t.timestamp_millis() % 10_000 == 0),
        "ticks are aligned: {seen:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn after_downtime_the_latest_missed_tick_runs_once() {
    let broker = Arc::new(MemoryBroker::new());
    let (ticks_tx, mut ticks) = mpsc::unbounded_channel();
    let hourly = || Schedule::cron("hourly", "0 0 * * * *", &Tick {}).unwrap();
    // Two restarts in a row: the missed tick runs once, not once per start.
    for _ in 0..2 {
        let worker = Worker::builder(broker.clone())
            .handler(CountTicks(ticks_tx.clone()))
            .schedule(hourly())
            .build()
            .unwrap();
        let (stop, running) = spawn(&worker);
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop.send(()).unwrap();
        running.await.unwrap().unwrap();
    }
    assert!(ticks.try_recv().is_ok(), "the latest missed tick ran");
    assert!(ticks.try_recv().is_err(), "and only once");

    // With `Skip`, nothing runs until the next tick.
    let broker = Arc::new(MemoryBroker::new());
    let skip = hourly().on_missed(MissedTicks::Skip);
    let worker = Worker::builder(broker.clone())
        .handler(CountTicks(ticks_tx.clone()))
        .schedule(skip)
        .build()
        .unwrap();
    let (stop, running) = spawn(&worker);
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    assert!(ticks.try_recv().is_err());
}

type Configure = fn(flagship_worker::WorkerBuilder) -> flagship_worker::WorkerBuilder;

#[test]
fn bad_configuration_is_refused_when_built() {
    let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new());
    let build = |f: Configure| {
        let (handler, _rx) = scripted(|_, _| Behaviour::Succeed);
        f(Worker::builder(broker.clone()).handler(handler)).build()
    };
    let cases: [(&str, Configure); 8] = [
        ("concurrency", |b| {
            b.queue(QueueConfig::new("tasks").unwrap().concurrency(0))
        }),
        ("concurrency", |b| {
            b.queue(QueueConfig::new("tasks").unwrap().concurrency(1_000_000))
        }),
        ("lease", |b| b.lease(Duration::from_millis(1))),
        ("lease", |b| b.lease(Duration::from_secs(365 * 24 * 3600))),
        ("heartbeat", |b| {
            b.lease(Duration::from_secs(10)).heartbeat(Duration::from_secs(20))
        }),
        ("retries", |b| {
            b.queue(
                QueueConfig::new("tasks")
                    .unwrap()
                    .retry_policy(RetryPolicy::exponential().with_max_retries(5_000)),
            )
        }),
        ("job timeout", |b| {
            b.queue(QueueConfig::new("tasks").unwrap().job_timeout(Duration::ZERO))
        }),
        ("idle wait", |b| b.idle_wait(Duration::ZERO)),
    ];
    for (what, case) in cases {
        let err = build(case).expect_err(what).to_string();
        assert!(err.contains(what), "`{err}` should mention {what}");
    }
    assert!(build(|b| b).is_ok());
    assert!(
        Worker::builder(broker.clone()).build().is_err(),
        "a worker with nothing to do"
    );
    assert!(QueueConfig::new("").is_err());
    assert!(QueueConfig::new("x".repeat(200)).is_err());
}

#[tokio::test(start_paused = true)]
async fn a_run_at_absurdly_far_ahead_is_refused() {
    let client = Client::new(Arc::new(MemoryBroker::new()));
    let far = EnqueueOptions::new().delay(Duration::from_secs(100 * 365 * 24 * 3600));
    let err = client.enqueue_with(&task(1), far).await.unwrap_err();
    assert!(err.to_string().contains("ten years"), "{err}");
    let retries = EnqueueOptions::new().max_retries(1_000_000);
    assert!(client.enqueue_with(&task(1), retries).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn a_scheduler_only_worker_enqueues_ticks_for_other_workers() {
    let clock = Arc::new(TokioClock::starting_at("2026-01-01T00:00:01Z".parse().unwrap()));
    let broker = Arc::new(MemoryBroker::with_clock(clock.clone()));
    let schedule = Schedule::every("every-ten", Duration::from_secs(10), &Tick {})
        .unwrap()
        .on_missed(MissedTicks::Skip);
    let scheduler = Worker::builder(broker.clone())
        .clock(clock)
        .schedule(schedule)
        .build()
        .unwrap();
    let (stop, running) = spawn(&scheduler);
    tokio::time::sleep(Duration::from_secs(25)).await;
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    let stats = broker.stats(&QueueName::new(Tick::QUEUE).unwrap()).await.unwrap();
    assert_eq!(
        stats.ready, 2,
        "ticks at 10 s and 20 s wait for a worker with the handler"
    );
}

/// A memory broker that can be made to misbehave: slow to record failures
/// (a network round trip), or panicking on the next `complete`.
#[derive(Debug, Default)]
struct Faulty {
    inner: MemoryBroker,
    /// How long `retry_after` and `dead_letter` take.
    settle_delay: Duration,
    /// Panic in the next `complete` call.
    panic_next_complete: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl Broker for Faulty {
    async fn enqueue(&self, jobs: Vec<JobEnvelope>) -> Result<Vec<EnqueueOutcome>, Error> {
        self.inner.enqueue(jobs).await
    }
    async fn reserve(&self, queue: &QueueName, request: ReserveRequest) -> Result<Vec<Reservation>, Error> {
        self.inner.reserve(queue, request).await
    }
    async fn complete(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>, Error> {
        if self.panic_next_complete.swap(false, Ordering::SeqCst) {
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

/// Enqueues tasks `0..n`, runs `worker` until the broker has completed them
/// all (within an hour of virtual time), then stops it, which must take
/// under a minute.
async fn complete_all(worker: &Worker, broker: &dyn Broker, n: u32) {
    let jobs: Vec<_> = (0..n).map(task).collect();
    worker
        .client()
        .enqueue_batch(&jobs, EnqueueOptions::new())
        .await
        .unwrap();
    let (stop, running) = spawn(worker);
    tokio::time::timeout(Duration::from_secs(3600), async {
        while broker.stats(&queue()).await.unwrap().completed < u64::from(n) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("jobs not completed within an hour of virtual time");
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(60), running)
        .await
        .expect("the worker stops")
        .unwrap()
        .unwrap();
}

struct PanickingObserver;

impl JobObserver for PanickingObserver {
    fn on_job_finished(&self, _: &FinishedJob<'_>) {
        panic!("observer bug");
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_observer_neither_loses_jobs_nor_stops_shutdown() {
    let broker = Arc::new(MemoryBroker::new());
    let (handler, _seen) = scripted(|_, _| Behaviour::Succeed);
    let worker = Worker::builder(broker.clone())
        .queue(QueueConfig::new("tasks").unwrap().concurrency(10))
        .handler(handler)
        .observer(Arc::new(PanickingObserver))
        .build()
        .unwrap();
    complete_all(&worker, &*broker, 3000).await;
    assert_eq!(worker.stats().completed, 3000);
}

#[tokio::test(start_paused = true)]
async fn a_panic_while_completing_loses_no_job() {
    let broker = Arc::new(Faulty::default());
    broker.panic_next_complete.store(true, Ordering::SeqCst);
    let (handler, _seen) = scripted(|_, _| Behaviour::Succeed);
    let worker = Worker::builder(broker.clone())
        .queue(QueueConfig::new("tasks").unwrap().concurrency(10))
        .handler(handler)
        .build()
        .unwrap();
    // The first batch's completion panics: its jobs run again once their
    // leases expire, and every job ends up completed.
    complete_all(&worker, &*broker, 100).await;
    let stats = broker.stats(&queue()).await.unwrap();
    assert_eq!((stats.completed, stats.ready, stats.active), (100, 0, 0), "{stats:?}");
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
struct Fragile {
    #[serde(deserialize_with = "panics_on_one")]
    n: u32,
}

fn panics_on_one<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = u32::deserialize(d)?;
    assert_ne!(n, 1, "payload decoder panicked");
    Ok(n)
}

impl Job for Fragile {
    const KIND: &'static str = "fragile";
    const QUEUE: &'static str = "tasks";
}

struct FragileHandler(mpsc::UnboundedSender<u32>);

#[async_trait]
impl Handler for FragileHandler {
    type Job = Fragile;

    async fn handle(&self, job: Fragile, _: &JobContext) -> Result<(), HandlerError> {
        let _ = self.0.send(job.n);
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_panic_while_decoding_the_payload_is_a_failed_attempt_and_the_slot_goes_on() {
    let broker = Arc::new(MemoryBroker::new());
    let (ran, mut runs) = mpsc::unbounded_channel();
    let worker = Worker::builder(broker.clone())
        .queue(
            QueueConfig::new("tasks")
                .unwrap()
                .concurrency(1)
                .retry_policy(RetryPolicy::none()),
        )
        .handler(FragileHandler(ran))
        .build()
        .unwrap();
    worker.client().enqueue(&Fragile { n: 1 }).await.unwrap();
    worker.client().enqueue(&Fragile { n: 2 }).await.unwrap();
    let (stop, running) = spawn(&worker);
    // The only slot survives the first job's panic and runs the second.
    let next = tokio::time::timeout(Duration::from_secs(3600), runs.recv()).await;
    assert_eq!(next.expect("the second job runs"), Some(2));
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    let stats = worker.stats();
    assert_eq!((stats.panicked, stats.dead_lettered), (1, 1), "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn failures_waiting_on_the_broker_are_recorded_side_by_side() {
    // Recording each failure takes 100 ms; 50 slots record 50 at once.
    let broker = Arc::new(Faulty {
        settle_delay: Duration::from_millis(100),
        ..Faulty::default()
    });
    let (handler, _seen) = scripted(|_, _| Behaviour::FailPermanently);
    let worker = Worker::builder(broker.clone())
        .queue(QueueConfig::new("tasks").unwrap().concurrency(50))
        .handler(handler)
        .build()
        .unwrap();
    let (stop, running) = spawn(&worker);
    // Let the slots go idle, so jobs reach them through wake-ups.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let jobs: Vec<_> = (0..50).map(task).collect();
    worker
        .client()
        .enqueue_batch(&jobs, EnqueueOptions::new())
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    while broker.stats(&queue()).await.unwrap().dead < 50 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = started.elapsed();
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    // One at a time would take 5 s; side by side, one round trip.
    assert!(took < Duration::from_millis(500), "took {took:?}");
}

/// Tells a test when the first attempt's outcome is recorded.
struct FirstOutcome(std::sync::Mutex<Option<oneshot::Sender<JobOutcome>>>);

impl JobObserver for FirstOutcome {
    fn on_job_finished(&self, job: &FinishedJob<'_>) {
        if let Some(tell) = self.0.lock().unwrap().take() {
            let _ = tell.send(job.outcome);
        }
    }
}

struct BlocksThenWaits;

#[async_trait]
impl Handler for BlocksThenWaits {
    type Job = Task;

    async fn handle(&self, _: Task, _: &JobContext) -> Result<(), HandlerError> {
        // Overruns the timeout before its first `.await`.
        std::thread::sleep(Duration::from_millis(300));
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok(())
    }
}

// A real clock: the handler's blocking part cannot advance a paused one.
// The outcome does not depend on the machine's speed: the 300 ms have
// always passed by the handler's first `.await`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_overruns_before_its_first_await_times_out_there() {
    let (tell, told) = oneshot::channel();
    let worker = Worker::builder(Arc::new(MemoryBroker::new()))
        .queue(
            QueueConfig::new("tasks")
                .unwrap()
                .job_timeout(Duration::from_millis(200))
                .retry_policy(RetryPolicy::none()),
        )
        .handler(BlocksThenWaits)
        .observer(Arc::new(FirstOutcome(std::sync::Mutex::new(Some(tell)))))
        .build()
        .unwrap();
    worker.client().enqueue(&task(1)).await.unwrap();
    let (stop, running) = spawn(&worker);
    let outcome = tokio::time::timeout(Duration::from_secs(60), told).await;
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    assert_eq!(
        outcome.expect("an outcome within a minute").unwrap(),
        JobOutcome::DeadLettered
    );
    assert_eq!(worker.stats().timed_out, 1);
}
