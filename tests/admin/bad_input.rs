//! Bad input gets a 4xx with a JSON error body, never a 500.

use axum::{
    body::Body,
    http::{header, Method, Request, StatusCode},
};
use flagship_worker::JobId;
use serde_json::json;

use crate::support::{call, send, Fixture, TOKEN};

#[tokio::test(start_paused = true)]
async fn every_bad_input_is_a_4xx_with_a_json_error() {
    let fx = Fixture::new();
    let dead = fx.simple_dead_job("billing", "invoice").await;
    fx.simple_dead_job("billing", "invoice").await;
    fx.simple_dead_job("media", "resize").await;
    let router = fx.router();
    let unknown = JobId::new();
    let long_kind = "k".repeat(200);

    let cases: Vec<(Method, String, Option<serde_json::Value>, StatusCode, &str)> = vec![
        // Unknown or malformed ids and queues.
        (
            Method::GET,
            format!("/api/dlq/billing/{unknown}"),
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::POST,
            format!("/api/dlq/billing/{unknown}/retry"),
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::DELETE,
            format!("/api/dlq/billing/{unknown}"),
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::GET,
            format!("/api/dlq/media/{dead}"),
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::GET,
            "/api/dlq/billing/not-a-uuid".into(),
            None,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::POST,
            "/api/dlq/billing/42/retry".into(),
            None,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::DELETE,
            "/api/dlq/billing/42".into(),
            None,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            format!("/api/dlq/bad%20queue/{dead}"),
            None,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        // Malformed filters.
        (
            Method::GET,
            "/api/dlq?queue=no%20spaces".into(),
            None,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            format!("/api/dlq?kind={long_kind}"),
            None,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            "/api/dlq?since=yesterday".into(),
            None,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            "/api/dlq?until=2025-13-01T00:00:00Z".into(),
            None,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            "/api/dlq?since=2025-02-01T00:00:00Z&until=2025-01-01T00:00:00Z".into(),
            None,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            "/api/dlq?queu=billing".into(),
            None,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        // Malformed cursors.
        (
            Method::GET,
            "/api/dlq?cursor=garbage".into(),
            None,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            "/api/dlq?cursor=billing~nonsense".into(),
            None,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        // A queue no job was ever sent to.
        (
            Method::GET,
            "/api/dlq?queue=nosuch".into(),
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        // Absurd page sizes.
        (
            Method::GET,
            "/api/dlq?limit=0".into(),
            None,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            "/api/dlq?limit=1001".into(),
            None,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            "/api/dlq?limit=-5".into(),
            None,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            "/api/dlq?limit=99999999999999999999999999".into(),
            None,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        // Bulk retry and purge bodies.
        (
            Method::POST,
            "/api/dlq/retry".into(),
            Some(json!({"queeu": "billing"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_request",
        ),
        (
            Method::POST,
            "/api/dlq/retry".into(),
            Some(json!({"since": "soon"})),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::POST,
            "/api/dlq/retry".into(),
            Some(json!({"queue": 7})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_request",
        ),
        (
            Method::POST,
            "/api/dlq/purge".into(),
            Some(json!({})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_request",
        ),
        (
            Method::POST,
            "/api/dlq/purge".into(),
            Some(json!({"older_than": "30d"})),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::POST,
            "/api/dlq/purge".into(),
            Some(json!({"queue": "a b", "older_than": "2025-01-01T00:00:00Z"})),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        // Unknown paths and methods.
        (
            Method::GET,
            "/api/nothing-here".into(),
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::PUT,
            "/api/dlq".into(),
            None,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];

    for (method, uri, body, status, code) in cases {
        let reply = call(&router, method.clone(), &uri, body.clone()).await;
        assert_eq!(reply.status, status, "{method} {uri} {body:?}: {}", reply.body);
        assert_eq!(reply.error_code(), code, "{method} {uri}");
        assert!(
            reply.header("content-type").starts_with("application/json"),
            "{method} {uri}"
        );
    }

    // Nothing was changed by any of them.
    assert!(fx.is_dead("billing", dead).await);
}

#[tokio::test(start_paused = true)]
async fn bodies_that_are_not_json_are_refused() {
    let fx = Fixture::new();
    let router = fx.router();
    let not_json = Request::builder()
        .method(Method::POST)
        .uri("/api/dlq/retry")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{not json"))
        .unwrap();
    let reply = send(&router, not_json).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    assert_eq!(reply.error_code(), "bad_request");

    let no_content_type = Request::builder()
        .method(Method::POST)
        .uri("/api/dlq/purge")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::from(r#"{"older_than": "2025-01-01T00:00:00Z"}"#))
        .unwrap();
    let reply = send(&router, no_content_type).await;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{}", reply.body);
    assert_eq!(reply.error_code(), "bad_request");
}
