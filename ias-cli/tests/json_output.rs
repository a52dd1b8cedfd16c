//! `--output json` prints parseable JSON for every command, in stable shapes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Db;
use serde_json::json;

#[test]
fn every_read_command_prints_json() {
    let (db, secret) = Db::with_team();
    let reads: [&[&str]; 16] = [
        &["org", "list"],
        &["org", "show", "--org", "team-alpha"],
        &["user", "list", "--org", "team-alpha"],
        &["key", "list", "--email", "bob@example.com"],
        &["model", "list", "--org", "team-alpha"],
        &["usage", "show", "--org", "team-alpha"],
        &[
            "usage",
            "show",
            "--org",
            "team-alpha",
            "--email",
            "bob@example.com",
        ],
        &["usage", "show", "--org", "team-alpha", "--by", "day"],
        &["usage", "show", "--org", "team-alpha", "--by", "model"],
        &["usage", "show", "--org", "team-alpha", "--by", "user"],
        &["usage", "forecast", "--org", "team-alpha"],
        &["audit", "list"],
        &["audit", "list", "--org", "team-alpha", "--limit", "2"],
        &["limits", "show", "--org", "team-alpha"],
        &[
            "limits",
            "show",
            "--org",
            "team-alpha",
            "--email",
            "bob@example.com",
        ],
        &["limits", "show", "--org", "team-alpha", "--key-id", "1"],
    ];
    for args in reads {
        let value = db.json(args);
        assert!(value.is_object(), "{args:?}: {value}");
    }
    let (run, decision) = db.authorize(&secret, "gpt-4o-mini", "1");
    assert_eq!(run.code, 0);
    assert_eq!(decision["decision"], "allowed");
}

#[test]
fn the_output_flag_may_come_first() {
    let (db, _) = Db::with_team();
    let run = db.ok(&["--output", "json", "org", "list"]);
    assert_eq!(run.json()["items"][0]["slug"], "team-alpha");
}

#[test]
fn lists_are_pages_of_the_core_types() {
    let (db, _) = Db::with_team();
    let orgs = db.items(&["org", "list"]);
    assert_eq!(orgs[0]["monthly_token_budget"], 1000);
    assert_eq!(orgs[0]["timezone"], "UTC");
    assert_eq!(orgs[0]["managed_by"], "api");
    let show = db.json(&["org", "show", "--org", "team-alpha"]);
    assert_eq!(show["allowed_models"], serde_json::json!(["gpt-4o-mini"]));
    let users = db.items(&["user", "list", "--org", "team-alpha"]);
    assert_eq!(users[0]["email"], "bob@example.com");
    assert_eq!(users[0]["role"], "member");
    let keys = db.items(&["key", "list", "--email", "bob@example.com"]);
    for field in [
        "id",
        "prefix",
        "status",
        "created_at",
        "expires_at",
        "revoked_at",
    ] {
        assert!(keys[0].get(field).is_some(), "{field}: {keys:?}");
    }
    let models = db.json(&["model", "list", "--org", "team-alpha"]);
    let page = serde_json::json!({"items": ["gpt-4o-mini"], "next_after": null});
    assert_eq!(models, page);
}

#[test]
fn usage_counts_what_the_gateway_spent() {
    let (db, secret) = Db::with_team();
    db.spend(&secret, "gpt-4o-mini", 120);

    let usage = db.json(&["usage", "show", "--org", "team-alpha"]);
    assert_eq!(usage["org"]["used"], 120);
    assert_eq!(usage["org"]["remaining"], 880);
    assert_eq!(usage["users"][0]["counter"]["used"], 120);
    assert_eq!(usage["users"][0]["requests"], 1);
    assert_eq!(usage["models"][0]["model"], "gpt-4o-mini");
    assert_eq!(usage["models"][0]["tokens"], 120);
    assert_eq!(usage["next_after"], serde_json::Value::Null);

    let text = db.ok(&["usage", "show", "--org", "team-alpha"]).stdout;
    assert!(text.contains("120 used"), "{text}");
    let (run, denied) = db.authorize(&secret, "gpt-4o-mini", "400");
    assert_eq!(run.code, 3, "{run:?}");
    assert_eq!(denied["limit"]["used"], 120);
}

#[test]
fn usage_forecast_measures_the_pace_against_the_limit() {
    let (db, secret) = Db::with_team();
    db.spend(&secret, "gpt-4o-mini", 120);

    let org = db.json(&["usage", "forecast", "--org", "team-alpha"]);
    assert_eq!(
        (&org["limit"], &org["used"], &org["remaining"]),
        (&json!(1000), &json!(120), &json!(880))
    );
    // 120 tokens over at most 7 days and at least an hour.
    let per_day = org["tokens_per_day"].as_i64().unwrap();
    assert!((17..=2_880).contains(&per_day), "{org}");
    assert!(org["projected_tokens"].as_i64().unwrap() >= 120, "{org}");
    let resets: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(org["resets_at"].clone()).unwrap();
    if let Some(at) = org["exhausted_at"].as_str() {
        let at: chrono::DateTime<chrono::Utc> = at.parse().unwrap();
        assert!(at > chrono::Utc::now() && at < resets, "{org}");
    }

    let bob = db.json(&[
        "usage",
        "forecast",
        "--org",
        "team-alpha",
        "--email",
        "bob@example.com",
    ]);
    assert_eq!(
        (&bob["limit"], &bob["remaining"]),
        (&json!(500), &json!(380))
    );
    let text = db.ok(&["usage", "forecast", "--org", "team-alpha"]).stdout;
    assert!(
        text.contains("tokens per day") && text.contains("880"),
        "{text}"
    );
}

