//! `ias-admin usage`: tokens used and reserved in the current budget period.

use clap::{Args, Subcommand};
use ias_core::UsageReport;
use ias_core::usage::{ModelUsage, UserUsage};
use serde::Serialize;

use crate::cli::Context;
use crate::error::CliResult;
use crate::output::{self, Report};

/// Usage commands.
#[derive(Debug, Subcommand)]
pub enum UsageCommand {
    /// Show an organization's usage (or one user's) in the current period
    Show(ShowArgs),
}

/// Arguments of `usage show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The organization's slug
    #[arg(long)]
    org: String,
    /// Only this user of the organization
    #[arg(long)]
    email: Option<String>,
}

/// A usage report with the organization's budget beside its counter.
#[derive(Serialize)]
struct UsageView<'a> {
    org_slug: &'a str,
    period: &'a str,
    org: OrgUsage,
    users: &'a [UserUsage],
    models: &'a [ModelUsage],
}

/// The organization's counter and budget.
#[derive(Serialize)]
struct OrgUsage {
    used: i64,
    reserved: i64,
    monthly_token_budget: i64,
    remaining: i64,
}

/// Runs a usage command.
pub async fn run(command: UsageCommand, ctx: &Context) -> CliResult<Report> {
    match command {
        UsageCommand::Show(args) => show(args, ctx).await,
    }
}

async fn show(args: ShowArgs, ctx: &Context) -> CliResult<Report> {
    let admin = ctx.admin().await?;
    let report = admin.usage(&args.org, args.email.as_deref()).await?;
    let view = view(&args.org, &report);
    Report::new(text(&view), &view)
}

fn view<'a>(org_slug: &'a str, report: &'a UsageReport) -> UsageView<'a> {
    UsageView {
        org_slug,
        period: &report.period,
        org: OrgUsage {
            used: report.org.used,
            reserved: report.org.reserved,
            monthly_token_budget: report.monthly_token_budget,
            remaining: report.remaining(),
        },
        users: &report.users,
        models: &report.models,
    }
}

fn text(view: &UsageView<'_>) -> String {
    let org = &view.org;
    let summary = format!(
        "organization `{}`, period {}: {} used, {} reserved of {} ({} left)",
        view.org_slug, view.period, org.used, org.reserved, org.monthly_token_budget, org.remaining
    );
    let users: Vec<Vec<String>> = view.users.iter().map(user_row).collect();
    let users = output::table(&["EMAIL", "LIMIT", "USED", "RESERVED", "REQUESTS"], &users);
    let models: Vec<Vec<String>> = view.models.iter().map(model_row).collect();
    let models = output::table(&["MODEL", "TOKENS", "REQUESTS"], &models);
    format!("{summary}\n\n{users}\n\n{models}")
}

fn user_row(user: &UserUsage) -> Vec<String> {
    vec![
        user.email.clone(),
        output::limit(user.monthly_token_limit),
        user.counter.used.to_string(),
        user.counter.reserved.to_string(),
        user.requests.to_string(),
    ]
}

fn model_row(model: &ModelUsage) -> Vec<String> {
    vec![
        model.model.clone(),
        model.tokens.to_string(),
        model.requests.to_string(),
    ]
}
