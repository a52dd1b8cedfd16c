//! `ias-admin model`: the models an organization may call.
//!
//! An entry is an exact name (`gpt-4o-mini`), a prefix pattern
//! (`openai/*`) or `*`; names are stored lowercase.

use clap::{Args, Subcommand};
use ias_core::ModelChange;
use serde::Serialize;

use crate::cli::Context;
use crate::error::CliResult;
use crate::output::Report;
use crate::paging::{self, PageArgs};

/// Model commands.
#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Allow a model name or pattern for an organization
    Allow(ChangeArgs),
    /// Remove a model name or pattern from an organization's allowed list
    Deny(ChangeArgs),
    /// List an organization's allowed models, by name, a page at a time
    List(ListArgs),
}

/// Arguments of `model allow` and `model deny`.
#[derive(Debug, Args)]
pub struct ChangeArgs {
    /// The organization's slug
    #[arg(long)]
    org: String,
    /// A model name, a `prefix/*` pattern, or `*` for every model
    #[arg(long)]
    model: String,
}

/// Arguments of `model list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The organization's slug
    #[arg(long)]
    org: String,
    #[command(flatten)]
    page: PageArgs,
}

/// A change in the allowed list, with the organization it applies to.
#[derive(Serialize)]
struct ChangeView<'a> {
    org: &'a str,
    #[serde(flatten)]
    change: &'a ModelChange,
}

/// Runs a model command.
pub async fn run(command: ModelCommand, ctx: &Context) -> CliResult<Report> {
    match command {
        ModelCommand::Allow(args) => change(args, true, ctx).await,
        ModelCommand::Deny(args) => change(args, false, ctx).await,
        ModelCommand::List(args) => list(args, ctx).await,
    }
}

async fn change(args: ChangeArgs, allow: bool, ctx: &Context) -> CliResult<Report> {
    let admin = ctx.admin().await?;
    let change = if allow {
        admin.allow_model(&args.org, &args.model).await?
    } else {
        admin.deny_model(&args.org, &args.model).await?
    };
    let text = change_text(&args.org, &change, allow);
    Report::new(
        text,
        &ChangeView {
            org: &args.org,
            change: &change,
        },
    )
}

fn change_text(org: &str, change: &ModelChange, allow: bool) -> String {
    let model = &change.model;
    match (allow, change.changed) {
        (true, true) => format!("allowed model `{model}` for `{org}`"),
        (true, false) => {
            format!("model `{model}` was already allowed for `{org}`; nothing changed")
        }
        (false, true) => format!("removed model `{model}` from the allowed list of `{org}`"),
        (false, false) => {
            format!("model `{model}` was not in the allowed list of `{org}`; nothing changed")
        }
    }
}

async fn list(args: ListArgs, ctx: &Context) -> CliResult<Report> {
    let page = args.page.request()?;
    let models = ctx.admin().await?.list_models(&args.org, &page).await?;
    let text = if models.items.is_empty() && args.page.is_first() {
        format!("organization `{}` may call no model", args.org)
    } else {
        models.items.join("\n")
    };
    paging::report(text, &models)
}
