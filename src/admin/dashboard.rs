//! The DLQ dashboard: server-rendered HTML with plain forms, no script.

use std::fmt::Write as _;

use axum::{
    extract::{rejection::FormRejection, rejection::QueryRejection, FromRequestParts, OriginalUri, Path, Query, State},
    http::{header, request::Parts, HeaderMap, HeaderValue, StatusCode, Uri},
    response::{IntoResponse, Redirect, Response},
    Form,
};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{
    api::{all_queue_stats, ApiError},
    auth,
    dlq::{self, JobAction, MAX_PURGE_DAYS},
    SharedState,
};
use crate::{
    broker::{DeadQuery, DeadSummary},
    envelope::JobEnvelope,
    health::HealthStatus,
    job::JobId,
    schema::pretty_json,
};

const STYLESHEET: &str = include_str!("dashboard.css");

/// Shown in the table; the detail view has the whole message.
const ERROR_PREVIEW_CHARS: usize = 160;

/// Where the router is mounted: the request's original path minus the path
/// the router saw (`/admin` when nested at `/admin`, empty at the root).
pub(super) fn base_path_of<B>(request: &axum::http::Request<B>) -> String {
    base_path(request.extensions().get::<OriginalUri>(), request.uri().path())
}

fn base_path(original: Option<&OriginalUri>, seen: &str) -> String {
    let Some(original) = original else { return String::new() };
    let original = original.path();
    // A router nested at `/admin` sees `/admin` itself as `/`.
    let prefix = if seen == "/" {
        original
    } else {
        original.strip_suffix(seen).unwrap_or_default()
    };
    prefix.trim_end_matches('/').to_owned()
}

/// The mount point of the router, for links.
pub(super) struct Base(String);

impl<S: Send + Sync> FromRequestParts<S> for Base {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Base(base_path(parts.extensions.get::<OriginalUri>(), parts.uri.path())))
    }
}

/// An HTML answer with headers that keep the page to itself: no scripts at
/// all, no framing, no caching, no referrer.
fn html(status: StatusCode, body: String) -> Response {
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
fn esc(text: &str) -> String {
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
fn url_encode(text: &str) -> String {
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

fn time(at: DateTime<Utc>) -> String {
    format!(
        "<time datetime=\"{}\">{}</time>",
        at.to_rfc3339(),
        at.format("%Y-%m-%d %H:%M:%S UTC")
    )
}

fn ago(now: DateTime<Utc>, at: DateTime<Utc>) -> String {
    let secs = (now - at).num_seconds().max(0);
    match secs {
        0..60 => format!("{secs} s ago"),
        60..3600 => format!("{} min ago", secs / 60),
        3600..86400 => format!("{} h ago", secs / 3600),
        _ => format!("{} d ago", secs / 86400),
    }
}

fn preview(text: &str) -> String {
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(ERROR_PREVIEW_CHARS).collect();
    if chars.next().is_some() {
        format!("{head}…")
    } else {
        head
    }
}

/// The page around `content`.
fn page(base: &str, title: &str, logout: bool, content: &str) -> String {
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
         <body><header><a class=\"brand\" href=\"{base}/ui\">flagship-worker</a><span class=\"subtitle\">operations</span>{logout}</header>\n\
         <main>{content}</main></body></html>\n",
        title = esc(title)
    )
}

/// A page saying what went wrong, with a way back.
pub(super) fn error_page(base: &str, status: StatusCode, message: &str) -> Response {
    let content = format!(
        "<h1>{}</h1><p class=\"notice error\">{}</p><p><a href=\"{base}/ui\">Back to the dead-letter queue</a></p>",
        status.canonical_reason().unwrap_or("Error"),
        esc(message)
    );
    html(status, page(base, "Error", false, &content))
}

fn api_error_page(base: &str, error: ApiError) -> Response {
    error_page(base, error.status, &error.message)
}

/// `GET /`: to the dashboard.
pub(super) async fn root(Base(base): Base) -> Redirect {
    Redirect::to(&format!("{base}/ui"))
}

/// `GET /ui/style.css`
pub(super) async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        STYLESHEET,
    )
        .into_response()
}

