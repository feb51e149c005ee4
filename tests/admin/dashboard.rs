//! The dashboard over `oneshot`: login, pages, actions, escaping, CSRF.

use std::time::Duration;

use axum::{
    body::Body,
    http::{header, Method, Request, StatusCode},
    Router,
};
use chrono::TimeDelta;
use flagship_worker::Broker;
use serde_json::json;

use crate::{
    logs,
    support::{queue, request, send, Fixture, Reply, TOKEN},
};

/// Seconds in a day.
const DAY: u64 = 24 * 3600;

/// Logs in through the form and returns the `Cookie` header value.
pub(crate) async fn login(router: &Router, base: &str) -> String {
    let reply = form(router, &format!("{base}/ui/login"), None, &format!("token={TOKEN}")).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    assert_eq!(reply.header("location"), format!("{base}/ui"));
    let set_cookie = reply.header("set-cookie");
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"));
    assert!(set_cookie.contains(&format!("Path={base}/ui;")), "{set_cookie}");
    assert!(
        !set_cookie.contains(TOKEN),
        "the token itself never goes to the browser"
    );
    set_cookie.split(';').next().unwrap().to_owned()
}

pub(crate) async fn form(router: &Router, uri: &str, cookie: Option<&str>, body: &str) -> Reply {
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "same-origin");
    if let Some(cookie) = cookie {
        builder = builder.header(header::COOKIE, cookie);
    }
    send(router, builder.body(Body::from(body.to_owned())).unwrap()).await
}

pub(crate) async fn page(router: &Router, uri: &str, cookie: Option<&str>) -> Reply {
    let mut builder = Request::builder().method(Method::GET).uri(uri);
    if let Some(cookie) = cookie {
        builder = builder.header(header::COOKIE, cookie);
    }
    send(router, builder.body(Body::empty()).unwrap()).await
}

/// Sessions are issued and checked on the router's clock
/// (`AdminBuilder::clock`), not the system's: on a paused clock a session
/// outlives an hour of real time and ends once the clock passes its TTL.
#[tokio::test(start_paused = true)]
async fn sessions_expire_by_the_admin_clock() {
    let fx = Fixture::new();
    let router = fx.router();
    let cookie = login(&router, "").await;
    assert_eq!(page(&router, "/ui", Some(&cookie)).await.status, StatusCode::OK);
    tokio::time::advance(flagship_worker::admin::DEFAULT_SESSION_TTL - Duration::from_secs(1)).await;
    assert_eq!(
        page(&router, "/ui", Some(&cookie)).await.status,
        StatusCode::OK,
        "the session ended before its TTL on the admin clock"
    );
    tokio::time::advance(Duration::from_secs(2)).await;
    let expired = page(&router, "/ui", Some(&cookie)).await;
    assert_eq!(
        expired.status,
        StatusCode::SEE_OTHER,
        "the session outlived its TTL on the admin clock"
    );
    assert_eq!(expired.header("location"), "/ui/login");
}

#[tokio::test(start_paused = true)]
async fn pages_need_a_login_and_the_login_needs_the_token() {
    let fx = Fixture::new();
    let router = Router::new().nest("/admin", fx.router());

    let reply = page(&router, "/admin/ui", None).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(
        reply.header("location"),
        "/admin/ui/login",
        "redirects within the mount point"
    );
    let reply = page(&router, "/admin", None).await;
    assert_eq!(reply.header("location"), "/admin/ui");

    let login_page = page(&router, "/admin/ui/login", None).await;
    assert_eq!(login_page.status, StatusCode::OK);
    assert!(login_page.body.contains("action=\"/admin/ui/login\""));
    assert!(login_page.body.contains("href=\"/admin/ui/style.css\""));

    let wrong = form(&router, "/admin/ui/login", None, "token=not-the-token-at-all").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.body.contains("That token is not right"));
    assert!(wrong.header("set-cookie").is_empty());

    let cookie = login(&router, "/admin").await;
    let reply = page(&router, "/admin/ui", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);

    // A forged or altered cookie is no session.
    for forged in ["flagship_admin_session=1", "flagship_admin_session=99999999999.00"] {
        assert_eq!(
            page(&router, "/admin/ui", Some(forged)).await.status,
            StatusCode::SEE_OTHER
        );
    }
    let value = cookie.split_once('=').unwrap().1;
    let (expires, tag) = value.split_once('.').unwrap();
    let extended = format!("flagship_admin_session={}.{tag}", expires.parse::<i64>().unwrap() + 1);
    assert_eq!(
        page(&router, "/admin/ui", Some(&extended)).await.status,
        StatusCode::SEE_OTHER
    );

    // The stylesheet is public; the API does not take the cookie.
    assert_eq!(page(&router, "/admin/ui/style.css", None).await.status, StatusCode::OK);
    assert_eq!(
        page(&router, "/admin/api/queues", Some(&cookie)).await.status,
        StatusCode::UNAUTHORIZED
    );

    let out = form(&router, "/admin/ui/logout", Some(&cookie), "").await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(out.header("set-cookie").contains("Max-Age=0"));
}

