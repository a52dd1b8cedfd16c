//! `ias-admin authorize`: would this key be allowed to call this model?
//!
//! A dry run of the gateway's check ([`ias_core::Governor::check`]): it
//! reserves and spends nothing. The key is read from standard input only,
//! so it never lands in shell history or a process list, and it is never
//! printed.
//!
//! Per-minute windows live in the memory of each gateway, so this process
//! starts with its own empty: it reports a rate denial only for a request
//! that can never fit (more tokens than a `tpm` limit).

use std::io::{IsTerminal, Read};

use clap::Args;
use ias_core::{Allowed, BudgetState, Decision, Denied, Error, LimitDetail, Principal};

use crate::cli::Context;
use crate::error::{CliError, CliResult};
use crate::exit::Exit;
use crate::output::{self, Report};
use crate::values;

/// More than any key; input beyond it is not read.
const MAX_KEY_INPUT: u64 = 4096;

/// Arguments of `authorize`.
#[derive(Args)]
pub struct AuthorizeArgs {
    /// Must be `-`: the key is read from standard input
    #[arg(long, value_name = "-", allow_hyphen_values = true)]
    key: String,
    /// The model the request would call
    #[arg(long)]
    model: String,
    /// Tokens the request is estimated to use
    #[arg(long, value_name = "TOKENS", allow_hyphen_values = true)]
    tokens: String,
    /// Print every detail of the decision, not just its summary
    #[arg(long)]
    explain: bool,
}

/// Runs `authorize`: exit code 0 when allowed, 3 when denied.
pub async fn run(args: AuthorizeArgs, ctx: &Context) -> CliResult<Report> {
    let tokens = values::tokens("tokens", &args.tokens)?;
    ias_core::policy::model_name(&args.model)?;
    let stdin = std::io::stdin();
    if args.key == "-" && stdin.is_terminal() {
        eprintln!("reading the key from standard input; end it with Ctrl-D");
    }
    let key = read_key(&args.key, stdin.lock())?;
    let governor = ctx.governor().await?;
    let decision = governor.check(&key, &args.model, tokens).await;
    // Shut down even when the check failed: the governor gives back what it holds.
    let closed = governor.shutdown().await;
    let decision = decision?;
    closed?;
    report(&decision, args.explain)
}

/// Reads the key from `input` when `flag` is `-`, dropping one trailing newline.
fn read_key(flag: &str, input: impl Read) -> CliResult<String> {
    if flag != "-" {
        return Err(CliError::Secret {
            field: "key",
            reason: "only `-` is accepted; write the key to standard input \
                     so it stays out of shell history and process lists",
        });
    }
    let bytes = read_limited(input)?;
    let text = String::from_utf8(bytes).map_err(|_| CliError::Secret {
        field: "key",
        reason: "standard input is not valid UTF-8",
    })?;
    let key = strip_newline(&text);
    if key.is_empty() {
        let reason = "must not be empty; write the key to standard input";
        return Err(Error::invalid("key", "", reason).into());
    }
    Ok(key.to_owned())
}

fn read_limited(input: impl Read) -> CliResult<Vec<u8>> {
    let mut bytes = Vec::new();
    input
        .take(MAX_KEY_INPUT)
        .read_to_end(&mut bytes)
        .map_err(|err| CliError::Io(format!("cannot read the key from standard input: {err}")))?;
    Ok(bytes)
}

fn strip_newline(text: &str) -> &str {
    text.strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(text)
}

fn report(decision: &Decision, explain: bool) -> CliResult<Report> {
    let (text, exit) = match decision {
        Decision::Allowed(allowed) if explain => (explain_allowed(allowed), Exit::Success),
        Decision::Allowed(allowed) => (summary_allowed(allowed), Exit::Success),
        Decision::Denied(denied) if explain => (explain_denied(denied), Exit::Denied),
        Decision::Denied(denied) => (summary_denied(denied), Exit::Denied),
    };
    Ok(Report::new(text, decision)?.with_exit(exit))
}

fn summary_allowed(allowed: &Allowed) -> String {
    let who = &allowed.principal;
    format!(
        "allowed: `{}` of `{}` may call `{}` with {} tokens",
        who.email, who.org_slug, allowed.model, allowed.requested
    )
}

fn summary_denied(denied: &Denied) -> String {
    format!("denied ({}): {}", denied.reason.as_str(), denied.message())
}

