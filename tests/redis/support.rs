//! Shared helpers: a server with a broker, jobs, and waiting on conditions.

use std::{sync::Arc, time::Duration};

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
    ReserveRequest::new(max, Duration::from_millis(lease_ms), Duration::ZERO)
}

/// Take up to `max` jobs, leased for 30 s, waiting up to `wait_ms`.
pub(crate) fn wait_for(max: usize, wait_ms: u64) -> ReserveRequest {
    ReserveRequest::new(max, Duration::from_secs(30), Duration::from_millis(wait_ms))
}

/// The example's handler, in-process: counts starts in `examples:started`,
/// waits `work`, records `n → worker` in `examples:done` with `HSETNX`.
pub(crate) struct DemoHandler {
    pub(crate) redis: redis::aio::ConnectionManager,
    pub(crate) work: Duration,
}

impl DemoHandler {
    pub(crate) async fn new(server: &RedisServer, work: Duration) -> Self {
        let redis = redis::aio::ConnectionManager::new(server.client()).await.unwrap();
        DemoHandler { redis, work }
    }
}

#[async_trait::async_trait]
impl flagship_worker::Handler for DemoHandler {
    type Job = Demo;

    async fn handle(&self, job: Demo, ctx: &flagship_worker::JobContext) -> Result<(), flagship_worker::HandlerError> {
        use redis::AsyncCommands;
        let mut redis = self.redis.clone();
        let _: i64 = redis
            .hincr("examples:started", ctx.id.to_string(), 1)
            .await
            .map_err(flagship_worker::HandlerError::retry)?;
        if !self.work.is_zero() {
            tokio::time::sleep(self.work).await;
        }
        let _: bool = redis
            .hset_nx("examples:done", job.n, &*ctx.worker_id)
            .await
            .map_err(flagship_worker::HandlerError::retry)?;
        Ok(())
    }
}

/// `examples/redis_worker`, built once per test run with this test's features.
pub(crate) fn example_binary() -> std::path::PathBuf {
    flagship_worker::testing::examples::build("redis_worker", &test_features())
}

/// The features this test was built with, so building an example does not
/// build the library again with other ones.
fn test_features() -> Vec<&'static str> {
    [
        ("redis", cfg!(feature = "redis")),
        ("postgres", cfg!(feature = "postgres")),
        ("test-util", cfg!(feature = "test-util")),
        ("flagship", cfg!(feature = "flagship")),
        ("http", cfg!(feature = "http")),
        ("admin", cfg!(feature = "admin")),
        ("cli", cfg!(feature = "cli")),
    ]
    .into_iter()
    .filter_map(|(name, on)| on.then_some(name))
    .collect()
}

pub(crate) use flagship_worker::testing::examples::WorkerProcess;

/// Starts `examples/redis_worker --work` against `server` with `args`.
pub(crate) fn worker_process(server: &RedisServer, args: &[&str]) -> WorkerProcess {
    WorkerProcess::start(&example_binary(), args, &[("REDIS_URL", &server.url())])
}

/// Reads a Redis hash of counters or names.
pub(crate) fn hash(server: &RedisServer, key: &str) -> std::collections::HashMap<String, String> {
    redis::Commands::hgetall(&mut server.connection(), key).unwrap()
}

#[path = "../support/workers.rs"]
mod workers;
#[allow(unused_imports)] // each crate uses its own share
pub(crate) use workers::{demo, eventually, run, stop, Demo};
