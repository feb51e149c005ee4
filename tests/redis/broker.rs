//! What only the Redis broker shows. The broker's contract is checked by
//! the conformance suite (`conformance.rs`); these tests cover what it
//! cannot express: Redis's coarse blocking timeouts, Redis's clock against
//! a skewed producer's, and a lost connection.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use flagship_worker::{Broker, Error, JobEnvelope};
use tokio::time::Instant;

use crate::support::{eventually, job, queue, start, take, wait_for};

/// Redis checks `BLPOP` timeouts only every 100 ms (`hz 10`); a waiter
/// keeps its own timer and unblocks itself when a job falls due
/// (`src/broker/redis/wait.rs`), which the suite's one-second bound would
/// not notice missing.
#[tokio::test]
async fn a_delayed_job_runs_within_50_ms_of_its_due_time() {
    let Some((_server, broker)) = start().await else { return };
    let q = queue("delayed");
    let waiter = {
        let (broker, q) = (broker.clone(), q.clone());
        tokio::spawn(async move { broker.reserve(&q, wait_for(1, 3_000)).await })
    };
    // Let the reserver block first.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut delayed = job(&q, 1);
    delayed.run_at = Utc::now() + TimeDelta::milliseconds(300);
    let enqueued = Instant::now();
    broker.enqueue(vec![delayed]).await.unwrap();
    let got = waiter.await.unwrap().unwrap();
    let after = enqueued.elapsed();
    assert_eq!(got.len(), 1);
    assert!(after >= Duration::from_millis(295), "too early: {after:?}");
    assert!(after <= Duration::from_millis(350), "too late: {after:?}");
}

/// Due times are measured on Redis's clock (`TIME`), whatever the
/// producer's clock says; the suite's producers share the backend's clock.
#[tokio::test]
async fn due_times_follow_redis_time_whatever_the_producer_clock_says() {
    let Some((_server, broker)) = start().await else { return };
    for skew in [TimeDelta::hours(1), TimeDelta::hours(-1)] {
        let q = queue(&format!("skew{}", skew.num_hours()));
        // What a producer on a skewed machine writes: its now, plus 150 ms.
        let skewed_now = Utc::now() + skew;
        let mut delayed = JobEnvelope::new("k", q.clone(), serde_json::json!({}), skewed_now);
        delayed.run_at = skewed_now + TimeDelta::milliseconds(150);
        let enqueued = Instant::now();
        broker.enqueue(vec![delayed]).await.unwrap();
        assert!(
            broker.reserve(&q, take(1, 30_000)).await.unwrap().is_empty(),
            "skew {skew}: early"
        );
        let got = broker.reserve(&q, wait_for(1, 2_000)).await.unwrap();
        assert_eq!(got.len(), 1, "skew {skew}: stuck");
        assert!(enqueued.elapsed() >= Duration::from_millis(145));
    }
}

/// A killed server makes calls fail as unavailable, and the broker
/// reconnects once it is back.
#[tokio::test]
async fn a_lost_connection_is_unavailable_and_then_recovers() {
    let Some((mut server, broker)) = start().await else {
        return;
    };
    let q = queue("reconnect");
    broker.enqueue(vec![job(&q, 1)]).await.unwrap();
    server.kill();
    let err = broker.reserve(&q, take(1, 30_000)).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(matches!(
        broker.enqueue(vec![job(&q, 2)]).await,
        Err(Error::Unavailable(_))
    ));
    server.start_again();
    eventually("the broker reconnects", Duration::from_secs(10), || {
        let broker = broker.clone();
        async move { broker.ping().await.is_ok() }
    })
    .await;
    broker.enqueue(vec![job(&q, 3)]).await.unwrap();
    assert_eq!(broker.reserve(&q, take(5, 30_000)).await.unwrap().len(), 1);
}
