//! Local stand-ins for Resend and a webhook receiver, on 127.0.0.1:0.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Router,
};
use flagship_worker::flagship::notify::WebhookSigner;

/// One request the server received.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub(crate) path: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// For a webhook receiver: whether the Standard Webhooks signature verified.
    pub(crate) signature_valid: Option<bool>,
}

impl Recorded {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A scripted answer: status and headers.
pub(crate) type Answer = (u16, Vec<(&'static str, String)>);

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<Recorded>>,
    /// Answers to give, first first; when empty, 200.
    script: Mutex<VecDeque<Answer>>,
    /// Verifies webhook signatures when set.
    signer: Option<WebhookSigner>,
}

/// A running mock server.
#[derive(Clone)]
pub(crate) struct MockServer {
    pub(crate) url: String,
    shared: Arc<Shared>,
}

impl MockServer {
    /// A Resend stand-in: answers 200 `{"id": ...}` unless scripted otherwise.
    pub(crate) async fn resend() -> Self {
        Self::start(None).await
    }

    /// A webhook receiver that verifies signatures with `secret` and
    /// answers 401 to a bad one.
    pub(crate) async fn webhook_receiver(secret: &str) -> Self {
        Self::start(Some(WebhookSigner::new(secret).unwrap())).await
    }

    async fn start(signer: Option<WebhookSigner>) -> Self {
        let shared = Arc::new(Shared {
            signer,
            ..Shared::default()
        });
        let router = Router::new().fallback(record).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        MockServer { url, shared }
    }

    /// Answers the next requests with these, in order.
    pub(crate) fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.shared.script.lock().unwrap().extend(answers);
    }

    pub(crate) fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }
}

async fn record(State(shared): State<Arc<Shared>>, uri: axum::http::Uri, headers: HeaderMap, body: Bytes) -> Response {
    let signature_valid = shared.signer.as_ref().map(|signer| {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let timestamp = get("webhook-timestamp").parse().unwrap_or(0);
        signer.verify(get("webhook-id"), timestamp, &body, get("webhook-signature"))
    });
    shared.requests.lock().unwrap().push(Recorded {
        path: uri.path().to_owned(),
        headers: headers.clone(),
        body,
        signature_valid,
    });
    if signature_valid == Some(false) {
        return (StatusCode::UNAUTHORIZED, "bad signature").into_response();
    }
    let scripted = shared.script.lock().unwrap().pop_front();
    match scripted {
        Some((status, extra)) => {
            let mut response = (StatusCode::from_u16(status).unwrap(), "scripted").into_response();
            for (name, value) in extra {
                response.headers_mut().insert(name, value.parse().unwrap());
            }
            response
        }
        None => (StatusCode::OK, r#"{"id":"mock-1"}"#).into_response(),
    }
}
