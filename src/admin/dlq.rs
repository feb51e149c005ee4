//! Parsing the DLQ inputs of the JSON API and the dashboard, and the
//! operations they share.

use axum::http::StatusCode;
use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use super::{api::ApiError, AdminState};
use crate::{
    broker::MAX_DEAD_PAGE,
    broker::{DeadQuery, DeadSummary},
    envelope::JobEnvelope,
    job::{JobId, QueueName},
    schema::MAX_KIND_LEN,
};

/// The page size when none is asked for.
pub(super) const DEFAULT_PAGE: usize = 50;

/// The longest "older than" the dashboard's purge form takes, in days (ten
/// years); more is a typo.
pub(super) const MAX_PURGE_DAYS: u32 = 3650;

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

/// Parses the purge form's number of days: a whole number from 1 to
/// [`MAX_PURGE_DAYS`].
pub(super) fn parse_days(value: Option<&str>) -> Result<u32, ApiError> {
    let value = value.unwrap_or_default().trim();
    match value.parse::<u32>() {
        Ok(days) if (1..=MAX_PURGE_DAYS).contains(&days) => Ok(days),
        _ => Err(ApiError::bad_request(format!(
            "`days` must be a whole number of days from 1 to {MAX_PURGE_DAYS}, got `{}`",
            value.escape_debug()
        ))),
    }
}

/// `days` days before `now`: what dead-lettered before it is purged.
pub(super) fn days_before(now: DateTime<Utc>, days: u32) -> Result<DateTime<Utc>, ApiError> {
    now.checked_sub_signed(TimeDelta::days(days.into())).ok_or_else(|| {
        ApiError::bad_request(format!(
            "{days} days before {now} is not a time this server can represent"
        ))
    })
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

/// Retries every dead job `query` matches, and leaves a tracing event
/// saying how many; returns how many. `via` names the caller (`api`,
/// `dashboard`) in the event.
pub(super) async fn retry_matching(state: &AdminState, query: &DeadQuery, via: &'static str) -> Result<u64, ApiError> {
    let retried = query.retry_all(&*state.broker, &*state.dlq).await?;
    tracing::info!(
        target: "flagship_worker::admin",
        action = "retry_matching",
        queue = query.queue.as_ref().map_or("*", |q| q.as_str()),
        kind = query.kind.as_deref().unwrap_or("*"),
        since = ?query.since,
        until = ?query.until,
        retried,
        via,
        "dead jobs moved back to ready"
    );
    Ok(retried)
}

/// Deletes the dead jobs dead-lettered before `older_than`, of `queue` or
/// of every queue, and leaves a tracing event saying how many; returns how
/// many. `via` names the caller (`api`, `dashboard`) in the event.
pub(super) async fn purge(
    state: &AdminState,
    queue: Option<&QueueName>,
    older_than: DateTime<Utc>,
    via: &'static str,
) -> Result<u64, ApiError> {
    let query = queue.cloned().map_or_else(DeadQuery::all, DeadQuery::queue);
    let mut purged = 0;
    for queue in query.queues(&*state.broker).await? {
        purged += state.dlq.purge_dead(&queue, older_than).await?;
    }
    tracing::info!(
        target: "flagship_worker::admin",
        action = "purge",
        queue = query.queue.as_ref().map_or("*", |q| q.as_str()),
        %older_than,
        purged,
        via,
        "dead jobs purged"
    );
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

    #[test]
    fn purge_days_outside_the_range_are_refused() {
        assert_eq!(parse_days(Some("30")).unwrap(), 30);
        assert_eq!(parse_days(Some(" 1 ")).unwrap(), 1);
        assert_eq!(parse_days(Some("3650")).unwrap(), MAX_PURGE_DAYS);
        for bad in [
            None,
            Some(""),
            Some("0"),
            Some("-5"),
            Some("3651"),
            Some("1.5"),
            Some("30d"),
            Some("1e9"),
        ] {
            assert!(parse_days(bad).is_err(), "{bad:?}");
        }
        let now: DateTime<Utc> = "2025-03-01T00:00:00Z".parse().unwrap();
        assert_eq!(
            days_before(now, 30).unwrap(),
            "2025-01-30T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert!(days_before(DateTime::<Utc>::MIN_UTC, 1).is_err());
    }
}
