//! The dashboard's live side: live jobs (list, detail, cancel, cancel all
//! matching behind a confirm page), pause and resume buttons, the workers
//! panel.

use std::fmt::Write as _;

use axum::{
    extract::{rejection::FormRejection, rejection::QueryRejection, Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
    Form,
};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{
    api_error_page,
    html::{ago, count, esc, html, time, url_encode},
    pages::{attempts_table, confirm_page, page_with_auth},
    Base,
};
use crate::{
    admin::{api::ApiError, live, SharedState},
    broker::{CancelOutcome, JobDetail, JobState, LiveQuery, LiveSummary, WorkerEntry},
    job::{JobId, QueueName},
};

/// The live page's query string: the filter, paging, and what the last
/// action did.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::admin) struct LiveParams {
    queue: Option<String>,
    state: Option<String>,
    kind: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
    /// `cancelled`, `signalled` or `cancelled_matching`, after a redirect.
    notice: Option<String>,
    /// The job the action was on.
    job: Option<String>,
    /// How many jobs a bulk cancel moved to the DLQ.
    count: Option<String>,
    /// How many running jobs a bulk cancel signalled.
    signalled: Option<String>,
}

/// The query string of a live filter (`queue=…&state=…&kind=…`, or empty).
fn filter_params(query: &LiveQuery) -> String {
    let mut params = Vec::new();
    if let Some(queue) = &query.queue {
        params.push(format!("queue={}", url_encode(queue.as_str())));
    }
    if !query.states.is_empty() {
        let states: Vec<&str> = query.states().iter().map(|s| s.as_str()).collect();
        params.push(format!("state={}", url_encode(&states.join(","))));
    }
    if let Some(kind) = &query.kind {
        params.push(format!("kind={}", url_encode(kind)));
    }
    params.join("&")
}

/// The live page showing `query`, with `extra` query parameters.
fn live_url(base: &str, query: &LiveQuery, extra: &str) -> String {
    let filter = filter_params(query);
    let params: Vec<&str> = [filter.as_str(), extra].into_iter().filter(|p| !p.is_empty()).collect();
    if params.is_empty() {
        format!("{base}/ui/live")
    } else {
        format!("{base}/ui/live?{}", params.join("&"))
    }
}

fn notice(params: &LiveParams) -> String {
    let job = params.job.as_deref().and_then(|j| j.parse::<JobId>().ok());
    let count = |n: &Option<String>| n.as_deref().and_then(|n| n.parse::<u64>().ok());
    let text = match (params.notice.as_deref(), job) {
        (Some("cancelled"), Some(job)) => format!("Job {job} cancelled: moved to the dead-letter queue."),
        (Some("signalled"), Some(job)) => {
            format!("Job {job} is running: its worker was asked to stop it.")
        }
        (Some("cancelled_matching"), _) => format!(
            "Cancelled {}: {} moved to the dead-letter queue, {} running asked to stop.",
            jobs(count(&params.count).unwrap_or(0) + count(&params.signalled).unwrap_or(0)),
            count(&params.count).unwrap_or(0),
            count(&params.signalled).unwrap_or(0)
        ),
        _ => return String::new(),
    };
    format!("<p class=\"notice\" role=\"status\">{}</p>", esc(&text))
}

fn jobs(n: u64) -> String {
    count(n, "job")
}

