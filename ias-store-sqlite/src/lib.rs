//! Embedded SQLite store for ias (placeholder while the store is written).
use std::path::Path;
use std::sync::Arc;

/// The SQLite store.
pub struct SqliteStore;

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and migrates it.
    pub async fn open(_path: impl AsRef<Path>) -> ias_core::Result<Arc<SqliteStore>> {
        Err(ias_core::Error::Unsupported("not yet".into()))
    }
}
