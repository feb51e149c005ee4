//! Bearer-token checks for the API and signed session cookies for the
//! dashboard.

use std::{fmt, time::Duration};

use axum::{
    extract::{Request, State},
    http::{header, HeaderMap, HeaderValue, Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Redirect, Response},
};
use chrono::{DateTime, Utc};
use hmac::{digest::KeyInit, Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{api::ApiError, dashboard, SharedState, MIN_TOKEN_LEN};
use crate::error::{Error, Result};

/// The dashboard's session cookie.
pub(super) const SESSION_COOKIE: &str = "flagship_admin_session";

/// The shortest and longest dashboard session accepted.
const SESSION_TTL_RANGE: (Duration, Duration) = (Duration::from_secs(60), Duration::from_secs(30 * 24 * 3600));

type HmacSha256 = Hmac<Sha256>;

/// The router's credentials: the token's digest and the key signing
/// dashboard sessions.
pub(super) struct Auth {
    /// SHA-256 of the token: compared in constant time against the digest
    /// of what a caller sends, so neither content nor length leaks.
    token_digest: [u8; 32],
    /// Random per router (one SHA-256 block): sessions end when the
    /// process restarts.
    session_key: [u8; 64],
    /// How long a dashboard login lasts.
    session_ttl: Duration,
    /// Whether the cookie carries `Secure`.
    secure_cookie: bool,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("session_ttl", &self.session_ttl)
            .field("secure_cookie", &self.secure_cookie)
            .finish_non_exhaustive()
    }
}

impl Auth {
    pub(super) fn new(token: &str, session_ttl: Duration, secure_cookie: bool) -> Result<Self> {
        if token.len() < MIN_TOKEN_LEN {
            return Err(Error::InvalidConfig(format!(
                "the admin token has {} bytes; use at least {MIN_TOKEN_LEN}, e.g. 32 random bytes in hex",
                token.len()
            )));
        }
        let (min, max) = SESSION_TTL_RANGE;
        if session_ttl < min || session_ttl > max {
            return Err(Error::InvalidConfig(format!(
                "dashboard session lifetime of {session_ttl:?} must be between {min:?} and {max:?}"
            )));
        }
        Ok(Auth {
            token_digest: Sha256::digest(token.as_bytes()).into(),
            session_key: rand::random(),
            session_ttl,
            secure_cookie,
        })
    }

    /// Whether `candidate` is the token, in constant time.
    pub(super) fn token_matches(&self, candidate: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(candidate.as_bytes()).into();
        digest.ct_eq(&self.token_digest).into()
    }

    /// Whether the request carries `Authorization: Bearer <token>`.
    fn bearer_ok(&self, headers: &HeaderMap) -> bool {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|token| self.token_matches(token.trim()))
    }

    fn mac(&self) -> HmacSha256 {
        <HmacSha256 as KeyInit>::new(&self.session_key.into())
    }

    /// A session value valid until now + the session lifetime:
    /// `{expiry unix seconds}.{hex HMAC of the expiry}`.
    fn issue_session(&self, now: DateTime<Utc>) -> String {
        let expires = now.timestamp().saturating_add(self.session_ttl.as_secs() as i64);
        let mut mac = self.mac();
        mac.update(expires.to_string().as_bytes());
        let tag = mac.finalize().into_bytes();
        format!("{expires}.{}", hex(&tag))
    }

    /// Whether `value` is a session this router issued that has not expired.
    fn session_ok(&self, value: &str, now: DateTime<Utc>) -> bool {
        let Some((expires, tag)) = value.split_once('.') else {
            return false;
        };
        let Some(tag) = unhex(tag) else { return false };
        let mut mac = self.mac();
        mac.update(expires.as_bytes());
        if mac.verify_slice(&tag).is_err() {
            return false;
        }
        expires.parse::<i64>().is_ok_and(|at| now.timestamp() < at)
    }

    /// The `Set-Cookie` value that logs a browser in.
    pub(super) fn login_cookie(&self, base: &str, now: DateTime<Utc>) -> String {
        self.cookie(base, &self.issue_session(now), self.session_ttl.as_secs())
    }

    /// The `Set-Cookie` value that logs a browser out.
    pub(super) fn logout_cookie(&self, base: &str) -> String {
        self.cookie(base, "", 0)
    }

    fn cookie(&self, base: &str, value: &str, max_age: u64) -> String {
        let secure = if self.secure_cookie { "; Secure" } else { "" };
        format!("{SESSION_COOKIE}={value}; Path={base}/ui; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}")
    }

    fn session_from(&self, headers: &HeaderMap, now: DateTime<Utc>) -> bool {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .any(|(name, value)| name == SESSION_COOKIE && self.session_ok(value, now))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// Why a state-changing dashboard request must be refused as possibly
/// forged by another site (cross-site request forgery), if it must.
///
/// Browsers say where a form comes from: `Sec-Fetch-Site` (every current
/// browser) and `Origin` (on every POST since long before). The request is
/// refused when `Sec-Fetch-Site` names another site, when `Origin` is not
/// this dashboard's own origin (its host and port as the request addressed
/// them: `Host`, `X-Forwarded-Host` from a proxy, or the HTTP/2
/// authority), and when both headers are missing, since then nothing says
/// the form is ours. Neither header can be set by a page on another site.
/// `authority` is the request URI's authority, if it has one.
pub(super) fn forged(headers: &HeaderMap, authority: Option<&str>) -> Option<&'static str> {
    // Browsers send `Sec-Fetch-Site` and no page can forge it: when present
    // it decides. `Origin` is checked against the address only without it,
    // since a reverse proxy that rewrites `Host` (nginx's default) makes a
    // same-origin form's `Origin` differ from the `Host` we see.
    match headers.get("sec-fetch-site") {
        Some(site) if site == "same-origin" || site == "none" => None,
        Some(_) => Some("This form was sent from another site and was refused."),
        None => match headers.get(header::ORIGIN) {
            Some(origin) if is_own_origin(origin, headers, authority) => None,
            Some(_) => Some(
                "This form was sent from another origin (its Origin header does not match this dashboard's address) \
                 and was refused.",
            ),
            None => Some(
                "This request says neither where it was sent from (Origin) nor from which site (Sec-Fetch-Site), \
                 so it was refused. Browsers send both; scripts can send the bearer token instead.",
            ),
        },
    }
}

