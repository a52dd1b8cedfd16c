//! Behaviour specific to the PostgreSQL backend: migrations, locking, URLs,
//! test databases, GitOps leases and applies.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::TestDb;
use ias_core::audit::BreakKind;
use ias_core::gitops::plan;
use ias_core::gitops::{
    DeclaredBudget, DeclaredUser, GitopsApply, Inventory, Manifest, NewGitopsSettings, SyncStatus,
};
use ias_core::{
    Actor, Admin, AuditRecord, AuditStore, CacheStore, Error, GitopsStore, KeyStore, OrgId,
    OrgStore, RateLimits, Role, SchemaStore, Source, Store, UserStore,
};
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
    assert_eq!(reopened.list_orgs(None, 10).await.unwrap().len(), 1);
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
    let err = PostgresStore::open(db.url()).await.unwrap_err();
    assert_eq!(err.kind(), "unsupported", "{err}");
    assert!(err.to_string().contains("newer than this build"), "{err}");
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

const PERIOD: &str = "2026-12";

/// `acme` with GitOps enabled (`prune` on, no removal guard) and a budget of
/// 1000, and `other`, API-managed, with the user `taken@x.io`.
async fn gitops_orgs(store: &Arc<PostgresStore>) -> OrgId {
    let admin = operator(store.clone());
    let acme = admin.create_org("acme", 1000, "UTC").await.unwrap();
    admin.create_org("other", 1000, "UTC").await.unwrap();
    admin
        .create_user("other", "taken@x.io", Role::OrgAdmin, None)
        .await
        .unwrap();
    let mut settings = NewGitopsSettings::new("https://git.invalid/acme.git");
    settings.prune = true;
    settings.max_removal_percent = 100;
    admin.gitops_enable("acme", settings).await.unwrap();
    acme.id
}

fn declared(email: &str, role: Role) -> DeclaredUser {
    DeclaredUser {
        email: email.to_owned(),
        role,
        monthly_token_limit: Some(50),
        rate_limits: RateLimits {
            rpm: Some(60),
            tpm: None,
        },
    }
}

fn manifest(budget: i64, users: Vec<DeclaredUser>) -> Manifest {
    Manifest {
        version: 1,
        org: "acme".to_owned(),
        budget: DeclaredBudget {
            monthly_tokens: budget,
            timezone: chrono_tz::UTC,
        },
        rate_limits: RateLimits::NONE,
        allowed_models: vec!["gpt-4o-mini".to_owned()],
        users,
    }
}

/// Plans `manifest` against the store and applies it at `commit` as `holder`.
async fn apply(
    store: &Arc<PostgresStore>,
    org: OrgId,
    manifest: &Manifest,
    commit: &str,
    holder: &str,
) -> ias_core::Result<()> {
    let state = store.gitops_state(org).await?.unwrap();
    let view = store.gitops_view(org, PERIOD).await?;
    let plan = plan::plan(
        manifest,
        &view,
        state.inventory.as_ref(),
        &state.settings,
        true,
    );
    assert_eq!(plan.refused, None);
    let mut status = state.status.clone();
    status.status = SyncStatus::Synced;
    status.reason = "synced".to_owned();
    status.last_applied_commit = Some(commit.to_owned());
    let at = Utc::now();
    let record = AuditRecord {
        at,
        actor: "operator:reconciler".to_owned(),
        source: Source::Gitops,
        action: "gitops.apply".to_owned(),
        org_id: Some(org),
        target: "org:acme".to_owned(),
        changes: serde_json::json!({ "commit": commit }),
    };
    let write = GitopsApply {
        org_id: org,
        ops: plan.ops,
        audit: vec![record],
        inventory: Inventory {
            commit: commit.to_owned(),
            manifest: manifest.clone(),
            added_users: plan.added_users,
        },
        status,
        at,
        holder: holder.to_owned(),
    };
    store.gitops_apply(&write).await
}

/// What an apply may change, to compare before and after a refused one.
async fn gitops_snapshot(
    store: &Arc<PostgresStore>,
    org: OrgId,
) -> impl PartialEq + std::fmt::Debug {
    let view = store.gitops_view(org, PERIOD).await.unwrap();
    let state = store.gitops_state(org).await.unwrap().unwrap();
    let audit = store.list_audit(None, 1000).await.unwrap().len();
    let taken = store.user_by_email("taken@x.io").await.unwrap();
    let seq = store.change_seq().await.unwrap();
    (view, state.status, state.inventory, audit, taken, seq)
}

fn after(at: DateTime<Utc>, secs: i64) -> DateTime<Utc> {
    at + chrono::Duration::seconds(secs)
}

