//! A producer and a worker sharing PostgreSQL, the producer enqueueing in
//! the same transaction as its own writes.
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!     cargo run --example postgres_worker --features postgres -- --produce 1000 --work
//! ```
//!
//! Flags:
//!
//! - `--produce N`: record N orders and enqueue one demo job per order, in
//!   transactions of 500 (each order row and its job commit together),
//!   then exit unless `--work`.
//! - `--work`: run a worker until Ctrl-C / SIGTERM (or `--run-ms`), then print
//!   its counters as one JSON line.
//! - `--concurrency N` (default 16), `--lease-ms MS` (default 30000),
//!   `--handler-ms MS` (simulated work per job, default 0),
//!   `--retry-ms MS` (fixed retry delay, default 1000), `--run-ms MS`,
//!   `--worker-id ID`.
//!
//! The demo handler counts each start in the table `examples_started`
//! (job id → starts), simulates work, then records the job in
//! `examples_done` (job number → worker id) unless it is there already:
//! running a job twice leaves the first record, which is what an idempotent
//! handler does. The example creates its tables if they are missing.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use flagship_worker::{
    broker::postgres::{sqlx, PostgresBroker},
    EnqueueOptions, Handler, HandlerError, Job, JobContext, QueueConfig, RetryPolicy, Worker,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[path = "shared/worker_flags.rs"]
mod worker_flags;

use worker_flags::{parse_args, shutdown_signal};

/// The demo job: a number to "process".
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct Demo {
    n: u64,
}

impl Job for Demo {
    const KIND: &'static str = "demo";
    const QUEUE: &'static str = "examples:demo";
}

/// Records starts and results in PostgreSQL, idempotently.
struct DemoHandler {
    pool: sqlx::PgPool,
    work: Duration,
}

#[async_trait]
impl Handler for DemoHandler {
    type Job = Demo;

    async fn handle(&self, job: Demo, ctx: &JobContext) -> Result<(), HandlerError> {
        sqlx::query(
            "INSERT INTO examples_started (job_id, runs) VALUES ($1, 1) \
             ON CONFLICT (job_id) DO UPDATE SET runs = examples_started.runs + 1",
        )
        .bind(ctx.id.as_uuid())
        .execute(&self.pool)
        .await
        .map_err(HandlerError::retry)?;
        if !self.work.is_zero() {
            tokio::time::sleep(self.work).await;
        }
        sqlx::query("INSERT INTO examples_done (n, worker) VALUES ($1, $2) ON CONFLICT (n) DO NOTHING")
            .bind(job.n as i64)
            .bind(&*ctx.worker_id)
            .execute(&self.pool)
            .await
            .map_err(HandlerError::retry)?;
        Ok(())
    }
}

/// The example's own tables (the broker migrates its schema itself).
async fn create_tables(pool: &sqlx::PgPool) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS examples_orders (n bigint PRIMARY KEY, placed_at timestamptz NOT NULL DEFAULT now());
         CREATE TABLE IF NOT EXISTS examples_started (job_id uuid PRIMARY KEY, runs integer NOT NULL);
         CREATE TABLE IF NOT EXISTS examples_done (n bigint PRIMARY KEY, worker text NOT NULL);",
    )
    .execute(pool)
    .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = parse_args()?;
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let broker = Arc::new(PostgresBroker::connect(url.as_str()).await?);
    create_tables(broker.pool()).await?;

    let mut builder = Worker::builder(broker.clone())
        .handler(DemoHandler {
            pool: broker.pool().clone(),
            work: args.handler,
        })
        .queue(
            QueueConfig::new(Demo::QUEUE)?
                .concurrency(args.concurrency)
                .retry_policy(RetryPolicy::fixed(5, args.retry)),
        )
        .lease(args.lease)
        .shutdown_timeout(Duration::from_secs(5));
    if let Some(id) = args.worker_id {
        builder = builder.worker_id(id);
    }
    let worker = builder.build()?;

    if args.produce > 0 {
        // The worker's client shares its schema registry.
        let client = worker.client();
        let numbers: Vec<u64> = (0..args.produce).collect();
        let mut enqueued = 0;
        for chunk in numbers.chunks(500) {
            let mut tx = broker.pool().begin().await?;
            let orders: Vec<i64> = chunk.iter().map(|&n| n as i64).collect();
            sqlx::query("INSERT INTO examples_orders (n) SELECT * FROM unnest($1::bigint[]) ON CONFLICT DO NOTHING")
                .bind(&orders)
                .execute(&mut *tx)
                .await?;
            let jobs: Vec<Demo> = chunk.iter().map(|&n| Demo { n }).collect();
            let outcomes = broker
                .enqueue_batch_in(&mut tx, &client, &jobs, EnqueueOptions::new())
                .await?;
            tx.commit().await?;
            enqueued += outcomes.len();
        }
        eprintln!("enqueued {enqueued} jobs with their orders");
    }
    if !args.work {
        return Ok(());
    }

    tracing::info!(worker.id = worker.id(), "worker running");
    worker.run_until(shutdown_signal(args.run_for)).await?;
    println!("{}", serde_json::to_string(&worker.stats())?);
    Ok(())
}
