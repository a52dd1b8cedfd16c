//! Decisions and reservations as Python sees them.
//!
//! A `Decision` is a value: allowed or denied, with the limit that decided
//! and the reservation of an allowed request. `raise_for_denial()` turns a
//! denial into an exception for callers that prefer one, and `with
//! decision:` settles or releases the reservation when the block ends.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use chrono::{DateTime, Utc};
use ias_core::{BudgetState, DenyCategory, Error, LimitKind, LimitScope, Result};
use pyo3::prelude::*;

use crate::errors::{self, BudgetExceeded, InvalidKey, ModelNotAllowed};
use crate::governor::{Shared, same_governor};
use crate::runtime::{awaitable, block_on};

const OPEN: u8 = 0;
const SETTLED: u8 = 1;
const RELEASED: u8 = 2;

/// A reservation with the governor that made it and whether it is still open.
pub(crate) struct Cell {
    core: ias_core::Reservation,
    owner: u64,
    state: AtomicU8,
}

impl Cell {
    fn is_open(&self) -> bool {
        self.state.load(Ordering::Acquire) == OPEN
    }
}

/// Tokens held for an allowed request until it is settled or released.
#[pyclass(frozen, module = "ias")]
pub struct Reservation {
    cell: Arc<Cell>,
}

impl Reservation {
    /// The work of settling this reservation on `shared` with `tokens` used.
    pub(crate) fn settle(
        &self,
        shared: &Arc<Shared>,
        tokens: i64,
    ) -> PyResult<impl Future<Output = Result<Settlement>> + Send + 'static> {
        settle(&self.cell, shared, tokens)
    }

    /// The work of releasing this reservation on `shared`.
    pub(crate) fn release(
        &self,
        shared: &Arc<Shared>,
    ) -> PyResult<impl Future<Output = Result<()>> + Send + 'static> {
        release(&self.cell, shared)
    }
}

fn settle(
    cell: &Arc<Cell>,
    shared: &Arc<Shared>,
    tokens: i64,
) -> PyResult<impl Future<Output = Result<Settlement>> + Send + 'static> {
    same_governor(shared, cell.owner, cell.core.id.0)?;
    let (cell, governor) = (Arc::clone(cell), shared.core()?.clone());
    Ok(async move {
        let settled = governor.settle(&cell.core, tokens).await?;
        cell.state.store(SETTLED, Ordering::Release);
        Ok(Settlement {
            reserved: settled.reserved,
            charged: settled.charged,
        })
    })
}

fn release(
    cell: &Arc<Cell>,
    shared: &Arc<Shared>,
) -> PyResult<impl Future<Output = Result<()>> + Send + 'static> {
    same_governor(shared, cell.owner, cell.core.id.0)?;
    let (cell, governor) = (Arc::clone(cell), shared.core()?.clone());
    Ok(async move {
        governor.release(&cell.core).await?;
        cell.state.store(RELEASED, Ordering::Release);
        Ok(())
    })
}

#[pymethods]
impl Reservation {
    /// Its id, unique within the governor that made it.
    #[getter]
    fn id(&self) -> i64 {
        self.cell.core.id.0
    }

    /// The organization charged.
    #[getter]
    fn org_id(&self) -> i64 {
        self.cell.core.org_id.0
    }

    /// The user charged.
    #[getter]
    fn user_id(&self) -> i64 {
        self.cell.core.user_id.0
    }

    /// The key presented.
    #[getter]
    fn key_id(&self) -> i64 {
        self.cell.core.key_id.0
    }

    /// The normalised model name.
    #[getter]
    fn model(&self) -> &str {
        &self.cell.core.model
    }

    /// The budget period the tokens count in, `YYYY-MM`.
    #[getter]
    fn period(&self) -> &str {
        &self.cell.core.period
    }

    /// Tokens held.
    #[getter]
    fn tokens(&self) -> i64 {
        self.cell.core.tokens
    }

    /// When it is released by itself if still open.
    #[getter]
    fn expires_at(&self) -> DateTime<Utc> {
        self.cell.core.expires_at
    }

    /// Whether it was neither settled nor released through this object.
    #[getter]
    fn open(&self) -> bool {
        self.cell.is_open()
    }

