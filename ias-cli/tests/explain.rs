//! `authorize --explain`: every number that decided a dry-run request.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;

use common::{Db, Run, authorize_args, fields};

const DENIED: i32 = 3;

/// Runs `authorize --explain` in text and in JSON; returns the text fields and the JSON.
fn explain(
    db: &Db,
    secret: &str,
    tokens: &str,
) -> (Run, BTreeMap<String, String>, serde_json::Value) {
    let args = [&authorize_args("gpt-4o-mini", tokens)[..], &["--explain"]].concat();
    let key = format!("{secret}\n");
    let text = db.run_stdin(&args, Some(&key));
    let json = db.run_stdin(&[&args[..], &["--output", "json"]].concat(), Some(&key));
    assert_eq!(text.code, json.code, "{text:?} {json:?}");
    for out in [&text.stdout, &text.stderr, &json.stdout, &json.stderr] {
        assert!(!out.contains(secret), "the key was printed");
    }
    let shown = fields(&text.stdout);
    (text, shown, json.json())
}

fn assert_fields(shown: &BTreeMap<String, String>, expected: &[(&str, &str)]) {
    for (label, value) in expected {
        assert_eq!(
            shown.get(*label).map(String::as_str),
            Some(*value),
            "{label}: {shown:?}"
        );
    }
}

/// The current period, as `usage show` names it.
fn period(db: &Db) -> String {
    let usage = db.json(&["usage", "show", "--org", "team-alpha"]);
    usage["period"].as_str().unwrap().to_owned()
}

#[test]
fn an_allowed_request_shows_both_budgets_in_full() {
    let (db, secret) = Db::with_team();
    db.spend(&secret, "gpt-4o-mini", 120);
    let (run, shown, decision) = explain(&db, &secret, "100");
    assert_eq!(run.code, 0, "{run:?}");
    let period = period(&db);
    let resets_at = decision["resets_at"].as_str().unwrap();
    assert_fields(
        &shown,
        &[
            ("decision", "allowed"),
            ("org", "team-alpha"),
            ("user", "bob@example.com"),
            ("key id", "1"),
            ("model", "gpt-4o-mini"),
            ("requested", "100"),
            ("period", &period),
            ("org budget", "1000"),
            ("org used", "120"),
            ("org reserved", "0"),
            ("org left", "880"),
            ("user limit", "500"),
            ("user used", "120"),
            ("user reserved", "0"),
            ("user left", "380"),
            ("resets at", resets_at),
        ],
    );
    assert_eq!(decision["decision"], "allowed");
    assert_eq!(decision["budget"]["org_limit"], 1000);
    assert_eq!(decision["budget"]["org"]["used"], 120);
    assert_eq!(decision["budget"]["user_limit"], 500);
    assert_eq!(decision["period"], period.as_str());
    assert_eq!(decision["reservation"], serde_json::Value::Null);
}

#[test]
fn a_user_without_a_limit_of_its_own_shows_none() {
    let (db, secret) = Db::with_team();
    db.ok(&[
        "user",
        "set-limit",
        "--email",
        "bob@example.com",
        "--monthly-token-limit",
        "none",
    ]);
    let (_, shown, decision) = explain(&db, &secret, "100");
    assert!(shown["user limit"].starts_with("none"), "{shown:?}");
    assert_eq!(shown["user left"], "-");
    assert_eq!(decision["budget"]["user_limit"], serde_json::Value::Null);
}

#[test]
fn a_spent_user_limit_says_when_it_resets() {
    let (db, secret) = Db::with_team();
    db.spend(&secret, "gpt-4o-mini", 500);
    let (run, shown, decision) = explain(&db, &secret, "1");
    assert_eq!(run.code, DENIED, "{run:?}");
    let period = period(&db);
    let limit = &decision["limit"];
    let resets_at = limit["resets_at"].as_str().unwrap();
    let retry = limit["retry_after_secs"].as_u64().unwrap();
    assert!(retry >= 1, "{decision}");
    assert_fields(
        &shown,
        &[
            ("decision", "denied"),
            ("reason", "user_limit_exhausted (limit_exceeded)"),
            ("requested", "1"),
            ("scope", "user"),
            ("kind", "monthly_tokens"),
            ("limit", "500"),
            ("used", "500"),
            ("reserved", "0"),
            ("left", "0"),
            ("period", &period),
            ("resets at", resets_at),
        ],
    );
    let shown_retry: u64 = shown["retry after"]
        .strip_suffix(" s")
        .unwrap()
        .parse()
        .unwrap();
    // A second or so may pass between the two runs.
    assert!(shown_retry.abs_diff(retry) <= 2, "{shown_retry} vs {retry}");
    assert_eq!(decision["reason"], "user_limit_exhausted");
    assert_eq!(limit["scope"], "user");
    assert_eq!(limit["kind"], "monthly_tokens");
    assert_eq!(limit["period"], period.as_str());
}

#[test]
fn a_spent_org_budget_is_named_as_the_org_scope() {
    let (db, secret) = Db::with_team();
    db.ok(&[
        "user",
        "set-limit",
        "--email",
        "bob@example.com",
        "--monthly-token-limit",
        "none",
    ]);
    db.spend(&secret, "gpt-4o-mini", 600);
    db.spend(&secret, "gpt-4o-mini", 400);
    let (run, shown, decision) = explain(&db, &secret, "1");
    assert_eq!(run.code, DENIED, "{run:?}");
    assert_fields(
        &shown,
        &[
            ("reason", "org_budget_exhausted (limit_exceeded)"),
            ("scope", "org"),
            ("kind", "monthly_tokens"),
            ("limit", "1000"),
            ("used", "1000"),
            ("left", "0"),
        ],
    );
    assert!(shown["retry after"].ends_with(" s"), "{shown:?}");
    assert_eq!(decision["limit"]["scope"], "org");
}

