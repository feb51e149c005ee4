//! The prefetch buffer between a queue's fetcher and its slots.
//!
//! A plain mutex-guarded deque with two wake-ups: slots wait for items, the
//! fetcher waits for space. Cheaper per job than a channel behind an async
//! mutex, since slots pop under a short synchronous lock.
//!
//! Slots are woken sparingly. A slot keeps taking reservations while it
//! finds them, so a push wakes at most one slot per runtime thread; a slot
//! whose job has to wait wakes another in its place. Jobs that finish
//! without waiting therefore run back to back on few slots, with no
//! wake-up between them, and jobs that wait still overlap up to the
//! queue's concurrency.
//!
//! Unless the queue fixes its prefetch, the buffer's capacity adapts
//! ([`Prefetch`]): it doubles when slots ran out of work while the broker
//! still had a full batch to give (the round trip is longer than the
//! buffer's worth of work), and halves when draining half of it took longer
//! than [`SLOW_DRAIN`] (jobs are slow, so fewer leased ahead suffice and
//! other workers get the rest).

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Mutex, MutexGuard,
    },
    time::Duration,
};

use tokio::sync::Notify;

use crate::broker::Reservation;

/// Draining half the buffer taking longer than this means it holds more
/// work than any broker round trip needs hiding: the prefetch halves.
pub(super) const SLOW_DRAIN: Duration = Duration::from_millis(100);

/// The range a queue's prefetch moves in, and the rule that moves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Prefetch {
    pub(super) min: usize,
    pub(super) max: usize,
}

impl Prefetch {
    /// A prefetch that never changes.
    pub(super) fn fixed(n: usize) -> Self {
        Prefetch { min: n, max: n }
    }

    /// The capacity after a refill: doubled if slots starved although the
    /// broker filled the whole request, halved if draining the last half
    /// took longer than [`SLOW_DRAIN`], else unchanged; always within
    /// `min..=max`.
    pub(super) fn next(&self, current: usize, starved: bool, full_batch: bool, drain_time: Duration) -> usize {
        let next = if starved && full_batch {
            current.saturating_mul(2)
        } else if drain_time > SLOW_DRAIN {
            current / 2
        } else {
            current
        };
        next.clamp(self.min, self.max)
    }
}

pub(super) struct Buffer {
    items: Mutex<VecDeque<Reservation>>,
    /// How many reservations may wait here; changed only by the fetcher,
    /// through [`Buffer::adapt`].
    capacity: AtomicUsize,
    /// The range `capacity` adapts in.
    prefetch: Prefetch,
    /// Set when a slot found the buffer empty; cleared by [`Buffer::adapt`].
    starved: AtomicBool,
    /// The most idle slots one push wakes: the runtime's worker threads.
    /// More could not run at once; a slot whose job waits hands the rest
    /// on ([`Buffer::hand_off`]), so waking one slot per job would only
    /// add wake-ups of slots that find the buffer already drained.
    wake_limit: usize,
    /// Set once the fetcher stops: slots drain what is left, then stop.
    closed: AtomicBool,
    /// Woken when reservations are pushed (or the buffer closes).
    filled: Notify,
    /// Woken when a slot takes a reservation.
    drained: Notify,
}

