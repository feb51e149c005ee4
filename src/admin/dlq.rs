//! DLQ operations across queues, and the parsing of their inputs, shared by
//! the JSON API and the dashboard.

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{api::ApiError, AdminState};
use crate::{
    broker::{DeadCursor, DeadFilter, MAX_DEAD_PAGE},
    envelope::JobEnvelope,
    job::{JobId, QueueName},
    schema::MAX_KIND_LEN,
};

/// The page size when none is asked for.
pub(super) const DEFAULT_PAGE: usize = 50;

/// Separates the queue from the broker's cursor in a listing cursor; queue
/// names cannot contain it.
const CURSOR_SEPARATOR: char = '~';

/// Which dead jobs an operation applies to: one queue or all of them.
#[derive(Debug, Clone, Default)]
pub(super) struct DeadQuery {
    pub(super) queue: Option<QueueName>,
    pub(super) kind: Option<String>,
    pub(super) since: Option<DateTime<Utc>>,
    pub(super) until: Option<DateTime<Utc>>,
}

/// An empty form field means "not given".
fn given(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

impl DeadQuery {
    /// Parses the filter fields; empty ones count as absent.
    pub(super) fn parse(
        queue: Option<&str>,
        kind: Option<&str>,
        since: Option<&str>,
        until: Option<&str>,
    ) -> Result<Self, ApiError> {
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

    fn filter(&self, queue: QueueName) -> DeadFilter {
        let filter = DeadFilter::queue(queue).between(self.since, self.until);
        match &self.kind {
            Some(kind) => filter.kind(kind.clone()),
            None => filter,
        }
    }

    /// The queues this query covers: the one asked for, or every known one.
    async fn queues(&self, state: &AdminState) -> Result<Vec<QueueName>, ApiError> {
        match &self.queue {
            Some(queue) => Ok(vec![queue.clone()]),
            None => {
                let mut queues = state.broker.queues().await?;
                queues.sort();
                Ok(queues)
            }
        }
    }
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

/// A dead job as listed: enough to decide what to do with it.
#[derive(Debug, Serialize)]
pub(super) struct DeadSummary {
    pub(super) id: JobId,
    pub(super) queue: QueueName,
    pub(super) kind: String,
    /// Attempts recorded in its history.
    pub(super) attempts: usize,
    /// The last attempt's error, or the dead-letter reason when it never ran.
    pub(super) last_error: Option<String>,
    pub(super) reason: Option<String>,
    pub(super) enqueued_at: DateTime<Utc>,
    pub(super) dead_lettered_at: Option<DateTime<Utc>>,
}

impl From<JobEnvelope> for DeadSummary {
    fn from(job: JobEnvelope) -> Self {
        let last_error = job
            .attempts
            .iter()
            .rev()
            .find_map(|a| a.error.clone())
            .or_else(|| job.dead_letter_reason.clone());
        DeadSummary {
            id: job.id,
            queue: job.queue,
            kind: job.kind,
            attempts: job.attempts.len(),
            last_error,
            reason: job.dead_letter_reason,
            enqueued_at: job.enqueued_at,
            dead_lettered_at: job.dead_lettered_at,
        }
    }
}

/// One page of a listing across queues.
#[derive(Debug, Serialize)]
pub(super) struct Page {
    pub(super) jobs: Vec<DeadSummary>,
    /// Pass back as `cursor` for the next page; `None` at the end.
    pub(super) next_cursor: Option<String>,
}

/// Splits a listing cursor into its queue and the broker's cursor (absent
/// when the page starts at the queue's beginning).
fn decode_cursor(cursor: &str) -> Result<(QueueName, Option<DeadCursor>), ApiError> {
    let bad = || ApiError::bad_request(format!("`{}` is not a cursor from this API", cursor.escape_debug()));
    let (queue, inner) = cursor.split_once(CURSOR_SEPARATOR).ok_or_else(bad)?;
    let queue = QueueName::new(queue).map_err(|_| bad())?;
    Ok((queue, (!inner.is_empty()).then(|| DeadCursor(inner.to_owned()))))
}

fn encode_cursor(queue: &QueueName, inner: Option<&DeadCursor>) -> String {
    format!("{queue}{CURSOR_SEPARATOR}{}", inner.map_or("", |c| c.0.as_str()))
}

/// Lists dead jobs queue by queue (queues in name order, each oldest
/// dead-lettered first), `limit` at a time.
pub(super) async fn list(
    state: &AdminState,
    query: &DeadQuery,
    cursor: Option<&str>,
    limit: usize,
) -> Result<Page, ApiError> {
    let queues = query.queues(state).await?;
    let (mut index, mut inner) = match given(cursor) {
        None => (0, None),
        Some(cursor) => {
            let (queue, inner) = decode_cursor(cursor)?;
            if query.queue.as_ref().is_some_and(|q| *q != queue) {
                return Err(ApiError::bad_request(format!(
                    "the cursor belongs to queue `{queue}`, not to the queue asked for"
                )));
            }
            // Queues are listed in name order; resume at this one, or at the
            // next one if it has gone.
            let index = queues.partition_point(|q| *q < queue);
            let inner = inner.filter(|_| queues.get(index) == Some(&queue));
            (index, inner)
        }
    };
    let mut jobs = Vec::new();
    while let Some(queue) = queues.get(index) {
        let page = state
            .dlq
            .list_dead(&query.filter(queue.clone()), inner.as_ref(), limit - jobs.len())
            .await?;
        jobs.extend(page.jobs.into_iter().map(DeadSummary::from));
        if let Some(next) = page.next {
            return Ok(Page {
                jobs,
                next_cursor: Some(encode_cursor(queue, Some(&next))),
            });
        }
        index += 1;
        inner = None;
        if jobs.len() == limit {
            break;
        }
    }
    // The page is full at the end of a queue: continue at the next queue
    // that has matching jobs, so the last page is never empty.
    let mut next_cursor = None;
    for queue in queues.iter().skip(index) {
        if state.dlq.count_dead(&query.filter(queue.clone())).await? > 0 {
            next_cursor = Some(encode_cursor(queue, None));
            break;
        }
    }
    Ok(Page { jobs, next_cursor })
}

/// Retries every dead job matching `query`; returns how many.
pub(super) async fn retry_matching(state: &AdminState, query: &DeadQuery) -> Result<u64, ApiError> {
    let mut retried = 0;
    for queue in query.queues(state).await? {
        retried += state.dlq.retry_dead_matching(&query.filter(queue)).await?;
    }
    Ok(retried)
}

/// Deletes the dead jobs dead-lettered before `older_than`, of `queue` or
/// of every queue; returns how many.
pub(super) async fn purge(
    state: &AdminState,
    queue: Option<QueueName>,
    older_than: DateTime<Utc>,
) -> Result<u64, ApiError> {
    let query = DeadQuery {
        queue,
        ..DeadQuery::default()
    };
    let mut purged = 0;
    for queue in query.queues(state).await? {
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
    fn cursors_round_trip_and_garbage_is_refused() {
        let q = QueueName::new("emails").unwrap();
        let inner = DeadCursor("123:abc~x".into());
        let (queue, back) = decode_cursor(&encode_cursor(&q, Some(&inner))).unwrap();
        assert_eq!((queue, back), (q.clone(), Some(inner)));
        assert_eq!(decode_cursor(&encode_cursor(&q, None)).unwrap(), (q, None));
        for bad in ["", "no-separator", "bad queue~x", "~x"] {
            assert_eq!(decode_cursor(bad).unwrap_err().status, StatusCode::BAD_REQUEST, "{bad}");
        }
    }

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
