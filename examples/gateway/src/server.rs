//! Starting and stopping the gateway.

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use ias_admin_api::AdminApi;
use ias_core::Governor;
use ias_core::gitops::{Reconciler, ReconcilerConfig};
use ias_gitops::GitManifestSource;
use ias_tower::Drain;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::app::{AppState, router};
use crate::demo;
use crate::store;
use crate::threads::ServingThreads;
use crate::upstream::Upstream;

/// How the gateway is started.
#[derive(Clone)]
pub struct Config {
    /// The address to listen on.
    pub listen: SocketAddr,
    /// The store's database URL (it may hold a password; see `Debug`).
    pub database_url: String,
    /// Whether to set up the demo organization.
    pub demo: bool,
    /// Seconds between GitOps reconcile cycles; `None` runs no reconciler.
    pub gitops_interval: Option<u64>,
    /// Repository URL prefixes the admin API's GitOps `enable` accepts; empty: any.
    pub gitops_allowed_repos: Vec<String>,
    /// How long requests and streams in flight may go on after Ctrl-C or
    /// SIGTERM before they are cut off (and charged what they produced).
    pub shutdown_grace: Duration,
    /// Threads serving requests, each with its own event loop (see [`ServingThreads`]).
    pub threads: NonZeroUsize,
}

/// How long requests and streams in flight may go on after a stop signal, by default.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// How long the gateway waits, after cutting off what was left, for the
/// connections to close and the last charges to be made.
pub const CUT_OFF_WAIT: Duration = Duration::from_secs(5);

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("database_url", &ias_core::url::redact(&self.database_url))
            .field("demo", &self.demo)
            .field("gitops_interval", &self.gitops_interval)
            .field("gitops_allowed_repos", &self.gitops_allowed_repos)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("threads", &self.threads)
            .finish()
    }
}

