//! `ias-admin user`: create and list users, set their monthly limits and passwords.

use clap::{Args, Subcommand};
use ias_core::User;
use serde::Serialize;

use crate::cli::Context;
use crate::error::CliResult;
use crate::exit::EXIT_CODES_HELP;
use crate::output::{self, Report};
use crate::paging::{self, PageArgs};
use crate::password_input::{self, PasswordSource};
use crate::values;

/// User commands.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user to an organization
    Create(CreateArgs),
    /// List the users of an organization, by id, a page at a time
    List(ListArgs),
    /// Set or remove a user's own monthly token limit
    SetLimit(SetLimitArgs),
    /// Set a new password for a user (system admins only)
    #[command(long_about = RESET_PASSWORD_ABOUT, after_help = EXIT_CODES_HELP)]
    ResetPassword(ResetPasswordArgs),
}

const RESET_PASSWORD_ABOUT: &str = "\
Set a new password for a user, replacing any it had (system admins only; the
local operator acts as one). Only an argon2id hash is stored, and the audit
log records that the password changed, never the password or its hash.

Give the password in one of three ways:
  --new-password-stdin   the first line of standard input (for scripts)
  (neither option)       typed twice at a prompt that does not echo it
  --new-password P       on the command line: avoid it, because the shell
                         keeps P in its history file and other users of the
                         machine can read it in the process list while the
                         command runs

The password must have 12 to 128 characters, mix at least three of lowercase
letters, uppercase letters, digits and symbols, not contain the name before
`@` in the user's email, and not be a commonly used password. Every rule it
breaks is listed at once, and nothing is changed.";

/// Arguments of `user create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The organization's slug
    #[arg(long)]
    org: String,
    /// The user's email; stored lowercase and unique across organizations
    #[arg(long)]
    email: String,
    /// The user's role
    #[arg(long, value_name = "member|org_admin|system_admin")]
    role: String,
    /// The user's own monthly token limit (default: only the org budget applies)
    #[arg(long, value_name = "TOKENS", allow_hyphen_values = true)]
    monthly_token_limit: Option<String>,
}

/// Arguments of `user list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The organization's slug
    #[arg(long)]
    org: String,
    #[command(flatten)]
    page: PageArgs,
}

/// Arguments of `user set-limit`.
#[derive(Debug, Args)]
pub struct SetLimitArgs {
    /// The user's email
    #[arg(long)]
    email: String,
    /// Tokens per month, or `none` to leave only the organization budget
    #[arg(long, value_name = "TOKENS|none", allow_hyphen_values = true)]
    monthly_token_limit: String,
}

/// Arguments of `user reset-password`.
#[derive(Debug, Args)]
pub struct ResetPasswordArgs {
    /// The user's email
    #[arg(long)]
    email: String,
    /// The new password; it leaks into shell history and the process list, so prefer
    /// --new-password-stdin or the prompt
    #[arg(long, value_name = "PASSWORD", allow_hyphen_values = true)]
    new_password: Option<String>,
    /// Read the new password from the first line of standard input
    #[arg(long, conflicts_with = "new_password")]
    new_password_stdin: bool,
}

impl ResetPasswordArgs {
    fn source(&self) -> PasswordSource {
        match (&self.new_password, self.new_password_stdin) {
            (Some(password), _) => PasswordSource::Argument(password.clone()),
            (None, true) => PasswordSource::Stdin,
            (None, false) => PasswordSource::Prompt,
        }
    }
}

/// What `user reset-password` reports: who, never the password.
#[derive(Serialize)]
struct PasswordReset<'a> {
    email: &'a str,
    id: ias_core::UserId,
    password: &'static str,
}

/// Runs a user command.
pub async fn run(command: UserCommand, ctx: &Context) -> CliResult<Report> {
    match command {
        UserCommand::Create(args) => create(args, ctx).await,
        UserCommand::List(args) => list(args, ctx).await,
        UserCommand::SetLimit(args) => set_limit(args, ctx).await,
        UserCommand::ResetPassword(args) => reset_password(args, ctx).await,
    }
}

async fn create(args: CreateArgs, ctx: &Context) -> CliResult<Report> {
    let role = values::role(&args.role)?;
    let limit = match &args.monthly_token_limit {
        Some(text) => values::limit("monthly_token_limit", text)?,
        None => None,
    };
    let admin = ctx.admin().await?;
    let user = admin
        .create_user(&args.org, &args.email, role, limit)
        .await?;
    let text = format!(
        "created user `{}` in `{}` (id {}): role {}, monthly limit {}",
        user.email,
        args.org,
        user.id,
        user.role,
        output::limit(user.monthly_token_limit)
    );
    Report::new(text, &user)
}

async fn list(args: ListArgs, ctx: &Context) -> CliResult<Report> {
    let page = args.page.request()?;
    let users = ctx.admin().await?.list_users(&args.org, &page).await?;
    let rows: Vec<Vec<String>> = users.items.iter().map(row).collect();
    let headers = [
        "EMAIL",
        "ID",
        "ROLE",
        "MONTHLY_LIMIT",
        "MANAGED_BY",
        "CREATED",
    ];
    paging::report(output::table(&headers, &rows), &users)
}

fn row(user: &User) -> Vec<String> {
    vec![
        user.email.clone(),
        user.id.to_string(),
        user.role.to_string(),
        output::limit(user.monthly_token_limit),
        user.managed_by.as_str().to_owned(),
        output::time(user.created_at),
    ]
}

async fn set_limit(args: SetLimitArgs, ctx: &Context) -> CliResult<Report> {
    let limit = values::limit("monthly_token_limit", &args.monthly_token_limit)?;
    let admin = ctx.admin().await?;
    let user = admin.set_user_limit(&args.email, limit).await?;
    let text = match user.monthly_token_limit {
        Some(limit) => format!("user `{}`: monthly limit set to {limit} tokens", user.email),
        None => format!(
            "user `{}`: no monthly limit of its own; only the organization budget applies",
            user.email
        ),
    };
    Report::new(text, &user)
}

async fn reset_password(args: ResetPasswordArgs, ctx: &Context) -> CliResult<Report> {
    let admin = ctx.admin().await?;
    // Look the user up first, so nobody types a password for a mistyped email.
    let user = admin.user(&args.email).await?;
    let password = password_input::read(args.source())?;
    let user = admin.reset_password(user.id, &password).await?;
    let text = format!("user `{}`: password reset", user.email);
    let view = PasswordReset {
        email: &user.email,
        id: user.id,
        password: "reset",
    };
    Report::new(text, &view)
}
