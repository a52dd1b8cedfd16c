//! `ias.open` and the `Governor` class: the hot path and the governor's life.
//!
//! A governor loads every key, user and organization when it opens and runs
//! the core's maintenance task on the shared runtime, which writes usage
//! behind and follows changes made by other processes. `close()` (also run
//! by `with`, and for every governor still open at interpreter exit) stops
//! that task and writes the usage still held in memory.
//!
//! The admin calls live in their own files (`orgs.rs`, `users.rs`, …) as
//! further `#[pymethods]` blocks of [`Governor`].

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use ias_core::{Actor, Admin, Durability, GrantCache, Maintenance, Result, Source, Store, UserRef};
use pyo3::prelude::*;

use crate::decision::{Decision, Reservation, Settlement};
use crate::errors;
use crate::runtime::{awaitable, block_on, runtime};

/// Numbers governors, so that a reservation is only settled by its own.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Every governor opened in this process, for the exit hook.
static OPEN: Mutex<Vec<Weak<Shared>>> = Mutex::new(Vec::new());

/// What every view of one opened governor shares.
pub(crate) struct Shared {
    id: u64,
    governor: ias_core::Governor,
    store: Arc<dyn Store>,
    grants: Arc<GrantCache>,
    maintenance: Mutex<Option<Maintenance>>,
    closed: AtomicBool,
}

impl Shared {
    /// The core governor, unless closed.
    pub(crate) fn core(&self) -> PyResult<&ias_core::Governor> {
        if self.closed.load(Ordering::Acquire) {
            return Err(errors::closed());
        }
        Ok(&self.governor)
    }

    /// This governor's number, recorded in its reservations.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Stops maintenance and writes everything; later calls do nothing.
    async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        let maintenance = lock(&self.maintenance).take();
        match maintenance {
            Some(maintenance) => maintenance.shutdown().await,
            None => Ok(()),
        }
    }
}

