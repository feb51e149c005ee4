//! The broker conformance suite on [`MemoryBroker`], on a paused tokio
//! clock (the broker reads tokio's clock, so time passes instantly).
//!
//! [`MemoryBroker`]: flagship_worker::MemoryBroker

use flagship_worker::{broker::memory::DEFAULT_KEY_RETENTION, testing::conformance::MemoryFixture};

flagship_worker::conformance_tests! {
    fixture: MemoryFixture::new(),
    test: #[tokio::test(start_paused = true)],
    concurrent_test: #[tokio::test(flavor = "multi_thread", worker_threads = 4)],
    key_retention: DEFAULT_KEY_RETENTION,
}
