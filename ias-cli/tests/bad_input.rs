//! Bad input on every command: one `error:` line naming the field and the
//! value, the documented exit code, nothing on stdout, and nothing written.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Db, assert_one_line_error, authorize_args, run_in};

const USAGE: i32 = 2;
const FAILURE: i32 = 1;

#[test]
fn org_create_rejects_bad_budgets_slugs_and_timezones() {
    let (db, _) = Db::with_team();
    let create = |slug: &str, budget: &str, tz: &str| -> Vec<String> {
        [
            "org",
            "create",
            "--slug",
            slug,
            "--monthly-token-budget",
            budget,
            "--timezone",
            tz,
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let cases = [
        (
            create("team-beta", "-5", "UTC"),
            USAGE,
            vec!["monthly_token_budget", "`-5`"],
        ),
        (
            create("team-beta", "99999999999999999999", "UTC"),
            USAGE,
            vec!["monthly_token_budget", "`99999999999999999999`"],
        ),
        (
            create("team-beta", "ten", "UTC"),
            USAGE,
            vec!["monthly_token_budget", "`ten`"],
        ),
        (
            create("team-beta", "10", "Mars/Olympus"),
            USAGE,
            vec!["timezone", "`Mars/Olympus`"],
        ),
        (
            create("Team Beta", "10", "UTC"),
            USAGE,
            vec!["slug", "`Team Beta`"],
        ),
        (
            create("team-alpha", "10", "UTC"),
            FAILURE,
            vec!["`team-alpha`", "already exists"],
        ),
    ];
    for (args, code, needles) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        db.refused(&args, None, code, &needles);
    }
}

#[test]
fn negative_budget_message_is_exact() {
    let db = Db::new();
    let args = [
        "org",
        "create",
        "--slug",
        "a",
        "--monthly-token-budget",
        "-5",
    ];
    let run = db.refused(&args, None, USAGE, &[]);
    assert_eq!(
        run.stderr,
        "error: invalid monthly_token_budget `-5`: must not be negative\n"
    );
}

#[test]
fn org_show_and_lists_reject_unknown_orgs() {
    let (db, _) = Db::with_team();
    for args in [
        &["org", "show", "--org", "nope"][..],
        &["user", "list", "--org", "nope"],
        &["model", "list", "--org", "nope"],
        &["usage", "show", "--org", "nope"],
        &["audit", "list", "--org", "nope"],
    ] {
        db.refused(args, None, FAILURE, &["organization `nope` not found"]);
    }
    db.refused(
        &["org", "show", "--org", "No Pe"],
        None,
        USAGE,
        &["slug", "`No Pe`"],
    );
}

#[test]
fn user_create_rejects_duplicates_in_any_case() {
    let (db, _) = Db::with_team();
    let args = [
        "user",
        "create",
        "--org",
        "team-alpha",
        "--email",
        "Bob@Example.com",
        "--role",
        "member",
    ];
    db.refused(
        &args,
        None,
        FAILURE,
        &["`bob@example.com`", "already exists"],
    );
}

#[test]
fn user_create_rejects_bad_values() {
    let (db, _) = Db::with_team();
    let create = |org: &str, email: &str, role: &str, limit: &str| -> Vec<String> {
        [
            "user",
            "create",
            "--org",
            org,
            "--email",
            email,
            "--role",
            role,
            "--monthly-token-limit",
            limit,
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let cases = [
        (
            create("nope", "a@b.co", "member", "1"),
            FAILURE,
            vec!["organization `nope`"],
        ),
        (
            create("team-alpha", "a@b.co", "boss", "1"),
            USAGE,
            vec!["role", "`boss`"],
        ),
        (
            create("team-alpha", "a b@c.co", "member", "1"),
            USAGE,
            vec!["email", "`a b@c.co`"],
        ),
        (
            create("team-alpha", "a@b.co", "member", "-1"),
            USAGE,
            vec!["monthly_token_limit", "`-1`"],
        ),
        (
            create("team-alpha", "a@b.co", "member", "99999999999999999999"),
            USAGE,
            vec!["monthly_token_limit", "`99999999999999999999`"],
        ),
    ];
    for (args, code, needles) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        db.refused(&args, None, code, &needles);
    }
}

#[test]
fn set_limit_rejects_bad_limits_and_unknown_users() {
    let (db, _) = Db::with_team();
    let set = |email: &str, limit: &str| -> Vec<String> {
        [
            "user",
            "set-limit",
            "--email",
            email,
            "--monthly-token-limit",
            limit,
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let cases = [
        (
            set("bob@example.com", "-5"),
            USAGE,
            vec!["monthly_token_limit", "`-5`"],
        ),
        (
            set("bob@example.com", "99999999999999999999"),
            USAGE,
            vec!["monthly_token_limit", "`99999999999999999999`"],
        ),
        (
            set("bob@example.com", "lots"),
            USAGE,
            vec!["monthly_token_limit", "`lots`"],
        ),
        (
            set("eve@example.com", "5"),
            FAILURE,
            vec!["user `eve@example.com` not found"],
        ),
        (set("eve", "5"), USAGE, vec!["email", "`eve`"]),
    ];
    for (args, code, needles) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        db.refused(&args, None, code, &needles);
    }
}

#[test]
fn key_commands_reject_bad_lifetimes_ids_and_unknown_users() {
    let (db, _) = Db::with_team();
    for lifetime in ["30y", "-1d", "0d", "99999d"] {
        let args = [
            "key",
            "create",
            "--email",
            "bob@example.com",
            "--expires-in",
            lifetime,
        ];
        db.refused(
            &args,
            None,
            USAGE,
            &["expires_in", &format!("`{lifetime}`")],
        );
    }
    let unknown = ["key", "create", "--email", "eve@example.com"];
    db.refused(
        &unknown,
        None,
        FAILURE,
        &["user `eve@example.com` not found"],
    );
    let list = ["key", "list", "--email", "eve@example.com"];
    db.refused(&list, None, FAILURE, &["user `eve@example.com` not found"]);
    for id in ["abc", "-3", "0"] {
        let args = ["key", "revoke", "--key-id", id];
        db.refused(&args, None, USAGE, &["key_id", &format!("`{id}`")]);
    }
    db.refused(
        &["key", "revoke", "--key-id", "99"],
        None,
        FAILURE,
        &["key `99` not found"],
    );
}

#[test]
fn revoking_twice_is_a_conflict() {
    let (db, _) = Db::with_team();
    db.ok(&["key", "revoke", "--key-id", "1"]);
    let args = ["key", "revoke", "--key-id", "1"];
    db.refused(&args, None, FAILURE, &["key `1`", "already revoked"]);
}

#[test]
fn model_commands_reject_malformed_names() {
    let (db, _) = Db::with_team();
    for verb in ["allow", "deny"] {
        for model in ["gpt 4", "a*b", ""] {
            let args = ["model", verb, "--org", "team-alpha", "--model", model];
            db.refused(&args, None, USAGE, &["model", &format!("`{model}`")]);
        }
        let args = ["model", verb, "--org", "nope", "--model", "gpt-4o"];
        db.refused(&args, None, FAILURE, &["organization `nope` not found"]);
    }
}

#[test]
fn usage_show_rejects_unknown_and_foreign_users() {
    let (db, _) = Db::with_team();
    db.create_org("team-beta", 10);
    db.create_user("team-beta", "eve@example.com", "member");
    let foreign = [
        "usage",
        "show",
        "--org",
        "team-alpha",
        "--email",
        "eve@example.com",
    ];
    db.refused(
        &foreign,
        None,
        USAGE,
        &["email", "`eve@example.com`", "team-alpha"],
    );
    let unknown = [
        "usage",
        "show",
        "--org",
        "team-alpha",
        "--email",
        "zed@example.com",
    ];
    db.refused(
        &unknown,
        None,
        FAILURE,
        &["user `zed@example.com` not found"],
    );
}

#[test]
fn usage_by_day_rejects_bad_days_and_misplaced_ranges() {
    let (db, _) = Db::with_team();
    let by_day = |from: &str, to: &str| -> Vec<String> {
        [
            "usage",
            "show",
            "--org",
            "team-alpha",
            "--by",
            "day",
            "--from",
            from,
            "--to",
            to,
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let cases = [
        (
            by_day("yesterday", "2026-01-31"),
            vec!["from", "`yesterday`"],
        ),
        (
            by_day("2026-01-01", "2026-02-30"),
            vec!["to", "`2026-02-30`"],
        ),
        (
            by_day("2026-02-01", "2026-01-31"),
            vec!["to", "`2026-01-31`", "before", "2026-02-01"],
        ),
    ];
    for (args, needles) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        db.refused(&args, None, USAGE, &needles);
    }
    let misplaced = [
        "usage",
        "show",
        "--org",
        "team-alpha",
        "--from",
        "2026-01-01",
    ];
    db.refused(
        &misplaced,
        None,
        USAGE,
        &["from", "`2026-01-01`", "--by day"],
    );
    let run = db.run(&["usage", "show", "--org", "team-alpha", "--by", "week"]);
    assert_eq!(run.code, USAGE, "{run:?}");
}

/// Every list command, as it is run on the team of [`Db::with_team`].
const LISTS: [&[&str]; 8] = [
    &["org", "list"],
    &["user", "list", "--org", "team-alpha"],
    &["key", "list", "--email", "bob@example.com"],
    &["model", "list", "--org", "team-alpha"],
    &["audit", "list"],
    &["usage", "show", "--org", "team-alpha"],
    &["usage", "show", "--org", "team-alpha", "--by", "day"],
    &["gitops", "status"],
];

#[test]
fn every_list_rejects_bad_limits() {
    let (db, _) = Db::with_team();
    for list in LISTS {
        for limit in ["0", "-1", "x", "1001", "10000", ""] {
            let args = [list, &["--limit", limit]].concat();
            let run = db.run(&args);
            let needles = ["invalid limit", &format!("`{limit}`"), "from 1 to 1000"];
            assert_one_line_error(&run, USAGE, &needles, &args);
        }
    }
    let json = db.run(&["audit", "list", "--limit", "0", "--output", "json"]);
    assert_eq!(json.code, USAGE);
    assert!(json.stdout.is_empty(), "{json:?}");
    assert!(
        json.stderr.contains(r#""kind":"invalid_input""#),
        "{json:?}"
    );
}

#[test]
fn every_list_rejects_cursors_of_the_wrong_shape() {
    let (db, _) = Db::with_team();
    let by_id = ["x", "0", "-3", "1.5", "", " 7"];
    let cases: [(&[&str], &[&str]); 8] = [
        (LISTS[0], &by_id),
        (LISTS[1], &by_id),
        (LISTS[2], &by_id),
        (LISTS[3], &["", "a\u{7}b"]),
        (LISTS[4], &by_id),
        (LISTS[5], &by_id),
        (
            LISTS[6],
            &["2026-12-01", "yesterday/gpt-4o", "2026-12-01/", ""],
        ),
        (LISTS[7], &by_id),
    ];
    for (list, cursors) in cases {
        for cursor in cursors {
            let args = [list, &["--after", cursor]].concat();
            let run = db.run(&args);
            assert_one_line_error(&run, USAGE, &["invalid after"], &args);
        }
    }
}

#[test]
fn authorize_rejects_empty_and_inline_keys_without_echo() {
    let (db, secret) = Db::with_team();
    let args = authorize_args("gpt-4o-mini", "1");
    for input in ["", "\n"] {
        db.refused(&args, Some(input), USAGE, &["invalid key", "empty"]);
    }
    let inline = [
        "authorize",
        "--key",
        &secret,
        "--model",
        "gpt-4o-mini",
        "--tokens",
        "1",
    ];
    let run = db.refused(&inline, Some(""), USAGE, &["invalid key", "`-`"]);
    assert!(!run.stderr.contains(&secret), "{run:?}");
}

#[test]
fn authorize_rejects_bad_tokens_and_models() {
    let (db, secret) = Db::with_team();
    let key = format!("{secret}\n");
    let cases = [
        (("gpt-4o-mini", "-5"), vec!["tokens", "`-5`"]),
        (
            ("gpt-4o-mini", "99999999999999999999"),
            vec!["tokens", "`99999999999999999999`"],
        ),
        (("gpt 4", "5"), vec!["model", "`gpt 4`"]),
        (("a*b", "5"), vec!["model", "`a*b`"]),
    ];
    for ((model, tokens), needles) in cases {
        let args = authorize_args(model, tokens);
        let run = db.refused(&args, Some(&key), USAGE, &needles);
        assert!(!run.stderr.contains(&secret));
    }
}

#[test]
fn unknown_database_schemes_never_show_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--database-url", "mysql://u:pw@h/db", "org", "list"];
    let run = run_in(dir.path(), &args, None);
    assert_one_line_error(&run, USAGE, &["database url", "mysql://u:***@h/db"], &args);
    assert!(!run.stderr.contains("pw"), "{run:?}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn sqlite_paths_in_missing_directories_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing").join("ias.db");
    let url = format!("sqlite://{}", missing.display());
    let args = [
        "--database-url",
        url.as_str(),
        "org",
        "create",
        "--slug",
        "a",
        "--monthly-token-budget",
        "1",
    ];
    let run = run_in(dir.path(), &args, None);
    assert_one_line_error(
        &run,
        USAGE,
        &["database url", &url, "does not exist"],
        &args,
    );
    assert!(!dir.path().join("missing").exists());
}

#[test]
fn an_unreachable_postgres_server_is_reported_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 1 of loopback.
    let url = "postgres://ias:hunter2@127.0.0.1:1/ias";
    let args = ["--database-url", url, "org", "list"];
    let run = run_in(dir.path(), &args, None);
    assert_one_line_error(
        &run,
        FAILURE,
        &["unavailable", "postgres://ias:***@127.0.0.1:1/ias"],
        &args,
    );
    assert!(!run.stderr.contains("hunter2"), "{run:?}");
}

#[test]
fn json_errors_are_one_object_on_stderr() {
    let (db, _) = Db::with_team();
    let args = [
        "org",
        "create",
        "--slug",
        "b",
        "--monthly-token-budget",
        "-5",
        "--output",
        "json",
    ];
    let before = db.snapshot();
    let run = db.run(&args);
    assert_eq!(run.code, USAGE);
    assert!(run.stdout.is_empty());
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    let err: serde_json::Value = serde_json::from_str(&run.stderr).unwrap();
    assert_eq!(err["error"]["kind"], "invalid_input");
    let message = err["error"]["message"].as_str().unwrap();
    assert_eq!(
        message,
        "invalid monthly_token_budget `-5`: must not be negative"
    );
    assert_eq!(db.snapshot(), before);

    let missing = db.run(&["org", "show", "--org", "nope", "--output", "json"]);
    assert_eq!(missing.code, FAILURE);
    let err: serde_json::Value = serde_json::from_str(&missing.stderr).unwrap();
    assert_eq!(err["error"]["kind"], "not_found");
}

#[test]
fn command_line_mistakes_exit_with_usage() {
    let db = Db::new();
    for args in [
        &["org", "frobnicate"][..],
        &["org", "create", "--slug", "a"],
        &["org", "list", "--output", "yaml"],
    ] {
        let run = db.run(args);
        assert_eq!(run.code, USAGE, "{args:?}: {run:?}");
        assert!(run.stdout.is_empty());
    }
}
