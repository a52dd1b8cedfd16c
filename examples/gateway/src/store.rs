//! Opening the store named by a database URL.

use std::sync::Arc;

use ias_core::{DatabaseUrl, Result, Store};
use ias_store_sqlite::SqliteStore;

/// Opens (and migrates) the store at `url`.
///
/// `sqlite://PATH` and `sqlite::memory:` open the embedded SQLite store;
/// `postgres://…` connects to PostgreSQL, which several gateway replicas
/// can share. Errors show the URL without its password.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    match DatabaseUrl::parse(url)? {
        DatabaseUrl::Sqlite { path } => Ok(SqliteStore::open(path).await?),
        DatabaseUrl::SqliteMemory => Ok(SqliteStore::open_in_memory().await?),
        DatabaseUrl::Postgres { url } => ias_store_postgres::open(&url).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn postgres_urls_reach_the_postgres_store() {
        // Nothing listens on port 1 of loopback: the store retries, then reports it.
        let Err(err) = open("postgres://ias:hunter2@127.0.0.1:1/ias").await else {
            panic!("nothing listens on port 1");
        };
        assert!(err.is_retryable(), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains("postgres://ias:***@127.0.0.1:1/ias"),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");
    }
}
