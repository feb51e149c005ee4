//! Core tests: the worker, schedules, schemas, and the conformance suite on
//! the in-memory broker.

mod schemas;
mod worker;
