//! Shared helpers: a database with a broker, jobs, workers, and waiting on
//! conditions.

use std::{future::Future, sync::Arc, time::Duration};

use chrono::Utc;
use flagship_worker::{
    broker::postgres::PostgresBroker, testing::postgres_server::TestDatabase, JobEnvelope, QueueName, ReserveRequest,
    Worker,
};
use tokio::sync::watch;

/// A fresh database and a broker connected to it.
pub(crate) async fn start() -> Option<(TestDatabase, Arc<PostgresBroker>)> {
    let db = TestDatabase::create().await?;
    let broker = PostgresBroker::connect(db.url())
        .await
        .expect("connect to the test database");
    Some((db, Arc::new(broker)))
}

pub(crate) fn queue(name: &str) -> QueueName {
    QueueName::new(name).unwrap()
}

/// A job of kind `k` on `queue`, ready now.
pub(crate) fn job(queue: &QueueName, n: u64) -> JobEnvelope {
    JobEnvelope::new("k", queue.clone(), serde_json::json!({ "n": n }), Utc::now())
}

/// Take up to `max` jobs, leased for `lease_ms`, without waiting.
pub(crate) fn take(max: usize, lease_ms: u64) -> ReserveRequest {
    ReserveRequest::new(max, Duration::from_millis(lease_ms), Duration::ZERO)
}

/// Polls `condition` until it holds; panics after `limit`.
pub(crate) async fn eventually<F, Fut>(what: &str, limit: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs `worker` until the returned sender says stop.
pub(crate) fn run(worker: &Worker) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (stop, mut stopped) = watch::channel(false);
    let worker = worker.clone();
    let task = tokio::spawn(async move {
        worker
            .run_until(async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await
            .unwrap();
    });
    (stop, task)
}

/// Stops workers started with [`run`] and waits for them.
pub(crate) async fn stop(running: Vec<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>) {
    for (stop, task) in running {
        stop.send(true).unwrap();
        task.await.unwrap();
    }
}
