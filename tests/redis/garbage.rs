//! A property: random bytes and random JSON written into every key of a
//! live queue, while a worker runs good jobs, never stop the worker, never
//! keep a good job from completing, and never strand anything: every bad
//! record ends in the dead-letter queue or is counted as dropped.
//!
//! Each key gets values of its own type (a hash gets fields, a list gets
//! items): a key of the wrong type is refused by every script before it
//! writes (`hostile.rs`), which stops the queue until an operator fixes it.
//! Ids in `scheduled` are due and ids in `active` expired: an id waiting
//! for its time is not stranded.

use std::{
    collections::{BTreeMap, HashSet},
    time::Duration,
};

use flagship_worker::{Broker, Job};
use proptest::{prelude::*, test_runner::TestCaseError};
use redis::Commands;
use serde_json::Value;

use crate::{
    hostile::{key, worker, Runs},
    support::run,
    support::{demo, eventually, queue, start, Demo},
};

/// One write another program could make to the queue's keys.
#[derive(Debug, Clone)]
enum Write {
    /// `HSET jobs id value`: an envelope in no state.
    Stored(Vec<u8>, Vec<u8>),
    /// `HSET jobs id value` and `RPUSH ready id`: an envelope made ready.
    Ready(Vec<u8>, Vec<u8>),
    /// `RPUSH ready id`.
    ReadyId(Vec<u8>),
    /// `ZADD scheduled <due> id`.
    Scheduled(Vec<u8>),
    /// `ZADD active <expired> id`, with `HSET lease id value`.
    Active(Vec<u8>, Vec<u8>),
    /// `HSET <key> field value` for a hash that holds no jobs.
    Hash(&'static str, Vec<u8>, Vec<u8>),
    /// `ZADD <key> score member` for `dead` or `completed-keys`.
    Sorted(&'static str, f64, Vec<u8>),
    /// `SET <key> value` for `seq` or `restore-cursor`.
    Set(&'static str, Vec<u8>),
    /// `RPUSH wake value`.
    Wake(Vec<u8>),
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z_]{1,6}", inner, 0..4)
                .prop_map(|m: BTreeMap<String, Value>| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A UUID from a small pool (so writes collide), in one of the forms
/// producers use: canonical, upper case, without hyphens, braced.
fn uuid_text() -> impl Strategy<Value = Vec<u8>> {
    (0u128..4, 0u8..4).prop_map(|(n, form)| {
        let id = uuid::Uuid::from_u128(0x0190_b6a4_8f1e_7c3a_9d2b_5e6f_7a8b_9c00 + n);
        match form {
            0 => id.hyphenated().to_string(),
            1 => id.hyphenated().to_string().to_uppercase(),
            2 => id.simple().to_string(),
            _ => id.braced().to_string(),
        }
        .into_bytes()
    })
}

/// An id: random bytes (often not UTF-8), random text, or a UUID.
fn id() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..40),
        "\\PC{0,20}".prop_map(String::into_bytes),
        uuid_text(),
    ]
}

/// A demo envelope under `id` with one field replaced by random JSON.
fn mangled_envelope() -> impl Strategy<Value = Vec<u8>> {
    let fields = [
        "v",
        "id",
        "type",
        "queue",
        "payload",
        "attempt",
        "enqueued_at",
        "run_at",
        "attempts",
    ];
    (0..fields.len(), json(), 1_000u64..2_000).prop_map(move |(field, value, n)| {
        let mut envelope = serde_json::to_value(demo(n)).unwrap();
        envelope[fields[field]] = value;
        serde_json::to_vec(&envelope).unwrap()
    })
}

/// A stored value: random bytes, random JSON, or a mangled envelope.
fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        mangled_envelope(),
    ]
}

fn write() -> impl Strategy<Value = Write> {
    let hashes = prop::sample::select(vec!["lease", "reasons", "unique", "job-keys", "stats"]);
    // Stats fields the broker reads, but not `dropped`: the property counts it.
    let stats_field = prop_oneof![
        prop::sample::select(vec!["completed", "retried", "dead_lettered", "restored"])
            .prop_map(|f| f.as_bytes().to_vec()),
        id(),
    ];
    prop_oneof![
        (id(), value()).prop_map(|(id, v)| Write::Stored(id, v)),
        (id(), value()).prop_map(|(id, v)| Write::Ready(id, v)),
        id().prop_map(Write::ReadyId),
        id().prop_map(Write::Scheduled),
        (id(), value()).prop_map(|(id, v)| Write::Active(id, v)),
        (hashes, stats_field, value()).prop_map(|(k, f, v)| Write::Hash(k, f, v)),
        (
            prop::sample::select(vec!["dead", "completed-keys"]),
            -1e15f64..1e15,
            id()
        )
            .prop_map(|(k, s, m)| Write::Sorted(k, s, m)),
        (prop::sample::select(vec!["seq", "restore-cursor"]), value()).prop_map(|(k, v)| Write::Set(k, v)),
        value().prop_map(Write::Wake),
    ]
}

