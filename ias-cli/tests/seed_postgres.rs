//! `ias-admin seed` on PostgreSQL, against test databases on the server named
//! by `IAS_TEST_POSTGRES_URL` (skipped without one, unless `IAS_REQUIRE_POSTGRES=1`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
// The PostgreSQL store's test-database kit, shared rather than copied.
#[path = "../../ias-store-postgres/tests/common/mod.rs"]
mod postgres;
mod seeding;

use std::collections::BTreeMap;

use common::{Db, assert_one_line_error};
use postgres::TestDb;
use seeding::{TABLES, harvest_of_small, read_keys, small};
use serde_json::Value;
use sqlx::Connection;

/// Every row of every seeded table as JSON text, table by table.
async fn dump(db: &TestDb) -> BTreeMap<&'static str, Vec<String>> {
    let mut conn = db.connect().await;
    let mut tables = BTreeMap::new();
    for (table, order) in TABLES {
        let sql = format!("SELECT row_to_json(t)::text FROM {table} t ORDER BY {order}");
        let rows: Vec<String> = sqlx::query_scalar(&sql).fetch_all(&mut conn).await.unwrap();
        tables.insert(table, rows);
    }
    conn.close().await.ok();
    tables
}

fn cli(db: &TestDb) -> Db {
    Db {
        dir: tempfile::tempdir().unwrap(),
        url: db.url().to_owned(),
    }
}

fn seed_json(db: &Db, args: &[String]) -> Value {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = db.run(&args);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.is_empty(), "{run:?}");
    run.json()
}

#[test]
fn seed_on_postgres_is_reproducible_and_its_keys_work() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let Some(first) = runtime.block_on(TestDb::create()) else {
        return;
    };
    let second = runtime.block_on(TestDb::create()).unwrap();
    let (a, b) = (cli(&first), cli(&second));
    let keys = |db: &Db| db.dir.path().join("keys.tsv");
    let summary = seed_json(&a, &small("7", &keys(&a)));
    assert_eq!(
        seed_json(&b, &small("7", &keys(&b)))["rows"],
        summary["rows"]
    );
    let rows = &summary["rows"];
    assert_eq!(
        (&rows["users"], &rows["api_keys"]),
        (&Value::from(12), &Value::from(24))
    );
    let (dump_a, dump_b) = (
        runtime.block_on(dump(&first)),
        runtime.block_on(dump(&second)),
    );
    for (table, rows) in &dump_a {
        assert_eq!(summary["rows"][table], rows.len(), "{table}");
    }
    assert_eq!(dump_a, dump_b);
    assert_eq!(read_keys(&keys(&a)), read_keys(&keys(&b)));

    for line in read_keys(&keys(&a)) {
        let (run, decision) = a.authorize(&line.secret, &line.model, "100");
        assert_eq!(run.code, 0, "{line:?}: {run:?}");
        assert_eq!(decision["principal"]["org_slug"], line.org.as_str());
    }
    for key in harvest_of_small(7).retired {
        let (run, decision) = a.authorize(key.secret.expose(), key.model, "100");
        assert_eq!(run.code, 3, "{run:?}");
        let reason = decision["reason"].as_str().unwrap();
        assert!(
            ["revoked_key", "expired_key"].contains(&reason),
            "{decision}"
        );
    }
    let verified = a.ok(&["audit", "verify"]);
    assert!(
        verified.stdout.contains("intact: 1 entries checked"),
        "{verified:?}"
    );
}

#[test]
fn seed_on_postgres_refuses_data_unless_allow_existing() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let Some(test_db) = runtime.block_on(TestDb::create()) else {
        return;
    };
    let db = cli(&test_db);
    let keys_file = db.dir.path().join("keys.tsv");
    let args = small("3", &keys_file);
    seed_json(&db, &args);
    let before = runtime.block_on(dump(&test_db));
    let text: Vec<&str> = args[..args.len() - 2].iter().map(String::as_str).collect();
    let run = db.run(&text);
    let first_org = before["organizations"][0].clone();
    let slug = serde_json::from_str::<Value>(&first_org).unwrap()["slug"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_one_line_error(
        &run,
        1,
        &[
            &format!("organization `{slug}` already exists"),
            "3 organizations, 12 users and 24 keys",
        ],
        &text,
    );
    assert_eq!(runtime.block_on(dump(&test_db)), before);

    let mut allowed = text.clone();
    allowed.push("--allow-existing");
    let summary = db.json(&allowed);
    let prefix = summary["slug_prefix"].as_str().unwrap().to_owned();
    let after = runtime.block_on(dump(&test_db));
    assert_eq!(after["organizations"].len(), 6);
    assert_eq!(after["api_keys"].len(), 48);
    for line in read_keys(&keys_file) {
        assert!(line.org.starts_with(&prefix), "{line:?}");
        let (run, _) = db.authorize(&line.secret, &line.model, "100");
        assert_eq!(run.code, 0, "{run:?}");
    }
    // Keys made afterwards get ids above the seeded ones.
    let org = after["organizations"][0].clone();
    let org_slug = serde_json::from_str::<Value>(&org).unwrap()["slug"]
        .as_str()
        .unwrap()
        .to_owned();
    let email = serde_json::from_str::<Value>(&after["users"][0]).unwrap()["email"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(email.ends_with(&format!("@{org_slug}.example")));
    let created = db.json(&["key", "create", "--email", &email]);
    assert_eq!(created["id"], 49, "key id");
    let verified = db.ok(&["audit", "verify"]);
    assert!(
        verified.stdout.contains("intact: 3 entries checked"),
        "{verified:?}"
    );
}
