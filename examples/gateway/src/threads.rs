//! Serving threads: one event loop per thread, no request moved between threads.
//!
//! Each serving thread runs a single-threaded tokio runtime and serves
//! every request of the connections handed to it, upstream calls included
//! (each thread holds its own upstream connections), so a request never
//! moves from one thread to another, but for its store calls (SQLite's run
//! on a blocking pool). On a multi-threaded runtime, work
//! stealing moves the tasks of one proxied request between threads, and
//! each move wakes a thread: with one serving thread per CPU the gateway
//! spends about a fifth less CPU per request, and carries about half as
//! many requests again when the CPU is the limit (README, "Gateway
//! overhead"). One task accepts connections and hands them to the threads
//! in turn, so each serves as many: threads that each accepted on the
//! shared socket split them unevenly, and the busier one answered later.
//!
//! The threads outlive serving: they stay up, driving their event loops,
//! until [`ServingThreads::release`], because connections to the store
//! opened while serving belong to a thread's event loop, and the last usage
//! is written through them after serving stops.

use std::future::IntoFuture;
use std::io;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::thread::JoinHandle;
use std::time::Duration;

use axum::Router;
use axum::serve::Listener;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tracing::warn;

/// Where the serving threads are in their life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// Accepting and serving.
    Serving,
    /// No longer accepting; the requests in flight finish.
    Stopping,
    /// Serving given up: connections still open are no longer waited
    /// for; they end with their thread.
    Abandoned,
    /// Done: the threads end.
    Released,
}

/// Threads serving one listening socket; see the [module docs](self).
pub struct ServingThreads {
    phase: watch::Sender<Phase>,
    /// Each thread's word, once it stops serving.
    served: mpsc::UnboundedReceiver<io::Result<()>>,
    /// The threads still serving.
    serving: usize,
    threads: Vec<JoinHandle<()>>,
}

impl ServingThreads {
    /// One serving thread per CPU, the default: one if the count is unknown.
    pub fn per_cpu() -> NonZeroUsize {
        std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
    }

    /// Starts `count` threads serving the connections accepted on
    /// `listener`, each with the router `app` makes for it (called once per
    /// thread, on this thread). Accepts on a task of the current runtime.
    pub fn start(
        listener: TcpListener,
        count: NonZeroUsize,
        app: impl Fn() -> Router,
    ) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let (phase, _) = watch::channel(Phase::Serving);
        let (report, served) = mpsc::unbounded_channel();
        let mut serving = ServingThreads {
            phase,
            served,
            serving: 0,
            threads: Vec::with_capacity(count.get()),
        };
        let mut handoffs = Vec::with_capacity(count.get());
        for index in 0..count.get() {
            // Built here, so that a runtime that cannot be built fails the start.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (handoff, handed) = mpsc::unbounded_channel();
            let done = Report(Some(report.clone()));
            let phase = serving.phase.subscribe();
            let app = app();
            let handed = Handed { handed, local };
            let thread = std::thread::Builder::new()
                .name(format!("ias-serve-{index}"))
                .spawn(move || run_thread(runtime, handed, app, phase, done));
            match thread {
                Ok(thread) => {
                    serving.threads.push(thread);
                    serving.serving += 1;
                    handoffs.push(handoff);
                }
                // The threads already started end when `serving` drops.
                Err(err) => return Err(err),
            }
        }
        tokio::spawn(accept(listener, handoffs, serving.phase.subscribe()));
        Ok(serving)
    }

    /// Stops accepting; the requests in flight go on to their end.
    pub fn stop(&self) {
        self.advance(Phase::Stopping);
    }

    /// Waits until every thread has stopped serving (after [`stop`](Self::stop)
    /// and the end of its connections, or [`abandon`](Self::abandon)), or
    /// until one stops with an error, which it returns: a thread that fails
    /// while the others serve ends serving. Cancel-safe.
    pub async fn finished(&mut self) -> io::Result<()> {
        while self.serving > 0 {
            // `None` cannot come while `self` holds threads that have not
            // reported: each reports once, even when it panics.
            let Some(served) = self.served.recv().await else {
                return Err(io::Error::other("the serving threads are gone"));
            };
            self.serving -= 1;
            served?;
        }
        Ok(())
    }

    /// Stops waiting for the connections still open: [`finished`](Self::finished)
    /// returns; they end with their thread, at [`release`](Self::release).
    pub fn abandon(&self) {
        self.advance(Phase::Abandoned);
    }

    /// Ends the threads, once the store needs them no longer.
    pub fn release(mut self) {
        self.advance(Phase::Released);
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                warn!("a serving thread panicked");
            }
        }
    }

    fn advance(&self, to: Phase) {
        self.phase.send_if_modified(|phase| {
            let later = to > *phase;
            if later {
                *phase = to;
            }
            later
        });
    }
}

