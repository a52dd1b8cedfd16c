//! `ias-admin gitops`: an organization declared in a Git repository.
//!
//! `enable` points an organization at a file in a repository; from then on
//! the reconciler (run by the gateway, or once by `sync`) keeps the
//! organization's budget, rate limits, allowed models and users equal to
//! the file. `plan` and `drift` exit 0 when there is nothing to change, 2
//! when there is, and 1 on any error; `status` exits 0 only when every
//! organization shown is synced.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};
use ias_core::Page;
use ias_core::gitops::manifest;
use ias_core::gitops::reconcile::{ManifestSource, Reconciler, ReconcilerConfig};
use ias_core::gitops::settings::{DEFAULT_MAX_REMOVAL_PERCENT, DEFAULT_PATH, DEFAULT_REF};
use ias_core::gitops::{
    DriftPolicy, FieldChange, GitopsState, NewGitopsSettings, Plan, SyncStatus,
    settings::parse_max_removal, state::short_commit,
};
use ias_gitops::GitManifestSource;
use serde::Serialize;

use crate::cli::Context;
use crate::error::{CliError, CliResult};
use crate::exit::{Exit, GITOPS_EXIT_CODES_HELP};
use crate::output::{self, Report};
use crate::paging::{self, PageArgs};

/// GitOps commands.
#[derive(Debug, Subcommand)]
pub enum GitopsCommand {
    /// Declare an organization in a file in a Git repository (or change its settings)
    #[command(after_help = GITOPS_EXIT_CODES_HELP)]
    Enable(EnableArgs),
    /// Stop reconciling an organization; its fields are managed through the API again
    #[command(after_help = GITOPS_EXIT_CODES_HELP)]
    Disable(OrgArgs),
    /// Keep fetching and reporting, but apply nothing
    #[command(after_help = GITOPS_EXIT_CODES_HELP)]
    Suspend(OrgArgs),
    /// Apply again after `suspend`
    #[command(after_help = GITOPS_EXIT_CODES_HELP)]
    Resume(OrgArgs),
    /// Reconcile an organization now and print the result
    #[command(after_help = GITOPS_EXIT_CODES_HELP)]
    Sync(SyncArgs),
    /// Show sync status; exits 0 only when every organization shown is synced
    #[command(after_help = GITOPS_EXIT_CODES_HELP)]
    Status(StatusArgs),
    /// Show out-of-band changes to Git-owned fields; exits 2 when there are some
    #[command(after_help = GITOPS_EXIT_CODES_HELP)]
    Drift(OrgArgs),
    /// Show what the file at the ref would change; exits 2 when it would change something
    #[command(after_help = GITOPS_EXIT_CODES_HELP)]
    Plan(PlanArgs),
    /// Check a file offline, without a database; lists every error
    #[command(after_help = GITOPS_EXIT_CODES_HELP)]
    Validate(ValidateArgs),
    /// Reconcile every organization with GitOps on a schedule, until Ctrl-C or SIGTERM
    #[command(after_help = GITOPS_EXIT_CODES_HELP)]
    Run(RunArgs),
}

/// Arguments of `gitops run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Seconds between cycles
    #[arg(long, default_value_t = ias_core::gitops::settings::DEFAULT_INTERVAL_SECS)]
    interval: u64,
    /// Where fetched repositories are cached (default: the user's cache directory)
    #[arg(long, env = "IAS_GITOPS_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
}

/// The organization a command acts on.
#[derive(Debug, Args)]
pub struct OrgArgs {
    /// The organization's slug
    #[arg(long)]
    org: String,
}

/// Arguments of `gitops enable`.
#[derive(Debug, Args)]
pub struct EnableArgs {
    /// The organization's slug
    #[arg(long)]
    org: String,
    /// The repository: https://…, ssh://…, user@host:path or file://… (never with credentials)
    #[arg(long)]
    repo: String,
    /// A branch, a tag, or a full 40-hex commit id
    #[arg(long = "ref", default_value = DEFAULT_REF)]
    git_ref: String,
    /// The file's path inside the repository
    #[arg(long, default_value = DEFAULT_PATH)]
    path: String,
    /// Where credentials come from: env:NAME, token-file:PATH, ssh-key:PATH or ssh-agent
    #[arg(long)]
    credentials: Option<String>,
    /// Remove users that Git added and the file no longer lists
    #[arg(long)]
    prune: bool,
    /// What to do about out-of-band changes: report them, or heal (revert) them
    #[arg(long, default_value = "report")]
    drift: String,
    /// The largest share of the organization's users one apply may remove
    #[arg(long, default_value_t = format!("{DEFAULT_MAX_REMOVAL_PERCENT}%"))]
    max_removal: String,
    /// Let an apply leave the organization with no user or no org admin
    #[arg(long)]
    allow_empty: bool,
}

