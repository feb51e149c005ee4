//! The dead-letter queue of the [`RedisBroker`].
//!
//! Dead jobs stay in the queue's `jobs` hash; the `dead` sorted set orders
//! them by dead-lettered time (its score, from Redis's clock) and the
//! `reasons` hash says why. Reads show that time and reason in the
//! envelope. Retrying rewrites the envelope (attempt back to 0, dead fields
//! cleared), so it reads the job, then moves it with a script that checks
//! the job is still dead and unchanged: of concurrent retries exactly one
//! wins.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redis::Value;

use super::{
    decode::{self, array, bytes, int, text, time_to_score},
    keys::QueueKeys,
    scripts::{map_err, run, SCRIPTS},
    RedisBroker, MAX_BATCH,
};
use crate::{
    broker::{check_page_limit, DeadCursor, DeadFilter, DeadLetterQueue, DeadPage},
    envelope::JobEnvelope,
    error::{Error, Result},
    job::{JobId, QueueName},
};

/// Reads of one dead job that found it changed, before giving up.
const RETRY_ATTEMPTS: usize = 8;
/// Dead entries read per call when a kind filter may skip many.
const SCAN_BATCH: usize = 256;

/// A dead job as stored.
struct DeadEntry {
    /// Its id, as stored.
    id: String,
    /// Its dead-lettered time as the sorted-set score text.
    score: String,
    /// The stored envelope text (absent only if written by hand).
    raw: Option<Vec<u8>>,
    /// Why it died.
    reason: Option<String>,
}

impl DeadEntry {
    /// The entry from a script reply: id, score, envelope, reason.
    fn from_reply(mut fields: impl Iterator<Item = Value>) -> Result<Option<Self>> {
        let (Some(id), Some(score), Some(raw), Some(reason)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Ok(None);
        };
        Ok(Some(DeadEntry {
            // Ids written by another program may be any bytes; one that is
            // not text is shown escaped and, not being a UUID, skipped.
            id: bytes(id)
                .map(|id| match String::from_utf8(id) {
                    Ok(text) => text,
                    Err(e) => decode::shown_id(e.as_bytes()),
                })
                .unwrap_or_default(),
            score: text("dead job score", score)?,
            raw: bytes(raw),
            reason: bytes(reason).map(|r| String::from_utf8_lossy(&r).into_owned()),
        }))
    }

    /// The envelope operators see; `None` for an id that is not a UUID
    /// (only possible for entries written by hand).
    fn envelope(&self, queue: &QueueName) -> Result<Option<JobEnvelope>> {
        let Ok(id) = self.id.parse::<JobId>() else {
            tracing::warn!(%queue, id = %self.id.escape_debug(), "dead-letter entry with an id that is not a UUID skipped");
            return Ok(None);
        };
        let dead_at = decode::score_to_time(&self.score)?;
        Ok(Some(decode::dead_envelope(
            queue,
            id,
            self.raw.as_deref(),
            dead_at,
            self.reason.clone(),
        )))
    }

    /// The envelope to store when the job is retried: attempt 0, dead
    /// fields cleared, runnable now. An undecodable one (which the callers
    /// refuse to retry) would be stored as it is.
    fn retried(&self, queue: &QueueName, raw: &[u8], now: DateTime<Utc>) -> Vec<u8> {
        match decode::decode_stored(queue, self.id.as_bytes(), raw) {
            Ok(mut envelope) => {
                envelope.attempt = 0;
                envelope.dead_lettered_at = None;
                envelope.dead_letter_reason = None;
                envelope.run_at = now;
                envelope.to_json()
            }
            Err(_) => raw.to_vec(),
        }
    }
}

fn encode_cursor(entry: &DeadEntry) -> DeadCursor {
    DeadCursor::new(format!("{}/{}", entry.score, entry.id))
}

fn decode_cursor(cursor: &DeadCursor) -> Result<(String, String)> {
    let bad = || Error::InvalidConfig(format!("`{}` is not a DLQ cursor from this broker", cursor.as_str()));
    let (score, id) = cursor.as_str().split_once('/').ok_or_else(bad)?;
    if score.parse::<f64>().is_err() || id.is_empty() {
        return Err(bad());
    }
    Ok((score.to_owned(), id.to_owned()))
}

/// The score range `[low, high)` of a filter, as script arguments.
fn bounds(filter: &DeadFilter) -> (String, String) {
    (
        filter.since.map(time_to_score).unwrap_or_else(|| "-inf".into()),
        filter.until.map(time_to_score).unwrap_or_else(|| "+inf".into()),
    )
}