fn login_form(base: &str, failed: bool) -> String {
    let error = if failed {
        "<p class=\"notice error\">That token is not right.</p>"
    } else {
        ""
    };
    let content = format!(
        "<section class=\"login\"><h1>Log in</h1>{error}\
         <p>Paste the admin token. It is checked once; the browser then keeps a session cookie until it expires or you log out.</p>\
         <form method=\"post\" action=\"{base}/ui/login\">\
         <label for=\"token\">Admin token</label>\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required autofocus>\
         <button type=\"submit\" class=\"primary\">Log in</button></form></section>"
    );
    page(base, "Log in", false, &content)
}

/// `GET /ui/login`
pub(super) async fn login_page(State(state): State<SharedState>, Base(base): Base) -> Response {
    if state.auth.is_none() {
        return Redirect::to(&format!("{base}/ui")).into_response();
    }
    html(StatusCode::OK, login_form(&base, false))
}

/// The login form's fields.
#[derive(Deserialize)]
pub(super) struct LoginForm {
    token: String,
}

/// `POST /ui/login`
pub(super) async fn login(
    State(state): State<SharedState>,
    Base(base): Base,
    uri: Uri,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    if let Some(message) = auth::forged(&headers, uri.authority().map(|a| a.as_str())) {
        return error_page(&base, StatusCode::FORBIDDEN, message);
    }
    let Some(auth) = &state.auth else {
        return Redirect::to(&format!("{base}/ui")).into_response();
    };
    let token = match form {
        Ok(Form(form)) => form.token,
        Err(e) => return api_error_page(&base, ApiError::new(e.status(), "bad_request", e.body_text())),
    };
    if !auth.token_matches(token.trim()) {
        tracing::warn!(target: "flagship_worker::admin", action = "login", "dashboard login refused: wrong token");
        return html(StatusCode::UNAUTHORIZED, login_form(&base, true));
    }
    tracing::info!(target: "flagship_worker::admin", action = "login", "dashboard login");
    let mut response = Redirect::to(&format!("{base}/ui")).into_response();
    if let Ok(cookie) = HeaderValue::from_str(&auth.login_cookie(&base, Utc::now())) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// `POST /ui/logout`
pub(super) async fn logout(State(state): State<SharedState>, Base(base): Base) -> Response {
    let mut response = Redirect::to(&format!("{base}/ui/login")).into_response();
    if let Some(auth) = &state.auth {
        if let Ok(cookie) = HeaderValue::from_str(&auth.logout_cookie(&base)) {
            response.headers_mut().insert(header::SET_COOKIE, cookie);
        }
    }
    response
}

/// The dashboard's query string: the DLQ filter, paging, and what the last
/// action did.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct IndexParams {
    queue: Option<String>,
    kind: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
    /// `retried` or `deleted`, after a redirect from an action.
    notice: Option<String>,
    /// The job the action was on.
    job: Option<String>,
    /// How many jobs a bulk action (`retried_matching`, `purged`) took.
    count: Option<String>,
    /// The purge's "older than", in days.
    days: Option<String>,
}

/// `1 dead job`, `2 dead jobs`.
fn dead_jobs(n: u64) -> String {
    if n == 1 {
        "1 dead job".to_owned()
    } else {
        format!("{n} dead jobs")
    }
}

fn notice(params: &IndexParams) -> String {
    let job = params.job.as_deref().and_then(|j| j.parse::<JobId>().ok());
    let count = params.count.as_deref().and_then(|n| n.parse::<u64>().ok());
    let days = params.days.as_deref().and_then(|d| d.parse::<u32>().ok());
    let text = match (params.notice.as_deref(), job, count, days) {
        (Some("retried"), Some(job), ..) => format!("Job {job} moved back to ready."),
        (Some("deleted"), Some(job), ..) => format!("Job {job} deleted."),
        (Some("retried_matching"), _, Some(n), _) => format!("Moved {} back to ready.", dead_jobs(n)),
        (Some("purged"), _, Some(n), Some(days)) => {
            let unit = if days == 1 { "day" } else { "days" };
            format!("Deleted {} dead-lettered more than {days} {unit} ago.", dead_jobs(n))
        }
        _ => return String::new(),
    };
    format!("<p class=\"notice\" role=\"status\">{}</p>", esc(&text))
}

/// The query string of the filter `query` (`queue=…&kind=…`, or empty).
fn filter_params(query: &DeadQuery) -> String {
    let mut params = Vec::new();
    if let Some(queue) = &query.queue {
        params.push(format!("queue={}", url_encode(queue.as_str())));
    }
    if let Some(kind) = &query.kind {
        params.push(format!("kind={}", url_encode(kind)));
    }
    params.join("&")
}

