//! Notification delivery: the [`Mailer`] and [`WebhookSender`] traits,
//! Standard Webhooks signing, the egress guard for webhook URLs, logging
//! implementations for demos, and (feature `http`) the Resend mailer and
//! the HTTP webhook sender.

use std::{
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{model::WebhookEndpoint, stores::Delivery};
use crate::HandlerError;

mod egress;
mod signature;

#[cfg(feature = "http")]
mod http;
#[cfg(feature = "http")]
mod resend;
#[cfg(feature = "http")]
mod webhook;

pub use egress::{EgressPolicy, RestrictedRange};
#[cfg(feature = "http")]
pub use resend::{ResendMailer, RESEND_API_BASE};
pub use signature::{SignatureError, WebhookSigner};
#[cfg(feature = "http")]
pub use webhook::HttpWebhookSender;

/// The longest Retry-After honoured; a longer one is cut to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Why a delivery failed, and whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// A transient failure (network error, timeout, 5xx, 408): retry with
    /// the queue's backoff.
    #[error("{0}")]
    Transient(String),
    /// The receiver asked to come back later (429 with Retry-After).
    #[error("{message} (retry after {delay:?})")]
    RetryAfter {
        /// How long to wait, at most [`MAX_RETRY_AFTER`].
        delay: Duration,
        /// What happened.
        message: String,
    },
    /// Retrying cannot help (a 4xx other than 408 and 429, a refused URL,
    /// a malformed message).
    #[error("{0}")]
    Permanent(String),
}

impl DeliveryError {
    /// Whether the failure is permanent.
    pub fn is_permanent(&self) -> bool {
        matches!(self, DeliveryError::Permanent(_))
    }

    /// What the worker should do about it.
    pub fn into_handler_error(self) -> HandlerError {
        match self {
            DeliveryError::Transient(_) => HandlerError::retry(self),
            DeliveryError::RetryAfter { delay, .. } => HandlerError::retry_after(delay, self),
            DeliveryError::Permanent(_) => HandlerError::permanent(self),
        }
    }
}

/// Checks an email address for use as a recipient: one `@` between a
/// non-empty local part and domain, at most 254 bytes, and no whitespace,
/// control characters (CR/LF would inject headers), commas or angle
/// brackets.
pub fn check_address(address: &str) -> Result<(), String> {
    let bad_char = address
        .chars()
        .find(|c| c.is_control() || c.is_whitespace() || matches!(c, ',' | ';' | '<' | '>' | '"'));
    if let Some(c) = bad_char {
        return Err(format!("email address `{}` contains {c:?}", address.escape_debug()));
    }
    match address.split_once('@') {
        Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !domain.contains('@') && address.len() <= 254 =>
        {
            Ok(())
        }
        _ => Err(format!("`{}` is not an email address", address.escape_debug())),
    }
}

fn check_header_text(what: &str, text: &str) -> Result<(), DeliveryError> {
    if text.is_empty() || text.chars().any(|c| c.is_control()) {
        return Err(DeliveryError::Permanent(format!(
            "email {what} `{}` is empty or contains a line break or control character; refused to prevent header injection",
            text.escape_debug()
        )));
    }
    Ok(())
}

/// A checked email: recipients and subject carry no CR/LF, so nothing can
/// smuggle headers in.
#[derive(Clone, PartialEq, Eq)]
pub struct Email {
    from: String,
    to: Vec<String>,
    subject: String,
    text: String,
    idempotency_key: String,
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Email")
            .field("to", &self.to.len())
            .field("subject", &self.subject)
            .field("idempotency_key", &self.idempotency_key)
            .finish_non_exhaustive()
    }
}

