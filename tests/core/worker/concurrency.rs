//! Concurrency: jobs overlap up to their queue's concurrency and never
//! beyond, and slots waiting on the broker wait side by side.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use async_trait::async_trait;
use flagship_worker::{Broker, Handler, HandlerError, JobContext, MemoryBroker, QueueConfig, Worker};
use tokio::sync::{Barrier, Notify};

use super::{enqueue_tasks, queue, scripted, start, Behaviour, Faulty, Task};

/// Counts how many of its jobs run at once. Each job waits at a barrier
/// for as many as the queue's concurrency: if fewer ever overlap, the jobs
/// never finish.
struct Overlap {
    running: AtomicUsize,
    most: AtomicUsize,
    done: AtomicUsize,
    barrier: Barrier,
    all_done: Notify,
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
    let handler = Arc::new(Overlap {
        running: Default::default(),
        most: Default::default(),
        done: Default::default(),
        barrier: Barrier::new(50),
        all_done: Default::default(),
        total: 200,
    });
    let worker = Worker::builder(Arc::new(MemoryBroker::new()))
        .queue(QueueConfig::new("tasks").unwrap().concurrency(50))
        .handler(handler.clone())
        .build()
        .unwrap();
    let running = start(&worker);
    if paused_clock {
        // Let every slot go idle first (instant on the paused clock), so
        // jobs reach them through wake-ups rather than by being there at start.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    enqueue_tasks(&worker, 200).await;
    // Fails (rather than hangs) if fewer than 50 jobs ever overlap.
    tokio::time::timeout(Duration::from_secs(60), handler.all_done.notified())
        .await
        .expect("200 jobs in barriers of 50 finish only if 50 run at once");
    running.stop().await;
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
    let running = start(&worker);
    // Let the slots go idle, so jobs reach them through wake-ups.
    tokio::time::sleep(Duration::from_secs(1)).await;
    enqueue_tasks(&worker, 50).await;
    let started = tokio::time::Instant::now();
    while broker.stats(&queue()).await.unwrap().dead < 50 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = started.elapsed();
    running.stop().await;
    // One at a time would take 5 s; side by side, one round trip.
    assert!(took < Duration::from_millis(500), "took {took:?}");
}
