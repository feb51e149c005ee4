//! Core integration tests: the broker conformance suite on the in-memory
//! backend, the worker runtime, schedules, and the committed schemas.

mod hostile;
#[path = "../support/logs.rs"]
mod logs;
mod memory;
mod schemas;
mod test_worker;
mod worker;
