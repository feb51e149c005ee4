//! Live jobs, queues and workers in the JSON API (and the operations the
//! dashboard shares): list and show live jobs, cancel one or by filter,
//! pause and resume queues, list workers. On the broker's [`JobControl`].

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde::Deserialize;
use serde_json::json;

use super::{
    api::{ApiError, ApiJson, ApiQuery},
    dlq, AdminState, SharedState,
};
use crate::{
    broker::{CancelOutcome, CancelTally, JobControl, JobDetail, JobState, LiveQuery, LiveSummary, MAX_JOB_PAGE},
    job::{JobId, QueueName},
};

/// The broker's live-job side; 501 when it has none.
pub(super) fn control(state: &AdminState) -> Result<&dyn JobControl, ApiError> {
    state.broker.control().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "not_supported",
            "this broker has no operator control of live jobs (it does not implement `JobControl`)",
        )
    })
}

/// Parses the live-job filter fields; empty ones count as absent. `state`
/// is one state or several separated by commas.
pub(super) fn parse_query(
    queue: Option<&str>,
    state: Option<&str>,
    kind: Option<&str>,
    since: Option<&str>,
    until: Option<&str>,
) -> Result<LiveQuery, ApiError> {
    let dead = dlq::parse_query(queue, kind, since, until)?;
    let mut query = LiveQuery::all().between(dead.since, dead.until);
    query.queue = dead.queue;
    query.kind = dead.kind;
    for name in state
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let state: JobState = name
            .parse()
            .map_err(|e: crate::Error| ApiError::bad_request(e.to_string()))?;
        query = query.state(state);
    }
    Ok(query)
}

/// Parses a page size: 1 to [`MAX_JOB_PAGE`], [`dlq::DEFAULT_PAGE`] when absent.
pub(super) fn parse_limit(value: Option<&str>) -> Result<usize, ApiError> {
    let limit = dlq::parse_limit(value)?;
    if limit > MAX_JOB_PAGE {
        return Err(ApiError::bad_request(format!("`limit` must be at most {MAX_JOB_PAGE}")));
    }
    Ok(limit)
}

/// One page of live jobs, as the API answers it.
#[derive(Debug, serde::Serialize)]
pub(super) struct Page {
    pub(super) jobs: Vec<LiveSummary>,
    /// Pass back as `cursor` for the next page; `None` at the end.
    pub(super) next_cursor: Option<String>,
}

pub(super) async fn list(
    state: &AdminState,
    query: &LiveQuery,
    cursor: Option<&str>,
    limit: usize,
) -> Result<Page, ApiError> {
    let listing = query.list(&*state.broker, control(state)?, cursor, limit).await?;
    Ok(Page {
        jobs: listing.jobs.iter().map(LiveSummary::from).collect(),
        next_cursor: listing.next_cursor,
    })
}

/// One live job; 404 when it is not live in `queue`.
pub(super) async fn get_one(state: &AdminState, queue: &QueueName, id: JobId) -> Result<JobDetail, ApiError> {
    match control(state)?.get_job(queue, id).await? {
        Some(job) => Ok(JobDetail::from(&job)),
        None => Err(not_live(queue, id)),
    }
}

fn not_live(queue: &QueueName, id: JobId) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("job {id} is not live in `{queue}` (it finished, died, or never existed)"),
    )
}

/// Cancels one live job and leaves a tracing event; 404 when it is not live.
pub(super) async fn cancel_one(
    state: &AdminState,
    queue: &str,
    id: &str,
    via: &'static str,
) -> Result<(QueueName, JobId, CancelOutcome), ApiError> {
    let (queue, id) = dlq::parse_job(queue, id)?;
    let outcome = control(state)?.cancel(&queue, id).await?;
    match outcome {
        CancelOutcome::DeadLettered | CancelOutcome::Signalled => {
            tracing::info!(target: "flagship_worker::admin", action = "cancel", %queue, job.id = %id, ?outcome, via, "job cancelled");
            Ok((queue, id, outcome))
        }
        _ => Err(not_live(&queue, id)),
    }
}

/// Cancels every live job `query` matches and leaves a tracing event.
pub(super) async fn cancel_matching(
    state: &AdminState,
    query: &LiveQuery,
    via: &'static str,
) -> Result<CancelTally, ApiError> {
    let tally = query.cancel_all(&*state.broker, control(state)?).await?;
    tracing::info!(
        target: "flagship_worker::admin",
        action = "cancel_matching",
        queue = query.queue.as_ref().map_or("*", |q| q.as_str()),
        kind = query.kind.as_deref().unwrap_or("*"),
        states = ?query.states(),
        dead_lettered = tally.dead_lettered,
        signalled = tally.signalled,
        via,
        "live jobs cancelled"
    );
    Ok(tally)
}

