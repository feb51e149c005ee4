//! Authentication: on by default, refused without or with a wrong token.

use std::sync::Arc;

use axum::http::{header, Method, StatusCode};
use flagship_worker::{admin::AdminBuilder, Error, MemoryBroker};
use serde_json::json;

use crate::support::{request, send, Fixture, TOKEN};

/// Every API endpoint, with a body where it takes one.
fn endpoints(id: &str) -> Vec<(Method, String, Option<serde_json::Value>)> {
    vec![
        (Method::GET, "/api/queues".into(), None),
        (Method::GET, "/api/dlq".into(), None),
        (Method::GET, format!("/api/dlq/billing/{id}"), None),
        (Method::POST, format!("/api/dlq/billing/{id}/retry"), None),
        (Method::DELETE, format!("/api/dlq/billing/{id}"), None),
        (Method::POST, "/api/dlq/retry".into(), Some(json!({}))),
        (
            Method::POST,
            "/api/dlq/purge".into(),
            Some(json!({"older_than": "2100-01-01T00:00:00Z"})),
        ),
        (Method::GET, "/api/health".into(), None),
        (Method::GET, "/metrics".into(), None),
    ]
}

#[tokio::test(start_paused = true)]
async fn every_endpoint_refuses_a_missing_or_wrong_token() {
    let fx = Fixture::new();
    let id = fx.simple_dead_job("billing", "invoice").await.to_string();
    let router = fx.router();
    let wrong = format!("{TOKEN}x");
    let prefix = &TOKEN[..TOKEN.len() - 1];
    for (method, uri, body) in endpoints(&id) {
        for token in [None, Some(""), Some(wrong.as_str()), Some(prefix), Some("Bearer")] {
            let reply = send(&router, request(method.clone(), &uri, token, body.clone())).await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{method} {uri} with {token:?}");
            assert_eq!(reply.error_code(), "unauthorized");
            assert!(reply.header("www-authenticate").starts_with("Bearer"));
        }
        // Another scheme with the right secret is not a bearer token.
        let basic = axum::http::Request::builder()
            .method(method.clone())
            .uri(&uri)
            .header(header::AUTHORIZATION, format!("Basic {TOKEN}"))
            .body(axum::body::Body::empty())
            .unwrap();
        assert_eq!(
            send(&router, basic).await.status,
            StatusCode::UNAUTHORIZED,
            "{method} {uri}"
        );
    }
    assert!(fx.is_dead("billing", id.parse().unwrap()).await, "nothing happened");

    // The right token opens every one of them (the mutating ones last).
    for (method, uri, body) in endpoints(&id) {
        let reply = send(&router, request(method.clone(), &uri, Some(TOKEN), body)).await;
        assert!(
            reply.status.is_success() || reply.status == StatusCode::NOT_FOUND,
            "{method} {uri}: {} {}",
            reply.status,
            reply.body
        );
    }
}

#[test]
fn the_router_refuses_to_build_without_auth_unless_told_to() {
    let broker = Arc::new(MemoryBroker::new());
    let message = |result: Result<axum::Router, Error>| match result {
        Err(Error::InvalidConfig(message)) => message,
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("built"),
    };
    let none = message(AdminBuilder::new(broker.clone()).build());
    assert!(none.contains("insecure_no_auth"), "{none}");
    let short = message(AdminBuilder::new(broker.clone()).token("hunter2").build());
    assert!(short.contains("at least 16"), "{short}");
    let both = message(
        AdminBuilder::new(broker.clone())
            .token(TOKEN)
            .insecure_no_auth()
            .build(),
    );
    assert!(both.contains("choose one"), "{both}");
    assert!(AdminBuilder::new(broker).token(TOKEN).build().is_ok());
}

#[tokio::test(start_paused = true)]
async fn insecure_no_auth_serves_without_a_token() {
    let fx = Fixture::new();
    let router = AdminBuilder::new(fx.broker.clone()).insecure_no_auth().build().unwrap();
    let reply = send(&router, request(Method::GET, "/api/queues", None, None)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let page = send(&router, request(Method::GET, "/ui", None, None)).await;
    assert_eq!(page.status, StatusCode::OK, "no login page either");
    assert!(!page.body.contains("Log out"));
}
