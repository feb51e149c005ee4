//! Test support for backends and applications (feature `test-util`).

pub mod conformance;
#[cfg(feature = "redis")]
pub mod redis_server;
