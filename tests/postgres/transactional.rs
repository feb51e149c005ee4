//! Enqueueing inside the caller's transaction: the job commits or rolls
//! back with the caller's own writes.

use std::{collections::HashSet, sync::Arc, time::Duration};

use async_trait::async_trait;
use flagship_worker::{
    broker::postgres::{sqlx, PostgresBroker},
    Broker, Client, EnqueueOptions, EnqueueOutcome, Error, Handler, HandlerError, Job, JobContext, QueueConfig,
    RetryPolicy, Worker,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::support::{eventually, queue, run, start, stop, take};

/// The job of these tests: invoice order `order_id`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct SendInvoice {
    order_id: i64,
}

impl Job for SendInvoice {
    const KIND: &'static str = "send-invoice";
    const QUEUE: &'static str = "billing";

    fn idempotency_key(&self) -> Option<String> {
        Some(format!("invoice:{}", self.order_id))
    }
}

/// Marks the order invoiced; fails the attempt if the order is not there
/// (a job whose order was rolled back must never have been stored).
struct Invoicer {
    pool: sqlx::PgPool,
}

#[async_trait]
impl Handler for Invoicer {
    type Job = SendInvoice;

    async fn handle(&self, job: SendInvoice, _: &JobContext) -> Result<(), HandlerError> {
        let updated = sqlx::query("UPDATE orders SET invoiced = invoiced + 1 WHERE id = $1")
            .bind(job.order_id)
            .execute(&self.pool)
            .await
            .map_err(HandlerError::retry)?;
        if updated.rows_affected() != 1 {
            return Err(HandlerError::permanent(format!(
                "order {} does not exist",
                job.order_id
            )));
        }
        Ok(())
    }
}

async fn create_orders(broker: &PostgresBroker) {
    sqlx::query("CREATE TABLE orders (id bigint PRIMARY KEY, invoiced integer NOT NULL DEFAULT 0)")
        .execute(broker.pool())
        .await
        .unwrap();
}

