//! The queue history's Redis keys written by another program: a counter
//! that is not an integer restarts instead of failing the acknowledgement;
//! a history key of the wrong type is left alone and the acknowledgement
//! goes through (reading the history names the key).

use flagship_worker::{
    broker::{QueueHistory, Resolution},
    Broker, LeaseStatus,
};
use redis::Commands;

use crate::support::{job, queue, start, take};

#[tokio::test]
async fn a_history_counter_holding_garbage_restarts_and_the_ack_goes_through() {
    let Some((server, broker)) = start().await else { return };
    let q = queue("history-garbage");
    broker.enqueue(vec![job(&q, 1), job(&q, 2)]).await.unwrap();
    let held = broker.reserve(&q, take(2, 30_000)).await.unwrap();
    broker.complete(&[held[0].lease.clone()]).await.unwrap();
    // Every counter of the current minute's slot (and every other) is garbage now.
    let mut conn = server.connection();
    let key = "{history-garbage}:history:minute";
    let fields: Vec<(String, String)> = conn.hgetall(key).unwrap();
    for (field, _) in fields.iter().filter(|(f, _)| f.ends_with(":c")) {
        let _: () = conn.hset(key, field, "not a number").unwrap();
    }
    assert_eq!(
        broker.complete(&[held[1].lease.clone()]).await.unwrap(),
        [LeaseStatus::Held]
    );
    let series = broker.history(&q, Resolution::Minute, 2).await.unwrap();
    assert_eq!(
        series.totals().completed,
        1,
        "the garbage counter restarted at 1: {series:?}"
    );
    let hours = broker.history(&q, Resolution::Hour, 1).await.unwrap();
    assert_eq!(hours.totals().completed, 2, "the hour counter was left alone");
}

#[tokio::test]
async fn a_history_key_of_the_wrong_type_never_stops_an_acknowledgement() {
    let Some((server, broker)) = start().await else { return };
    let q = queue("history-wrong-type");
    broker.enqueue(vec![job(&q, 1), job(&q, 2)]).await.unwrap();
    let held = broker.reserve(&q, take(2, 30_000)).await.unwrap();
    for key in [
        "{history-wrong-type}:history:minute",
        "{history-wrong-type}:history:hour",
    ] {
        let _: () = server.connection().set(key, "x").unwrap();
    }
    assert_eq!(
        broker.complete(&[held[0].lease.clone()]).await.unwrap(),
        [LeaseStatus::Held],
        "the job's state matters more than its history"
    );
    broker
        .dead_letter(&held[1], None, "gone")
        .await
        .expect("dead-lettering goes through too");
    let stats = broker.stats(&q).await.unwrap();
    assert_eq!(
        (stats.active, stats.completed, stats.dead_lettered),
        (0, 1, 1),
        "{stats:?}"
    );
    let refused = broker.history(&q, Resolution::Minute, 1).await.unwrap_err();
    assert!(
        refused.to_string().contains("holds a string"),
        "reading names the key: {refused}"
    );
    let value: String = server.connection().get("{history-wrong-type}:history:hour").unwrap();
    assert_eq!(value, "x", "the other program's key is left alone");
}
