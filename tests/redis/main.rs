//! The Redis broker against real `redis-server`s, one per test.
//!
//! Every test starts its own server on a free port (and skips with a notice
//! when `redis-server` is missing, unless `FLAGSHIP_REQUIRE_REDIS=1`).

mod broker;
mod cluster;
mod cluster_conformance;
mod conformance;
mod failover;
mod faults;
mod garbage;
mod history;
mod hostile;
mod priorities;
mod setup;
mod support;