/// Why the gateway could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened.
    #[error("cannot open the store: {0}")]
    Store(#[source] ias_core::Error),
    /// The demo organization could not be set up.
    #[error("cannot set up the demo: {0}")]
    Demo(#[source] ias_core::Error),
    /// The upstream settings are wrong.
    #[error("{0}")]
    Upstream(String),
    /// The listening socket could not be opened.
    #[error("cannot listen on `{addr}`: {source}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// What the system said.
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("the server failed: {0}")]
    Serve(#[source] std::io::Error),
    /// Usage settled in memory could not be written before exit.
    #[error("could not write the last usage to the store: {0}")]
    Flush(#[source] ias_core::Error),
}

/// Opens the store, listens, and serves until Ctrl-C or SIGTERM.
pub async fn run(config: Config) -> Result<(), StartError> {
    let upstream = Upstream::from_env().map_err(StartError::Upstream)?;
    let store = store::open(&config.database_url)
        .await
        .map_err(StartError::Store)?;
    let demo = match config.demo {
        true => Some(
            demo::ensure(store.clone())
                .await
                .map_err(StartError::Demo)?,
        ),
        false => None,
    };
    // The cache is loaded before the port opens: "listening" means ready.
    let governor = Governor::open(store.clone())
        .await
        .map_err(StartError::Store)?;
    let listener = listen(config.listen).await?;
    let listening = listener.local_addr().map_err(|source| StartError::Listen {
        addr: config.listen,
        source,
    })?;
    if let Some(setup) = &demo {
        print!(
            "{}",
            demo::instructions(setup, listening, &config.database_url)
        );
    }

    info!(
        listen = %listening,
        store = %ias_core::url::redact(&config.database_url),
        upstream = %upstream.describe(),
        "ias-gateway listening"
    );
    let maintenance = governor.spawn_maintenance();
    let mut admin = AdminApi::new(governor.clone());
    let reconciler = match config.gitops_interval {
        Some(secs) => {
            let reconciler = reconciler(store, &governor, secs)?;
            admin = admin.with_gitops(reconciler.clone());
            Some(spawn_reconciler(reconciler))
        }
        None => None,
    };
    if !config.gitops_allowed_repos.is_empty() {
        admin = admin.allow_repos(config.gitops_allowed_repos.iter().cloned());
    }
    let state = AppState::new(governor, upstream).with_admin(admin);
    let drain = state.drain();
    let mut threads =
        ServingThreads::start(listener, config.threads, || router(state.for_thread()))
            .map_err(StartError::Serve)?;
    let served = serve(&mut threads, &drain, config.shutdown_grace).await;
    // Usage settled in memory is written before the process exits; if it
    // cannot be, the exit status says so.
    if let Some((stop, task)) = reconciler {
        let _ = stop.send(true);
        if let Err(err) = task.await {
            warn!(error = %err, "the GitOps reconciler stopped abnormally");
        }
    }
    let flushed = maintenance.shutdown().await.map_err(StartError::Flush);
    // Only now: the store's connections may belong to a serving thread.
    threads.release();
    served?;
    flushed?;
    info!("ias-gateway stopped");
    Ok(())
}

/// Serves until Ctrl-C or SIGTERM, then stops accepting and lets the
/// requests in flight finish, streams included, for up to `grace`. What is
/// still open then is cut off ([`Drain::cancel`]): each request is charged
/// what it produced. Returns once every governed request is charged.
async fn serve(
    threads: &mut ServingThreads,
    drain: &Drain,
    grace: Duration,
) -> Result<(), StartError> {
    // A serving thread that fails ends serving, as a signal does.
    let failed = tokio::select! {
        served = threads.finished() => served.err(),
        () = shutdown_signal() => None,
    };
    threads.stop();
    let stopped = stop_within(threads, drain, grace).await;
    // A caller who hung up leaves its charge to a task of its own: wait for it.
    if !drain.wait_idle_for(CUT_OFF_WAIT).await {
        warn!(
            in_flight = drain.in_flight(),
            "requests still uncharged at exit; their reservations expire by themselves"
        );
    }
    match failed {
        Some(err) => Err(StartError::Serve(err)),
        None => stopped.map_err(StartError::Serve),
    }
}

/// Lets the requests in flight finish for up to `grace`, then cuts off
/// what is still open and waits [`CUT_OFF_WAIT`] more for it to end.
async fn stop_within(
    threads: &mut ServingThreads,
    drain: &Drain,
    grace: Duration,
) -> std::io::Result<()> {
    if let Ok(stopped) = tokio::time::timeout(grace, threads.finished()).await {
        return stopped;
    }
    warn!(
        grace_secs = grace.as_secs(),
        in_flight = drain.in_flight(),
        "the grace period is over; cutting off the requests still open"
    );
    drain.cancel();
    if let Ok(stopped) = tokio::time::timeout(CUT_OFF_WAIT, threads.finished()).await {
        return stopped;
    }
    warn!("connections still open after the cut-off; stopping anyway");
    threads.abandon();
    // Serving ends at once now, unless a thread is stuck in a blocking call.
    tokio::time::timeout(CUT_OFF_WAIT, threads.finished())
        .await
        .unwrap_or(Ok(()))
}

/// Starts the GitOps reconciler: every `secs` seconds (with jitter), it
/// reconciles each organization that has GitOps enabled and reloads the
/// governor after an apply. Returns the stop switch and the task.
type Stoppable = (watch::Sender<bool>, tokio::task::JoinHandle<()>);

/// The GitOps reconciler over `store`, fetching from Git.
fn reconciler(
    store: Arc<dyn ias_core::Store>,
    governor: &Governor,
    secs: u64,
) -> Result<Reconciler, StartError> {
    let cache = GitManifestSource::default_cache_dir();
    let source = Arc::new(GitManifestSource::new(&cache).map_err(StartError::Store)?);
    let config = ReconcilerConfig {
        interval: std::time::Duration::from_secs(secs),
        ..ReconcilerConfig::default()
    };
    let reconciler = Reconciler::new(store, source, config).with_governor(governor.clone());
    info!(interval_secs = secs, cache = %cache.display(), "GitOps reconciler running");
    Ok(reconciler)
}

/// Runs `reconciler`'s cycles until the returned sender says stop.
fn spawn_reconciler(reconciler: Reconciler) -> Stoppable {
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(async move { reconciler.run(stopped).await });
    (stop, task)
}

async fn listen(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen { addr, source })
}

/// Resolves on Ctrl-C or SIGTERM; in-flight requests then finish before exit.
pub async fn shutdown_signal() {
    tokio::select! {
        () = ctrl_c() => {}
        () = terminate() => {}
    }
    info!("shutting down");
}

async fn ctrl_c() {
    if let Err(err) = tokio::signal::ctrl_c().await {
        warn!(error = %err, "cannot listen for Ctrl-C");
        std::future::pending::<()>().await;
    }
}

#[cfg(unix)]
async fn terminate() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut sigterm) => {
            sigterm.recv().await;
        }
        Err(err) => {
            warn!(error = %err, "cannot listen for SIGTERM");
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(not(unix))]
async fn terminate() {
    std::future::pending::<()>().await;
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // An error only means a subscriber is already installed; keep that one.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
