//! Live-job operations across queues and states: what the admin API, the
//! dashboard and the command-line tool list, count, find and cancel
//! (built on [`JobControl`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{
    control::{ActiveLease, CancelOutcome, JobControl, JobQuery, JobState, LiveJob, MAX_JOB_PAGE},
    query::{covered_queues, HasJobId, IdPrefix},
    Broker,
};
use crate::{
    error::{Error, Result},
    job::{JobId, QueueName},
};

/// Separates the time from the id in a listing cursor.
const CURSOR_SEPARATOR: char = '~';

/// Which live jobs an operation applies to: one queue or every queue the
/// broker knows, some states (every live state by default), optionally one
/// kind and a `run_at` range.
///
/// ```
/// use flagship_worker::{broker::{JobState, LiveQuery}, QueueName};
///
/// let stuck = LiveQuery::all().state(JobState::Active);
/// let billing = LiveQuery::queue(QueueName::new("billing")?).kind("send-invoice");
/// # let _ = (stuck, billing);
/// # Ok::<_, flagship_worker::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LiveQuery {
    /// Only this queue (`None`: every queue).
    pub queue: Option<QueueName>,
    /// Only these states (empty: ready, scheduled and active).
    pub states: Vec<JobState>,
    /// Only jobs of this kind.
    pub kind: Option<String>,
    /// Only jobs whose `run_at` is at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only jobs whose `run_at` is before this time.
    pub until: Option<DateTime<Utc>>,
}

impl LiveQuery {
    /// Every live job of every queue.
    pub fn all() -> Self {
        Self::default()
    }

    /// Every live job of `queue`.
    pub fn queue(queue: QueueName) -> Self {
        LiveQuery {
            queue: Some(queue),
            ..Self::default()
        }
    }

    /// Only jobs in `state` (call again to add states).
    pub fn state(mut self, state: JobState) -> Self {
        if !self.states.contains(&state) {
            self.states.push(state);
        }
        self
    }

    /// Only jobs of `kind`.
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = Some(kind.into());
        self
    }

    /// Only jobs whose `run_at` lies in `[since, until)`.
    pub fn between(mut self, since: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>) -> Self {
        self.since = since;
        self.until = until;
        self
    }

    /// The states covered, in lifecycle order.
    pub fn states(&self) -> Vec<JobState> {
        JobState::ALL
            .into_iter()
            .filter(|s| self.states.is_empty() || self.states.contains(s))
            .collect()
    }

    /// The backend query for one queue and state.
    pub fn filter(&self, queue: QueueName, state: JobState) -> JobQuery {
        let query = JobQuery::new(queue, state).between(self.since, self.until);
        match &self.kind {
            Some(kind) => query.kind(kind.clone()),
            None => query,
        }
    }

    /// The queues covered: the one asked for, or every queue the broker
    /// knows, in name order; [`Error::Missing`] for a queue the broker has
    /// never seen a job for.
    pub async fn queues(&self, broker: &dyn Broker) -> Result<Vec<QueueName>> {
        covered_queues(broker, self.queue.as_ref()).await
    }

    /// Every backend query this covers: each queue, each state.
    async fn filters(&self, broker: &dyn Broker) -> Result<Vec<JobQuery>> {
        let states = self.states();
        Ok(self
            .queues(broker)
            .await?
            .into_iter()
            .flat_map(|queue| states.iter().map(move |state| self.filter(queue.clone(), *state)))
            .collect())
    }

    /// One page of matching jobs, `limit` at most (1 to
    /// [`MAX_JOB_PAGE`]), after `cursor` (a [`LiveListing::next_cursor`] of
    /// the same query): by `run_at` over every queue and state covered,
    /// then by id. A malformed cursor is [`Error::InvalidConfig`].
    pub async fn list(
        &self,
        broker: &dyn Broker,
        control: &dyn JobControl,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<LiveListing> {
        super::control::check_job_page_limit(limit)?;
        let after = cursor.filter(|c| !c.is_empty()).map(decode_cursor).transpose()?;
        let mut jobs = Vec::new();
        for filter in self.filters(broker).await? {
            jobs.extend(page_after(control, filter, after, limit + 1).await?);
        }
        jobs.sort_by_key(LiveJob::order_key);
        let next_cursor = (jobs.len() > limit).then(|| encode_cursor(jobs[limit - 1].order_key()));
        jobs.truncate(limit);
        Ok(LiveListing { jobs, next_cursor })
    }

    /// How many jobs match in each queue and state covered (those with
    /// none left out).
    pub async fn counts(
        &self,
        broker: &dyn Broker,
        control: &dyn JobControl,
    ) -> Result<Vec<(QueueName, JobState, u64)>> {
        let mut counts = Vec::new();
        for filter in self.filters(broker).await? {
            let n = control.count_jobs(&filter).await?;
            if n > 0 {
                counts.push((filter.queue, filter.state, n));
            }
        }
        Ok(counts)
    }

    /// Every matching job, oldest `run_at` first.
    pub async fn collect(&self, broker: &dyn Broker, control: &dyn JobControl) -> Result<Vec<LiveJob>> {
        let mut jobs = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.list(broker, control, cursor.as_deref(), MAX_JOB_PAGE).await?;
            jobs.extend(page.jobs);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(jobs),
            }
        }
    }

    /// Cancels every matching job (listed first, then cancelled one by
    /// one); returns what happened to how many.
    pub async fn cancel_all(&self, broker: &dyn Broker, control: &dyn JobControl) -> Result<CancelTally> {
        let mut tally = CancelTally::default();
        for job in self.collect(broker, control).await? {
            match control.cancel(&job.envelope.queue, job.envelope.id).await? {
                CancelOutcome::DeadLettered => tally.dead_lettered += 1,
                CancelOutcome::Signalled => tally.signalled += 1,
                _ => tally.gone += 1,
            }
        }
        Ok(tally)
    }

    /// Finds the one live job whose id is `id` or starts with it, in the
    /// queues covered (states are not a filter here: a job named is found
    /// wherever it is). [`Error::Missing`] when none matches,
    /// [`Error::AmbiguousId`] when several do.
    pub async fn resolve(&self, broker: &dyn Broker, control: &dyn JobControl, id: &str) -> Result<LiveJob> {
        let prefix = IdPrefix::parse(id)?;
        let queues = self.queues(broker).await?;
        let place = match &self.queue {
            Some(queue) => format!("the live jobs of `{queue}` (ready, scheduled, active)"),
            None => "the live jobs (ready, scheduled, active)".to_owned(),
        };
        if let Some(id) = prefix.full() {
            for queue in &queues {
                if let Some(job) = control.get_job(queue, id).await? {
                    return Ok(job);
                }
            }
            return Err(Error::Missing(format!("job {id} is not among {place}")));
        }
        let everything = LiveQuery {
            queue: self.queue.clone(),
            ..LiveQuery::default()
        };
        let mut matches = Vec::new();
        let mut count = 0;
        for job in everything.collect(broker, control).await? {
            if prefix.matches(job.envelope.id) {
                count += 1;
                if matches.len() < 3 {
                    matches.push(job);
                }
            }
        }
        prefix.one(count, matches, &place)
    }
}

