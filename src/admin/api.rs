//! The JSON API and `/metrics`.

use axum::{
    extract::{FromRequest, FromRequestParts, Path, Query, Request, State},
    http::{header, request::Parts, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use chrono::{DateTime, Utc};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::json;

use super::{
    dlq::{self, JobAction},
    AdminState, SharedState,
};
use crate::{
    broker::DeadQuery, broker::JobDetail, broker::QueueStats, error::Error, health::HealthStatus, job::QueueName,
    worker::WorkerStats,
};

/// An error answer: a status and a JSON body
/// `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug)]
pub(super) struct ApiError {
    pub(super) status: StatusCode,
    /// A stable machine-readable word.
    pub(super) code: &'static str,
    /// What went wrong and what to do, for a person.
    pub(super) message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub(super) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        let (status, code) = match &error {
            Error::InvalidConfig(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Error::NotFound(_) | Error::Missing(_) => (StatusCode::NOT_FOUND, "not_found"),
            Error::AmbiguousId { .. } => (StatusCode::BAD_REQUEST, "bad_request"),
            Error::NotRetryable { .. } => (StatusCode::CONFLICT, "not_retryable"),
            Error::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "broker_unavailable"),
            Error::Backend(_) | Error::CorruptEnvelope { .. } => (StatusCode::BAD_GATEWAY, "broker_error"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        if status.is_server_error() {
            tracing::warn!(target: "flagship_worker::admin", error = %error, "admin request failed");
        }
        ApiError::new(status, code, error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        (self.status, Json(body)).into_response()
    }
}

/// `Query` whose refusal is an [`ApiError`].
pub(super) struct ApiQuery<T>(pub(super) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(e) => Err(ApiError::bad_request(e.body_text())),
        }
    }
}

/// `Json` whose refusal is an [`ApiError`] (400, 413, 415 or 422).
pub(super) struct ApiJson<T>(pub(super) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(e) => Err(ApiError::new(e.status(), "bad_request", e.body_text())),
        }
    }
}

#[derive(Serialize)]
struct QueueEntry {
    queue: QueueName,
    #[serde(flatten)]
    stats: QueueStats,
}

/// Every queue's stats, in name order.
pub(super) async fn all_queue_stats(state: &AdminState) -> Result<Vec<(QueueName, QueueStats)>, ApiError> {
    let mut queues = state.broker.queues().await?;
    queues.sort();
    let mut all = Vec::with_capacity(queues.len());
    for queue in queues {
        let stats = state.broker.stats(&queue).await?;
        all.push((queue, stats));
    }
    Ok(all)
}

/// `GET /api/queues`
pub(super) async fn queues(State(state): State<SharedState>) -> Result<Response, ApiError> {
    let queues: Vec<QueueEntry> = all_queue_stats(&state)
        .await?
        .into_iter()
        .map(|(queue, stats)| QueueEntry { queue, stats })
        .collect();
    let worker: Option<WorkerStats> = state.worker.as_ref().map(|w| w.stats());
    Ok(Json(json!({ "queues": queues, "worker": worker })).into_response())
}

/// The DLQ filter and paging fields of a query string.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListParams {
    pub(super) queue: Option<String>,
    pub(super) kind: Option<String>,
    pub(super) since: Option<String>,
    pub(super) until: Option<String>,
    pub(super) limit: Option<String>,
    pub(super) cursor: Option<String>,
}

impl ListParams {
    pub(super) fn query(&self) -> Result<DeadQuery, ApiError> {
        dlq::parse_query(
            self.queue.as_deref(),
            self.kind.as_deref(),
            self.since.as_deref(),
            self.until.as_deref(),
        )
    }
}

