//! Queue history for the API and the dashboard: which buckets a range
//! means, loading them (one queue or every queue), and
//! `GET /api/queues/{queue}/history`.

use axum::{
    extract::{Path, State},
    response::{IntoResponse, Response},
    Json,
};
use serde::Deserialize;

use super::{
    api::{ApiError, ApiQuery},
    AdminState, SharedState,
};
use crate::{
    broker::history::{merged, QueueHistory, Resolution, Series},
    job::QueueName,
};

/// A time range the dashboard offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Range {
    /// The last 60 minute buckets.
    Hour,
    /// The last 1,440 minute buckets.
    Day,
    /// The last 720 hour buckets.
    Month,
}

impl Range {
    pub(super) const ALL: [Range; 3] = [Range::Hour, Range::Day, Range::Month];

    /// The query-string word.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Range::Hour => "hour",
            Range::Day => "day",
            Range::Month => "month",
        }
    }

    /// The words for a person.
    pub(super) fn label(self) -> &'static str {
        match self {
            Range::Hour => "last hour, per minute",
            Range::Day => "last 24 hours, per minute",
            Range::Month => "last 30 days, per hour",
        }
    }

    pub(super) fn parse(word: Option<&str>) -> Result<Self, ApiError> {
        match word.unwrap_or("hour") {
            "hour" => Ok(Range::Hour),
            "day" => Ok(Range::Day),
            "month" => Ok(Range::Month),
            other => Err(ApiError::bad_request(format!(
                "range `{}` must be `hour`, `day` or `month`",
                other.escape_debug()
            ))),
        }
    }

    /// The resolution and how many buckets.
    pub(super) fn buckets(self) -> (Resolution, u32) {
        match self {
            Range::Hour => (Resolution::Minute, 60),
            Range::Day => (Resolution::Minute, 24 * 60),
            Range::Month => (Resolution::Hour, 30 * 24),
        }
    }
}

/// The broker's history, or a 404 saying it keeps none.
fn history_of(state: &AdminState) -> Result<&dyn QueueHistory, ApiError> {
    state.broker.queue_history().ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "no_history",
            "this broker keeps no queue history; use one of the crate's brokers (memory, Redis, PostgreSQL)",
        )
    })
}

/// The series of `queue`, or of every queue merged when `None` (`None`
/// back when there is no queue at all).
pub(super) async fn load(
    state: &AdminState,
    queue: Option<&QueueName>,
    resolution: Resolution,
    count: u32,
) -> Result<Option<Series>, ApiError> {
    let history = history_of(state)?;
    Ok(match queue {
        Some(queue) => Some(history.history(queue, resolution, count).await?),
        None => {
            let mut queues = state.broker.queues().await?;
            queues.sort();
            merged(history, &queues, resolution, count).await?
        }
    })
}

/// The query string of `GET /api/queues/{queue}/history`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HistoryParams {
    /// `minute` (default) or `hour`.
    resolution: Option<String>,
    /// How many buckets, the newest last (default: 60 minutes or 720 hours).
    buckets: Option<String>,
}

/// `GET /api/queues/{queue}/history?resolution=minute|hour&buckets=N`
pub(super) async fn queue_history(
    State(state): State<SharedState>,
    Path(queue): Path<String>,
    ApiQuery(params): ApiQuery<HistoryParams>,
) -> Result<Response, ApiError> {
    let queue = QueueName::new(&queue)?;
    let resolution: Resolution = params.resolution.as_deref().unwrap_or("minute").parse()?;
    let count = match params.buckets.as_deref() {
        None => {
            Range::buckets(if resolution == Resolution::Minute {
                Range::Hour
            } else {
                Range::Month
            })
            .1
        }
        Some(n) => n.parse::<u32>().ok().filter(|n| *n >= 1).ok_or_else(|| {
            ApiError::bad_request(format!(
                "buckets `{}` must be a whole number of at least 1",
                n.escape_debug()
            ))
        })?,
    };
    let series = load(&state, Some(&queue), resolution, count).await?;
    let body = series.map(|s| s.to_json(Some(&queue))).unwrap_or_default();
    Ok(Json(body).into_response())
}
