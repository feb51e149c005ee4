//! Shared helpers: a server with a broker, jobs, and waiting on conditions.

use std::{future::Future, sync::Arc, time::Duration};

use chrono::Utc;
use flagship_worker::{
    broker::redis::RedisBroker,
    testing::redis_server::{RedisServer, RedisServerOptions},
    JobEnvelope, QueueName, ReserveRequest,
};

/// A fresh server and a broker connected to it.
pub(crate) async fn start() -> Option<(RedisServer, Arc<RedisBroker>)> {
    start_with(RedisServerOptions::new()).await
}

/// A fresh server configured by `options`, and a broker connected to it.
pub(crate) async fn start_with(options: RedisServerOptions) -> Option<(RedisServer, Arc<RedisBroker>)> {
    let server = RedisServer::start_with(options)?;
    let broker = RedisBroker::connect(server.url()).await.expect("connect to test redis");
    Some((server, Arc::new(broker)))
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
    ReserveRequest {
        max,
        lease: Duration::from_millis(lease_ms),
        wait: Duration::ZERO,
    }
}

/// Take up to `max` jobs, leased for 30 s, waiting up to `wait_ms`.
pub(crate) fn wait_for(max: usize, wait_ms: u64) -> ReserveRequest {
    ReserveRequest {
        max,
        lease: Duration::from_secs(30),
        wait: Duration::from_millis(wait_ms),
    }
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
