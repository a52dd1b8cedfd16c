//! `ias-admin` on PostgreSQL: the same commands as on SQLite, against a test
//! database on the server named by `IAS_TEST_POSTGRES_URL` (skipped without one,
//! unless `IAS_REQUIRE_POSTGRES=1`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
// The PostgreSQL store's test-database kit, shared rather than copied.
#[path = "../../ias-store-postgres/tests/common/mod.rs"]
mod postgres;

use common::Db;

#[test]
fn the_tour_runs_on_postgres_and_never_shows_the_password() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let Some(test_db) = runtime.block_on(postgres::TestDb::create()) else {
        return;
    };
    // The test server trusts local connections, so any password gets in.
    let mut url = url::Url::parse(test_db.url()).unwrap();
    url.set_password(Some("hunter2")).unwrap();
    let db = Db {
        dir: tempfile::tempdir().unwrap(),
        url: url.to_string(),
    };
    let (db, secret) = db.team();

    let (run, allowed) = db.authorize(&secret, "gpt-4o-mini", "100");
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(allowed["decision"], "allowed");
    let key_id = allowed["principal"]["key_id"].to_string();
    db.ok(&["key", "revoke", "--key-id", &key_id]);
    let (run, denied) = db.authorize(&secret, "gpt-4o-mini", "100");
    assert_eq!(run.code, 3, "{run:?}");
    assert_eq!(denied["reason"], "revoked_key");

    let usage = db.json(&["usage", "show", "--org", "team-alpha"]);
    assert_eq!(usage["org"]["monthly_token_budget"], 1000);
    assert_eq!(usage["org"]["reserved"], 0);
    let logged = db.run_logged(&["audit", "verify"], None);
    assert_eq!(logged.code, 0, "{logged:?}");
    assert!(!logged.stdout.contains("hunter2") && !logged.stderr.contains("hunter2"));
}
