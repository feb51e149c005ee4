//! The dead-letter queue of the [`PostgresBroker`]: dead jobs are rows in
//! state 2, listed through the `jobs_dead` index by dead-lettered time and
//! id. Retrying, deleting and purging are one statement each (per batch of
//! [`MAX_BATCH`] for the bulk ones).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use uuid::Uuid;

use super::{errors::map_err, rows::DeadRow, PostgresBroker, MAX_BATCH};
use crate::{
    broker::{check_page_limit, DeadCursor, DeadFilter, DeadLetterQueue, DeadPage},
    envelope::JobEnvelope,
    error::{Error, Result},
    job::{JobId, QueueName},
};

/// A dead job's position in a listing: its dead-lettered time and id.
fn encode_cursor(at: DateTime<Utc>, id: Uuid) -> DeadCursor {
    DeadCursor::new(format!("{}/{id}", at.timestamp_micros()))
}

fn decode_cursor(cursor: &DeadCursor) -> Result<(DateTime<Utc>, Uuid)> {
    let bad = || Error::InvalidConfig(format!("`{}` is not a DLQ cursor from this broker", cursor.as_str()));
    let (micros, id) = cursor.as_str().split_once('/').ok_or_else(bad)?;
    let at = micros
        .parse::<i64>()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(bad)?;
    let id = id.parse::<JobId>().map_err(|_| bad())?;
    Ok((at, id.as_uuid()))
}

impl PostgresBroker {
    /// Dead job `id` of `queue`, as stored.
    async fn dead_row(&self, queue: &QueueName, id: JobId) -> Result<Option<DeadRow>> {
        let row = sqlx::query(&self.sql.dead_get)
            .bind(queue.as_str())
            .bind(id.as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.as_ref().map(DeadRow::read).transpose()
    }

    /// Moves up to `limit` dead jobs back to pending: `id` alone, or those
    /// matching `filter`; returns how many moved.
    async fn retry_rows(&self, filter: &DeadFilter, id: Option<Uuid>, limit: usize) -> Result<u64> {
        let moved = sqlx::query(&self.sql.dead_retry)
            .bind(filter.queue.as_str())
            .bind(filter.kind.as_deref())
            .bind(filter.since)
            .bind(filter.until)
            .bind(limit as i64)
            .bind(id)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(moved.len() as u64)
    }

    /// Deletes up to `limit` dead jobs of `queue`: `id` alone, or those
    /// dead-lettered before `older_than`; returns how many.
    async fn delete_rows(
        &self,
        queue: &QueueName,
        id: Option<Uuid>,
        older_than: Option<DateTime<Utc>>,
        limit: usize,
    ) -> Result<u64> {
        let deleted: i64 = sqlx::query_scalar(&self.sql.dead_delete)
            .bind(queue.as_str())
            .bind(id)
            .bind(older_than)
            .bind(limit as i64)
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(deleted.max(0) as u64)
    }
}

#[async_trait]
impl DeadLetterQueue for PostgresBroker {
    async fn list_dead(&self, filter: &DeadFilter, cursor: Option<&DeadCursor>, limit: usize) -> Result<DeadPage> {
        check_page_limit(limit)?;
        let after = cursor.map(decode_cursor).transpose()?;
        let rows = sqlx::query(&self.sql.dead_list)
            .bind(filter.queue.as_str())
            .bind(filter.kind.as_deref())
            .bind(filter.since)
            .bind(filter.until)
            .bind(after.map(|(at, _)| at))
            .bind(after.map(|(_, id)| id))
            .bind(limit as i64 + 1)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        let mut dead = rows.iter().map(DeadRow::read).collect::<Result<Vec<_>>>()?;
        let next = (dead.len() > limit).then(|| {
            dead.truncate(limit);
            let last = &dead[limit - 1];
            encode_cursor(last.dead_at, last.id)
        });
        let jobs = dead.into_iter().map(|row| row.envelope(&filter.queue)).collect();
        Ok(DeadPage { jobs, next })
    }

    async fn get_dead(&self, queue: &QueueName, id: JobId) -> Result<Option<JobEnvelope>> {
        Ok(self.dead_row(queue, id).await?.map(|row| row.envelope(queue)))
    }

    async fn retry_dead(&self, queue: &QueueName, id: JobId) -> Result<bool> {
        // A row that cannot run as a job would only die again: say so.
        if let Some(reason) = self.dead_row(queue, id).await?.and_then(|row| row.undecodable(queue)) {
            return Err(Error::NotRetryable { id, reason });
        }
        let retried = self
            .retry_rows(&DeadFilter::queue(queue.clone()), Some(id.as_uuid()), 1)
            .await?
            == 1;
        if retried {
            tracing::info!(job.id = %id, %queue, "dead job retried");
        }
        Ok(retried)
    }

    async fn retry_dead_matching(&self, filter: &DeadFilter) -> Result<u64> {
        let mut retried = 0;
        // Until a batch finds nothing: one may come back short when rows it
        // waited for were retried by someone else meanwhile.
        loop {
            let moved = self.retry_rows(filter, None, MAX_BATCH).await?;
            if moved == 0 {
                break;
            }
            retried += moved;
        }
        tracing::info!(queue = %filter.queue, count = retried, "dead jobs retried");
        Ok(retried)
    }

    async fn delete_dead(&self, queue: &QueueName, id: JobId) -> Result<bool> {
        Ok(self.delete_rows(queue, Some(id.as_uuid()), None, 1).await? == 1)
    }

    async fn purge_dead(&self, queue: &QueueName, older_than: DateTime<Utc>) -> Result<u64> {
        let mut purged = 0;
        loop {
            let deleted = self.delete_rows(queue, None, Some(older_than), MAX_BATCH).await?;
            if deleted == 0 {
                break;
            }
            purged += deleted;
        }
        tracing::info!(%queue, count = purged, "dead jobs purged");
        Ok(purged)
    }

    async fn count_dead(&self, filter: &DeadFilter) -> Result<u64> {
        let row = sqlx::query(&self.sql.dead_count)
            .bind(filter.queue.as_str())
            .bind(filter.kind.as_deref())
            .bind(filter.since)
            .bind(filter.until)
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)?;
        let count: i64 = row.try_get(0).map_err(map_err)?;
        Ok(count.max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let at = DateTime::from_timestamp_micros(1_732_800_000_123_456).unwrap();
        let id = Uuid::now_v7();
        assert_eq!(decode_cursor(&encode_cursor(at, id)).unwrap(), (at, id));
        for bad in ["", "x/y", "12/not-a-uuid", &format!("x/{id}")] {
            assert!(decode_cursor(&DeadCursor::new(bad)).is_err(), "{bad}");
        }
    }
}
