//! Behaviour specific to the PostgreSQL backend: migrations, locking, URLs, test databases.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::TestDb;
use ias_core::audit::BreakKind;
use ias_core::{Actor, Admin, CacheStore, Error, OrgStore, Role, SchemaStore, Source, Store};
use ias_store_postgres::{MIGRATIONS, PostgresStore};
use sqlx::{Connection, PgConnection};

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

fn operator(store: Arc<dyn Store>) -> Admin {
    Admin::new(
        store,
        Actor::Operator {
            name: "test".into(),
        },
        Source::Library,
    )
}

async fn strings(conn: &mut PgConnection, sql: &str) -> Vec<String> {
    sqlx::query_scalar(sql).fetch_all(conn).await.unwrap()
}

async fn tables(conn: &mut PgConnection) -> Vec<String> {
    strings(
        conn,
        "SELECT table_name::TEXT FROM information_schema.tables
         WHERE table_schema = 'public' ORDER BY table_name",
    )
    .await
}

#[tokio::test]
async fn first_open_creates_every_table() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = PostgresStore::open(db.url()).await.unwrap();
    assert_eq!(
        store.schema_version().await.unwrap(),
        MIGRATIONS.last().unwrap().version
    );
    assert_eq!(tables(&mut db.connect().await).await, TABLES);
}

#[tokio::test]
async fn reopening_an_up_to_date_database_changes_nothing() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = PostgresStore::open(db.url()).await.unwrap();
    operator(store.clone())
        .create_org("acme", 10, "UTC")
        .await
        .unwrap();
    store.close().await;
    let snapshot = |mut conn: PgConnection| async move {
        let migrations = strings(
            &mut conn,
            "SELECT version || ':' || checksum || ':' || applied_at FROM schema_migrations
             ORDER BY version",
        )
        .await;
        let columns = strings(
            &mut conn,
            "SELECT table_name || '.' || column_name || ':' || data_type
             FROM information_schema.columns WHERE table_schema = 'public'
             ORDER BY table_name, column_name",
        )
        .await;
        let audit = strings(&mut conn, "SELECT COUNT(*)::TEXT FROM audit_log").await;
        (migrations, columns, audit)
    };
    let before = snapshot(db.connect().await).await;
    let reopened = PostgresStore::open(db.url()).await.unwrap();
    assert_eq!(reopened.list_orgs().await.unwrap().len(), 1);
    assert_eq!(snapshot(db.connect().await).await, before);
}

#[tokio::test]
async fn an_edited_migration_is_refused() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    PostgresStore::open(db.url()).await.unwrap().close().await;
    sqlx::query("UPDATE schema_migrations SET checksum = 'x' WHERE version = 1")
        .execute(&mut db.connect().await)
        .await
        .unwrap();
    let err = PostgresStore::open(db.url()).await.unwrap_err().to_string();
    assert!(err.contains("migration 1 `initial` differs"), "{err}");
}

#[tokio::test]
async fn a_newer_database_is_refused() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    PostgresStore::open(db.url()).await.unwrap().close().await;
    sqlx::query("INSERT INTO schema_migrations VALUES (999, 'future', 'x', 0)")
        .execute(&mut db.connect().await)
        .await
        .unwrap();
    let err = PostgresStore::open(db.url()).await.unwrap_err().to_string();
    assert!(err.contains("newer than this build"), "{err}");
}

/// Replicas starting together migrate one at a time: one applies, the others find it done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_opening_at_once_migrate_once() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let opening: Vec<_> = (0..4)
        .map(|_| {
            let url = db.url().to_owned();
            tokio::spawn(async move { PostgresStore::open(&url).await })
        })
        .collect();
    for open in opening {
        let store = open.await.unwrap().unwrap();
        store.close().await;
    }
    let applied = strings(
        &mut db.connect().await,
        "SELECT version::TEXT FROM schema_migrations ORDER BY version",
    )
    .await;
    let shipped: Vec<String> = MIGRATIONS.iter().map(|m| m.version.to_string()).collect();
    assert_eq!(applied, shipped);
}

#[tokio::test]
async fn the_audit_log_rejects_updates_deletes_and_truncation() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = PostgresStore::open(db.url()).await.unwrap();
    operator(store).create_org("acme", 10, "UTC").await.unwrap();
    let mut conn = db.connect().await;
    for sql in [
        "UPDATE audit_log SET actor = 'someone else'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ] {
        let err = sqlx::query(sql).execute(&mut conn).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
}

#[tokio::test]
async fn verify_names_an_audit_row_edited_in_the_database() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = PostgresStore::open(db.url()).await.unwrap();
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

    // As an attacker with the database owner's rights would.
    let mut conn = db.connect().await;
    sqlx::raw_sql(
        "ALTER TABLE audit_log DISABLE TRIGGER USER;
         UPDATE audit_log SET changes = '{\"monthly_token_limit\":{\"before\":5,\"after\":5000}}'
         WHERE id = 4;",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let broken = admin.verify_audit(None).await.unwrap().broken.unwrap();
    assert_eq!((broken.id, broken.kind), (4, BreakKind::Changed));
}

/// A change whose transaction is still open holds back every later one, so
/// a reader never skips a change that commits after a higher `seq`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_commit_in_feed_order() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = PostgresStore::open(db.url()).await.unwrap();
    let org = operator(store.clone())
        .create_org("acme", 10, "UTC")
        .await
        .unwrap();
    let start = store.change_seq().await.unwrap();

    let mut raw = db.connect().await;
    let mut open = raw.begin().await.unwrap();
    sqlx::query("UPDATE organizations SET updated_at = updated_at + 1 WHERE id = $1")
        .bind(org.id.0)
        .execute(&mut *open)
        .await
        .unwrap();
    let later = tokio::spawn({
        let store = store.clone();
        async move { operator(store).allow_model("acme", "m").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!later.is_finished(), "a later change committed first");
    assert!(store.changes_since(start, 10).await.unwrap().is_empty());

    open.commit().await.unwrap();
    assert!(later.await.unwrap().unwrap().changed);
    let changes = store.changes_since(start, 10).await.unwrap();
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert!(changes[0].seq < changes[1].seq);
    assert!(changes.iter().all(|c| c.id == org.id.0));
}

#[tokio::test]
async fn an_unreachable_server_is_retryable_and_hides_the_password() {
    // Port 1 on loopback: nothing listens there, so the connection is refused at once.
    let err = PostgresStore::open("postgres://ias:hunter2@127.0.0.1:1/ias")
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("postgres://ias:***@127.0.0.1:1/ias"),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");
}

#[tokio::test]
async fn a_bad_url_is_reported_without_its_password() {
    let err = PostgresStore::open("postgres://ias:hunter2@127.0.0.1:port/ias")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DatabaseUrl { .. }), "{err:?}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

/// The guard drops a test's database also when the test panics.
#[tokio::test]
async fn a_failed_test_still_drops_its_database() {
    let (tell, told) = tokio::sync::oneshot::channel();
    let failing = tokio::spawn(async move {
        let Some(db) = TestDb::create().await else {
            return;
        };
        tell.send(db.name().to_owned()).unwrap();
        panic!("a test failing on purpose");
    });
    let joined = failing.await;
    let Ok(name) = told.await else {
        return; // skipped: no server
    };
    assert!(joined.unwrap_err().is_panic());
    let mut admin = PgConnection::connect(&common::server_url()).await.unwrap();
    let left: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname = $1")
            .bind(&name)
            .fetch_all(&mut admin)
            .await
            .unwrap();
    assert!(left.is_empty(), "`{name}` was left behind");
}
