//! Leases: recovered when their worker dies, kept alive by heartbeats
//! while a long job runs.

use std::{
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    time::Duration,
};

use flagship_worker::{Broker, Error, MemoryBroker, ReserveRequest, Worker};

use super::{next, queue, scripted, start, task, Behaviour};

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

    let running = start(&worker);
    let run = next(&mut seen).await;
    assert_eq!(run.attempt, 1, "the lost attempt counts");
    running.stop().await;
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
    let running = start(&worker);
    next(&mut seen).await;
    while broker.stats(&queue()).await.unwrap().completed == 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.stop().await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "ten seconds on a one-second lease, never recovered"
    );
    assert_eq!(worker.stats().recovered, 0);
}
