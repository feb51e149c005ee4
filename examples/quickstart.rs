//! The main demo, on the in-memory broker:
//!
//! - one job succeeds at once;
//! - one fails twice, then succeeds (the backoff delays are printed);
//! - one fails every time, exhausts its retries and lands in the dead-letter queue;
//! - an operator "fixes the bug" and retries it from the DLQ: it succeeds.
//!
//! The retry policy here uses short delays (exponential from 200 ms, 2
//! retries) so the demo finishes in about a second; the default policy is 5
//! retries after 1, 2, 4, 8 and 16 s.
//!
//! Run with `cargo run --example quickstart`.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use flagship_worker::{
    DeadFilter, DeadLetterQueue, Handler, HandlerError, Job, JobContext, JobId, MemoryBroker, QueueConfig, QueueName,
    RetryPolicy, Worker,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Sends an invoice. The schema (derived) is checked on enqueue and on reservation.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct SendInvoice {
    /// Customer to bill.
    customer: String,
    /// Amount in cents.
    amount_cents: u64,
    /// For the demo: how many times the mail server "fails" first.
    simulated_failures: u32,
}

impl Job for SendInvoice {
    const KIND: &'static str = "send-invoice";
    const QUEUE: &'static str = "billing";

    fn idempotency_key(&self) -> Option<String> {
        Some(format!("invoice:{}", self.customer))
    }
}

struct InvoiceSender {
    /// When each job's previous attempt ran, to print the backoff delays.
    last_attempt: Mutex<HashMap<JobId, Instant>>,
    /// Flipped by the "operator" before retrying the dead job.
    mail_server_fixed: AtomicBool,
    started: Instant,
}

#[async_trait]
impl Handler for InvoiceSender {
    type Job = SendInvoice;

    async fn handle(&self, job: SendInvoice, ctx: &JobContext) -> Result<(), HandlerError> {
        let now = Instant::now();
        let since_last = self
            .last_attempt
            .lock()
            .unwrap()
            .insert(ctx.id, now)
            .map(|prev| now - prev);
        let waited = match since_last {
            Some(delay) => format!(" (after a backoff of {} ms)", delay.as_millis()),
            None => String::new(),
        };
        let clock = format!("[{:>5} ms]", (now - self.started).as_millis());
        let fixed = self.mail_server_fixed.load(Ordering::SeqCst);
        if ctx.attempt < job.simulated_failures && !fixed {
            println!("{clock} {}: attempt {} failed{waited}", job.customer, ctx.attempt + 1);
            return Err(HandlerError::retry("mail server timed out"));
        }
        println!(
            "{clock} {}: invoice of ${}.{:02} sent on attempt {}{waited}",
            job.customer,
            job.amount_cents / 100,
            job.amount_cents % 100,
            ctx.attempt + 1
        );
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), flagship_worker::Error> {
    let broker = Arc::new(MemoryBroker::new());
    let handler = Arc::new(InvoiceSender {
        last_attempt: Mutex::new(HashMap::new()),
        mail_server_fixed: AtomicBool::new(false),
        started: Instant::now(),
    });
    let worker = Worker::builder(broker.clone())
        .queue(
            QueueConfig::new("billing")?
                .concurrency(4)
                .retry_policy(RetryPolicy::exponential_with(2, Duration::from_millis(200))),
        )
        .handler(handler.clone())
        .build()?;
    let client = worker.client();

    println!("Enqueueing three invoices (policy: 2 retries, exponential from 200 ms)");
    client
        .enqueue(&SendInvoice {
            customer: "ada".into(),
            amount_cents: 4_200,
            simulated_failures: 0,
        })
        .await?;
    client
        .enqueue(&SendInvoice {
            customer: "grace".into(),
            amount_cents: 1_999,
            simulated_failures: 2,
        })
        .await?;
    let doomed = client
        .enqueue(&SendInvoice {
            customer: "linus".into(),
            amount_cents: 50_000,
            simulated_failures: u32::MAX,
        })
        .await?
        .id();
    let again = client
        .enqueue(&SendInvoice {
            customer: "ada".into(),
            amount_cents: 4_200,
            simulated_failures: 0,
        })
        .await?;
    println!(
        "A second invoice for ada is refused as a duplicate of job {}",
        again.id()
    );

    // Bad input is refused before anything is stored, naming the JSON path.
    let bad = client
        .enqueue_raw(
            "send-invoice",
            serde_json::json!({ "customer": "eve", "amount_cents": -5, "simulated_failures": 0 }),
            Default::default(),
        )
        .await;
    if let Err(e) = bad {
        println!("Refused raw enqueue: {e}");
    }

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = {
        let worker = worker.clone();
        tokio::spawn(async move { worker.run_until(stopped).await })
    };

    let billing = QueueName::new("billing")?;
    let dlq = DeadFilter::queue(billing.clone());
    wait_for("the doomed invoice to reach the DLQ", || async {
        broker.count_dead(&dlq).await.unwrap_or(0) == 1
    })
    .await;
    let dead = broker.get_dead(&billing, doomed).await?.expect("the job is in the DLQ");
    println!(
        "linus's invoice is in the dead-letter queue after {} attempts: {}",
        dead.attempts.len(),
        dead.dead_letter_reason.as_deref().unwrap_or("?")
    );
    for (n, attempt) in dead.attempts.iter().enumerate() {
        println!("    attempt {}: {}", n + 1, attempt.error.as_deref().unwrap_or("ok"));
    }

    println!("Operator fixes the mail server and retries the job from the DLQ");
    handler.mail_server_fixed.store(true, Ordering::SeqCst);
    handler.last_attempt.lock().unwrap().remove(&doomed);
    broker.retry_dead(&billing, doomed).await?;
    wait_for("all invoices to be sent", || async { worker.stats().completed == 3 }).await;

    stop.send(()).ok();
    running.await.expect("worker task")?;
    let stats = worker.stats();
    println!(
        "Done: {} completed, {} retried, {} dead-lettered, {} in the DLQ now",
        stats.completed,
        stats.retried,
        stats.dead_lettered,
        broker.count_dead(&dlq).await?
    );
    Ok(())
}

async fn wait_for<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
