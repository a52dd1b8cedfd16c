//! `ias-admin`: the command line for ias.
//!
//! Manages organizations, users, API keys, allowed models, budgets and rate
//! limits in an ias database, and checks what a key would be allowed to do.
//! Results go to stdout (text, or JSON with `--output json`); errors go to
//! stderr as one line; the exit code says how it went (see [`exit::Exit`]).

mod audit;
mod authorize;
mod cli;
mod database;
mod error;
mod exit;
mod gitops;
mod key;
mod limits;
mod model;
mod org;
mod output;
mod paging;
mod password_input;
mod seed;
mod usage;
mod user;
mod values;

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, Context};
use crate::error::{CliError, CliResult};
use crate::exit::Exit;
use crate::output::{Format, Report};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let format = cli.output;
    let result = run(cli);
    finish(format, result).into()
}

/// Sends `tracing` output to stderr when `RUST_LOG` asks for it; silent otherwise.
fn init_logging() {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(io::stderr)
            .init();
    }
}

fn run(cli: Cli) -> CliResult<Report> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|err| CliError::Io(format!("cannot start the async runtime: {err}")))?;
    let ctx = Context::new(cli.database_url, cli.break_glass);
    runtime.block_on(dispatch(cli.command, &ctx))
}

async fn dispatch(command: Command, ctx: &Context) -> CliResult<Report> {
    match command {
        Command::Org(command) => org::run(command, ctx).await,
        Command::User(command) => user::run(command, ctx).await,
        Command::Key(command) => key::run(command, ctx).await,
        Command::Model(command) => model::run(command, ctx).await,
        Command::Limits(command) => limits::run(command, ctx).await,
        Command::Usage(command) => usage::run(command, ctx).await,
        Command::Audit(command) => audit::run(command, ctx).await,
        Command::Gitops(command) => gitops::run(command, ctx).await,
        Command::Authorize(args) => authorize::run(args, ctx).await,
        Command::Seed(args) => seed::run(args, ctx).await,
    }
}

/// Prints the result or the error and picks the exit code.
fn finish(format: Format, result: CliResult<Report>) -> Exit {
    let err = match result {
        Ok(report) => match report.write(format, &mut io::stdout().lock()) {
            Ok(()) => {
                // Nothing is left to tell if stderr itself is gone.
                let _ = report.write_notice(format, &mut io::stderr().lock());
                return report.exit();
            }
            Err(err) if err.kind() == io::ErrorKind::BrokenPipe => return report.exit(),
            Err(err) => CliError::Io(format!("cannot write the result: {err}")),
        },
        Err(err) => err,
    };
    let mut stderr = io::stderr().lock();
    // Nothing is left to report a failure to if stderr itself is gone.
    let _ = output::write_error(format, &err, &mut stderr).and_then(|()| stderr.flush());
    err.exit()
}
