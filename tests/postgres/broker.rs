//! What the PostgreSQL broker adds to the contract: migrations, schemas,
//! the SQL `enqueue` function for other languages, and wake-ups.

use std::time::Duration;

use flagship_worker::{
    broker::postgres::{sqlx, PostgresBroker, SCHEMA_VERSION},
    Broker, EnqueueOutcome, Error, JobId, ReserveRequest,
};
use tokio::time::Instant;

use crate::support::{job, queue, start, take};

#[tokio::test]
async fn migrations_run_once_and_a_newer_schema_is_refused() {
    let Some((db, broker)) = start().await else { return };
    assert_eq!(broker.migrate().await.unwrap(), Vec::<i32>::new(), "already migrated");
    let versions: Vec<i32> = sqlx::query_scalar("SELECT version FROM flagship_worker.schema_migrations")
        .fetch_all(broker.pool())
        .await
        .unwrap();
    assert_eq!(versions, (1..=SCHEMA_VERSION).collect::<Vec<_>>());

    // A broker that does not migrate accepts the schema as it is.
    let checked = PostgresBroker::builder(db.url()).migrate(false).connect().await;
    assert!(checked.is_ok(), "{checked:?}");

    sqlx::query("INSERT INTO flagship_worker.schema_migrations (version, name) VALUES ($1, 'from the future')")
        .bind(SCHEMA_VERSION + 1)
        .execute(broker.pool())
        .await
        .unwrap();
    for migrate in [true, false] {
        let refused = PostgresBroker::builder(db.url()).migrate(migrate).connect().await;
        let Err(Error::InvalidConfig(message)) = refused else {
            panic!("a newer schema was accepted (migrate {migrate}): {refused:?}")
        };
        assert!(message.contains("newer than this build knows"), "{message}");
    }
}

#[tokio::test]
async fn an_unmigrated_schema_is_refused_unless_migrations_run() {
    let Some((db, _broker)) = start().await else { return };
    let refused = PostgresBroker::builder(db.url())
        .schema("elsewhere")
        .migrate(false)
        .connect()
        .await;
    let Err(Error::InvalidConfig(message)) = refused else {
        panic!("an unmigrated schema was accepted: {refused:?}")
    };
    assert!(message.contains("PostgresBroker::migrate"), "{message}");
    let bad = PostgresBroker::builder(db.url()).schema("Bad-Name").connect().await;
    assert!(matches!(bad, Err(Error::InvalidConfig(_))), "{bad:?}");
}

#[tokio::test]
async fn brokers_in_different_schemas_do_not_share_jobs() {
    let Some((db, broker)) = start().await else { return };
    let other = PostgresBroker::builder(db.url())
        .schema("other_app")
        .connect()
        .await
        .unwrap();
    let q = queue("shared-name");
    broker.enqueue(vec![job(&q, 1)]).await.unwrap();
    assert!(other.reserve(&q, take(10, 30_000)).await.unwrap().is_empty());
    assert_eq!(other.queues().await.unwrap(), []);
    assert_eq!(broker.reserve(&q, take(10, 30_000)).await.unwrap().len(), 1);
}

