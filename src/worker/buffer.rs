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

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex, MutexGuard,
    },
};

use tokio::sync::Notify;

use crate::broker::Reservation;

pub(super) struct Buffer {
    items: Mutex<VecDeque<Reservation>>,
    /// How many reservations may wait here.
    capacity: usize,
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
    pub(super) fn new(capacity: usize, wake_limit: usize) -> Self {
        Buffer {
            items: Mutex::new(VecDeque::with_capacity(capacity)),
            capacity: capacity.max(1),
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

    /// The fill level at or below which the fetcher is woken to refill.
    fn low_water(&self) -> usize {
        self.capacity / 2
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
                return self.capacity - len;
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