impl Buffer {
    pub(super) fn new(prefetch: Prefetch, wake_limit: usize) -> Self {
        let prefetch = Prefetch {
            min: prefetch.min.max(1),
            max: prefetch.max.max(prefetch.min).max(1),
        };
        Buffer {
            items: Mutex::new(VecDeque::with_capacity(prefetch.min)),
            capacity: AtomicUsize::new(prefetch.min),
            prefetch,
            starved: AtomicBool::new(false),
            wake_limit: wake_limit.max(1),
            closed: AtomicBool::new(false),
            filled: Notify::new(),
            drained: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Reservation>> {
        // Push and pop cannot leave the deque inconsistent, so a poisoned
        // lock is still usable.
        self.items.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn capacity(&self) -> usize {
        self.capacity.load(Ordering::Relaxed)
    }

    /// The fill level at or below which the fetcher is woken to refill.
    fn low_water(&self) -> usize {
        self.capacity() / 2
    }

    /// Lets the capacity adapt after a refill (see [`Prefetch::next`]);
    /// returns it. `backlog`: the broker filled this request and the one
    /// before, so it has more to give. Called by the fetcher only.
    pub(super) fn adapt(&self, backlog: bool, drain_time: Duration) -> usize {
        let current = self.capacity();
        let starved = self.starved.swap(false, Ordering::Relaxed);
        let next = self.prefetch.next(current, starved, backlog, drain_time);
        if next != current {
            self.capacity.store(next, Ordering::Relaxed);
            tracing::debug!(from = current, to = next, "prefetch adapted");
        }
        next
    }

    /// Waits until the buffer has drained to its low-water mark (half
    /// full), then says how much room there is. Refilling in halves keeps
    /// a slot from ever waiting while batching reservations, instead of one
    /// broker call and one wake-up per job taken.
    pub(super) async fn wait_for_space(&self) -> usize {
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            let len = self.lock().len();
            if len <= self.low_water() {
                return self.capacity() - len;
            }
            drained.await;
        }
    }

    /// Adds reservations and wakes idle slots, one per reservation up to
    /// the wake limit.
    pub(super) fn push(&self, reservations: Vec<Reservation>) {
        let n = reservations.len();
        self.lock().extend(reservations);
        for _ in 0..n.min(self.wake_limit) {
            self.filled.notify_one();
        }
    }

    /// Called by a slot whose job has to wait (its handler returned
    /// pending): wakes an idle slot to take the next reservation, if there
    /// is one, so waiting jobs overlap up to the queue's concurrency.
    pub(super) fn hand_off(&self) {
        if !self.lock().is_empty() {
            self.filled.notify_one();
        }
    }

    /// The next reservation, if one is waiting.
    pub(super) fn try_pop(&self) -> Option<Reservation> {
        let (reservation, left) = {
            let mut items = self.lock();
            let reservation = items.pop_front()?;
            (reservation, items.len())
        };
        if left == self.low_water() {
            self.drained.notify_one();
        }
        Some(reservation)
    }

    /// The next reservation; `None` once the buffer is closed and empty.
    pub(super) async fn pop(&self) -> Option<Reservation> {
        if let Some(reservation) = self.try_pop() {
            return Some(reservation);
        }
        loop {
            let filled = self.filled.notified();
            tokio::pin!(filled);
            filled.as_mut().enable();
            if let Some(reservation) = self.try_pop() {
                return Some(reservation);
            }
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            self.starved.store(true, Ordering::Relaxed);
            filled.await;
        }
    }

    /// Stops the buffer and returns what no slot took.
    pub(super) fn close(&self) -> Vec<Reservation> {
        self.closed.store(true, Ordering::Release);
        self.filled.notify_waiters();
        self.lock().drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        broker::{Lease, LeaseToken},
        JobEnvelope, QueueName,
    };

    fn reservation() -> Reservation {
        let queue = QueueName::new("q").unwrap();
        let envelope = JobEnvelope::new("k", queue.clone(), serde_json::json!({}), chrono::Utc::now());
        Reservation {
            lease: Lease {
                id: envelope.id,
                queue,
                token: LeaseToken(1),
            },
            envelope: Arc::new(envelope),
            deadline: chrono::Utc::now(),
            expired_attempt_started_at: None,
            cancel_requested: false,
        }
    }

    #[tokio::test]
    async fn the_buffer_grows_after_a_slot_found_it_empty_and_asks_for_more_room() {
        let buffer = Arc::new(Buffer::new(Prefetch { min: 2, max: 8 }, 1));
        assert_eq!(buffer.wait_for_space().await, 2);
        // A slot waits on the empty buffer: it starved.
        let slot = tokio::spawn({
            let buffer = buffer.clone();
            async move { buffer.pop().await.is_some() }
        });
        while !buffer.starved.load(Ordering::Relaxed) {
            tokio::task::yield_now().await;
        }
        buffer.push(vec![reservation(), reservation()]);
        assert!(slot.await.unwrap());
        assert_eq!(buffer.adapt(true, FAST), 4);
        // One left of four: room for three.
        assert_eq!(buffer.wait_for_space().await, 3);
        // Nobody starved since: it stays.
        assert_eq!(buffer.adapt(true, FAST), 4);
    }

    const FAST: Duration = Duration::from_micros(200);
    const SLOW: Duration = Duration::from_millis(500);

    #[test]
    fn a_fixed_prefetch_never_moves() {
        let fixed = Prefetch::fixed(10);
        assert_eq!(fixed.next(10, true, true, FAST), 10);
        assert_eq!(fixed.next(10, false, false, SLOW), 10);
    }

    #[test]
    fn starving_slots_with_a_backlog_double_it_up_to_the_max() {
        let range = Prefetch { min: 50, max: 400 };
        let mut capacity = 50;
        let mut seen = vec![];
        for _ in 0..5 {
            capacity = range.next(capacity, true, true, FAST);
            seen.push(capacity);
        }
        assert_eq!(seen, [100, 200, 400, 400, 400]);
    }

    #[test]
    fn starving_without_a_backlog_changes_nothing() {
        // An idle queue: slots wait, but the broker had less than asked.
        let range = Prefetch { min: 50, max: 400 };
        assert_eq!(range.next(100, true, false, FAST), 100);
        // A backlog but no slot waited: the buffer is deep enough.
        assert_eq!(range.next(100, false, true, FAST), 100);
    }

    #[test]
    fn slow_draining_halves_it_down_to_the_min() {
        let range = Prefetch { min: 50, max: 400 };
        let mut capacity = 400;
        let mut seen = vec![];
        for _ in 0..4 {
            capacity = range.next(capacity, false, true, SLOW);
            seen.push(capacity);
        }
        assert_eq!(seen, [200, 100, 50, 50]);
    }
}
