//! Connecting: the eviction-policy check, and Redis running out of memory.

use flagship_worker::{
    broker::redis::RedisBroker, testing::redis_server::RedisServerOptions, Broker, EnqueueOutcome, Error,
};
use redis::Commands;

use crate::support::{job, queue, start_with, take};

#[tokio::test]
async fn an_evicting_redis_is_refused_unless_allowed() {
    let options = RedisServerOptions::new().maxmemory_policy("allkeys-lru");
    let Some(server) = flagship_worker::testing::redis_server::RedisServer::start_with(options) else {
        return;
    };
    let err = RedisBroker::connect(server.url()).await.unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
    assert!(
        err.to_string().contains("allkeys-lru") && err.to_string().contains("noeviction"),
        "{err}"
    );
    let broker = RedisBroker::builder(server.url())
        .allow_eviction(true)
        .connect()
        .await
        .unwrap();
    broker.ping().await.unwrap();
}

#[tokio::test]
async fn a_redis_without_config_get_is_accepted() {
    let options = RedisServerOptions::new()
        .maxmemory_policy("allkeys-lru")
        .args(["--rename-command", "CONFIG", ""]);
    let Some((_server, broker)) = start_with(options).await else {
        return;
    };
    broker.ping().await.unwrap();
}

#[tokio::test]
async fn a_full_redis_refuses_enqueue_and_keeps_no_partial_job() {
    let options = RedisServerOptions::new().maxmemory(4 * 1024 * 1024);
    let Some((server, broker)) = start_with(options).await else {
        return;
    };
    let q = queue("oom");
    let big = "x".repeat(16 * 1024);
    let mut stored = 0u64;
    let err = loop {
        let jobs: Vec<_> = (0..8)
            .map(|n| {
                let mut j = job(&q, n);
                j.payload = serde_json::json!({ "blob": big }).into();
                j
            })
            .collect();
        match broker.enqueue(jobs).await {
            Ok(outcomes) => stored += outcomes.iter().filter(|o| o.is_enqueued()).count() as u64,
            Err(e) => break e,
        }
        assert!(stored < 10_000, "maxmemory never reached");
    };
    assert!(matches!(err, Error::Backend(_)), "{err}");
    assert!(err.to_string().contains("out of memory"), "{err}");

    let mut conn = server.connection();
    let in_hash: u64 = conn.hlen("{oom}:jobs").unwrap();
    let in_ready: u64 = conn.llen("{oom}:ready").unwrap();
    assert_eq!((in_hash, in_ready), (stored, stored), "no partial job");

    // Workers still drain a full Redis: reserve, complete.
    let held = broker.reserve(&q, take(1_000, 30_000)).await.unwrap();
    assert_eq!(held.len() as u64, stored);
    let leases: Vec<_> = held.iter().map(|r| r.lease.clone()).collect();
    broker.complete(&leases).await.unwrap();
    let again = job(&q, 99);
    assert_eq!(
        broker.enqueue(vec![again.clone()]).await.unwrap(),
        vec![EnqueueOutcome::Enqueued(again.id)]
    );
}
