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
    let older = broker.reserve(&queue, request.clone()).await.unwrap().remove(0);
    tokio::time::sleep(Duration::from_secs(600)).await;
    enqueue(2).await.unwrap();
    let younger = broker.reserve(&queue, request.clone()).await.unwrap().remove(0);
    // The worker holding the older job releases it first.
    broker.release(std::slice::from_ref(&older.lease)).await.unwrap();
    broker.release(std::slice::from_ref(&younger.lease)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;

    let stats = broker.stats(&queue).await.unwrap();
    assert_eq!(stats.oldest_ready_age_ms, Some(660_000), "{stats:?}");
    let first = broker.reserve(&queue, request).await.unwrap().remove(0);
    assert_eq!(first.envelope.payload, serde_json::json!({ "n": 1 }));
}

/// The provided `retry_dead_matching` (what a backend gets without writing
/// its own) lists before it retries: a retried job that dies again during
/// the call, after the listing's cursor, is not retried a second time.
#[tokio::test(start_paused = true)]
async fn the_provided_bulk_retry_retries_each_dead_job_once() {
    use std::{sync::Arc, time::Duration};

    use async_trait::async_trait;
    use chrono::{DateTime, Utc};
    use flagship_worker::{
        Broker, DeadCursor, DeadFilter, DeadLetterQueue, DeadPage, JobEnvelope, JobId, MemoryBroker, QueueName,
        ReserveRequest, Result,
    };

    /// The memory broker's DLQ with only the required methods, whose jobs
    /// die again right after each of the first `.1` retries (a worker
    /// failing them at once).
    #[derive(Debug)]
    struct Minimal(Arc<MemoryBroker>, std::sync::atomic::AtomicUsize);

    #[async_trait]
    impl DeadLetterQueue for Minimal {
        async fn list_dead(&self, filter: &DeadFilter, cursor: Option<&DeadCursor>, limit: usize) -> Result<DeadPage> {
            self.0.list_dead(filter, cursor, limit).await
        }
        async fn get_dead(&self, queue: &QueueName, id: JobId) -> Result<Option<JobEnvelope>> {
            self.0.get_dead(queue, id).await
        }
        async fn retry_dead(&self, queue: &QueueName, id: JobId) -> Result<bool> {
            let retried = self.0.retry_dead(queue, id).await?;
            if self.1.fetch_sub(1, std::sync::atomic::Ordering::Relaxed) == 0 {
                self.1.store(0, std::sync::atomic::Ordering::Relaxed);
                return Ok(retried);
            }
            tokio::time::advance(Duration::from_millis(1)).await;
            let request = ReserveRequest::new(1, Duration::from_secs(60), Duration::ZERO);
            for job in self.0.reserve(queue, request).await? {
                self.0.dead_letter(&job, None, "died again").await?;
            }
            Ok(retried)
        }
        async fn delete_dead(&self, queue: &QueueName, id: JobId) -> Result<bool> {
            self.0.delete_dead(queue, id).await
        }
        async fn purge_dead(&self, queue: &QueueName, older_than: DateTime<Utc>) -> Result<u64> {
            self.0.purge_dead(queue, older_than).await
        }
    }

    let broker = Arc::new(MemoryBroker::new());
    let queue = QueueName::new("bulk").unwrap();
    // More than one page of dead jobs, so the listing pages past re-dead ones.
    let jobs = 1_100;
    let envelopes = (0..jobs)
        .map(|n| JobEnvelope::new("k", queue.clone(), serde_json::json!({ "n": n }), Utc::now()))
        .collect();
    broker.enqueue(envelopes).await.unwrap();
    let request = ReserveRequest::new(jobs, Duration::from_secs(60), Duration::ZERO);
    for job in broker.reserve(&queue, request).await.unwrap() {
        broker.dead_letter(&job, None, "first death").await.unwrap();
    }
    let minimal = Minimal(broker.clone(), jobs.into());
    let filter = DeadFilter::queue(queue.clone());
    assert_eq!(minimal.count_dead(&filter).await.unwrap(), jobs as u64);
    assert_eq!(
        minimal.retry_dead_matching(&filter).await.unwrap(),
        jobs as u64,
        "each dead job is retried once"
    );
    assert_eq!(broker.stats(&queue).await.unwrap().dead_lettered, 2 * jobs as u64);
}