    fn __repr__(&self) -> String {
        let core = &self.cell.core;
        format!(
            "<ias.Reservation id={} model={:?} tokens={} open={}>",
            core.id,
            core.model,
            core.tokens,
            if self.cell.is_open() { "True" } else { "False" }
        )
    }
}

/// What a settle charged.
#[pyclass(frozen, get_all, module = "ias")]
pub struct Settlement {
    /// Tokens that were held.
    reserved: i64,
    /// Tokens charged: the real usage, even where it exceeds what was held.
    charged: i64,
}

#[pymethods]
impl Settlement {
    fn __repr__(&self) -> String {
        format!(
            "Settlement(reserved={}, charged={})",
            self.reserved, self.charged
        )
    }
}

/// Who a key belongs to.
#[pyclass(frozen, get_all, module = "ias")]
pub struct Principal {
    /// The organization's id.
    org_id: i64,
    /// The organization's slug.
    org_slug: String,
    /// The user's id.
    user_id: i64,
    /// The user's email.
    email: String,
    /// The key's id.
    key_id: i64,
}

#[pymethods]
impl Principal {
    fn __repr__(&self) -> String {
        format!(
            "Principal(org_slug={:?}, email={:?}, key_id={})",
            self.org_slug, self.email, self.key_id
        )
    }
}

/// The monthly or per-minute limit a decision reports.
struct LimitView {
    scope: LimitScope,
    kind: LimitKind,
    limit: i64,
    used: i64,
    reserved: i64,
}

/// The answer to "may this request go ahead?".
#[pyclass(frozen, module = "ias")]
pub struct Decision {
    core: ias_core::Decision,
    reservation: Option<Arc<Cell>>,
    shared: Arc<Shared>,
}

impl Decision {
    /// Wraps a core decision made by the governor `shared`.
    pub(crate) fn new(mut core: ias_core::Decision, shared: &Arc<Shared>) -> Self {
        let reservation = match &mut core {
            ias_core::Decision::Allowed(allowed) => allowed.reservation.take(),
            ias_core::Decision::Denied(_) => None,
        };
        let reservation = reservation.map(|core| {
            Arc::new(Cell {
                core,
                owner: shared.id(),
                state: AtomicU8::new(OPEN),
            })
        });
        Decision {
            core,
            reservation,
            shared: Arc::clone(shared),
        }
    }

    fn denied(&self) -> Option<&ias_core::Denied> {
        match &self.core {
            ias_core::Decision::Allowed(_) => None,
            ias_core::Decision::Denied(denied) => Some(denied),
        }
    }

    fn limit_view(&self) -> Option<LimitView> {
        match &self.core {
            ias_core::Decision::Allowed(allowed) => Some(tightest(&allowed.budget)),
            ias_core::Decision::Denied(denied) => denied.limit.as_ref().map(|l| LimitView {
                scope: l.scope,
                kind: l.kind,
                limit: l.limit,
                used: l.used,
                reserved: l.reserved,
            }),
        }
    }

    fn open_cell(&self) -> PyResult<&Arc<Cell>> {
        self.reservation.as_ref().ok_or_else(|| {
            errors::invalid(
                "reservation",
                "none",
                "a denied or dry-run decision holds no reservation",
            )
        })
    }

    /// The exception for this decision's denial; `None` when allowed.
    fn denial_error(slf: &Bound<'_, Self>) -> PyResult<Option<PyErr>> {
        let this = slf.get();
        let Some(denied) = this.denied() else {
            return Ok(None);
        };
        let message = denied.message();
        let err = match denied.reason.category() {
            DenyCategory::Unauthenticated => PyErr::new::<InvalidKey, _>(message.clone()),
            DenyCategory::Forbidden => PyErr::new::<ModelNotAllowed, _>(message.clone()),
            _ => PyErr::new::<BudgetExceeded, _>(message.clone()),
        };
        let value = err.value(slf.py());
        value.setattr("decision", slf)?;
        value.setattr("reason", denied.reason.as_str())?;
        value.setattr("status_code", this.status_code())?;
        value.setattr("retry_after", denied.retry_after_secs())?;
        value.setattr("message", message)?;
        Ok(Some(err))
    }