impl Drop for Shared {
    /// A governor dropped unclosed still writes its usage, in the background.
    fn drop(&mut self) {
        let maintenance = lock(&self.maintenance).take();
        if let (Some(maintenance), Some(runtime)) = (maintenance, runtime().ok()) {
            runtime.spawn(async move {
                if let Err(err) = maintenance.shutdown().await {
                    eprintln!("ias: a governor dropped without close() lost usage: {err}");
                }
            });
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Decides requests, records their usage, and runs admin operations.
///
/// Admin calls act as the local operator (like `ias-admin`), or as the ias
/// user named by `acting_as`, whose role then decides what is permitted.
/// With break-glass, a system admin's writes to fields owned by GitOps go
/// ahead (audited, and recorded as drift) instead of raising a conflict.
#[pyclass(frozen, module = "ias")]
pub struct Governor {
    shared: Arc<Shared>,
    admin: Admin,
    actor: Actor,
    break_glass: bool,
}

impl Governor {
    /// The shared state, checked open.
    pub(crate) fn shared(&self) -> PyResult<&Arc<Shared>> {
        self.shared.core()?;
        Ok(&self.shared)
    }

    /// The admin operations of this view, unless the governor is closed.
    pub(crate) fn admin(&self) -> PyResult<Admin> {
        self.shared.core()?;
        Ok(self.admin.clone())
    }

    /// The store and the core governor, for work that needs them directly.
    pub(crate) fn store_and_governor(&self) -> PyResult<(Arc<dyn Store>, ias_core::Governor)> {
        let governor = self.shared.core()?.clone();
        Ok((Arc::clone(&self.shared.store), governor))
    }

    fn view(shared: Arc<Shared>, actor: Actor, break_glass: bool) -> Governor {
        let admin = Admin::new(Arc::clone(&shared.store), actor.clone(), Source::Library)
            .with_governor(shared.governor.clone())
            .with_grant_cache(Arc::clone(&shared.grants));
        let admin = if break_glass {
            admin.with_break_glass()
        } else {
            admin
        };
        Governor {
            shared,
            admin,
            actor,
            break_glass,
        }
    }
}

/// How `open` was asked to act: as whom, and whether with break-glass.
struct OpenAs {
    acting_as: Option<String>,
    break_glass: bool,
}

/// Opens the store at `url` and a governor over it, acting as `acting_as` if given.
async fn open_governor(url: String, durability: Durability, open_as: OpenAs) -> Result<Governor> {
    let OpenAs {
        acting_as,
        break_glass,
    } = open_as;
    let store = crate::database::open(&url).await?;
    let grants = Arc::new(GrantCache::default());
    let actor = match acting_as {
        Some(email) => user_actor(&store, &grants, email).await?,
        None => Actor::local_operator(),
    };
    let governor = ias_core::Governor::builder(Arc::clone(&store))
        .durability(durability)
        .open()
        .await?;
    let shared = Arc::new(Shared {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        maintenance: Mutex::new(Some(governor.spawn_maintenance())),
        governor,
        store,
        grants,
        closed: AtomicBool::new(false),
    });
    register(&shared);
    Ok(Governor::view(shared, actor, break_glass))
}

/// The actor for the user with this email, looked up by the local operator.
async fn user_actor(
    store: &Arc<dyn Store>,
    grants: &Arc<GrantCache>,
    email: String,
) -> Result<Actor> {
    let lookup = Admin::new(Arc::clone(store), Actor::local_operator(), Source::Library)
        .with_grant_cache(Arc::clone(grants));
    let user = lookup.user(&email).await?;
    Ok(Actor::user(&user))
}

fn register(shared: &Arc<Shared>) {
    let mut open = lock(&OPEN);
    open.retain(|weak| weak.strong_count() > 0);
    open.push(Arc::downgrade(shared));
}

fn durability(name: &str) -> PyResult<Durability> {
    match name {
        "write_behind" => Ok(Durability::WriteBehind),
        "strict" => Ok(Durability::Strict),
        other => Err(errors::invalid(
            "durability",
            other,
            "expected `write_behind` or `strict`",
        )),
    }
}

/// Opens a governor over the database at `url`.
///
/// `url` is `sqlite:///ABSOLUTE/PATH`, `sqlite://RELATIVE/PATH`,
/// `sqlite::memory:` or `postgres://…`. The SQLite file is created and
/// migrated if needed, in a directory that must exist.
///
/// With `break_glass`, admin calls may change fields owned by GitOps (system
/// admins only; each such write is audited and recorded as drift).
#[pyfunction]
#[pyo3(signature = (url, *, acting_as = None, durability = "write_behind", break_glass = false))]
pub fn open(
    py: Python<'_>,
    url: String,
    acting_as: Option<String>,
    durability: &str,
    break_glass: bool,
) -> PyResult<Governor> {
    let durability = self::durability(durability)?;
    let open_as = OpenAs {
        acting_as,
        break_glass,
    };
    block_on(py, open_governor(url, durability, open_as))
}

/// Opens a governor like `open`, as an awaitable.
#[pyfunction]
#[pyo3(signature = (url, *, acting_as = None, durability = "write_behind", break_glass = false))]
pub fn open_async<'py>(
    py: Python<'py>,
    url: String,
    acting_as: Option<String>,
    durability: &str,
    break_glass: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let durability = self::durability(durability)?;
    let open_as = OpenAs {
        acting_as,
        break_glass,
    };
    awaitable(py, open_governor(url, durability, open_as))
}

/// Closes every governor still open; registered with `atexit`.
#[pyfunction(name = "_close_all")]
pub fn close_all(py: Python<'_>) -> PyResult<()> {
    let open: Vec<Arc<Shared>> = lock(&OPEN).drain(..).filter_map(|w| w.upgrade()).collect();
    let mut first_error = None;
    for shared in open {
        if let Err(err) = block_on(py, async move { shared.close().await }) {
            first_error.get_or_insert(err);
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn decide<F>(py: Python<'_>, shared: &Arc<Shared>, work: F) -> PyResult<Decision>
where
    F: Future<Output = Result<ias_core::Decision>> + Send,
{
    let decision = block_on(py, work)?;
    Ok(Decision::new(decision, shared))
}

#[pymethods]
impl Governor {
    /// Decides a request and, when it is allowed, reserves `estimated_tokens`.
    fn authorize(
        &self,
        py: Python<'_>,
        key: String,
        model: String,
        estimated_tokens: i64,
    ) -> PyResult<Decision> {
        let shared = self.shared()?;
        let work = shared.governor.authorize(&key, &model, estimated_tokens);
        decide(py, shared, work)
    }

    /// `authorize` as an awaitable.
    fn authorize_async<'py>(
        &self,
        py: Python<'py>,
        key: String,
        model: String,
        estimated_tokens: i64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let shared = Arc::clone(self.shared()?);
        awaitable(py, async move {
            let decision = shared
                .governor
                .authorize(&key, &model, estimated_tokens)
                .await?;
            Ok(Decision::new(decision, &shared))
        })
    }

    /// Decides a request like `authorize` without reserving anything (a dry run).
    fn check(
        &self,
        py: Python<'_>,
        key: String,
        model: String,
        estimated_tokens: i64,
    ) -> PyResult<Decision> {
        let shared = self.shared()?;
        let work = shared.governor.check(&key, &model, estimated_tokens);
        decide(py, shared, work)
    }

    /// `check` as an awaitable.
    fn check_async<'py>(
        &self,
        py: Python<'py>,
        key: String,
        model: String,
        estimated_tokens: i64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let shared = Arc::clone(self.shared()?);
        awaitable(py, async move {
            let decision = shared
                .governor
                .check(&key, &model, estimated_tokens)
                .await?;
            Ok(Decision::new(decision, &shared))
        })
    }

    /// Charges the real usage of an allowed request and frees its reservation.
    fn settle(
        &self,
        py: Python<'_>,
        reservation: &Reservation,
        tokens: i64,
    ) -> PyResult<Settlement> {
        let work = reservation.settle(self.shared()?, tokens)?;
        block_on(py, work)
    }

    /// `settle` as an awaitable.
    fn settle_async<'py>(
        &self,
        py: Python<'py>,
        reservation: &Reservation,
        tokens: i64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let work = reservation.settle(self.shared()?, tokens)?;
        awaitable(py, work)
    }

    /// Frees a reservation without charging, for a request that never reached the model.
    fn release(&self, py: Python<'_>, reservation: &Reservation) -> PyResult<()> {
        let work = reservation.release(self.shared()?)?;
        block_on(py, work)
    }

    /// `release` as an awaitable.
    fn release_async<'py>(
        &self,
        py: Python<'py>,
        reservation: &Reservation,
    ) -> PyResult<Bound<'py, PyAny>> {
        let work = reservation.release(self.shared()?)?;
        awaitable(py, work)
    }

    /// Writes every settled charge and usage event to the store now.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let governor = self.shared()?.governor.clone();
        block_on(py, async move { governor.flush().await })
    }

