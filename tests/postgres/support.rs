//! Shared helpers: a database with a broker, jobs, workers, and waiting on
//! conditions.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use flagship_worker::{
    broker::postgres::{sqlx, PostgresBroker},
    testing::postgres_server::TestDatabase,
    JobEnvelope, QueueName, ReserveRequest, Worker,
};

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

/// The example's tables, for workers in this process.
pub(crate) async fn create_example_tables(pool: &sqlx::PgPool) {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS examples_started (job_id uuid PRIMARY KEY, runs integer NOT NULL);
         CREATE TABLE IF NOT EXISTS examples_done (n bigint PRIMARY KEY, worker text NOT NULL);",
    )
    .execute(pool)
    .await
    .unwrap();
}

/// The example's handler, in-process: counts starts in `examples_started`,
/// waits `work`, records `n → worker` in `examples_done` unless there already.
pub(crate) struct DemoHandler {
    pub(crate) pool: sqlx::PgPool,
    pub(crate) work: Duration,
}

#[async_trait::async_trait]
impl flagship_worker::Handler for DemoHandler {
    type Job = Demo;

    async fn handle(&self, job: Demo, ctx: &flagship_worker::JobContext) -> Result<(), flagship_worker::HandlerError> {
        sqlx::query(
            "INSERT INTO examples_started (job_id, runs) VALUES ($1, 1) \
             ON CONFLICT (job_id) DO UPDATE SET runs = examples_started.runs + 1",
        )
        .bind(ctx.id.as_uuid())
        .execute(&self.pool)
        .await
        .map_err(flagship_worker::HandlerError::retry)?;
        if !self.work.is_zero() {
            tokio::time::sleep(self.work).await;
        }
        sqlx::query("INSERT INTO examples_done (n, worker) VALUES ($1, $2) ON CONFLICT (n) DO NOTHING")
            .bind(job.n as i64)
            .bind(&*ctx.worker_id)
            .execute(&self.pool)
            .await
            .map_err(flagship_worker::HandlerError::retry)?;
        Ok(())
    }
}

/// A worker for the demo queue in this process, with short leases and quick retries.
pub(crate) fn demo_worker(
    broker: &Arc<PostgresBroker>,
    name: &str,
    concurrency: usize,
    lease: Duration,
    work: Duration,
) -> Worker {
    Worker::builder(broker.clone())
        .handler(DemoHandler {
            pool: broker.pool().clone(),
            work,
        })
        .queue(
            flagship_worker::QueueConfig::new(<Demo as flagship_worker::Job>::QUEUE)
                .unwrap()
                .concurrency(concurrency)
                .retry_policy(flagship_worker::RetryPolicy::fixed(20, Duration::from_millis(10))),
        )
        .lease(lease)
        .recovery_interval(Duration::from_millis(100))
        .idle_wait(Duration::from_millis(200))
        .shutdown_timeout(Duration::from_secs(5))
        .worker_id(name)
        .build()
        .unwrap()
}

/// `n → worker` of every demo job done.
pub(crate) async fn done(pool: &sqlx::PgPool) -> std::collections::HashMap<i64, String> {
    sqlx::query_as("SELECT n, worker FROM examples_done")
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// `job id → starts` of every demo job started.
pub(crate) async fn started(pool: &sqlx::PgPool) -> std::collections::HashMap<uuid::Uuid, i32> {
    sqlx::query_as("SELECT job_id, runs FROM examples_started")
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// Whether every one of `total` demo jobs is completed or dead, none left.
pub(crate) async fn settled(broker: &PostgresBroker, total: u64) -> bool {
    let Ok(stats) = flagship_worker::Broker::stats(broker, &queue("examples:demo")).await else {
        return false;
    };
    stats.completed + stats.dead == total && stats.ready + stats.scheduled + stats.active == 0
}

/// `examples/postgres_worker`, built once per test run with this test's features.
pub(crate) fn example_binary() -> std::path::PathBuf {
    // The features this test was built with, so building the example does
    // not build the library again with other ones.
    let features: Vec<&str> = [
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
    .collect();
    flagship_worker::testing::examples::build("postgres_worker", &features)
}

/// Starts `examples/postgres_worker --work` against the database at `url` with `args`.
pub(crate) fn worker_process(url: &str, args: &[&str]) -> flagship_worker::testing::examples::WorkerProcess {
    flagship_worker::testing::examples::WorkerProcess::start(&example_binary(), args, &[("DATABASE_URL", url)])
}

#[path = "../support/workers.rs"]
mod workers;
#[allow(unused_imports)] // each crate uses its own share
pub(crate) use workers::{demo, eventually, run, stop, Demo};
