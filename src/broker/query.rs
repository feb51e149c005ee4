//! Dead-letter operations across queues: what the admin API, the dashboard
//! and the command-line tool list, count and retry.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    broker::{Broker, DeadCursor, DeadFilter, DeadLetterQueue},
    envelope::JobEnvelope,
    error::{Error, Result},
    job::{JobId, QueueName},
};

/// Separates the queue from the broker's cursor in a listing cursor; queue
/// names cannot contain it.
const CURSOR_SEPARATOR: char = '~';

/// Which dead jobs an operation applies to: one queue or every queue the
/// broker knows, optionally one kind and a dead-lettered time range.
///
/// ```
/// use flagship_worker::{DeadQuery, QueueName};
///
/// let invoices = DeadQuery::all().kind("send-invoice");
/// let billing = DeadQuery::queue(QueueName::new("billing")?);
/// # let _ = (invoices, billing);
/// # Ok::<_, flagship_worker::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadQuery {
    /// Only this queue (`None`: every queue).
    pub queue: Option<QueueName>,
    /// Only jobs of this kind.
    pub kind: Option<String>,
    /// Only jobs dead-lettered at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only jobs dead-lettered before this time.
    pub until: Option<DateTime<Utc>>,
}

impl DeadQuery {
    /// Every dead job of every queue.
    pub fn all() -> Self {
        Self::default()
    }

    /// Every dead job of `queue`.
    pub fn queue(queue: QueueName) -> Self {
        DeadQuery {
            queue: Some(queue),
            ..Self::default()
        }
    }

