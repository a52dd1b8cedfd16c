//! The storage conformance suite, run against SQLite files.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use ias_core::Store;
use ias_store_sqlite::SqliteStore;

/// A store on a new file in a directory that lives as long as the process.
async fn fresh() -> Arc<dyn Store> {
    let dir = tempfile::tempdir().unwrap().keep();
    SqliteStore::open(dir.join("ias.db")).await.unwrap()
}

ias_core::conformance_suite!(fresh());
