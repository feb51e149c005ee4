//! Usage counters, batches, threshold markers and the period archive of
//! [`PostgresStore`].

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use sqlx::{Connection, Row};

use super::{db_error, period_kind, sql, to_i64, to_u64, PostgresStore};
use crate::{
    flagship::{
        model::{ArchivedPeriod, CounterKey, DailyUsage, PeriodKind, Threshold},
        stores::{BatchOutcome, CounterIncrement, PeriodArchive, UsageStore},
    },
    Result,
};

/// A counter key and a number from a row of (org_id, metric, period,
/// period_start, <number>).
fn counter_row(row: &sqlx::postgres::PgRow, number: &str) -> Result<(CounterKey, u64)> {
    let key = CounterKey {
        org_id: row.try_get("org_id").map_err(db_error)?,
        metric: row.try_get("metric").map_err(db_error)?,
        period: period_kind(row.try_get("period").map_err(db_error)?)?,
        period_start: row.try_get("period_start").map_err(db_error)?,
    };
    Ok((key, to_u64(row.try_get(number).map_err(db_error)?)?))
}

#[async_trait]
impl UsageStore for PostgresStore {
    async fn apply_batch(
        &self,
        org_id: &str,
        batch_id: &str,
        increments: &[CounterIncrement],
        now: DateTime<Utc>,
        remember_for: Duration,
    ) -> Result<BatchOutcome> {
        let forget_at = now + TimeDelta::from_std(remember_for).unwrap_or(TimeDelta::MAX / 2);
        let mut metrics = Vec::with_capacity(increments.len());
        let mut periods = Vec::with_capacity(increments.len());
        let mut starts = Vec::with_capacity(increments.len());
        let mut ends = Vec::with_capacity(increments.len());
        let mut amounts = Vec::with_capacity(increments.len());
        for inc in increments {
            metrics.push(inc.key.metric.clone());
            periods.push(inc.key.period.as_str().to_owned());
            starts.push(inc.key.period_start);
            ends.push(inc.key.period_end());
            amounts.push(to_i64(inc.amount)?);
        }
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        let mut tx = conn.begin().await.map_err(db_error)?;
        sqlx::query(&self.sql(sql::BATCH_FORGET))
            .bind(org_id)
            .bind(batch_id)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        let applied = sqlx::query(&self.sql(sql::BATCH_RECORD))
            .bind(org_id)
            .bind(batch_id)
            .bind(forget_at)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?
            .is_some();
        if applied {
            sqlx::query(&self.sql(sql::COUNTERS_ADD))
                .bind(org_id)
                .bind(&metrics)
                .bind(&periods)
                .bind(&starts)
                .bind(&ends)
                .bind(&amounts)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
        }
        let rows = sqlx::query(&self.sql(sql::COUNTERS_READ))
            .bind(org_id)
            .bind(&metrics)
            .bind(&periods)
            .bind(&starts)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        let mut counters = Vec::with_capacity(increments.len());
        for (inc, row) in increments.iter().zip(&rows) {
            let value: Option<i64> = row.try_get("value").map_err(db_error)?;
            counters.push((inc.key.clone(), to_u64(value.unwrap_or(0))?));
        }
        Ok(BatchOutcome { applied, counters })
    }

    async fn counter(&self, key: &CounterKey) -> Result<u64> {
        let value: Option<i64> = sqlx::query_scalar(&self.sql(
            "SELECT value FROM {schema}.usage_counters \
             WHERE org_id = $1 AND metric = $2 AND period = $3 AND period_start = $4",
        ))
        .bind(&key.org_id)
        .bind(&key.metric)
        .bind(key.period.as_str())
        .bind(key.period_start)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        to_u64(value.unwrap_or(0))
    }

    async fn counters(&self, org_id: &str) -> Result<Vec<(CounterKey, u64)>> {
        let rows =
            sqlx::query(&self.sql(
                "SELECT org_id, metric, period, period_start, value FROM {schema}.usage_counters WHERE org_id = $1",
            ))
            .bind(org_id)
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        let mut counters = rows
            .iter()
            .map(|r| counter_row(r, "value"))
            .collect::<Result<Vec<_>>>()?;
        counters.sort();
        Ok(counters)
    }