#[tokio::test(start_paused = true)]
async fn the_dashboard_shows_stats_dead_jobs_and_their_details() {
    let fx = Fixture::new();
    let id = fx
        .dead_job(
            "billing",
            "send-invoice",
            json!({"customer": "initech", "cents": 4900}),
            &["connection reset", "card declined"],
            "retries exhausted after 2 attempts: card declined",
        )
        .await;
    fx.simple_dead_job("media", "resize-image").await;
    let router = fx.router();
    let cookie = login(&router, "").await;

    let reply = page(&router, "/ui", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let html = &reply.body;
    assert!(reply.header("content-type").starts_with("text/html"));
    assert!(reply.header("content-security-policy").contains("default-src 'none'"));
    assert_eq!(reply.header("x-frame-options"), "DENY");
    assert!(html.contains("<h2>Queues</h2>") && html.contains("<h2>Dead-letter queue</h2>"));
    assert!(html.contains(&format!("data-job-id=\"{id}\"")));
    assert!(html.contains("<code>send-invoice</code>"));
    assert!(html.contains("card declined"), "last error shown");
    assert!(html.contains(&format!("action=\"/ui/jobs/billing/{id}/retry\"")));
    assert!(html.contains(&format!("action=\"/ui/jobs/billing/{id}/delete\"")));
    assert!(html.contains("2025-01-01 00:00:00 UTC"), "dead since");
    assert!(!html.contains("<script"), "no script at all");

    let filtered = page(&router, "/ui?queue=media", Some(&cookie)).await;
    assert!(!filtered.body.contains(&id.to_string()));
    assert!(filtered.body.contains("resize-image"));
    let paged = page(&router, "/ui?limit=1", Some(&cookie)).await;
    assert!(paged.body.contains("Next page"));

    let detail = page(&router, &format!("/ui/jobs/billing/{id}"), Some(&cookie)).await;
    assert_eq!(detail.status, StatusCode::OK);
    assert!(
        detail.body.contains("&quot;customer&quot;: &quot;initech&quot;"),
        "payload shown"
    );
    assert!(detail.body.contains("Attempts (2)"));
    assert!(detail.body.contains("connection reset") && detail.body.contains("worker-test"));
    assert!(detail.body.contains("retries exhausted after 2 attempts"));

    let bad = page(&router, "/ui?limit=5000", Some(&cookie)).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("`limit` must be"));
    let missing = page(&router, &format!("/ui/jobs/media/{id}"), Some(&cookie)).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test(start_paused = true)]
