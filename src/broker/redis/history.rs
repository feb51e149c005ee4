//! The Redis broker's queue history: two hashes per queue
//! (`{queue}:history:minute` and `{queue}:history:hour`), each a ring of
//! bucket slots (see `scripts/history.lua`). The acknowledgement scripts
//! count into them in the same call; samples and reads are scripts of
//! their own.

use async_trait::async_trait;
use redis::Value;

use super::{
    decode::{array, bytes, int, ms_to_time},
    scripts::{run, SCRIPTS},
    RedisBroker,
};
use crate::{
    broker::history::{
        HistoryBucket, HistoryLayout, HistorySample, LatencyCounts, QueueHistory, Resolution, Series, LATENCY_RANGES,
    },
    error::{Error, Result},
    job::QueueName,
};

/// The layout as the scripts take it, first in ARGV: minute width (ms),
/// minutes kept, hour width (ms), hours kept.
pub(super) fn layout_args(layout: &HistoryLayout) -> [u64; 4] {
    [
        layout.width_ms(Resolution::Minute),
        u64::from(layout.kept(Resolution::Minute)),
        layout.width_ms(Resolution::Hour),
        u64::from(layout.kept(Resolution::Hour)),
    ]
}

/// The fields of one slot, in the order `history_read` returns them.
const FIELDS: usize = 6 + LATENCY_RANGES;

/// A stored counter: a number, or 0 for anything else (another program
/// wrote the field).
fn counter(value: &Value) -> u64 {
    match value {
        Value::Nil => 0,
        other => int("history", other).map_or(0, |n| n.max(0) as u64),
    }
}

fn sampled(value: &Value) -> Option<u64> {
    match value {
        Value::Nil => None,
        other => int("history", other).ok().map(|n| n.max(0) as u64),
    }
}

/// One slot's fields as a bucket (its start is set by [`Series::put`]).
fn bucket(fields: &[Value]) -> HistoryBucket {
    HistoryBucket {
        completed: counter(&fields[1]),
        retried: counter(&fields[2]),
        dead_lettered: counter(&fields[3]),
        ready: sampled(&fields[4]),
        oldest_ready_age_ms: sampled(&fields[5]),
        latency: LatencyCounts(std::array::from_fn(|i| counter(&fields[6 + i]))),
        ..HistoryBucket::default()
    }
}

#[async_trait]
impl QueueHistory for RedisBroker {
    fn history_layout(&self) -> HistoryLayout {
        self.history
    }

    async fn record_sample(&self, queue: &QueueName, sample: &HistorySample) -> Result<()> {
        let k = self.keys(queue);
        let age = sample.oldest_ready_age_ms.map(|a| a.to_string()).unwrap_or_default();
        let call = SCRIPTS
            .history_sample
            .call(&[&k.history_minute, &k.history_hour])
            .arg(&layout_args(&self.history)[..])
            .arg(sample.ready)
            .arg(age)
            .arg(&sample.latency.0[..]);
        run(&mut self.conn(), call).await?;
        Ok(())
    }

    async fn history(&self, queue: &QueueName, resolution: Resolution, count: u32) -> Result<Series> {
        let k = self.keys(queue);
        let key = match resolution {
            Resolution::Minute => &k.history_minute,
            Resolution::Hour => &k.history_hour,
        };
        let kept = self.history.kept(resolution);
        let count = count.clamp(1, kept);
        let call = SCRIPTS
            .history_read
            .call(&[key])
            .arg(self.history.width_ms(resolution))
            .arg(kept)
            .arg(count);
        let mut reply = array("history", run(&mut self.conn(), call).await?)?.into_iter();
        let now = reply
            .next()
            .map(|v| int("history", &v))
            .transpose()?
            .ok_or_else(|| Error::Backend("an empty reply from Redis for the queue history".into()))?;
        let now = ms_to_time(now);
        let mut series = Series::empty(&self.history, resolution, count, now);
        let last = self.history.bucket_of(resolution, now);
        let first = last - i64::from(count) + 1;
        for (number, slot) in (first..=last).zip(reply) {
            let fields = array("history", slot)?;
            if fields.len() == FIELDS {
                series.put(number, bucket(&fields));
            } else if !fields.is_empty() {
                let shown = fields.first().cloned().and_then(bytes).unwrap_or_default();
                return Err(Error::Backend(
                    format!(
                        "unexpected reply from Redis for the queue history (a slot of {} fields for bucket {})",
                        fields.len(),
                        String::from_utf8_lossy(&shown)
                    )
                    .into(),
                ));
            }
        }
        Ok(series)
    }
}