impl HasJobId for LiveJob {
    fn job_id(&self) -> JobId {
        self.envelope.id
    }
}

/// Up to `want` jobs of `filter`, ordered after `after`.
async fn page_after(
    control: &dyn JobControl,
    mut filter: JobQuery,
    after: Option<(DateTime<Utc>, JobId)>,
    want: usize,
) -> Result<Vec<LiveJob>> {
    if let Some((at, _)) = after {
        // Jobs due at the cursor's very time may still follow it (by id).
        filter.since = Some(filter.since.map_or(at, |since| since.max(at)));
    }
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page = control
            .list_jobs(&filter, cursor.as_ref(), want.min(MAX_JOB_PAGE))
            .await?;
        for job in page.jobs {
            if after.is_none_or(|after| job.order_key() > after) {
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

fn decode_cursor(cursor: &str) -> Result<(DateTime<Utc>, JobId)> {
    let bad = || Error::InvalidConfig(format!("`{}` is not a job listing cursor", cursor.escape_debug()));
    let (at, id) = cursor.split_once(CURSOR_SEPARATOR).ok_or_else(bad)?;
    let at = at
        .parse::<i64>()
        .map(DateTime::from_timestamp_nanos)
        .map_err(|_| bad())?;
    Ok((at, id.parse().map_err(|_| bad())?))
}

fn encode_cursor((at, id): (DateTime<Utc>, JobId)) -> String {
    format!("{}{CURSOR_SEPARATOR}{id}", at.timestamp_nanos_opt().unwrap_or(i64::MAX))
}

/// One page of a live-job listing across queues and states.
#[derive(Debug, Clone)]
pub struct LiveListing {
    /// The jobs.
    pub jobs: Vec<LiveJob>,
    /// Pass back to [`LiveQuery::list`] for the next page; `None` at the end.
    pub next_cursor: Option<String>,
}

/// What [`LiveQuery::cancel_all`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelTally {
    /// Ready or scheduled jobs moved to the dead-letter queue.
    pub dead_lettered: u64,
    /// Active jobs whose worker was asked to stop them.
    pub signalled: u64,
    /// Jobs that finished (or were cancelled) between listing and cancelling.
    pub gone: u64,
}

/// A live job as listed: where it is, and for an active one who holds it
/// until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveSummary {
    /// The job.
    pub id: JobId,
    /// Its queue.
    pub queue: QueueName,
    /// Its kind.
    pub kind: String,
    /// `ready`, `scheduled` or `active`.
    pub state: JobState,
    /// Failed attempts so far.
    pub attempt: u32,
    /// When it runs (ready: since when it could).
    pub run_at: DateTime<Utc>,
    /// When it was first enqueued.
    pub enqueued_at: DateTime<Utc>,
    /// For an active job: its worker, when the attempt started, the lease deadline.
    pub lease: Option<ActiveLease>,
    /// Whether an operator asked to cancel it while active.
    pub cancel_requested: bool,
}

impl From<&LiveJob> for LiveSummary {
    fn from(job: &LiveJob) -> Self {
        let e = &job.envelope;
        LiveSummary {
            id: e.id,
            queue: e.queue.clone(),
            kind: e.kind.clone(),
            state: job.state,
            attempt: e.attempt,
            run_at: e.run_at,
            enqueued_at: e.enqueued_at,
            lease: job.lease.clone(),
            cancel_requested: job.cancel_requested,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let key = (DateTime::from_timestamp_nanos(1_732_800_000_123_456_789), JobId::new());
        assert_eq!(decode_cursor(&encode_cursor(key)).unwrap(), key);
        for bad in ["", "x", "1~nope", "a~0190b6a4-8f1e-7c3a-9d2b-5e6f7a8b9c0d"] {
            assert!(matches!(decode_cursor(bad), Err(Error::InvalidConfig(_))), "{bad}");
        }
    }

    #[test]
    fn no_state_means_every_live_state() {
        assert_eq!(LiveQuery::all().states(), JobState::ALL);
        let two = LiveQuery::all().state(JobState::Active).state(JobState::Ready);
        assert_eq!(two.states(), [JobState::Ready, JobState::Active]);
    }
}