/// The index showing `query`, with `extra` query parameters.
fn index_url(base: &str, query: &DeadQuery, extra: &str) -> String {
    let filter = filter_params(query);
    let params: Vec<&str> = [filter.as_str(), extra].into_iter().filter(|p| !p.is_empty()).collect();
    if params.is_empty() {
        format!("{base}/ui")
    } else {
        format!("{base}/ui?{}", params.join("&"))
    }
}

/// `GET /ui`
pub(super) async fn index(
    State(state): State<SharedState>,
    Base(base): Base,
    params: Result<Query<IndexParams>, QueryRejection>,
) -> Response {
    let params = match params {
        Ok(Query(params)) => params,
        Err(e) => return api_error_page(&base, ApiError::bad_request(e.body_text())),
    };
    match render_index(&state, &base, &params).await {
        Ok(body) => html(StatusCode::OK, body),
        Err(e) => api_error_page(&base, e),
    }
}

async fn render_index(state: &SharedState, base: &str, params: &IndexParams) -> Result<String, ApiError> {
    let query = dlq::parse_query(params.queue.as_deref(), params.kind.as_deref(), None, None)?;
    let limit = dlq::parse_limit(params.limit.as_deref())?;
    let stats = all_queue_stats(state).await?;
    let page = dlq::list(state, &query, params.cursor.as_deref(), limit).await?;
    let health = state.health.latest().await.ok();
    let now = state.clock.now();

    let mut out = notice(params);
    let (class, label) = match health.as_ref().map(|h| h.status) {
        Some(HealthStatus::Ok) => ("ok", "healthy"),
        Some(HealthStatus::Degraded) => ("degraded", "degraded"),
        Some(HealthStatus::Down) => ("down", "down"),
        None => ("down", "health unknown"),
    };
    let _ = write!(
        out,
        "<section><div class=\"section-head\"><h2>Queues</h2><span class=\"health {class}\">{label}</span></div>"
    );
    if stats.is_empty() {
        out.push_str("<p class=\"empty\">No queue has seen a job yet.</p>");
    } else {
        out.push_str(
            "<table class=\"stats\"><thead><tr><th>Queue</th><th>Ready</th><th>Scheduled</th><th>Active</th>\
             <th>Dead</th><th>Oldest ready</th><th>Completed</th><th>Retried</th><th>Dead-lettered</th></tr></thead><tbody>",
        );
        for (queue, s) in &stats {
            let oldest = s
                .oldest_ready_age_ms
                .map_or_else(|| "—".to_owned(), |ms| format!("{:.1} s", ms as f64 / 1000.0));
            let dead_class = if s.dead > 0 { " class=\"has-dead\"" } else { "" };
            let _ = write!(
                out,
                "<tr><td><a href=\"{base}/ui?queue={q_url}\">{q}</a></td><td>{}</td><td>{}</td><td>{}</td>\
                 <td{dead_class}>{}</td><td>{oldest}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                s.ready,
                s.scheduled,
                s.active,
                s.dead,
                s.completed,
                s.retried,
                s.dead_lettered,
                q = esc(queue.as_str()),
                q_url = url_encode(queue.as_str()),
            );
        }
        out.push_str("</tbody></table>");
    }
    if let Some(worker) = &state.worker {
        let w = worker.stats();
        let _ = write!(
            out,
            "<p class=\"worker\">Worker <code>{}</code>: {} started · {} completed · {} failed · {} retried · \
             {} dead-lettered · {} panicked · {} timed out · {} recovered</p>",
            esc(worker.id()),
            w.started,
            w.completed,
            w.failed,
            w.retried,
            w.dead_lettered,
            w.panicked,
            w.timed_out,
            w.recovered
        );
    }
    out.push_str("</section>");

    out.push_str("<section><div class=\"section-head\"><h2>Dead-letter queue</h2></div>");
    out.push_str(&filter_form(base, &stats, &query));
    if page.jobs.is_empty() {
        out.push_str("<p class=\"empty\">No dead jobs match.</p>");
    } else {
        out.push_str(
            "<table class=\"dead\"><thead><tr><th>Queue</th><th>Kind</th><th>Last error</th><th>Attempts</th>\
             <th>Dead since</th><th></th></tr></thead><tbody>",
        );
        for job in &page.jobs {
            out.push_str(&dead_row(base, now, job));
        }
        out.push_str("</tbody></table>");
    }
    if let Some(next) = &page.next_cursor {
        let href = index_url(base, &query, &format!("cursor={}&limit={limit}", url_encode(next)));
        let _ = write!(
            out,
            "<p class=\"paging\"><a href=\"{}\">Next page →</a></p>",
            esc(&href)
        );
    }
    if !stats.is_empty() {
        out.push_str(&bulk_forms(base, &query, !page.jobs.is_empty()));
    }
    out.push_str("</section>");
    Ok(page_with_auth(state, base, "Dead-letter queue", &out))
}