impl Email {
    /// An email from `from` to `to`. Refused (permanently) when there is no
    /// recipient, an address is malformed, or the sender or subject contain
    /// a line break. `idempotency_key` lets the mail service drop a resend
    /// of the same email.
    ///
    /// ```
    /// use flagship_worker::flagship::notify::Email;
    /// let ok = Email::new("FlagShip <alerts@example.com>", vec!["ops@example.com".into()], "Usage at 80%", "…", "n-1:email");
    /// assert!(ok.is_ok());
    /// let injected = Email::new("alerts@example.com", vec!["ops@example.com".into()], "Hi\r\nBcc: x@evil.test", "…", "n-2");
    /// assert!(injected.is_err());
    /// ```
    pub fn new(
        from: impl Into<String>,
        to: Vec<String>,
        subject: impl Into<String>,
        text: impl Into<String>,
        idempotency_key: impl Into<String>,
    ) -> Result<Self, DeliveryError> {
        let (from, subject, idempotency_key) = (from.into(), subject.into(), idempotency_key.into());
        check_header_text("sender", &from)?;
        check_header_text("subject", &subject)?;
        check_header_text("idempotency key", &idempotency_key)?;
        if to.is_empty() {
            return Err(DeliveryError::Permanent("email has no recipient".into()));
        }
        for recipient in &to {
            check_address(recipient).map_err(DeliveryError::Permanent)?;
        }
        Ok(Email {
            from,
            to,
            subject,
            text: text.into(),
            idempotency_key,
        })
    }

    /// The sender, e.g. `FlagShip <alerts@example.com>`.
    pub fn from(&self) -> &str {
        &self.from
    }

    /// The recipients.
    pub fn to(&self) -> &[String] {
        &self.to
    }

    /// The subject line.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The plain-text body.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The key the mail service deduplicates on.
    pub fn idempotency_key(&self) -> &str {
        &self.idempotency_key
    }
}

/// Sends email.
///
/// # Contract
///
/// - `send` MUST return `Ok` only once the mail service has accepted the
///   email.
/// - It SHOULD pass [`Email::idempotency_key`] to the service, so that a
///   retry after an ambiguous failure (a timeout after the service
///   accepted the email) does not send it twice.
/// - It MUST classify failures: [`DeliveryError::Permanent`] only when
///   retrying cannot help.
#[async_trait]
pub trait Mailer: Send + Sync + fmt::Debug + 'static {
    /// Sends one email.
    async fn send(&self, email: &Email) -> Result<(), DeliveryError>;

    /// What a successful [`send`](Mailer::send) did, for the delivery log:
    /// [`Delivery::Sent`] unless the mailer only logs.
    fn delivery(&self) -> Delivery {
        Delivery::Sent
    }

    /// Whether this is a real mailer (`false` only for [`NotConfigured`]).
    fn is_configured(&self) -> bool {
        true
    }
}

/// One webhook delivery: the Standard Webhooks `webhook-id`, the attempt's
/// timestamp and the JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookMessage {
    /// The message id, the same on every retry of the message.
    pub id: String,
    /// When this attempt is made (signed; receivers refuse stale ones).
    pub timestamp: DateTime<Utc>,
    /// The JSON body.
    pub body: Vec<u8>,
}

/// Delivers signed webhooks.
///
/// # Contract
///
/// - `send` MUST sign the message with the endpoint's secret per the
///   Standard Webhooks scheme and return `Ok` only for a 2xx answer.
/// - It MUST refuse (permanently) URLs its egress policy forbids, and MUST
///   NOT follow redirects.
/// - It MUST classify failures like [`Mailer::send`].
#[async_trait]
pub trait WebhookSender: Send + Sync + fmt::Debug + 'static {
    /// Delivers one message to `endpoint`.
    async fn send(&self, endpoint: &WebhookEndpoint, message: &WebhookMessage) -> Result<(), DeliveryError>;

    /// What a successful [`send`](WebhookSender::send) did, for the
    /// delivery log: [`Delivery::Sent`] unless the sender only logs.
    fn delivery(&self) -> Delivery {
        Delivery::Sent
    }
}

/// The channel of services nobody configured: every delivery fails
/// permanently, saying which setting is missing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NotConfigured;

#[async_trait]
impl Mailer for NotConfigured {
    async fn send(&self, _: &Email) -> Result<(), DeliveryError> {
        Err(DeliveryError::Permanent(
            "no mailer is configured: set one with FlagshipServices::with_mailer (for `flagship-worker run`, \
             FLAGSHIP_RESEND_API_KEY), then retry the job from the dead-letter queue"
                .into(),
        ))
    }

