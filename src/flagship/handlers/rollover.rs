//! [`PeriodRolloverHandler`]: closes ended usage periods.

use super::{handle_with_process, JobRun};
use crate::{
    flagship::{FlagshipServices, PeriodRolloverJob},
    HandlerError,
};

/// Runs `period-rollover` jobs: every counter of the job's period length
/// whose period has ended is archived, deleted (so its successor starts at
/// zero) and its threshold markers reset, in one atomic store call
/// ([`UsageStore::close_periods`](crate::flagship::stores::UsageStore::close_periods)).
/// Running it twice changes nothing the second time.
#[derive(Debug, Clone)]
pub struct PeriodRolloverHandler {
    services: FlagshipServices,
}

impl PeriodRolloverHandler {
    /// A handler on `services`.
    pub fn new(services: FlagshipServices) -> Self {
        PeriodRolloverHandler { services }
    }

    /// Closes the periods that ended at or before the run's time.
    pub async fn process(&self, job: PeriodRolloverJob, run: &JobRun) -> Result<(), HandlerError> {
        let closed = self.services.usage.close_periods(job.period, run.now).await?;
        let total: u64 = closed.iter().map(|p| p.total).sum();
        tracing::info!(period = %job.period, counters = closed.len(), total, "usage periods rolled over");
        let schedule = format!(
            "{}flagship:rollover-{}",
            crate::flagship::SCHEDULE_SEEN_PREFIX,
            job.period
        );
        self.services.health.record_seen(&schedule, run.now).await?;
        Ok(())
    }
}

handle_with_process!(PeriodRolloverHandler, PeriodRolloverJob);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flagship::{
        handlers::test_support::*,
        model::{CounterKey, PeriodKind, Threshold},
        stores::{CounterIncrement, PeriodArchive, UsageStore},
    };

    #[tokio::test]
    async fn archives_resets_and_unmarks_once_when_run_twice() {
        let f = Fixture::new();
        let ten = CounterKey::containing("acme", "api_calls", PeriodKind::Hourly, at("2026-01-01T10:10:00Z"));
        let eleven = CounterKey::containing("acme", "api_calls", PeriodKind::Hourly, at("2026-01-01T11:10:00Z"));
        let day = CounterKey::containing("acme", "api_calls", PeriodKind::Daily, at("2026-01-01T10:10:00Z"));
        let increments = [(ten.clone(), 90), (eleven.clone(), 5), (day.clone(), 95)]
            .map(|(key, amount)| CounterIncrement { key, amount });
        let week = std::time::Duration::from_secs(7 * 86_400);
        f.store
            .apply_batch("acme", "b-1", &increments, at("2026-01-01T11:10:00Z"), week)
            .await
            .unwrap();
        f.store.mark_threshold(&ten, Threshold::Warning).await.unwrap();

        let handler = PeriodRolloverHandler::new(f.services.clone());
        let run = f.run("2026-01-01T11:10:00Z");
        let job = PeriodRolloverJob {
            period: PeriodKind::Hourly,
        };
        handler.process(job.clone(), &run).await.unwrap();
        handler.process(job, &run).await.unwrap();

        assert_eq!(f.store.counter(&ten).await.unwrap(), 0, "the closed hour starts over");
        assert!(!f.store.threshold_marked(&ten, Threshold::Warning).await.unwrap());
        assert_eq!(f.store.counter(&eleven).await.unwrap(), 5, "the open hour is untouched");
        assert_eq!(
            f.store.counter(&day).await.unwrap(),
            95,
            "daily periods roll over on their own schedule"
        );
        let archived = f
            .store
            .archived(
                PeriodKind::Hourly,
                at("2026-01-01T00:00:00Z"),
                at("2026-01-02T00:00:00Z"),
            )
            .await
            .unwrap();
        assert_eq!(archived.len(), 1);
        assert_eq!((archived[0].key.clone(), archived[0].total), (ten, 90));
    }
}