/// Whether `origin` (`scheme://host[:port]`) is the origin the request was
/// addressed to.
fn is_own_origin(origin: &HeaderValue, headers: &HeaderMap, authority: Option<&str>) -> bool {
    let Some((scheme, rest)) = origin.to_str().ok().and_then(|o| o.split_once("://")) else {
        // Includes `Origin: null` (sandboxed frames, some redirects).
        return false;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return false,
    };
    let Some(theirs) = host_and_port(rest, default_port) else {
        return false;
    };
    let header_text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    // A proxy may list several forwarded hosts; the first is the client's.
    let forwarded = header_text("x-forwarded-host")
        .and_then(|v| v.split(',').next())
        .map(str::trim);
    [header_text("host"), forwarded, authority]
        .into_iter()
        .flatten()
        .filter_map(|ours| host_and_port(ours, default_port))
        .any(|ours| ours == theirs)
}

/// The host (lower case) and port of an authority (`host`, `host:port`,
/// `[v6]:port`), the port defaulting to `default_port`. `None` for
/// anything else (a path, user info, a bad port).
fn host_and_port(authority: &str, default_port: u16) -> Option<(String, u16)> {
    if authority.is_empty() || authority.contains(['/', '@', ' ']) {
        return None;
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(bracketed) => {
            let (host, after) = bracketed.split_once(']')?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':')?),
            };
            (host, port)
        }
        None => match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let port = match port {
        None => default_port,
        Some(port) => port.parse().ok()?,
    };
    (!host.is_empty()).then(|| (host.to_ascii_lowercase(), port))
}

/// API and metrics: a valid bearer token, or 401.
pub(super) async fn require_bearer(State(state): State<SharedState>, request: Request, next: Next) -> Response {
    match &state.auth {
        Some(auth) if !auth.bearer_ok(request.headers()) => {
            let mut response = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send the admin token as `Authorization: Bearer <token>`",
            )
            .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"flagship-admin\""),
            );
            response
        }
        _ => next.run(request).await,
    }
}