fn invoicer(broker: &Arc<PostgresBroker>, name: &str) -> Worker {
    Worker::builder(broker.clone())
        .handler(Invoicer {
            pool: broker.pool().clone(),
        })
        .queue(
            QueueConfig::new(SendInvoice::QUEUE)
                .unwrap()
                .concurrency(8)
                .retry_policy(RetryPolicy::none()),
        )
        .idle_wait(Duration::from_millis(500))
        .worker_id(name)
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_rolled_back_job_is_not_stored_and_frees_its_key() {
    let Some((_db, broker)) = start().await else { return };
    let client = Client::new(broker.clone());
    let q = queue(SendInvoice::QUEUE);

    let mut tx = broker.pool().begin().await.unwrap();
    let outcome = broker
        .enqueue_in(&mut tx, &client, &SendInvoice { order_id: 1 }, EnqueueOptions::new())
        .await
        .unwrap();
    assert!(outcome.is_enqueued());
    // Not visible to workers before the commit.
    assert!(broker.reserve(&q, take(10, 30_000)).await.unwrap().is_empty());
    tx.rollback().await.unwrap();

    let stats = broker.stats(&q).await.unwrap();
    assert_eq!((stats.ready, stats.scheduled, stats.active), (0, 0, 0), "{stats:?}");
    let again = client.enqueue(&SendInvoice { order_id: 1 }).await.unwrap();
    assert!(
        again.is_enqueued(),
        "the rolled-back job's idempotency key must be free: {again:?}"
    );
    assert_ne!(again.id(), outcome.id());
    assert_eq!(broker.stats(&q).await.unwrap().ready, 1);
}

#[tokio::test]
async fn a_committed_job_runs_and_its_key_holds_in_later_transactions() {
    let Some((_db, broker)) = start().await else { return };
    create_orders(&broker).await;
    let worker = invoicer(&broker, "w");
    let client = worker.client();
    let running = vec![run(&worker)];
    // Let the worker go idle, so the commit's wake-up is what starts the job.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let mut tx = broker.pool().begin().await.unwrap();
    sqlx::query("INSERT INTO orders (id) VALUES (7)")
        .execute(&mut *tx)
        .await
        .unwrap();
    let stored = broker
        .enqueue_in(&mut tx, &client, &SendInvoice { order_id: 7 }, EnqueueOptions::new())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    eventually("the committed job ran", Duration::from_secs(10), || async {
        worker.stats().completed == 1
    })
    .await;

    let mut tx = broker.pool().begin().await.unwrap();
    let dup = broker
        .enqueue_in(&mut tx, &client, &SendInvoice { order_id: 7 }, EnqueueOptions::new())
        .await
        .unwrap();
    assert_eq!(
        dup,
        EnqueueOutcome::Duplicate(stored.id()),
        "the completed job's key is held"
    );
    tx.commit().await.unwrap();
    stop(running).await;
    let invoiced: i32 = sqlx::query_scalar("SELECT invoiced FROM orders WHERE id = 7")
        .fetch_one(broker.pool())
        .await
        .unwrap();
    assert_eq!(invoiced, 1);
}

#[tokio::test]
async fn invalid_jobs_are_refused_before_anything_is_written() {
    let Some((_db, broker)) = start().await else { return };
    let client = Client::new(broker.clone());
    client.registry().register::<SendInvoice>().unwrap();
    let q = queue(SendInvoice::QUEUE);
    let mut conn = broker.pool().acquire().await.unwrap();
    let refused = broker
        .enqueue_raw_in(
            &mut conn,
            &client,
            SendInvoice::KIND,
            serde_json::json!({ "order_id": "seven" }),
            EnqueueOptions::new(),
        )
        .await;
    assert!(matches!(refused, Err(Error::InvalidPayload { .. })), "{refused:?}");
    let unknown = broker
        .enqueue_raw_in(&mut conn, &client, "nope", serde_json::json!({}), EnqueueOptions::new())
        .await;
    assert!(matches!(unknown, Err(Error::UnknownKind(_))), "{unknown:?}");
    // On a plain connection a valid job is stored at once.
    let outcome = broker
        .enqueue_raw_in(
            &mut conn,
            &client,
            SendInvoice::KIND,
            serde_json::json!({ "order_id": 3 }),
            EnqueueOptions::new(),
        )
        .await
        .unwrap();
    assert!(outcome.is_enqueued());
    let stats = broker.stats(&q).await.unwrap();
    assert_eq!(stats.ready, 1, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orders_and_their_jobs_commit_together_under_concurrent_workers() {
    const ORDERS: i64 = 400;
    let Some((_db, broker)) = start().await else { return };
    create_orders(&broker).await;
    let workers = [invoicer(&broker, "a"), invoicer(&broker, "b")];
    let running: Vec<_> = workers.iter().map(run).collect();
    let client = workers[0].client();

    // Producers: each order in its own transaction with its job; every
    // third one rolls back, after both writes.
    let mut producers = Vec::new();
    for p in 0..4 {
        let (broker, client) = (broker.clone(), client.clone());
        producers.push(tokio::spawn(async move {
            let mut committed = Vec::new();
            for order_id in (0..ORDERS).filter(|n| n % 4 == p) {
                let mut tx = broker.pool().begin().await.unwrap();
                sqlx::query("INSERT INTO orders (id) VALUES ($1)")
                    .bind(order_id)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                let batch = [SendInvoice { order_id }];
                broker
                    .enqueue_batch_in(&mut tx, &client, &batch, EnqueueOptions::new())
                    .await
                    .unwrap();
                if order_id % 3 == 0 {
                    tx.rollback().await.unwrap();
                } else {
                    tx.commit().await.unwrap();
                    committed.push(order_id);
                }
            }
            committed
        }));
    }
    let mut committed = HashSet::new();
    for producer in producers {
        committed.extend(producer.await.unwrap());
    }
    let expected = committed.len() as u64;
    eventually("every committed order's job ran", Duration::from_secs(30), || async {
        workers.iter().map(|w| w.stats().completed).sum::<u64>() >= expected
    })
    .await;
    stop(running).await;

    let stats = broker.stats(&queue(SendInvoice::QUEUE)).await.unwrap();
    assert_eq!(
        (stats.completed, stats.dead, stats.ready, stats.active),
        (expected, 0, 0, 0),
        "a job without its order, or an order without its job: {stats:?}"
    );
    let rows: Vec<(i64, i32)> = sqlx::query_as("SELECT id, invoiced FROM orders ORDER BY id")
        .fetch_all(broker.pool())
        .await
        .unwrap();
    let stored: HashSet<i64> = rows.iter().map(|(id, _)| *id).collect();
    assert_eq!(stored, committed, "only committed orders exist");
    assert!(
        rows.iter().all(|(_, invoiced)| *invoiced == 1),
        "each order invoiced once"
    );
    assert!(
        workers.iter().all(|w| w.stats().completed > 0),
        "both workers took part"
    );
}
