//! The happy path, end to end: org, user, model, key, authorize, revoke, usage.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Db, authorize_args};

#[test]
fn org_user_model_and_key_are_created() {
    let db = Db::new();
    let org = db.json(&[
        "org",
        "create",
        "--slug",
        "team-alpha",
        "--monthly-token-budget",
        "5_000_000",
        "--timezone",
        "Europe/Berlin",
    ]);
    assert_eq!(org["slug"], "team-alpha");
    assert_eq!(org["monthly_token_budget"], 5_000_000);
    assert_eq!(org["timezone"], "Europe/Berlin");

    let user = db.json(&[
        "user",
        "create",
        "--org",
        "team-alpha",
        "--email",
        "Bob@Example.com",
        "--role",
        "org_admin",
    ]);
    assert_eq!(user["email"], "bob@example.com");
    assert_eq!(user["role"], "org_admin");
    assert_eq!(user["monthly_token_limit"], serde_json::Value::Null);

    let change = db.json(&[
        "model",
        "allow",
        "--org",
        "team-alpha",
        "--model",
        "GPT-4o-mini",
    ]);
    assert_eq!(change["model"], "gpt-4o-mini");
    assert_eq!(change["changed"], true);
    let again = db.json(&[
        "model",
        "allow",
        "--org",
        "team-alpha",
        "--model",
        "gpt-4o-mini",
    ]);
    assert_eq!(again["changed"], false);
}

#[test]
fn key_secret_is_shown_once_with_its_metadata() {
    let (db, _) = Db::with_team();
    let key = db.json(&[
        "key",
        "create",
        "--email",
        "bob@example.com",
        "--expires-in",
        "30d",
    ]);
    let secret = key["secret"].as_str().unwrap();
    assert!(secret.starts_with("ias_") && secret.len() == 44, "{secret}");
    assert!(secret.starts_with(key["prefix"].as_str().unwrap()));
    assert!(key["id"].as_i64().unwrap() > 0);
    assert!(key["expires_at"].is_string());
    assert_eq!(key["status"], "active");
    assert_eq!(key["email"], "bob@example.com");

    let list = db.ok(&["key", "list", "--email", "bob@example.com"]);
    assert!(!list.stdout.contains(secret), "{}", list.stdout);
    let listed = db.json(&["key", "list", "--email", "bob@example.com"]);
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);
    assert!(listed.to_string().find(secret).is_none());
    assert!(listed["items"][0].get("secret").is_none());
}

#[test]
fn text_key_create_warns_that_the_secret_is_not_shown_again() {
    let (db, _) = Db::with_team();
    let run = db.ok(&["key", "create", "--email", "bob@example.com"]);
    assert!(run.stdout.contains("secret: ias_"), "{}", run.stdout);
    assert!(
        run.stdout.contains("will not be shown again"),
        "{}",
        run.stdout
    );
    assert!(run.stderr.is_empty());
}

#[test]
fn authorize_allows_then_denies_by_model_limit_and_revocation() {
    let (db, secret) = Db::with_team();
    let (run, allowed) = db.authorize(&secret, "gpt-4o-mini", "100");
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(allowed["decision"], "allowed");
    assert_eq!(allowed["principal"]["email"], "bob@example.com");
    assert_eq!(allowed["reservation"], serde_json::Value::Null);

    let (run, denied) = db.authorize(&secret, "gpt-4o", "100");
    assert_eq!(run.code, 3, "{run:?}");
    assert_eq!(denied["decision"], "denied");
    assert_eq!(denied["reason"], "model_not_allowed");

    let (run, denied) = db.authorize(&secret, "gpt-4o-mini", "600");
    assert_eq!(run.code, 3, "{run:?}");
    assert_eq!(denied["reason"], "user_limit_exhausted");
    assert_eq!(denied["limit"]["limit"], 500);

    let key_id = allowed["principal"]["key_id"].to_string();
    db.ok(&["key", "revoke", "--key-id", &key_id]);
    let (run, denied) = db.authorize(&secret, "gpt-4o-mini", "100");
    assert_eq!(run.code, 3, "{run:?}");
    assert_eq!(denied["reason"], "revoked_key");
}

#[test]
fn authorize_text_never_shows_the_key() {
    let (db, secret) = Db::with_team();
    let args = authorize_args("gpt-4o-mini", "600");
    let run = db.run_stdin(&[&args[..], &["--explain"]].concat(), Some(&secret));
    assert_eq!(run.code, 3, "{run:?}");
    for field in [
        "reason:",
        "scope:",
        "limit:",
        "used:",
        "reserved:",
        "requested:",
        "resets at:",
    ] {
        assert!(
            run.stdout.contains(field),
            "{field} missing: {}",
            run.stdout
        );
    }
    assert!(run.stdout.contains("user_limit_exhausted"));
    let short = db.run_stdin(&args, Some(&secret));
    assert_eq!(short.stdout.lines().count(), 1, "{short:?}");
    for out in [&run.stdout, &run.stderr, &short.stdout, &short.stderr] {
        assert!(!out.contains(&secret));
    }
}

