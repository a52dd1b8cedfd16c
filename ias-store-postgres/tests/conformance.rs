//! The storage conformance suite, run against a fresh PostgreSQL database per case.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::TestDb;
use ias_core::Store;
use ias_store_postgres::PostgresStore;

/// One case's database and store; `None` when the case is skipped.
struct Case {
    store: Option<Arc<dyn Store>>,
    _db: Option<TestDb>,
}

impl ias_core::conformance::Fresh for Case {
    fn store(&self) -> Option<Arc<dyn Store>> {
        self.store.clone()
    }
}

async fn fresh() -> Case {
    let Some(db) = TestDb::create().await else {
        return Case {
            store: None,
            _db: None,
        };
    };
    let store: Arc<dyn Store> = PostgresStore::open(db.url()).await.unwrap();
    Case {
        store: Some(store),
        _db: Some(db),
    }
}

ias_core::conformance_suite!(fresh());
