//! Graceful shutdown: every job in flight is completed or released.

use std::{sync::Arc, time::Duration};

use flagship_worker::{Broker, MemoryBroker, QueueConfig, Worker};

use super::{enqueue_tasks, next, queue, run_until_stats, scripted, start, Behaviour};

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
    enqueue_tasks(&worker, 100).await;

    let running = start(&worker);
    for _ in 0..64 {
        next(&mut seen).await;
    }
    // 64 jobs running, the rest leased ahead or ready: now shut down.
    running.stop().await;

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
    run_until_stats(&second, &*broker, &queue(), |stats| stats.completed >= 100).await;
    assert!(second.stats().completed > 0);
    let after = broker.stats(&queue()).await.unwrap();
    assert_eq!(
        after.retried + after.dead_lettered,
        0,
        "no job lost an attempt to the shutdown"
    );
}
