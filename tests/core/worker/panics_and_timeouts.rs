//! Code that panics or overruns (handlers, payload decoders, observers, a
//! broker's `complete`): the attempt fails or comes back, no job is lost,
//! and the worker goes on.

use std::{
    sync::{atomic::Ordering, Arc, Mutex},
    time::Duration,
};

use flagship_worker::{
    testing::TestWorker, Broker, FinishedJob, Job, JobObserver, JobOutcome, MemoryBroker, QueueConfig, RetryPolicy,
    Worker,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::{enqueue_tasks, queue, run_until_stats, scripted, start, succeeding, task, Behaviour, Faulty};

#[tokio::test(start_paused = true)]
async fn panics_and_timeouts_are_retryable_failures_and_the_worker_survives() {
    let (handler, _seen) = scripted(|_, attempt| match attempt {
        0 => Behaviour::Panic,
        1 => Behaviour::Sleep(Duration::from_secs(60)),
        _ => Behaviour::Succeed,
    });
    let worker = TestWorker::new(|w| {
        w.queue(QueueConfig::new("tasks").unwrap().job_timeout(Duration::from_secs(5)))
            .handler(handler)
    })
    .unwrap();
    worker.client().enqueue(&task(1)).await.unwrap();

    let ran = worker.run_until_empty().await.unwrap();
    let attempts: Vec<_> = ran.iter().map(|r| (r.attempt, r.outcome.unwrap())).collect();
    assert_eq!(
        attempts,
        [
            (0, JobOutcome::Retried),
            (1, JobOutcome::Retried),
            (2, JobOutcome::Completed)
        ]
    );
    let errors: Vec<_> = ran.iter().map(|r| r.error.as_deref().unwrap_or_default()).collect();
    assert!(errors[0].contains("handler blew up"), "{errors:?}");
    assert!(errors[1].contains("timed out after 5s"), "{errors:?}");
    let stats = worker.stats();
    assert_eq!(
        (stats.panicked, stats.timed_out, stats.retried, stats.completed),
        (1, 1, 2, 1)
    );
}

/// Enqueues tasks `0..n` and runs `worker` until the broker has completed
/// them all.
async fn complete_all(worker: &Worker, broker: &dyn Broker, n: u32) {
    enqueue_tasks(worker, n).await;
    run_until_stats(worker, broker, &queue(), |stats| stats.completed >= u64::from(n)).await;
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

#[tokio::test(start_paused = true)]
async fn a_panic_while_decoding_the_payload_is_a_failed_attempt_and_the_slot_goes_on() {
    let (handler, mut runs) = succeeding::<Fragile>();
    let worker = Worker::builder(Arc::new(MemoryBroker::new()))
        .queue(
            QueueConfig::new("tasks")
                .unwrap()
                .concurrency(1)
                .retry_policy(RetryPolicy::none()),
        )
        .handler(handler)
        .build()
        .unwrap();
    worker.client().enqueue(&Fragile { n: 1 }).await.unwrap();
    worker.client().enqueue(&Fragile { n: 2 }).await.unwrap();
    let running = start(&worker);
    // The only slot survives the first job's panic and runs the second.
    let next = tokio::time::timeout(Duration::from_secs(3600), runs.recv()).await;
    assert_eq!(next.expect("the second job runs").map(|seen| seen.job.n), Some(2));
    running.stop().await;
    let stats = worker.stats();
    assert_eq!((stats.panicked, stats.dead_lettered), (1, 1), "{stats:?}");
}

/// Tells a test when the first attempt's outcome is recorded.
struct FirstOutcome(Mutex<Option<oneshot::Sender<JobOutcome>>>);

impl JobObserver for FirstOutcome {
    fn on_job_finished(&self, job: &FinishedJob<'_>) {
        if let Some(tell) = self.0.lock().unwrap().take() {
            let _ = tell.send(job.outcome);
        }
    }
}

// A real clock: the handler's blocking part cannot advance a paused one.
// The outcome does not depend on the machine's speed: the 300 ms have
// always passed by the handler's first `.await`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_overruns_before_its_first_await_times_out_there() {
    let (tell, told) = oneshot::channel();
    // Overruns the timeout before its first `.await`.
    let (handler, _seen) =
        scripted(|_, _| Behaviour::BlockThenSleep(Duration::from_millis(300), Duration::from_millis(50)));
    let worker = Worker::builder(Arc::new(MemoryBroker::new()))
        .queue(
            QueueConfig::new("tasks")
                .unwrap()
                .job_timeout(Duration::from_millis(200))
                .retry_policy(RetryPolicy::none()),
        )
        .handler(handler)
        .observer(Arc::new(FirstOutcome(Mutex::new(Some(tell)))))
        .build()
        .unwrap();
    worker.client().enqueue(&task(1)).await.unwrap();
    let running = start(&worker);
    let outcome = tokio::time::timeout(Duration::from_secs(60), told).await;
    running.stop().await;
    assert_eq!(
        outcome.expect("an outcome within a minute").unwrap(),
        JobOutcome::DeadLettered
    );
    assert_eq!(worker.stats().timed_out, 1);
}