/// Arguments of `gitops sync`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The organization's slug
    #[arg(long)]
    org: String,
    /// Where fetched repositories are cached (default: the user's cache directory)
    #[arg(long, env = "IAS_GITOPS_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
}

/// Arguments of `gitops status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// One organization's slug; every organization with GitOps when absent, by id, a page at a time
    #[arg(long)]
    org: Option<String>,
    #[command(flatten)]
    page: PageArgs,
}

/// Arguments of `gitops plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The organization's slug
    #[arg(long)]
    org: String,
    /// Plan a local file instead of the one at the ref
    #[arg(long)]
    file: Option<PathBuf>,
    /// Where fetched repositories are cached (default: the user's cache directory)
    #[arg(long, env = "IAS_GITOPS_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
}

/// Arguments of `gitops validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The file to check
    file: PathBuf,
    /// The organization the file must declare
    #[arg(long)]
    org: Option<String>,
}

/// Runs a GitOps command.
pub async fn run(command: GitopsCommand, ctx: &Context) -> CliResult<Report> {
    match command {
        GitopsCommand::Enable(args) => enable(args, ctx).await,
        GitopsCommand::Disable(args) => disable(args, ctx).await,
        GitopsCommand::Suspend(args) => suspend(args, true, ctx).await,
        GitopsCommand::Resume(args) => suspend(args, false, ctx).await,
        GitopsCommand::Sync(args) => sync(args, ctx).await,
        GitopsCommand::Status(args) => status(args, ctx).await,
        GitopsCommand::Drift(args) => as_failure(drift(args, ctx).await),
        GitopsCommand::Plan(args) => as_failure(plan(args, ctx).await),
        GitopsCommand::Validate(args) => validate(args),
        GitopsCommand::Run(args) => run_loop(args, ctx).await,
    }
}

/// `plan` and `drift` keep exit 2 for "there are changes": every error is 1.
fn as_failure(result: CliResult<Report>) -> CliResult<Report> {
    result.map_err(|err| CliError::Failed(Box::new(err)))
}

async fn enable(args: EnableArgs, ctx: &Context) -> CliResult<Report> {
    let settings = NewGitopsSettings {
        repo_url: args.repo,
        git_ref: args.git_ref,
        path: args.path,
        credentials: args.credentials,
        prune: args.prune,
        drift: args.drift.parse::<DriftPolicy>()?,
        max_removal_percent: parse_max_removal(&args.max_removal)?,
        allow_empty: args.allow_empty,
    };
    ias_gitops::check_settings(&settings)?;
    let state = ctx
        .admin()
        .await?
        .gitops_enable(&args.org, settings)
        .await?;
    let s = &state.settings;
    let text = format!(
        "GitOps enabled for `{}`: {} at `{}`, file `{}`; prune {}, drift {}, removal guard {}%\n\
         its budget, rate limits, allowed models and users now follow the file",
        args.org,
        s.repo_url,
        s.git_ref,
        s.path,
        on_off(s.prune),
        s.drift,
        s.max_removal_percent
    );
    Report::new(text, &state)
}

async fn disable(args: OrgArgs, ctx: &Context) -> CliResult<Report> {
    let changed = ctx.admin().await?.gitops_disable(&args.org).await?;
    let text = if changed {
        format!(
            "GitOps disabled for `{}`; its fields are managed through the API again",
            args.org
        )
    } else {
        format!("GitOps was not enabled for `{}`; nothing changed", args.org)
    };
    Report::new(
        text,
        &serde_json::json!({ "org": args.org, "changed": changed }),
    )
}

