//! Helpers the Redis and PostgreSQL test crates share (included with
//! `#[path]`): waiting for a condition, running workers in the background,
//! and the example workers' demo job.

use std::{future::Future, time::Duration};

use chrono::Utc;
use flagship_worker::{JobEnvelope, QueueName, Worker};
use tokio::sync::watch;

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
#[allow(dead_code)] // not every crate stops workers this way
pub(crate) async fn stop(running: Vec<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>) {
    for (stop, task) in running {
        stop.send(true).unwrap();
        task.await.unwrap();
    }
}

/// The example workers' job (`examples/{redis,postgres}_worker.rs`): same kind and queue.
#[derive(Debug, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub(crate) struct Demo {
    pub(crate) n: u64,
}

impl flagship_worker::Job for Demo {
    const KIND: &'static str = "demo";
    const QUEUE: &'static str = "examples:demo";
}

/// A demo job envelope, as the examples' producers write it.
pub(crate) fn demo(n: u64) -> JobEnvelope {
    let queue = QueueName::new(<Demo as flagship_worker::Job>::QUEUE).unwrap();
    JobEnvelope::new("demo", queue, serde_json::json!({ "n": n }), Utc::now())
}