/// Dashboard: a valid session cookie (or bearer token); otherwise to the
/// login page. State-changing requests without the bearer token are
/// refused unless they show they come from the dashboard (see [`forged`]).
pub(super) async fn require_session(State(state): State<SharedState>, request: Request, next: Next) -> Response {
    let base = dashboard::base_path_of(&request);
    let headers = request.headers();
    // A caller with the token is no forgery: no page on another site has it.
    let bearer = state.auth.as_ref().is_some_and(|auth| auth.bearer_ok(headers));
    let changes_state = request.method() != Method::GET && request.method() != Method::HEAD;
    if changes_state && !bearer {
        if let Some(message) = forged(headers, request.uri().authority().map(|a| a.as_str())) {
            return dashboard::error_page(&base, StatusCode::FORBIDDEN, message);
        }
    }
    let Some(auth) = &state.auth else {
        return next.run(request).await;
    };
    if bearer || auth.session_from(headers, state.clock.now()) {
        return next.run(request).await;
    }
    if request.method() == Method::GET {
        Redirect::to(&format!("{base}/ui/login")).into_response()
    } else {
        dashboard::error_page(
            &base,
            StatusCode::UNAUTHORIZED,
            "Your session has expired; log in again.",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::new("0123456789abcdef-secret", Duration::from_secs(3600), false).unwrap()
    }

    #[test]
    fn origins_match_the_address_the_request_was_sent_to() {
        let check = |origin: &str, host: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
            headers.insert(header::HOST, HeaderValue::from_str(host).unwrap());
            forged(&headers, None).is_none()
        };
        assert!(check("http://admin.example", "admin.example"));
        assert!(check("http://admin.example", "admin.example:80"));
        assert!(check("https://admin.example", "ADMIN.example:443"));
        assert!(check("http://[::1]:8080", "[::1]:8080"));
        assert!(!check("https://admin.example", "admin.example:80"));
        assert!(!check("http://[::1]:8080", "[::1]:8081"));
        assert!(!check("http://admin.example.evil", "admin.example"));
        assert!(!check("http://user@admin.example", "admin.example"));
        assert!(!check("http://admin.example/path", "admin.example"));
        assert!(!check("ftp://admin.example", "admin.example"));
        assert!(!check("null", "admin.example"));
        assert!(!check("http://admin.example:x", "admin.example"));
        // Over HTTP/2 the address is the URI's authority, not a header.
        let mut headers = HeaderMap::new();
        headers.insert(header::ORIGIN, HeaderValue::from_static("https://admin.example"));
        assert!(forged(&headers, Some("admin.example")).is_none());
        assert!(forged(&headers, Some("other.example")).is_some());
        assert!(forged(&HeaderMap::new(), Some("admin.example")).is_some());
    }

    #[test]
    fn short_tokens_and_odd_session_lifetimes_are_refused() {
        assert!(Auth::new("short", Duration::from_secs(3600), false).is_err());
        assert!(Auth::new("0123456789abcdef", Duration::from_secs(1), false).is_err());
        assert!(Auth::new("0123456789abcdef", Duration::from_secs(3600), false).is_ok());
    }

    #[test]
    fn tokens_are_compared_whole() {
        let auth = auth();
        assert!(auth.token_matches("0123456789abcdef-secret"));
        assert!(!auth.token_matches("0123456789abcdef-secreT"));
        assert!(!auth.token_matches("0123456789abcdef-secret "));
        assert!(!auth.token_matches(""));
    }

    #[test]
    fn sessions_expire_and_cannot_be_forged() {
        let auth = auth();
        let now = Utc::now();
        let session = auth.issue_session(now);
        assert!(auth.session_ok(&session, now));
        assert!(auth.session_ok(&session, now + chrono::TimeDelta::seconds(3599)));
        assert!(!auth.session_ok(&session, now + chrono::TimeDelta::seconds(3600)));

        let (expires, tag) = session.split_once('.').unwrap();
        let later = expires.parse::<i64>().unwrap() + 86_400;
        assert!(!auth.session_ok(&format!("{later}.{tag}"), now), "extended expiry");
        assert!(!auth.session_ok(&format!("{expires}.{}", &tag[2..]), now), "cut tag");
        assert!(!auth.session_ok("garbage", now));
        assert!(!auth.session_ok(&format!("{expires}.zz{}", &tag[2..]), now), "not hex");

        let other = Auth::new("0123456789abcdef-secret", Duration::from_secs(3600), false).unwrap();
        assert!(!other.session_ok(&session, now), "another router's session");
    }

    #[test]
    fn cookies_are_scoped_and_locked_down() {
        let mut auth = auth();
        let cookie = auth.login_cookie("/admin", Utc::now());
        assert!(cookie.starts_with("flagship_admin_session="));
        assert!(cookie.contains("; Path=/admin/ui;"));
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
        assert!(!cookie.contains("Secure"));
        auth.secure_cookie = true;
        assert!(auth.logout_cookie("").ends_with("; Secure"));
        assert!(auth.logout_cookie("").contains("Max-Age=0"));
    }
}
