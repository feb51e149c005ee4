//! Standard Webhooks signatures: `v1,` + base64(HMAC-SHA256(secret,
//! `{id}.{timestamp}.{body}`)).

use std::fmt;

use base64::{engine::general_purpose::STANDARD, Engine};
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The prefix of a Standard Webhooks secret.
const SECRET_PREFIX: &str = "whsec_";

/// A webhook secret that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("webhook secret is not usable: {0}; use `whsec_` followed by base64 of at least 16 random bytes")]
pub struct SignatureError(String);

/// Signs and verifies webhooks per the Standard Webhooks scheme.
///
/// ```
/// use flagship_worker::flagship::notify::WebhookSigner;
///
/// let signer = WebhookSigner::new("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")?;
/// let body = br#"{"email":"test@example.com","username":"test_user"}"#;
/// let signature = signer.sign("msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1649367553, body);
/// assert_eq!(signature, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
/// assert!(signer.verify("msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1649367553, body, &signature));
/// # Ok::<_, flagship_worker::flagship::notify::SignatureError>(())
/// ```
#[derive(Clone)]
pub struct WebhookSigner {
    /// HMAC-SHA256 keyed with the decoded secret, cloned for each message.
    keyed: HmacSha256,
}

impl fmt::Debug for WebhookSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSigner").finish_non_exhaustive()
    }
}

impl WebhookSigner {
    /// A signer for `secret`: `whsec_` followed by base64 (the prefix is
    /// optional).
    pub fn new(secret: &str) -> Result<Self, SignatureError> {
        let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
        let key = STANDARD
            .decode(encoded)
            .map_err(|e| SignatureError(format!("not base64 ({e})")))?;
        if key.len() < 16 {
            return Err(SignatureError(format!("only {} bytes long", key.len())));
        }
        let keyed = HmacSha256::new_from_slice(&key).map_err(|e| SignatureError(e.to_string()))?;
        Ok(WebhookSigner { keyed })
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
        let mut mac = self.keyed.clone();
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The `webhook-signature` header value for a message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        format!(
            "v1,{}",
            STANDARD.encode(self.mac(id, timestamp, body).finalize().into_bytes())
        )
    }

    /// Whether `header` (space-separated `v1,<base64>` signatures) holds a
    /// valid signature of the message. Compares in constant time. Checking
    /// that `timestamp` is recent is the caller's job.
    pub fn verify(&self, id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
        header
            .split(' ')
            .filter_map(|s| s.strip_prefix("v1,"))
            .filter_map(|b64| STANDARD.decode(b64).ok())
            .any(|sig| self.mac(id, timestamp, body).verify_slice(&sig).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;

    #[test]
    fn reproduces_the_standard_webhooks_test_vector() {
        let signer = WebhookSigner::new(SECRET).unwrap();
        assert_eq!(
            signer.sign(ID, 1649367553, BODY),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    #[test]
    fn verification_refuses_tampering() {
        let signer = WebhookSigner::new(SECRET).unwrap();
        let good = signer.sign(ID, 1649367553, BODY);
        assert!(signer.verify(ID, 1649367553, BODY, &format!("v1,bm9wZQ== {good}")));
        assert!(!signer.verify(ID, 1649367554, BODY, &good));
        assert!(!signer.verify("msg_other", 1649367553, BODY, &good));
        assert!(!signer.verify(ID, 1649367553, b"{}", &good));
        assert!(!signer.verify(ID, 1649367553, BODY, "v2,whatever"));
    }

    #[test]
    fn unusable_secrets_are_refused() {
        assert!(WebhookSigner::new("whsec_not base64!").is_err());
        assert!(WebhookSigner::new("whsec_c2hvcnQ=").is_err());
        assert!(!format!("{:?}", WebhookSigner::new(SECRET).unwrap()).contains("C2FV"));
    }
}
