//! Test support for backends and applications (feature `test-util`).

pub mod conformance;
pub mod examples;
#[cfg(any(feature = "redis", feature = "postgres"))]
mod local;
#[cfg(feature = "postgres")]
pub mod postgres_server;
#[cfg(feature = "redis")]
pub mod redis_server;
