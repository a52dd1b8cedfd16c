//! `ias-admin audit`: list the audit log's entries and verify its hash chain.

use clap::{Args, Subcommand};
use ias_core::{AuditEntry, AuditFilter, AuditVerification};

use crate::cli::Context;
use crate::error::CliResult;
use crate::exit::{EXIT_CODES_HELP, Exit};
use crate::output::{self, Report};
use crate::paging::{self, PageArgs};
use crate::values;

/// Audit commands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List audit entries, newest first, a page at a time, of one organization or of all
    List(ListArgs),
    /// Check the hash chain and name the first entry changed or removed (exit 1)
    #[command(long_about = VERIFY_ABOUT, after_help = EXIT_CODES_HELP)]
    Verify(VerifyArgs),
}

const VERIFY_ABOUT: &str = "\
Check the audit log's hash chain from its first entry to its newest, and name
the first entry that was changed or removed outside ias. Exit 0 when the chain
is intact, 1 when it is broken.

A writer of the database file who recomputes every later hash, or who removes
only the newest entries, leaves a consistent chain. Keep the head that this
command prints (id and hash) somewhere such writers cannot reach, and pass it
back with --anchor: that entry must then still be there, unchanged.";

/// Arguments of `audit list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only entries about this organization
    #[arg(long)]
    org: Option<String>,
    /// Only entries at or after this time: RFC 3339 (`2026-12-01T08:00:00Z`) or a UTC date
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Only entries with this action, such as `key.create` or `key.create.denied`
    #[arg(long)]
    action: Option<String>,
    /// Pages go from the newest entries to older ones
    #[command(flatten)]
    page: PageArgs,
}

/// Arguments of `audit verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// An entry noted from an earlier verification, as `ID:HASH`, that must still be there
    #[arg(long, value_name = "ID:HASH")]
    anchor: Option<String>,
}

/// Runs an audit command.
pub async fn run(command: AuditCommand, ctx: &Context) -> CliResult<Report> {
    match command {
        AuditCommand::List(args) => list(args, ctx).await,
        AuditCommand::Verify(args) => verify(args, ctx).await,
    }
}

async fn list(args: ListArgs, ctx: &Context) -> CliResult<Report> {
    let filter = AuditFilter {
        since: args.since.as_deref().map(values::since).transpose()?,
        action: args.action,
    };
    let page = args.page.request()?;
    let admin = ctx.admin().await?;
    let entries = admin.audit_log(args.org.as_deref(), &filter, &page).await?;
    let rows: Vec<Vec<String>> = entries.items.iter().map(row).collect();
    let headers = ["ID", "AT", "ACTOR", "SOURCE", "ACTION", "TARGET", "CHANGES"];
    paging::report(output::table(&headers, &rows), &entries)
}

fn row(entry: &AuditEntry) -> Vec<String> {
    let record = &entry.record;
    vec![
        entry.id.to_string(),
        output::time(record.at),
        record.actor.clone(),
        record.source.as_str().to_owned(),
        record.action.clone(),
        record.target.clone(),
        changes(&record.changes),
    ]
}

/// `field: before -> after` for each changed field, on one line; `field: value` otherwise.
fn changes(changes: &serde_json::Value) -> String {
    let Some(fields) = changes.as_object() else {
        return changes.to_string();
    };
    let shown: Vec<String> = fields
        .iter()
        .map(
            |(field, change)| match (change.get("before"), change.get("after")) {
                (Some(before), Some(after)) => format!("{field}: {before} -> {after}"),
                _ => format!("{field}: {change}"),
            },
        )
        .collect();
    shown.join("; ")
}

async fn verify(args: VerifyArgs, ctx: &Context) -> CliResult<Report> {
    let anchor = args.anchor.as_deref().map(values::anchor).transpose()?;
    let verification = ctx.admin().await?.verify_audit(anchor).await?;
    let exit = if verification.is_intact() {
        Exit::Success
    } else {
        Exit::Failure
    };
    Ok(Report::new(verify_text(&verification), &verification)?.with_exit(exit))
}

fn verify_text(verification: &AuditVerification) -> String {
    let head = verification.head.as_ref().map_or_else(
        || "no entries".to_owned(),
        |head| format!("head {}:{}", head.id, head.hash),
    );
    match &verification.broken {
        None => format!(
            "audit log intact: {} entries checked, {head}",
            verification.checked
        ),
        Some(broken) => format!(
            "audit log broken: {broken} ({} intact before it)",
            verification.checked
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_show_before_and_after_or_the_value() {
        let shown = changes(&serde_json::json!({
            "permission": "key.create",
            "monthly_token_limit": { "before": 5, "after": 50 },
        }));
        assert_eq!(
            shown,
            "monthly_token_limit: 5 -> 50; permission: \"key.create\""
        );
    }
}
