//! Test support for backends and applications (feature `test-util`).

pub mod conformance;
pub mod examples;
#[cfg(any(feature = "redis", feature = "postgres"))]
mod local;
#[cfg(feature = "postgres")]
pub mod postgres_server;
mod worker;

pub use worker::{TestWorker, MAX_TEST_RUNS};
#[cfg(feature = "redis")]
pub mod redis_cluster;
#[cfg(feature = "redis")]
pub mod redis_server;
