//! `ias-gateway`: an OpenAI-compatible gateway governed by ias.
//!
//! See the library docs (`cargo doc -p ias-gateway --open`) for the
//! endpoints, the token estimate and the error codes.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ias_gateway::server::{self, Config};
use ias_gateway::threads::ServingThreads;

const ENVIRONMENT: &str = "\
Environment:
  IAS_DATABASE_URL       the database URL, if --database-url is not given
  IAS_UPSTREAM_URL       an OpenAI-compatible base URL such as http://127.0.0.1:9000/v1;
                         unset: a built-in deterministic mock answers (no network)
  IAS_UPSTREAM_API_KEY   sent upstream as `Authorization: Bearer ...`, if set
  IAS_GITOPS_ALLOWED_REPOS  --gitops-allowed-repo prefixes, comma-separated
  IAS_THREADS            --threads, if not given
  IAS_GITOPS_CACHE_DIR   where the GitOps reconciler caches repositories
                         (default: $XDG_CACHE_HOME/ias/git or ~/.cache/ias/git)
  RUST_LOG               log filter (default: info)

Exit codes: 0 stopped by Ctrl-C or SIGTERM, 1 could not start or failed";

/// Governs OpenAI-compatible requests with ias keys, budgets and model policy.
#[derive(Parser)]
#[command(name = "ias-gateway", version, about, after_help = ENVIRONMENT)]
struct Args {
    /// The address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,

    /// The store: `sqlite://PATH`, `sqlite::memory:` or `postgres://...`.
    #[arg(
        long,
        value_name = "URL",
        env = "IAS_DATABASE_URL",
        hide_env_values = true,
        default_value = "sqlite://./ias.db"
    )]
    database_url: String,

    /// On first start, create org `demo`, user `demo@example.com` and a key, and print the key.
    #[arg(long)]
    demo: bool,

    /// Seconds between GitOps reconcile cycles; 0 runs no reconciler.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    gitops_interval: u64,

    /// Accept in the admin API's GitOps `enable` only repository URLs under
    /// this prefix (end it with `/`); repeat for more. Unset: any URL the Git
    /// transport can fetch (`file://` and credentials need a system admin).
    #[arg(
        long = "gitops-allowed-repo",
        value_name = "PREFIX",
        env = "IAS_GITOPS_ALLOWED_REPOS",
        value_delimiter = ','
    )]
    gitops_allowed_repos: Vec<String>,

    /// Seconds that requests and streams in flight may go on after Ctrl-C or
    /// SIGTERM; then they are cut off and charged what they produced.
    #[arg(long, value_name = "SECS", default_value_t = server::DEFAULT_SHUTDOWN_GRACE.as_secs())]
    shutdown_grace: u64,

    /// Threads serving requests, each with its own event loop and upstream
    /// connections [default: one per CPU].
    #[arg(long, value_name = "N", env = "IAS_THREADS")]
    threads: Option<NonZeroUsize>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    server::init_logging();
    let config = Config {
        listen: args.listen,
        database_url: args.database_url,
        demo: args.demo,
        gitops_interval: (args.gitops_interval > 0).then_some(args.gitops_interval),
        gitops_allowed_repos: args.gitops_allowed_repos,
        shutdown_grace: Duration::from_secs(args.shutdown_grace),
        threads: args.threads.unwrap_or_else(ServingThreads::per_cpu),
    };
    match server::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
