//! The store handle: opening, the connection pool, and running queries.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use ias_core::url::redact;
use ias_core::{Error, Result, Store};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::query::Query;
use sqlx::{PgConnection, Postgres, Transaction};

use crate::error::{from_sqlx, store, unavailable};
use crate::migrate;

/// How many connections one store opens at most.
///
/// Governors reach the store only when a lease runs short, to write usage
/// behind and to read the change feed, so a few connections serve a busy
/// gateway; every replica has its own pool.
pub const MAX_CONNECTIONS: u32 = 8;

/// How long a call waits for a connection before it gives up (retryably).
///
/// Also how long [`PostgresStore::open`] keeps retrying a server that
/// refuses connections (one restarting, say) before it reports it unavailable.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// A query with its bound arguments.
pub(crate) type PgQuery<'q> = Query<'q, Postgres, PgArguments>;

/// An ias store on one PostgreSQL database.
///
/// Cheap to share behind an `Arc`; it holds a connection pool. Any number
/// of stores, in one process or many, may share one database.
pub struct PostgresStore {
    pool: PgPool,
    location: String,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("location", &self.location)
            .finish()
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://…`) and migrates it.
    ///
    /// [`Error::DatabaseUrl`] if the URL cannot be understood;
    /// [`Error::Unavailable`] if the server cannot be reached. Errors show
    /// the URL without its password.
    pub async fn open(url: &str) -> Result<Arc<PostgresStore>> {
        let location = redact(url);
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| Error::DatabaseUrl {
                url: location.clone(),
                reason: e.to_string(),
            })?
            .application_name("ias");
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| cannot_connect(&location, e))?;
        migrate::apply(&pool).await?;
        Ok(Arc::new(PostgresStore { pool, location }))
    }

    /// Closes every connection; later calls fail with [`Error::Unavailable`].
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Starts a transaction; dropping it without commit rolls it back.
    pub(crate) async fn begin(&self) -> Result<Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(from_sqlx)
    }

    /// A connection for reads that need no transaction.
    pub(crate) async fn conn(&self) -> Result<PoolConnection<Postgres>> {
        self.pool.acquire().await.map_err(from_sqlx)
    }
}

fn cannot_connect(location: &str, err: sqlx::Error) -> Error {
    match from_sqlx(err) {
        Error::Unavailable { message, .. } => {
            unavailable(format!("cannot connect to `{location}`: {message}"))
        }
        Error::Store { message, .. } => store(format!("cannot connect to `{location}`: {message}")),
        other => other,
    }
}

/// Opens the PostgreSQL store at `url` as a [`Store`], for hosts that pick a backend by URL.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    let store: Arc<dyn Store> = PostgresStore::open(url).await?;
    Ok(store)
}

/// Commits a transaction.
pub(crate) async fn commit(tx: Transaction<'static, Postgres>) -> Result<()> {
    tx.commit().await.map_err(from_sqlx)
}

/// Runs a statement; the number of rows it changed.
pub(crate) async fn execute(conn: &mut PgConnection, query: PgQuery<'_>) -> Result<u64> {
    let done = query.execute(conn).await.map_err(from_sqlx)?;
    Ok(done.rows_affected())
}

/// Runs a query for at most one row; `None` when no row matches.
pub(crate) async fn optional<T>(
    conn: &mut PgConnection,
    query: PgQuery<'_>,
    map: impl FnOnce(&PgRow) -> sqlx::Result<T>,
) -> Result<Option<T>> {
    let row = query.fetch_optional(conn).await.map_err(from_sqlx)?;
    row.as_ref().map(map).transpose().map_err(from_sqlx)
}

/// Runs a query and maps every row.
pub(crate) async fn all<T>(
    conn: &mut PgConnection,
    query: PgQuery<'_>,
    map: impl FnMut(&PgRow) -> sqlx::Result<T>,
) -> Result<Vec<T>> {
    let rows = query.fetch_all(conn).await.map_err(from_sqlx)?;
    rows.iter()
        .map(map)
        .collect::<sqlx::Result<_>>()
        .map_err(from_sqlx)
}
