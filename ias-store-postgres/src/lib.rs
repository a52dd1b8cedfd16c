//! PostgreSQL store for ias: many gateway replicas sharing one database.
//!
//! [`PostgresStore`] implements every storage trait of [`ias_core::store`]
//! on one PostgreSQL database through a connection pool (sqlx, with
//! rustls for TLS), applying the schema migrations when it is opened.
//! Governors in any number of processes take budget leases from the
//! database, so budgets stay exact across replicas, and follow the change
//! feed, so a key revoked through one replica is refused by every other
//! within a refresh interval (one second by default).
//!
//! ```no_run
//! # async fn demo() -> ias_core::Result<()> {
//! use ias_core::Governor;
//! use ias_store_postgres::PostgresStore;
//!
//! let store = PostgresStore::open("postgres://ias@127.0.0.1:5432/ias").await?;
//! let governor = Governor::open(store).await?;
//! let maintenance = governor.spawn_maintenance();
//! # maintenance.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! # Limitations
//!
//! - Rate limits (requests and tokens per minute) are counted by each
//!   replica in its own memory, so N replicas together allow up to N times
//!   a limit; budgets are exact.
//! - Replicas learn of writes made elsewhere by polling the change feed
//!   (`GovernorConfig::refresh_interval`), not by `LISTEN`/`NOTIFY`.
//! - The pool size is fixed at [`MAX_CONNECTIONS`] per store.

mod audit;
mod cache;
mod error;
mod gitops;
mod key;
mod limits;
mod migrate;
mod org;
mod rows;
mod schema;
mod store;
mod usage;
mod user;

pub use migrate::{MIGRATIONS, Migration};
pub use store::{ACQUIRE_TIMEOUT, MAX_CONNECTIONS, PostgresStore, open};