async fn suspend(args: OrgArgs, suspended: bool, ctx: &Context) -> CliResult<Report> {
    let admin = ctx.admin().await?;
    let changed = admin.gitops_suspend(&args.org, suspended).await?;
    let word = if suspended { "suspended" } else { "resumed" };
    let text = if changed {
        format!("GitOps {word} for `{}`", args.org)
    } else {
        format!(
            "GitOps was already {word} for `{}`; nothing changed",
            args.org
        )
    };
    Report::new(
        text,
        &serde_json::json!({ "org": args.org, "suspended": suspended, "changed": changed }),
    )
}

fn source(cache_dir: Option<PathBuf>) -> CliResult<Arc<dyn ManifestSource>> {
    let dir = cache_dir.unwrap_or_else(GitManifestSource::default_cache_dir);
    Ok(Arc::new(GitManifestSource::new(dir)?))
}

async fn sync(args: SyncArgs, ctx: &Context) -> CliResult<Report> {
    let admin = ctx.admin().await?;
    let reconciler = Reconciler::new(
        ctx.store().await?,
        source(args.cache_dir)?,
        ReconcilerConfig::default(),
    );
    let state = admin.gitops_sync(&args.org, &reconciler).await?;
    let exit = if state.status.status == SyncStatus::Synced {
        Exit::Success
    } else {
        Exit::Failure
    };
    Ok(Report::new(state_text(&state), &state)?.with_exit(exit))
}

async fn status(args: StatusArgs, ctx: &Context) -> CliResult<Report> {
    let page = args.page.request()?;
    let admin = ctx.admin().await?;
    let states = match &args.org {
        Some(org) => Page {
            items: vec![admin.gitops_status(org).await?],
            next_after: None,
        },
        None => admin.gitops_statuses(&page).await?,
    };
    let shown = &states.items;
    let synced = shown.iter().all(|s| s.status.status == SyncStatus::Synced);
    let text = match (&args.org, shown.as_slice()) {
        (Some(_), [state]) => state_text(state),
        (_, []) if args.page.is_first() => "GitOps is enabled for no organization".to_owned(),
        _ => status_table(shown),
    };
    let exit = if synced && !shown.is_empty() {
        Exit::Success
    } else {
        Exit::Failure
    };
    Ok(paging::report(text, &states)?.with_exit(exit))
}

fn status_table(states: &[GitopsState]) -> String {
    let rows: Vec<Vec<String>> = states
        .iter()
        .map(|s| {
            vec![
                s.settings.org_slug.clone(),
                s.status.status.to_string(),
                s.status.reason.clone(),
                s.status
                    .last_applied_commit
                    .as_deref()
                    .map_or("-", short_commit)
                    .to_owned(),
                s.status.drift.len().to_string(),
                s.status.message.clone(),
            ]
        })
        .collect();
    output::table(
        &["ORG", "STATUS", "REASON", "APPLIED", "DRIFT", "MESSAGE"],
        &rows,
    )
}

fn state_text(state: &GitopsState) -> String {
    let s = &state.settings;
    let st = &state.status;
    let commit = |c: &Option<String>| {
        c.as_deref()
            .map_or("-".to_owned(), |c| short_commit(c).to_owned())
    };
    let mut text = output::fields(&[
        ("org", s.org_slug.clone()),
        ("status", format!("{} ({})", st.status, st.reason)),
        ("message", st.message.clone()),
        (
            "repo",
            format!("{} at `{}`, file `{}`", s.repo_url, s.git_ref, s.path),
        ),
        (
            "settings",
            format!(
                "prune {}, drift {}, removal guard {}%, allow empty {}, suspended {}",
                on_off(s.prune),
                s.drift,
                s.max_removal_percent,
                on_off(s.allow_empty),
                on_off(s.suspended)
            ),
        ),
        ("fetched", commit(&st.last_fetched_commit)),
        ("attempted", commit(&st.last_attempted_commit)),
        ("applied", commit(&st.last_applied_commit)),
        (
            "last attempt",
            output::maybe_time(st.last_attempt_at, "never"),
        ),
        (
            "last success",
            output::maybe_time(st.last_success_at, "never"),
        ),
        ("failures", st.consecutive_failures.to_string()),
        ("next retry", output::maybe_time(st.next_retry_at, "-")),
        ("drift found", st.drift_count.to_string()),
    ]);
    for change in &st.drift {
        text.push_str(&format!("\n  {change}"));
    }
    text
}