#[test]
fn authorize_is_a_dry_run() {
    let (db, secret) = Db::with_team();
    for _ in 0..3 {
        let (run, _) = db.authorize(&secret, "gpt-4o-mini", "400");
        assert_eq!(run.code, 0, "{run:?}");
    }
    let usage = db.json(&["usage", "show", "--org", "team-alpha"]);
    assert_eq!(usage["org"]["used"], 0);
    assert_eq!(usage["org"]["reserved"], 0);
}

#[test]
fn set_limit_none_leaves_only_the_org_budget() {
    let (db, secret) = Db::with_team();
    let args = [
        "user",
        "set-limit",
        "--email",
        "BOB@example.com",
        "--monthly-token-limit",
    ];
    let user = db.json(&[&args[..], &["none"]].concat());
    assert_eq!(user["monthly_token_limit"], serde_json::Value::Null);
    let (run, _) = db.authorize(&secret, "gpt-4o-mini", "600");
    assert_eq!(run.code, 0, "{run:?}");
    let (run, denied) = db.authorize(&secret, "gpt-4o-mini", "1001");
    assert_eq!(run.code, 3, "{run:?}");
    assert_eq!(denied["reason"], "org_budget_exhausted");

    let user = db.json(&[&args[..], &["250"]].concat());
    assert_eq!(user["monthly_token_limit"], 250);
}

#[test]
fn set_budget_changes_what_the_org_may_spend_at_once() {
    let (db, secret) = Db::with_team();
    let (run, _) = db.authorize(&secret, "gpt-4o-mini", "400");
    assert_eq!(run.code, 0, "{run:?}");
    let org = db.json(&[
        "org",
        "set-budget",
        "--org",
        "team-alpha",
        "--monthly-token-budget",
        "300",
        "--timezone",
        "Asia/Tokyo",
    ]);
    assert_eq!(org["monthly_token_budget"], 300);
    assert_eq!(org["timezone"], "Asia/Tokyo");
    let (run, denied) = db.authorize(&secret, "gpt-4o-mini", "400");
    assert_eq!(run.code, 3, "{run:?}");
    assert_eq!(denied["reason"], "org_budget_exhausted");
}

#[test]
fn usage_show_has_period_org_users_and_models() {
    let (db, _) = Db::with_team();
    let usage = db.json(&["usage", "show", "--org", "team-alpha"]);
    assert_eq!(usage["org_slug"], "team-alpha");
    let period = usage["period"].as_str().unwrap();
    assert_eq!(period.len(), 7, "{period}");
    let org = &usage["org"];
    for field in ["used", "reserved", "monthly_token_budget", "remaining"] {
        assert!(org[field].is_i64(), "{field}: {usage}");
    }
    assert_eq!(org["monthly_token_budget"], 1000);
    let users = usage["users"].as_array().unwrap();
    assert_eq!(users[0]["email"], "bob@example.com");
    assert_eq!(users[0]["monthly_token_limit"], 500);
    assert_eq!(users[0]["counter"]["used"], 0);
    assert!(usage["models"].is_array());

    let one = db.json(&[
        "usage",
        "show",
        "--org",
        "team-alpha",
        "--email",
        "bob@example.com",
    ]);
    assert_eq!(one["users"].as_array().unwrap().len(), 1);
}

#[test]
fn every_change_is_audited_as_coming_from_the_cli() {
    let (db, _) = Db::with_team();
    let page = db.json(&["audit", "list"]);
    let entries = page["items"].as_array().unwrap();
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["key.create", "model.allow", "user.create", "org.create"]
    );
    assert!(entries.iter().all(|e| e["source"] == "cli"));
    assert!(!page.to_string().contains("\"secret\""));
}

#[test]
fn database_url_comes_from_the_environment_too() {
    let db = Db::new();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ias-admin"))
        .args(["org", "list", "--output", "json"])
        .current_dir(db.dir.path())
        .env("IAS_DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(db.dir.path().join("ias.db").exists());
}

#[test]
fn help_lists_the_exit_codes() {
    let db = Db::new();
    for args in [&["--help"][..], &["authorize", "--help"][..]] {
        let run = db.ok(args);
        assert!(run.stdout.contains("Exit codes:"), "{}", run.stdout);
        for code in ["0  ", "1  ", "2  ", "3  "] {
            assert!(run.stdout.contains(code), "{code:?}: {}", run.stdout);
        }
    }
}
