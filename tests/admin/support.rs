//! Fixtures: a memory broker with dead jobs, requests through `oneshot`.

use std::{future::Future, sync::Arc, time::Duration};

use axum::{
    body::{to_bytes, Body},
    http::{header, HeaderMap, Method, Request, StatusCode},
    Router,
};
use chrono::{DateTime, Utc};
use flagship_worker::{
    admin::AdminBuilder, AttemptRecord, Broker, Clock, DeadLetterQueue, JobEnvelope, JobId, MemoryBroker, QueueName,
    ReserveRequest, TokioClock, Worker,
};
use serde_json::{json, Value};
use tower::ServiceExt;

pub(crate) const TOKEN: &str = "test-admin-token-0123456789";

pub(crate) fn queue(name: &str) -> QueueName {
    QueueName::new(name).unwrap()
}

/// Wall time with an adjustable offset, so fixtures can die "hours ago"
/// (and scripted runs happen minute by minute) while a test runs in real
/// time.
#[derive(Debug, Default)]
pub(crate) struct ShiftedClock(std::sync::Mutex<chrono::TimeDelta>);

impl ShiftedClock {
    pub(crate) fn set_offset(&self, offset: chrono::TimeDelta) {
        *self.0.lock().unwrap() = offset;
    }
}

impl Clock for ShiftedClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + *self.0.lock().unwrap()
    }
}

/// A memory broker on a clock the test can read.
pub(crate) struct Fixture {
    pub(crate) broker: Arc<MemoryBroker>,
    pub(crate) clock: Arc<dyn Clock>,
}

impl Fixture {
    /// A broker whose clock starts at 2025-01-01T00:00:00Z (and moves with
    /// tokio's clock, paused in most tests).
    pub(crate) fn new() -> Self {
        Self::with_clock(Arc::new(TokioClock::starting_at(
            "2025-01-01T00:00:00Z".parse().unwrap(),
        )))
    }

    /// A broker on `clock`.
    pub(crate) fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Fixture {
            broker: Arc::new(MemoryBroker::with_clock(clock.clone())),
            clock,
        }
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The admin router on this broker, reading "now" from the same clock.
    pub(crate) fn router(&self) -> Router {
        AdminBuilder::new(self.broker.clone())
            .token(TOKEN)
            .clock(self.clock.clone())
            .build()
            .unwrap()
    }

    /// Enqueues a job and fails it once per error; the last failure
    /// dead-letters it with `reason`. Returns its id.
    pub(crate) async fn dead_job(
        &self,
        queue_name: &str,
        kind: &str,
        payload: Value,
        errors: &[&str],
        reason: &str,
    ) -> JobId {
        let broker = &self.broker;
        let q = queue(queue_name);
        let envelope = JobEnvelope::new(kind, q.clone(), payload, self.now());
        let id = envelope.id;
        broker.enqueue(vec![envelope]).await.unwrap();
        for (n, error) in errors.iter().enumerate() {
            let request = ReserveRequest::new(1, Duration::from_secs(30), Duration::ZERO);
            let reserved = broker.reserve(&q, request).await.unwrap();
            let job = reserved.first().expect("the job is ready");
            assert_eq!(job.lease.id, id, "fixtures keep one ready job per queue at a time");
            let now = self.now();
            let record = AttemptRecord::failed(now, now, *error, Some("worker-test".into()));
            if n + 1 == errors.len() {
                broker.dead_letter(job, Some(record), reason).await.unwrap();
            } else {
                broker.retry_after(job, Duration::ZERO, record).await.unwrap();
            }
        }
        id
    }

    /// A dead job with one failed attempt.
    pub(crate) async fn simple_dead_job(&self, queue_name: &str, kind: &str) -> JobId {
        self.dead_job(queue_name, kind, json!({"n": 1}), &["boom"], "boom")
            .await
    }

    /// When `id` was dead-lettered, as the broker recorded it.
    pub(crate) async fn dead_at(&self, queue_name: &str, id: JobId) -> DateTime<Utc> {
        self.broker
            .get_dead(&queue(queue_name), id)
            .await
            .unwrap()
            .and_then(|j| j.dead_lettered_at)
            .expect("the job is dead")
    }

    /// Whether `id` is in the DLQ of `queue_name`.
    pub(crate) async fn is_dead(&self, queue_name: &str, id: JobId) -> bool {
        self.broker.get_dead(&queue(queue_name), id).await.unwrap().is_some()
    }
}

/// A finished request: status, headers, body.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
}

impl Reply {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// Asserts a JSON error body with a code and a message.
    pub(crate) fn error_code(&self) -> String {
        let json = self.json();
        let message = json["error"]["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "error without a message: {}", self.body);
        json["error"]["code"].as_str().expect("an error code").to_owned()
    }

    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }
}

/// Sends one request through the router.
pub(crate) async fn send(router: &Router, request: Request<Body>) -> Reply {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = to_bytes(response.into_body(), 16 * 1024 * 1024).await.unwrap();
    Reply {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

/// A request with the bearer token (or `token`), and a JSON body if given.
pub(crate) fn request(method: Method, uri: &str, token: Option<&str>, body: Option<Value>) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    match body {
        Some(body) => builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap(),
        None => builder.body(Body::empty()).unwrap(),
    }
}

/// `GET uri` with the token.
pub(crate) async fn get(router: &Router, uri: &str) -> Reply {
    send(router, request(Method::GET, uri, Some(TOKEN), None)).await
}

/// `method uri` with the token and a JSON body.
pub(crate) async fn call(router: &Router, method: Method, uri: &str, body: Option<Value>) -> Reply {
    send(router, request(method, uri, Some(TOKEN), body)).await
}

/// Runs `worker` until `done` says so (checked as the paused clock moves),
/// then shuts it down. Panics after a generous timeout.
pub(crate) async fn run_worker_until<F, Fut>(worker: &Worker, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let run = {
        let worker = worker.clone();
        tokio::spawn(async move {
            worker
                .run_until(async move {
                    let _ = stop_rx.wait_for(|s| *s).await;
                })
                .await
        })
    };
    tokio::time::timeout(Duration::from_secs(600), async {
        while !done().await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the worker got there in time");
    stop_tx.send(true).unwrap();
    run.await.unwrap().unwrap();
}
