//! Serves the admin API and the DLQ dashboard over an in-memory worker that
//! has a few completed, retrying and dead jobs.
//!
//! ```text
//! cargo run --example admin_server --features admin
//! ```
//!
//! Then open the printed URL and log in with the printed token. Set
//! `ADMIN_TOKEN` to choose the token and `ADMIN_ADDR` to choose the address
//! (default `127.0.0.1:8787`). Stop it with Ctrl-C.

use std::{future::IntoFuture, sync::Arc, time::Duration};

use async_trait::async_trait;
use flagship_worker::{
    admin::{AdminBuilder, AdminMetrics},
    EnqueueOptions, Handler, HandlerError, Job, JobContext, MemoryBroker, QueueConfig, RetryPolicy, Worker,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Bills a customer; closed accounts fail for good.
#[derive(Serialize, Deserialize, JsonSchema)]
struct SendInvoice {
    customer: String,
    amount_cents: u64,
}

impl Job for SendInvoice {
    const KIND: &'static str = "send-invoice";
    const QUEUE: &'static str = "billing";
}

struct Invoicer;

#[async_trait]
impl Handler for Invoicer {
    type Job = SendInvoice;

    async fn handle(&self, job: SendInvoice, _: &JobContext) -> Result<(), HandlerError> {
        if job.customer.starts_with("closed-") {
            return Err(HandlerError::permanent(format!(
                "customer `{}` has closed their account; invoice of {} cents not sent",
                job.customer, job.amount_cents
            )));
        }
        Ok(())
    }
}

/// Resizes an image; one CDN keeps timing out.
#[derive(Serialize, Deserialize, JsonSchema)]
struct ResizeImage {
    url: String,
    width: u32,
}

impl Job for ResizeImage {
    const KIND: &'static str = "resize-image";
    const QUEUE: &'static str = "media";
}

struct Resizer;

#[async_trait]
impl Handler for Resizer {
    type Job = ResizeImage;

    async fn handle(&self, job: ResizeImage, _: &JobContext) -> Result<(), HandlerError> {
        if job.url.contains("slow-cdn") {
            return Err(HandlerError::retry(format!(
                "GET {} timed out after 10 s (upstream 504)",
                job.url
            )));
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,flagship_worker=info".into()),
        )
        .init();

    let broker = Arc::new(MemoryBroker::new());
    let metrics = AdminMetrics::new();
    let worker = Worker::builder(broker.clone())
        .handler(Invoicer)
        .handler(Resizer)
        .queue(QueueConfig::new("media")?.retry_policy(RetryPolicy::linear(2, Duration::from_millis(200))))
        .observer(metrics.observer())
        .build()?;

    let client = worker.client();
    for (customer, amount_cents) in [
        ("ada", 1200),
        ("closed-initech", 4900),
        ("grace", 300),
        ("closed-globex", 15000),
    ] {
        client
            .enqueue(&SendInvoice {
                customer: customer.into(),
                amount_cents,
            })
            .await?;
    }
    for (url, width) in [
        ("https://img.example.com/cat.png", 640),
        ("https://slow-cdn.example.net/banner.jpg", 1280),
    ] {
        client
            .enqueue_with(&ResizeImage { url: url.into(), width }, EnqueueOptions::new())
            .await?;
    }

    let token = std::env::var("ADMIN_TOKEN")
        .unwrap_or_else(|_| rand::random::<[u8; 24]>().iter().map(|b| format!("{b:02x}")).collect());
    let admin = AdminBuilder::new(broker)
        .token(token.clone())
        .worker(&worker)
        .metrics(metrics)
        .build()?;
    let app = axum::Router::new().nest("/admin", admin);

    let addr = std::env::var("ADMIN_ADDR").unwrap_or_else(|_| "127.0.0.1:8787".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let addr = listener.local_addr()?;
    println!("dashboard: http://{addr}/admin/ui");
    println!("token:     {token}");
    println!("API:       curl -H 'Authorization: Bearer {token}' http://{addr}/admin/api/dlq");
    println!("metrics:   curl -H 'Authorization: Bearer {token}' http://{addr}/admin/metrics");

    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = axum::serve(listener, app).with_graceful_shutdown({
        let mut stop = stop_rx.clone();
        async move {
            let _ = stop.wait_for(|s| *s).await;
        }
    });
    let run_worker = worker.run_until({
        let mut stop = stop_rx;
        async move {
            let _ = stop.wait_for(|s| *s).await;
        }
    });
    let (served, ran, ()) = tokio::join!(server.into_future(), run_worker, async {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    served?;
    ran?;
    Ok(())
}
