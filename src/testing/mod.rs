//! Test support for backends and applications (feature `test-util`).

pub mod conformance;
mod worker;

pub use worker::{TestWorker, MAX_TEST_RUNS};
#[cfg(feature = "redis")]
pub mod redis_server;
