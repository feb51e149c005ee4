//! Queue history: buckets fill with what acknowledgements and samples
//! record, add up to the counters, and expire.
//!
//! The cases read the bucket widths from the backend's
//! [`HistoryLayout`]: on a paused clock the default (minutes and hours)
//! costs nothing; a backend on a real clock runs them with
//! [`short_history_layout`] so buckets fill and expire in seconds.

use std::time::Duration;

use super::{
    support::{across, enqueue_new, failure, job, queue, reserve_now, stats, OrFail, LONG},
    Fixture,
};
use crate::broker::{
    history::{HistoryLayout, HistorySample, LatencyCounts, Resolution, Series},
    Backend, CancelOutcome, QueueStats,
};
use crate::job::QueueName;

/// A layout for backends on a real clock: minute buckets of 400 ms (8
/// kept, 3.2 s, so a case slowed by a busy machine still sums buckets that
/// have not expired), hour buckets of 1.6 s (5 kept, 8 s).
pub fn short_history_layout() -> HistoryLayout {
    let ms = Duration::from_millis;
    HistoryLayout::new(ms(400), 8, ms(1_600), 5).unwrap_or_default()
}

async fn series(b: &dyn Backend, q: &QueueName, resolution: Resolution) -> Series {
    let kept = b.history_layout().kept(resolution);
    b.history(q, resolution, kept).await.or_fail("history")
}

/// Enqueues 5 jobs and settles 4 of them: 2 completed, 1 retried (far
/// ahead), 1 dead-lettered; 1 more is snoozed, which counts nothing.
async fn settle_some<F: Fixture + ?Sized>(f: &F, b: &dyn Backend, q: &QueueName) {
    enqueue_new(b, (0..5).map(|n| job(f, q, "history", n)).collect()).await;
    let held = reserve_now(b, q, 5, LONG).await;
    assert_eq!(held.len(), 5, "expected 5 ready jobs on {q}");
    let leases: Vec<_> = held[..2].iter().map(|r| r.lease.clone()).collect();
    b.complete(&leases).await.or_fail("complete");
    b.retry_after(&held[2], Duration::from_secs(7 * 24 * 3600), failure(f, "x"))
        .await
        .or_fail("retry_after");
    b.dead_letter(&held[3], Some(failure(f, "x")), "x")
        .await
        .or_fail("dead_letter");
    b.snooze(&held[4], Duration::from_secs(7 * 24 * 3600))
        .await
        .or_fail("snooze");
}

fn counts(s: &QueueStats) -> (u64, u64, u64) {
    (s.completed, s.retried, s.dead_lettered)
}

fn totals(series: &Series) -> (u64, u64, u64) {
    let t = series.totals();
    (t.completed, t.retried, t.dead_lettered)
}

/// Acknowledgements fill the current minute and hour buckets, samples add
/// their depth and latencies, and a series is the `count` most recent
/// buckets ending with now, one width apart.
pub async fn history_buckets_fill<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let q = queue(f, "history-fill");
    let layout = b.history_layout();
    let before = f.now();
    settle_some(f, &*b, &q).await;
    let mut latency = LatencyCounts::default();
    latency.record(Duration::from_millis(3));
    latency.record(Duration::from_millis(40));
    b.record_sample(&q, &HistorySample::new(7, Some(1_500), latency))
        .await
        .or_fail("record_sample");
    let after = f.now();

    for resolution in [Resolution::Minute, Resolution::Hour] {
        let width = layout.width_ms(resolution);
        let s = series(&*b, &q, resolution).await;
        assert_eq!(s.resolution, resolution);
        assert_eq!(s.width_ms, width);
        assert_eq!(
            s.buckets.len(),
            layout.kept(resolution) as usize,
            "{resolution} buckets"
        );
        for pair in s.buckets.windows(2) {
            let gap = (pair[1].start - pair[0].start).num_milliseconds();
            assert_eq!(gap, width as i64, "{resolution} buckets must be one width apart");
        }
        let last = s.buckets.last().or_fail("a series without buckets").start;
        let tol = chrono::TimeDelta::from_std(f.tolerance()).unwrap_or_default();
        assert!(
            last <= after + tol && after - tol < last + chrono::TimeDelta::milliseconds(width as i64),
            "the last {resolution} bucket ({last}) must hold now ({after})"
        );
        assert_eq!(totals(&s), (2, 1, 1), "{resolution}: completed, retried, dead-lettered");
        let filled: Vec<_> = s
            .buckets
            .iter()
            .filter(|bucket| bucket.completed + bucket.failed() > 0)
            .collect();
        let first = filled.first().or_fail("no bucket filled");
        assert!(
            first.start + chrono::TimeDelta::milliseconds(width as i64) > before - tol,
            "{resolution}: counts landed in a bucket that ended before the jobs ran"
        );
        let sampled: Vec<_> = s.buckets.iter().filter(|b| b.ready.is_some()).collect();
        assert_eq!(sampled.len(), 1, "{resolution}: one bucket holds the sample");
        assert_eq!(
            (sampled[0].ready, sampled[0].oldest_ready_age_ms),
            (Some(7), Some(1_500))
        );
        assert_eq!(s.totals().latency, latency, "{resolution}: the latencies recorded");
        let p = sampled[0].percentiles().or_fail("percentiles of a sampled bucket");
        assert_eq!((p.p50_ms, p.p99_ms), (5, 50), "{resolution}: percentiles");
    }

    let few = b.history(&q, Resolution::Minute, 2).await.or_fail("history");
    assert_eq!(few.buckets.len(), 2, "a series has the buckets asked for");
    let many = b.history(&q, Resolution::Minute, u32::MAX).await.or_fail("history");
    assert_eq!(
        many.buckets.len(),
        layout.kept(Resolution::Minute) as usize,
        "at most the buckets kept"
    );
    let other = queue(f, "history-other");
    let empty = series(&*b, &other, Resolution::Minute).await;
    assert_eq!(totals(&empty), (0, 0, 0), "another queue's history is its own");
    assert!(empty.buckets.iter().all(|b| b.ready.is_none()));
}

