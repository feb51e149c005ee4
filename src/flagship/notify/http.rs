//! What the HTTP mailer and webhook sender share: the client setup and how
//! an answer is judged.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::{header::HeaderMap, StatusCode};

use super::{DeliveryError, MAX_RETRY_AFTER};
use crate::{Error, Result};

/// The longest any one request may take, connection included.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// How long connecting may take.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The most of an error answer's body kept in the error message.
const MAX_ERROR_BODY: usize = 512;

/// Builds a client: rustls with the ring provider unless the application
/// installed another, no system proxy, no redirects, bounded timeouts.
pub(super) fn build_client(builder: reqwest::ClientBuilder) -> Result<reqwest::Client> {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing the race to another thread installing one is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    builder
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent(concat!("flagship-worker/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::InvalidConfig(format!("could not build the HTTP client: {e}")))
}

/// How long a `Retry-After` header (seconds or an HTTP date) asks to wait,
/// at most [`MAX_RETRY_AFTER`].
pub(super) fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    let delay = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = DateTime::parse_from_rfc2822(value).ok()?.with_timezone(&Utc);
            (at - now).to_std().unwrap_or(Duration::ZERO)
        }
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

/// Judges an answer: 2xx is success; 429 retries after Retry-After (or
/// with backoff without one); 408 and 5xx are transient; a redirect or any
/// other status is permanent.
pub(super) async fn judge(what: &str, response: reqwest::Response) -> Result<(), DeliveryError> {
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let delay = retry_after(response.headers(), Utc::now());
    let body = response.text().await.unwrap_or_default();
    let mut excerpt: String = body.chars().take(MAX_ERROR_BODY).collect();
    if excerpt.len() < body.len() {
        excerpt.push('…');
    }
    let message = format!("{what} answered {status}: {excerpt}");
    Err(match status {
        StatusCode::TOO_MANY_REQUESTS => match delay {
            Some(delay) => DeliveryError::RetryAfter { delay, message },
            None => DeliveryError::Transient(message),
        },
        StatusCode::REQUEST_TIMEOUT => DeliveryError::Transient(message),
        s if s.is_server_error() => DeliveryError::Transient(message),
        s if s.is_redirection() => DeliveryError::Permanent(format!("{message} (redirects are not followed)")),
        _ => DeliveryError::Permanent(message),
    })
}

/// Judges a request that got no answer: a malformed request is permanent,
/// anything else (connection refused, timeout, reset) transient.
pub(super) fn judge_error(what: &str, error: &reqwest::Error) -> DeliveryError {
    let message = format!("{what}: {}", error_chain(error));
    if error.is_builder() {
        DeliveryError::Permanent(message)
    } else {
        DeliveryError::Transient(message)
    }
}

/// An error and its sources, joined with `: `.
pub(super) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use reqwest::header::{HeaderValue, RETRY_AFTER};

    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates_and_is_capped() {
        let now: DateTime<Utc> = "2026-01-01T10:00:00Z".parse().unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers, now), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("120"));
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(120)));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("Thu, 01 Jan 2026 10:00:30 GMT"));
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(30)));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("999999"));
        assert_eq!(retry_after(&headers, now), Some(MAX_RETRY_AFTER));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers, now), None);
    }
}