    /// Only jobs of `kind`.
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = Some(kind.into());
        self
    }

    /// Only jobs dead-lettered in `[since, until)`.
    pub fn between(mut self, since: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>) -> Self {
        self.since = since;
        self.until = until;
        self
    }

    /// The broker filter for one queue.
    pub fn filter(&self, queue: QueueName) -> DeadFilter {
        let filter = DeadFilter::queue(queue).between(self.since, self.until);
        match &self.kind {
            Some(kind) => filter.kind(kind.clone()),
            None => filter,
        }
    }

    /// The queues this query covers: the one asked for, or every queue the
    /// broker knows, in name order.
    pub async fn queues(&self, broker: &dyn Broker) -> Result<Vec<QueueName>> {
        match &self.queue {
            Some(queue) => Ok(vec![queue.clone()]),
            None => {
                let mut queues = broker.queues().await?;
                queues.sort();
                Ok(queues)
            }
        }
    }

    /// One page of matching dead jobs, `limit` at most, after `cursor` (a
    /// [`DeadListing::next_cursor`] of the same query). Queues come in name
    /// order, each oldest dead-lettered first. A malformed cursor, or one
    /// from another queue than the query's, is [`Error::InvalidConfig`].
    pub async fn list(
        &self,
        broker: &dyn Broker,
        dlq: &dyn DeadLetterQueue,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<DeadListing> {
        super::check_page_limit(limit)?;
        let queues = self.queues(broker).await?;
        let (mut index, mut inner) = match cursor.filter(|c| !c.is_empty()) {
            None => (0, None),
            Some(cursor) => {
                let (queue, inner) = decode_cursor(cursor)?;
                if self.queue.as_ref().is_some_and(|q| *q != queue) {
                    return Err(Error::InvalidConfig(format!(
                        "the cursor belongs to queue `{queue}`, not to the queue asked for"
                    )));
                }
                // Resume at the cursor's queue, or at the next one if it has gone.
                let index = queues.partition_point(|q| *q < queue);
                let inner = inner.filter(|_| queues.get(index) == Some(&queue));
                (index, inner)
            }
        };
        let mut jobs = Vec::new();
        while let Some(queue) = queues.get(index) {
            let page = dlq
                .list_dead(&self.filter(queue.clone()), inner.as_ref(), limit - jobs.len())
                .await?;
            jobs.extend(page.jobs);
            if let Some(next) = page.next {
                return Ok(DeadListing {
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
            if dlq.count_dead(&self.filter(queue.clone())).await? > 0 {
                next_cursor = Some(encode_cursor(queue, None));
                break;
            }
        }
        Ok(DeadListing { jobs, next_cursor })
    }

    /// How many dead jobs match, over every queue covered.
    pub async fn count(&self, broker: &dyn Broker, dlq: &dyn DeadLetterQueue) -> Result<u64> {
        let mut total = 0;
        for queue in self.queues(broker).await? {
            total += dlq.count_dead(&self.filter(queue)).await?;
        }
        Ok(total)
    }

    /// Retries every matching dead job, queue by queue
    /// ([`DeadLetterQueue::retry_dead_matching`]); returns how many.
    pub async fn retry_all(&self, broker: &dyn Broker, dlq: &dyn DeadLetterQueue) -> Result<u64> {
        let mut retried = 0;
        for queue in self.queues(broker).await? {
            retried += dlq.retry_dead_matching(&self.filter(queue)).await?;
        }
        Ok(retried)
    }

    /// Finds dead job `id` in the queues covered.
    pub async fn find(&self, broker: &dyn Broker, dlq: &dyn DeadLetterQueue, id: JobId) -> Result<Option<JobEnvelope>> {
        for queue in self.queues(broker).await? {
            if let Some(job) = dlq.get_dead(&queue, id).await? {
                return Ok(Some(job));
            }
        }
        Ok(None)
    }
}

/// Splits a listing cursor into its queue and the broker's cursor (absent
/// when the page starts at the queue's beginning).
fn decode_cursor(cursor: &str) -> Result<(QueueName, Option<DeadCursor>)> {
    let bad = || Error::InvalidConfig(format!("`{}` is not a DLQ listing cursor", cursor.escape_debug()));
    let (queue, inner) = cursor.split_once(CURSOR_SEPARATOR).ok_or_else(bad)?;
    let queue = QueueName::new(queue).map_err(|_| bad())?;
    Ok((queue, (!inner.is_empty()).then(|| DeadCursor::new(inner))))
}

fn encode_cursor(queue: &QueueName, inner: Option<&DeadCursor>) -> String {
    format!("{queue}{CURSOR_SEPARATOR}{}", inner.map_or("", |c| c.as_str()))
}

/// One page of a listing across queues.
#[derive(Debug, Clone)]
pub struct DeadListing {
    /// The dead jobs.
    pub jobs: Vec<JobEnvelope>,
    /// Pass back to [`DeadQuery::list`] for the next page; `None` at the end.
    pub next_cursor: Option<String>,
}

/// A dead job as listed: enough to decide what to do with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadSummary {
    /// The job.
    pub id: JobId,
    /// Its queue.
    pub queue: QueueName,
    /// Its kind.
    pub kind: String,
    /// Attempts recorded in its history.
    pub attempts: usize,
    /// The last attempt's error, or the dead-letter reason when it never ran.
    pub last_error: Option<String>,
    /// Why it was dead-lettered.
    pub reason: Option<String>,
    /// When it was first enqueued.
    pub enqueued_at: DateTime<Utc>,
    /// When it was dead-lettered.
    pub dead_lettered_at: Option<DateTime<Utc>>,
}

impl From<&JobEnvelope> for DeadSummary {
    fn from(job: &JobEnvelope) -> Self {
        let last_error = job
            .attempts
            .iter()
            .rev()
            .find_map(|a| a.error.clone())
            .or_else(|| job.dead_letter_reason.clone());
        DeadSummary {
            id: job.id,
            queue: job.queue.clone(),
            kind: job.kind.clone(),
            attempts: job.attempts.len(),
            last_error,
            reason: job.dead_letter_reason.clone(),
            enqueued_at: job.enqueued_at,
            dead_lettered_at: job.dead_lettered_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let q = QueueName::new("emails").unwrap();
        let inner = DeadCursor::new("123:abc~x");
        let (queue, back) = decode_cursor(&encode_cursor(&q, Some(&inner))).unwrap();
        assert_eq!((queue, back), (q.clone(), Some(inner)));
        assert_eq!(decode_cursor(&encode_cursor(&q, None)).unwrap(), (q, None));
        for bad in ["", "no-separator", "bad queue~x", "~x"] {
            assert!(matches!(decode_cursor(bad), Err(Error::InvalidConfig(_))), "{bad}");
        }
    }
}
