//! Core integration tests: the broker conformance suite on each built-in
//! backend, and the worker runtime.

mod memory;
