//! Opening the store named by a database URL.

use std::path::Path;
use std::sync::Arc;

use ias_core::{DatabaseUrl, Error, Result, Store};
use ias_store_sqlite::SqliteStore;

/// Opens the store at `url`, creating and migrating a SQLite file if needed.
///
/// A SQLite file is only created in a directory that already exists, so a
/// mistyped path is reported instead of a new database appearing elsewhere.
pub(crate) async fn open(url: &str) -> Result<Arc<dyn Store>> {
    match DatabaseUrl::parse(url)? {
        DatabaseUrl::Sqlite { path } => open_sqlite(url, &path).await,
        DatabaseUrl::SqliteMemory => {
            let store: Arc<dyn Store> = SqliteStore::open_in_memory().await?;
            Ok(store)
        }
        DatabaseUrl::Postgres { url } => ias_store_postgres::open(&url).await,
    }
}

async fn open_sqlite(url: &str, path: &Path) -> Result<Arc<dyn Store>> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(Error::DatabaseUrl {
            url: ias_core::url::redact(url),
            // The directory is not printed: a URL such as `sqlite://u:pw@/x`
            // would show its would-be password in it.
            reason: "the directory of the database file does not exist".to_owned(),
        });
    }
    let store: Arc<dyn Store> = SqliteStore::open(path).await?;
    Ok(store)
}