impl Drop for ServingThreads {
    fn drop(&mut self) {
        // Not released (an early return): let the threads end by themselves.
        self.advance(Phase::Released);
    }
}

/// Accepts connections until serving stops, handing them to the threads in turn.
async fn accept(
    listener: TcpListener,
    handoffs: Vec<mpsc::UnboundedSender<(std::net::TcpStream, SocketAddr)>>,
    mut phase: watch::Receiver<Phase>,
) {
    for handoff in handoffs.iter().cycle() {
        let accepted = tokio::select! {
            biased;
            _ = phase.wait_for(|phase| *phase >= Phase::Stopping) => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                wait_after(&err).await;
                continue;
            }
        };
        // Small stream chunks go out at once, not held back to be coalesced.
        if let Err(err) = tcp.set_nodelay(true) {
            warn!(error = %err, "cannot set TCP_NODELAY on a connection");
        }
        // Out of this runtime's event loop, into the serving thread's.
        match tcp.into_std() {
            Ok(tcp) => {
                if handoff.send((tcp, peer)).is_err() {
                    // Dropped with the message: the connection closes.
                    warn!("a serving thread is gone; a connection handed to it was closed");
                }
            }
            Err(err) => warn!(error = %err, "cannot hand a connection to a serving thread"),
        }
    }
}

