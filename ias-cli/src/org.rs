//! `ias-admin org`: create, list, show organizations and change their budgets.

use clap::{Args, Subcommand};
use ias_core::page::MAX_PAGE_LIMIT;
use ias_core::{Admin, Organization, PageRequest};
use serde::Serialize;

use crate::cli::Context;
use crate::error::CliResult;
use crate::output::{self, Report};
use crate::paging::{self, PageArgs};
use crate::values;

/// Organization commands.
#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Create an organization with a monthly token budget
    Create(CreateArgs),
    /// List the organizations, by id, a page at a time
    List(ListArgs),
    /// Show one organization and its allowed models
    Show(ShowArgs),
    /// Change an organization's monthly token budget or time zone
    SetBudget(SetBudgetArgs),
}

/// Arguments of `org set-budget`.
#[derive(Debug, Args)]
pub struct SetBudgetArgs {
    /// The organization's slug
    #[arg(long)]
    org: String,
    /// Tokens the whole organization may spend per calendar month, from now on
    #[arg(long, value_name = "TOKENS", allow_hyphen_values = true)]
    monthly_token_budget: Option<String>,
    /// IANA time zone whose calendar months are the budget periods
    #[arg(long)]
    timezone: Option<String>,
}

/// Arguments of `org create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Unique name: lowercase letters, digits and `-`, such as `team-alpha`
    #[arg(long)]
    slug: String,
    /// Tokens the whole organization may spend per calendar month
    #[arg(long, value_name = "TOKENS", allow_hyphen_values = true)]
    monthly_token_budget: String,
    /// IANA time zone whose calendar months are the budget periods
    #[arg(long, default_value = "UTC")]
    timezone: String,
}

/// Arguments of `org list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    page: PageArgs,
}

/// Arguments of `org show`.

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The organization's slug
    #[arg(long)]
    org: String,
}

/// An organization with its allowed models, as `org show` prints it.
#[derive(Serialize)]
struct OrgDetail<'a> {
    #[serde(flatten)]
    org: &'a Organization,
    allowed_models: &'a [String],
}

/// Runs an organization command.
pub async fn run(command: OrgCommand, ctx: &Context) -> CliResult<Report> {
    match command {
        OrgCommand::Create(args) => create(args, ctx).await,
        OrgCommand::List(args) => list(args, ctx).await,
        OrgCommand::Show(args) => show(args, ctx).await,
        OrgCommand::SetBudget(args) => set_budget(args, ctx).await,
    }
}

async fn set_budget(args: SetBudgetArgs, ctx: &Context) -> CliResult<Report> {
    let budget = args
        .monthly_token_budget
        .as_deref()
        .map(|value| values::tokens("monthly_token_budget", value))
        .transpose()?;
    let admin = ctx.admin().await?;
    let org = admin
        .set_org_budget(&args.org, budget, args.timezone.as_deref())
        .await?;
    let text = format!(
        "organization `{}`: {} tokens per month, months in {}",
        org.slug,
        org.monthly_token_budget,
        org.timezone.name()
    );
    Report::new(text, &org)
}

async fn create(args: CreateArgs, ctx: &Context) -> CliResult<Report> {
    let budget = values::tokens("monthly_token_budget", &args.monthly_token_budget)?;
    let admin = ctx.admin().await?;
    let org = admin.create_org(&args.slug, budget, &args.timezone).await?;
    let text = format!(
        "created organization `{}` (id {}): {} tokens per month, months in {}",
        org.slug,
        org.id,
        org.monthly_token_budget,
        org.timezone.name()
    );
    Report::new(text, &org)
}

async fn list(args: ListArgs, ctx: &Context) -> CliResult<Report> {
    let page = args.page.request()?;
    let orgs = ctx.admin().await?.list_orgs(&page).await?;
    let rows: Vec<Vec<String>> = orgs.items.iter().map(row).collect();
    let headers = [
        "SLUG",
        "ID",
        "MONTHLY_BUDGET",
        "TIMEZONE",
        "MANAGED_BY",
        "CREATED",
    ];
    paging::report(output::table(&headers, &rows), &orgs)
}

fn row(org: &Organization) -> Vec<String> {
    vec![
        org.slug.clone(),
        org.id.to_string(),
        org.monthly_token_budget.to_string(),
        org.timezone.name().to_owned(),
        org.managed_by.as_str().to_owned(),
        output::time(org.created_at),
    ]
}

async fn show(args: ShowArgs, ctx: &Context) -> CliResult<Report> {
    let admin = ctx.admin().await?;
    let org = admin.org(&args.org).await?;
    let models = every_model(&admin, &org.slug).await?;
    let detail = OrgDetail {
        org: &org,
        allowed_models: &models,
    };
    Report::new(show_text(&detail), &detail)
}

/// Every allowed model of an organization, read a page at a time.
async fn every_model(admin: &Admin, slug: &str) -> CliResult<Vec<String>> {
    let mut request = PageRequest::first(MAX_PAGE_LIMIT);
    let mut models = Vec::new();
    loop {
        let page = admin.list_models(slug, &request).await?;
        let next = request.next(&page);
        models.extend(page.items);
        match next {
            Some(following) => request = following,
            None => return Ok(models),
        }
    }
}

fn show_text(detail: &OrgDetail<'_>) -> String {
    let org = detail.org;
    let models = match detail.allowed_models {
        [] => "none".to_owned(),
        models => models.join(", "),
    };
    output::fields(&[
        ("organization", org.slug.clone()),
        ("id", org.id.to_string()),
        ("monthly budget", org.monthly_token_budget.to_string()),
        ("timezone", org.timezone.name().to_owned()),
        ("managed by", org.managed_by.as_str().to_owned()),
        ("created", output::time(org.created_at)),
        ("allowed models", models),
    ])
}
