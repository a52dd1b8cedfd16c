//! `ias-admin audit`: the newest entries of the audit log.

use clap::{Args, Subcommand};
use ias_core::AuditEntry;

use crate::cli::Context;
use crate::error::CliResult;
use crate::output::{self, Report};
use crate::values;

/// Audit commands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List the newest audit entries, of one organization or of all
    List(ListArgs),
}

/// Arguments of `audit list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only entries about this organization
    #[arg(long)]
    org: Option<String>,
    /// How many entries to show, newest first (1 to 10000)
    #[arg(long, default_value = "50", allow_hyphen_values = true)]
    limit: String,
}

/// Runs an audit command.
pub async fn run(command: AuditCommand, ctx: &Context) -> CliResult<Report> {
    match command {
        AuditCommand::List(args) => list(args, ctx).await,
    }
}

async fn list(args: ListArgs, ctx: &Context) -> CliResult<Report> {
    let limit = values::count("limit", &args.limit)?;
    let admin = ctx.admin().await?;
    let entries = admin.audit_log(args.org.as_deref(), limit).await?;
    let rows: Vec<Vec<String>> = entries.iter().map(row).collect();
    let headers = ["ID", "AT", "ACTOR", "SOURCE", "ACTION", "TARGET", "CHANGES"];
    Report::new(output::table(&headers, &rows), &entries)
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

/// `field: before -> after` for each changed field, on one line.
fn changes(changes: &serde_json::Value) -> String {
    let Some(fields) = changes.as_object() else {
        return changes.to_string();
    };
    let shown: Vec<String> = fields
        .iter()
        .map(|(field, change)| {
            let before = change
                .get("before")
                .map_or("null".into(), |v| v.to_string());
            let after = change.get("after").map_or("null".into(), |v| v.to_string());
            format!("{field}: {before} -> {after}")
        })
        .collect();
    shown.join("; ")
}
