//! Behaviour specific to the SQLite backend: files, migrations, locking.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use ias_core::{
    Actor, Admin, AuditStore, CacheStore, Error, KeyStore, OrgStore, PageRequest, Role,
    SchemaStore, Source, Store, UserStore,
};
use ias_store_sqlite::{MIGRATIONS, SqliteStore};
use rusqlite::Connection;

const TABLES: &[&str] = &[
    "api_keys",
    "audit_log",
    "changes",
    "gitops_sync_state",
    "lease_syncs",
    "leases",
    "org_allowed_models",
    "organizations",
    "permissions",
    "rate_counters",
    "rate_leases",
    "rate_limits",
    "rate_window",
    "role_permissions",
    "roles",
    "schema_migrations",
    "usage_counters",
    "usage_daily",
    "usage_events",
    "users",
];

fn tables(path: &std::path::Path) -> Vec<String> {
    let conn = Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table'
             AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn operator(store: Arc<dyn Store>) -> Admin {
    Admin::new(
        store,
        Actor::Operator {
            name: "test".into(),
        },
        Source::Library,
    )
}

#[tokio::test]
async fn first_open_creates_the_file_with_every_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.db");
    assert!(!path.exists());
    let store = SqliteStore::open(&path).await.unwrap();
    assert!(path.exists());
    assert_eq!(
        store.schema_version().await.unwrap(),
        MIGRATIONS.last().unwrap().version
    );
    assert_eq!(tables(&path), TABLES);
}

#[tokio::test]
async fn reopening_an_up_to_date_database_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ias.db");
    let store = SqliteStore::open(&path).await.unwrap();
    operator(store.clone())
        .create_org("acme", 10, "UTC")
        .await
        .unwrap();
    drop(store);
    let snapshot = |path: &std::path::Path| {
        let conn = Connection::open(path).unwrap();
        let migrations: Vec<(i64, i64)> = conn
            .prepare("SELECT version, applied_at FROM schema_migrations")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let schema: Vec<String> = conn
            .prepare("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let audit: i64 = conn
            .query_row("SELECT COUNT(*) FROM audit_log", [], |r| r.get(0))
            .unwrap();
        (migrations, schema, audit)
    };
    let before = snapshot(&path);
    let reopened = SqliteStore::open(&path).await.unwrap();
    assert_eq!(reopened.list_orgs(None, 10).await.unwrap().len(), 1);
    drop(reopened);
    assert_eq!(snapshot(&path), before);
}

#[tokio::test]
async fn an_edited_migration_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ias.db");
    drop(SqliteStore::open(&path).await.unwrap());
    let conn = Connection::open(&path).unwrap();
    conn.execute(
        "UPDATE schema_migrations SET checksum = 'x' WHERE version = 1",
        [],
    )
    .unwrap();
    drop(conn);
    let err = SqliteStore::open(&path).await.unwrap_err().to_string();
    assert!(err.contains("migration 1 `initial` differs"), "{err}");
}

#[tokio::test]
async fn a_newer_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ias.db");
    drop(SqliteStore::open(&path).await.unwrap());
    let conn = Connection::open(&path).unwrap();
    conn.execute(
        "INSERT INTO schema_migrations VALUES (999, 'future', 'x', 0)",
        [],
    )
    .unwrap();
    drop(conn);
    let err = SqliteStore::open(&path).await.unwrap_err();
    assert_eq!(err.kind(), "unsupported", "{err}");
    assert!(err.to_string().contains("newer than this build"), "{err}");
}

