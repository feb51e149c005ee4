//! [`DlqCleanupHandler`]: deletes old dead jobs.

use std::sync::Arc;

use chrono::TimeDelta;

use super::{handle_with_process, JobRun};
use crate::{
    flagship::{DlqCleanupJob, FLAGSHIP_QUEUES},
    DeadLetterQueue, HandlerError, QueueName,
};

/// Runs `dlq-cleanup` jobs: deletes the dead jobs of the FlagShip queues
/// dead-lettered more than `olderThanDays` days before the run. Running it
/// twice deletes nothing the second time.
#[derive(Debug, Clone)]
pub struct DlqCleanupHandler {
    /// The dead-letter queue to purge.
    dead_letters: Arc<dyn DeadLetterQueue>,
}

impl DlqCleanupHandler {
    /// A handler purging `dead_letters`.
    pub fn new(dead_letters: Arc<dyn DeadLetterQueue>) -> Self {
        DlqCleanupHandler { dead_letters }
    }

    /// Purges old dead jobs from every FlagShip queue.
    pub async fn process(&self, job: DlqCleanupJob, run: &JobRun) -> Result<(), HandlerError> {
        if job.older_than_days == 0 {
            return Err(HandlerError::permanent("olderThanDays must be at least 1"));
        }
        let cutoff = run.now - TimeDelta::days(i64::from(job.older_than_days));
        let mut purged = 0;
        for queue in FLAGSHIP_QUEUES {
            let name = QueueName::new(queue.name)?;
            let n = self.dead_letters.purge_dead(&name, cutoff).await?;
            if n > 0 {
                tracing::info!(queue = queue.name, purged = n, %cutoff, "old dead jobs deleted");
            }
            purged += n;
        }
        tracing::info!(
            purged,
            older_than_days = job.older_than_days,
            "dead-letter cleanup done"
        );
        Ok(())
    }
}

handle_with_process!(DlqCleanupHandler, DlqCleanupJob);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        flagship::{handlers::test_support::*, HealthCheckJob, MAINTENANCE_QUEUE},
        Broker, Clock, DeadFilter, ReserveRequest, TokioClock,
    };

    async fn kill_one(f: &Fixture) {
        f.client.enqueue(&HealthCheckJob {}).await.unwrap();
        let queue = QueueName::new(MAINTENANCE_QUEUE).unwrap();
        // The client's and the broker's clocks were made microseconds
        // apart: let the paused clock reach the job's run time.
        let request = ReserveRequest::new(1, Duration::from_secs(60), Duration::from_secs(1));
        let reserved = f.broker.reserve(&queue, request).await.unwrap();
        f.broker.dead_letter(&reserved[0], None, "test").await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn purges_entries_older_than_the_cutoff_once_when_run_twice() {
        let f = Fixture::new();
        let clock = TokioClock::new();
        kill_one(&f).await;
        tokio::time::advance(Duration::from_secs(31 * 86_400)).await;
        kill_one(&f).await;
        let handler = DlqCleanupHandler::new(f.broker.clone());
        let run = JobRun::new(f.client.clone(), clock.now());
        handler.process(DlqCleanupJob::default(), &run).await.unwrap();
        handler.process(DlqCleanupJob::default(), &run).await.unwrap();
        let filter = DeadFilter::queue(QueueName::new(MAINTENANCE_QUEUE).unwrap());
        assert_eq!(f.broker.count_dead(&filter).await.unwrap(), 1, "the recent entry stays");
    }

    #[tokio::test]
    async fn refuses_a_zero_day_retention() {
        let f = Fixture::new();
        let handler = DlqCleanupHandler::new(f.broker.clone());
        let err = handler
            .process(DlqCleanupJob { older_than_days: 0 }, &f.run("2026-01-01T00:00:00Z"))
            .await
            .unwrap_err();
        assert!(matches!(err, HandlerError::Permanent(_)));
    }
}
