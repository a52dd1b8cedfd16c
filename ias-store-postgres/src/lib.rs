//! PostgreSQL store for ias.
//!
//! This crate will implement [`ias_core::Store`] on PostgreSQL with sqlx, so
//! that many gateway replicas can share one database and stay exact (budget
//! leases, change propagation with LISTEN/NOTIFY). It is not implemented in
//! this release: [`open`] answers [`ias_core::Error::Unsupported`], and
//! hosts report that clearly when given a `postgres://` URL.
//!
//! # Limitations
//!
//! Use `ias-store-sqlite` (the embedded default) until this store lands.

use std::sync::Arc;

use ias_core::{Error, Result, Store};

/// Opens a PostgreSQL store; not available in this release.
pub async fn open(_url: &str) -> Result<Arc<dyn Store>> {
    Err(Error::Unsupported(
        "the PostgreSQL store is not available in this release; use a `sqlite://` URL".to_owned(),
    ))
}