/// `GET /ui/live`
pub(in crate::admin) async fn index(
    State(state): State<SharedState>,
    Base(base): Base,
    params: Result<Query<LiveParams>, QueryRejection>,
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

async fn render_index(state: &SharedState, base: &str, params: &LiveParams) -> Result<String, ApiError> {
    let query = live::parse_query(
        params.queue.as_deref(),
        params.state.as_deref(),
        params.kind.as_deref(),
        None,
        None,
    )?;
    let limit = live::parse_limit(params.limit.as_deref())?;
    let page = live::list(state, &query, params.cursor.as_deref(), limit).await?;
    let mut queues = state.broker.queues().await?;
    queues.sort();
    let now = state.clock.now();

    let mut out = notice(params);
    out.push_str("<section><div class=\"section-head\"><h2>Live jobs</h2></div>");
    out.push_str(&filter_form(base, &queues, &query));
    if page.jobs.is_empty() {
        out.push_str("<p class=\"empty\">No live jobs match.</p>");
    } else {
        out.push_str(
            "<table class=\"live\"><thead><tr><th>Queue</th><th>Kind</th><th>State</th><th>Attempt</th>\
             <th>Runs at</th><th>Worker</th><th>Lease until</th><th></th></tr></thead><tbody>",
        );
        for job in &page.jobs {
            out.push_str(&live_row(base, now, job));
        }
        out.push_str("</tbody></table>");
    }
    if let Some(next) = &page.next_cursor {
        let href = live_url(base, &query, &format!("cursor={}&limit={limit}", url_encode(next)));
        let _ = write!(
            out,
            "<p class=\"paging\"><a href=\"{}\">Next page →</a></p>",
            esc(&href)
        );
    }
    if !page.jobs.is_empty() {
        let _ = write!(
            out,
            "<div class=\"bulk\"><form class=\"bulk-cancel\" method=\"get\" action=\"{base}/ui/live/cancel\">{}\
             <button type=\"submit\" class=\"danger\">Cancel all matching</button>\
             <span>every live job the filter shows, on every page</span></form></div>",
            hidden_filter(&query)
        );
    }
    out.push_str("</section>");
    Ok(page_with_auth(state, base, "Live jobs", &out))
}

/// The filter as hidden form fields.
fn hidden_filter(query: &LiveQuery) -> String {
    let states: Vec<&str> = if query.states.is_empty() {
        Vec::new()
    } else {
        query.states().iter().map(|s| s.as_str()).collect()
    };
    let fields = [
        ("queue", query.queue.as_ref().map_or("", |q| q.as_str()).to_owned()),
        ("state", states.join(",")),
        ("kind", query.kind.clone().unwrap_or_default()),
    ];
    fields
        .iter()
        .map(|(name, value)| format!("<input type=\"hidden\" name=\"{name}\" value=\"{}\">", esc(value)))
        .collect()
}

fn filter_form(base: &str, queues: &[QueueName], query: &LiveQuery) -> String {
    let mut queue_options = String::from("<option value=\"\">all queues</option>");
    for queue in queues {
        let selected = if query.queue.as_ref() == Some(queue) {
            " selected"
        } else {
            ""
        };
        let q = esc(queue.as_str());
        let _ = write!(queue_options, "<option value=\"{q}\"{selected}>{q}</option>");
    }
    let mut state_options = String::from("<option value=\"\">any state</option>");
    for state in JobState::ALL {
        let selected = if query.states == [state] { " selected" } else { "" };
        let _ = write!(state_options, "<option value=\"{state}\"{selected}>{state}</option>");
    }
    format!(
        "<form class=\"filters\" method=\"get\" action=\"{base}/ui/live\">\
         <label>Queue <select name=\"queue\">{queue_options}</select></label>\
         <label>State <select name=\"state\">{state_options}</select></label>\
         <label>Kind <input name=\"kind\" value=\"{}\" placeholder=\"any kind\"></label>\
         <button type=\"submit\">Filter</button></form>",
        esc(query.kind.as_deref().unwrap_or(""))
    )
}

fn live_path(base: &str, queue: &str, id: JobId) -> String {
    format!("{base}/ui/live/{}/{id}", url_encode(queue))
}

fn cancel_button(base: &str, queue: &str, id: JobId) -> String {
    format!(
        "<form method=\"post\" action=\"{}/cancel\"><button type=\"submit\" class=\"danger cancel\">Cancel</button></form>",
        live_path(base, queue, id)
    )
}

fn state_badge(state: JobState, cancel_requested: bool) -> String {
    let extra = if cancel_requested {
        " <small>(cancelling)</small>"
    } else {
        ""
    };
    format!("<span class=\"state {state}\">{state}</span>{extra}")
}

fn live_row(base: &str, now: DateTime<Utc>, s: &LiveSummary) -> String {
    let queue = s.queue.as_str();
    let (worker, deadline) = match &s.lease {
        Some(lease) => {
            let late = if lease.deadline < now { " class=\"late\"" } else { "" };
            (
                esc(lease.worker.as_deref().unwrap_or("—")),
                format!(
                    "<span{late}>{}</span><br><small>{}</small>",
                    time(lease.deadline),
                    until(now, lease.deadline)
                ),
            )
        }
        None => (String::new(), String::new()),
    };
    format!(
        "<tr data-job-id=\"{id}\"><td>{q}</td><td><code>{kind}</code></td><td>{state}</td><td class=\"num\">{attempt}</td>\
         <td>{run_at}</td><td><code>{worker}</code></td><td>{deadline}</td>\
         <td class=\"actions\"><a href=\"{detail}\">Details</a>{cancel}</td></tr>",
        id = s.id,
        q = esc(queue),
        kind = esc(&s.kind),
        state = state_badge(s.state, s.cancel_requested),
        attempt = s.attempt,
        run_at = time(s.run_at),
        detail = live_path(base, queue, s.id),
        cancel = cancel_button(base, queue, s.id),
    )
}

/// "in 12 s" or "3 min ago".
fn until(now: DateTime<Utc>, at: DateTime<Utc>) -> String {
    if at >= now {
        let secs = (at - now).num_seconds();
        match secs {
            0..60 => format!("in {secs} s"),
            60..3600 => format!("in {} min", secs / 60),
            _ => format!("in {} h", secs / 3600),
        }
    } else {
        format!("expired {}", ago(now, at))
    }
}

/// `GET /ui/live/{queue}/{id}`
pub(in crate::admin) async fn show(
    State(state): State<SharedState>,
    Base(base): Base,
    Path((queue, id)): Path<(String, String)>,
) -> Response {
    let job = match crate::admin::dlq::parse_job(&queue, &id) {
        Ok((queue, id)) => live::get_one(&state, &queue, id).await,
        Err(e) => Err(e),
    };
    match job {
        Ok(job) => html(StatusCode::OK, render_job(&state, &base, &job)),
        Err(e) => api_error_page(&base, e),
    }
}

fn render_job(state: &SharedState, base: &str, job: &JobDetail) -> String {
    let now = state.clock.now();
    let queue = job.queue.as_str();
    let mut out =
        format!(
        "<p><a href=\"{base}/ui/live?queue={q_url}\">← Live jobs of {q}</a></p><section><div class=\"section-head\">\
         <h1><code>{kind}</code> on {q}</h1><div class=\"actions\">{cancel}</div></div><dl class=\"facts\">\
         <dt>Job id</dt><dd><code>{id}</code></dd><dt>State</dt><dd>{state}</dd><dt>Attempt</dt><dd>{attempt}</dd>\
         <dt>Priority</dt><dd>{priority}</dd><dt>Enqueued</dt><dd>{enqueued}</dd><dt>Runs at</dt><dd>{run_at}</dd>",
        q = esc(queue),
        q_url = url_encode(queue),
        kind = esc(&job.kind),
        id = job.id,
        cancel = cancel_button(base, queue, job.id),
        state = esc(&job.state) + if job.cancel_requested { " (cancel requested)" } else { "" },
        attempt = job.attempt,
        priority = job.priority,
        enqueued = time(job.enqueued_at),
        run_at = time(job.run_at),
    );
    if let Some(lease) = &job.lease {
        let _ = write!(
            out,
            "<dt>Worker</dt><dd><code>{}</code></dd><dt>Started</dt><dd>{} ({})</dd><dt>Lease until</dt><dd>{} ({})</dd>",
            esc(lease.worker.as_deref().unwrap_or("—")),
            time(lease.started_at),
            ago(now, lease.started_at),
            time(lease.deadline),
            until(now, lease.deadline)
        );
    }
    if let Some(key) = &job.idempotency_key {
        let _ = write!(out, "<dt>Idempotency key</dt><dd><code>{}</code></dd>", esc(key));
    }
    let _ = write!(
        out,
        "</dl><h2>Payload</h2><pre class=\"payload\">{}</pre>",
        esc(job.payload.pretty().trim_end()),
    );
    out.push_str(&attempts_table(&job.attempts, "No attempt has finished yet."));
    out.push_str("</section>");
    page_with_auth(state, base, &format!("{} {}", job.kind, job.id), &out)
}

/// `POST /ui/live/{queue}/{id}/cancel`: cancels, then back to the queue's
/// live jobs with a notice saying what happened.
pub(in crate::admin) async fn cancel(
    State(state): State<SharedState>,
    Base(base): Base,
    Path((queue, id)): Path<(String, String)>,
) -> Response {
    match live::cancel_one(&state, &queue, &id, "dashboard").await {
        Ok((queue, id, outcome)) => {
            let notice = if outcome == CancelOutcome::Signalled {
                "signalled"
            } else {
                "cancelled"
            };
            let back = live_url(&base, &LiveQuery::queue(queue), &format!("notice={notice}&job={id}"));
            Redirect::to(&back).into_response()
        }
        Err(e) => api_error_page(&base, e),
    }
}

/// The "Cancel all matching" form: the filter the live page showed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::admin) struct CancelForm {
    queue: Option<String>,
    state: Option<String>,
    kind: Option<String>,
}

