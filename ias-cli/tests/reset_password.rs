//! `user reset-password`: from stdin or the command line, checked, hashed, audited.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Db, assert_one_line_error};
use ias_store_sqlite::SqliteStore;

const PASSWORD: &str = "Vivid-Orbit-Lantern-42";
const OTHER: &str = "Quiet Harbor Mosaic 17";

fn reset_stdin(email: &str) -> [&str; 5] {
    [
        "user",
        "reset-password",
        "--email",
        email,
        "--new-password-stdin",
    ]
}

/// Whether `password` is bob's, checked by the core against the file.
fn is_bobs(db: &Db, password: &str) -> bool {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = SqliteStore::open(db.path()).await.unwrap();
        ias_core::verify_password(&*store, "bob@example.com", password)
            .await
            .unwrap()
    })
}

#[test]
fn a_password_from_stdin_replaces_the_old_one() {
    let (db, _) = Db::with_team();
    let run = db.run_stdin(
        &reset_stdin("bob@example.com"),
        Some(&format!("{PASSWORD}\n")),
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout, "user `bob@example.com`: password reset\n");
    assert!(is_bobs(&db, PASSWORD));

    let args = [
        "user",
        "reset-password",
        "--email",
        "Bob@Example.com",
        "--new-password",
        OTHER,
    ];
    let reset = db.json(&args);
    assert_eq!(reset["email"], "bob@example.com");
    assert_eq!(reset["password"], "reset");
    assert!(is_bobs(&db, OTHER));
    assert!(!is_bobs(&db, PASSWORD));

    let entries = db.items(&["audit", "list", "--action", "user.reset_password"]);
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["source"], "cli");
    assert_eq!(entries[0]["changes"]["password"]["after"], "[redacted]");
}

#[test]
fn a_weak_password_lists_every_broken_rule_and_changes_nothing() {
    let (db, _) = Db::with_team();
    let email = "qwerty@example.com";
    db.ok(&[
        "user",
        "create",
        "--org",
        "team-alpha",
        "--email",
        email,
        "--role",
        "member",
    ]);
    let needles = [
        "weak password",
        "at least 12 characters",
        "at least three of lowercase letters, uppercase letters, digits and symbols",
        "must not contain the name before `@`",
        "commonly used",
    ];
    let run = db.refused(&reset_stdin(email), Some("qwerty\n"), 2, &needles);
    assert!(!run.stderr.contains("`qwerty`"), "{run:?}");
    let long = format!("{}\n", "a1".repeat(70));
    db.refused(
        &reset_stdin(email),
        Some(&long),
        2,
        &["at most 128 characters"],
    );
    let json = db.run_stdin(
        &[&reset_stdin(email)[..], &["--output", "json"]].concat(),
        Some("Password123!"),
    );
    assert_eq!(json.code, 2);
    let error: serde_json::Value = serde_json::from_str(&json.stderr).unwrap();
    assert_eq!(error["error"]["kind"], "weak_password");
    assert!(!json.stderr.contains("Password123!"), "{json:?}");
}

#[test]
fn an_unknown_email_is_not_found() {
    let (db, _) = Db::with_team();
    let needles = ["user `nobody@example.com` not found"];
    db.refused(
        &reset_stdin("nobody@example.com"),
        Some(PASSWORD),
        1,
        &needles,
    );
    let bad = [
        "user",
        "reset-password",
        "--email",
        "not-an-email",
        "--new-password",
        PASSWORD,
    ];
    let run = db.run(&bad);
    assert_one_line_error(&run, 2, &["invalid email `not-an-email`"], &bad);
}

#[test]
fn the_two_sources_cannot_be_combined() {
    let (db, _) = Db::with_team();
    let args = [
        &reset_stdin("bob@example.com")[..],
        &["--new-password", PASSWORD],
    ]
    .concat();
    let run = db.run_stdin(&args, Some(PASSWORD));
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("cannot be used with"), "{run:?}");
    assert!(!is_bobs(&db, PASSWORD));
}

#[test]
fn help_says_why_the_command_line_form_leaks() {
    let db = Db::new();
    let help = db.ok(&["user", "reset-password", "--help"]).stdout;
    assert!(help.contains("history"), "{help}");
    assert!(help.contains("process list"), "{help}");
    assert!(help.contains("--new-password-stdin"), "{help}");
}
