//! The command line: global options, the command groups, and the shared context.

use std::sync::Arc;

use clap::{Parser, Subcommand};
use ias_core::{Actor, Admin, Governor, Source, Store};

use crate::audit::AuditCommand;
use crate::authorize::AuthorizeArgs;
use crate::database;
use crate::error::CliResult;
use crate::exit::EXIT_CODES_HELP;
use crate::gitops::GitopsCommand;
use crate::key::KeyCommand;
use crate::limits::LimitsCommand;
use crate::model::ModelCommand;
use crate::org::OrgCommand;
use crate::output::Format;
use crate::seed::SeedArgs;
use crate::usage::UsageCommand;
use crate::user::UserCommand;

/// The database used when neither `--database-url` nor `IAS_DATABASE_URL` is set.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://./ias.db";

/// `ias-admin`: manage ias organizations, users, API keys, models, budgets and rate limits.
#[derive(Parser)]
#[command(name = "ias-admin", version, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// The ias database: `sqlite://PATH`, `sqlite:///ABSOLUTE/PATH`, `sqlite::memory:`
    /// or `postgres://…` (prefer the environment variable when the URL holds a password)
    #[arg(
        long,
        global = true,
        env = "IAS_DATABASE_URL",
        hide_env_values = true,
        default_value = DEFAULT_DATABASE_URL
    )]
    pub database_url: String,

    /// How to print results and errors
    #[arg(long, global = true, value_enum, default_value_t = Format::Text)]
    pub output: Format,

    /// Change fields owned by GitOps anyway (system admins only); recorded as drift and audited
    #[arg(long, global = true)]
    pub break_glass: bool,

    /// What to do
    #[command(subcommand)]
    pub command: Command,
}

/// The command groups.
#[derive(Subcommand)]
pub enum Command {
    /// Create, list and show organizations
    #[command(subcommand)]
    Org(OrgCommand),
    /// Create and list users, set their monthly limits and passwords
    #[command(subcommand)]
    User(UserCommand),
    /// Create, list and revoke API keys
    #[command(subcommand)]
    Key(KeyCommand),
    /// Allow, deny and list the models an organization may call
    #[command(subcommand)]
    Model(ModelCommand),
    /// Set and show requests- and tokens-per-minute limits
    #[command(subcommand)]
    Limits(LimitsCommand),
    /// Show token usage: the current budget period, or per day
    #[command(subcommand)]
    Usage(UsageCommand),
    /// Read the audit log of admin changes and verify its hash chain
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Declare organizations in Git: enable, sync, status, drift, plan, validate
    #[command(subcommand, after_help = crate::exit::GITOPS_EXIT_CODES_HELP)]
    Gitops(GitopsCommand),
    /// Check whether a key may call a model, without spending anything
    #[command(after_help = EXIT_CODES_HELP)]
    Authorize(AuthorizeArgs),
    /// Fill a database with generated test data: organizations, users, keys and usage
    #[command(after_help = EXIT_CODES_HELP)]
    Seed(SeedArgs),
}

/// What every command needs: where the database is, opened only when needed.
pub struct Context {
    database_url: String,
    break_glass: bool,
}

impl Context {
    /// A context for the database at `database_url`.
    pub fn new(database_url: String, break_glass: bool) -> Self {
        Context {
            database_url,
            break_glass,
        }
    }

    /// Opens the store.
    pub async fn store(&self) -> CliResult<Arc<dyn Store>> {
        Ok(database::open(&self.database_url).await?)
    }

    /// Admin operations by the local operator, audited as coming from the CLI.
    pub async fn admin(&self) -> CliResult<Admin> {
        let store = self.store().await?;
        let admin = Admin::new(store, Actor::local_operator(), Source::Cli);
        Ok(if self.break_glass {
            admin.with_break_glass()
        } else {
            admin
        })
    }

    /// A governor over the store, loaded and ready, for dry-run decisions.
    ///
    /// The caller must call [`Governor::shutdown`] before the process exits,
    /// so that the governor gives back whatever it holds.
    pub async fn governor(&self) -> CliResult<Governor> {
        Ok(Governor::open(self.store().await?).await?)
    }
}
