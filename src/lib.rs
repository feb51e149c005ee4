//! # flagship-worker
//!
//! Typed background jobs for tokio, with the operational discipline a
//! production queue needs: every payload checked against an explicit JSON
//! Schema, retries with exponential or linear backoff, leases with fencing
//! tokens so a crashed or hung worker never loses a job (and a zombie one
//! never acknowledges someone else's), a dead-letter queue operators can
//! inspect, retry and purge, and cron schedules that enqueue exactly one job
//! per tick however many workers run them.
//!
//! ## Concepts
//!
//! - A [`Job`] is a serde type with a JSON Schema ([`schemars::JsonSchema`]),
//!   a stable wire name ([`Job::KIND`]) and a queue ([`Job::QUEUE`]).
//! - A [`Handler`] runs jobs of one type and answers with a [`HandlerError`]
//!   that says what to do when it did not finish: retry, retry after a
//!   delay, snooze (run later without using an attempt), or give up.
//! - A [`Broker`] stores jobs; its [`DeadLetterQueue`] keeps the ones that
//!   gave up. [`MemoryBroker`] is built in; `RedisBroker` is behind the
//!   `redis` feature and `PostgresBroker` (with enqueue inside your own
//!   transaction) behind `postgres`.
//! - A [`Client`] enqueues (typed or raw JSON, one or a batch), validating
//!   first; a [`Worker`] reserves, runs, retries and acknowledges.
//! - A [`RetryPolicy`] turns an attempt number into a delay; a [`Schedule`]
//!   turns a cron expression or interval into jobs.
//!
//! Delivery is at-least-once: write handlers so that running a job twice
//! has the effect of running it once. See `docs/architecture.md`.
//!
//! ## Quickstart
//!
//! ```
//! use std::{sync::Arc, time::Duration};
//!
//! use async_trait::async_trait;
//! use flagship_worker::{Handler, HandlerError, Job, JobContext, MemoryBroker, Worker};
//! use schemars::JsonSchema;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, JsonSchema)]
//! struct SendWelcome {
//!     email: String,
//! }
//!
//! impl Job for SendWelcome {
//!     const KIND: &'static str = "send-welcome";
//!     const QUEUE: &'static str = "emails";
//! }
//!
//! struct Welcomer;
//!
//! #[async_trait]
//! impl Handler for Welcomer {
//!     type Job = SendWelcome;
//!
//!     async fn handle(&self, job: SendWelcome, ctx: &JobContext) -> Result<(), HandlerError> {
//!         tracing::info!(attempt = ctx.attempt, "welcome, {}", job.email);
//!         Ok(())
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let worker = Worker::builder(Arc::new(MemoryBroker::new()))
//!     .handler(Welcomer)
//!     .build()?;
//! worker.client().enqueue(&SendWelcome { email: "ada@example.com".into() }).await?;
//!
//! // Run until a shutdown signal; here, a short timer.
//! worker.run_until(tokio::time::sleep(Duration::from_millis(50))).await?;
//! assert_eq!(worker.stats().completed, 1);
//! # Ok::<_, flagship_worker::Error>(()) }).unwrap();
//! ```
//!
//! ## Features
//!
//! | feature | what it adds |
//! |---|---|
//! | *(none)* | the core: jobs, schemas, retries, [`MemoryBroker`], worker, schedules |
//! | `redis` | the Redis broker (and, with `flagship`, the FlagShip Redis stores) |
//! | `postgres` | `PostgresBroker`: jobs in PostgreSQL, enqueued in your own transactions if you like (sqlx) |
//! | `flagship` | the `flagship` module: FlagShip handlers, stores, notifications and schedules |
//! | `http` | the FlagShip Resend mailer and HTTP webhook sender (reqwest, rustls) |
//! | `admin` | the `admin` module: the operators' HTTP API, DLQ dashboard and Prometheus metrics |
//! | `cli` | the `flagship-worker` command-line tool (queues, DLQ, health, schemas) over Redis or PostgreSQL |
//! | `test-util` | `testing::TestWorker` to run a worker's jobs one at a time in tests, and `testing::conformance`, the suite every backend must pass |

// The library never panics on a `Result` or `Option`; tests and examples may.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

#[cfg(feature = "admin")]
pub mod admin;
pub mod broker;
mod cancellation;
pub mod client;
pub mod clock;
pub mod envelope;
pub mod error;
#[cfg(feature = "flagship")]
pub mod flagship;
pub mod handler;
pub mod health;
pub mod job;
pub mod payload;
pub mod retry;
pub mod schedule;
pub mod schema;
#[cfg(feature = "test-util")]
pub mod testing;
pub mod worker;

#[cfg(feature = "postgres")]
pub use broker::postgres::PostgresBroker;
#[cfg(feature = "redis")]
pub use broker::redis::RedisBroker;
pub use broker::{
    memory::MemoryBroker, Backend, Broker, DeadCursor, DeadFilter, DeadLetterQueue, DeadListing, DeadPage, DeadQuery,
    DeadSummary, EnqueueOutcome, IdPrefix, JobControl, JobDetail, Lease, LeaseStatus, LeaseToken, QueueStats,
    Reservation, ReserveRequest,
};
pub use cancellation::Cancellation;
pub use client::Client;
pub use clock::{Clock, SystemClock, TokioClock};
pub use envelope::{AttemptRecord, EnqueueOptions, JobEnvelope};
pub use error::{BoxError, Error, Result};
pub use handler::{Handler, HandlerError, JobContext};
pub use job::{Job, JobId, QueueName};
pub use payload::Payload;
pub use retry::{Backoff, Decision, RetryPolicy};
pub use schedule::{MissedTicks, Schedule};
pub use schema::SchemaRegistry;
#[cfg(feature = "test-util")]
pub use worker::Ran;
pub use worker::{FinishedJob, JobObserver, JobOutcome, QueueConfig, Worker, WorkerBuilder, WorkerStats};

// Re-exported so users derive schemas with the same version the crate uses.
pub use schemars;

// The README's Rust snippets, compiled (and run, unless `no_run`) as doctests.
#[cfg(all(doctest, feature = "admin", feature = "test-util"))]
#[doc = include_str!("../README.md")]
mod readme {}

// The Rust snippets of docs/redis.md, compiled as doctests.
#[cfg(all(doctest, feature = "redis"))]
#[doc = include_str!("../docs/redis.md")]
mod redis_docs {}