    async fn mark_threshold(&self, key: &CounterKey, threshold: Threshold) -> Result<bool> {
        let marked = sqlx::query(&self.sql(
            "INSERT INTO {schema}.threshold_markers (org_id, metric, period, period_start, threshold) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING 1",
        ))
        .bind(&key.org_id)
        .bind(&key.metric)
        .bind(key.period.as_str())
        .bind(key.period_start)
        .bind(threshold.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(marked.is_some())
    }

    async fn threshold_marked(&self, key: &CounterKey, threshold: Threshold) -> Result<bool> {
        sqlx::query_scalar(&self.sql(
            "SELECT EXISTS (SELECT 1 FROM {schema}.threshold_markers \
             WHERE org_id = $1 AND metric = $2 AND period = $3 AND period_start = $4 AND threshold = $5)",
        ))
        .bind(&key.org_id)
        .bind(&key.metric)
        .bind(key.period.as_str())
        .bind(key.period_start)
        .bind(threshold.as_str())
        .fetch_one(&self.pool)
        .await
        .map_err(db_error)
    }

    async fn close_periods(&self, period: PeriodKind, now: DateTime<Utc>) -> Result<Vec<ArchivedPeriod>> {
        let rows = sqlx::query(&self.sql(sql::CLOSE_PERIODS))
            .bind(period.as_str())
            .bind(now)
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        // Batch ids past their retention go with the periods.
        sqlx::query(&self.sql("DELETE FROM {schema}.usage_batches WHERE forget_at <= $1"))
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        let mut moved = rows
            .iter()
            .map(|r| counter_row(r, "value").map(|(key, total)| ArchivedPeriod { key, total }))
            .collect::<Result<Vec<_>>>()?;
        moved.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(moved)
    }
}

#[async_trait]
impl PeriodArchive for PostgresStore {
    async fn archived(
        &self,
        period: PeriodKind,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<ArchivedPeriod>> {
        let rows = sqlx::query(&self.sql(
            "SELECT org_id, metric, period, period_start, total FROM {schema}.usage_archive \
             WHERE period = $1 AND period_start >= $2 AND period_start < $3",
        ))
        .bind(period.as_str())
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let mut archived = rows
            .iter()
            .map(|r| counter_row(r, "total").map(|(key, total)| ArchivedPeriod { key, total }))
            .collect::<Result<Vec<_>>>()?;
        archived.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(archived)
    }

    async fn put_daily(&self, usage: &DailyUsage) -> Result<()> {
        sqlx::query(&self.sql(
            "INSERT INTO {schema}.daily_usage (org_id, day, metric, total, peak_hour_total, active_hours) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (org_id, day, metric) DO UPDATE SET total = excluded.total, \
             peak_hour_total = excluded.peak_hour_total, active_hours = excluded.active_hours",
        ))
        .bind(&usage.org_id)
        .bind(usage.day)
        .bind(&usage.metric)
        .bind(to_i64(usage.total)?)
        .bind(to_i64(usage.peak_hour_total)?)
        .bind(i32::try_from(usage.active_hours).unwrap_or(i32::MAX))
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn daily(&self, org_id: &str, from: NaiveDate, to: NaiveDate) -> Result<Vec<DailyUsage>> {
        let rows = sqlx::query(&self.sql(
            "SELECT org_id, day, metric, total, peak_hour_total, active_hours FROM {schema}.daily_usage \
             WHERE org_id = $1 AND day >= $2 AND day < $3 ORDER BY day, metric",
        ))
        .bind(org_id)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|r| {
                let active: i32 = r.try_get("active_hours").map_err(db_error)?;
                Ok(DailyUsage {
                    org_id: r.try_get("org_id").map_err(db_error)?,
                    metric: r.try_get("metric").map_err(db_error)?,
                    day: r.try_get("day").map_err(db_error)?,
                    total: to_u64(r.try_get("total").map_err(db_error)?)?,
                    peak_hour_total: to_u64(r.try_get("peak_hour_total").map_err(db_error)?)?,
                    active_hours: u32::try_from(active).unwrap_or(0),
                })
            })
            .collect()
    }
}
