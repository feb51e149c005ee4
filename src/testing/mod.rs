//! Test support for backends and applications (feature `test-util`).

pub mod conformance;