    /// What ending a `with` block does to a reservation still open.
    fn finish(
        &self,
        raised: bool,
    ) -> PyResult<Option<impl Future<Output = Result<()>> + Send + 'static>> {
        let Some(cell) = self.reservation.as_ref().filter(|c| c.is_open()) else {
            return Ok(None);
        };
        let release = raised.then(|| release(cell, &self.shared)).transpose()?;
        let settle = (!raised)
            .then(|| settle(cell, &self.shared, cell.core.tokens))
            .transpose()?;
        Ok(Some(async move {
            match (release, settle) {
                (Some(release), _) => ignore_not_found(release.await),
                (None, Some(settle)) => settle.await.map(|_| ()),
                (None, None) => Ok(()),
            }
        }))
    }
}

/// The limit that leaves the least: the user's own, or the organization's.
fn tightest(budget: &BudgetState) -> LimitView {
    let org_left = budget.org.left_of(budget.org_limit);
    let user = budget
        .user_limit
        .filter(|limit| budget.user.left_of(*limit) < org_left);
    let (scope, limit, counter) = match user {
        Some(limit) => (LimitScope::User, limit, budget.user),
        None => (LimitScope::Org, budget.org_limit, budget.org),
    };
    LimitView {
        scope,
        kind: LimitKind::MonthlyTokens,
        limit,
        used: counter.used,
        reserved: counter.reserved,
    }
}

/// A reservation already released by its time to live is not an error at release.
fn ignore_not_found(result: Result<()>) -> Result<()> {
    match result {
        Err(Error::NotFound { .. }) => Ok(()),
        other => other,
    }
}

#[pymethods]
impl Decision {
    /// Whether the request may go ahead.
    #[getter]
    fn allowed(&self) -> bool {
        self.core.is_allowed()
    }

    fn __bool__(&self) -> bool {
        self.core.is_allowed()
    }

