//! The broker conformance suite on [`MemoryBroker`], on a paused tokio
//! clock (the broker reads tokio's clock, so time passes instantly).
//!
//! [`MemoryBroker`]: flagship_worker::MemoryBroker

use flagship_worker::{broker::DEFAULT_KEY_RETENTION, testing::conformance::MemoryFixture};

flagship_worker::conformance_tests! {
    fixture: MemoryFixture::new(),
    test: #[tokio::test(start_paused = true)],
    concurrent_test: #[tokio::test(flavor = "multi_thread", worker_threads = 4)],
    key_retention: DEFAULT_KEY_RETENTION,
}

/// Released jobs go back in `run_at` order, whatever order workers release
/// them in: the oldest runs first and sets the oldest ready age. (Redis puts
/// each released job at the head; see `QueueStats::oldest_ready_age_ms`.)
#[tokio::test(start_paused = true)]
async fn released_jobs_go_back_in_run_at_order() {
    use std::time::Duration;

    use flagship_worker::{Broker, JobEnvelope, MemoryBroker, QueueName, ReserveRequest};

    let broker = MemoryBroker::new();
    let queue = QueueName::new("released").unwrap();
    let request = ReserveRequest::new(1, Duration::from_secs(3600), Duration::ZERO);
    let enqueue = |n: u32| {
        let envelope = JobEnvelope::new("k", queue.clone(), serde_json::json!({ "n": n }), chrono::Utc::now());
        broker.enqueue(vec![envelope])
    };
    enqueue(1).await.unwrap();
    let older = broker.reserve(&queue, request).await.unwrap().remove(0);
    tokio::time::sleep(Duration::from_secs(600)).await;
    enqueue(2).await.unwrap();
    let younger = broker.reserve(&queue, request).await.unwrap().remove(0);
    // The worker holding the older job releases it first.
    broker.release(std::slice::from_ref(&older.lease)).await.unwrap();
    broker.release(std::slice::from_ref(&younger.lease)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;

    let stats = broker.stats(&queue).await.unwrap();
    assert_eq!(stats.oldest_ready_age_ms, Some(660_000), "{stats:?}");
    let first = broker.reserve(&queue, request).await.unwrap().remove(0);
    assert_eq!(first.envelope.payload, serde_json::json!({ "n": 1 }));
}
