//! The worker's part of the queue history: it sends each queue's ready
//! depth and the start latencies it measured to the broker every history
//! interval, and once more when it stops.

use std::{sync::Arc, time::Duration};

use flagship_worker::{
    broker::{QueueHistory, Resolution},
    MemoryBroker, TokioClock, Worker,
};

use super::{enqueue_tasks, next, queue, start, succeeding, task, Task};

#[tokio::test(start_paused = true)]
async fn the_worker_samples_depth_and_start_latency_into_the_history() {
    let clock = Arc::new(TokioClock::starting_at("2026-03-01T12:00:05Z".parse().unwrap()));
    let broker = Arc::new(MemoryBroker::with_clock(clock.clone()));
    let (handler, mut seen) = succeeding::<Task>();
    let worker = Worker::builder(broker.clone())
        .clock(clock.clone())
        .handler(handler)
        .history_interval(Duration::from_secs(20))
        .build()
        .unwrap();
    // Three jobs wait 8 s for the worker to start.
    enqueue_tasks(&worker, 3).await;
    tokio::time::advance(Duration::from_secs(8)).await;
    let running = start(&worker);
    for _ in 0..3 {
        next(&mut seen).await;
    }
    // A delayed job starts on time: its latency counts from due, not from enqueue.
    worker
        .client()
        .enqueue_with(
            &task(9),
            flagship_worker::EnqueueOptions::new().delay(Duration::from_secs(5)),
        )
        .await
        .unwrap();
    next(&mut seen).await;
    // Into the next minute, where the queue is empty.
    tokio::time::sleep(Duration::from_secs(60)).await;
    running.stop().await;

    let series = broker.history(&queue(), Resolution::Minute, 2).await.unwrap();
    let totals = series.totals();
    assert_eq!(totals.completed, 4, "{series:?}");
    assert_eq!(totals.latency.total(), 4, "one start latency per job started");
    let waited = totals.latency.0[flagship_worker::broker::history::LatencyCounts::range_of(8_000)];
    assert_eq!(waited, 3, "the three jobs that waited 8 s: {:?}", totals.latency);
    let sampled: Vec<_> = series.buckets.iter().map(|b| b.ready).collect();
    assert_eq!(
        sampled,
        [Some(3), Some(0)],
        "a minute keeps its first sample: the 3 jobs waiting when the worker started, then none"
    );
}