fn page_with_auth(state: &SharedState, base: &str, title: &str, content: &str) -> String {
    page(base, title, state.auth.is_some(), content)
}

fn filter_form(base: &str, stats: &[(crate::job::QueueName, crate::QueueStats)], query: &DeadQuery) -> String {
    let mut options = String::from("<option value=\"\">all queues</option>");
    for (queue, _) in stats {
        let selected = if query.queue.as_ref() == Some(queue) {
            " selected"
        } else {
            ""
        };
        let q = esc(queue.as_str());
        let _ = write!(options, "<option value=\"{q}\"{selected}>{q}</option>");
    }
    format!(
        "<form class=\"filters\" method=\"get\" action=\"{base}/ui\">\
         <label>Queue <select name=\"queue\">{options}</select></label>\
         <label>Kind <input name=\"kind\" value=\"{}\" placeholder=\"any kind\"></label>\
         <button type=\"submit\">Filter</button></form>",
        esc(query.kind.as_deref().unwrap_or(""))
    )
}

/// "Retry all matching" (when something matches) for the filter shown, and
/// "Purge older than" for its queue.
fn bulk_forms(base: &str, query: &DeadQuery, any_match: bool) -> String {
    let queue = query.queue.as_ref().map_or("", |q| q.as_str());
    let queue_field = format!("<input type=\"hidden\" name=\"queue\" value=\"{}\">", esc(queue));
    let scope = match &query.queue {
        Some(queue) => format!("queue {}", esc(queue.as_str())),
        None => "every queue".to_owned(),
    };
    let mut out = String::from("<div class=\"bulk\">");
    if any_match {
        let (kind_field, kind_scope) = match &query.kind {
            Some(kind) => (
                format!("<input type=\"hidden\" name=\"kind\" value=\"{}\">", esc(kind)),
                format!(" of kind <code>{}</code>", esc(kind)),
            ),
            None => (String::new(), String::new()),
        };
        let _ = write!(
            out,
            "<form class=\"bulk-retry\" method=\"post\" action=\"{base}/ui/dlq/retry\">{queue_field}{kind_field}\
             <button type=\"submit\" class=\"retry\">Retry all matching</button>\
             <span>every dead job of {scope}{kind_scope}, on every page</span></form>"
        );
    }
    let every_kind = if query.kind.is_some() { ", of every kind" } else { "" };
    let _ = write!(
        out,
        "<form class=\"purge\" method=\"post\" action=\"{base}/ui/dlq/purge\">{queue_field}\
         <label>Delete the dead jobs of {scope}{every_kind} dead-lettered more than \
         <input name=\"days\" type=\"number\" min=\"1\" max=\"{MAX_PURGE_DAYS}\" value=\"30\" required> days ago</label>\
         <button type=\"submit\" class=\"danger\">Purge older than</button></form></div>"
    );
    out
}

fn job_path(base: &str, queue: &str, id: JobId) -> String {
    format!("{base}/ui/jobs/{}/{id}", url_encode(queue))
}

fn action_buttons(base: &str, queue: &str, id: JobId) -> String {
    let path = job_path(base, queue, id);
    format!(
        "<form method=\"post\" action=\"{path}/retry\"><button type=\"submit\" class=\"retry\">Retry</button></form>\
         <form method=\"post\" action=\"{path}/delete\"><button type=\"submit\" class=\"danger\">Delete</button></form>"
    )
}

