//! `limits set` and `limits show`: per-minute limits of an org, a user or a key.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Db;
use serde_json::{Value, json};

const USAGE: i32 = 2;
const FAILURE: i32 = 1;

/// The three targets of team-alpha, as command-line flags.
fn targets() -> [Vec<&'static str>; 3] {
    [
        vec!["--org", "team-alpha"],
        vec!["--org", "team-alpha", "--email", "bob@example.com"],
        vec!["--org", "team-alpha", "--key-id", "1"],
    ]
}

fn show(db: &Db, target: &[&str]) -> Value {
    db.json(&[&["limits", "show"], target].concat())
}

fn set(db: &Db, target: &[&str], flags: &[&str]) -> Value {
    db.json(&[&["limits", "set"], target, flags].concat())
}

fn rpm_tpm(value: &Value) -> (Value, Value) {
    (value["rpm"].clone(), value["tpm"].clone())
}

#[test]
fn limits_round_trip_for_org_user_and_key() {
    let (db, _) = Db::with_team();
    let expected_targets = [
        json!({"scope": "org", "email": null, "key_id": null}),
        json!({"scope": "user", "email": "bob@example.com", "key_id": null}),
        json!({"scope": "key", "email": null, "key_id": 1}),
    ];
    for (i, (target, who)) in targets().iter().zip(expected_targets).enumerate() {
        let rpm = (10 + i).to_string();
        let tpm = (1000 + i).to_string();
        assert_eq!(rpm_tpm(&show(&db, target)), (Value::Null, Value::Null));

        let written = set(&db, target, &["--rpm", &rpm, "--tpm", &tpm]);
        assert_eq!(written["changed"], true, "{written}");
        let shown = show(&db, target);
        assert!(shown.get("changed").is_none(), "{shown}");
        assert_eq!(shown["org"], "team-alpha");
        for field in ["scope", "email", "key_id"] {
            assert_eq!(shown[field], who[field], "{field}: {shown}");
        }
        assert_eq!(rpm_tpm(&shown), (json!(10 + i), json!(1000 + i)));
        assert_eq!(rpm_tpm(&written), rpm_tpm(&shown));
    }
    // Each scope keeps its own limits.
    let org = show(&db, &targets()[0]);
    assert_eq!(rpm_tpm(&org), (json!(10), json!(1000)));

    let text = db.ok(&["limits", "show", "--org", "team-alpha", "--key-id", "1"]);
    assert_eq!(
        text.stdout,
        "SCOPE  TARGET  RPM  TPM\nkey    1       12   1002\n"
    );
}

#[test]
fn a_flag_not_given_keeps_its_current_value() {
    let (db, _) = Db::with_team();
    for target in targets() {
        set(&db, &target, &["--rpm", "10", "--tpm", "1000"]);
        let rpm_only = set(&db, &target, &["--rpm", "20"]);
        assert_eq!(rpm_tpm(&rpm_only), (json!(20), json!(1000)));
        let tpm_only = set(&db, &target, &["--tpm", "5"]);
        assert_eq!(rpm_tpm(&tpm_only), (json!(20), json!(5)));
        assert_eq!(rpm_tpm(&show(&db, &target)), (json!(20), json!(5)));
    }
}

#[test]
fn setting_the_same_values_changes_nothing_and_audits_nothing() {
    let (db, _) = Db::with_team();
    let target = ["--org", "team-alpha", "--email", "bob@example.com"];
    assert_eq!(set(&db, &target, &["--rpm", "7"])["changed"], true);
    let audit = db.json(&["audit", "list"]);
    assert_eq!(audit["items"][0]["action"], "limits.set");

    let again = set(&db, &target, &["--rpm", "7"]);
    assert_eq!(again["changed"], false);
    assert_eq!(db.json(&["audit", "list"]), audit);
    let text = db.ok(&[&["limits", "set"], &target[..], &["--rpm", "7"]].concat());
    assert!(text.stdout.contains("nothing changed"), "{text:?}");
}

