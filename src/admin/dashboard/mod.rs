//! The DLQ dashboard: server-rendered HTML with plain forms, no script.

use std::fmt::Write as _;

use axum::{
    extract::{rejection::FormRejection, rejection::QueryRejection, FromRequestParts, OriginalUri, Path, Query, State},
    http::{header, request::Parts, HeaderMap, HeaderValue, StatusCode, Uri},
    response::{IntoResponse, Redirect, Response},
    Form,
};
use serde::Deserialize;

use super::{
    api::{all_queue_stats, ApiError},
    auth,
    dlq::{self, JobAction},
    SharedState,
};
use crate::health::HealthStatus;

mod charts;
mod history_page;
mod html;
pub(super) mod live;
mod pages;

pub(super) use history_page::history_page;

use self::{
    html::{esc, html, page, url_encode},
    pages::{
        bulk_forms, confirm_page, dead_row, filter_form, index_url, login_form, notice, page_with_auth, render_job,
    },
};

const STYLESHEET: &str = include_str!("dashboard.css");

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

/// A page saying what went wrong, with a way back.
pub(super) fn error_page(base: &str, status: StatusCode, message: &str) -> Response {
    let content = format!(
        "<h1>{}</h1><p class=\"notice error\">{}</p><p><a href=\"{base}/ui\">Back to the dead-letter queue</a></p>",
        status.canonical_reason().unwrap_or("Error"),
        esc(message)
    );
    html(status, page(base, "Error", false, &content))
}

