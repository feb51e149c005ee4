//! Enqueueing: one statement per batch, on the broker's pool or on a
//! connection (or transaction) of the caller's.
//!
//! Inside the caller's transaction the jobs commit or roll back with the
//! caller's own writes: an order row and its "send invoice" job are stored
//! together or not at all, and idle workers are woken only on commit
//! (`NOTIFY` is transactional). A rolled-back job also frees its
//! idempotency key.

use std::collections::HashMap;

use serde_json::Value;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::{errors::map_err, micros_ceil, PostgresBroker};
use crate::{
    broker::EnqueueOutcome,
    client::Client,
    envelope::{EnqueueOptions, JobEnvelope},
    error::{Error, Result},
    job::{Job, JobId},
};

/// The columns of one batch, as `enqueue.sql` and `enqueue_unkeyed.sql`
/// take them.
#[derive(Debug, Default)]
struct Columns {
    ids: Vec<Uuid>,
    queues: Vec<String>,
    kinds: Vec<String>,
    payloads: Vec<String>,
    delays: Vec<i64>,
    attempts: Vec<i32>,
    max_retries: Vec<Option<i32>>,
    histories: Vec<Option<String>>,
    /// The batch's queues, each once.
    distinct_queues: Vec<String>,
    priorities: Vec<i16>,
    keys: Vec<Option<String>>,
}

impl Columns {
    /// Binds the columns both enqueue statements take (`$1` to `$10`).
    fn bind<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q> {
        query
            .bind(&self.ids)
            .bind(&self.queues)
            .bind(&self.kinds)
            .bind(&self.payloads)
            .bind(&self.delays)
            .bind(&self.attempts)
            .bind(&self.max_retries)
            .bind(&self.histories)
            .bind(&self.distinct_queues)
            .bind(&self.priorities)
    }
}

/// A statement with its arguments, as sqlx builds it.
type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// A batch ready to send: the columns of the jobs that go to the database,
/// and where each input job's outcome comes from.
#[derive(Debug)]
struct Batch {
    columns: Columns,
    /// Per input job: its position in `columns`, or the input position of
    /// an earlier job of the batch with the same queue and key, whose
    /// outcome it shares.
    sources: Vec<Source>,
}

#[derive(Debug, Clone, Copy)]
enum Source {
    Sent(usize),
    SameKeyAs(usize),
}

impl Batch {
    fn new(jobs: &[JobEnvelope]) -> Result<Self> {
        let mut columns = Columns::default();
        let mut sources = Vec::with_capacity(jobs.len());
        let mut first_with_key: HashMap<(&str, &str), usize> = HashMap::new();
        for (i, job) in jobs.iter().enumerate() {
            if let Some(key) = &job.idempotency_key {
                if let Some(&first) = first_with_key.get(&(job.queue.as_str(), key.as_str())) {
                    sources.push(Source::SameKeyAs(first));
                    continue;
                }
                first_with_key.insert((job.queue.as_str(), key.as_str()), i);
            }
            sources.push(Source::Sent(columns.ids.len()));
            let count = |what: &str, n: u32| {
                i32::try_from(n).map_err(|_| Error::InvalidConfig(format!("{what} of {n} is out of range")))
            };
            columns.ids.push(job.id.as_uuid());
            columns.queues.push(job.queue.as_str().to_owned());
            columns.kinds.push(job.kind.clone());
            columns.payloads.push(job.payload.json().to_owned());
            columns.keys.push(job.idempotency_key.clone());
            crate::envelope::check_priority(job.priority)?;
            columns.priorities.push(i16::from(job.priority));
            columns
                .delays
                .push(micros_ceil((job.run_at - job.enqueued_at).to_std().unwrap_or_default()));
            columns.attempts.push(count("attempt", job.attempt)?);
            columns
                .max_retries
                .push(job.max_retries.map(|n| count("max_retries", n)).transpose()?);
            columns.histories.push(if job.attempts.is_empty() {
                None
            } else {
                Some(serde_json::to_string(&job.attempts).unwrap_or_default())
            });
            if !columns.distinct_queues.iter().any(|q| q == job.queue.as_str()) {
                columns.distinct_queues.push(job.queue.as_str().to_owned());
            }
        }
        Ok(Batch { columns, sources })
    }
}

