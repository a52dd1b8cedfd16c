//! `ias-admin limits`: requests- and tokens-per-minute limits.
//!
//! An organization, a user or a key may each have a limit on requests per
//! minute (`rpm`) and on tokens per minute (`tpm`). Each counts what was
//! granted in the last 60 seconds, a sliding window kept in the memory of
//! every gateway process; `none` removes a limit.

use clap::{ArgGroup, Args, Subcommand};
use ias_core::{KeyId, LimitTarget, RateLimits, UserRef};
use serde::Serialize;

use crate::cli::Context;
use crate::error::CliResult;
use crate::output::{self, Report};
use crate::values;

/// Rate limit commands.
#[derive(Debug, Subcommand)]
pub enum LimitsCommand {
    /// Set or remove the per-minute limits of an organization, a user or a key
    Set(SetArgs),
    /// Show the per-minute limits of an organization, a user or a key
    Show(ShowArgs),
}

/// Whose limits: the organization, or one of its users or keys.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// The organization's slug; without --email or --key-id, its own limits
    #[arg(long)]
    org: String,
    /// A user of the organization
    #[arg(long, conflicts_with = "key_id")]
    email: Option<String>,
    /// A key of one of the organization's users, as shown by `key list`
    #[arg(long, value_name = "ID", allow_hyphen_values = true)]
    key_id: Option<String>,
}

/// Arguments of `limits set`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("limit").args(["rpm", "tpm"]).required(true).multiple(true)))]
pub struct SetArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Requests per minute (1 to 1000000000), or `none`; not given: kept as it is
    #[arg(long, value_name = "N|none", allow_hyphen_values = true)]
    rpm: Option<String>,
    /// Tokens per minute (1 to 1000000000), or `none`; not given: kept as it is
    #[arg(long, value_name = "N|none", allow_hyphen_values = true)]
    tpm: Option<String>,
}

/// Arguments of `limits show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    target: TargetArgs,
}

/// The limits of one target, as both commands print them.
#[derive(Serialize)]
struct LimitsView {
    org: String,
    scope: &'static str,
    email: Option<String>,
    key_id: Option<KeyId>,
    rpm: Option<i64>,
    tpm: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    changed: Option<bool>,
}

impl LimitsView {
    fn new(target: &Target, limits: RateLimits) -> Self {
        let (email, key_id) = match &target.limit {
            LimitTarget::Org => (None, None),
            LimitTarget::User(UserRef::Email(email)) => (Some(email.clone()), None),
            LimitTarget::User(UserRef::Id(id)) => (Some(id.to_string()), None),
            LimitTarget::Key(id) => (None, Some(*id)),
        };
        LimitsView {
            org: target.org.clone(),
            scope: target.scope(),
            email,
            key_id,
            rpm: limits.rpm,
            tpm: limits.tpm,
            changed: None,
        }
    }

    /// The target as a phrase, such as ``user `bob@example.com` of `team-alpha` ``.
    fn whose(&self) -> String {
        match (&self.email, self.key_id) {
            (Some(email), _) => format!("user `{email}` of `{}`", self.org),
            (None, Some(id)) => format!("key {id} of `{}`", self.org),
            (None, None) => format!("organization `{}`", self.org),
        }
    }

    /// `rpm 60, tpm none`.
    fn values(&self) -> String {
        format!(
            "rpm {}, tpm {}",
            output::limit(self.rpm),
            output::limit(self.tpm)
        )
    }
}

/// A target resolved from the command line, with names normalised.
struct Target {
    org: String,
    limit: LimitTarget,
}

impl Target {
    fn parse(args: &TargetArgs) -> CliResult<Self> {
        let org = ias_core::validate::slug(&args.org)?;
        let limit = match (&args.email, &args.key_id) {
            (Some(email), _) => {
                LimitTarget::User(UserRef::Email(ias_core::validate::email(email)?))
            }
            (None, Some(id)) => LimitTarget::Key(values::key_id(id)?),
            (None, None) => LimitTarget::Org,
        };
        Ok(Target { org, limit })
    }

    fn scope(&self) -> &'static str {
        match self.limit {
            LimitTarget::Org => "org",
            LimitTarget::User(_) => "user",
            LimitTarget::Key(_) => "key",
        }
    }
}

/// Runs a limits command.
pub async fn run(command: LimitsCommand, ctx: &Context) -> CliResult<Report> {
    match command {
        LimitsCommand::Set(args) => set(args, ctx).await,
        LimitsCommand::Show(args) => show(args, ctx).await,
    }
}

async fn set(args: SetArgs, ctx: &Context) -> CliResult<Report> {
    let rpm = args.rpm.as_deref().map(|t| values::rate("rpm", t));
    let rpm = rpm.transpose()?;
    let tpm = args.tpm.as_deref().map(|t| values::rate("tpm", t));
    let tpm = tpm.transpose()?;
    let target = Target::parse(&args.target)?;

    let admin = ctx.admin().await?;
    let current = admin.rate_limits(&target.org, target.limit.clone()).await?;
    let wanted = RateLimits {
        rpm: rpm.unwrap_or(current.rpm),
        tpm: tpm.unwrap_or(current.tpm),
    };
    let changed = admin
        .set_rate_limits(&target.org, target.limit.clone(), wanted)
        .await?;

    let view = LimitsView {
        changed: Some(changed),
        ..LimitsView::new(&target, wanted)
    };
    let text = if changed {
        format!("{}: rate limits set to {}", view.whose(), view.values())
    } else {
        format!(
            "{}: rate limits were already {}; nothing changed",
            view.whose(),
            view.values()
        )
    };
    Report::new(text, &view)
}

async fn show(args: ShowArgs, ctx: &Context) -> CliResult<Report> {
    let target = Target::parse(&args.target)?;
    let admin = ctx.admin().await?;
    let limits = admin.rate_limits(&target.org, target.limit.clone()).await?;
    let view = LimitsView::new(&target, limits);
    let name = match (&view.email, view.key_id) {
        (Some(email), _) => email.clone(),
        (None, Some(id)) => id.to_string(),
        (None, None) => view.org.clone(),
    };
    let row = vec![
        view.scope.to_owned(),
        name,
        output::limit(view.rpm),
        output::limit(view.tpm),
    ];
    let text = output::table(&["SCOPE", "TARGET", "RPM", "TPM"], &[row]);
    Report::new(text, &view)
}