impl CancelForm {
    fn query(&self) -> Result<LiveQuery, ApiError> {
        live::parse_query(
            self.queue.as_deref(),
            self.state.as_deref(),
            self.kind.as_deref(),
            None,
            None,
        )
    }
}

/// `GET /ui/live/cancel`: how many live jobs "Cancel all matching" takes,
/// with the button that does it.
pub(in crate::admin) async fn confirm_cancel(
    State(state): State<SharedState>,
    Base(base): Base,
    params: Result<Query<CancelForm>, QueryRejection>,
) -> Response {
    let form = match params {
        Ok(Query(form)) => form,
        Err(e) => return api_error_page(&base, ApiError::bad_request(e.body_text())),
    };
    let page = async {
        let query = form.query()?;
        let counts = query.counts(&*state.broker, live::control(&state)?).await?;
        let count = |want: &[JobState]| -> u64 {
            counts
                .iter()
                .filter(|(_, s, _)| want.contains(s))
                .map(|(_, _, n)| n)
                .sum()
        };
        let waiting = count(&[JobState::Ready, JobState::Scheduled]);
        let active = count(&[JobState::Active]);
        let what = format!(
            "This cancels {}: {waiting} ready or scheduled go to the dead-letter queue, {active} running are asked to stop.",
            jobs(waiting + active)
        );
        let states: Vec<&str> = if query.states.is_empty() {
            Vec::new()
        } else {
            query.states().iter().map(|s| s.as_str()).collect()
        };
        let (queue, states, kind) = (
            query.queue.as_ref().map_or("", |q| q.as_str()),
            states.join(","),
            query.kind.as_deref().unwrap_or(""),
        );
        Ok::<_, ApiError>(confirm_page(
            &state,
            &base,
            "Cancel all matching",
            &what,
            &format!("{base}/ui/live/cancel"),
            &[("queue", queue), ("state", &states), ("kind", kind)],
            &live_url(&base, &query, ""),
        ))
    };
    match page.await {
        Ok(body) => html(StatusCode::OK, body),
        Err(e) => api_error_page(&base, e),
    }
}