/// Every number of an allowed decision; `left` is what is free before this request.
fn explain_allowed(allowed: &Allowed) -> String {
    let budget = &allowed.budget;
    let mut fields = vec![("decision", "allowed".to_owned())];
    fields.extend(principal_fields(Some(&allowed.principal)));
    fields.extend([
        ("model", allowed.model.clone()),
        ("requested", allowed.requested.to_string()),
        ("period", allowed.period.clone()),
        ("org budget", budget.org_limit.to_string()),
        ("org used", budget.org.used.to_string()),
        ("org reserved", budget.org.reserved.to_string()),
        ("org left", budget.org.left_of(budget.org_limit).to_string()),
    ]);
    fields.extend(user_fields(budget));
    fields.push(("resets at", output::time(allowed.resets_at)));
    output::fields(&fields)
}

fn user_fields(budget: &BudgetState) -> [(&'static str, String); 4] {
    let left = budget.user_limit.map(|limit| budget.user.left_of(limit));
    [
        (
            "user limit",
            budget.user_limit.map_or_else(
                || "none (only the org budget applies)".to_owned(),
                |l| l.to_string(),
            ),
        ),
        ("user used", budget.user.used.to_string()),
        ("user reserved", budget.user.reserved.to_string()),
        (
            "user left",
            left.map_or_else(|| "-".to_owned(), |l| l.to_string()),
        ),
    ]
}

fn explain_denied(denied: &Denied) -> String {
    let category = denied.reason.category().as_str();
    let mut fields = vec![
        ("decision", "denied".to_owned()),
        ("reason", format!("{} ({category})", denied.reason.as_str())),
        ("message", denied.message()),
    ];
    fields.extend(principal_fields(denied.principal.as_ref()));
    fields.extend([
        ("model", denied.model.clone()),
        ("requested", denied.requested.to_string()),
    ]);
    fields.extend(limit_fields(denied.limit.as_ref()));
    output::fields(&fields)
}

fn principal_fields(principal: Option<&Principal>) -> [(&'static str, String); 3] {
    let dash = || "-".to_owned();
    [
        ("org", principal.map_or_else(dash, |p| p.org_slug.clone())),
        ("user", principal.map_or_else(dash, |p| p.email.clone())),
        (
            "key id",
            principal.map_or_else(dash, |p| p.key_id.to_string()),
        ),
    ]
}

const LIMIT_LABELS: [&str; 9] = [
    "scope",
    "kind",
    "limit",
    "used",
    "reserved",
    "left",
    "period",
    "resets at",
    "retry after",
];

/// The limit that refused the request, or a dash for each field when none did.
fn limit_fields(limit: Option<&LimitDetail>) -> Vec<(&'static str, String)> {
    let Some(limit) = limit else {
        return LIMIT_LABELS.map(|label| (label, "-".to_owned())).to_vec();
    };
    let retry_after = limit
        .retry_after_secs
        .map_or_else(|| "never fits".to_owned(), |secs| format!("{secs} s"));
    let values = [
        limit.scope.as_str().to_owned(),
        limit.kind.as_str().to_owned(),
        limit.limit.to_string(),
        limit.used.to_string(),
        limit.reserved.to_string(),
        limit.left().to_string(),
        limit.period.clone().unwrap_or_else(|| "-".to_owned()),
        output::time(limit.resets_at),
        retry_after,
    ];
    LIMIT_LABELS.into_iter().zip(values).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_trailing_newline_is_dropped() {
        assert_eq!(read_key("-", "ias_x\n".as_bytes()).unwrap(), "ias_x");
        assert_eq!(read_key("-", "ias_x\r\n".as_bytes()).unwrap(), "ias_x");
        assert_eq!(read_key("-", "ias_x\n\n".as_bytes()).unwrap(), "ias_x\n");
    }

    #[test]
    fn empty_or_inline_keys_are_refused_without_echo() {
        let empty = read_key("-", "\n".as_bytes()).unwrap_err();
        assert!(empty.to_string().starts_with("invalid key"), "{empty}");
        assert_eq!(empty.exit(), Exit::Usage);
        let inline = read_key("ias_secret", "".as_bytes()).unwrap_err();
        assert!(!inline.to_string().contains("ias_secret"));
        assert_eq!(inline.exit(), Exit::Usage);
    }
}
