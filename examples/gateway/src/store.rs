//! Opening the store named by a database URL.

use std::sync::Arc;

use ias_core::{DatabaseUrl, Result, Store};
use ias_store_sqlite::SqliteStore;

/// Opens (and migrates) the store at `url`.
///
/// `sqlite://PATH` and `sqlite::memory:` open the embedded SQLite store;
/// `postgres://…` answers the PostgreSQL store's `Unsupported` error.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    match DatabaseUrl::parse(url)? {
        DatabaseUrl::Sqlite { path } => Ok(SqliteStore::open(path).await?),
        DatabaseUrl::SqliteMemory => Ok(SqliteStore::open_in_memory().await?),
        DatabaseUrl::Postgres { url } => ias_store_postgres::open(&url).await,
    }
}
