//! [`UsageAggregationHandler`]: rolls hourly usage into daily totals.

use std::collections::BTreeMap;

use chrono::{NaiveTime, TimeDelta};

use super::{handle_with_process, JobRun};
use crate::{
    flagship::{model::DailyUsage, FlagshipServices, PeriodKind, UsageAggregationJob},
    HandlerError,
};

/// Runs `usage-aggregation` jobs: closes any ended hourly periods first
/// (so the day is complete even if the hourly rollover has not run yet),
/// then sums the day's archived hourly periods into one [`DailyUsage`] per
/// (organization, metric): total, busiest hour, active hours. Entries are
/// replaced, never added to, so running it twice changes nothing.
#[derive(Debug, Clone)]
pub struct UsageAggregationHandler {
    services: FlagshipServices,
}

impl UsageAggregationHandler {
    /// A handler on `services`.
    pub fn new(services: FlagshipServices) -> Self {
        UsageAggregationHandler { services }
    }

    /// Aggregates the job's day (default: yesterday, UTC). Refuses
    /// (permanently) a day that has not ended.
    pub async fn process(&self, job: UsageAggregationJob, run: &JobRun) -> Result<(), HandlerError> {
        let day = job.day.unwrap_or_else(|| (run.now - TimeDelta::days(1)).date_naive());
        let start = day.and_time(NaiveTime::MIN).and_utc();
        let end = PeriodKind::Daily.end_of(start);
        if end > run.now {
            return Err(HandlerError::permanent(format!(
                "day {day} has not ended yet (now {}); aggregate it after midnight UTC",
                run.now
            )));
        }
        let services = &self.services;
        services.usage.close_periods(PeriodKind::Hourly, run.now).await?;
        let hours = services.archive.archived(PeriodKind::Hourly, start, end).await?;
        let mut days: BTreeMap<(String, String), DailyUsage> = BTreeMap::new();
        for hour in hours {
            let entry = days
                .entry((hour.key.org_id.clone(), hour.key.metric.clone()))
                .or_insert_with(|| DailyUsage {
                    org_id: hour.key.org_id.clone(),
                    metric: hour.key.metric.clone(),
                    day,
                    total: 0,
                    peak_hour_total: 0,
                    active_hours: 0,
                });
            entry.total = entry.total.saturating_add(hour.total);
            entry.peak_hour_total = entry.peak_hour_total.max(hour.total);
            entry.active_hours += u32::from(hour.total > 0);
        }
        for usage in days.values() {
            services.archive.put_daily(usage).await?;
        }
        let schedule = format!("{}flagship:usage-aggregation", crate::flagship::SCHEDULE_SEEN_PREFIX);
        services.health.record_seen(&schedule, run.now).await?;
        tracing::info!(%day, entries = days.len(), "daily usage aggregated");
        Ok(())
    }
}

handle_with_process!(UsageAggregationHandler, UsageAggregationJob);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flagship::{
        handlers::test_support::*,
        model::CounterKey,
        stores::{CounterIncrement, PeriodArchive, UsageStore},
    };

    #[tokio::test]
    async fn sums_hourly_periods_once_when_run_twice() {
        let f = Fixture::new();
        let increments = [
            ("api_calls", "2026-01-01T09:10:00Z", 30),
            ("api_calls", "2026-01-01T23:10:00Z", 50),
            ("api_calls", "2026-01-02T00:10:00Z", 7),
            ("storage_mb", "2026-01-01T09:10:00Z", 4),
        ]
        .map(|(metric, t, amount)| CounterIncrement {
            key: CounterKey::containing("acme", metric, PeriodKind::Hourly, at(t)),
            amount,
        });
        let week = std::time::Duration::from_secs(7 * 86_400);
        f.store
            .apply_batch("acme", "b-1", &increments, at("2026-01-02T00:10:00Z"), week)
            .await
            .unwrap();

        let handler = UsageAggregationHandler::new(f.services.clone());
        let run = f.run("2026-01-02T00:15:00Z");
        handler.process(UsageAggregationJob { day: None }, &run).await.unwrap();
        handler.process(UsageAggregationJob { day: None }, &run).await.unwrap();

        let day = at("2026-01-01T00:00:00Z").date_naive();
        let daily = f.store.daily("acme", day, day.succ_opt().unwrap()).await.unwrap();
        let summary: Vec<_> = daily
            .iter()
            .map(|d| (d.metric.as_str(), d.total, d.peak_hour_total, d.active_hours))
            .collect();
        assert_eq!(summary, [("api_calls", 80, 50, 2), ("storage_mb", 4, 4, 1)]);
    }

    #[tokio::test]
    async fn refuses_a_day_that_has_not_ended() {
        let f = Fixture::new();
        let handler = UsageAggregationHandler::new(f.services.clone());
        let today = Some(at("2026-01-02T00:00:00Z").date_naive());
        let err = handler
            .process(UsageAggregationJob { day: today }, &f.run("2026-01-02T10:00:00Z"))
            .await
            .unwrap_err();
        assert!(matches!(err, HandlerError::Permanent(_)));
        assert!(err.to_string().contains("has not ended"), "{err}");
    }
}