/// The canonical form of `id` if it is a UUID in any form.
fn canonical(id: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(id).ok()?;
    Some(uuid::Uuid::parse_str(text).ok()?.hyphenated().to_string().into_bytes())
}

/// How many ids written into a state set can never have an envelope (so
/// each must be dropped), and how many were written there in all.
fn drops(writes: &[Write]) -> (u64, u64) {
    let mut stored: HashSet<Vec<u8>> = HashSet::new();
    for w in writes {
        if let Write::Stored(id, _) | Write::Ready(id, _) = w {
            stored.extend(canonical(id));
            stored.insert(id.clone());
        }
    }
    let (mut ready, mut scheduled, mut active) = (Vec::new(), HashSet::new(), HashSet::new());
    for w in writes {
        match w {
            Write::Ready(id, _) | Write::ReadyId(id) => ready.push(id.clone()),
            Write::Scheduled(id) => {
                scheduled.insert(id.clone());
            }
            Write::Active(id, _) => {
                active.insert(id.clone());
            }
            _ => {}
        }
    }
    let all = (ready.len() + scheduled.len() + active.len()) as u64;
    let never = ready
        .iter()
        .chain(&scheduled)
        .chain(&active)
        .filter(|id| !stored.contains(*id))
        .count() as u64;
    (never, all)
}

fn apply(conn: &mut redis::Connection, writes: &[Write]) {
    let mut pipe = redis::pipe();
    pipe.atomic();
    let due = chrono::Utc::now().timestamp_millis() as f64;
    for w in writes {
        match w {
            Write::Stored(id, v) => pipe.hset(key("jobs"), id, v),
            Write::Ready(id, v) => pipe.hset(key("jobs"), id, v).rpush(key("ready"), id),
            Write::ReadyId(id) => pipe.rpush(key("ready"), id),
            Write::Scheduled(id) => pipe.zadd(key("scheduled"), id, due),
            Write::Active(id, v) => pipe.zadd(key("active"), id, 0).hset(key("lease"), id, v),
            Write::Hash(k, f, v) => pipe.hset(key(k), f, v),
            Write::Sorted(k, score, m) => pipe.zadd(key(k), m, score),
            Write::Set(k, v) => pipe.set(key(k), v),
            Write::Wake(v) => pipe.rpush(key("wake"), v),
        };
        pipe.ignore();
    }
    let () = pipe.query(conn).unwrap();
}

async fn check(writes: Vec<Write>) -> Result<(), TestCaseError> {
    let Some((server, broker)) = start().await else {
        return Ok(());
    };
    let q = queue(<Demo as Job>::QUEUE);
    let runs = Runs::default();
    let worker = worker(&server, &runs, Duration::from_millis(100)).await;
    let (stop, task) = run(&worker);
    broker.enqueue((0..5).map(demo).collect()).await.unwrap();
    apply(&mut server.connection(), &writes);
    broker.enqueue((5..10).map(demo).collect()).await.unwrap();

    eventually("every job ended", Duration::from_secs(20), || async {
        let good_done = (0..10).all(|n| runs.of(n) > 0);
        let Ok(stats) = broker.stats(&q).await else {
            return false;
        };
        let mut conn = server.connection();
        let stored: Vec<Vec<u8>> = conn.hkeys(key("jobs")).unwrap();
        let dead: HashSet<Vec<u8>> = conn
            .zrange::<_, Vec<Vec<u8>>>(key("dead"), 0, -1)
            .unwrap()
            .into_iter()
            .collect();
        good_done && stats.ready + stats.scheduled + stats.active == 0 && stored.iter().all(|id| dead.contains(id))
    })
    .await;
    prop_assert!(!task.is_finished(), "the worker kept running");
    stop.send(true).unwrap();
    task.await.expect("the worker stopped without panicking");

    let (never, all) = drops(&writes);
    let dropped: u64 = server
        .connection()
        .hget::<_, _, Option<u64>>(key("stats"), "dropped")
        .unwrap()
        .unwrap_or(0);
    prop_assert!(
        (never..=all).contains(&dropped),
        "{dropped} dropped: at least {never} ids had no envelope, {all} ids were written"
    );
    // Every job the broker dead-lettered has its reason (ids written into
    // `dead` directly are not the broker's).
    let mut conn = server.connection();
    let written: HashSet<&Vec<u8>> = writes
        .iter()
        .filter_map(|w| match w {
            Write::Sorted("dead", _, id) => Some(id),
            _ => None,
        })
        .collect();
    let dead: Vec<Vec<u8>> = conn.zrange(key("dead"), 0, -1).unwrap();
    for id in dead.iter().filter(|id| !written.contains(id)) {
        let reason: Option<String> = conn.hget(key("reasons"), id).unwrap();
        prop_assert!(reason.is_some(), "dead job {id:?} has no reason");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 16,
        max_shrink_iters: 32,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn garbage_in_any_key_never_stops_the_worker_or_strands_a_record(
        writes in prop::collection::vec(write(), 1..24)
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(check(writes))?;
    }
}