/// `POST /ui/live/cancel`: cancels every live job the filter matches.
pub(in crate::admin) async fn cancel_matching(
    State(state): State<SharedState>,
    Base(base): Base,
    form: Result<Form<CancelForm>, FormRejection>,
) -> Response {
    let form = match form {
        Ok(Form(form)) => form,
        Err(e) => return api_error_page(&base, ApiError::new(e.status(), "bad_request", e.body_text())),
    };
    let done = async {
        let query = form.query()?;
        let tally = live::cancel_matching(&state, &query, "dashboard").await?;
        Ok::<_, ApiError>(live_url(
            &base,
            &query,
            &format!(
                "notice=cancelled_matching&count={}&signalled={}",
                tally.dead_lettered, tally.signalled
            ),
        ))
    };
    match done.await {
        Ok(back) => Redirect::to(&back).into_response(),
        Err(e) => api_error_page(&base, e),
    }
}

/// `POST /ui/queues/{queue}/pause`
pub(in crate::admin) async fn pause(state: State<SharedState>, base: Base, path: Path<String>) -> Response {
    pause_or_resume(state, base, path, true).await
}

/// `POST /ui/queues/{queue}/resume`
pub(in crate::admin) async fn resume(state: State<SharedState>, base: Base, path: Path<String>) -> Response {
    pause_or_resume(state, base, path, false).await
}

