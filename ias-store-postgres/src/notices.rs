//! Change notices: one connection per store listens on `ias_changes`.
//!
//! Migration 5 makes every statement that appends to the change feed call
//! `pg_notify('ias_changes', '')`; PostgreSQL delivers the notice when the
//! transaction commits. The listening connection is opened on the first
//! wait, and opened again after it breaks; notices sent meanwhile are lost,
//! so a (re)connection counts as a notice itself and the governor reads the
//! feed.

use std::sync::Mutex;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::store::ACQUIRE_TIMEOUT;

/// The channel the change feed's trigger notifies.
pub(crate) const CHANNEL: &str = "ias_changes";

/// How long the listener waits before connecting again after a failure.
const RECONNECT_DELAY: Duration = Duration::from_millis(500);

/// The notices a store has received, counted, and the task that receives them.
pub(crate) struct Notices {
    options: PgConnectOptions,
    newest: watch::Sender<u64>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Notices {
    pub(crate) fn new(options: PgConnectOptions) -> Self {
        Notices {
            options,
            newest: watch::channel(0).0,
            task: Mutex::new(None),
        }
    }

    /// Waits until a notice newer than `seen` arrives, or `timeout`; the newest notice's number.
    pub(crate) async fn wait(&self, seen: u64, timeout: Duration) -> u64 {
        self.start();
        let mut newest = self.newest.subscribe();
        let now = *newest.borrow_and_update();
        if now > seen {
            return now;
        }
        match tokio::time::timeout(timeout, newest.changed()).await {
            Ok(Ok(())) => *newest.borrow(),
            _ => seen,
        }
    }

    /// Starts listening, once.
    fn start(&self) {
        let mut task = self.task.lock().unwrap_or_else(|e| e.into_inner());
        if task.is_none() {
            let (options, newest) = (self.options.clone(), self.newest.clone());
            *task = Some(tokio::spawn(listen(options, newest)));
        }
    }

    /// Stops listening.
    pub(crate) fn stop(&self) {
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            task.abort();
        }
    }
}

impl Drop for Notices {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Listens until stopped, connecting again whenever the connection breaks.
async fn listen(options: PgConnectOptions, newest: watch::Sender<u64>) {
    // A pool of one, only so that the listener can connect again by itself.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_lazy_with(options);
    loop {
        if let Err(err) = session(&pool, &newest).await {
            tracing::debug!(error = %err, "change notices interrupted; listening again");
        }
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}

/// One listening connection, until it fails.
async fn session(pool: &sqlx::PgPool, newest: &watch::Sender<u64>) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    // Changes made while nobody listened are only in the feed: read it.
    bump(newest);
    loop {
        // `None`: the connection broke and was made again; notices may be lost.
        let _notice = listener.try_recv().await?;
        bump(newest);
    }
}

fn bump(newest: &watch::Sender<u64>) {
    newest.send_modify(|n| *n += 1);
}