#[test]
fn a_request_larger_than_a_monthly_limit_never_fits() {
    let (db, secret) = Db::with_team();
    let (run, shown, decision) = explain(&db, &secret, "600");
    assert_eq!(run.code, DENIED, "{run:?}");
    assert_fields(
        &shown,
        &[
            ("scope", "user"),
            ("limit", "500"),
            ("left", "500"),
            ("retry after", "never fits"),
        ],
    );
    assert_eq!(
        decision["limit"]["retry_after_secs"],
        serde_json::Value::Null
    );
}

#[test]
fn a_request_larger_than_a_tpm_limit_never_fits() {
    let (db, secret) = Db::with_team();
    db.ok(&["limits", "set", "--org", "team-alpha", "--tpm", "50"]);
    let (run, shown, decision) = explain(&db, &secret, "51");
    assert_eq!(run.code, DENIED, "{run:?}");
    assert_fields(
        &shown,
        &[
            ("reason", "rate_limited (limit_exceeded)"),
            ("requested", "51"),
            ("scope", "org"),
            ("kind", "tokens_per_minute"),
            ("limit", "50"),
            ("used", "0"),
            ("reserved", "0"),
            ("period", "-"),
            ("retry after", "never fits"),
        ],
    );
    assert!(shown["message"].contains("never fit"), "{shown:?}");
    let limit = &decision["limit"];
    assert_eq!(decision["reason"], "rate_limited");
    assert_eq!(limit["kind"], "tokens_per_minute");
    assert_eq!(limit["period"], serde_json::Value::Null);
    assert_eq!(limit["retry_after_secs"], serde_json::Value::Null);

    // Exactly the limit fits.
    let (run, _, _) = explain(&db, &secret, "50");
    assert_eq!(run.code, 0, "{run:?}");

    // A key's own limit is named as the key's.
    db.ok(&["limits", "set", "--org", "team-alpha", "--tpm", "none"]);
    db.ok(&[
        "limits",
        "set",
        "--org",
        "team-alpha",
        "--key-id",
        "1",
        "--tpm",
        "10",
    ]);
    let (run, shown, _) = explain(&db, &secret, "11");
    assert_eq!(run.code, DENIED, "{run:?}");
    assert_fields(&shown, &[("scope", "key"), ("limit", "10")]);
}

/// Rate windows are kept in the database: a dry run sees what other
/// processes were granted in the last minute, and records nothing itself.
#[test]
fn the_dry_run_sees_requests_other_processes_were_granted() {
    let (db, secret) = Db::with_team();
    db.ok(&["limits", "set", "--org", "team-alpha", "--rpm", "2"]);
    db.spend(&secret, "gpt-4o-mini", 10);
    for _ in 0..2 {
        let (run, _) = db.authorize(&secret, "gpt-4o-mini", "10");
        assert_eq!(run.code, 0, "{run:?}");
    }
    db.spend(&secret, "gpt-4o-mini", 10);
    let (run, decision) = db.authorize(&secret, "gpt-4o-mini", "10");
    assert_eq!(run.code, DENIED, "{run:?}");
    assert_eq!(decision["reason"], "rate_limited");
}

#[test]
fn denials_without_a_limit_show_dashes() {
    let (db, secret) = Db::with_team();
    let args = [&authorize_args("gpt-4o", "1")[..], &["--explain"]].concat();
    let run = db.run_stdin(&args, Some(&secret));
    assert_eq!(run.code, DENIED, "{run:?}");
    let shown = fields(&run.stdout);
    assert_fields(
        &shown,
        &[
            ("reason", "model_not_allowed (forbidden)"),
            ("user", "bob@example.com"),
            ("scope", "-"),
            ("kind", "-"),
            ("retry after", "-"),
        ],
    );

    let run = db.run_stdin(&args, Some("ias_not_a_real_key"));
    assert_eq!(run.code, DENIED, "{run:?}");
    let shown = fields(&run.stdout);
    assert_fields(
        &shown,
        &[
            ("reason", "invalid_key (unauthenticated)"),
            ("org", "-"),
            ("user", "-"),
            ("key id", "-"),
            ("limit", "-"),
        ],
    );
}

#[test]
fn json_is_the_same_decision_with_or_without_explain() {
    let (db, secret) = Db::with_team();
    for tokens in ["100", "600"] {
        let (_, plain) = db.authorize(&secret, "gpt-4o-mini", tokens);
        let (_, _, explained) = explain(&db, &secret, tokens);
        assert_eq!(plain, explained);
    }
}

#[test]
fn without_explain_the_answer_is_one_line() {
    let (db, secret) = Db::with_team();
    db.ok(&["limits", "set", "--org", "team-alpha", "--tpm", "50"]);
    let args = authorize_args("gpt-4o-mini", "51");
    let run = db.run_stdin(&args, Some(&secret));
    assert_eq!(run.code, DENIED, "{run:?}");
    assert_eq!(run.stdout.lines().count(), 1, "{run:?}");
    assert!(run.stdout.starts_with("denied (rate_limited): "), "{run:?}");
}