async fn text_from_jobs_is_escaped() {
    let fx = Fixture::new();
    let evil = "<script>alert(1)</script>\"'&";
    let id = fx
        .dead_job("billing", "invoice", json!({"note": evil}), &[evil], evil)
        .await;
    let router = fx.router();
    let cookie = login(&router, "").await;
    for uri in ["/ui".to_owned(), format!("/ui/jobs/billing/{id}")] {
        let html = page(&router, &uri, Some(&cookie)).await.body;
        assert!(!html.contains("<script>"), "{uri}");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;"),
            "{uri}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn retry_and_delete_buttons_act_and_come_back_with_a_notice() {
    let fx = Fixture::new();
    let retried = fx.simple_dead_job("billing", "invoice").await;
    let deleted = fx.simple_dead_job("billing", "invoice").await;
    let router = fx.router();
    let cookie = login(&router, "").await;

    let reply = form(&router, &format!("/ui/jobs/billing/{retried}/retry"), Some(&cookie), "").await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    assert_eq!(reply.header("location"), format!("/ui?notice=retried&job={retried}"));
    assert!(!fx.is_dead("billing", retried).await);
    let back = page(&router, reply.header("location"), Some(&cookie)).await;
    assert!(back.body.contains(&format!("Job {retried} moved back to ready.")));
    assert!(!back.body.contains(&format!("data-job-id=\"{retried}\"")));

    let reply = form(
        &router,
        &format!("/ui/jobs/billing/{deleted}/delete"),
        Some(&cookie),
        "",
    )
    .await;
    assert_eq!(reply.header("location"), format!("/ui?notice=deleted&job={deleted}"));
    assert!(!fx.is_dead("billing", deleted).await);

    let again = form(
        &router,
        &format!("/ui/jobs/billing/{deleted}/delete"),
        Some(&cookie),
        "",
    )
    .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert!(again.body.contains("not in the dead-letter queue"));
}

#[tokio::test(start_paused = true)]
async fn forms_from_other_sites_or_without_a_session_are_refused() {
    let fx = Fixture::new();
    let id = fx.simple_dead_job("billing", "invoice").await;
    let router = fx.router();
    let cookie = login(&router, "").await;
    let uri = format!("/ui/jobs/billing/{id}/retry");

    let cross = Request::builder()
        .method(Method::POST)
        .uri(&uri)
        .header(header::COOKIE, &cookie)
        .header("sec-fetch-site", "cross-site")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&router, cross).await.status, StatusCode::FORBIDDEN);
    let cross_login = Request::builder()
        .method(Method::POST)
        .uri("/ui/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "same-site")
        .body(Body::from(format!("token={TOKEN}")))
        .unwrap();
    assert_eq!(send(&router, cross_login).await.status, StatusCode::FORBIDDEN);

    let anonymous = form(&router, &uri, None, "").await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert!(fx.is_dead("billing", id).await, "nothing happened");

    // A script with the bearer token may use the dashboard routes too.
    let scripted = send(&router, request(Method::POST, &uri, Some(TOKEN), None)).await;
    assert_eq!(scripted.status, StatusCode::SEE_OTHER);
    assert!(!fx.is_dead("billing", id).await);
}

