//! `ias-admin user`: create and list users, set their monthly limits.

use clap::{Args, Subcommand};
use ias_core::User;

use crate::cli::Context;
use crate::error::CliResult;
use crate::output::{self, Report};
use crate::values;

/// User commands.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user to an organization
    Create(CreateArgs),
    /// List the users of an organization
    List(ListArgs),
    /// Set or remove a user's own monthly token limit
    SetLimit(SetLimitArgs),
}

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

/// Runs a user command.
pub async fn run(command: UserCommand, ctx: &Context) -> CliResult<Report> {
    match command {
        UserCommand::Create(args) => create(args, ctx).await,
        UserCommand::List(args) => list(args, ctx).await,
        UserCommand::SetLimit(args) => set_limit(args, ctx).await,
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
    let users = ctx.admin().await?.list_users(&args.org).await?;
    let rows: Vec<Vec<String>> = users.iter().map(row).collect();
    let headers = [
        "EMAIL",
        "ID",
        "ROLE",
        "MONTHLY_LIMIT",
        "MANAGED_BY",
        "CREATED",
    ];
    Report::new(output::table(&headers, &rows), &users)
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