#[tokio::test]
async fn connections_use_wal_and_foreign_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ias.db");
    drop(SqliteStore::open(&path).await.unwrap());
    let conn = Connection::open(&path).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let store = SqliteStore::open(&path).await.unwrap();
    let admin = operator(store.clone());
    admin.create_org("acme", 10, "UTC").await.unwrap();
    admin
        .create_user("acme", "a@b.io", Role::Member, None)
        .await
        .unwrap();
    let record = ias_core::AuditRecord {
        at: chrono::Utc::now(),
        actor: "operator:test".into(),
        source: Source::Library,
        action: "test".into(),
        org_id: None,
        target: "test".into(),
        changes: serde_json::json!({}),
    };
    let new_user = ias_core::NewUser {
        org_id: ias_core::OrgId(424_242),
        email: "c@d.io".into(),
        role: Role::Member,
        monthly_token_limit: None,
        created_at: chrono::Utc::now(),
    };
    assert!(matches!(
        store.create_user(&new_user, &record).await,
        Err(Error::NotFound { .. })
    ));

    // No check in the store stands before this insert: only the foreign
    // key on `api_keys.user_id` can refuse a key for a user that does not exist.
    let secret = ias_core::KeySecret::generate();
    let orphan = ias_core::NewApiKey {
        user_id: ias_core::UserId(424_242),
        org_id: ias_core::OrgId(1),
        hash: secret.hash(),
        prefix: secret.display_prefix(),
        created_at: chrono::Utc::now(),
        expires_at: None,
    };
    let audit_before = store.list_audit(None, 100).await.unwrap().len();
    let err = store.create_key(&orphan, &record).await.unwrap_err();
    assert!(err.to_string().contains("FOREIGN KEY"), "{err}");
    let keys = store.key_records(None, 100).await.unwrap();
    assert!(keys.iter().all(|k| k.hash != secret.hash()));
    assert_eq!(
        store.list_audit(None, 100).await.unwrap().len(),
        audit_before
    );
}

#[tokio::test]
async fn the_audit_log_rejects_updates_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ias.db");
    let store = SqliteStore::open(&path).await.unwrap();
    operator(store).create_org("acme", 10, "UTC").await.unwrap();
    let conn = Connection::open(&path).unwrap();
    let update = conn.execute("UPDATE audit_log SET actor = 'someone else'", []);
    assert!(update.unwrap_err().to_string().contains("append-only"));
    let delete = conn.execute("DELETE FROM audit_log", []);
    assert!(delete.unwrap_err().to_string().contains("append-only"));
}

#[tokio::test]
async fn a_missing_directory_is_a_clear_error() {
    let err = SqliteStore::open("/nonexistent-ias-dir/sub/ias.db")
        .await
        .unwrap_err();
    assert!(err.is_retryable());
    assert!(
        err.to_string()
            .contains("cannot open `/nonexistent-ias-dir/sub/ias.db`"),
        "{err}"
    );
}

/// Two handles on one file (as two processes would have) never overspend together.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_handles_on_one_file_stay_exact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ias.db");
    let first = SqliteStore::open(&path).await.unwrap();
    let admin = operator(first.clone());
    admin.create_org("acme", 1_000, "UTC").await.unwrap();
    admin.allow_model("acme", "*").await.unwrap();
    admin
        .create_user("acme", "a@b.io", Role::Member, None)
        .await
        .unwrap();
    let key = admin.create_key("a@b.io", None).await.unwrap();
    let second = SqliteStore::open(&path).await.unwrap();

    let governors = [
        ias_core::Governor::open(first.clone()).await.unwrap(),
        ias_core::Governor::open(second.clone()).await.unwrap(),
    ];
    let mut tasks = Vec::new();
    for i in 0..60 {
        let governor = governors[i % 2].clone();
        let secret = key.secret.expose().to_owned();
        tasks.push(tokio::spawn(async move {
            match governor.authorize(&secret, "m", 40).await.unwrap() {
                ias_core::Decision::Allowed(a) => {
                    governor.settle(&a.reservation.unwrap(), 40).await.unwrap();
                    1
                }
                ias_core::Decision::Denied(_) => 0,
            }
        }));
    }
    let mut granted = 0;
    for task in tasks {
        granted += task.await.unwrap();
    }
    assert!(
        granted <= 25,
        "granted {granted} requests of 40 tokens from 1000"
    );
    for governor in &governors {
        governor.shutdown().await.unwrap();
    }
    let report = admin
        .usage("acme", None, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!((report.org.used, report.org.reserved), (granted * 40, 0));
    // What one governor held and did not use went back: a third uses the rest.
    let third = ias_core::Governor::open(second.clone() as Arc<dyn Store>)
        .await
        .unwrap();
    let mut more = 0;
    while third
        .authorize(key.secret.expose(), "m", 40)
        .await
        .unwrap()
        .is_allowed()
    {
        more += 1;
    }
    assert_eq!(granted + more, 25);
}