/// After a failed accept: at once if only that connection failed, after a
/// second if the process is out of something (file descriptors, say).
async fn wait_after(err: &io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        err.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    warn!(error = %err, "cannot accept a connection; trying again in a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// The connections handed to one serving thread, as a listener for `axum::serve`.
struct Handed {
    handed: mpsc::UnboundedReceiver<(std::net::TcpStream, SocketAddr)>,
    local: SocketAddr,
}

impl Listener for Handed {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            let Some((tcp, peer)) = self.handed.recv().await else {
                // The acceptor stopped: no more connections; serving ends
                // by the graceful shutdown.
                return std::future::pending().await;
            };
            match TcpStream::from_std(tcp) {
                Ok(tcp) => return (tcp, peer),
                Err(err) => warn!(error = %err, "cannot serve a handed connection"),
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// A serving thread's word that it stopped serving; an error if it panicked first.
struct Report(Option<mpsc::UnboundedSender<io::Result<()>>>);

impl Report {
    fn send(mut self, served: io::Result<()>) {
        if let Some(report) = self.0.take() {
            let _ = report.send(served);
        }
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        if let Some(report) = self.0.take() {
            let _ = report.send(Err(io::Error::other("a serving thread panicked")));
        }
    }
}

/// One serving thread: serves until stopped, says so, and stays up until released.
fn run_thread(
    runtime: tokio::runtime::Runtime,
    handed: Handed,
    app: Router,
    mut phase: watch::Receiver<Phase>,
    done: Report,
) {
    runtime.block_on(async move {
        let served = serve(handed, app, phase.clone()).await;
        done.send(served);
        // An error means the sender is gone: nothing will release us.
        let _ = phase.wait_for(|phase| *phase >= Phase::Released).await;
    });
}

async fn serve(handed: Handed, app: Router, mut phase: watch::Receiver<Phase>) -> io::Result<()> {
    let mut stopping = phase.clone();
    let server = axum::serve(handed, app)
        .with_graceful_shutdown(async move {
            let _ = stopping.wait_for(|phase| *phase >= Phase::Stopping).await;
        })
        .into_future();
    tokio::select! {
        served = server => served,
        _ = phase.wait_for(|phase| *phase >= Phase::Abandoned) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::routing::get;
    use tokio::sync::oneshot;

    use super::*;

    /// A server on `count` serving threads on a free loopback port, and its address.
    async fn start(count: usize, app: impl Fn() -> Router) -> (ServingThreads, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let count = NonZeroUsize::new(count).unwrap();
        (ServingThreads::start(listener, count, app).unwrap(), url)
    }

    /// A client that opens a new connection for every request.
    fn one_connection_each() -> reqwest::Client {
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    }

    fn thread_name() -> String {
        std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_owned()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_are_handed_to_the_threads_in_turn() {
        let (threads, url) = start(2, || {
            Router::new().route("/who", get(|| async { thread_name() }))
        })
        .await;
        let client = one_connection_each();
        let mut served_by = Vec::new();
        for _ in 0..4 {
            let answer = client.get(format!("{url}/who")).send().await.unwrap();
            served_by.push(answer.text().await.unwrap());
        }
        assert_eq!(
            served_by,
            ["ias-serve-0", "ias-serve-1", "ias-serve-0", "ias-serve-1"]
        );
        threads.release();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stop_lets_the_request_in_flight_finish_and_takes_no_new_connection() {
        let (started_tx, started) = oneshot::channel::<()>();
        let (finish, finish_rx) = oneshot::channel::<()>();
        let hooks = Arc::new(Mutex::new(Some((started_tx, finish_rx))));
        let (mut threads, url) = start(1, move || {
            let hooks = hooks.clone();
            Router::new()
                .route(
                    "/slow",
                    get(move || async move {
                        let (started, finish) = hooks.lock().unwrap().take().unwrap();
                        let _ = started.send(());
                        let _ = finish.await;
                        "finished"
                    }),
                )
                .route("/quick", get(|| async { "quick" }))
        })
        .await;
        let client = one_connection_each();
        let in_flight = tokio::spawn(client.get(format!("{url}/slow")).send());
        started.await.unwrap();

        threads.stop();
        // Still serving the request in flight.
        let early = tokio::time::timeout(Duration::from_millis(200), threads.finished()).await;
        assert!(early.is_err(), "serving ended with a request in flight");
        // The listening socket is closed: a new connection is refused, not
        // left waiting.
        let refused = client.get(format!("{url}/quick")).send().await;
        assert!(
            refused.as_ref().is_err_and(|err| err.is_connect()),
            "a new connection after stop was not refused: {refused:?}"
        );

        finish.send(()).unwrap();
        let answer = in_flight.await.unwrap().unwrap();
        assert_eq!(answer.text().await.unwrap(), "finished");
        threads.finished().await.unwrap();
        threads.release();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn abandon_ends_serving_with_a_request_still_in_flight() {
        let (started_tx, started) = oneshot::channel::<()>();
        let started_tx = Arc::new(Mutex::new(Some(started_tx)));
        let (mut threads, url) = start(1, move || {
            let started_tx = started_tx.clone();
            Router::new().route(
                "/never",
                get(move || async move {
                    let _ = started_tx.lock().unwrap().take().unwrap().send(());
                    std::future::pending::<&'static str>().await
                }),
            )
        })
        .await;
        let client = one_connection_each();
        let in_flight = tokio::spawn(client.get(format!("{url}/never")).send());
        started.await.unwrap();
        threads.stop();
        let early = tokio::time::timeout(Duration::from_millis(200), threads.finished()).await;
        assert!(early.is_err(), "serving ended with a request in flight");
        threads.abandon();
        let ended = tokio::time::timeout(Duration::from_secs(5), threads.finished()).await;
        ended.expect("serving did not end when abandoned").unwrap();
        threads.release();
        // The connection was dropped: the caller gets an error, not a hang.
        let answer = tokio::time::timeout(Duration::from_secs(5), in_flight).await;
        assert!(answer.unwrap().unwrap().is_err());
    }
}
