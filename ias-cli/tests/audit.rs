//! `audit list` filters, `audit verify` on intact and tampered files, and no secret anywhere.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Db, Run};
use rusqlite::Connection;
use serde_json::Value;

/// Runs `sql` on the raw file with the append-only triggers dropped, as an attacker would.
fn tamper(db: &Db, sql: &str) {
    let conn = Connection::open(db.path()).unwrap();
    conn.execute_batch(
        "DROP TRIGGER audit_log_no_update;
         DROP TRIGGER audit_log_no_delete;",
    )
    .unwrap();
    conn.execute_batch(sql).unwrap();
}

fn verify(db: &Db, extra: &[&str]) -> (Run, Value) {
    let args = [&["audit", "verify", "--output", "json"][..], extra].concat();
    let run = db.run(&args);
    let value = run.json();
    (run, value)
}

#[test]
fn audit_list_filters_by_org_time_and_action() {
    let (db, _) = Db::with_team();
    db.create_org("team-beta", 5);
    let keys = db.items(&[
        "audit",
        "list",
        "--org",
        "team-alpha",
        "--action",
        "key.create",
    ]);
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["changes"]["owner"]["after"], "bob@example.com");
    let orgs = db.items(&["audit", "list", "--action", "org.create"]);
    assert_eq!(orgs.len(), 2);
    let beta = db.items(&["audit", "list", "--org", "team-beta"]);
    assert_eq!(beta.len(), 1);
    let all = db.items(&["audit", "list", "--since", "2000-01-01"]);
    assert_eq!(all.len(), 5);
    let future = db.json(&["audit", "list", "--since", "2999-01-01T00:00:00Z"]);
    assert_eq!(future, serde_json::json!({"items": [], "next_after": null}));

    let bad_since = db.run(&["audit", "list", "--since", "last week"]);
    assert_eq!(bad_since.code, 2, "{bad_since:?}");
    assert!(bad_since.stderr.contains("invalid since `last week`"));
    let bad_action = db.run(&["audit", "list", "--action", "Key Create"]);
    assert_eq!(bad_action.code, 2, "{bad_action:?}");
    assert!(bad_action.stderr.contains("invalid action `Key Create`"));
}

#[test]
fn verify_reports_an_intact_log_and_its_head() {
    let (db, _) = Db::with_team();
    let (run, value) = verify(&db, &[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(value["checked"], 4);
    assert_eq!(value["broken"], Value::Null);
    assert_eq!(value["head"]["id"], 4);
    let text = db.ok(&["audit", "verify"]).stdout;
    assert!(
        text.starts_with("audit log intact: 4 entries checked, head 4:"),
        "{text}"
    );
    assert!(
        Db::new()
            .ok(&["audit", "verify"])
            .stdout
            .contains("no entries")
    );
}

#[test]
fn verify_names_a_row_edited_in_the_file() {
    let (db, _) = Db::with_team();
    tamper(
        &db,
        "UPDATE audit_log SET changes = '{\"monthly_token_limit\":{\"before\":null,\"after\":999999}}'
         WHERE id = 2",
    );
    let (run, value) = verify(&db, &[]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(value["broken"]["id"], 2);
    assert_eq!(value["broken"]["kind"], "changed");
    assert_eq!(value["checked"], 1);
    let text = db.run(&["audit", "verify"]);
    assert_eq!(text.code, 1);
    assert!(
        text.stdout
            .contains("audit log broken: entry 2 was changed"),
        "{text:?}"
    );
}

#[test]
fn verify_names_a_row_deleted_from_the_file() {
    let (db, _) = Db::with_team();
    tamper(&db, "DELETE FROM audit_log WHERE id = 3");
    let (run, value) = verify(&db, &[]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(value["broken"]["id"], 3);
    assert_eq!(value["broken"]["kind"], "removed");
}

#[test]
fn an_anchor_catches_a_removed_newest_entry() {
    let (db, _) = Db::with_team();
    let (_, before) = verify(&db, &[]);
    let anchor = format!(
        "{}:{}",
        before["head"]["id"],
        before["head"]["hash"].as_str().unwrap()
    );
    tamper(&db, "DELETE FROM audit_log WHERE id = 4");
    let (unanchored, _) = verify(&db, &[]);
    assert_eq!(
        unanchored.code, 0,
        "a removed tail leaves a consistent chain"
    );
    let (run, value) = verify(&db, &["--anchor", &anchor]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(value["broken"]["id"], 4);
    assert_eq!(value["broken"]["kind"], "removed");
    let bad = db.run(&["audit", "verify", "--anchor", "4:nothex"]);
    assert_eq!(bad.code, 2, "{bad:?}");
}

/// Every column of every audit row, as stored in the file.
fn raw_audit_rows(db: &Db) -> String {
    let conn = Connection::open(db.path()).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT id || at || actor || source || action || COALESCE(org_id, '') || target
                    || COALESCE(target_id, '') || changes || prev_hash || hash
             FROM audit_log",
        )
        .unwrap();
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    rows.join("\n")
}

#[test]
fn no_secret_appears_in_audit_rows_log_lines_or_errors() {
    let (db, _) = Db::with_team();
    let password = "Vivid-Orbit-Lantern-42";
    let created = db.run_logged(
        &[
            "key",
            "create",
            "--email",
            "bob@example.com",
            "--output",
            "json",
        ],
        None,
    );
    let secret = created.json()["secret"].as_str().unwrap().to_owned();
    let reset = [
        "user",
        "reset-password",
        "--email",
        "bob@example.com",
        "--new-password-stdin",
    ];
    let runs = [
        db.run_logged(&reset, Some(password)),
        db.run_logged(&reset, Some("bob-weak")),
        db.run_logged(&reset, Some(&format!("{password}x\n"))),
        db.run_logged(&common::authorize_args("gpt-4o-mini", "1"), Some(&secret)),
        db.run_logged(
            &[
                "authorize",
                "--key",
                &secret,
                "--model",
                "m",
                "--tokens",
                "1",
            ],
            None,
        ),
        db.run_logged(&["audit", "list", "--output", "json"], None),
        db.run_logged(&["audit", "verify"], None),
    ];
    let mut shown = created.stderr.clone();
    for run in &runs {
        shown.push_str(&format!("{}\n{}\n", run.stdout, run.stderr));
    }
    shown.push_str(&raw_audit_rows(&db));

    let phc: String = Connection::open(db.path())
        .unwrap()
        .query_row(
            "SELECT password_hash FROM users WHERE email = 'bob@example.com'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(phc.starts_with("$argon2id$"), "{phc}");
    let key_hash = ias_core::KeyHash::of(&secret).to_hex();
    let digest = phc.rsplit('$').next().unwrap();
    for (what, needle) in [
        ("key secret", secret.as_str()),
        ("key hash", key_hash.as_str()),
        ("password", password),
        ("weak password", "bob-weak"),
        ("password hash", phc.as_str()),
        ("password digest", digest),
    ] {
        assert!(!shown.contains(needle), "the {what} was shown:\n{shown}");
    }
    assert!(
        runs[0].stderr.contains("admin change applied"),
        "{:?}",
        runs[0]
    );
    assert!(
        runs[0].stderr.contains("user.reset_password"),
        "{:?}",
        runs[0]
    );
}
