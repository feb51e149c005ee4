//! Redis in cluster mode (one node serving every slot): it refuses any
//! command or script whose keys span slots (what the whole conformance
//! suite on a 3-master cluster, `cluster_conformance.rs`, relies on to show
//! every call stays within its queue's slot), and a plain `redis://` URL to
//! a cluster node is refused at connect.

use flagship_worker::{
    broker::redis::RedisBroker,
    testing::redis_server::{RedisServer, RedisServerOptions},
    Error,
};

#[test]
fn cluster_mode_refuses_keys_across_slots() {
    let Some(server) = RedisServer::start_with(RedisServerOptions::new().cluster(true)) else {
        return;
    };
    let mut conn = server.connection();
    let refused = redis::cmd("MSET").arg(&["{a}:x", "1", "{b}:y", "2"]).exec(&mut conn);
    let err = refused.expect_err("keys of two slots in one command");
    assert_eq!(err.code(), Some("CROSSSLOT"), "{err}");
    redis::cmd("MSET")
        .arg(&["{a}:x", "1", "{a}:y", "2"])
        .exec(&mut conn)
        .unwrap();
}

#[tokio::test]
async fn a_plain_url_to_a_cluster_node_is_refused_with_how_to_connect() {
    let Some(server) = RedisServer::start_with(RedisServerOptions::new().cluster(true)) else {
        return;
    };
    let err = RedisBroker::connect(server.url()).await.unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("Redis Cluster node")
            && message.contains(&format!("redis+cluster://127.0.0.1:{}", server.port())),
        "{message}"
    );
    // The URL it names works.
    let broker = RedisBroker::connect(server.broker_url()).await.unwrap();
    flagship_worker::Broker::ping(&broker).await.unwrap();
}
