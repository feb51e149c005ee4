//! The whole broker conformance suite on a 3-master Redis Cluster shared by
//! the cases (each with queues under a prefix of its own, so the suite's
//! queues land on all three masters).

use flagship_worker::testing::redis_server::RedisFixture;

flagship_worker::conformance_tests! {
    fixture: match RedisFixture::on_shared_cluster().await { Some(f) => f, None => return },
    test: #[tokio::test],
    concurrent_test: #[tokio::test(flavor = "multi_thread", worker_threads = 4)],
    key_retention: RedisFixture::KEY_RETENTION,
}
