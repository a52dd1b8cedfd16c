//! Knowing when every governed request is done, for a graceful shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};

/// A handle on the governed requests in flight, shared by every clone of a
/// [`GovernLayer`](crate::GovernLayer).
///
/// A request counts from the moment the Layer takes it until its tokens
/// are settled or released, which for a stream is after its last chunk (or
/// after the caller hung up). A host shutting down stops accepting, waits
/// with [`Drain::wait_idle`], and, once its grace period is over, calls
/// [`Drain::cancel`]: streams still open then end at once with what they
/// produced charged. Then it flushes the governor.
#[derive(Clone)]
pub struct Drain {
    shared: Arc<Shared>,
}

struct Shared {
    open: AtomicUsize,
    idle: Notify,
    cancel: watch::Sender<bool>,
}

impl Default for Drain {
    fn default() -> Self {
        let (cancel, _) = watch::channel(false);
        Drain {
            shared: Arc::new(Shared {
                open: AtomicUsize::new(0),
                idle: Notify::new(),
                cancel,
            }),
        }
    }
}

impl std::fmt::Debug for Drain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Drain")
            .field("in_flight", &self.in_flight())
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

impl Drain {
    /// Governed requests not yet settled or released.
    pub fn in_flight(&self) -> usize {
        self.shared.open.load(Ordering::Acquire)
    }

    /// Ends every governed request still running: a request waiting for
    /// the upstream is answered 503 `shutting_down`, a stream ends with an
    /// error after the chunks it had sent. What each produced is charged.
    /// Requests that arrive later are cut off the same way.
    pub fn cancel(&self) {
        self.shared.cancel.send_replace(true);
    }

    /// Whether [`Drain::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        *self.shared.cancel.borrow()
    }

    /// Waits until no governed request is in flight.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.shared.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Waits until no governed request is in flight, for at most `limit`;
    /// whether it got there.
    pub async fn wait_idle_for(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.wait_idle()).await.is_ok()
    }

    /// Counts one request until the returned guard is dropped.
    pub(crate) fn enter(&self) -> InFlight {
        self.shared.open.fetch_add(1, Ordering::AcqRel);
        InFlight {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Resolves when [`Drain::cancel`] is called.
    pub(crate) fn cancelled(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut cancel = self.shared.cancel.subscribe();
        async move {
            // An error means the sender is gone, which never happens while
            // a layer exists; treat it as "never cancelled".
            if cancel.wait_for(|cancelled| *cancelled).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// One governed request in flight; see [`Drain`].
pub(crate) struct InFlight {
    shared: Arc<Shared>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.shared.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiting_ends_when_the_last_request_is_done() {
        let drain = Drain::default();
        assert!(drain.wait_idle_for(Duration::from_millis(10)).await);
        let first = drain.enter();
        let second = drain.enter();
        assert_eq!(drain.in_flight(), 2);
        assert!(!drain.wait_idle_for(Duration::from_millis(10)).await);
        let waiting = tokio::spawn({
            let drain = drain.clone();
            async move { drain.wait_idle().await }
        });
        drop(first);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(second);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn cancel_reaches_every_waiter_even_later_ones() {
        let drain = Drain::default();
        let early = tokio::spawn(drain.cancelled());
        assert!(!drain.is_cancelled());
        drain.cancel();
        tokio::time::timeout(Duration::from_secs(5), early)
            .await
            .unwrap()
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), drain.cancelled())
            .await
            .unwrap();
    }
}