/// Pauses or resumes a queue the broker knows and leaves a tracing event;
/// returns whether it changed.
pub(super) async fn set_paused(
    state: &AdminState,
    queue: &str,
    pause: bool,
    via: &'static str,
) -> Result<(QueueName, bool), ApiError> {
    let queue = dlq::parse_queue(queue)?;
    LiveQuery::queue(queue.clone()).queues(&*state.broker).await?;
    let control = control(state)?;
    let changed = if pause {
        control.pause(&queue).await?
    } else {
        control.resume(&queue).await?
    };
    let action = if pause { "pause" } else { "resume" };
    tracing::info!(target: "flagship_worker::admin", action, %queue, changed, via, "queue {action}d");
    Ok((queue, changed))
}

/// The live-job filter and paging fields of a query string.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListParams {
    queue: Option<String>,
    state: Option<String>,
    kind: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /api/jobs`
pub(super) async fn list_jobs(
    State(state): State<SharedState>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Response, ApiError> {
    let query = parse_query(
        params.queue.as_deref(),
        params.state.as_deref(),
        params.kind.as_deref(),
        params.since.as_deref(),
        params.until.as_deref(),
    )?;
    let limit = parse_limit(params.limit.as_deref())?;
    Ok(Json(list(&state, &query, params.cursor.as_deref(), limit).await?).into_response())
}

/// `GET /api/jobs/{queue}/{id}`
pub(super) async fn show_job(
    State(state): State<SharedState>,
    Path((queue, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (queue, id) = dlq::parse_job(&queue, &id)?;
    Ok(Json(get_one(&state, &queue, id).await?).into_response())
}

/// `POST /api/jobs/{queue}/{id}/cancel`
pub(super) async fn cancel_job(
    State(state): State<SharedState>,
    Path((queue, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (queue, id, outcome) = cancel_one(&state, &queue, &id, "api").await?;
    Ok(Json(json!({ "outcome": outcome, "queue": queue, "id": id })).into_response())
}

/// The body of `POST /api/jobs/cancel`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CancelBody {
    queue: Option<String>,
    state: Option<String>,
    kind: Option<String>,
    since: Option<String>,
    until: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

/// `POST /api/jobs/cancel`
pub(super) async fn cancel_jobs(
    State(state): State<SharedState>,
    ApiJson(body): ApiJson<CancelBody>,
) -> Result<Response, ApiError> {
    let query = parse_query(
        body.queue.as_deref(),
        body.state.as_deref(),
        body.kind.as_deref(),
        body.since.as_deref(),
        body.until.as_deref(),
    )?;
    if body.dry_run {
        let counts = query.counts(&*state.broker, control(&state)?).await?;
        let total: u64 = counts.iter().map(|(_, _, n)| n).sum();
        let queues: Vec<_> = counts
            .iter()
            .map(|(queue, state, n)| json!({ "queue": queue, "state": state, "count": n }))
            .collect();
        return Ok(Json(json!({ "dry_run": true, "would_cancel": total, "queues": queues })).into_response());
    }
    Ok(Json(cancel_matching(&state, &query, "api").await?).into_response())
}

/// `POST /api/queues/{queue}/pause`
pub(super) async fn pause(state: State<SharedState>, path: Path<String>) -> Result<Response, ApiError> {
    pause_or_resume(state, path, true).await
}

/// `POST /api/queues/{queue}/resume`
pub(super) async fn resume(state: State<SharedState>, path: Path<String>) -> Result<Response, ApiError> {
    pause_or_resume(state, path, false).await
}

async fn pause_or_resume(
    State(state): State<SharedState>,
    Path(queue): Path<String>,
    pause: bool,
) -> Result<Response, ApiError> {
    let (queue, changed) = set_paused(&state, &queue, pause, "api").await?;
    Ok(Json(json!({ "queue": queue, "paused": pause, "changed": changed })).into_response())
}

/// `GET /api/workers`
pub(super) async fn workers(State(state): State<SharedState>) -> Result<Response, ApiError> {
    let workers = control(&state)?.workers().await?;
    Ok(Json(json!({ "workers": workers })).into_response())
}