pub(super) fn api_error_page(base: &str, error: ApiError) -> Response {
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
    if let Ok(cookie) = HeaderValue::from_str(&auth.login_cookie(&base, state.clock.now())) {
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
    /// The queue a pause or resume was on.
    subject: Option<String>,
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
    let sparklines = sparklines(state, &stats).await?;
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
            "<table class=\"stats\"><thead><tr><th>Queue</th><th>Status</th><th>Ready</th><th>Scheduled</th><th>Active</th>\
             <th>Dead</th><th>Oldest ready</th><th>Completed</th><th>Retried</th><th>Dead-lettered</th>\
             <th>Last hour</th><th></th></tr></thead><tbody>",
        );
        for ((queue, s), spark) in stats.iter().zip(&sparklines) {
            let oldest = s
                .oldest_ready_age_ms
                .map_or_else(|| "—".to_owned(), |ms| format!("{:.1} s", ms as f64 / 1000.0));
            let dead_class = if s.dead > 0 { " class=\"has-dead\"" } else { "" };
            let status = if s.paused {
                "<span class=\"queue-status paused\">paused</span>"
            } else {
                "<span class=\"queue-status running\">running</span>"
            };
            let _ = write!(
                out,
                "<tr data-queue=\"{q}\"><td><a href=\"{base}/ui?queue={q_url}\">{q}</a></td><td>{status}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td{dead_class}>{}</td><td>{oldest}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td class=\"spark\"><a href=\"{base}/ui/history?queue={q_url}\">{spark}</a></td>\
                 <td class=\"actions\"><a href=\"{base}/ui/live?queue={q_url}\">Live jobs</a>{pause}</td></tr>",
                s.ready,
                s.scheduled,
                s.active,
                s.dead,
                s.completed,
                s.retried,
                s.dead_lettered,
                q = esc(queue.as_str()),
                q_url = url_encode(queue.as_str()),
                pause = live::pause_button(base, queue, s.paused),
            );
        }
        out.push_str("</tbody></table>");
        let _ = write!(
            out,
            "<p class=\"worker\"><a href=\"{base}/ui/history\">History of all queues</a> (charts; times in UTC)</p>"
        );
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
    if let Some(control) = state.broker.control() {
        match control.workers().await {
            Ok(workers) => out.push_str(&live::workers_panel(now, &workers)),
            Err(e) => {
                let _ = write!(
                    out,
                    "<section><h2>Workers</h2><p class=\"notice error\">The worker registry could not be read: {}</p></section>",
                    esc(&e.to_string())
                );
            }
        }
    }

    out.push_str("<section><div class=\"section-head\"><h2>Dead-letter queue</h2></div>");
    out.push_str(&filter_form(base, &stats, &query));
    if page.jobs.is_empty() {
        out.push_str("<p class=\"empty\">No dead jobs match.</p>");
    } else {
        out.push_str(
            "<table class=\"dead\"><thead><tr><th>Queue</th><th>Kind</th><th>Reason</th><th>Attempts</th>\
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

/// Each queue's sparkline of the last hour, in the order of `stats`
/// (empty when the broker keeps no history).
async fn sparklines(
    state: &SharedState,
    stats: &[(crate::job::QueueName, crate::QueueStats)],
) -> Result<Vec<String>, ApiError> {
    let mut out = Vec::with_capacity(stats.len());
    for (queue, _) in stats {
        let spark = match state.broker.queue_history() {
            Some(history) => charts::sparkline(&history.history(queue, crate::broker::Resolution::Minute, 60).await?),
            None => String::new(),
        };
        out.push(spark);
    }
    Ok(out)
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

/// `GET /ui/dlq/retry`: says how many dead jobs "Retry all matching" would
/// move back to ready, with the button that does it.
pub(super) async fn confirm_retry_matching(
    State(state): State<SharedState>,
    Base(base): Base,
    params: Result<Query<RetryMatchingForm>, QueryRejection>,
) -> Response {
    let form = match params {
        Ok(Query(form)) => form,
        Err(e) => return api_error_page(&base, ApiError::bad_request(e.body_text())),
    };
    let page = async {
        let query = dlq::parse_query(form.queue.as_deref(), form.kind.as_deref(), None, None)?;
        let n = query.count(&*state.broker, &*state.dlq).await?;
        let what = format!("This moves {} of {} back to ready.", html::dead_jobs(n), scope(&query));
        let queue = query.queue.as_ref().map_or("", |q| q.as_str());
        let kind = query.kind.as_deref().unwrap_or("");
        Ok::<_, ApiError>(confirm_page(
            &state,
            &base,
            "Retry all matching",
            &what,
            &format!("{base}/ui/dlq/retry"),
            &[("queue", queue), ("kind", kind)],
            &index_url(&base, &query, ""),
        ))
    };
    match page.await {
        Ok(body) => html(StatusCode::OK, body),
        Err(e) => api_error_page(&base, e),
    }
}

/// `GET /ui/dlq/purge`: says how many dead jobs "Purge older than" would
/// delete, with the button that does it.
pub(super) async fn confirm_purge(
    State(state): State<SharedState>,
    Base(base): Base,
    params: Result<Query<PurgeForm>, QueryRejection>,
) -> Response {
    let form = match params {
        Ok(Query(form)) => form,
        Err(e) => return api_error_page(&base, ApiError::bad_request(e.body_text())),
    };
    let page = async {
        let query = dlq::parse_query(form.queue.as_deref(), None, None, None)?;
        let days = dlq::parse_days(form.days.as_deref())?;
        let older_than = dlq::days_before(state.clock.now(), days)?;
        let n = query
            .clone()
            .between(None, Some(older_than))
            .count(&*state.broker, &*state.dlq)
            .await?;
        let unit = if days == 1 { "day" } else { "days" };
        let what = format!(
            "This deletes {} of {} dead-lettered more than {days} {unit} ago, for good.",
            html::dead_jobs(n),
            scope(&query)
        );
        let queue = query.queue.as_ref().map_or("", |q| q.as_str());
        Ok::<_, ApiError>(confirm_page(
            &state,
            &base,
            "Purge older than",
            &what,
            &format!("{base}/ui/dlq/purge"),
            &[("queue", queue), ("days", &days.to_string())],
            &index_url(&base, &query, ""),
        ))
    };
    match page.await {
        Ok(body) => html(StatusCode::OK, body),
        Err(e) => api_error_page(&base, e),
    }
}

/// The queues and kind a bulk action covers, in words.
fn scope(query: &crate::broker::DeadQuery) -> String {
    let queues = match &query.queue {
        Some(queue) => format!("queue {queue}"),
        None => "every queue".to_owned(),
    };
    match &query.kind {
        Some(kind) => format!("{queues} of kind {kind}"),
        None => queues,
    }
}

#[cfg(test)]
mod tests {
    use super::{html::*, *};

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
