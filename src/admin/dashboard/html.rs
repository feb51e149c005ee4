//! HTML primitives: escaping, times, the page frame, and the headers
//! that keep a page to itself.

use std::fmt::Write as _;

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};

/// Shown in the table; the detail view has the whole message.
pub(super) const ERROR_PREVIEW_CHARS: usize = 160;

/// An HTML answer with headers that keep the page to itself: no scripts at
/// all, no framing, no caching, no referrer.
pub(super) fn html(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// Escapes text for HTML content and attribute values.
pub(super) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a query-string value.
pub(super) fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

pub(super) fn time(at: DateTime<Utc>) -> String {
    format!(
        "<time datetime=\"{}\">{}</time>",
        at.to_rfc3339(),
        at.format("%Y-%m-%d %H:%M:%S UTC")
    )
}

pub(super) fn ago(now: DateTime<Utc>, at: DateTime<Utc>) -> String {
    let secs = (now - at).num_seconds().max(0);
    match secs {
        0..60 => format!("{secs} s ago"),
        60..3600 => format!("{} min ago", secs / 60),
        3600..86400 => format!("{} h ago", secs / 3600),
        _ => format!("{} d ago", secs / 86400),
    }
}

pub(super) fn preview(text: &str) -> String {
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(ERROR_PREVIEW_CHARS).collect();
    if chars.next().is_some() {
        format!("{head}…")
    } else {
        head
    }
}

/// The page around `content`.
pub(super) fn page(base: &str, title: &str, logout: bool, content: &str) -> String {
    let logout = if logout {
        format!(
            "<form method=\"post\" action=\"{base}/ui/logout\" class=\"logout\"><button type=\"submit\">Log out</button></form>"
        )
    } else {
        String::new()
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · flagship-worker</title>\
         <link rel=\"stylesheet\" href=\"{base}/ui/style.css\"></head>\n\
         <body><header><a class=\"brand\" href=\"{base}/ui\">flagship-worker</a><span class=\"subtitle\">operations</span>\
         <nav><a href=\"{base}/ui\">Queues &amp; dead jobs</a><a href=\"{base}/ui/live\">Live jobs</a></nav>{logout}</header>\n\
         <main>{content}</main></body></html>\n",
        title = esc(title)
    )
}

/// `1 dead job`, `2 dead jobs`.
pub(super) fn dead_jobs(n: u64) -> String {
    count(n, "dead job")
}

/// `n` of `what`, plural right: `1 job`, `2 jobs`.
pub(super) fn count(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}