    fn is_configured(&self) -> bool {
        false
    }
}

#[async_trait]
impl WebhookSender for NotConfigured {
    async fn send(&self, _: &WebhookEndpoint, _: &WebhookMessage) -> Result<(), DeliveryError> {
        Err(DeliveryError::Permanent(
            "no webhook sender is configured: set one with FlagshipServices::with_webhooks (an \
             HttpWebhookSender), then retry the job from the dead-letter queue"
                .into(),
        ))
    }
}

/// A mailer that logs each email (recipient count and subject, never the
/// body) and keeps it in memory: for demos and tests.
#[derive(Debug, Clone, Default)]
pub struct LoggingMailer {
    /// Every email sent, oldest first; shared by clones.
    sent: Arc<Mutex<Vec<Email>>>,
}

impl LoggingMailer {
    /// A mailer with nothing sent yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every email sent so far, oldest first.
    pub fn sent(&self) -> Vec<Email> {
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[async_trait]
impl Mailer for LoggingMailer {
    async fn send(&self, email: &Email) -> Result<(), DeliveryError> {
        tracing::info!(recipients = email.to.len(), subject = %email.subject, key = %email.idempotency_key, "email logged, not sent (logging mailer)");
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).push(email.clone());
        Ok(())
    }

    fn delivery(&self) -> Delivery {
        Delivery::Logged
    }
}

/// A webhook sender that logs each message and keeps it in memory, signing
/// nothing and sending nothing: for demos and tests without HTTP.
#[derive(Debug, Clone, Default)]
pub struct LoggingWebhookSender {
    /// Every (URL, message) sent, oldest first; shared by clones.
    sent: Arc<Mutex<Vec<(String, WebhookMessage)>>>,
}

impl LoggingWebhookSender {
    /// A sender with nothing sent yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every (URL, message) sent so far, oldest first.
    pub fn sent(&self) -> Vec<(String, WebhookMessage)> {
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[async_trait]
impl WebhookSender for LoggingWebhookSender {
    async fn send(&self, endpoint: &WebhookEndpoint, message: &WebhookMessage) -> Result<(), DeliveryError> {
        tracing::info!(url = %endpoint.url, webhook.id = %message.id, bytes = message.body.len(), "webhook logged, not sent (logging sender)");
        self.sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((endpoint.url.clone(), message.clone()));
        Ok(())
    }

    fn delivery(&self) -> Delivery {
        Delivery::Logged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn _object_safe(_: Arc<dyn Mailer>, _: Arc<dyn WebhookSender>) {}

    #[test]
    fn recipients_and_subjects_with_line_breaks_are_refused() {
        let to = |a: &str| vec![a.to_owned()];
        assert!(Email::new("a@example.com", to("b@example.com"), "s", "t", "k").is_ok());
        for bad in [
            "b@example.com\r\nBcc: evil@x.test",
            "b@example.com\n",
            "no-at-sign",
            "a@b@c",
            " b@x.test",
            "a,b@x.test",
        ] {
            let err = Email::new("a@example.com", to(bad), "s", "t", "k").unwrap_err();
            assert!(err.is_permanent(), "{bad:?}");
        }
        assert!(Email::new("a@example.com", to("b@example.com"), "s\r\nX: y", "t", "k").is_err());
        assert!(Email::new("a@example.com\n", to("b@example.com"), "s", "t", "k").is_err());
        assert!(Email::new("a@example.com", vec![], "s", "t", "k").is_err());
    }

    #[test]
    fn delivery_errors_map_to_worker_decisions() {
        let d = Duration::from_secs(7);
        assert!(matches!(
            DeliveryError::Transient("x".into()).into_handler_error(),
            HandlerError::Retry(_)
        ));
        assert!(matches!(
            DeliveryError::RetryAfter { delay: d, message: "x".into() }.into_handler_error(),
            HandlerError::RetryAfter(delay, _) if delay == d
        ));
        assert!(matches!(
            DeliveryError::Permanent("x".into()).into_handler_error(),
            HandlerError::Permanent(_)
        ));
    }
}