fn dead_keys(k: &QueueKeys) -> [&str; 3] {
    [&k.dead, &k.jobs, &k.reasons]
}

impl RedisBroker {
    /// Up to `count` dead entries of `filter`'s time range after `after`.
    async fn dead_entries(
        &self,
        filter: &DeadFilter,
        after: Option<&(String, String)>,
        count: usize,
    ) -> Result<Vec<DeadEntry>> {
        let k = self.keys(&filter.queue);
        let (low, high) = bounds(filter);
        let (after_score, after_id) = after.map(|(s, i)| (s.as_str(), i.as_str())).unwrap_or(("", ""));
        let call = SCRIPTS
            .dead_list
            .call(&dead_keys(&k))
            .arg(low)
            .arg(high)
            .arg(after_score)
            .arg(after_id)
            .arg(count);
        let mut fields = array("dead_list", run(&mut self.conn(), call).await?)?.into_iter();
        let mut entries = Vec::new();
        while let Some(entry) = DeadEntry::from_reply(&mut fields)? {
            entries.push(entry);
        }
        Ok(entries)
    }

    /// Every dead entry matching `filter`, page by page, passed to `each`
    /// with its envelope; `each` returns whether to go on.
    async fn scan_dead(
        &self,
        filter: &DeadFilter,
        after: Option<(String, String)>,
        batch: usize,
        mut each: impl FnMut(DeadEntry, JobEnvelope) -> bool,
    ) -> Result<()> {
        let mut after = after;
        loop {
            let entries = self.dead_entries(filter, after.as_ref(), batch).await?;
            let full = entries.len() == batch;
            for entry in entries {
                after = Some((entry.score.clone(), entry.id.clone()));
                if let Some(envelope) = entry.envelope(&filter.queue)? {
                    if filter.matches(&envelope) && !each(entry, envelope) {
                        return Ok(());
                    }
                }
            }
            if !full {
                return Ok(());
            }
        }
    }

    async fn dead_entry(&self, queue: &QueueName, id: JobId) -> Result<Option<DeadEntry>> {
        let k = self.keys(queue);
        let call = SCRIPTS.dead_get.call(&dead_keys(&k)).arg(id.to_string());
        let reply = array("dead_get", run(&mut self.conn(), call).await?)?;
        let mut fields = std::iter::once(Value::BulkString(id.to_string().into_bytes())).chain(reply);
        DeadEntry::from_reply(&mut fields)
    }

    /// Moves dead entries back to ready if unchanged: one result per entry,
    /// 1 retried, 0 not dead, 2 changed since read.
    async fn retry_entries(&self, queue: &QueueName, entries: &[(DeadEntry, Vec<u8>)]) -> Result<Vec<i64>> {
        let k = self.keys(queue);
        let now = self.clock.now();
        let mut call = SCRIPTS
            .dead_retry
            .call(&[&k.dead, &k.jobs, &k.reasons, &k.ready, &k.wake, &k.scheduled]);
        for (entry, raw) in entries {
            call = call.arg(&entry.id).arg(raw).arg(entry.retried(queue, raw, now));
        }
        array("dead_retry", run(&mut self.conn(), call).await?)?
            .iter()
            .map(|v| int("dead_retry", v))
            .collect()
    }

    async fn delete_entries(&self, queue: &QueueName, below: Option<&str>, ids: &[String]) -> Result<u64> {
        let k = self.keys(queue);
        let call = SCRIPTS
            .dead_delete
            .call(&[&k.dead, &k.jobs, &k.reasons, &k.job_keys, &k.unique])
            .arg(below.unwrap_or(""))
            .arg(ids);
        Ok(int("dead_delete", &run(&mut self.conn(), call).await?)?.max(0) as u64)
    }
}

#[async_trait]
impl DeadLetterQueue for RedisBroker {
    async fn list_dead(&self, filter: &DeadFilter, cursor: Option<&DeadCursor>, limit: usize) -> Result<DeadPage> {
        check_page_limit(limit)?;
        let after = cursor.map(decode_cursor).transpose()?;
        let batch = if filter.kind.is_some() {
            SCAN_BATCH.max(limit + 1)
        } else {
            limit + 1
        };
        let mut found: Vec<(DeadEntry, JobEnvelope)> = Vec::new();
        self.scan_dead(filter, after, batch, |entry, envelope| {
            found.push((entry, envelope));
            found.len() <= limit
        })
        .await?;
        let next = (found.len() > limit).then(|| encode_cursor(&found[limit - 1].0));
        let jobs = found.into_iter().take(limit).map(|(_, envelope)| envelope).collect();
        Ok(DeadPage { jobs, next })
    }

