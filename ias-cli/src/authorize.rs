//! `ias-admin authorize`: would this key be allowed to call this model?
//!
//! A dry run of the gateway's check ([`ias_core::Governor::check`]): it
//! reserves and spends nothing. The key is read from standard input only,
//! so it never lands in shell history or a process list, and it is never
//! printed.

use std::io::{IsTerminal, Read};

use clap::Args;
use ias_core::{
    Allowed, Decision, Denied, DenyCategory, Error, LimitDetail, LimitScope, Principal,
};

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
    let decision = governor.check(&key, &args.model, tokens).await?;
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

fn explain_allowed(allowed: &Allowed) -> String {
    let budget = &allowed.budget;
    let user_limit = budget.user_limit.map_or_else(
        || "none".to_owned(),
        |limit| {
            format!(
                "{} used, {} reserved of {limit}",
                budget.user.used, budget.user.reserved
            )
        },
    );
    let mut fields = vec![("decision", "allowed".to_owned())];
    fields.extend(principal_fields(Some(&allowed.principal)));
    fields.extend([
        ("model", allowed.model.clone()),
        ("requested", allowed.requested.to_string()),
        ("period", allowed.period.clone()),
        (
            "org budget",
            format!(
                "{} used, {} reserved of {}",
                budget.org.used, budget.org.reserved, budget.org_limit
            ),
        ),
        ("user limit", user_limit),
        (
            "resets at",
            allowed
                .resets_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ),
    ]);
    output::fields(&fields)
}

fn explain_denied(denied: &Denied) -> String {
    let category = category_name(denied.reason.category());
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

const LIMIT_LABELS: [&str; 6] = ["scope", "limit", "used", "reserved", "period", "resets at"];

fn limit_fields(limit: Option<&LimitDetail>) -> Vec<(&'static str, String)> {
    let Some(limit) = limit else {
        return LIMIT_LABELS.map(|label| (label, "-".to_owned())).to_vec();
    };
    let values = [
        scope_name(limit.scope).to_owned(),
        limit.limit.to_string(),
        limit.used.to_string(),
        limit.reserved.to_string(),
        limit.period.clone(),
        output::time(limit.resets_at),
    ];
    LIMIT_LABELS.into_iter().zip(values).collect()
}

fn scope_name(scope: LimitScope) -> &'static str {
    match scope {
        LimitScope::Org => "org",
        LimitScope::User => "user",
    }
}

fn category_name(category: DenyCategory) -> &'static str {
    match category {
        DenyCategory::Unauthenticated => "unauthenticated",
        DenyCategory::Forbidden => "forbidden",
        DenyCategory::LimitExceeded => "limit_exceeded",
    }
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