#[tokio::test]
async fn an_apply_under_a_lease_another_holder_took_writes_nothing() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = PostgresStore::open(db.url()).await.unwrap();
    let org = gitops_orgs(&store).await;
    let now = Utc::now();
    assert!(
        store
            .gitops_try_lease(org, "a", now, after(now, 30))
            .await
            .unwrap()
    );
    assert!(
        !store
            .gitops_try_lease(org, "b", now, after(now, 30))
            .await
            .unwrap()
    );
    let later = after(now, 31);
    assert!(
        store
            .gitops_try_lease(org, "b", later, after(later, 30))
            .await
            .unwrap()
    );

    let file = manifest(500, vec![declared("admin@x.io", Role::OrgAdmin)]);
    let before = gitops_snapshot(&store, org).await;
    let err = apply(&store, org, &file, "c1", "a").await.unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    assert!(err.to_string().contains("no longer held"), "{err}");
    assert_eq!(gitops_snapshot(&store, org).await, before);

    apply(&store, org, &file, "c1", "b").await.unwrap();
    let state = store.gitops_state(org).await.unwrap().unwrap();
    assert_eq!(state.status.status, SyncStatus::Synced);
    assert_eq!(state.status.last_applied_commit.as_deref(), Some("c1"));
    assert_eq!(
        state.inventory.map(|i| i.added_users),
        Some(vec!["admin@x.io".to_owned()])
    );
    let view = store.gitops_view(org, PERIOD).await.unwrap();
    assert_eq!(view.org.monthly_token_budget, 500);
    assert_eq!(view.models, ["gpt-4o-mini"]);
}

#[tokio::test]
async fn an_apply_adding_a_user_of_another_org_writes_nothing() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = PostgresStore::open(db.url()).await.unwrap();
    let org = gitops_orgs(&store).await;
    let now = Utc::now();
    assert!(
        store
            .gitops_try_lease(org, "a", now, after(now, 30))
            .await
            .unwrap()
    );
    let file = manifest(
        500,
        vec![
            declared("admin@x.io", Role::OrgAdmin),
            declared("taken@x.io", Role::Member),
        ],
    );
    let before = gitops_snapshot(&store, org).await;
    let err = apply(&store, org, &file, "c1", "a").await.unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    assert!(err.to_string().contains("taken@x.io"), "{err}");
    assert_eq!(gitops_snapshot(&store, org).await, before);
    assert!(store.user_by_email("admin@x.io").await.unwrap().is_none());
}

/// The lease is one conditional update: of holders racing for a free lease, one wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_many_racing_reconcilers_takes_the_lease() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = PostgresStore::open(db.url()).await.unwrap();
    let org = gitops_orgs(&store).await;
    let now = Utc::now();
    let racing: Vec<_> = (0..8)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .gitops_try_lease(org, &format!("r{n}"), now, after(now, 30))
                    .await
            })
        })
        .collect();
    let mut won = 0;
    for race in racing {
        won += usize::from(race.await.unwrap().unwrap());
    }
    assert_eq!(won, 1);
}

/// A removed user stays, out of the member list, with its keys revoked; added again, it is back.
#[tokio::test]
async fn a_removed_user_stays_with_its_keys_revoked_until_added_again() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = PostgresStore::open(db.url()).await.unwrap();
    let org = gitops_orgs(&store).await;
    let now = Utc::now();
    assert!(
        store
            .gitops_try_lease(org, "a", now, after(now, 300))
            .await
            .unwrap()
    );
    let admin = declared("admin@x.io", Role::OrgAdmin);
    let gone = declared("gone@x.io", Role::Member);
    apply(
        &store,
        org,
        &manifest(500, vec![admin.clone(), gone.clone()]),
        "c1",
        "a",
    )
    .await
    .unwrap();
    let key = operator(store.clone())
        .create_key("gone@x.io", None)
        .await
        .unwrap()
        .key;

    apply(&store, org, &manifest(500, vec![admin.clone()]), "c2", "a")
        .await
        .unwrap();
    let emails: Vec<String> = store
        .list_users(org, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.email)
        .collect();
    assert_eq!(emails, ["admin@x.io"]);
    let removed = store.user_by_email("gone@x.io").await.unwrap().unwrap();
    let removed_at = removed.removed_at.expect("the user is marked removed");
    let record = store.key_record(key.id).await.unwrap().unwrap();
    assert_eq!(record.revoked_at, Some(removed_at));
    let policy = store.user_policy(removed.id).await.unwrap().unwrap();
    assert_eq!(policy.user.removed_at, Some(removed_at));
    assert_eq!(policy.rate_limits.rpm, Some(60));
    assert!(
        store
            .key_by_id(key.id)
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_none()
    );

    apply(&store, org, &manifest(500, vec![admin, gone]), "c3", "a")
        .await
        .unwrap();
    let back = store.user_by_email("gone@x.io").await.unwrap().unwrap();
    assert_eq!((back.id, back.removed_at), (removed.id, None));
    assert_eq!(
        store.key_record(key.id).await.unwrap().unwrap().revoked_at,
        None
    );
}
