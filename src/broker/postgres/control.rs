//! [`JobControl`] for [`PostgresBroker`]: live jobs read from the jobs
//! table (`live_list.sql`, `live_get.sql`), paused queues in a table
//! `reserve.sql` checks, cancel in one statement (`cancel.sql`), and the
//! worker registry in a table of its own.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{errors::map_err, micros_ceil, rows::LiveRow, PostgresBroker};
use crate::{
    broker::control::{
        check_job_page_limit, CancelOutcome, JobControl, JobCursor, JobPage, JobQuery, JobState, LiveJob, WorkerEntry,
        WorkerInfo, CANCEL_REASON, GONE_WORKER_RETENTION,
    },
    error::{Error, Result},
    job::{JobId, QueueName},
};

#[async_trait]
impl JobControl for PostgresBroker {
    async fn list_jobs(&self, query: &JobQuery, cursor: Option<&JobCursor>, limit: usize) -> Result<JobPage> {
        check_job_page_limit(limit)?;
        let after = cursor.map(JobCursor::position).transpose()?;
        let rows = sqlx::query(&self.sql.live_list)
            .bind(query.queue.as_str())
            .bind(query.state.as_str())
            .bind(query.kind.as_deref())
            .bind(query.since)
            .bind(query.until)
            .bind(after.map(|(at, _)| at))
            .bind(limit as i64 + 1)
            .bind(after.map(|(_, id)| id.as_uuid()))
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        let mut jobs = rows
            .iter()
            .map(|row| Ok(LiveRow::read(row, 0)?.live_job(&query.queue, query.state)))
            .collect::<Result<Vec<LiveJob>>>()?;
        let next = (jobs.len() > limit).then(|| JobCursor::after(jobs[limit - 1].order_key()));
        jobs.truncate(limit);
        Ok(JobPage { jobs, next })
    }

    async fn get_job(&self, queue: &QueueName, id: JobId) -> Result<Option<LiveJob>> {
        let row = sqlx::query(&self.sql.live_get)
            .bind(queue.as_str())
            .bind(id.as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let state: JobState = row.try_get::<String, _>(0).map_err(map_err)?.parse()?;
        Ok(Some(LiveRow::read(&row, 1)?.live_job(queue, state)))
    }

    async fn pause(&self, queue: &QueueName) -> Result<bool> {
        let paused = sqlx::query(&self.sql.pause)
            .bind(queue.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?
            .is_some();
        tracing::info!(%queue, changed = paused, "queue paused");
        Ok(paused)
    }

    async fn resume(&self, queue: &QueueName) -> Result<bool> {
        let row = sqlx::query(&self.sql.resume)
            .bind(queue.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)?;
        let resumed: bool = row.try_get(0).map_err(map_err)?;
        tracing::info!(%queue, changed = resumed, "queue resumed");
        Ok(resumed)
    }

    async fn cancel(&self, queue: &QueueName, id: JobId) -> Result<CancelOutcome> {
        let outcome: Option<String> = sqlx::query_scalar(&self.sql.cancel)
            .bind(queue.as_str())
            .bind(id.as_uuid())
            .bind(CANCEL_REASON)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        let outcome = match outcome.as_deref() {
            Some("dead") => CancelOutcome::DeadLettered,
            Some("signalled") => CancelOutcome::Signalled,
            _ => CancelOutcome::NotFound,
        };
        tracing::info!(job.id = %id, %queue, ?outcome, "job cancelled by operator");
        Ok(outcome)
    }

    async fn register_worker(&self, info: &WorkerInfo, ttl: Duration) -> Result<()> {
        let json = serde_json::to_string(info).map_err(|e| Error::Backend(e.into()))?;
        sqlx::query(&self.sql.register_worker)
            .bind(&info.id)
            .bind(json)
            .bind(micros_ceil(ttl))
            .bind(micros_ceil(GONE_WORKER_RETENTION))
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn deregister_worker(&self, id: &str) -> Result<bool> {
        let removed = sqlx::query(&self.sql.deregister_worker)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(removed.is_some())
    }

    async fn workers(&self) -> Result<Vec<WorkerEntry>> {
        let rows = sqlx::query(&self.sql.workers)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        let mut entries = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: String = row.try_get(0).map_err(map_err)?;
            let info: String = row.try_get(1).map_err(map_err)?;
            let last_seen: DateTime<Utc> = row.try_get(2).map_err(map_err)?;
            let expires_at: DateTime<Utc> = row.try_get(3).map_err(map_err)?;
            let now: DateTime<Utc> = row.try_get(4).map_err(map_err)?;
            match serde_json::from_str::<WorkerInfo>(&info) {
                Ok(info) => entries.push(WorkerEntry::new(info, last_seen, expires_at, now)),
                Err(_) => tracing::warn!(worker.id = %id, "worker registry row is not in the broker's form; skipped"),
            }
        }
        Ok(entries)
    }
}
