//! [`ResendMailer`]: email through the Resend HTTP API.

use std::fmt;

use async_trait::async_trait;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{
    http::{build_client, judge, judge_error},
    DeliveryError, Email, Mailer,
};
use crate::{Error, Result};

/// Resend's API.
pub const RESEND_API_BASE: &str = "https://api.resend.com";

/// The longest idempotency key Resend accepts; longer keys are replaced by
/// their SHA-256.
const MAX_IDEMPOTENCY_KEY: usize = 256;

/// Sends email with Resend: `POST {base}/emails` with a bearer API key and
/// an `Idempotency-Key` header, so a retry after an ambiguous failure does
/// not send the email twice.
///
/// Answers are judged like webhooks: 2xx sent; 429 retried after its
/// Retry-After; 408 and 5xx retried; other statuses permanent.
///
/// ```
/// use flagship_worker::flagship::notify::ResendMailer;
/// let mailer = ResendMailer::new("re_123")?.with_base_url("http://127.0.0.1:8025")?;
/// # let _ = mailer;
/// # Ok::<_, flagship_worker::Error>(())
/// ```
#[derive(Clone)]
pub struct ResendMailer {
    client: reqwest::Client,
    /// Where the API lives, without a trailing slash.
    base_url: String,
    /// The API key (a secret; never logged).
    api_key: String,
}

impl fmt::Debug for ResendMailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResendMailer")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl ResendMailer {
    /// A mailer for Resend's API with `api_key`.
    pub fn new(api_key: impl Into<String>) -> Result<Self> {
        let api_key = api_key.into();
        if api_key.is_empty() || api_key.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(Error::InvalidConfig(
                "the Resend API key is empty or contains whitespace; copy it from the Resend dashboard".into(),
            ));
        }
        Ok(ResendMailer {
            client: build_client(reqwest::Client::builder())?,
            base_url: RESEND_API_BASE.to_owned(),
            api_key,
        })
    }

    /// Uses another base URL (a test server or a proxy).
    pub fn with_base_url(mut self, base_url: impl Into<String>) -> Result<Self> {
        let base_url = base_url.into();
        let parsed = reqwest::Url::parse(&base_url)
            .map_err(|e| Error::InvalidConfig(format!("Resend base URL `{base_url}`: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::InvalidConfig(format!(
                "Resend base URL `{base_url}` must use http or https"
            )));
        }
        self.base_url = base_url.trim_end_matches('/').to_owned();
        Ok(self)
    }

    fn idempotency_key(email: &Email) -> String {
        let key = email.idempotency_key();
        if key.len() <= MAX_IDEMPOTENCY_KEY {
            return key.to_owned();
        }
        Sha256::digest(key.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

#[async_trait]
impl Mailer for ResendMailer {
    async fn send(&self, email: &Email) -> Result<(), DeliveryError> {
        let body = json!({
            "from": email.from(),
            "to": email.to(),
            "subject": email.subject(),
            "text": email.text(),
        });
        let response = self
            .client
            .post(format!("{}/emails", self.base_url))
            .bearer_auth(&self.api_key)
            .header("Idempotency-Key", Self::idempotency_key(email))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| judge_error("Resend", &e))?;
        judge("Resend", response).await?;
        tracing::debug!(recipients = email.to().len(), "email accepted by Resend");
        Ok(())
    }
}