    /// Why it was denied, such as `org_budget_exhausted`; `None` when allowed.
    #[getter]
    fn reason(&self) -> Option<&'static str> {
        self.denied().map(|d| d.reason.as_str())
    }

    /// `unauthenticated`, `forbidden` or `limit_exceeded`; `None` when allowed.
    #[getter]
    fn category(&self) -> Option<&'static str> {
        self.denied().map(|d| d.reason.category().as_str())
    }

    /// The HTTP status a gateway answers: 200, 401, 403 or 429.
    #[getter]
    fn status_code(&self) -> u16 {
        self.denied()
            .map_or(200, |d| d.reason.category().http_status())
    }

    /// A one-line explanation fit for the caller; `None` when allowed.
    #[getter]
    fn message(&self) -> Option<String> {
        self.denied().map(ias_core::Denied::message)
    }

    /// The normalised model name.
    #[getter]
    fn model(&self) -> &str {
        match &self.core {
            ias_core::Decision::Allowed(allowed) => &allowed.model,
            ias_core::Decision::Denied(denied) => &denied.model,
        }
    }

    /// Tokens estimated for the request.
    #[getter]
    fn requested(&self) -> i64 {
        match &self.core {
            ias_core::Decision::Allowed(allowed) => allowed.requested,
            ias_core::Decision::Denied(denied) => denied.requested,
        }
    }

    /// Whose key it was; `None` when the key is unknown.
    #[getter]
    fn principal(&self) -> Option<Principal> {
        let principal = match &self.core {
            ias_core::Decision::Allowed(allowed) => Some(&allowed.principal),
            ias_core::Decision::Denied(denied) => denied.principal.as_ref(),
        }?;
        Some(Principal {
            org_id: principal.org_id.0,
            org_slug: principal.org_slug.clone(),
            user_id: principal.user_id.0,
            email: principal.email.clone(),
            key_id: principal.key_id.0,
        })
    }

    /// Whose limit: `org`, `user` or `key`.
    ///
    /// For a denial, the limit that refused it; for an allowed request, the
    /// monthly limit that leaves the least. `None` for key and model denials.
    #[getter]
    fn scope(&self) -> Option<&'static str> {
        self.limit_view().map(|l| l.scope.as_str())
    }

    /// `monthly_tokens`, `requests_per_minute` or `tokens_per_minute`.
    #[getter]
    fn kind(&self) -> Option<&'static str> {
        self.limit_view().map(|l| l.kind.as_str())
    }

    /// The limit's size, in tokens or requests.
    #[getter]
    fn limit(&self) -> Option<i64> {
        self.limit_view().map(|l| l.limit)
    }

    /// Tokens used in the period, or requests or tokens in the last 60 seconds.
    #[getter]
    fn used(&self) -> Option<i64> {
        self.limit_view().map(|l| l.used)
    }

    /// Tokens held by open reservations (monthly limits only).
    #[getter]
    fn reserved(&self) -> Option<i64> {
        self.limit_view().map(|l| l.reserved)
    }

    /// What is left under the limit: `limit - used - reserved`, never negative.
    #[getter]
    fn remaining(&self) -> Option<i64> {
        self.limit_view().map(|l| {
            ias_core::Counter {
                used: l.used,
                reserved: l.reserved,
            }
            .left_of(l.limit)
        })
    }

    /// The budget period, `YYYY-MM`, for monthly limits.
    #[getter]
    fn period(&self) -> Option<String> {
        match &self.core {
            ias_core::Decision::Allowed(allowed) => Some(allowed.period.clone()),
            ias_core::Decision::Denied(denied) => denied.limit.as_ref()?.period.clone(),
        }
    }

    /// When the limit resets (monthly) or the request would fit (per minute).
    #[getter]
    fn reset_at(&self) -> Option<DateTime<Utc>> {
        match &self.core {
            ias_core::Decision::Allowed(allowed) => Some(allowed.resets_at),
            ias_core::Decision::Denied(denied) => denied.limit.as_ref().map(|l| l.resets_at),
        }
    }

    /// Whole seconds until a retry may succeed; `None` when allowed, for key
    /// and model denials, and when the request can never fit.
    #[getter]
    fn retry_after(&self) -> Option<u64> {
        self.denied().and_then(ias_core::Denied::retry_after_secs)
    }

    /// The tokens held for an allowed request; `None` when denied or a dry run.
    #[getter]
    fn reservation(&self) -> Option<Reservation> {
        self.reservation.as_ref().map(|cell| Reservation {
            cell: Arc::clone(cell),
        })
    }

    /// Raises `InvalidKey` (401), `ModelNotAllowed` (403) or `BudgetExceeded` (429) if denied.
    fn raise_for_denial(slf: &Bound<'_, Self>) -> PyResult<()> {
        match Decision::denial_error(slf)? {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// Charges the real usage of this allowed request (see `Governor.settle`).
    fn settle(&self, py: Python<'_>, tokens: i64) -> PyResult<Settlement> {
        block_on(py, settle(self.open_cell()?, &self.shared, tokens)?)
    }

    /// `settle` as an awaitable.
    fn settle_async<'py>(&self, py: Python<'py>, tokens: i64) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, settle(self.open_cell()?, &self.shared, tokens)?)
    }

    /// Frees this request's reservation without charging (see `Governor.release`).
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        block_on(py, release(self.open_cell()?, &self.shared)?)
    }

    /// `release` as an awaitable.
    fn release_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, release(self.open_cell()?, &self.shared)?)
    }

    fn __enter__(slf: &Bound<'_, Self>) -> PyResult<Py<Self>> {
        Decision::raise_for_denial(slf)?;
        Ok(slf.clone().unbind())
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        _exc_value: Option<&Bound<'_, PyAny>>,
        _traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        if let Some(work) = self.finish(exc_type.is_some())? {
            block_on(py, work)?;
        }
        Ok(())
    }

    fn __aenter__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        Decision::raise_for_denial(slf)?;
        let this = slf.clone().unbind();
        awaitable(slf.py(), async move { Ok(this) })
    }

    fn __aexit__<'py>(
        &self,
        py: Python<'py>,
        exc_type: Option<&Bound<'py, PyAny>>,
        _exc_value: Option<&Bound<'py, PyAny>>,
        _traceback: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let work = self.finish(exc_type.is_some())?;
        awaitable(py, async move {
            if let Some(work) = work {
                work.await?;
            }
            Ok(())
        })
    }

    fn __repr__(&self) -> String {
        match self.denied() {
            None => format!(
                "<ias.Decision allowed model={:?} requested={}>",
                self.model(),
                self.requested()
            ),
            Some(denied) => format!(
                "<ias.Decision denied reason={} model={:?}>",
                denied.reason.as_str(),
                self.model()
            ),
        }
    }
}
