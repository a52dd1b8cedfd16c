//! PostgreSQL store for ias: many gateway replicas sharing one database.
//!
//! [`PostgresStore`] implements every storage trait of [`ias_core::store`]
//! on one PostgreSQL database through a connection pool (sqlx, with
//! rustls for TLS), applying the schema migrations when it is opened.
//! Governors in any number of processes take budget and rate leases from
//! the database, so budgets and rate limits stay exact across replicas, and
//! follow the change feed, which notifies every replica (`LISTEN`/`NOTIFY`
//! on channel `ias_changes`) when a write commits, so a key revoked through
//! one replica is refused by every other within milliseconds.
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
//! A lease sync is one statement (`ias_sync_leases()`, installed by
//! migration 5), and the store keeps one pooled connection for lease syncs
//! and change-feed reads, so a governor costs the database a few round
//! trips a second. While the server cannot be reached, calls fail at once
//! with `Error::Unavailable` and one call every [`RETRY_INTERVAL`] tries
//! again; the pool and the notice listener reconnect by themselves.
//!
//! # Limitations
//!
//! - The pool size is fixed at [`MAX_CONNECTIONS`] per store.
//! - Notices sent while the listening connection is down are lost; the
//!   governor still reads the change feed every
//!   `GovernorConfig::refresh_interval`.

mod audit;
mod cache;
mod error;
mod gitops;
mod key;
mod limits;
mod migrate;
mod notices;
mod org;
#[doc(hidden)]
pub mod queries;
mod rates;
mod rows;
mod schema;
mod seed;
mod store;
mod usage;
mod user;

pub use migrate::{MIGRATIONS, Migration};
pub use store::{ACQUIRE_TIMEOUT, MAX_CONNECTIONS, PostgresStore, RETRY_INTERVAL, open};