/// Whether `e` says a job with one of the batch's ids is stored already.
fn is_stored_id(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") && db.constraint() == Some("jobs_pkey"))
}

impl PostgresBroker {
    /// Stores `jobs` with one statement on `conn`. With `fast`, a batch
    /// without idempotency keys goes in as a plain insert first, sent again
    /// the careful way only if an id was stored already; a failed statement
    /// aborts a transaction, so only a connection of the broker's own may
    /// take the fast way.
    pub(super) async fn enqueue_on(
        &self,
        conn: &mut PgConnection,
        jobs: &[JobEnvelope],
        fast: bool,
    ) -> Result<Vec<EnqueueOutcome>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let Batch { columns: c, sources } = Batch::new(jobs)?;
        let fast = fast && c.keys.iter().all(Option::is_none);
        if fast {
            let stored = c.bind(sqlx::query(&self.sql.enqueue_unkeyed)).execute(&mut *conn).await;
            match stored {
                Ok(_) => {
                    for job in jobs {
                        tracing::debug!(job.id = %job.id, queue = %job.queue, "job enqueued");
                    }
                    return Ok(jobs.iter().map(|j| EnqueueOutcome::Enqueued(j.id)).collect());
                }
                Err(e) if is_stored_id(&e) => {}
                Err(e) => return Err(map_err(e)),
            }
        }
        let rows = c
            .bind(sqlx::query(&self.sql.enqueue))
            .bind(&c.keys)
            .fetch_all(conn)
            .await
            .map_err(map_err)?;
        // Every job is stored unless a row says otherwise.
        let mut sent: Vec<EnqueueOutcome> = c
            .ids
            .iter()
            .map(|&id| EnqueueOutcome::Enqueued(JobId::from(id)))
            .collect();
        // Exactly one row without a position (the wake-up): without it the
        // reply is not this statement's.
        let mut wake_rows = 0;
        for row in &rows {
            let Some(position) = row.try_get::<Option<i64>, _>(0).map_err(map_err)? else {
                wake_rows += 1;
                continue;
            };
            let holder: Option<Uuid> = row.try_get(1).map_err(map_err)?;
            let stored: Option<bool> = row.try_get(2).map_err(map_err)?;
            let slot = usize::try_from(position - 1)
                .ok()
                .and_then(|at| sent.get_mut(at))
                .ok_or_else(|| {
                    Error::Backend(
                        format!(
                            "PostgreSQL returned job position {position} of an enqueue of {} jobs",
                            c.ids.len()
                        )
                        .into(),
                    )
                })?;
            let id = slot.id();
            *slot = if stored == Some(true) {
                EnqueueOutcome::Enqueued(id)
            } else {
                EnqueueOutcome::Duplicate(holder.map_or(id, JobId::from))
            };
        }
        if wake_rows != 1 {
            return Err(Error::Backend(
                "PostgreSQL's reply to an enqueue is not the enqueue statement's".into(),
            ));
        }
        let mut outcomes: Vec<EnqueueOutcome> = Vec::with_capacity(jobs.len());
        for (job, source) in jobs.iter().zip(sources) {
            let outcome = match source {
                Source::Sent(at) => sent[at],
                Source::SameKeyAs(first) => EnqueueOutcome::Duplicate(outcomes[first].id()),
            };
            if outcome.is_enqueued() {
                tracing::debug!(job.id = %job.id, queue = %job.queue, "job enqueued");
            }
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    /// Enqueues a typed job on `conn`: a connection, or a transaction of the
    /// caller's (`&mut *tx`), where it commits or rolls back with the
    /// caller's own writes.
    ///
    /// The job is validated exactly as [`Client::enqueue_with`] does it,
    /// with `client`'s schema registry and clock (use the worker's client,
    /// [`Worker::client`](crate::Worker::client), to share its registry).
    /// An error from PostgreSQL aborts the caller's transaction, as any
    /// failed statement does.
    ///
    /// ```no_run
    /// # use flagship_worker::{broker::postgres::PostgresBroker, Client, EnqueueOptions, Job};
    /// # use schemars::JsonSchema; use serde::{Deserialize, Serialize}; use std::sync::Arc;
    /// # #[derive(Serialize, Deserialize, JsonSchema)] struct SendInvoice { order_id: i64 }
    /// # impl Job for SendInvoice { const KIND: &'static str = "send-invoice"; const QUEUE: &'static str = "billing"; }
    /// # async fn run(broker: Arc<PostgresBroker>, client: Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut tx = broker.pool().begin().await?;
    /// let order_id: i64 = sqlx::query_scalar("INSERT INTO orders (total) VALUES (42) RETURNING id")
    ///     .fetch_one(&mut *tx)
    ///     .await?;
    /// broker
    ///     .enqueue_in(&mut *tx, &client, &SendInvoice { order_id }, EnqueueOptions::new())
    ///     .await?;
    /// tx.commit().await?; // the order and its job, or neither
    /// # Ok(()) }
    /// ```
    pub async fn enqueue_in<J: Job>(
        &self,
        conn: &mut PgConnection,
        client: &Client,
        job: &J,
        options: EnqueueOptions,
    ) -> Result<EnqueueOutcome> {
        let envelope = client.envelope(job, &options)?;
        self.one(conn, envelope).await
    }

    /// Enqueues typed jobs on `conn` in one statement, like
    /// [`enqueue_in`](Self::enqueue_in): either every job is valid and the
    /// batch is sent, or nothing is.
    pub async fn enqueue_batch_in<J: Job>(
        &self,
        conn: &mut PgConnection,
        client: &Client,
        jobs: &[J],
        options: EnqueueOptions,
    ) -> Result<Vec<EnqueueOutcome>> {
        let envelopes = jobs
            .iter()
            .map(|job| client.envelope(job, &options))
            .collect::<Result<Vec<_>>>()?;
        self.enqueue_on(conn, &envelopes, false).await
    }

    /// Enqueues a raw JSON payload of a registered kind on `conn`, validated
    /// as [`Client::enqueue_raw`] does it.
    pub async fn enqueue_raw_in(
        &self,
        conn: &mut PgConnection,
        client: &Client,
        kind: &str,
        payload: Value,
        options: EnqueueOptions,
    ) -> Result<EnqueueOutcome> {
        let envelope = client.raw_envelope(kind, payload, &options)?;
        self.one(conn, envelope).await
    }

    async fn one(&self, conn: &mut PgConnection, envelope: JobEnvelope) -> Result<EnqueueOutcome> {
        let id = envelope.id;
        self.enqueue_on(conn, std::slice::from_ref(&envelope), false)
            .await?
            .pop()
            .ok_or_else(|| Error::Backend(format!("PostgreSQL returned no outcome for job {id}").into()))
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::job::QueueName;

    #[test]
    fn repeated_keys_in_a_batch_share_the_first_outcome() {
        let (a, b) = (QueueName::new("a").unwrap(), QueueName::new("b").unwrap());
        let job = |q: &QueueName, key: Option<&str>| {
            let mut job = JobEnvelope::new("k", q.clone(), serde_json::json!({}), Utc::now());
            job.idempotency_key = key.map(str::to_owned);
            job
        };
        let jobs = [
            job(&a, Some("x")),
            job(&a, None),
            job(&a, Some("x")),
            job(&b, Some("x")),
            job(&a, None),
        ];
        let batch = Batch::new(&jobs).unwrap();
        assert_eq!(batch.columns.ids.len(), 4, "the repeated key is not sent");
        assert!(matches!(batch.sources[2], Source::SameKeyAs(0)));
        assert!(matches!(batch.sources[3], Source::Sent(2)));
        assert!(matches!(batch.sources[4], Source::Sent(3)));
    }

    #[test]
    fn delays_are_measured_on_the_producers_clock_and_rounded_up() {
        let q = QueueName::new("q").unwrap();
        let now = Utc::now();
        let mut job = JobEnvelope::new("k", q, serde_json::json!({}), now);
        job.run_at = now + chrono::TimeDelta::nanoseconds(1_500);
        let mut early = job.clone();
        early.run_at = now - chrono::TimeDelta::seconds(5);
        let batch = Batch::new(&[job, early]).unwrap();
        assert_eq!(batch.columns.delays, [2, 0]);
    }
}
