//! Dead-letter operations across queues: what the admin API, the dashboard
//! and the command-line tool list, count and retry.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    broker::{Broker, DeadFilter, DeadLetterQueue, MAX_DEAD_PAGE},
    envelope::JobEnvelope,
    error::{Error, Result},
    job::{JobId, QueueName},
};

/// Separates the time from the id in a listing cursor.
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
    /// broker knows, in name order. A queue the broker has never seen a
    /// job for is [`Error::Missing`].
    pub async fn queues(&self, broker: &dyn Broker) -> Result<Vec<QueueName>> {
        covered_queues(broker, self.queue.as_ref()).await
    }

    /// One page of matching dead jobs, `limit` at most, after `cursor` (a
    /// [`DeadListing::next_cursor`] of the same query): oldest
    /// dead-lettered first over every queue covered, then by id. A
    /// malformed cursor is [`Error::InvalidConfig`].
    pub async fn list(
        &self,
        broker: &dyn Broker,
        dlq: &dyn DeadLetterQueue,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<DeadListing> {
        super::check_page_limit(limit)?;
        let after = cursor.filter(|c| !c.is_empty()).map(decode_cursor).transpose()?;
        // Each queue's first `limit + 1` entries after the cursor hold the
        // merged page and say whether anything follows it.
        let mut jobs = Vec::new();
        for queue in self.queues(broker).await? {
            jobs.extend(self.queue_page(dlq, queue, after, limit + 1).await?);
        }
        jobs.sort_by_key(order_key);
        let next_cursor = (jobs.len() > limit).then(|| encode_cursor(order_key(&jobs[limit - 1])));
        jobs.truncate(limit);
        Ok(DeadListing { jobs, next_cursor })
    }

    /// Up to `want` dead jobs of `queue` matching the query, ordered after `after`.
    async fn queue_page(
        &self,
        dlq: &dyn DeadLetterQueue,
        queue: QueueName,
        after: Option<OrderKey>,
        want: usize,
    ) -> Result<Vec<JobEnvelope>> {
        let mut filter = self.filter(queue);
        if let Some((at, _)) = after {
            // Entries dead at the cursor's very time may still follow it (by id).
            filter.since = Some(filter.since.map_or(at, |since| since.max(at)));
        }
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let page = dlq.list_dead(&filter, cursor.as_ref(), want.min(MAX_DEAD_PAGE)).await?;
            for job in page.jobs {
                if after.is_none_or(|after| order_key(&job) > after) {
                    out.push(job);
                    if out.len() == want {
                        return Ok(out);
                    }
                }
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => return Ok(out),
            }
        }
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

    /// Finds the one matching dead job whose id is `id` or starts with it
    /// (as `git` takes a commit: an unambiguous prefix, any case).
    ///
    /// [`Error::Missing`] when none matches, [`Error::AmbiguousId`] when
    /// more than one does, [`Error::InvalidConfig`] when `id` cannot start
    /// a job id. A prefix is looked up by listing the dead jobs covered.
    pub async fn resolve(&self, broker: &dyn Broker, dlq: &dyn DeadLetterQueue, id: &str) -> Result<JobEnvelope> {
        let prefix = IdPrefix::parse(id)?;
        if let Some(id) = prefix.full() {
            return self
                .find(broker, dlq, id)
                .await?
                .ok_or_else(|| Error::Missing(format!("job {id} is not in {}", self.place())));
        }
        let mut matches = Vec::new();
        let mut count = 0;
        for queue in self.queues(broker).await? {
            let filter = self.filter(queue);
            let mut cursor = None;
            loop {
                let page = dlq.list_dead(&filter, cursor.as_ref(), MAX_DEAD_PAGE).await?;
                for job in page.jobs {
                    if prefix.matches(job.id) {
                        count += 1;
                        if matches.len() < 3 {
                            matches.push(job);
                        }
                    }
                }
                match page.next {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
        }
        prefix.one(count, matches, &self.place())
    }

    /// Where this query looks, for messages.
    fn place(&self) -> String {
        match &self.queue {
            Some(queue) => format!("the dead-letter queue of `{queue}`"),
            None => "the dead-letter queue".to_owned(),
        }
    }
}

/// `queue` if the broker knows it, or every queue it knows, in name order.
pub(crate) async fn covered_queues(broker: &dyn Broker, queue: Option<&QueueName>) -> Result<Vec<QueueName>> {
    let mut queues = broker.queues().await?;
    match queue {
        Some(queue) if queues.contains(queue) => Ok(vec![queue.clone()]),
        Some(queue) => Err(unknown_queue(queue)),
        None => {
            queues.sort();
            Ok(queues)
        }
    }
}

/// [`Error::Missing`] for a queue the broker has never seen.
fn unknown_queue(queue: &QueueName) -> Error {
    Error::Missing(format!(
        "queue `{queue}` is unknown: no job was ever sent to it; `flagship-worker queues` lists the known ones"
    ))
}

/// A job id or the start of one, as an operator types it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdPrefix(String);

impl IdPrefix {
    /// The shortest prefix taken, in characters.
    pub const MIN_LEN: usize = 4;

    /// Reads `text`: hexadecimal digits and dashes, at least
    /// [`MIN_LEN`](Self::MIN_LEN) characters, any case.
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim().to_ascii_lowercase();
        let valid = text.len() <= 36 && text.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
        if !valid || text.len() < Self::MIN_LEN {
            return Err(Error::InvalidConfig(format!(
                "`{}` is not a job id: give the id (a UUID) or at least its first {} characters",
                text.escape_debug(),
                Self::MIN_LEN
            )));
        }
        Ok(IdPrefix(text))
    }

    /// The id, when the whole of one was given.
    pub fn full(&self) -> Option<JobId> {
        self.0.parse().ok().filter(|_| self.0.len() == 36)
    }

    /// Whether `id` starts with this prefix.
    pub fn matches(&self, id: JobId) -> bool {
        id.to_string().starts_with(&self.0)
    }

    /// The one job of `matches` (the first few of `count` found in `place`),
    /// or the error saying there were none or several.
    pub fn one<T: HasJobId>(&self, count: usize, mut matches: Vec<T>, place: &str) -> Result<T> {
        match count {
            0 => Err(Error::Missing(format!(
                "no job id starting with `{}` in {place}",
                self.0
            ))),
            1 if !matches.is_empty() => Ok(matches.remove(0)),
            _ => Err(Error::AmbiguousId {
                prefix: self.0.clone(),
                count,
                examples: matches
                    .iter()
                    .map(|j| j.job_id().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }
}

impl fmt::Display for IdPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Something with a job id (what [`IdPrefix::one`] picks from).
pub trait HasJobId {
    /// The job's id.
    fn job_id(&self) -> JobId;
}

impl HasJobId for JobEnvelope {
    fn job_id(&self) -> JobId {
        self.id
    }
}

/// Where a dead job sits in the order of a listing across queues.
type OrderKey = (DateTime<Utc>, JobId);

fn order_key(job: &JobEnvelope) -> OrderKey {
    (job.dead_lettered_at.unwrap_or(DateTime::<Utc>::MIN_UTC), job.id)
}

/// Reads a listing cursor: the time (microseconds) and id of the last job shown.
fn decode_cursor(cursor: &str) -> Result<OrderKey> {
    let bad = || Error::InvalidConfig(format!("`{}` is not a DLQ listing cursor", cursor.escape_debug()));
    let (at, id) = cursor.split_once(CURSOR_SEPARATOR).ok_or_else(bad)?;
    let at = at
        .parse::<i64>()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(bad)?;
    let id = id.parse::<JobId>().map_err(|_| bad())?;
    Ok((at, id))
}

fn encode_cursor((at, id): OrderKey) -> String {
    format!("{}{CURSOR_SEPARATOR}{id}", at.timestamp_micros())
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
    /// Why it was dead-lettered (each attempt's own error is in its
    /// history: [`JobDetail::attempts`](crate::broker::JobDetail::attempts)).
    pub reason: Option<String>,
    /// When it was first enqueued.
    pub enqueued_at: DateTime<Utc>,
    /// When it was dead-lettered.
    pub dead_lettered_at: Option<DateTime<Utc>>,
}

impl From<&JobEnvelope> for DeadSummary {
    fn from(job: &JobEnvelope) -> Self {
        DeadSummary {
            id: job.id,
            queue: job.queue.clone(),
            kind: job.kind.clone(),
            attempts: job.attempts.len(),
            reason: job
                .dead_letter_reason
                .clone()
                .or_else(|| job.attempts.iter().rev().find_map(|a| a.error.clone())),
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
        let key = (
            DateTime::from_timestamp_micros(1_732_800_000_123_456).unwrap(),
            JobId::new(),
        );
        assert_eq!(decode_cursor(&encode_cursor(key)).unwrap(), key);
        for bad in ["", "no-separator", "12~not-an-id", "x~0193", "~x", "emails~"] {
            assert!(matches!(decode_cursor(bad), Err(Error::InvalidConfig(_))), "{bad}");
        }
    }

    #[test]
    fn id_prefixes_are_hex_any_case_and_long_enough() {
        let id = JobId::new();
        let text = id.to_string();
        assert_eq!(IdPrefix::parse(&text).unwrap().full(), Some(id));
        let upper = IdPrefix::parse(&text[..8].to_ascii_uppercase()).unwrap();
        assert!(upper.matches(id) && upper.full().is_none());
        for bad in ["", "abc", "xyz12345", "0193 0e", &format!("{text}0")] {
            assert!(matches!(IdPrefix::parse(bad), Err(Error::InvalidConfig(_))), "{bad}");
        }
    }
}
