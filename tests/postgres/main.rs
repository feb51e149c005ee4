//! The PostgreSQL broker against a real server: a database of its own per
//! test on the machine's PostgreSQL, and a cluster of its own for tests
//! that crash the server.
//!
//! Tests skip with a notice when no PostgreSQL answers, unless
//! `FLAGSHIP_REQUIRE_POSTGRES=1`.

mod broker;
mod conformance;
mod faults;
mod support;
mod transactional;