#[test]
fn usage_by_model_or_user_keeps_only_that_breakdown() {
    let (db, secret) = Db::with_team();
    db.spend(&secret, "gpt-4o-mini", 120);
    let by_model = db.json(&["usage", "show", "--org", "team-alpha", "--by", "model"]);
    assert_eq!(by_model["models"][0]["tokens"], 120);
    assert!(by_model.get("users").is_none(), "{by_model}");
    assert_eq!(by_model["org"]["used"], 120);
    let by_user = db.json(&["usage", "show", "--org", "team-alpha", "--by", "user"]);
    assert_eq!(by_user["users"][0]["counter"]["used"], 120);
    assert!(by_user.get("models").is_none(), "{by_user}");

    let text = db.ok(&["usage", "show", "--org", "team-alpha", "--by", "model"]);
    assert!(text.stdout.contains("MODEL"), "{text:?}");
    assert!(!text.stdout.contains("EMAIL"), "{text:?}");
}

#[test]
fn usage_by_day_lists_what_was_settled_per_day_and_model() {
    let (db, secret) = Db::with_team();
    db.ok(&["model", "allow", "--org", "team-alpha", "--model", "gpt-4o"]);
    let before = chrono::Utc::now().format("%Y-%m-%d").to_string();
    db.spend(&secret, "gpt-4o-mini", 120);
    db.spend(&secret, "gpt-4o-mini", 30);
    db.spend(&secret, "gpt-4o", 7);
    let after = chrono::Utc::now().format("%Y-%m-%d").to_string();

    let days = db.json(&["usage", "show", "--org", "team-alpha", "--by", "day"]);
    let rows = days["items"].as_array().unwrap();
    let mut seen: Vec<(String, i64, i64)> = rows
        .iter()
        .map(|row| {
            let day = row["day"].as_str().unwrap();
            assert!(day == before || day == after, "{row}");
            let model = row["model"].as_str().unwrap().to_owned();
            (
                model,
                row["tokens"].as_i64().unwrap(),
                row["requests"].as_i64().unwrap(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("gpt-4o".to_owned(), 7, 1),
            ("gpt-4o-mini".to_owned(), 150, 2)
        ]
    );

    let one_user = [
        "usage",
        "show",
        "--org",
        "team-alpha",
        "--email",
        "bob@example.com",
        "--by",
        "day",
        "--from",
        &before,
        "--to",
        &after,
    ];
    assert_eq!(db.json(&one_user), days);
    let text = db.ok(&one_user[..one_user.len() - 4]).stdout;
    assert!(text.starts_with("DAY"), "{text}");
    assert!(text.contains("gpt-4o-mini  150     2"), "{text}");

    let long_ago = [
        "usage",
        "show",
        "--org",
        "team-alpha",
        "--by",
        "day",
        "--from",
        "2001-01-01",
        "--to",
        "2001-01-31",
    ];
    let none = serde_json::json!({"items": [], "next_after": null});
    assert_eq!(db.json(&long_ago), none);
}

#[test]
fn writes_print_json_too() {
    let db = Db::new();
    let org = db.json(&[
        "org",
        "create",
        "--slug",
        "a",
        "--monthly-token-budget",
        "5",
    ]);
    assert_eq!(org["slug"], "a");
    let user = db.json(&[
        "user", "create", "--org", "a", "--email", "x@y.co", "--role", "member",
    ]);
    let limit = db.json(&[
        "user",
        "set-limit",
        "--email",
        "x@y.co",
        "--monthly-token-limit",
        "3",
    ]);
    assert_eq!(limit["id"], user["id"]);
    let allow = db.json(&["model", "allow", "--org", "a", "--model", "openai/*"]);
    assert_eq!(
        allow,
        serde_json::json!({"org": "a", "model": "openai/*", "changed": true})
    );
    let deny = db.json(&["model", "deny", "--org", "a", "--model", "openai/*"]);
    assert_eq!(deny["changed"], true);
    let key = db.json(&["key", "create", "--email", "x@y.co"]);
    let id = key["id"].to_string();
    let revoked = db.json(&["key", "revoke", "--key-id", &id]);
    assert_eq!(revoked["status"], "revoked");
    assert!(revoked.get("secret").is_none());
    assert!(revoked["revoked_at"].is_string());
}
