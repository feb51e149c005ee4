//! Shutdown, as the worker's tasks see it: two signals raised in order.
//!
//! `stop` asks every task to finish what it holds and take nothing new;
//! `abort` follows once the shutdown deadline has passed, and tells the
//! jobs still running to give up so their slots can release them.

use tokio::sync::watch;

/// One shutdown phase, as a task waits for it. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Signal(watch::Receiver<bool>);

/// Raises a [`Signal`] for every clone of it.
#[derive(Debug)]
pub(super) struct Trigger(watch::Sender<bool>);

/// A signal not raised yet, and what raises it.
pub(super) fn signal() -> (Trigger, Signal) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Signal(rx))
}

impl Trigger {
    /// Raises the signal; waiting tasks wake.
    pub(super) fn raise(&self) {
        self.0.send_replace(true);
    }

    /// Whether the signal was raised.
    pub(super) fn is_raised(&self) -> bool {
        *self.0.borrow()
    }
}

impl Signal {
    /// Whether the signal was raised.
    pub(crate) fn is_raised(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once the signal is raised (at once if it was).
    pub(crate) async fn raised(&mut self) {
        // An error means the trigger is gone, which only happens once the
        // worker has stopped: resolving then is right too.
        let _ = self.0.wait_for(|raised| *raised).await;
    }
}

/// What a queue's slots watch: stop taking jobs, then abort the running ones.
#[derive(Debug, Clone)]
pub(super) struct Shutdown {
    /// Raised when the worker starts shutting down.
    pub(super) stop: Signal,
    /// Raised when the shutdown deadline passed with jobs still running.
    pub(super) abort: Signal,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_raised_signal_wakes_every_clone_and_stays_raised() {
        let (trigger, signal) = signal();
        let mut waiting = signal.clone();
        let waiter = tokio::spawn(async move { waiting.raised().await });
        assert!(!signal.is_raised());
        trigger.raise();
        waiter.await.unwrap();
        let mut late = signal.clone();
        late.raised().await;
        assert!(signal.is_raised() && trigger.is_raised());
    }

    #[tokio::test]
    async fn a_dropped_trigger_releases_waiters() {
        let (trigger, mut signal) = signal();
        drop(trigger);
        signal.raised().await;
    }
}
