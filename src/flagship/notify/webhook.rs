//! [`HttpWebhookSender`]: signed webhooks over HTTP, behind the egress guard.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use async_trait::async_trait;
use reqwest::{
    dns::{Addrs, Name, Resolve, Resolving},
    header::CONTENT_TYPE,
    Url,
};

use super::{
    http::{build_client, judge, judge_error},
    DeliveryError, EgressPolicy, WebhookMessage, WebhookSender, WebhookSigner,
};
use crate::{flagship::model::WebhookEndpoint, Result};

/// The resolver error for a host that resolves to a forbidden address.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct EgressRefused(String);

/// Resolves names with the system resolver and refuses the whole answer if
/// any address is forbidden, so a name cannot smuggle in an internal
/// address (and the connection uses only addresses that were checked).
#[derive(Debug)]
struct GuardedResolver {
    policy: EgressPolicy,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            for addr in &addrs {
                policy
                    .check(addr.ip())
                    .map_err(|reason| EgressRefused(format!("{host} resolves to {}: {reason}", addr.ip())))?;
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Delivers webhooks signed per the Standard Webhooks scheme (`webhook-id`,
/// `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>`).
///
/// Only `http` and `https` URLs are used; addresses in a restricted range
/// (see [`EgressPolicy`]) are refused, both as IP literals and as what a
/// name resolves to; redirects are not followed. Answers are judged: 2xx
/// delivered; 429 retried after its Retry-After; 408 and 5xx retried; any
/// other status (and a refused URL) permanent.
///
/// ```
/// use flagship_worker::flagship::notify::{EgressPolicy, HttpWebhookSender};
/// let sender = HttpWebhookSender::new(EgressPolicy::strict())?;
/// # let _ = sender;
/// # Ok::<_, flagship_worker::Error>(())
/// ```
#[derive(Clone)]
pub struct HttpWebhookSender {
    client: reqwest::Client,
    /// Which addresses may be reached.
    policy: EgressPolicy,
}

impl fmt::Debug for HttpWebhookSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpWebhookSender")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl HttpWebhookSender {
    /// A sender that reaches what `policy` allows.
    pub fn new(policy: EgressPolicy) -> Result<Self> {
        let resolver = Arc::new(GuardedResolver { policy: policy.clone() });
        let client = build_client(reqwest::Client::builder().dns_resolver(resolver))?;
        Ok(HttpWebhookSender { client, policy })
    }

    /// Checks a URL before any connection: scheme, and the address if the
    /// host is an IP literal (names are checked when resolved).
    fn check_url(&self, raw: &str) -> Result<Url, DeliveryError> {
        let url = Url::parse(raw).map_err(|e| DeliveryError::Permanent(format!("webhook URL `{raw}`: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(DeliveryError::Permanent(format!(
                "webhook URL `{raw}` uses `{}`; only http and https are allowed",
                url.scheme()
            )));
        }
        let Some(host) = url.host_str() else {
            return Err(DeliveryError::Permanent(format!("webhook URL `{raw}` has no host")));
        };
        // IPv6 literals come bracketed; names do not parse as addresses.
        let literal = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>();
        if let Ok(ip) = literal {
            self.policy.check(ip).map_err(DeliveryError::Permanent)?;
        }
        Ok(url)
    }
}

#[async_trait]
impl WebhookSender for HttpWebhookSender {
    async fn send(&self, endpoint: &WebhookEndpoint, message: &WebhookMessage) -> Result<(), DeliveryError> {
        let url = self.check_url(&endpoint.url)?;
        let signer = WebhookSigner::new(&endpoint.secret).map_err(|e| DeliveryError::Permanent(e.to_string()))?;
        let timestamp = message.timestamp.timestamp();
        let signature = signer.sign(&message.id, timestamp, &message.body);
        let response = self
            .client
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .header("webhook-id", &message.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(message.body.clone())
            .send()
            .await
            .map_err(|e| refused(&e).unwrap_or_else(|| judge_error("webhook receiver", &e)))?;
        judge("webhook receiver", response).await
    }
}

/// The egress refusal inside a request error, if that is what it was.
fn refused(error: &reqwest::Error) -> Option<DeliveryError> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(refusal) = e.downcast_ref::<EgressRefused>() {
            return Some(DeliveryError::Permanent(format!("webhook refused: {refusal}")));
        }
        source = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flagship::notify::RestrictedRange;

    #[test]
    fn urls_are_checked_before_connecting() {
        let strict = HttpWebhookSender::new(EgressPolicy::strict()).unwrap();
        for bad in [
            "ftp://example.com/hook",
            "file:///etc/passwd",
            "http://127.0.0.1:8080/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://[::ffff:10.0.0.1]/hook",
            "http://[::1]/hook",
            "http://100.64.1.1/hook",
            "not a url",
        ] {
            let err = strict.check_url(bad).unwrap_err();
            assert!(err.is_permanent(), "{bad}: {err}");
        }
        assert!(strict.check_url("https://hooks.example.com/flagship").is_ok());
        let local = HttpWebhookSender::new(EgressPolicy::strict().allow(RestrictedRange::Loopback)).unwrap();
        assert!(local.check_url("http://127.0.0.1:8080/hook").is_ok());
        assert!(local.check_url("http://10.0.0.1/hook").is_err());
    }

    #[tokio::test]
    async fn names_resolving_to_forbidden_addresses_are_refused_permanently() {
        let strict = HttpWebhookSender::new(EgressPolicy::strict()).unwrap();
        let endpoint = WebhookEndpoint {
            url: "http://localhost:9/hook".into(),
            secret: "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".into(),
        };
        let message = WebhookMessage {
            id: "msg_1".into(),
            timestamp: chrono::Utc::now(),
            body: b"{}".to_vec(),
        };
        let err = strict.send(&endpoint, &message).await.unwrap_err();
        assert!(err.is_permanent(), "{err}");
        assert!(err.to_string().contains("loopback"), "{err}");
    }
}