#[test]
fn none_removes_one_limit_and_keeps_the_other() {
    let (db, _) = Db::with_team();
    for target in targets() {
        set(&db, &target, &["--rpm", "10", "--tpm", "1000"]);
        let cleared = set(&db, &target, &["--rpm", "none"]);
        assert_eq!(rpm_tpm(&cleared), (Value::Null, json!(1000)));
        let both = set(&db, &target, &["--tpm", "NONE"]);
        assert_eq!(rpm_tpm(&both), (Value::Null, Value::Null));
        assert_eq!(rpm_tpm(&show(&db, &target)), (Value::Null, Value::Null));
    }
    let text = db.ok(&["limits", "show", "--org", "team-alpha"]).stdout;
    assert!(text.contains("none  none"), "{text}");
}

#[test]
fn bad_values_exit_2_naming_the_field_and_write_nothing() {
    let (db, _) = Db::with_team();
    let target = ["--org", "team-alpha", "--email", "bob@example.com"];
    set(&db, &target, &["--rpm", "10", "--tpm", "1000"]);
    let bad = [
        "0",
        "-1",
        "1000000001",
        "99999999999999999999",
        "ten",
        "",
        "1.5",
    ];
    for field in ["rpm", "tpm"] {
        for value in bad {
            let flag = format!("--{field}");
            // The other flag is valid, so a half-applied change would show.
            let other = if field == "rpm" { "--tpm" } else { "--rpm" };
            let args = [&["limits", "set"], &target[..], &[&flag, value, other, "3"]].concat();
            db.refused(&args, None, USAGE, &[field, &format!("`{value}`")]);
            assert_eq!(rpm_tpm(&show(&db, &target)), (json!(10), json!(1000)));
        }
    }
    let run = db.refused(
        &["limits", "set", "--org", "team-alpha", "--rpm", "0"],
        None,
        USAGE,
        &[],
    );
    assert_eq!(
        run.stderr,
        "error: invalid rpm `0`: must be a whole number from 1 to 1000000000, \
         or `none` to remove the limit\n"
    );
    assert_eq!(
        rpm_tpm(&show(&db, &targets()[0])),
        (Value::Null, Value::Null)
    );
}

#[test]
fn unknown_or_foreign_targets_are_refused() {
    let (db, _) = Db::with_team();
    db.create_org("team-beta", 10);
    db.create_user("team-beta", "eve@example.com", "member");
    for verb in ["set", "show"] {
        let cases: [(&[&str], i32, &[&str]); 6] = [
            (
                &["--org", "nope"],
                FAILURE,
                &["organization `nope` not found"],
            ),
            (
                &["--org", "team-beta", "--email", "bob@example.com"],
                USAGE,
                &[
                    "email `bob@example.com`",
                    "does not belong to organization `team-beta`",
                ],
            ),
            (
                &["--org", "team-alpha", "--email", "zed@example.com"],
                FAILURE,
                &["user `zed@example.com` not found"],
            ),
            (
                &["--org", "team-beta", "--key-id", "1"],
                FAILURE,
                &["key `1` not found"],
            ),
            (
                &["--org", "team-alpha", "--key-id", "x"],
                USAGE,
                &["key_id", "`x`"],
            ),
            (
                &["--org", "team-alpha", "--email", "bob"],
                USAGE,
                &["email", "`bob`"],
            ),
        ];
        for (target, code, needles) in cases {
            let mut args = vec!["limits", verb];
            args.extend_from_slice(target);
            if verb == "set" {
                args.extend(["--rpm", "5"]);
            }
            db.refused(&args, None, code, needles);
        }
    }
}

#[test]
fn command_line_mistakes_exit_with_usage() {
    let (db, _) = Db::with_team();
    for args in [
        &["limits", "set", "--org", "team-alpha"][..],
        &[
            "limits",
            "set",
            "--org",
            "team-alpha",
            "--email",
            "bob@example.com",
            "--key-id",
            "1",
            "--rpm",
            "5",
        ],
        &["limits", "show"],
    ] {
        let run = db.run(args);
        assert_eq!(run.code, USAGE, "{args:?}: {run:?}");
        assert!(run.stdout.is_empty(), "{run:?}");
    }
    assert_eq!(
        rpm_tpm(&show(&db, &targets()[0])),
        (Value::Null, Value::Null)
    );
}