/// A file with `acme`, a user and a key: five audit entries, as an attacker would find it.
async fn audited_file() -> (tempfile::TempDir, std::path::PathBuf, Arc<SqliteStore>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ias.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let admin = operator(store.clone());
    admin.create_org("acme", 10, "UTC").await.unwrap();
    admin.allow_model("acme", "gpt-4o-mini").await.unwrap();
    admin
        .create_user("acme", "a@b.io", Role::Member, Some(5))
        .await
        .unwrap();
    admin.set_user_limit("a@b.io", Some(50)).await.unwrap();
    admin.create_key("a@b.io", None).await.unwrap();
    assert!(admin.verify_audit(None).await.unwrap().is_intact());
    (dir, path, store)
}

/// Runs `sql` on the raw file with the append-only triggers dropped, as an attacker would.
fn tamper(path: &std::path::Path, sql: &str) {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(
        "DROP TRIGGER audit_log_no_update;
         DROP TRIGGER audit_log_no_delete;",
    )
    .unwrap();
    conn.execute_batch(sql).unwrap();
}

async fn first_break(store: Arc<SqliteStore>) -> ias_core::ChainBreak {
    let verified = operator(store).verify_audit(None).await.unwrap();
    verified.broken.expect("the tampering is found")
}

#[tokio::test]
async fn verify_names_an_audit_row_edited_in_the_file() {
    let (_dir, path, store) = audited_file().await;
    tamper(
        &path,
        "UPDATE audit_log SET changes = '{\"monthly_token_limit\":{\"before\":5,\"after\":5000}}'
         WHERE id = 4",
    );
    let broken = first_break(store).await;
    assert_eq!(
        (broken.id, broken.kind),
        (4, ias_core::audit::BreakKind::Changed)
    );
}

#[tokio::test]
async fn verify_names_an_audit_row_edited_and_rehashed() {
    let (_dir, path, store) = audited_file().await;
    let mut entry = store.list_audit(None, 10).await.unwrap().remove(2);
    entry.record.actor = "operator:someone-else".into();
    let hash =
        ias_core::audit::chain_hash(entry.id, &entry.record, entry.target_id, &entry.prev_hash);
    tamper(
        &path,
        &format!(
            "UPDATE audit_log SET actor = 'operator:someone-else', hash = '{hash}' WHERE id = {}",
            entry.id
        ),
    );
    let broken = first_break(store).await;
    assert_eq!(broken.id, entry.id);
    assert_eq!(broken.kind, ias_core::audit::BreakKind::Changed);
}

#[tokio::test]
async fn verify_names_an_audit_row_deleted_from_the_file() {
    let (_dir, path, store) = audited_file().await;
    tamper(&path, "DELETE FROM audit_log WHERE id = 2");
    let broken = first_break(store).await;
    assert_eq!(
        (broken.id, broken.kind),
        (2, ias_core::audit::BreakKind::Removed)
    );
}

#[tokio::test]
async fn verify_names_an_audit_row_that_cannot_be_read() {
    let (_dir, path, store) = audited_file().await;
    tamper(
        &path,
        "UPDATE audit_log SET changes = 'not json' WHERE id = 3",
    );
    let broken = first_break(store).await;
    assert_eq!(
        (broken.id, broken.kind),
        (3, ias_core::audit::BreakKind::Changed)
    );
    assert!(broken.reason.contains("cannot be read"), "{broken}");
}