#[tokio::test(start_paused = true)]
async fn retry_all_matching_retries_exactly_what_the_filter_shows() {
    let fx = Fixture::new();
    let billing_invoice = fx.simple_dead_job("billing", "invoice").await;
    let billing_refund = fx.simple_dead_job("billing", "refund").await;
    let media_invoice = fx.simple_dead_job("media", "invoice").await;
    let media_resize = fx.simple_dead_job("media", "resize").await;
    let router = Router::new().nest("/admin", fx.router());
    let cookie = login(&router, "/admin").await;

    // The form carries the filter shown.
    let shown = page(&router, "/admin/ui?queue=billing&kind=invoice", Some(&cookie)).await;
    let html = &shown.body;
    assert!(html.contains("action=\"/admin/ui/dlq/retry\""), "{html}");
    assert!(html.contains("<input type=\"hidden\" name=\"queue\" value=\"billing\">"));
    assert!(html.contains("<input type=\"hidden\" name=\"kind\" value=\"invoice\">"));
    assert!(html.contains("Retry all matching"));
    let none = page(&router, "/admin/ui?kind=no-such-kind", Some(&cookie)).await;
    assert!(
        !none.body.contains("Retry all matching"),
        "nothing to retry when nothing matches"
    );

    let reply = form(
        &router,
        "/admin/ui/dlq/retry",
        Some(&cookie),
        "queue=billing&kind=invoice",
    )
    .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    assert_eq!(
        reply.header("location"),
        "/admin/ui?queue=billing&kind=invoice&notice=retried_matching&count=1"
    );
    assert!(!fx.is_dead("billing", billing_invoice).await);
    assert!(fx.is_dead("billing", billing_refund).await, "another kind");
    assert!(fx.is_dead("media", media_invoice).await, "another queue");
    assert!(fx.is_dead("media", media_resize).await);
    assert_eq!(fx.broker.stats(&queue("billing")).await.unwrap().ready, 1);
    let back = page(&router, reply.header("location"), Some(&cookie)).await;
    assert_eq!(back.status, StatusCode::OK, "{}", back.body);
    assert!(back.body.contains("Moved 1 dead job back to ready."), "{}", back.body);
    assert!(back.body.contains("<option value=\"billing\" selected>"), "same filter");

    // Every queue (the form's empty queue), one kind.
    let reply = form(&router, "/admin/ui/dlq/retry", Some(&cookie), "queue=&kind=invoice").await;
    assert_eq!(
        reply.header("location"),
        "/admin/ui?kind=invoice&notice=retried_matching&count=1"
    );
    assert!(!fx.is_dead("media", media_invoice).await);
    assert!(fx.is_dead("billing", billing_refund).await && fx.is_dead("media", media_resize).await);

    // No filter: everything left, on every page.
    let reply = form(&router, "/admin/ui/dlq/retry", Some(&cookie), "queue=&kind=").await;
    assert_eq!(reply.header("location"), "/admin/ui?notice=retried_matching&count=2");
    assert!(!fx.is_dead("billing", billing_refund).await && !fx.is_dead("media", media_resize).await);
    let back = page(&router, reply.header("location"), Some(&cookie)).await;
    assert!(back.body.contains("Moved 2 dead jobs back to ready."));
}

#[tokio::test(start_paused = true)]
async fn purge_older_than_deletes_only_what_died_before_the_cutoff() {
    let fx = Fixture::new();
    let start = fx.now();
    let old_billing = fx.simple_dead_job("billing", "invoice").await;
    let old_media = fx.simple_dead_job("media", "resize").await;
    tokio::time::advance(Duration::from_secs(10 * DAY)).await;
    let edge_billing = fx.simple_dead_job("billing", "invoice").await;
    tokio::time::advance(Duration::from_secs(10 * DAY)).await;
    let mid_media = fx.simple_dead_job("media", "resize").await;
    tokio::time::advance(Duration::from_secs(20 * DAY)).await;
    let new_billing = fx.simple_dead_job("billing", "invoice").await;
    assert_eq!(
        fx.now() - start,
        TimeDelta::days(40),
        "the paused clock moved only when told"
    );
    assert_eq!(
        fx.dead_at("billing", edge_billing).await,
        fx.now() - TimeDelta::days(30)
    );
    let router = fx.router();
    let cookie = login(&router, "").await;

    let shown = page(&router, "/ui?queue=billing", Some(&cookie)).await;
    assert!(shown.body.contains("action=\"/ui/dlq/purge\""), "{}", shown.body);
    assert!(shown
        .body
        .contains("name=\"days\" type=\"number\" min=\"1\" max=\"3650\" value=\"30\""));

    // 30 days on billing: the cutoff is 10 days after the start; a job
    // dead-lettered exactly then is not older, and stays.
    let reply = form(&router, "/ui/dlq/purge", Some(&cookie), "queue=billing&days=30").await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    assert_eq!(
        reply.header("location"),
        "/ui?queue=billing&notice=purged&count=1&days=30"
    );
    assert!(!fx.is_dead("billing", old_billing).await);
    assert!(
        fx.is_dead("billing", edge_billing).await,
        "dead-lettered at the cutoff, not before"
    );
    assert!(fx.is_dead("billing", new_billing).await);
    assert!(fx.is_dead("media", old_media).await, "another queue");
    let back = page(&router, reply.header("location"), Some(&cookie)).await;
    assert!(
        back.body
            .contains("Deleted 1 dead job dead-lettered more than 30 days ago."),
        "{}",
        back.body
    );

    // Every queue, 25 days: cutoff 15 days after the start.
    let reply = form(&router, "/ui/dlq/purge", Some(&cookie), "queue=&days=25").await;
    assert_eq!(reply.header("location"), "/ui?notice=purged&count=2&days=25");
    assert!(!fx.is_dead("media", old_media).await && !fx.is_dead("billing", edge_billing).await);
    assert!(fx.is_dead("media", mid_media).await && fx.is_dead("billing", new_billing).await);

    // One day: only the job that died just now is left.
    let reply = form(&router, "/ui/dlq/purge", Some(&cookie), "days=1").await;
    assert_eq!(reply.header("location"), "/ui?notice=purged&count=1&days=1");
    let back = page(&router, reply.header("location"), Some(&cookie)).await;
    assert!(back
        .body
        .contains("Deleted 1 dead job dead-lettered more than 1 day ago."));
    assert!(!fx.is_dead("media", mid_media).await);
    assert!(fx.is_dead("billing", new_billing).await);
}

