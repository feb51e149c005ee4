//! `GET /ui/history`: the queue history page, one queue or every queue,
//! over the last hour, day or 30 days.

use std::fmt::Write as _;

use axum::{
    extract::{rejection::QueryRejection, Query, State},
    http::StatusCode,
    response::Response,
};
use serde::Deserialize;

use super::{
    api_error_page,
    charts::history_charts,
    html::{esc, html, url_encode},
    pages::page_with_auth,
    Base,
};
use crate::{
    admin::{
        api::ApiError,
        history::{load, Range},
        SharedState,
    },
    job::QueueName,
};

/// The history page's query string.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::admin) struct HistoryPageParams {
    /// Empty or absent: every queue.
    queue: Option<String>,
    /// `hour` (default), `day` or `month`.
    range: Option<String>,
}

/// `GET /ui/history`
pub(in crate::admin) async fn history_page(
    State(state): State<SharedState>,
    Base(base): Base,
    params: Result<Query<HistoryPageParams>, QueryRejection>,
) -> Response {
    let params = match params {
        Ok(Query(params)) => params,
        Err(e) => return api_error_page(&base, ApiError::bad_request(e.body_text())),
    };
    match render(&state, &base, &params).await {
        Ok(body) => html(StatusCode::OK, body),
        Err(e) => api_error_page(&base, e),
    }
}

async fn render(state: &SharedState, base: &str, params: &HistoryPageParams) -> Result<String, ApiError> {
    let queue = match params.queue.as_deref().filter(|q| !q.is_empty()) {
        Some(q) => Some(QueueName::new(q)?),
        None => None,
    };
    let range = Range::parse(params.range.as_deref())?;
    let (resolution, count) = range.buckets();
    let series = load(state, queue.as_ref(), resolution, count).await?;
    let scope = queue.as_ref().map_or("All queues", |q| q.as_str());
    let queue_param = queue
        .as_ref()
        .map(|q| format!("queue={}&", url_encode(q.as_str())))
        .unwrap_or_default();
    let mut out = String::new();
    let _ = write!(
        out,
        "<section><div class=\"section-head\"><h1>History: {}</h1><a href=\"{base}/ui\">Back to the queues</a></div><nav class=\"ranges\">",
        esc(scope)
    );
    for other in Range::ALL {
        if other == range {
            let _ = write!(out, "<a class=\"current\" aria-current=\"page\">{}</a>", other.label());
        } else {
            let _ = write!(
                out,
                "<a href=\"{base}/ui/history?{queue_param}range={}\">{}</a>",
                other.as_str(),
                other.label()
            );
        }
    }
    out.push_str("</nav><p class=\"zone\">All times are UTC. Counts are per bucket; depth and age are sampled by the workers about once a minute (gaps: no worker sampled); latency is how long jobs waited from due to started.</p>");
    match &series {
        Some(series) => out.push_str(&history_charts(series, scope)),
        None => out.push_str("<p class=\"empty\">No queue has seen a job yet.</p>"),
    }
    out.push_str("</section>");
    Ok(page_with_auth(state, base, &format!("History: {scope}"), &out))
}
