//! The broker conformance suite on the Redis broker: every case against
//! its own `redis-server`, time passing for real.

use flagship_worker::testing::redis_server::RedisFixture;

flagship_worker::conformance_tests! {
    fixture: match RedisFixture::start().await { Some(f) => f, None => return },
    test: #[tokio::test],
    concurrent_test: #[tokio::test(flavor = "multi_thread", worker_threads = 4)],
    key_retention: RedisFixture::KEY_RETENTION,
}