#[tokio::test(start_paused = true)]
async fn bad_bulk_input_is_a_4xx_page_and_changes_nothing() {
    let fx = Fixture::new();
    let id = fx.simple_dead_job("billing", "invoice").await;
    // Old enough that any valid purge would delete it.
    tokio::time::advance(Duration::from_secs(4000 * DAY)).await;
    let router = fx.router();
    let cookie = login(&router, "").await;
    let long_kind = format!("kind={}", "k".repeat(200));

    let cases: Vec<(&str, &str, StatusCode, &str)> = vec![
        (
            "/ui/dlq/purge",
            "days=abc",
            StatusCode::BAD_REQUEST,
            "`days` must be a whole number of days from 1 to 3650",
        ),
        ("/ui/dlq/purge", "days=0", StatusCode::BAD_REQUEST, "got `0`"),
        ("/ui/dlq/purge", "days=-7", StatusCode::BAD_REQUEST, "got `-7`"),
        ("/ui/dlq/purge", "days=1.5", StatusCode::BAD_REQUEST, "got `1.5`"),
        ("/ui/dlq/purge", "days=3651", StatusCode::BAD_REQUEST, "got `3651`"),
        (
            "/ui/dlq/purge",
            "days=99999999999999999999999",
            StatusCode::BAD_REQUEST,
            "from 1 to 3650",
        ),
        ("/ui/dlq/purge", "days=", StatusCode::BAD_REQUEST, "`days` must be"),
        (
            "/ui/dlq/purge",
            "queue=billing",
            StatusCode::BAD_REQUEST,
            "`days` must be",
        ),
        (
            "/ui/dlq/purge",
            "queue=bad%20queue&days=30",
            StatusCode::BAD_REQUEST,
            "`queue`",
        ),
        (
            "/ui/dlq/purge",
            "days=30&older_than=x",
            StatusCode::UNPROCESSABLE_ENTITY,
            "older_than",
        ),
        ("/ui/dlq/retry", "queue=bad%20queue", StatusCode::BAD_REQUEST, "`queue`"),
        (
            "/ui/dlq/retry",
            &long_kind,
            StatusCode::BAD_REQUEST,
            "`kind` is 200 bytes long",
        ),
        (
            "/ui/dlq/retry",
            "queue=billing&since=2025-01-01T00:00:00Z",
            StatusCode::UNPROCESSABLE_ENTITY,
            "since",
        ),
    ];
    for (uri, body, status, message) in cases {
        let reply = form(&router, uri, Some(&cookie), body).await;
        assert_eq!(reply.status, status, "{uri} {body}: {}", reply.body);
        assert!(reply.header("content-type").starts_with("text/html"), "{uri} {body}");
        assert!(reply.body.contains("class=\"notice error\""), "{uri} {body}");
        assert!(reply.body.contains(message), "{uri} {body}: {}", reply.body);
        assert!(fx.is_dead("billing", id).await, "{uri} {body} changed nothing");
    }

    // Not a form at all.
    let json_body = Request::builder()
        .method(Method::POST)
        .uri("/ui/dlq/purge")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::COOKIE, &cookie)
        .header("sec-fetch-site", "same-origin")
        .body(Body::from(r#"{"days": 1}"#))
        .unwrap();
    assert_eq!(
        send(&router, json_body).await.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    assert!(fx.is_dead("billing", id).await);
}

#[tokio::test(start_paused = true)]
async fn bulk_forms_from_other_sites_or_without_a_session_are_refused() {
    let fx = Fixture::new();
    let id = fx.simple_dead_job("billing", "invoice").await;
    tokio::time::advance(Duration::from_secs(100 * DAY)).await;
    let router = fx.router();
    let cookie = login(&router, "").await;

    for (uri, body) in [("/ui/dlq/retry", "queue=billing"), ("/ui/dlq/purge", "days=1")] {
        let anonymous = form(&router, uri, None, body).await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "{uri}");
        assert!(anonymous.body.contains("log in again"), "{uri}");
        let forged = form(&router, uri, Some("flagship_admin_session=99999999999.00"), body).await;
        assert_eq!(forged.status, StatusCode::UNAUTHORIZED, "{uri}");
        for site in ["cross-site", "same-site"] {
            let cross = Request::builder()
                .method(Method::POST)
                .uri(uri)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(header::COOKIE, &cookie)
                .header("sec-fetch-site", site)
                .body(Body::from(body))
                .unwrap();
            assert_eq!(send(&router, cross).await.status, StatusCode::FORBIDDEN, "{uri} {site}");
        }
        assert!(fx.is_dead("billing", id).await, "{uri}: nothing happened");
    }

    // With the session, the same purge goes through.
    let reply = form(&router, "/ui/dlq/purge", Some(&cookie), "days=1").await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    assert!(!fx.is_dead("billing", id).await);
}

#[tokio::test(start_paused = true)]
async fn every_mutation_leaves_a_tracing_event() {
    let fx = Fixture::new();
    let a = fx.simple_dead_job("billing", "invoice").await;
    let b = fx.simple_dead_job("billing", "invoice").await;
    let c = fx.simple_dead_job("billing", "invoice").await;
    let d = fx.simple_dead_job("billing", "invoice").await;
    fx.simple_dead_job("billing", "invoice").await;
    fx.simple_dead_job("media", "resize").await;
    let router = fx.router();
    let cookie = login(&router, "").await;

    let logs = logs::capture("flagship_worker::admin=info");

    send(
        &router,
        request(Method::POST, &format!("/api/dlq/billing/{a}/retry"), Some(TOKEN), None),
    )
    .await;
    send(
        &router,
        request(Method::DELETE, &format!("/api/dlq/billing/{b}"), Some(TOKEN), None),
    )
    .await;
    form(&router, &format!("/ui/jobs/billing/{c}/retry"), Some(&cookie), "").await;
    form(&router, &format!("/ui/jobs/billing/{d}/delete"), Some(&cookie), "").await;
    let body = json!({"queue": "billing", "kind": "invoice"});
    send(
        &router,
        request(Method::POST, "/api/dlq/retry", Some(TOKEN), Some(body)),
    )
    .await;
    let body = json!({"older_than": "2100-01-01T00:00:00Z"});
    send(
        &router,
        request(Method::POST, "/api/dlq/purge", Some(TOKEN), Some(body)),
    )
    .await;

    form(&router, "/ui/dlq/retry", Some(&cookie), "queue=media&kind=").await;
    form(&router, "/ui/dlq/purge", Some(&cookie), "queue=&days=30").await;

    let log = logs.text();
    let lines: Vec<&str> = log.lines().collect();
    let has = |needles: &[&str]| lines.iter().any(|l| needles.iter().all(|n| l.contains(n)));
    assert!(has(&["action=\"retry\"", &a.to_string(), "via=\"api\""]), "{log}");
    assert!(has(&["action=\"delete\"", &b.to_string(), "via=\"api\""]), "{log}");
    assert!(has(&["action=\"retry\"", &c.to_string(), "via=\"dashboard\""]), "{log}");
    assert!(
        has(&["action=\"delete\"", &d.to_string(), "via=\"dashboard\""]),
        "{log}"
    );
    assert!(
        has(&["action=\"retry_matching\"", "kind=\"invoice\"", "retried=1"]),
        "{log}"
    );
    assert!(has(&["action=\"purge\"", "purged=1"]), "{log}");
    assert!(
        has(&[
            "action=\"retry_matching\"",
            "queue=\"media\"",
            "retried=0",
            "via=\"dashboard\""
        ]),
        "{log}"
    );
    assert!(has(&["action=\"purge\"", "purged=0", "via=\"dashboard\""]), "{log}");
    assert!(lines.iter().all(|l| l.contains("INFO")), "{log}");
}

fn probe() {
    tracing::info!(target: "flagship_worker::admin::probe", "probe event");
}

/// The cause of the flaky `every_mutation_leaves_a_tracing_event`: a
/// callsite first hit on another thread (another test's, with no
/// subscriber) while this thread's capture was the only dispatcher was
/// cached as wanted by nobody, and its events never reached the capture.
#[test]
fn events_of_a_callsite_first_hit_on_another_thread_are_captured() {
    let logs = logs::capture("flagship_worker::admin=info");
    std::thread::spawn(probe).join().unwrap();
    probe();
    assert!(logs.text().contains("probe event"), "{}", logs.text());
}

#[tokio::test(start_paused = true)]
async fn bulk_forms_show_the_count_on_a_confirm_page_before_acting() {
    let fx = Fixture::new();
    let a = fx.simple_dead_job("billing", "invoice").await;
    let b = fx.simple_dead_job("billing", "invoice").await;
    let other = fx.simple_dead_job("media", "resize").await;
    tokio::time::advance(Duration::from_secs(2 * 86_400)).await;
    let router = Router::new().nest("/admin", fx.router());
    let cookie = login(&router, "/admin").await;

    // The index's bulk forms ask (GET) first.
    let shown = page(&router, "/admin/ui?queue=billing", Some(&cookie)).await;
    assert!(
        shown
            .body
            .contains("<form class=\"bulk-retry\" method=\"get\" action=\"/admin/ui/dlq/retry\">"),
        "{}",
        shown.body
    );
    assert!(shown
        .body
        .contains("<form class=\"purge\" method=\"get\" action=\"/admin/ui/dlq/purge\">"));

    let confirm = page(&router, "/admin/ui/dlq/retry?queue=billing&kind=invoice", Some(&cookie)).await;
    assert_eq!(confirm.status, StatusCode::OK, "{}", confirm.body);
    assert!(
        confirm
            .body
            .contains("This moves 2 dead jobs of queue billing of kind invoice back to ready."),
        "{}",
        confirm.body
    );
    assert!(confirm
        .body
        .contains("<form method=\"post\" action=\"/admin/ui/dlq/retry\">"));
    assert!(confirm
        .body
        .contains("<input type=\"hidden\" name=\"kind\" value=\"invoice\">"));
    assert!(confirm
        .body
        .contains("href=\"/admin/ui?queue=billing&amp;kind=invoice\">Cancel</a>"));
    let purge = page(&router, "/admin/ui/dlq/purge?queue=&days=1", Some(&cookie)).await;
    assert!(
        purge
            .body
            .contains("This deletes 3 dead jobs of every queue dead-lettered more than 1 day ago, for good."),
        "{}",
        purge.body
    );
    assert!(purge.body.contains("<input type=\"hidden\" name=\"days\" value=\"1\">"));
    let none = page(&router, "/admin/ui/dlq/purge?queue=media&days=3", Some(&cookie)).await;
    assert!(
        none.body.contains("This deletes 0 dead jobs of queue media"),
        "{}",
        none.body
    );
    for id in [a, b] {
        assert!(fx.is_dead("billing", id).await, "asking changes nothing");
    }
    assert!(fx.is_dead("media", other).await);

    let unknown = page(&router, "/admin/ui/dlq/retry?queue=nosuch", Some(&cookie)).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(unknown.body.contains("queue `nosuch` is unknown"), "{}", unknown.body);
}
