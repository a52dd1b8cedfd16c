//! The store handle: opening, the connection pool, and running queries.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ias_core::url::redact;
use ias_core::{Error, Result, Store};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::query::Query;
use sqlx::{PgConnection, Postgres, Transaction};

use crate::error::{from_sqlx, is_lost_connection, is_unreachable, store, unavailable};
use crate::migrate;
use crate::notices::Notices;

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

/// How often a store that cannot reach its server tries again. Meanwhile
/// calls fail at once with [`Error::Unavailable`] instead of each waiting
/// [`ACQUIRE_TIMEOUT`] for a connection.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// A query with its bound arguments.
pub(crate) type PgQuery<'q> = Query<'q, Postgres, PgArguments>;

/// An ias store on one PostgreSQL database.
///
/// Cheap to share behind an `Arc`; it holds a connection pool. Any number
/// of stores, in one process or many, may share one database.
///
/// Lease syncs and change-feed reads, a governor's frequent calls, run on
/// one connection the store keeps out of the pool, so they cost one round
/// trip each. Change notices arrive on a connection of their own, opened
/// on the first [`ias_core::CacheStore::wait_for_change`].
pub struct PostgresStore {
    pool: PgPool,
    location: String,
    hot: tokio::sync::Mutex<Option<PoolConnection<Postgres>>>,
    /// While the server cannot be reached: when to try again.
    down_until: Mutex<Option<(Instant, String)>>,
    pub(crate) notices: Notices,
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
        // A connection that broke while idle fails the call that gets it
        // (retryably) rather than every call paying a round trip to test it.
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await
            .map_err(|e| cannot_connect(&location, e))?;
        migrate::apply(&pool).await?;
        Ok(Arc::new(PostgresStore {
            pool,
            location,
            hot: tokio::sync::Mutex::new(None),
            down_until: Mutex::new(None),
            notices: Notices::new(options),
        }))
    }

    /// Closes every connection; later calls fail with [`Error::Unavailable`].
    pub async fn close(&self) {
        self.notices.stop();
        if let Some(conn) = self.hot.lock().await.take() {
            drop(conn);
        }
        self.pool.close().await;
    }

    /// Starts a transaction; dropping it without commit rolls it back.
    pub(crate) async fn begin(&self) -> Result<Transaction<'static, Postgres>> {
        self.admit()?;
        let begun = self.pool.begin().await;
        self.observe(begun.as_ref().err());
        begun.map_err(from_sqlx)
    }

    /// A connection for reads that need no transaction.
    pub(crate) async fn conn(&self) -> Result<PoolConnection<Postgres>> {
        self.admit()?;
        let acquired = self.pool.acquire().await;
        self.observe(acquired.as_ref().err());
        acquired.map_err(from_sqlx)
    }

    /// The connection kept for lease syncs and the change feed.
    pub(crate) async fn hot(&self) -> Result<Hot<'_>> {
        let mut guard = self.hot.lock().await;
        if guard.is_none() {
            *guard = Some(self.conn().await?);
        } else {
            self.admit()?;
        }
        Ok(Hot { store: self, guard })
    }

    /// Fails fast while the server is known to be unreachable, except for
    /// one call every [`RETRY_INTERVAL`], which tries again.
    fn admit(&self) -> Result<()> {
        let mut down = self.down_until.lock().unwrap_or_else(|e| e.into_inner());
        match down.as_mut() {
            Some((until, reason)) if Instant::now() < *until => Err(unavailable(format!(
                "cannot reach `{}`: {reason}; retrying every {} s",
                self.location,
                RETRY_INTERVAL.as_secs()
            ))),
            Some((until, _)) => {
                // This call tries; the others keep failing fast meanwhile.
                *until = Instant::now() + RETRY_INTERVAL;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Notes whether getting a connection worked.
    fn observe(&self, failed: Option<&sqlx::Error>) {
        match failed {
            Some(err) if is_unreachable(err) => self.mark_down(err.to_string()),
            Some(_) => {}
            None => self.mark_up(),
        }
    }

    /// The server answered: calls go through again.
    fn mark_up(&self) {
        let mut down = self.down_until.lock().unwrap_or_else(|e| e.into_inner());
        if down.take().is_some() {
            tracing::info!(store = %self.location, "reached the database again");
        }
    }

    /// Fails calls fast for [`RETRY_INTERVAL`]: the server cannot be reached.
    fn mark_down(&self, reason: String) {
        let mut down = self.down_until.lock().unwrap_or_else(|e| e.into_inner());
        if down.is_none() {
            tracing::warn!(store = %self.location, error = %reason, "cannot reach the database; retrying");
        }
        *down = Some((Instant::now() + RETRY_INTERVAL, reason));
    }
}

/// The store's kept connection, for one call at a time.
pub(crate) struct Hot<'a> {
    store: &'a PostgresStore,
    guard: tokio::sync::MutexGuard<'a, Option<PoolConnection<Postgres>>>,
}

impl Hot<'_> {
    /// The connection.
    pub(crate) fn conn(&mut self) -> Result<&mut PgConnection> {
        match self.guard.as_mut() {
            Some(conn) => Ok(conn),
            // INVARIANT: `PostgresStore::hot` fills the slot before handing it out.
            None => Err(unavailable("no connection")),
        }
    }

    /// Runs `outcome` through: a connection that failed with a retryable
    /// error is dropped, and the next call opens a fresh one; a lost
    /// connection makes calls fail fast until the server answers again.
    pub(crate) fn check<T>(&mut self, outcome: Result<T>) -> Result<T> {
        if outcome.is_ok() {
            self.store.mark_up();
        }
        if let Err(err) = &outcome
            && err.is_retryable()
        {
            if let Some(mut conn) = self.guard.take() {
                conn.close_on_drop();
            }
            if is_lost_connection(err)
                && let Error::Unavailable { message, .. } = err
            {
                self.store.mark_down(message.clone());
            }
        }
        outcome
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