fn dead_row(base: &str, now: DateTime<Utc>, job: &DeadSummary) -> String {
    let queue = job.queue.as_str();
    let error = job.last_error.as_deref().unwrap_or("");
    let since = job.dead_lettered_at.map_or_else(String::new, |at| {
        format!("{}<br><small>{}</small>", time(at), ago(now, at))
    });
    format!(
        "<tr data-job-id=\"{id}\"><td>{q}</td><td><code>{kind}</code></td>\
         <td class=\"error\" title=\"{error_full}\">{error}</td><td class=\"num\">{attempts}</td><td>{since}</td>\
         <td class=\"actions\"><a href=\"{detail}\">Details</a>{buttons}</td></tr>",
        id = job.id,
        q = esc(queue),
        kind = esc(&job.kind),
        error_full = esc(error),
        error = esc(&preview(error)),
        attempts = job.attempts,
        detail = job_path(base, queue, job.id),
        buttons = action_buttons(base, queue, job.id),
    )
}

/// `GET /ui/jobs/{queue}/{id}`
pub(super) async fn show(
    State(state): State<SharedState>,
    Base(base): Base,
    Path((queue, id)): Path<(String, String)>,
) -> Response {
    let job = match dlq::parse_job(&queue, &id) {
        Ok((queue, id)) => dlq::get_one(&state, &queue, id).await,
        Err(e) => Err(e),
    };
    match job {
        Ok(job) => html(StatusCode::OK, render_job(&state, &base, &job)),
        Err(e) => api_error_page(&base, e),
    }
}

fn render_job(state: &SharedState, base: &str, job: &JobEnvelope) -> String {
    let now = state.clock.now();
    let queue = job.queue.as_str();
    let mut out = format!(
        "<p><a href=\"{base}/ui\">← Dead-letter queue</a></p><section><div class=\"section-head\"><h1><code>{kind}</code> on {q}</h1>\
         <div class=\"actions\">{buttons}</div></div><dl class=\"facts\">\
         <dt>Job id</dt><dd><code>{id}</code></dd><dt>Queue</dt><dd>{q}</dd><dt>Kind</dt><dd><code>{kind}</code></dd>\
         <dt>Enqueued</dt><dd>{enqueued}</dd>",
        kind = esc(&job.kind),
        q = esc(queue),
        id = job.id,
        buttons = action_buttons(base, queue, job.id),
        enqueued = time(job.enqueued_at),
    );
    if let Some(at) = job.dead_lettered_at {
        let _ = write!(out, "<dt>Dead since</dt><dd>{} ({})</dd>", time(at), ago(now, at));
    }
    if let Some(reason) = &job.dead_letter_reason {
        let _ = write!(out, "<dt>Reason</dt><dd class=\"error\">{}</dd>", esc(reason));
    }
    if let Some(key) = &job.idempotency_key {
        let _ = write!(out, "<dt>Idempotency key</dt><dd><code>{}</code></dd>", esc(key));
    }
    if let Some(max) = job.max_retries {
        let _ = write!(out, "<dt>Max retries</dt><dd>{max}</dd>");
    }
    let _ = write!(
        out,
        "</dl><h2>Payload</h2><pre class=\"payload\">{}</pre>",
        esc(pretty_json(&job.payload).trim_end())
    );
    let _ = write!(out, "<h2>Attempts ({})</h2>", job.attempts.len());
    if job.attempts.is_empty() {
        out.push_str("<p class=\"empty\">The job never ran.</p>");
    } else {
        out.push_str(
            "<table class=\"attempts\"><thead><tr><th>#</th><th>Started</th><th>Took</th><th>Worker</th><th>Error</th></tr></thead><tbody>",
        );
        for (n, attempt) in job.attempts.iter().enumerate() {
            let took = (attempt.finished_at - attempt.started_at).num_milliseconds();
            let _ = write!(
                out,
                "<tr><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{took} ms</td><td>{}</td><td class=\"error\">{}</td></tr>",
                n + 1,
                time(attempt.started_at),
                esc(attempt.worker.as_deref().unwrap_or("—")),
                esc(attempt.error.as_deref().unwrap_or("")),
            );
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("</section>");
    page_with_auth(state, base, &format!("{} {}", job.kind, job.id), &out)
}

/// `POST /ui/jobs/{queue}/{id}/retry`
pub(super) async fn retry(state: State<SharedState>, base: Base, path: Path<(String, String)>) -> Response {
    act_on_one(state, base, path, JobAction::Retry).await
}

/// `POST /ui/jobs/{queue}/{id}/delete`
pub(super) async fn delete(state: State<SharedState>, base: Base, path: Path<(String, String)>) -> Response {
    act_on_one(state, base, path, JobAction::Delete).await
}

/// Acts, then back to the list with a notice saying what was done.
async fn act_on_one(
    State(state): State<SharedState>,
    Base(base): Base,
    Path((queue, id)): Path<(String, String)>,
    action: JobAction,
) -> Response {
    match dlq::act_on_one(&state, &queue, &id, action, "dashboard").await {
        Ok((_, id)) => Redirect::to(&format!("{base}/ui?notice={}&job={id}", action.done())).into_response(),
        Err(e) => api_error_page(&base, e),
    }
}

/// The "Retry all matching" form: the filter the index showed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RetryMatchingForm {
    queue: Option<String>,
    kind: Option<String>,
}

/// `POST /ui/dlq/retry`: retries every dead job the filter matches, then
/// back to the same filter with a notice saying how many.
pub(super) async fn retry_matching(
    State(state): State<SharedState>,
    Base(base): Base,
    form: Result<Form<RetryMatchingForm>, FormRejection>,
) -> Response {
    let form = match form {
        Ok(Form(form)) => form,
        Err(e) => return api_error_page(&base, ApiError::new(e.status(), "bad_request", e.body_text())),
    };
    let retried = async {
        let query = dlq::parse_query(form.queue.as_deref(), form.kind.as_deref(), None, None)?;
        let retried = dlq::retry_matching(&state, &query, "dashboard").await?;
        Ok::<_, ApiError>(index_url(
            &base,
            &query,
            &format!("notice=retried_matching&count={retried}"),
        ))
    };
    match retried.await {
        Ok(back) => Redirect::to(&back).into_response(),
        Err(e) => api_error_page(&base, e),
    }
}

/// The "Purge older than" form.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PurgeForm {
    /// Empty: every queue.
    queue: Option<String>,
    /// Parsed by hand, so a bad value gets a message about days.
    days: Option<String>,
}

