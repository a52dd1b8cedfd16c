//! `ias-admin key`: create, list and revoke API keys.
//!
//! A key's secret is printed once, by `key create`, and never again: ias
//! stores only its hash. Lists show the non-secret prefix.

use chrono::Utc;
use clap::{Args, Subcommand};
use ias_core::{ApiKey, CreatedKey, KeyStatus, Page};
use serde::Serialize;

use crate::cli::Context;
use crate::error::CliResult;
use crate::output::{self, Report};
use crate::paging::{self, PageArgs};
use crate::values;

/// Key commands.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create a key for a user and print its secret once
    Create(CreateArgs),
    /// List a user's keys (never their secrets), newest first, a page at a time
    List(ListArgs),
    /// Revoke a key; it is refused from then on
    Revoke(RevokeArgs),
}

/// Arguments of `key create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The owner's email
    #[arg(long)]
    email: String,
    /// Lifetime such as `30d`, `12h`, `90m` or `3600s` (default: never expires)
    #[arg(long, value_name = "LIFETIME", allow_hyphen_values = true)]
    expires_in: Option<String>,
}

/// Arguments of `key list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The owner's email
    #[arg(long)]
    email: String,
    #[command(flatten)]
    page: PageArgs,
}

/// Arguments of `key revoke`.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The key's id, as shown by `key list`
    #[arg(long, value_name = "ID", allow_hyphen_values = true)]
    key_id: String,
}

/// A key's metadata with its current status.
#[derive(Serialize)]
struct KeyView<'a> {
    #[serde(flatten)]
    key: &'a ApiKey,
    status: KeyStatus,
}

impl<'a> KeyView<'a> {
    fn of(key: &'a ApiKey) -> Self {
        KeyView {
            key,
            status: key.status(Utc::now()),
        }
    }
}

/// A new key: its metadata, its owner and its secret.
#[derive(Serialize)]
struct CreatedView<'a> {
    #[serde(flatten)]
    key: KeyView<'a>,
    email: &'a str,
    secret: &'a str,
}

/// Runs a key command.
pub async fn run(command: KeyCommand, ctx: &Context) -> CliResult<Report> {
    match command {
        KeyCommand::Create(args) => create(args, ctx).await,
        KeyCommand::List(args) => list(args, ctx).await,
        KeyCommand::Revoke(args) => revoke(args, ctx).await,
    }
}

async fn create(args: CreateArgs, ctx: &Context) -> CliResult<Report> {
    let lifetime = args
        .expires_in
        .as_deref()
        .map(values::lifetime)
        .transpose()?;
    let admin = ctx.admin().await?;
    let created = admin.create_key(&args.email, lifetime).await?;
    let email = ias_core::validate::email(&args.email)?;
    let view = CreatedView {
        key: KeyView::of(&created.key),
        email: &email,
        secret: created.secret.expose(),
    };
    Report::new(created_text(&created, &email), &view)
}

fn created_text(created: &CreatedKey, email: &str) -> String {
    let key = &created.key;
    format!(
        "created key {} for `{email}`: prefix {}, expires {}\n\
         secret: {}\n\
         store this secret now: it will not be shown again",
        key.id,
        key.prefix,
        output::maybe_time(key.expires_at, "never"),
        created.secret.expose()
    )
}

async fn list(args: ListArgs, ctx: &Context) -> CliResult<Report> {
    let page = args.page.request()?;
    let keys = ctx.admin().await?.list_keys(&args.email, &page).await?;
    let views = Page {
        items: keys.items.iter().map(KeyView::of).collect::<Vec<_>>(),
        next_after: keys.next_after.clone(),
    };
    let rows: Vec<Vec<String>> = views.items.iter().map(row).collect();
    let headers = ["ID", "PREFIX", "STATUS", "CREATED", "EXPIRES", "REVOKED"];
    paging::report(output::table(&headers, &rows), &views)
}

fn row(view: &KeyView<'_>) -> Vec<String> {
    let key = view.key;
    vec![
        key.id.to_string(),
        key.prefix.clone(),
        status_name(view.status).to_owned(),
        output::time(key.created_at),
        output::maybe_time(key.expires_at, "never"),
        output::maybe_time(key.revoked_at, "-"),
    ]
}

fn status_name(status: KeyStatus) -> &'static str {
    match status {
        KeyStatus::Active => "active",
        KeyStatus::Expired => "expired",
        KeyStatus::Revoked => "revoked",
    }
}

async fn revoke(args: RevokeArgs, ctx: &Context) -> CliResult<Report> {
    let id = values::key_id(&args.key_id)?;
    let key = ctx.admin().await?.revoke_key(id).await?;
    let text = format!(
        "revoked key {} (prefix {}) at {}",
        key.id,
        key.prefix,
        output::maybe_time(key.revoked_at, "-")
    );
    Report::new(text, &KeyView::of(&key))
}
