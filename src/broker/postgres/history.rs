//! The PostgreSQL broker's queue history: the `history` table (migration
//! 2), counted into by the acknowledgement statements themselves, sampled
//! and read here.

use async_trait::async_trait;
use sqlx::Row;

use super::{errors::map_err, PostgresBroker};
use crate::{
    broker::history::{HistoryBucket, HistoryLayout, HistorySample, LatencyCounts, QueueHistory, Resolution, Series},
    error::Result,
    job::QueueName,
};

/// The `resolution` column's value.
fn resolution_column(resolution: Resolution) -> i16 {
    match resolution {
        Resolution::Minute => 0,
        Resolution::Hour => 1,
    }
}

/// Latency counts as stored (`bigint[]`): missing ranges count 0.
fn latency(stored: Option<Vec<i64>>) -> LatencyCounts {
    let stored = stored.unwrap_or_default();
    LatencyCounts(std::array::from_fn(|i| {
        stored.get(i).copied().unwrap_or(0).max(0) as u64
    }))
}

#[async_trait]
impl QueueHistory for PostgresBroker {
    fn history_layout(&self) -> HistoryLayout {
        self.history
    }

    async fn record_sample(&self, queue: &QueueName, sample: &HistorySample) -> Result<()> {
        let latency: Vec<i64> = sample
            .latency
            .0
            .iter()
            .map(|n| (*n).min(i64::MAX as u64) as i64)
            .collect();
        sqlx::query(&self.sql.history_sample)
            .bind(queue.as_str())
            .bind(sample.ready.min(i64::MAX as u64) as i64)
            .bind(sample.oldest_ready_age_ms.map(|a| a.min(i64::MAX as u64) as i64))
            .bind(latency)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn history(&self, queue: &QueueName, resolution: Resolution, count: u32) -> Result<Series> {
        let count = count.clamp(1, self.history.kept(resolution));
        let rows = sqlx::query(&self.sql.history_read)
            .bind(queue.as_str())
            .bind(resolution_column(resolution))
            .bind(self.history.width_ms(resolution) as i64)
            .bind(i64::from(count))
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        let now_ms: i64 = match rows.first() {
            Some(row) => row.try_get(0).map_err(map_err)?,
            None => 0,
        };
        let mut series = Series::empty(
            &self.history,
            resolution,
            count,
            chrono::DateTime::from_timestamp_millis(now_ms).unwrap_or_default(),
        );
        for row in rows {
            let Some(number) = row.try_get::<Option<i64>, _>(1).map_err(map_err)? else {
                continue;
            };
            let count = |at: usize| -> Result<u64> { Ok(row.try_get::<i64, _>(at).map_err(map_err)?.max(0) as u64) };
            let sampled = |at: usize| -> Result<Option<u64>> {
                Ok(row
                    .try_get::<Option<i64>, _>(at)
                    .map_err(map_err)?
                    .map(|n| n.max(0) as u64))
            };
            let bucket = HistoryBucket {
                completed: count(2)?,
                retried: count(3)?,
                dead_lettered: count(4)?,
                ready: sampled(5)?,
                oldest_ready_age_ms: sampled(6)?,
                latency: latency(row.try_get(7).map_err(map_err)?),
                ..HistoryBucket::default()
            };
            series.put(number, bucket);
        }
        Ok(series)
    }
}