/// Text that parses to the hashed value but reads otherwise in SQL (a
/// repeated key: `json_extract` sees the first, a parser the last).
#[tokio::test]
async fn verify_names_an_audit_row_whose_stored_text_was_changed() {
    let (_dir, path, store) = audited_file().await;
    let entry = store.list_audit(None, 10).await.unwrap().remove(1);
    let stored = entry.record.changes.to_string();
    let forged = format!(
        "{{\"monthly_token_limit\":{{\"after\":999999,\"before\":5}},{}",
        &stored[1..]
    );
    tamper(
        &path,
        &format!(
            "UPDATE audit_log SET changes = '{forged}' WHERE id = {}",
            entry.id
        ),
    );
    let broken = first_break(store).await;
    assert_eq!(
        (broken.id, broken.kind),
        (entry.id, ias_core::audit::BreakKind::Changed)
    );
}

/// Rows slipped in below id 1 need no trigger to be dropped; they are caught.
#[tokio::test]
async fn verify_names_a_row_inserted_below_the_chain() {
    let (_dir, path, store) = audited_file().await;
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        "INSERT INTO audit_log
           (id, at, actor, source, action, org_id, target, target_id, changes, prev_hash, hash)
         VALUES (0, 0, 'operator:x', 'cli', 'user.set_limit', NULL, 'user:ceo@example.com',
                 NULL, '{}', 'x', 'y')",
    )
    .unwrap();
    let broken = first_break(store).await;
    assert_eq!(
        (broken.id, broken.kind),
        (0, ias_core::audit::BreakKind::Changed)
    );
}

/// An id at the end of the range stops admin writes with an error, not a crash.
#[tokio::test]
async fn an_audit_id_at_the_end_of_the_range_is_an_error() {
    let (_dir, path, store) = audited_file().await;
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        "INSERT INTO audit_log
           (id, at, actor, source, action, org_id, target, target_id, changes, prev_hash, hash)
         VALUES (9223372036854775807, 0, 'operator:x', 'cli', 'x', NULL, 'x', NULL, '{}', 'x', 'y')",
    )
    .unwrap();
    let result = operator(store).create_org("late", 10, "UTC").await;
    assert!(result.is_err(), "{result:?}");
}

/// A role this build does not know, given to one user with SQL, does not
/// stop governors from loading: everyone's keys keep working.
#[tokio::test]
async fn a_user_with_a_custom_role_does_not_stop_the_governor() {
    let (_dir, path, store) = audited_file().await;
    let admin = operator(store.clone());
    admin
        .create_user("acme", "b@b.io", Role::Member, None)
        .await
        .unwrap();
    let other = admin.create_key("b@b.io", None).await.unwrap();
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        "INSERT INTO roles (name, description, builtin) VALUES ('auditor', 'reads audit', 0);
         UPDATE users SET role = 'auditor' WHERE email = 'a@b.io';",
    )
    .unwrap();
    let governor = ias_core::Governor::open(store.clone()).await.unwrap();
    let decision = governor
        .authorize(other.secret.expose(), "gpt-4o-mini", 1)
        .await
        .unwrap();
    assert!(decision.is_allowed(), "{decision:?}");
}

#[tokio::test]
async fn a_version_1_database_is_migrated_to_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ias.db");
    let conn = Connection::open(&path).unwrap();
    let first = &MIGRATIONS[0];
    conn.execute_batch(first.sql).unwrap();
    conn.execute_batch(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,
         checksum TEXT NOT NULL, applied_at INTEGER NOT NULL)",
    )
    .unwrap();
    let checksum = first.checksum();
    conn.execute(
        "INSERT INTO schema_migrations VALUES (1, 'initial', ?1, 0)",
        [checksum],
    )
    .unwrap();
    drop(conn);
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(
        store.schema_version().await.unwrap(),
        MIGRATIONS.last().unwrap().version
    );
    let member = store.role_grants("member").await.unwrap();
    let names: Vec<&str> = member.iter().map(|g| g.permission.as_str()).collect();
    assert_eq!(
        names,
        ["key.create", "key.read", "key.revoke", "usage.read"]
    );
}