    async fn get_dead(&self, queue: &QueueName, id: JobId) -> Result<Option<JobEnvelope>> {
        match self.dead_entry(queue, id).await? {
            Some(entry) => entry.envelope(queue),
            None => Ok(None),
        }
    }

    async fn retry_dead(&self, queue: &QueueName, id: JobId) -> Result<bool> {
        for _ in 0..RETRY_ATTEMPTS {
            let Some(mut entry) = self.dead_entry(queue, id).await? else {
                return Ok(false);
            };
            let Some(raw) = entry.raw.take() else {
                tracing::warn!(job.id = %id, %queue, "dead job has no stored envelope; it cannot be retried");
                return Ok(false);
            };
            if let Err(poison) = decode::decode_stored(queue, entry.id.as_bytes(), &raw) {
                return Err(Error::NotRetryable {
                    id,
                    reason: poison.reason.clone(),
                });
            }
            match self.retry_entries(queue, &[(entry, raw)]).await?.first() {
                Some(1) => {
                    tracing::info!(job.id = %id, %queue, "dead job retried");
                    return Ok(true);
                }
                Some(0) => return Ok(false),
                _ => continue,
            }
        }
        Err(Error::Backend(
            format!("dead job {id} kept changing while it was being retried; try again").into(),
        ))
    }

    async fn retry_dead_matching(&self, filter: &DeadFilter) -> Result<u64> {
        let mut retried = 0;
        let mut after = None;
        loop {
            let mut page = Vec::new();
            let mut last = None;
            self.scan_dead(filter, after.clone(), SCAN_BATCH, |mut entry, _| {
                last = Some((entry.score.clone(), entry.id.clone()));
                match entry.raw.take() {
                    // Retrying a record that cannot be decoded would only bury it again.
                    Some(raw) if decode::decode_stored(&filter.queue, entry.id.as_bytes(), &raw).is_err() => {
                        tracing::warn!(queue = %filter.queue, job.id = %entry.id, "dead job cannot be decoded; not retried");
                    }
                    Some(raw) => page.push((entry, raw)),
                    None => {}
                }
                page.len() < MAX_BATCH / 4
            })
            .await?;
            if last.is_none() {
                break;
            }
            if page.is_empty() {
                after = last;
                continue;
            }
            let results = self.retry_entries(&filter.queue, &page).await?;
            for ((entry, _), result) in page.iter().zip(results) {
                retried += match result {
                    1 => 1,
                    2 => u64::from(self.retry_dead(&filter.queue, entry.id.parse()?).await?),
                    _ => 0,
                };
            }
            after = last;
        }
        tracing::info!(queue = %filter.queue, count = retried, "dead jobs retried");
        Ok(retried)
    }

    async fn delete_dead(&self, queue: &QueueName, id: JobId) -> Result<bool> {
        Ok(self.delete_entries(queue, None, &[id.to_string()]).await? == 1)
    }

    async fn purge_dead(&self, queue: &QueueName, older_than: DateTime<Utc>) -> Result<u64> {
        let k = self.keys(queue);
        let below = time_to_score(older_than);
        let mut purged = 0;
        loop {
            let ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
                .arg(&k.dead)
                .arg("-inf")
                .arg(format!("({below}"))
                .arg("LIMIT")
                .arg(0)
                .arg(MAX_BATCH)
                .query_async(&mut self.conn())
                .await
                .map_err(map_err)?;
            if ids.is_empty() {
                break;
            }
            purged += self.delete_entries(queue, Some(&below), &ids).await?;
            if ids.len() < MAX_BATCH {
                break;
            }
        }
        tracing::info!(%queue, count = purged, "dead jobs purged");
        Ok(purged)
    }

    async fn count_dead(&self, filter: &DeadFilter) -> Result<u64> {
        if filter.kind.is_none() {
            let k = self.keys(&filter.queue);
            let (low, high) = bounds(filter);
            let high = if high == "+inf" { high } else { format!("({high}") };
            return redis::cmd("ZCOUNT")
                .arg(&k.dead)
                .arg(low)
                .arg(high)
                .query_async(&mut self.conn())
                .await
                .map_err(map_err);
        }
        let mut count = 0;
        self.scan_dead(filter, None, SCAN_BATCH, |_, _| {
            count += 1;
            true
        })
        .await?;
        Ok(count)
    }
}
