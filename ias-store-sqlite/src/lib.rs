//! Embedded SQLite store for ias: the default backend.
//!
//! [`SqliteStore`] implements every storage trait of [`ias_core::store`] on
//! one SQLite file (WAL mode, foreign keys on, a busy timeout), applying
//! the schema migrations when it is opened. Database work runs on tokio's
//! blocking pool, never on a runtime worker thread. Several processes (a
//! gateway and `ias-admin`, say) may share one file: every write runs in an
//! immediate transaction, and governors in each process take budget leases
//! from the file, so budgets stay exact across them.
//!
//! ```no_run
//! # async fn demo() -> ias_core::Result<()> {
//! use ias_core::Governor;
//! use ias_store_sqlite::SqliteStore;
//!
//! let store = SqliteStore::open("ias.db").await?;
//! let governor = Governor::open(store).await?;
//! # Ok(()) }
//! ```

mod audit;
mod cache;
mod error;
mod gitops;
mod key;
mod limits;
mod migrate;
mod org;
mod rates;
mod rows;
mod schema;
mod seed;
mod store;
mod usage;
mod user;

pub use migrate::MIGRATIONS;
pub use store::SqliteStore;
