//! Versioned schema migrations, applied when a store is opened.
//!
//! Every migration not yet applied runs in one transaction, which first
//! takes an advisory lock, so stores opening the same database at once
//! (replicas starting together) migrate it one after the other: the first
//! applies, the others find the work done. Each migration is recorded in
//! `schema_migrations` with a checksum of its text. Opening an up-to-date
//! database changes nothing; a database whose applied migration differs
//! from the one shipped, or that is newer than this build, is refused
//! rather than guessed at.

use ias_core::Result;
pub use ias_core::migration::Migration;
use sqlx::{Executor, PgConnection, PgPool, Row};

use crate::error::{BACKEND, from_sqlx};
use crate::store::{commit, execute, optional};

/// Every migration this build knows, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("../migrations/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "hot_path",
        sql: include_str!("../migrations/0002_hot_path.sql"),
    },
    Migration {
        version: 3,
        name: "rbac_passwords",
        sql: include_str!("../migrations/0003_rbac_passwords.sql"),
    },
    Migration {
        version: 4,
        name: "gitops",
        sql: include_str!("../migrations/0004_gitops.sql"),
    },
    Migration {
        version: 5,
        name: "shared_rate_limits",
        sql: include_str!("../migrations/0005_shared_rate_limits.sql"),
    },
    Migration {
        version: 6,
        name: "lease_renewal",
        sql: include_str!("../migrations/0006_lease_renewal.sql"),
    },
    Migration {
        version: 7,
        name: "scale_indexes",
        sql: include_str!("../migrations/0007_scale_indexes.sql"),
    },
];

/// The advisory lock that serialises migrators: the bytes `ias:migr`.
const MIGRATION_LOCK: i64 = i64::from_be_bytes(*b"ias:migr");

const BOOKKEEPING: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version    BIGINT PRIMARY KEY,
    name       TEXT NOT NULL,
    checksum   TEXT NOT NULL,
    applied_at BIGINT NOT NULL
)";

/// Applies every migration not yet applied.
pub(crate) async fn apply(pool: &PgPool) -> Result<()> {
    let mut tx = pool.begin().await.map_err(from_sqlx)?;
    let lock = sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(MIGRATION_LOCK);
    execute(&mut tx, lock).await?;
    execute(&mut tx, sqlx::query(BOOKKEEPING)).await?;
    refuse_newer(&mut tx).await?;
    for migration in MIGRATIONS {
        apply_one(&mut tx, migration).await?;
    }
    commit(tx).await
}

async fn apply_one(conn: &mut PgConnection, migration: &Migration) -> Result<()> {
    let applied = optional(
        conn,
        sqlx::query("SELECT checksum FROM schema_migrations WHERE version = $1")
            .bind(migration.version),
        |row| row.try_get::<String, _>(0),
    )
    .await?;
    if !migration.needs_applying(applied.as_deref(), BACKEND)? {
        return Ok(());
    }
    // A query without arguments runs as one simple-protocol message,
    // which may hold many statements. (`sqlx::raw_sql` would too, but
    // its future is not `Send` in sqlx 0.8, so `open` could not be spawned.)
    conn.execute(migration.sql).await.map_err(from_sqlx)?;
    let record = sqlx::query(
        "INSERT INTO schema_migrations (version, name, checksum, applied_at)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(migration.version)
    .bind(migration.name)
    .bind(migration.checksum())
    .bind(chrono::Utc::now().timestamp_millis());
    execute(conn, record).await?;
    tracing::info!(
        version = migration.version,
        name = migration.name,
        "applied migration"
    );
    Ok(())
}

async fn refuse_newer(conn: &mut PgConnection) -> Result<()> {
    let newest = optional(
        conn,
        sqlx::query("SELECT COALESCE(MAX(version), 0) FROM schema_migrations"),
        |row| row.try_get::<i64, _>(0),
    )
    .await?
    .unwrap_or(0);
    ias_core::migration::refuse_newer(newest, MIGRATIONS, BACKEND)
}
