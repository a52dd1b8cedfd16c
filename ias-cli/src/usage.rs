//! `ias-admin usage`: tokens used and reserved in the current budget period,
//! or per day, and when a budget runs out at the current pace.

use clap::{Args, Subcommand, ValueEnum};
use ias_core::usage::{DailyUsage, Forecast, ModelUsage, UserUsage};
use ias_core::{Error, UsageReport, UserRef};
use serde::Serialize;

use crate::cli::Context;
use crate::error::CliResult;
use crate::output::{self, Report};
use crate::paging::{self, PageArgs};
use crate::values;

/// Usage commands.
#[derive(Debug, Subcommand)]
pub enum UsageCommand {
    /// Show an organization's usage (or one user's) in the current period, or per day
    Show(ShowArgs),
    /// Forecast when the budget (or a user's own limit) runs out at the current pace
    Forecast(ForecastArgs),
}

/// Arguments of `usage forecast`.
#[derive(Debug, Args)]
pub struct ForecastArgs {
    /// The organization's slug
    #[arg(long)]
    org: String,
    /// Forecast this user's own monthly limit instead of the organization's budget
    #[arg(long)]
    email: Option<String>,
}

/// How `usage show` breaks usage down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum By {
    /// Per local day and model, over a range of days
    Day,
    /// Per model, in the current period
    Model,
    /// Per user, in the current period
    User,
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
    /// Break usage down per day, model or user (default: both users and models)
    #[arg(long, value_enum)]
    by: Option<By>,
    /// With --by day: the first day (default: the first of the month, in the org's zone)
    #[arg(long, value_name = "YYYY-MM-DD", allow_hyphen_values = true)]
    from: Option<String>,
    /// With --by day: the last day (default: today, in the org's zone)
    #[arg(long, value_name = "YYYY-MM-DD", allow_hyphen_values = true)]
    to: Option<String>,
    /// Pages of users (by id), or with --by day of days and models (by day, then model)
    #[command(flatten)]
    page: PageArgs,
}

/// A usage report with the organization's budget beside its counter.
#[derive(Serialize)]
struct UsageView<'a> {
    org_slug: &'a str,
    period: &'a str,
    org: OrgUsage,
    #[serde(skip_serializing_if = "Option::is_none")]
    users: Option<&'a [UserUsage]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    models: Option<&'a [ModelUsage]>,
    /// Where the next page of users starts; `None` on the last page or without users.
    next_after: Option<&'a str>,
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
        UsageCommand::Forecast(args) => forecast(args, ctx).await,
    }
}

/// `usage forecast`: the pace of the last days, and when the limit runs out at it.
async fn forecast(args: ForecastArgs, ctx: &Context) -> CliResult<Report> {
    let admin = ctx.admin().await?;
    let forecast = admin
        .usage_forecast(&args.org, args.email.as_deref().map(UserRef::from))
        .await?;
    Report::new(forecast_text(&forecast), &forecast)
}

fn forecast_text(f: &Forecast) -> String {
    let runs_out = match (f.limit, f.exhausted_at) {
        (None, _) => "no own limit (the organization's budget applies)".to_owned(),
        (Some(_), Some(at)) => at.format("%Y-%m-%d %H:%M UTC").to_string(),
        (Some(_), None) => "not before the reset at this pace".to_owned(),
    };
    output::fields(&[
        ("period", f.period.clone()),
        ("limit", output::limit(f.limit)),
        ("used", f.used.to_string()),
        ("reserved", f.reserved.to_string()),
        (
            "remaining",
            f.remaining.map_or("-".to_owned(), |r| r.to_string()),
        ),
        (
            "pace since",
            f.pace_since.format("%Y-%m-%d %H:%M UTC").to_string(),
        ),
        ("tokens per day", f.tokens_per_day.to_string()),
        ("projected", f.projected_tokens.to_string()),
        ("runs out", runs_out),
        (
            "resets",
            f.resets_at.format("%Y-%m-%d %H:%M UTC").to_string(),
        ),
    ])
}

async fn show(args: ShowArgs, ctx: &Context) -> CliResult<Report> {
    if args.by == Some(By::Day) {
        return daily(args, ctx).await;
    }
    for (field, value) in [("from", &args.from), ("to", &args.to)] {
        if let Some(value) = value {
            return Err(Error::invalid(field, value, "only applies with `--by day`").into());
        }
    }
    let page = args.page.request()?;
    let admin = ctx.admin().await?;
    let report = admin
        .usage(&args.org, args.email.as_deref().map(UserRef::from), &page)
        .await?;
    let view = view(&args.org, &report, args.by);
    let shown = Report::new(text(&view), &view)?;
    Ok(match view.next_after {
        Some(cursor) => shown.with_notice(paging::next_page_notice(cursor)),
        None => shown,
    })
}

fn view<'a>(org_slug: &'a str, report: &'a UsageReport, by: Option<By>) -> UsageView<'a> {
    let users_shown = by != Some(By::Model);
    UsageView {
        org_slug,
        period: &report.period,
        org: OrgUsage {
            used: report.org.used,
            reserved: report.org.reserved,
            monthly_token_budget: report.monthly_token_budget,
            remaining: report.remaining(),
        },
        users: users_shown.then_some(report.users.as_slice()),
        models: (by != Some(By::User)).then_some(report.models.as_slice()),
        next_after: report.next_after.as_deref().filter(|_| users_shown),
    }
}

fn text(view: &UsageView<'_>) -> String {
    let org = &view.org;
    let mut parts = vec![format!(
        "organization `{}`, period {}: {} used, {} reserved of {} ({} left)",
        view.org_slug, view.period, org.used, org.reserved, org.monthly_token_budget, org.remaining
    )];
    if let Some(users) = view.users {
        let rows: Vec<Vec<String>> = users.iter().map(user_row).collect();
        let headers = ["EMAIL", "LIMIT", "USED", "RESERVED", "REQUESTS"];
        parts.push(output::table(&headers, &rows));
    }
    if let Some(models) = view.models {
        let rows: Vec<Vec<String>> = models.iter().map(model_row).collect();
        parts.push(output::table(&["MODEL", "TOKENS", "REQUESTS"], &rows));
    }
    parts.join("\n\n")
}

/// `usage show --by day`: one row per local day and model.
async fn daily(args: ShowArgs, ctx: &Context) -> CliResult<Report> {
    let from = args.from.as_deref().map(|d| values::day("from", d));
    let from = from.transpose()?;
    let to = args.to.as_deref().map(|d| values::day("to", d));
    let to = to.transpose()?;
    if let (Some(from), Some(to)) = (from, to)
        && to < from
    {
        let reason = format!("must not be before from `{from}`");
        return Err(Error::invalid("to", to.to_string(), reason).into());
    }
    let (from, to) = (from.map(|d| d.to_string()), to.map(|d| d.to_string()));
    let page = args.page.request()?;

    let admin = ctx.admin().await?;
    let (from, to) = (from.as_deref(), to.as_deref());
    let days = admin
        .daily_usage(
            &args.org,
            args.email.as_deref().map(UserRef::from),
            from,
            to,
            &page,
        )
        .await?;
    let rows: Vec<Vec<String>> = days.items.iter().map(day_row).collect();
    let text = output::table(&["DAY", "MODEL", "TOKENS", "REQUESTS"], &rows);
    paging::report(text, &days)
}

fn day_row(day: &DailyUsage) -> Vec<String> {
    vec![
        day.day.clone(),
        day.model.clone(),
        day.tokens.to_string(),
        day.requests.to_string(),
    ]
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
