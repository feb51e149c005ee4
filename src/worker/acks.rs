//! The queue of succeeded jobs between a queue's slots and its acker.
//!
//! A mutex-guarded vector the acker swaps out whole, with two wake-ups:
//! the acker waits for the first item, slots wait for room. Cheaper per job
//! than a bounded channel, which takes and returns a permit and may wake the
//! receiver for every message.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Mutex, MutexGuard,
};

use tokio::sync::Notify;

pub(super) struct AckQueue<T> {
    items: Mutex<Vec<T>>,
    /// The most items waiting: when the broker acknowledges slower than
    /// slots finish, slots wait rather than finished jobs piling up.
    capacity: usize,
    /// Set once every slot has stopped: the acker drains what is left, then stops.
    closed: AtomicBool,
    /// Set if the acker stopped early (it was aborted or panicked): pushers
    /// then take the items back and complete them themselves.
    gone: AtomicBool,
    /// Woken when the queue goes from empty to not empty (or closes).
    filled: Notify,
    /// Woken when the acker takes items from a full queue.
    drained: Notify,
}

impl<T> AckQueue<T> {
    pub(super) fn new(capacity: usize) -> Self {
        AckQueue {
            items: Mutex::new(Vec::with_capacity(capacity)),
            capacity: capacity.max(1),
            closed: AtomicBool::new(false),
            gone: AtomicBool::new(false),
            filled: Notify::new(),
            drained: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<T>> {
        // Push and take cannot leave the vector inconsistent, so a poisoned
        // lock is still usable.
        self.items.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds an item, waiting while the queue is full. If the acker is
    /// gone, hands back the item with everything still queued, for the
    /// caller to acknowledge itself.
    pub(super) async fn push(&self, item: T) -> Result<(), Vec<T>> {
        let mut item = Some(item);
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            let was_empty = {
                let mut items = self.lock();
                if self.gone.load(Ordering::Acquire) {
                    let mut left = std::mem::take(&mut *items);
                    left.extend(item.take());
                    return Err(left);
                }
                if items.len() < self.capacity {
                    let was_empty = items.is_empty();
                    items.extend(item.take());
                    Some(was_empty)
                } else {
                    None
                }
            };
            match was_empty {
                // The acker only sleeps on an empty queue.
                Some(true) => {
                    self.filled.notify_one();
                    return Ok(());
                }
                Some(false) => return Ok(()),
                None => drained.await,
            }
        }
    }

    /// Moves up to `max` items, oldest first, into the empty `into`,
    /// waiting for at least one; `false` once the queue is closed and
    /// empty. The two vectors trade places when everything fits, so a
    /// steady acker allocates nothing.
    pub(super) async fn take(&self, into: &mut Vec<T>, max: usize) -> bool {
        debug_assert!(into.is_empty());
        loop {
            let filled = self.filled.notified();
            tokio::pin!(filled);
            filled.as_mut().enable();
            let was_full = {
                let mut items = self.lock();
                let was_full = items.len() >= self.capacity;
                if items.len() <= max {
                    std::mem::swap(&mut *items, into);
                } else {
                    into.extend(items.drain(..max));
                }
                was_full
            };
            if !into.is_empty() {
                if was_full {
                    self.drained.notify_waiters();
                }
                return true;
            }
            if self.closed.load(Ordering::Acquire) {
                return false;
            }
            filled.await;
        }
    }

    /// Tells the acker no more items come: it stops once it has taken the rest.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.filled.notify_one();
    }

    /// For the acker to hold while it runs: when dropped (the acker ended,
    /// normally or not), pushers stop waiting on it.
    pub(super) fn acker_guard(&self) -> AckerGuard<'_, T> {
        AckerGuard(self)
    }
}

/// Marks the acker gone when dropped; see [`AckQueue::acker_guard`].
pub(super) struct AckerGuard<'a, T>(&'a AckQueue<T>);

impl<T> Drop for AckerGuard<'_, T> {
    fn drop(&mut self) {
        self.0.gone.store(true, Ordering::Release);
        self.0.drained.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;

    #[tokio::test]
    async fn take_returns_items_in_order_in_batches_of_max() {
        let queue = AckQueue::new(10);
        for i in 0..5 {
            queue.push(i).await.unwrap();
        }
        let mut batch = Vec::new();
        assert!(queue.take(&mut batch, 3).await);
        assert_eq!(std::mem::take(&mut batch), [0, 1, 2]);
        assert!(queue.take(&mut batch, 3).await);
        assert_eq!(batch, [3, 4]);
    }

    #[tokio::test]
    async fn close_lets_the_acker_drain_then_stop() {
        let queue = AckQueue::new(10);
        queue.push(1).await.unwrap();
        queue.close();
        let mut batch = Vec::new();
        assert!(queue.take(&mut batch, 10).await);
        assert_eq!(std::mem::take(&mut batch), [1]);
        assert!(!queue.take(&mut batch, 10).await);
    }

    #[tokio::test]
    async fn an_idle_acker_is_woken_by_a_push() {
        let queue = Arc::new(AckQueue::new(10));
        let acker = tokio::spawn({
            let queue = queue.clone();
            async move {
                let mut batch = Vec::new();
                queue.take(&mut batch, 10).await.then_some(batch)
            }
        });
        tokio::task::yield_now().await;
        assert!(!acker.is_finished(), "the acker waits on the empty queue");
        queue.push(7).await.unwrap();
        let woken = tokio::time::timeout(Duration::from_secs(10), acker).await;
        assert_eq!(woken.expect("the push woke the acker").unwrap(), Some(vec![7]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_makes_pushers_wait_until_the_acker_takes() {
        let queue = Arc::new(AckQueue::new(2));
        queue.push(1).await.unwrap();
        queue.push(2).await.unwrap();
        let pusher = tokio::spawn({
            let queue = queue.clone();
            async move { queue.push(3).await.unwrap() }
        });
        // The pusher cannot finish while the queue is full.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!pusher.is_finished());
        let mut batch = Vec::new();
        assert!(queue.take(&mut batch, 10).await);
        assert_eq!(std::mem::take(&mut batch), [1, 2]);
        pusher.await.unwrap();
        assert!(queue.take(&mut batch, 10).await);
        assert_eq!(batch, [3]);
    }

    #[tokio::test(start_paused = true)]
    async fn when_the_acker_is_gone_pushers_get_everything_back_instead_of_waiting() {
        let queue = Arc::new(AckQueue::new(2));
        let guard = queue.acker_guard();
        queue.push(1).await.unwrap();
        queue.push(2).await.unwrap();
        // Full: this pusher waits for an acker that will never take.
        let pusher = tokio::spawn({
            let queue = queue.clone();
            async move { queue.push(3).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!pusher.is_finished());
        drop(guard);
        assert_eq!(pusher.await.unwrap(), Err(vec![1, 2, 3]));
        assert_eq!(queue.push(4).await, Err(vec![4]));
    }
}