/// `GET /api/dlq`
pub(super) async fn list_dead(
    State(state): State<SharedState>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Response, ApiError> {
    let query = params.query()?;
    let limit = dlq::parse_limit(params.limit.as_deref())?;
    let page = dlq::list(&state, &query, params.cursor.as_deref(), limit).await?;
    Ok(Json(page).into_response())
}

/// `GET /api/dlq/{queue}/{id}`
pub(super) async fn show_dead(
    State(state): State<SharedState>,
    Path((queue, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (queue, id) = dlq::parse_job(&queue, &id)?;
    Ok(Json(JobDetail::from(&dlq::get_one(&state, &queue, id).await?)).into_response())
}

/// `POST /api/dlq/{queue}/{id}/retry`
pub(super) async fn retry_dead(state: State<SharedState>, path: Path<(String, String)>) -> Result<Response, ApiError> {
    act_on_one(state, path, JobAction::Retry).await
}

/// `DELETE /api/dlq/{queue}/{id}`
pub(super) async fn delete_dead(state: State<SharedState>, path: Path<(String, String)>) -> Result<Response, ApiError> {
    act_on_one(state, path, JobAction::Delete).await
}

/// Answers `{"retried": true, ...}` or `{"deleted": true, ...}`.
async fn act_on_one(
    State(state): State<SharedState>,
    Path((queue, id)): Path<(String, String)>,
    action: JobAction,
) -> Result<Response, ApiError> {
    let (queue, id) = dlq::act_on_one(&state, &queue, &id, action, "api").await?;
    let mut body = serde_json::Map::new();
    body.insert(action.done().into(), true.into());
    body.insert("queue".into(), queue.as_str().into());
    body.insert("id".into(), id.to_string().into());
    Ok(Json(body).into_response())
}

/// The body of `POST /api/dlq/retry`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RetryBody {
    queue: Option<String>,
    kind: Option<String>,
    since: Option<String>,
    until: Option<String>,
}

/// `POST /api/dlq/retry`
pub(super) async fn retry_matching(
    State(state): State<SharedState>,
    ApiJson(body): ApiJson<RetryBody>,
) -> Result<Response, ApiError> {
    let query = dlq::parse_query(
        body.queue.as_deref(),
        body.kind.as_deref(),
        body.since.as_deref(),
        body.until.as_deref(),
    )?;
    let retried = dlq::retry_matching(&state, &query, "api").await?;
    Ok(Json(json!({ "retried": retried })).into_response())
}

/// The body of `POST /api/dlq/purge`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PurgeBody {
    queue: Option<String>,
    older_than: String,
}

/// `POST /api/dlq/purge`
pub(super) async fn purge(
    State(state): State<SharedState>,
    ApiJson(body): ApiJson<PurgeBody>,
) -> Result<Response, ApiError> {
    let queue = body.queue.as_deref().map(dlq::parse_queue).transpose()?;
    let older_than: DateTime<Utc> = dlq::parse_time("older_than", &body.older_than)?;
    let purged = dlq::purge(&state, queue.as_ref(), older_than, "api").await?;
    Ok(Json(json!({ "purged": purged })).into_response())
}

/// `GET /api/health`: 200 unless the report says `down` (503).
pub(super) async fn health(State(state): State<SharedState>) -> Result<Response, ApiError> {
    let report = state.health.latest().await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "health_unavailable",
            format!("no health report: {e}"),
        )
    })?;
    let status = if report.status == HealthStatus::Down {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    Ok((status, Json(report)).into_response())
}

/// `GET /metrics`
pub(super) async fn metrics(State(state): State<SharedState>) -> Result<Response, ApiError> {
    let queues = all_queue_stats(&state).await?;
    state.metrics.record_queues(&queues);
    if let Some(worker) = &state.worker {
        state.metrics.record_worker(worker.id(), &worker.stats());
    }
    let content_type = [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")];
    Ok((content_type, state.metrics.render()).into_response())
}

/// Any other path.
pub(super) async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; see the `admin` module docs for the list",
    )
}

/// A known path with the wrong method.
pub(super) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method",
    )
}
