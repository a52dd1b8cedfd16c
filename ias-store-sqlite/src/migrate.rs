//! Versioned schema migrations, applied when a store is opened.
//!
//! Each migration is applied once, in its own immediate transaction, and
//! recorded in `schema_migrations` with a checksum of its text. Opening an
//! up-to-date database changes nothing; a database whose applied migration
//! differs from the one shipped, or that is newer than this build, is
//! refused rather than guessed at.

use ias_core::Result;
pub use ias_core::migration::Migration;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::error::{BACKEND, from_sqlite};

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

const BOOKKEEPING: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    checksum   TEXT NOT NULL,
    applied_at INTEGER NOT NULL
)";

/// Applies every migration not yet applied.
pub(crate) fn apply(conn: &mut Connection) -> Result<()> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(from_sqlite)?;
    tx.execute(BOOKKEEPING, []).map_err(from_sqlite)?;
    refuse_newer(&tx)?;
    for migration in MIGRATIONS {
        apply_one(&tx, migration)?;
    }
    tx.commit().map_err(from_sqlite)
}

fn apply_one(conn: &Connection, migration: &Migration) -> Result<()> {
    let applied: Option<String> = conn
        .query_row(
            "SELECT checksum FROM schema_migrations WHERE version = ?1",
            [migration.version],
            |row| row.get(0),
        )
        .optional()
        .map_err(from_sqlite)?;
    if !migration.needs_applying(applied.as_deref(), BACKEND)? {
        return Ok(());
    }
    conn.execute_batch(migration.sql).map_err(from_sqlite)?;
    conn.execute(
        "INSERT INTO schema_migrations (version, name, checksum, applied_at)
         VALUES (?1, ?2, ?3, ?4)",
        params![
            migration.version,
            migration.name,
            migration.checksum(),
            chrono::Utc::now().timestamp_millis()
        ],
    )
    .map_err(from_sqlite)?;
    tracing::info!(
        version = migration.version,
        name = migration.name,
        "applied migration"
    );
    Ok(())
}

fn refuse_newer(conn: &Connection) -> Result<()> {
    let newest: i64 = conn
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )
        .map_err(from_sqlite)?;
    ias_core::migration::refuse_newer(newest, MIGRATIONS, BACKEND)
}