#[tokio::test]
async fn the_sql_function_enqueues_like_the_client_and_wakes_workers() {
    let Some((db, broker)) = start().await else { return };
    let q = queue("billing");
    let waiter = {
        let (broker, q) = (broker.clone(), q.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let request = ReserveRequest::new(10, Duration::from_secs(30), Duration::from_secs(10));
            let got = broker.reserve(&q, request).await.unwrap();
            (got, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Another program, on a connection of its own.
    let mut producer = db.connect().await;
    let enqueue = "SELECT job_id, enqueued FROM flagship_worker.enqueue('billing', 'send-invoice', $1, \
                   idempotency_key => $2)";
    let (id, enqueued): (uuid::Uuid, bool) = sqlx::query_as(enqueue)
        .bind(serde_json::json!({ "order_id": 5 }))
        .bind("invoice:5")
        .fetch_one(&mut producer)
        .await
        .unwrap();
    assert!(enqueued);
    let (got, waited) = waiter.await.unwrap();
    assert!(
        waited < Duration::from_secs(2),
        "the waiting worker was not woken: {waited:?}"
    );
    let [reserved] = got.as_slice() else {
        panic!("expected the job, got {got:?}")
    };
    let envelope = &reserved.envelope;
    assert_eq!(envelope.id, JobId::from(id));
    assert_eq!(envelope.kind, "send-invoice");
    assert_eq!(envelope.payload, serde_json::json!({ "order_id": 5 }));
    assert_eq!(envelope.idempotency_key.as_deref(), Some("invoice:5"));

    let (holder, again): (uuid::Uuid, bool) = sqlx::query_as(enqueue)
        .bind(serde_json::json!({ "order_id": 5 }))
        .bind("invoice:5")
        .fetch_one(&mut producer)
        .await
        .unwrap();
    assert_eq!((holder, again), (id, false), "the key is held by the first job");
    let mut same_key = job(&q, 5);
    same_key.idempotency_key = Some("invoice:5".into());
    assert_eq!(
        broker.enqueue(vec![same_key]).await.unwrap(),
        [EnqueueOutcome::Duplicate(JobId::from(id))],
        "the client and the function share keys"
    );

    let delayed = "SELECT enqueued FROM flagship_worker.enqueue('billing', 'send-invoice', '{}', delay => '1 hour')";
    let delayed: bool = sqlx::query_scalar(delayed).fetch_one(&mut producer).await.unwrap();
    assert!(delayed);
    let stats = broker.stats(&q).await.unwrap();
    assert_eq!((stats.active, stats.scheduled), (1, 1), "{stats:?}");
    let bad = sqlx::query("SELECT flagship_worker.enqueue('no spaces', 'k', '{}')")
        .execute(&mut producer)
        .await;
    assert!(bad.is_err(), "a bad queue name was accepted");
}

#[tokio::test]
async fn a_job_inserted_without_a_wake_up_is_found_by_the_poll() {
    let Some((db, _)) = start().await else { return };
    let broker = PostgresBroker::builder(db.url())
        .poll_interval(Duration::from_millis(200))
        .connect()
        .await
        .unwrap();
    let q = queue("polled");
    let waiter = {
        let broker = std::sync::Arc::new(broker);
        let q = q.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let request = ReserveRequest::new(1, Duration::from_secs(30), Duration::from_secs(10));
            (broker.reserve(&q, request).await.unwrap(), started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A producer that writes the row itself and forgets to NOTIFY.
    let mut producer = db.connect().await;
    sqlx::query(
        "INSERT INTO flagship_worker.jobs (id, queue, kind, payload, run_at) VALUES (gen_random_uuid(), $1, 'k', '{}', now())",
    )
    .bind(q.as_str())
    .execute(&mut producer)
    .await
    .unwrap();
    let (got, waited) = waiter.await.unwrap();
    assert_eq!(got.len(), 1, "the poll did not find the job");
    assert!(waited < Duration::from_secs(2), "took {waited:?} with a 200 ms poll");
}

#[tokio::test]
async fn the_broker_vacuums_its_tables_after_enough_changes() {
    let Some((db, _)) = start().await else { return };
    let broker = PostgresBroker::builder(db.url())
        .vacuum_after(Some(300))
        .connect()
        .await
        .unwrap();
    let vacuums = || async {
        let (manual, auto): (i64, i64) = sqlx::query_as(
            "SELECT vacuum_count, autovacuum_count FROM pg_stat_user_tables WHERE relid = 'flagship_worker.jobs'::regclass",
        )
        .fetch_one(broker.pool())
        .await
        .unwrap();
        manual + auto
    };
    let before = vacuums().await;
    let q = queue("churn");
    // 100 jobs reserved and completed change 200 rows.
    let churn = |from: u64| {
        let (broker, q) = (&broker, &q);
        async move {
            broker
                .enqueue((from..from + 100).map(|n| job(q, n)).collect())
                .await
                .unwrap();
            let reserved = broker.reserve(q, take(100, 30_000)).await.unwrap();
            let leases: Vec<_> = reserved.into_iter().map(|r| r.lease).collect();
            broker.complete(&leases).await.unwrap();
        }
    };
    churn(0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(vacuums().await, before, "vacuumed before 300 rows changed");
    churn(100).await;
    crate::support::eventually("a vacuum of the jobs table", Duration::from_secs(10), || async {
        vacuums().await > before
    })
    .await;
}

#[tokio::test]
async fn a_batch_sent_again_stores_nothing_twice() {
    let Some((_db, broker)) = start().await else { return };
    let q = queue("resent");
    let first: Vec<_> = (0..3).map(|n| job(&q, n)).collect();
    broker.enqueue(first.clone()).await.unwrap();
    // The reply was lost: the producer sends the batch again, with a new job.
    let mut again = first.clone();
    again.push(job(&q, 3));
    let outcomes = broker.enqueue(again.clone()).await.unwrap();
    let expected: Vec<_> = first
        .iter()
        .map(|j| EnqueueOutcome::Duplicate(j.id))
        .chain([EnqueueOutcome::Enqueued(again[3].id)])
        .collect();
    assert_eq!(outcomes, expected);
    assert_eq!(broker.stats(&q).await.unwrap().ready, 4);
}
