//! [`Cancellation`]: how a running handler learns that an operator
//! cancelled its job.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use tokio::sync::Notify;

/// A job's cancellation signal, raised once when an operator cancels the
/// running job ([`JobControl::cancel`](crate::broker::JobControl::cancel)).
///
/// Cancellation is cooperative: the handler checks
/// [`is_cancelled`](Cancellation::is_cancelled) between steps, or races its
/// work against [`cancelled`](Cancellation::cancelled), and returns. If it
/// then returns an error (any error), the job goes to the dead-letter
/// queue as cancelled instead of being retried; if it returns `Ok`, the job
/// completes. A handler that ignores the signal runs on until it finishes
/// or its job timeout ends it. The worker learns of a cancel at its next
/// lease heartbeat, so the signal comes up to one heartbeat interval after
/// the operator's request.
///
/// ```
/// use flagship_worker::{Cancellation, HandlerError};
///
/// async fn step(cancel: &Cancellation) -> Result<(), HandlerError> {
///     tokio::select! {
///         _ = cancel.cancelled() => Err(HandlerError::permanent("cancelled")),
///         _ = tokio::time::sleep(std::time::Duration::from_millis(1)) => Ok(()),
///     }
/// }
/// # let _ = step;
/// ```
#[derive(Debug, Clone, Default)]
pub struct Cancellation {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Raised once, never lowered.
    cancelled: AtomicBool,
    /// Wakes every task waiting in [`Cancellation::cancelled`].
    notify: Notify,
}

impl Cancellation {
    /// A signal not raised yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Raises the signal (the worker does, when the broker reports the
    /// job cancelled); waiters wake.
    pub fn cancel(&self) {
        if !self.inner.cancelled.swap(true, Ordering::AcqRel) {
            self.inner.notify.notify_waiters();
        }
    }

    /// Whether the job was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::Acquire)
    }

    /// Completes once the job is cancelled (at once if it already is).
    pub async fn cancelled(&self) {
        loop {
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            // Registered before the check, so a cancel in between still wakes us.
            notified.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waiters_wake_when_cancelled_and_later_calls_return_at_once() {
        let cancel = Cancellation::new();
        let waiter = tokio::spawn({
            let cancel = cancel.clone();
            async move { cancel.cancelled().await }
        });
        tokio::task::yield_now().await;
        assert!(!cancel.is_cancelled() && !waiter.is_finished());
        cancel.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(cancel.is_cancelled());
        cancel.cancelled().await;
    }
}
