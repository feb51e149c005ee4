//! A producer and a worker sharing Redis.
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --example redis_worker --features redis -- --produce 1000 --work
//! ```
//!
//! Flags:
//!
//! - `--produce N`: enqueue N demo jobs (in batches), then exit unless `--work`.
//! - `--work`: run a worker until Ctrl-C / SIGTERM (or `--run-ms`), then print
//!   its counters as one JSON line.
//! - `--concurrency N` (default 16), `--lease-ms MS` (default 30000),
//!   `--handler-ms MS` (simulated work per job, default 0),
//!   `--retry-ms MS` (fixed retry delay, default 1000), `--run-ms MS`,
//!   `--worker-id ID`.
//!
//! The demo handler counts each start in the Redis hash `examples:started`
//! (job id → starts), simulates work, then records the job in
//! `examples:done` (job number → worker id) with `HSETNX`: running a job
//! twice leaves the first record, which is what an idempotent handler does.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use flagship_worker::{
    broker::redis::RedisBroker, Client, Handler, HandlerError, Job, JobContext, QueueConfig, RetryPolicy, Worker,
};
use redis::AsyncCommands;
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

/// Records starts and results in Redis, idempotently.
struct DemoHandler {
    redis: redis::aio::ConnectionManager,
    work: Duration,
}

#[async_trait]
impl Handler for DemoHandler {
    type Job = Demo;

    async fn handle(&self, job: Demo, ctx: &JobContext) -> Result<(), HandlerError> {
        let mut redis = self.redis.clone();
        let _: i64 = redis
            .hincr("examples:started", ctx.id.to_string(), 1)
            .await
            .map_err(HandlerError::retry)?;
        if !self.work.is_zero() {
            tokio::time::sleep(self.work).await;
        }
        let _: bool = redis
            .hset_nx("examples:done", job.n, &*ctx.worker_id)
            .await
            .map_err(HandlerError::retry)?;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = parse_args()?;
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let broker = Arc::new(RedisBroker::connect(url.as_str()).await?);

    if args.produce > 0 {
        let client = Client::new(broker.clone());
        let jobs: Vec<Demo> = (0..args.produce).map(|n| Demo { n }).collect();
        let mut enqueued = 0;
        for batch in jobs.chunks(500) {
            enqueued += client.enqueue_batch(batch, Default::default()).await?.len();
        }
        eprintln!("enqueued {enqueued} jobs");
    }
    if !args.work {
        return Ok(());
    }

    let redis = redis::aio::ConnectionManager::new(redis::Client::open(url.as_str())?).await?;
    let mut builder = Worker::builder(broker)
        .handler(DemoHandler {
            redis,
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
    tracing::info!(worker.id = worker.id(), "worker running");
    worker.run_until(shutdown_signal(args.run_for)).await?;
    println!("{}", serde_json::to_string(&worker.stats())?);
    Ok(())
}
