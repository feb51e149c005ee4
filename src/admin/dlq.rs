//! Parsing the DLQ inputs of the JSON API and the dashboard, and the
//! operations they share.

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{
    api::ApiError,
    query::{DeadQuery, DeadSummary},
    AdminState,
};
use crate::{
    broker::MAX_DEAD_PAGE,
    envelope::JobEnvelope,
    job::{JobId, QueueName},
    schema::MAX_KIND_LEN,
};

/// The page size when none is asked for.
pub(super) const DEFAULT_PAGE: usize = 50;

/// An empty form field means "not given".
fn given(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

/// Parses the filter fields; empty ones count as absent.
pub(super) fn parse_query(
    queue: Option<&str>,
    kind: Option<&str>,
    since: Option<&str>,
    until: Option<&str>,
) -> Result<DeadQuery, ApiError> {
    let queue = given(queue).map(parse_queue).transpose()?;
    let kind = given(kind).map(str::to_owned);
    if let Some(kind) = &kind {
        if kind.len() > MAX_KIND_LEN {
            return Err(ApiError::bad_request(format!(
                "`kind` is {} bytes long; job kinds are at most {MAX_KIND_LEN}",
                kind.len()
            )));
        }
    }
    let since = given(since).map(|v| parse_time("since", v)).transpose()?;
    let until = given(until).map(|v| parse_time("until", v)).transpose()?;
    if let (Some(since), Some(until)) = (since, until) {
        if since >= until {
            return Err(ApiError::bad_request(format!(
                "`since` ({since}) must be before `until` ({until})"
            )));
        }
    }
    Ok(DeadQuery {
        queue,
        kind,
        since,
        until,
    })
}

pub(super) fn parse_queue(value: &str) -> Result<QueueName, ApiError> {
    QueueName::new(value).map_err(|e| ApiError::bad_request(format!("`queue`: {e}")))
}

pub(super) fn parse_time(field: &str, value: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(value.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            ApiError::bad_request(format!(
                "`{field}` must be an RFC 3339 time such as 2025-01-31T12:00:00Z, got `{}`: {e}",
                value.escape_debug()
            ))
        })
}

/// Parses a page size: 1 to [`MAX_DEAD_PAGE`], [`DEFAULT_PAGE`] when absent.
pub(super) fn parse_limit(value: Option<&str>) -> Result<usize, ApiError> {
    let Some(value) = given(value) else {
        return Ok(DEFAULT_PAGE);
    };
    match value.parse::<usize>() {
        Ok(limit) if (1..=MAX_DEAD_PAGE).contains(&limit) => Ok(limit),
        _ => Err(ApiError::bad_request(format!(
            "`limit` must be a whole number from 1 to {MAX_DEAD_PAGE}, got `{}`",
            value.escape_debug()
        ))),
    }
}

/// Parses the `{queue}/{id}` of a job's path.
pub(super) fn parse_job(queue: &str, id: &str) -> Result<(QueueName, JobId), ApiError> {
    let queue = parse_queue(queue)?;
    let id = id
        .parse::<JobId>()
        .map_err(|_| ApiError::bad_request(format!("`{}` is not a job id (a UUID)", id.escape_debug())))?;
    Ok((queue, id))
}

/// One page of a listing, as the API answers it.
#[derive(Debug, Serialize)]
pub(super) struct Page {
    pub(super) jobs: Vec<DeadSummary>,
    /// Pass back as `cursor` for the next page; `None` at the end.
    pub(super) next_cursor: Option<String>,
}

/// One page of dead jobs matching `query`.
pub(super) async fn list(
    state: &AdminState,
    query: &DeadQuery,
    cursor: Option<&str>,
    limit: usize,
) -> Result<Page, ApiError> {
    let listing = query.list(&*state.broker, &*state.dlq, cursor, limit).await?;
    Ok(Page {
        jobs: listing.jobs.iter().map(DeadSummary::from).collect(),
        next_cursor: listing.next_cursor,
    })
}

/// Deletes the dead jobs dead-lettered before `older_than`, of `queue` or
/// of every queue; returns how many.
pub(super) async fn purge(
    state: &AdminState,
    queue: Option<QueueName>,
    older_than: DateTime<Utc>,
) -> Result<u64, ApiError> {
    let query = queue.map_or_else(DeadQuery::all, DeadQuery::queue);
    let mut purged = 0;
    for queue in query.queues(&*state.broker).await? {
        purged += state.dlq.purge_dead(&queue, older_than).await?;
    }
    Ok(purged)
}

/// What an operator can do to one dead job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum JobAction {
    /// Move it back to ready.
    Retry,
    /// Delete it.
    Delete,
}

impl JobAction {
    /// The past tense, as in `{"retried": true}` and `?notice=retried`.
    pub(super) fn done(self) -> &'static str {
        match self {
            JobAction::Retry => "retried",
            JobAction::Delete => "deleted",
        }
    }
}

/// Parses a job's `{queue}/{id}`, retries or deletes it, and leaves a
/// tracing event saying so; 404 when it is not in the DLQ. `via` names the
/// caller (`api`, `dashboard`) in the event.
pub(super) async fn act_on_one(
    state: &AdminState,
    queue: &str,
    id: &str,
    action: JobAction,
    via: &'static str,
) -> Result<(QueueName, JobId), ApiError> {
    let (queue, id) = parse_job(queue, id)?;
    let acted = match action {
        JobAction::Retry => state.dlq.retry_dead(&queue, id).await?,
        JobAction::Delete => state.dlq.delete_dead(&queue, id).await?,
    };
    if !acted {
        return Err(not_dead(&queue, id));
    }
    match action {
        JobAction::Retry => {
            tracing::info!(target: "flagship_worker::admin", action = "retry", %queue, job.id = %id, via, "dead job moved back to ready");
        }
        JobAction::Delete => {
            tracing::info!(target: "flagship_worker::admin", action = "delete", %queue, job.id = %id, via, "dead job deleted");
        }
    }
    Ok((queue, id))
}

/// One dead job; 404 when it is not in the DLQ.
pub(super) async fn get_one(state: &AdminState, queue: &QueueName, id: JobId) -> Result<JobEnvelope, ApiError> {
    state.dlq.get_dead(queue, id).await?.ok_or_else(|| not_dead(queue, id))
}

fn not_dead(queue: &QueueName, id: JobId) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("job {id} is not in the dead-letter queue of `{queue}` (retried, deleted, or never there)"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_outside_the_range_are_refused() {
        assert_eq!(parse_limit(None).unwrap(), DEFAULT_PAGE);
        assert_eq!(parse_limit(Some("")).unwrap(), DEFAULT_PAGE);
        assert_eq!(parse_limit(Some("1000")).unwrap(), 1000);
        for bad in ["0", "1001", "-1", "ten", "99999999999999999999999"] {
            assert!(parse_limit(Some(bad)).is_err(), "{bad}");
        }
    }
}
