//! The Redis stores: the store contract, and the pipeline end to end with
//! every FlagShip store in Redis. Each test starts its own redis-server on
//! a free port (and skips with a notice when there is none, unless
//! `FLAGSHIP_REQUIRE_REDIS=1`).

use std::sync::Arc;

use flagship_worker::{
    flagship::{stores::RedisStore, FlagshipServices},
    testing::redis_server::RedisServer,
    MemoryBroker,
};

use crate::{
    pipeline::{threshold_scenario, Pipeline},
    stores::store_contract,
    ShiftedClock,
};

#[tokio::test]
async fn redis_store_meets_the_contract() {
    let Some(server) = RedisServer::start() else { return };
    let store = RedisStore::new(server.client()).await.unwrap();
    store_contract(Arc::new(store.clone()), "acme").await;
    // A second prefix is a separate store on the same server.
    store_contract(Arc::new(store.with_prefix("other")), "acme").await;
}

#[tokio::test]
async fn usage_thresholds_notify_and_enforce_once_with_redis_stores() {
    let Some(server) = RedisServer::start() else { return };
    let clock = Arc::new(ShiftedClock::starting_at("2026-01-01T10:30:00Z"));
    let backend = Arc::new(MemoryBroker::with_clock(clock.clone()));
    let store = RedisStore::new(server.client()).await.unwrap();
    let pipeline = Pipeline::start(backend, FlagshipServices::from_store(Arc::new(store)), clock).await;
    threshold_scenario(&pipeline).await;
    pipeline.stop().await;
}
