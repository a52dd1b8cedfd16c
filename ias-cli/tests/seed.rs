//! `ias-admin seed` on SQLite: sizes, keys that work, reproducibility,
//! refusing a database with data, the audit entry, bad arguments.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod seeding;

use std::collections::BTreeMap;
use std::path::Path;

use common::{Db, assert_one_line_error};
use rusqlite::types::ValueRef;
use seeding::{AS_OF, TABLES, assert_private, harvest_of_small, read_keys, small};
use serde_json::Value;

/// Every row of every seeded table, as text, table by table.
fn dump(path: &Path) -> BTreeMap<&'static str, Vec<String>> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut tables = BTreeMap::new();
    for (table, order) in TABLES {
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM {table} ORDER BY {order}"))
            .unwrap();
        let columns = stmt.column_count();
        let rows = stmt
            .query_map([], |row| {
                let cells: Vec<String> = (0..columns)
                    .map(|i| match row.get_ref(i).unwrap() {
                        ValueRef::Null => "null".to_owned(),
                        ValueRef::Integer(n) => n.to_string(),
                        ValueRef::Real(x) => x.to_string(),
                        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                        ValueRef::Blob(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
                    })
                    .collect();
                Ok(cells.join("|"))
            })
            .unwrap()
            .collect::<rusqlite::Result<Vec<_>>>()
            .unwrap();
        tables.insert(table, rows);
    }
    tables
}

fn count(path: &Path, table: &str) -> u64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| {
        row.get(0)
    })
    .unwrap()
}

fn run_seed(db: &Db, args: &[String]) -> Value {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = db.run(&args);
    assert_eq!(run.code, 0, "{run:?}");
    // No progress bar when stderr is not a terminal, and nothing else either.
    assert!(run.stderr.is_empty(), "{run:?}");
    run.json()
}

#[test]
fn seed_writes_the_sizes_asked_for_and_keys_that_work() {
    let db = Db::new();
    let keys_file = db.dir.path().join("keys.tsv");
    let keys_out = keys_file.to_str().unwrap();
    let run = db.ok(&[
        "seed",
        "--orgs",
        "3",
        "--users-per-org",
        "4",
        "--keys-per-user",
        "2",
        "--keys-out",
        keys_out,
        "--output",
        "json",
    ]);
    assert!(run.stderr.is_empty(), "{run:?}");
    let summary = run.json();
    for (table, rows) in summary["rows"].as_object().unwrap() {
        assert_eq!(rows.as_u64().unwrap(), count(&db.path(), table), "{table}");
    }
    let rows = &summary["rows"];
    assert_eq!(
        (&rows["organizations"], &rows["users"], &rows["api_keys"]),
        (&Value::from(3), &Value::from(12), &Value::from(24))
    );
    assert!(rows["usage_events"].as_u64().unwrap() > 0);
    let keys = &summary["keys"];
    let tally = ["live", "expired", "revoked"].map(|k| keys[k].as_u64().unwrap());
    assert_eq!(tally.iter().sum::<u64>(), 24);
    assert_eq!(summary["slug_prefix"], Value::Null);

    let lines = read_keys(&keys_file);
    assert_eq!(summary["keys_out"]["keys"], lines.len());
    assert!(!lines.is_empty() && lines.len() as u64 <= tally[0]);
    assert_private(&keys_file);
    for line in &lines {
        assert!(!run.stdout.contains(&line.secret), "a secret on stdout");
        let (run, decision) = db.authorize(&line.secret, &line.model, "100");
        assert_eq!(run.code, 0, "{line:?}: {run:?}");
        assert_eq!(decision["principal"]["org_slug"], line.org.as_str());
        assert!(!run.stdout.contains(&line.secret) && !run.stderr.contains(&line.secret));
    }

    let verified = db.ok(&["audit", "verify"]);
    assert!(
        verified.stdout.contains("intact: 1 entries checked"),
        "{verified:?}"
    );
    let usage = db.json(&["usage", "show", "--org", &lines[0].org, "--by", "day"]);
    assert!(!usage["items"].as_array().unwrap().is_empty(), "{usage}");
}

#[test]
fn seeded_revoked_and_expired_keys_are_refused() {
    let db = Db::new();
    let keys_file = db.dir.path().join("keys.tsv");
    run_seed(&db, &small("42", &keys_file));
    // The library makes the same data from the same seed and time, secrets included.
    let harvest = harvest_of_small(42);
    let written: Vec<String> = read_keys(&keys_file)
        .into_iter()
        .map(|line| line.secret)
        .collect();
    let generated: Vec<&str> = harvest.sample.iter().map(|k| k.secret.expose()).collect();
    assert_eq!(written, generated);
    assert!(!harvest.retired.is_empty());
    for key in &harvest.retired {
        let (run, decision) = db.authorize(key.secret.expose(), key.model, "100");
        assert_eq!(run.code, 3, "{run:?}");
        let reason = decision["reason"].as_str().unwrap();
        assert!(
            ["revoked_key", "expired_key"].contains(&reason),
            "{decision}"
        );
    }
}

