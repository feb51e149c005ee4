//! Page rendering: the dashboard's pieces as HTML text, from data the
//! handlers loaded.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::{
    html::{ago, dead_jobs, esc, page, preview, time, url_encode},
    IndexParams,
};
use crate::{
    admin::{dlq::MAX_PURGE_DAYS, SharedState},
    broker::{DeadQuery, DeadSummary},
    envelope::{AttemptRecord, JobEnvelope},
    job::JobId,
};

pub(super) fn login_form(base: &str, failed: bool) -> String {
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

pub(super) fn notice(params: &IndexParams) -> String {
    let job = params.job.as_deref().and_then(|j| j.parse::<JobId>().ok());
    let count = params.count.as_deref().and_then(|n| n.parse::<u64>().ok());
    let days = params.days.as_deref().and_then(|d| d.parse::<u32>().ok());
    let text = match (params.notice.as_deref(), job, count, days) {
        (Some("retried"), Some(job), ..) => format!("Job {job} moved back to ready."),
        (Some("deleted"), Some(job), ..) => format!("Job {job} deleted."),
        (Some("retried_matching"), _, Some(n), _) => format!("Moved {} back to ready.", dead_jobs(n)),
        (Some(notice @ ("paused" | "resumed")), ..) if params.subject.is_some() => {
            let queue = params.subject.as_deref().unwrap_or_default();
            if notice == "paused" {
                format!("Queue {queue} paused: workers take none of its jobs until it is resumed.")
            } else {
                format!("Queue {queue} resumed.")
            }
        }
        (Some("purged"), _, Some(n), Some(days)) => {
            let unit = if days == 1 { "day" } else { "days" };
            format!("Deleted {} dead-lettered more than {days} {unit} ago.", dead_jobs(n))
        }
        _ => return String::new(),
    };
    format!("<p class=\"notice\" role=\"status\">{}</p>", esc(&text))
}

/// The query string of the filter `query` (`queue=…&kind=…`, or empty).
pub(super) fn filter_params(query: &DeadQuery) -> String {
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
pub(super) fn index_url(base: &str, query: &DeadQuery, extra: &str) -> String {
    let filter = filter_params(query);
    let params: Vec<&str> = [filter.as_str(), extra].into_iter().filter(|p| !p.is_empty()).collect();
    if params.is_empty() {
        format!("{base}/ui")
    } else {
        format!("{base}/ui?{}", params.join("&"))
    }
}

pub(super) fn filter_form(
    base: &str,
    stats: &[(crate::job::QueueName, crate::QueueStats)],
    query: &DeadQuery,
) -> String {
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
/// "Purge older than" for its queue. Both lead to a page saying how many
/// jobs the action takes, where it is confirmed ([`confirm_page`]).
pub(super) fn bulk_forms(base: &str, query: &DeadQuery, any_match: bool) -> String {
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
            "<form class=\"bulk-retry\" method=\"get\" action=\"{base}/ui/dlq/retry\">{queue_field}{kind_field}\
             <button type=\"submit\" class=\"retry\">Retry all matching</button>\
             <span>every dead job of {scope}{kind_scope}, on every page</span></form>"
        );
    }
    let every_kind = if query.kind.is_some() { ", of every kind" } else { "" };
    let _ = write!(
        out,
        "<form class=\"purge\" method=\"get\" action=\"{base}/ui/dlq/purge\">{queue_field}\
         <label>Delete the dead jobs of {scope}{every_kind} dead-lettered more than \
         <input name=\"days\" type=\"number\" min=\"1\" max=\"{MAX_PURGE_DAYS}\" value=\"30\" required> days ago</label>\
         <button type=\"submit\" class=\"danger\">Purge older than</button></form></div>"
    );
    out
}

pub(super) fn job_path(base: &str, queue: &str, id: JobId) -> String {
    format!("{base}/ui/jobs/{}/{id}", url_encode(queue))
}

pub(super) fn action_buttons(base: &str, queue: &str, id: JobId) -> String {
    let path = job_path(base, queue, id);
    format!(
        "<form method=\"post\" action=\"{path}/retry\"><button type=\"submit\" class=\"retry\">Retry</button></form>\
         <form method=\"post\" action=\"{path}/delete\"><button type=\"submit\" class=\"danger\">Delete</button></form>"
    )
}

pub(super) fn dead_row(base: &str, now: DateTime<Utc>, job: &DeadSummary) -> String {
    let queue = job.queue.as_str();
    let error = job.reason.as_deref().unwrap_or("");
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

pub(super) fn render_job(state: &SharedState, base: &str, job: &JobEnvelope) -> String {
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
        esc(job.payload.pretty().trim_end())
    );
    out.push_str(&attempts_table(&job.attempts, "The job never ran."));
    out.push_str("</section>");
    page_with_auth(state, base, &format!("{} {}", job.kind, job.id), &out)
}

/// The page frame, with a logout button when the dashboard has a login.
pub(super) fn page_with_auth(state: &SharedState, base: &str, title: &str, content: &str) -> String {
    page(base, title, state.auth.is_some(), content)
}

/// The page between a bulk form and its action: says what it does to how
/// many jobs, and posts `fields` to `action` when confirmed.
pub(super) fn confirm_page(
    state: &SharedState,
    base: &str,
    title: &str,
    what: &str,
    action: &str,
    fields: &[(&str, &str)],
    back: &str,
) -> String {
    let mut hidden = String::new();
    for (name, value) in fields {
        let _ = write!(
            hidden,
            "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
            esc(value)
        );
    }
    let content = format!(
        "<section class=\"confirm\"><h1>{title}</h1><p class=\"notice warn\" role=\"alert\">{what}</p>\
         <form method=\"post\" action=\"{action}\">{hidden}\
         <button type=\"submit\" class=\"danger confirm\">{title}</button> \
         <a class=\"cancel\" href=\"{back}\">Cancel</a></form></section>",
        title = esc(title),
        what = esc(what),
        action = esc(action),
        back = esc(back),
    );
    page_with_auth(state, base, title, &content)
}

/// "Attempts (n)" and a row per attempt, or `empty` when there is none.
pub(super) fn attempts_table(attempts: &[AttemptRecord], empty: &str) -> String {
    let mut out = format!("<h2>Attempts ({})</h2>", attempts.len());
    if attempts.is_empty() {
        let _ = write!(out, "<p class=\"empty\">{}</p>", esc(empty));
        return out;
    }
    out.push_str(
        "<table class=\"attempts\"><thead><tr><th>#</th><th>Started</th><th>Took</th><th>Worker</th><th>Error</th></tr></thead><tbody>",
    );
    for (n, attempt) in attempts.iter().enumerate() {
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
    out
}