    /// `flush` as an awaitable.
    fn flush_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let governor = self.shared()?.governor.clone();
        awaitable(py, async move { governor.flush().await })
    }

    /// Reads the store's change feed now; returns how many changes were applied.
    ///
    /// Maintenance does this every second; call it to see a change made by
    /// another process (such as `ias-admin`) at once.
    fn refresh(&self, py: Python<'_>) -> PyResult<usize> {
        let governor = self.shared()?.governor.clone();
        block_on(py, async move { governor.refresh().await })
    }

    /// `refresh` as an awaitable.
    fn refresh_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let governor = self.shared()?.governor.clone();
        awaitable(py, async move { governor.refresh().await })
    }

    /// Counters about this governor, for metrics.
    fn stats(&self) -> GovernorStats {
        GovernorStats::from(self.shared.governor.stats())
    }

    /// A view of this governor whose admin calls act as the user with `email`.
    ///
    /// Decisions and usage are shared with this governor; only the actor of
    /// admin calls (and so what they may do) differs. A break-glass view
    /// gives a break-glass view.
    fn acting_as(&self, py: Python<'_>, email: String) -> PyResult<Governor> {
        let shared = Arc::clone(self.shared()?);
        block_on(py, acting_as(shared, email, self.break_glass))
    }

    /// `acting_as` as an awaitable.
    fn acting_as_async<'py>(&self, py: Python<'py>, email: String) -> PyResult<Bound<'py, PyAny>> {
        let shared = Arc::clone(self.shared()?);
        awaitable(py, acting_as(shared, email, self.break_glass))
    }

    /// A view of this governor whose admin calls use break-glass.
    ///
    /// A system admin's writes to fields owned by GitOps then go ahead
    /// instead of raising `ConflictError`; each is audited and recorded as
    /// drift in the organization's sync state. Others are still refused.
    fn with_break_glass(&self) -> PyResult<Governor> {
        let shared = Arc::clone(self.shared()?);
        Ok(Governor::view(shared, self.actor.clone(), true))
    }

    /// Who admin calls act as: `operator:<name>` or `user:<email>`.
    #[getter]
    fn actor(&self) -> String {
        self.actor.to_string()
    }

    /// Whether admin calls use break-glass (see `with_break_glass`).
    #[getter]
    fn break_glass(&self) -> bool {
        self.break_glass
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Stops maintenance and writes all usage; the governor refuses calls afterwards.
    ///
    /// Closing twice does nothing. Every view (`acting_as`) closes with it.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let shared = Arc::clone(&self.shared);
        block_on(py, async move { shared.close().await })
    }

    /// `close` as an awaitable.
    fn close_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let shared = Arc::clone(&self.shared);
        awaitable(py, async move { shared.close().await })
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _exc_type: Option<&Bound<'_, PyAny>>,
        _exc_value: Option<&Bound<'_, PyAny>>,
        _traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.close(py)
    }

    fn __aenter__<'py>(slf: Py<Self>, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, async move { Ok(slf) })
    }

    fn __aexit__<'py>(
        &self,
        py: Python<'py>,
        _exc_type: Option<&Bound<'py, PyAny>>,
        _exc_value: Option<&Bound<'py, PyAny>>,
        _traceback: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let shared = Arc::clone(&self.shared);
        awaitable(py, async move { shared.close().await })
    }

    fn __repr__(&self) -> String {
        let state = if self.closed() { " closed" } else { "" };
        let glass = if self.break_glass { " break_glass" } else { "" };
        format!(
            "<ias.Governor actor={:?}{glass}{state}>",
            self.actor.to_string()
        )
    }
}

