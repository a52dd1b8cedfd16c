//! The store handle: opening, connection settings, and running blocking work.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ias_core::{Error, Result};
use rusqlite::Connection;

use crate::error::{BACKEND, from_sqlite};
use crate::migrate;

/// How long a write waits for another process's lock before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// An ias store on one SQLite database.
///
/// Cheap to share behind an `Arc`; every call runs on tokio's blocking pool.
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    location: String,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("location", &self.location)
            .finish()
    }
}

impl SqliteStore {
    /// Opens the database file at `path`, creating it on first use, and migrates it.
    pub async fn open(path: impl AsRef<Path>) -> Result<Arc<SqliteStore>> {
        let path: PathBuf = path.as_ref().to_owned();
        let location = path.display().to_string();
        let conn = blocking(move || open_file(&path)).await??;
        Ok(Arc::new(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            location,
        }))
    }

    /// Opens a private in-memory database, gone when the store is dropped.
    pub async fn open_in_memory() -> Result<Arc<SqliteStore>> {
        let conn = blocking(|| {
            let mut conn = Connection::open_in_memory().map_err(from_sqlite)?;
            configure(&conn)?;
            migrate::apply(&mut conn)?;
            Ok::<_, Error>(conn)
        })
        .await??;
        Ok(Arc::new(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            location: ":memory:".to_owned(),
        }))
    }

    /// Runs `work` with the connection on the blocking pool.
    pub(crate) async fn run<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        blocking(move || {
            let mut guard = conn.lock().map_err(|_| Error::Store {
                backend: BACKEND,
                message: "connection lock poisoned by an earlier panic".to_owned(),
            })?;
            work(&mut guard)
        })
        .await?
    }
}

async fn blocking<T, F>(work: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Store {
            backend: BACKEND,
            message: format!("blocking task failed: {e}"),
        })
}

fn open_file(path: &Path) -> Result<Connection> {
    let mut conn = Connection::open(path).map_err(|e| Error::Unavailable {
        backend: BACKEND,
        message: format!("cannot open `{}`: {e}", path.display()),
    })?;
    configure(&conn)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(from_sqlite)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(from_sqlite)?;
    migrate::apply(&mut conn)?;
    Ok(conn)
}

fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT).map_err(from_sqlite)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(from_sqlite)?;
    Ok(())
}

/// Runs `work` in an immediate transaction, committing only if it succeeds.
///
/// An immediate transaction takes the write lock at once, so concurrent
/// writers (threads or processes) are serialised and never interleave.
pub(crate) fn write<T>(
    conn: &mut Connection,
    work: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T>,
) -> Result<T> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(from_sqlite)?;
    let value = work(&tx)?;
    tx.commit().map_err(from_sqlite)?;
    Ok(value)
}

/// Runs a one-row query through the statement cache; `None` when no row matches.
pub(crate) fn optional_row<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    map: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Option<T>> {
    use rusqlite::OptionalExtension;
    conn.prepare_cached(sql)
        .and_then(|mut stmt| stmt.query_row(params, map).optional())
        .map_err(from_sqlite)
}