#[test]
fn the_same_seed_gives_the_same_data() {
    let (a, b, c) = (Db::new(), Db::new(), Db::new());
    let keys = |db: &Db| db.dir.path().join("keys.tsv");
    let first = run_seed(&a, &small("7", &keys(&a)));
    let second = run_seed(&b, &small("7", &keys(&b)));
    run_seed(&c, &small("8", &keys(&c)));
    assert_eq!(first["rows"], second["rows"]);
    assert_eq!(first["as_of"], AS_OF);
    assert_eq!(dump(&a.path()), dump(&b.path()));
    assert_eq!(read_keys(&keys(&a)), read_keys(&keys(&b)));
    assert_ne!(dump(&a.path())["users"], dump(&c.path())["users"]);
    assert_ne!(read_keys(&keys(&a)), read_keys(&keys(&c)));
}

#[test]
fn a_database_with_data_is_refused_unless_allow_existing() {
    let (db, _) = Db::with_team();
    let keys_file = db.dir.path().join("keys.tsv");
    let args = small("1", &keys_file);
    // Without `--output json`: the refusal is read as text.
    let args: Vec<&str> = args[..args.len() - 2].iter().map(String::as_str).collect();
    let audited = count(&db.path(), "audit_log");
    let run = db.run(&args);
    assert_one_line_error(
        &run,
        1,
        &[
            "organization `team-alpha` already exists",
            "1 organization, 1 user and 1 key",
            "allow-existing",
        ],
        &args,
    );
    assert_eq!(count(&db.path(), "organizations"), 1);
    assert_eq!(count(&db.path(), "audit_log"), audited);
    assert!(!keys_file.exists());

    let mut allowed = args.clone();
    allowed.push("--allow-existing");
    let summary = db.json(&allowed);
    let prefix = summary["slug_prefix"].as_str().unwrap().to_owned();
    assert_eq!(count(&db.path(), "organizations"), 4);
    assert_eq!(count(&db.path(), "users"), 13);
    for line in read_keys(&keys_file) {
        assert!(line.org.starts_with(&prefix), "{line:?}");
        let (run, _) = db.authorize(&line.secret, &line.model, "100");
        assert_eq!(run.code, 0, "{run:?}");
    }
    let show = db.json(&["org", "show", "--org", "team-alpha"]);
    assert_eq!(show["monthly_token_budget"], 1000);
    let verified = db.ok(&["audit", "verify"]);
    assert!(verified.stdout.contains("intact"), "{verified:?}");
}

#[test]
fn bad_arguments_name_the_flag_and_write_nothing() {
    let db = Db::new();
    let sizes = |orgs: &str, users: &str, keys: &str| -> Vec<String> {
        [
            "seed",
            "--orgs",
            orgs,
            "--users-per-org",
            users,
            "--keys-per-user",
            keys,
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let with = |mut args: Vec<String>, more: &[&str]| {
        args.extend(more.iter().map(|s| (*s).to_owned()));
        args
    };
    let missing_dir = db.dir.path().join("no-such-dir").join("keys.tsv");
    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        (
            sizes("0", "4", "2"),
            vec!["invalid orgs `0`", "from 1 to 100000"],
        ),
        (sizes("-3", "4", "2"), vec!["invalid orgs `-3`"]),
        (
            sizes("many", "4", "2"),
            vec!["invalid orgs `many`", "whole number"],
        ),
        (sizes("3", "0", "2"), vec!["invalid users_per_org `0`"]),
        (
            sizes("3", "4", "1001"),
            vec!["invalid keys_per_user `1001`"],
        ),
        (
            sizes("100000", "100", "1"),
            vec![
                "invalid users_per_org `100`",
                "10000000 users",
                "at most 1000000",
            ],
        ),
        (
            sizes("10000", "100", "11"),
            vec!["invalid keys_per_user `11`", "at most 10000000"],
        ),
        (
            with(sizes("3", "4", "2"), &["--days-of-usage", "400"]),
            vec!["invalid days_of_usage `400`", "from 0 to 366"],
        ),
        (
            with(sizes("3", "4", "2"), &["--as-of", "2999-01-01"]),
            vec!["invalid as_of", "future"],
        ),
        (
            with(sizes("3", "4", "2"), &["--as-of", "yesterday"]),
            vec!["invalid as_of `yesterday`"],
        ),
        (
            with(
                sizes("3", "4", "2"),
                &["--keys-out", db.dir.path().to_str().unwrap()],
            ),
            vec!["invalid keys_out", "is a directory"],
        ),
        (
            with(
                sizes("3", "4", "2"),
                &["--keys-out", missing_dir.to_str().unwrap()],
            ),
            vec!["invalid keys_out", "directory does not exist"],
        ),
    ];
    for (args, needles) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = db.run(&args);
        assert_one_line_error(&run, 2, &needles, &args);
    }
    // A bad seed is refused without being repeated: it is the key of every secret.
    let args = with(sizes("3", "4", "2"), &["--seed", "12345x"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = db.run(&args);
    assert_one_line_error(&run, 2, &["invalid seed", "whole number"], &args);
    assert!(!run.stderr.contains("12345"), "{run:?}");
    // The future `--as-of` was refused after the store opened; nothing else was written.
    assert_eq!(count(&db.path(), "organizations"), 0);
    assert_eq!(count(&db.path(), "audit_log"), 0);
}
