//! Conformance cases on Redis in cluster mode (one node serving every slot):
//! Redis refuses any command or script whose keys span slots, so passing
//! shows that every call stays within its queue's slot.
//!
//! A cluster node needs two seconds before it accepts writes, so the cases
//! share one server and run at once, each on queues of its own. Together
//! they call every script and every plain command the broker sends.
//!
//! Also: a plain `redis://` URL to a cluster node is refused at connect.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use flagship_worker::{
    testing::{
        conformance::{self as suite, Fixture},
        redis_server::{RedisFixture, RedisServer, RedisServerOptions},
    },
    broker::redis::RedisBroker,
    Backend, Error, QueueName, Result,
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
        message.contains("Redis Cluster node") && message.contains(&format!("redis+cluster://127.0.0.1:{}", server.port())),
        "{message}"
    );
    // The URL it names works.
    let broker = RedisBroker::connect(server.broker_url()).await.unwrap();
    flagship_worker::Broker::ping(&broker).await.unwrap();
}

/// One case's view of the shared cluster: its queue names get a prefix.
struct Case {
    shared: Arc<RedisFixture>,
    prefix: &'static str,
}

#[async_trait]
impl Fixture for Case {
    fn backend(&self) -> Arc<dyn Backend> {
        self.shared.backend()
    }

    fn queue(&self, name: &str) -> Result<QueueName> {
        QueueName::new(format!("{}:{name}", self.prefix))
    }

    fn now(&self) -> DateTime<Utc> {
        self.shared.now()
    }

    async fn advance(&self, by: Duration) {
        self.shared.advance(by).await
    }

    fn tolerance(&self) -> Duration {
        self.shared.tolerance()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_broker_keeps_every_call_in_one_slot() {
    let options = RedisServerOptions::new().cluster(true);
    let Some(shared) = RedisFixture::start_with(options).await else {
        return;
    };
    let shared = Arc::new(shared);
    let case = |prefix| Case {
        shared: shared.clone(),
        prefix,
    };
    let (a, b, c, d, e, f, g, h) = (
        case("spans"),
        case("stale"),
        case("keys"),
        case("filters"),
        case("bulk"),
        case("due"),
        case("queues"),
        case("extend"),
    );
    tokio::join!(
        suite::batch_enqueue_spans_queues(&a),
        suite::stale_lease_is_refused(&b),
        suite::idempotency_key_lifecycle(&c),
        suite::list_dead_filters(&d),
        suite::retry_dead_matching_filter(&e),
        suite::reserve_wakes_when_delayed_job_falls_due(&f),
        suite::queues_lists_queues_with_jobs(&g),
        suite::extend_moves_deadline(&h),
    );
}