/// Over buckets not yet expired, the buckets add up to the stats counters
/// (an operator's cancel of a waiting job counts as dead-lettered),
/// however the acknowledgements spread over buckets; a later sample of the
/// same minute bucket does not replace the first, and an hour bucket keeps
/// the highest.
pub async fn history_adds_up_to_the_counters<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let q = queue(f, "history-sum");
    let layout = b.history_layout();
    let minute = Duration::from_millis(layout.width_ms(Resolution::Minute));
    for round in 0..3 {
        settle_some(f, &*b, &q).await;
        if round < 2 {
            f.advance(minute).await;
        }
    }
    // An operator's cancel of a waiting job is a dead-lettering too.
    let waiting = job(f, &q, "cancelled", 99);
    let id = waiting.id;
    b.enqueue(vec![waiting]).await.or_fail("enqueue");
    assert_eq!(b.cancel(&q, id).await.or_fail("cancel"), CancelOutcome::DeadLettered);
    let s = stats(&*b, &q).await;
    assert_eq!(counts(&s), (6, 3, 4), "{s:?}");
    for resolution in [Resolution::Minute, Resolution::Hour] {
        let series = series(&*b, &q, resolution).await;
        assert_eq!(
            totals(&series),
            counts(&s),
            "{resolution} buckets must add up to the counters"
        );
    }
    let minutes = series(&*b, &q, Resolution::Minute).await;
    let filled = minutes.buckets.iter().filter(|b| b.completed > 0).count();
    assert!(
        filled >= 3,
        "three rounds a minute apart fill three minute buckets, not {filled}"
    );

    let sample = |ready| HistorySample::new(ready, None, LatencyCounts::default());
    b.record_sample(&q, &sample(5)).await.or_fail("record_sample");
    b.record_sample(&q, &sample(9)).await.or_fail("record_sample");
    let minutes = series(&*b, &q, Resolution::Minute).await;
    let sampled: Vec<_> = minutes.buckets.iter().filter_map(|b| b.ready).collect();
    // Two calls may straddle a minute boundary on a real clock.
    assert!(
        sampled == [5] || sampled == [5, 9],
        "the first sample of a minute is kept, got {sampled:?}"
    );
    let hours = series(&*b, &q, Resolution::Hour).await;
    let highest = hours.buckets.iter().filter_map(|b| b.ready).max();
    assert_eq!(highest, Some(9), "an hour bucket keeps the highest sample");
}

/// Buckets expire: once the layout's number of minute buckets has passed,
/// the minute series is empty while the hour buckets still hold the
/// counts; once the hour buckets have passed too, they are empty as well.
pub async fn history_buckets_expire<F: Fixture + ?Sized>(f: &F) {
    let b = f.backend();
    let q = queue(f, "history-expire");
    let layout = b.history_layout();
    settle_some(f, &*b, &q).await;
    b.record_sample(&q, &HistorySample::new(3, Some(10), LatencyCounts::default()))
        .await
        .or_fail("record_sample");
    let minute_width = Duration::from_millis(layout.width_ms(Resolution::Minute));
    let minutes_kept = layout.retention(Resolution::Minute) + minute_width + across(f.tolerance());
    f.advance(minutes_kept).await;
    let minutes = series(&*b, &q, Resolution::Minute).await;
    assert_eq!(
        totals(&minutes),
        (0, 0, 0),
        "minute buckets past their retention expire"
    );
    assert!(minutes.buckets.iter().all(|b| b.ready.is_none()), "samples expire too");
    if layout.retention(Resolution::Hour) > minutes_kept + layout.retention(Resolution::Minute) {
        let hours = series(&*b, &q, Resolution::Hour).await;
        assert_eq!(totals(&hours), (2, 1, 1), "hour buckets outlive the minute ones");
    }
    let hour_width = Duration::from_millis(layout.width_ms(Resolution::Hour));
    f.advance(layout.retention(Resolution::Hour) + hour_width).await;
    let hours = series(&*b, &q, Resolution::Hour).await;
    assert_eq!(totals(&hours), (0, 0, 0), "hour buckets past their retention expire");
    assert!(hours.buckets.iter().all(|b| b.ready.is_none() && b.latency.is_empty()));
    // The counters are not history: they stay.
    assert_eq!(counts(&stats(&*b, &q).await), (2, 1, 1));
}
