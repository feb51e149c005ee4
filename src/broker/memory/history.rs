//! The memory broker's queue history: per queue, the minute and hour
//! buckets in ordered maps, pruned to the layout's length on every write.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::MemoryBroker;
use crate::{
    broker::history::{HistoryBucket, HistoryLayout, HistorySample, QueueHistory, Resolution, Series},
    error::Result,
    job::QueueName,
};

/// One queue's buckets, kept under the queue's lock, so counts change in
/// the same step as the acknowledgement.
#[derive(Debug, Default)]
pub(super) struct QueueHistoryState {
    /// Minute buckets by number.
    minutes: BTreeMap<i64, HistoryBucket>,
    /// Hour buckets by number.
    hours: BTreeMap<i64, HistoryBucket>,
}

/// Which counter an acknowledgement adds to.
#[derive(Debug, Clone, Copy)]
pub(super) enum Counted {
    Completed,
    Retried,
    DeadLettered,
}

impl QueueHistoryState {
    fn level(&mut self, resolution: Resolution) -> &mut BTreeMap<i64, HistoryBucket> {
        match resolution {
            Resolution::Minute => &mut self.minutes,
            Resolution::Hour => &mut self.hours,
        }
    }

    /// The bucket of `resolution` holding `now`, after dropping the ones
    /// that expired.
    fn current(&mut self, layout: &HistoryLayout, resolution: Resolution, now: DateTime<Utc>) -> &mut HistoryBucket {
        let bucket = layout.bucket_of(resolution, now);
        let oldest_kept = bucket - i64::from(layout.kept(resolution)) + 1;
        let start = layout.start_of(resolution, bucket);
        let level = self.level(resolution);
        while level.first_key_value().is_some_and(|(b, _)| *b < oldest_kept) {
            level.pop_first();
        }
        level.entry(bucket).or_insert_with(|| HistoryBucket::empty(start))
    }

    /// Adds `n` acknowledgements of one kind at `now`.
    pub(super) fn count(&mut self, layout: &HistoryLayout, now: DateTime<Utc>, what: Counted, n: u64) {
        for resolution in [Resolution::Minute, Resolution::Hour] {
            let bucket = self.current(layout, resolution, now);
            let counter = match what {
                Counted::Completed => &mut bucket.completed,
                Counted::Retried => &mut bucket.retried,
                Counted::DeadLettered => &mut bucket.dead_lettered,
            };
            *counter = counter.saturating_add(n);
        }
    }

    fn sample(&mut self, layout: &HistoryLayout, now: DateTime<Utc>, sample: &HistorySample) {
        self.current(layout, Resolution::Minute, now).fold_sample_first(sample);
        self.current(layout, Resolution::Hour, now).fold_sample_max(sample);
    }

    fn series(&self, layout: &HistoryLayout, resolution: Resolution, count: u32, now: DateTime<Utc>) -> Series {
        let mut series = Series::empty(layout, resolution, count, now);
        let level = match resolution {
            Resolution::Minute => &self.minutes,
            Resolution::Hour => &self.hours,
        };
        let last = layout.bucket_of(resolution, now);
        let oldest_kept = last - i64::from(layout.kept(resolution)) + 1;
        for (bucket, stored) in level.range(oldest_kept..=last) {
            series.put(*bucket, stored.clone());
        }
        series
    }
}

#[async_trait]
impl QueueHistory for MemoryBroker {
    fn history_layout(&self) -> HistoryLayout {
        self.history_layout
    }

    async fn record_sample(&self, queue: &QueueName, sample: &HistorySample) -> Result<()> {
        let now = self.clock.now();
        let Some(q) = self.existing(queue) else {
            return Ok(());
        };
        q.lock().history.sample(&self.history_layout, now, sample);
        Ok(())
    }

    async fn history(&self, queue: &QueueName, resolution: Resolution, count: u32) -> Result<Series> {
        let now = self.clock.now();
        let layout = &self.history_layout;
        Ok(match self.existing(queue) {
            Some(q) => q.lock().history.series(layout, resolution, count, now),
            None => Series::empty(layout, resolution, count, now),
        })
    }
}