/// `POST /ui/dlq/purge`: deletes the dead jobs of the queue (or of every
/// queue) dead-lettered more than `days` days ago, then back with a notice
/// saying how many. Bad input deletes nothing.
pub(super) async fn purge(
    State(state): State<SharedState>,
    Base(base): Base,
    form: Result<Form<PurgeForm>, FormRejection>,
) -> Response {
    let form = match form {
        Ok(Form(form)) => form,
        Err(e) => return api_error_page(&base, ApiError::new(e.status(), "bad_request", e.body_text())),
    };
    let purged = async {
        let query = dlq::parse_query(form.queue.as_deref(), None, None, None)?;
        let days = dlq::parse_days(form.days.as_deref())?;
        let older_than = dlq::days_before(state.clock.now(), days)?;
        let purged = dlq::purge(&state, query.queue.as_ref(), older_than, "dashboard").await?;
        Ok::<_, ApiError>(index_url(
            &base,
            &query,
            &format!("notice=purged&count={purged}&days={days}"),
        ))
    };
    match purged.await {
        Ok(back) => Redirect::to(&back).into_response(),
        Err(e) => api_error_page(&base, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_and_urls_are_escaped() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(url_encode("q:1~a b&c=d/é"), "q%3A1~a%20b%26c%3Dd%2F%C3%A9");
    }

    #[test]
    fn the_base_path_is_what_nesting_stripped() {
        let original = OriginalUri("/admin/ui/jobs/q/1".parse().unwrap());
        assert_eq!(base_path(Some(&original), "/ui/jobs/q/1"), "/admin");
        let root = OriginalUri("/ui".parse().unwrap());
        assert_eq!(base_path(Some(&root), "/ui"), "");
        assert_eq!(base_path(None, "/ui"), "");
        let mount = OriginalUri("/admin".parse().unwrap());
        assert_eq!(base_path(Some(&mount), "/"), "/admin");
        let top = OriginalUri("/".parse().unwrap());
        assert_eq!(base_path(Some(&top), "/"), "");
    }

    #[test]
    fn long_errors_are_cut_for_the_table() {
        let long = "x".repeat(ERROR_PREVIEW_CHARS + 10);
        assert_eq!(preview(&long).chars().count(), ERROR_PREVIEW_CHARS + 1);
        assert_eq!(preview("short"), "short");
    }
}