async fn drift(args: OrgArgs, ctx: &Context) -> CliResult<Report> {
    let changes = ctx.admin().await?.gitops_drift(&args.org).await?;
    let text = if changes.is_empty() {
        format!("no drift: `{}` matches the file last applied", args.org)
    } else {
        changes_text(&changes)
    };
    let exit = if changes.is_empty() {
        Exit::Success
    } else {
        Exit::Usage
    };
    Ok(Report::new(text, &changes)?.with_exit(exit))
}

#[derive(Serialize)]
struct PlanView<'a> {
    org: &'a str,
    commit: Option<&'a str>,
    #[serde(flatten)]
    plan: &'a Plan,
}

async fn plan(args: PlanArgs, ctx: &Context) -> CliResult<Report> {
    let admin = ctx.admin().await?;
    let state = admin.gitops_status(&args.org).await?;
    let (bytes, commit) = match &args.file {
        Some(path) => (read_file(path)?, None),
        None => {
            let file = source(args.cache_dir)?.fetch(&state.settings).await?;
            (file.content, Some(file.commit))
        }
    };
    let name = match &args.file {
        Some(path) => path.display().to_string(),
        None => state.settings.path.clone(),
    };
    let manifest = manifest::parse_bytes(&bytes, Some(&state.settings.org_slug))
        .map_err(|errors| CliError::Manifest { file: name, errors })?;
    let plan = admin.gitops_plan(&args.org, &manifest).await?;
    let mut text = if plan.is_empty() {
        format!("no changes: `{}` already matches the file", args.org)
    } else {
        changes_text(&plan.changes)
    };
    for blocked in &plan.blocked {
        text.push_str(&format!(
            "\nblocked at once: {} has used {} tokens this month, over its new limit of {}",
            blocked.target, blocked.used, blocked.limit
        ));
    }
    for kept in &plan.kept {
        text.push_str(&format!(
            "\nkept: user:{kept} is not in the file (Git did not add it, or prune is off)"
        ));
    }
    if let Some(refused) = &plan.refused {
        text.push_str(&format!("\nrefused: {refused}"));
    }
    let view = PlanView {
        org: &args.org,
        commit: commit.as_deref(),
        plan: &plan,
    };
    let exit = if plan.is_empty() {
        Exit::Success
    } else {
        Exit::Usage
    };
    Ok(Report::new(text, &view)?.with_exit(exit))
}

async fn run_loop(args: RunArgs, ctx: &Context) -> CliResult<Report> {
    if args.interval == 0 {
        return Err(ias_core::Error::invalid("interval", "0", "must be at least 1 second").into());
    }
    let config = ReconcilerConfig {
        interval: std::time::Duration::from_secs(args.interval),
        ..ReconcilerConfig::default()
    };
    let reconciler = Reconciler::new(ctx.store().await?, source(args.cache_dir)?, config);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = stop.send(true);
    });
    eprintln!(
        "reconciling every {} s; Ctrl-C or SIGTERM stops",
        args.interval
    );
    reconciler.run(stopped).await;
    Report::new("stopped", &serde_json::json!({ "stopped": true }))
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn changes_text(changes: &[FieldChange]) -> String {
    changes
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

fn validate(args: ValidateArgs) -> CliResult<Report> {
    let bytes = read_file(&args.file)?;
    let name = args.file.display().to_string();
    match manifest::parse_bytes(&bytes, args.org.as_deref()) {
        Ok(manifest) => {
            let text = format!(
                "{name}: valid; org `{}`, {} user(s), {} allowed model pattern(s)",
                manifest.org,
                manifest.users.len(),
                manifest.allowed_models.len()
            );
            Report::new(text, &manifest)
        }
        Err(errors) => Err(CliError::Manifest { file: name, errors }),
    }
}

fn read_file(path: &std::path::Path) -> CliResult<Vec<u8>> {
    let limit = ias_core::gitops::manifest::MAX_FILE_BYTES as u64;
    let meta = std::fs::metadata(path)
        .map_err(|err| CliError::Io(format!("cannot read `{}`: {err}", path.display())))?;
    if meta.len() > limit {
        return Err(CliError::Io(format!(
            "cannot read `{}`: {} bytes, more than the {limit} a GitOps file may have",
            path.display(),
            meta.len()
        )));
    }
    std::fs::read(path)
        .map_err(|err| CliError::Io(format!("cannot read `{}`: {err}", path.display())))
}

fn on_off(value: bool) -> &'static str {
    if value { "on" } else { "off" }
}
