//! The broker conformance suite on the PostgreSQL broker: every case against
//! a database of its own, time passing for real.

use flagship_worker::testing::postgres_server::PostgresFixture;

flagship_worker::conformance_tests! {
    fixture: match PostgresFixture::start().await { Some(f) => f, None => return },
    test: #[tokio::test],
    concurrent_test: #[tokio::test(flavor = "multi_thread", worker_threads = 4)],
    key_retention: PostgresFixture::KEY_RETENTION,
}
