//! The Resend mailer and the webhook sender against local servers: headers,
//! signatures, and how each answer is judged.

use std::time::Duration;

use chrono::Utc;
use flagship_worker::flagship::{
    notify::{
        DeliveryError, EgressPolicy, Email, HttpWebhookSender, Mailer, ResendMailer, RestrictedRange, WebhookMessage,
        WebhookSender,
    },
    WebhookEndpoint,
};

use crate::{mock::MockServer, pipeline::SECRET};

fn email() -> Email {
    Email::new(
        "FlagShip <alerts@flagship.test>",
        vec!["ops@acme.test".into()],
        "Usage at 80%",
        "details",
        "acme:warning-1:email",
    )
    .unwrap()
}

#[tokio::test]
async fn resend_gets_the_key_the_idempotency_key_and_the_email() {
    let server = MockServer::resend().await;
    let mailer = ResendMailer::new("re_live_123")
        .unwrap()
        .with_base_url(format!("{}/", server.url))
        .unwrap();
    mailer.send(&email()).await.unwrap();
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.path, "/emails");
    assert_eq!(request.header("authorization"), Some("Bearer re_live_123"));
    assert_eq!(request.header("idempotency-key"), Some("acme:warning-1:email"));
    assert_eq!(
        request.json(),
        serde_json::json!({
            "from": "FlagShip <alerts@flagship.test>",
            "to": ["ops@acme.test"],
            "subject": "Usage at 80%",
            "text": "details",
        })
    );
}

#[tokio::test]
async fn answers_are_judged_retry_after_transient_or_permanent() {
    let server = MockServer::resend().await;
    let mailer = ResendMailer::new("re_x").unwrap().with_base_url(&server.url).unwrap();
    server.script([
        (429, vec![("retry-after", "7".to_owned())]),
        (429, vec![]),
        (408, vec![]),
        (503, vec![]),
        (422, vec![]),
        (401, vec![]),
        (302, vec![("location", format!("{}/elsewhere", server.url))]),
    ]);
    let mut outcomes = Vec::new();
    for _ in 0..7 {
        outcomes.push(mailer.send(&email()).await.unwrap_err());
    }
    assert_eq!(
        outcomes[0],
        DeliveryError::RetryAfter {
            delay: Duration::from_secs(7),
            message: "Resend answered 429 Too Many Requests: scripted".into()
        }
    );
    assert!(
        matches!(outcomes[1], DeliveryError::Transient(_)),
        "429 without Retry-After backs off"
    );
    assert!(matches!(outcomes[2], DeliveryError::Transient(_)), "408");
    assert!(matches!(outcomes[3], DeliveryError::Transient(_)), "503");
    assert!(outcomes[4].is_permanent(), "422");
    assert!(outcomes[5].is_permanent(), "401");
    assert!(outcomes[6].is_permanent(), "302");
    assert!(outcomes[6].to_string().contains("redirects are not followed"));
    assert_eq!(server.requests().len(), 7, "the redirect was not followed");
}

#[tokio::test]
async fn unreachable_servers_are_transient_failures() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let mailer = ResendMailer::new("re_x").unwrap().with_base_url(url).unwrap();
    let err = mailer.send(&email()).await.unwrap_err();
    assert!(matches!(err, DeliveryError::Transient(_)), "{err}");
}

fn endpoint(url: String) -> WebhookEndpoint {
    WebhookEndpoint {
        url,
        secret: SECRET.into(),
    }
}

fn message() -> WebhookMessage {
    WebhookMessage {
        id: "msg_1".into(),
        timestamp: Utc::now(),
        body: br#"{"type":"threshold_warning"}"#.to_vec(),
    }
}

#[tokio::test]
async fn webhooks_are_signed_and_judged() {
    let receiver = MockServer::webhook_receiver(SECRET).await;
    let sender = HttpWebhookSender::new(EgressPolicy::strict().allow(RestrictedRange::Loopback)).unwrap();
    let target = endpoint(format!("{}/hooks", receiver.url));
    sender.send(&target, &message()).await.unwrap();
    let got = &receiver.requests()[0];
    assert_eq!(got.signature_valid, Some(true));
    assert_eq!(got.header("webhook-id"), Some("msg_1"));
    assert_eq!(got.header("content-type"), Some("application/json"));

    receiver.script([
        (429, vec![("retry-after", "3".to_owned())]),
        (410, vec![]),
        (500, vec![]),
    ]);
    let err = sender.send(&target, &message()).await.unwrap_err();
    assert!(matches!(err, DeliveryError::RetryAfter { delay, .. } if delay == Duration::from_secs(3)));
    assert!(sender.send(&target, &message()).await.unwrap_err().is_permanent());
    assert!(!sender.send(&target, &message()).await.unwrap_err().is_permanent());

    let wrong_secret = WebhookEndpoint {
        secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
        ..target.clone()
    };
    let err = sender.send(&wrong_secret, &message()).await.unwrap_err();
    assert!(err.is_permanent(), "a 401 from the receiver: {err}");
}

#[tokio::test]
async fn loopback_receivers_are_refused_unless_allowed() {
    let receiver = MockServer::webhook_receiver(SECRET).await;
    let strict = HttpWebhookSender::new(EgressPolicy::strict()).unwrap();
    let err = strict
        .send(&endpoint(format!("{}/hooks", receiver.url)), &message())
        .await
        .unwrap_err();
    assert!(err.is_permanent());
    assert!(err.to_string().contains("loopback"), "{err}");
    let port = receiver.url.rsplit(':').next().unwrap();
    let err = strict
        .send(&endpoint(format!("http://localhost:{port}/hooks")), &message())
        .await
        .unwrap_err();
    assert!(err.is_permanent(), "a name resolving to loopback: {err}");
    assert!(receiver.requests().is_empty(), "nothing reached the receiver");
}