async fn pause_or_resume(
    State(state): State<SharedState>,
    Base(base): Base,
    Path(queue): Path<String>,
    pause: bool,
) -> Response {
    match live::set_paused(&state, &queue, pause, "dashboard").await {
        Ok((queue, _)) => {
            let notice = if pause { "paused" } else { "resumed" };
            Redirect::to(&format!(
                "{base}/ui?notice={notice}&subject={}",
                url_encode(queue.as_str())
            ))
            .into_response()
        }
        Err(e) => api_error_page(&base, e),
    }
}

/// The pause or resume button of a queue row.
pub(super) fn pause_button(base: &str, queue: &QueueName, paused: bool) -> String {
    let (action, label, class) = if paused {
        ("resume", "Resume", "retry")
    } else {
        ("pause", "Pause", "pause")
    };
    format!(
        "<form method=\"post\" action=\"{base}/ui/queues/{}/{action}\"><button type=\"submit\" class=\"{class}\">{label}</button></form>",
        url_encode(queue.as_str())
    )
}

/// The workers panel: every registered worker, the gone ones marked.
pub(super) fn workers_panel(now: DateTime<Utc>, workers: &[WorkerEntry]) -> String {
    let mut out = String::from("<section><div class=\"section-head\"><h2>Workers</h2></div>");
    if workers.is_empty() {
        out.push_str("<p class=\"empty\">No worker has registered.</p></section>");
        return out;
    }
    out.push_str(
        "<table class=\"workers\"><thead><tr><th>Worker</th><th>Status</th><th>Host</th><th>Pid</th><th>Queues</th>\
         <th>Concurrency</th><th>In flight</th><th>Started</th><th>Last seen</th></tr></thead><tbody>",
    );
    for w in workers {
        let (class, status) = if w.gone {
            (" class=\"gone\"", "gone")
        } else {
            ("", "live")
        };
        let queues: Vec<String> = w.info.queues.iter().map(|q| esc(q.as_str())).collect();
        let _ = write!(
            out,
            "<tr{class} data-worker-id=\"{id}\"><td><code>{id}</code></td><td><span class=\"worker-status {status}\">{status}</span></td>\
             <td>{host}</td><td class=\"num\">{pid}</td><td>{queues}</td><td class=\"num\">{concurrency}</td>\
             <td class=\"num\">{in_flight}</td><td>{started}</td><td>{seen}<br><small>{seen_ago}</small></td></tr>",
            id = esc(&w.info.id),
            host = esc(&w.info.host),
            pid = w.info.pid,
            queues = queues.join(", "),
            concurrency = w.info.concurrency,
            in_flight = w.info.in_flight,
            started = time(w.info.started_at),
            seen = time(w.last_seen),
            seen_ago = ago(now, w.last_seen),
        );
    }
    out.push_str("</tbody></table></section>");
    out
}