async fn acting_as(shared: Arc<Shared>, email: String, break_glass: bool) -> Result<Governor> {
    let actor = user_actor(&shared.store, &shared.grants, email).await?;
    Ok(Governor::view(shared, actor, break_glass))
}

/// Counters about a governor, for metrics.
#[pyclass(frozen, get_all, module = "ias")]
pub struct GovernorStats {
    /// Keys in memory.
    keys: usize,
    /// Users in memory.
    users: usize,
    /// Organizations in memory.
    orgs: usize,
    /// Reservations neither settled nor released.
    open_reservations: usize,
    /// Usage events waiting to be written.
    queued_events: usize,
    /// Reservations released by themselves after their time to live, since start.
    expired_reservations: u64,
    /// Store syncs (lease changes and usage writes), since start.
    syncs: u64,
    /// Store syncs that failed (their work was kept and retried), since start.
    failed_syncs: u64,
}

impl From<ias_core::GovernorStats> for GovernorStats {
    fn from(stats: ias_core::GovernorStats) -> Self {
        GovernorStats {
            keys: stats.keys,
            users: stats.users,
            orgs: stats.orgs,
            open_reservations: stats.open_reservations,
            queued_events: stats.queued_events,
            expired_reservations: stats.expired_reservations,
            syncs: stats.syncs,
            failed_syncs: stats.failed_syncs,
        }
    }
}

#[pymethods]
impl GovernorStats {
    fn __repr__(&self) -> String {
        format!(
            "GovernorStats(keys={}, users={}, orgs={}, open_reservations={}, queued_events={}, \
             expired_reservations={}, syncs={}, failed_syncs={})",
            self.keys,
            self.users,
            self.orgs,
            self.open_reservations,
            self.queued_events,
            self.expired_reservations,
            self.syncs,
            self.failed_syncs
        )
    }
}

/// A user named by id or email, as Python passes it.
#[derive(FromPyObject)]
pub(crate) enum UserArg {
    /// The user's id.
    Id(i64),
    /// The user's email.
    Email(String),
}

impl From<UserArg> for UserRef {
    fn from(arg: UserArg) -> Self {
        match arg {
            UserArg::Id(id) => UserRef::Id(ias_core::UserId(id)),
            UserArg::Email(email) => UserRef::Email(email),
        }
    }
}

/// Checks that a reservation belongs to `shared`; another governor numbers its own.
pub(crate) fn same_governor(shared: &Shared, owner: u64, id: i64) -> PyResult<()> {
    if shared.id == owner {
        return Ok(());
    }
    Err(errors::invalid(
        "reservation",
        &id.to_string(),
        "was made by another governor",
    ))
}
