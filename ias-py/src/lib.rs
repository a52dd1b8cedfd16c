//! Python bindings for ias: the extension module `ias._ias`, re-exported as `ias`.
//!
//! A Python gateway (FastAPI, LiteLLM) governs requests in its own process:
//!
//! ```python
//! import ias
//!
//! with ias.open("sqlite:///var/lib/ias/ias.db") as governor:
//!     decision = governor.authorize(key, "gpt-4o-mini", 1_200)
//!     if decision.allowed:
//!         ...  # call the model
//!         governor.settle(decision.reservation, 950)
//! ```
//!
//! Every call that may reach the store releases the GIL and blocks on one
//! shared tokio runtime ([`runtime`]); each has an `_async` twin returning an
//! asyncio awaitable. Core errors become one exception class per variant
//! ([`errors`]); denials stay values ([`decision`]). The typed interface is
//! in the hand-written `python/ias/_ias.pyi`.

mod audit;
mod database;
mod decision;
mod errors;
mod gitops;
mod governor;
mod keys;
mod limits;
mod models;
mod orgs;
mod page;
mod runtime;
mod usage;
mod users;

use pyo3::prelude::*;

/// The `ias._ias` extension module.
#[pymodule(name = "_ias")]
fn ias_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(governor::open, m)?)?;
    m.add_function(wrap_pyfunction!(governor::open_async, m)?)?;
    m.add_function(wrap_pyfunction!(governor::close_all, m)?)?;
    m.add_function(wrap_pyfunction!(is_well_formed_key, m)?)?;
    m.add_class::<governor::Governor>()?;
    m.add_class::<governor::GovernorStats>()?;
    m.add_class::<decision::Decision>()?;
    m.add_class::<decision::Reservation>()?;
    m.add_class::<decision::Settlement>()?;
    m.add_class::<decision::Principal>()?;
    m.add_class::<page::Page>()?;
    m.add_class::<orgs::Organization>()?;
    m.add_class::<users::User>()?;
    m.add_class::<keys::ApiKey>()?;
    m.add_class::<keys::CreatedKey>()?;
    m.add_class::<models::ModelChange>()?;
    m.add_class::<limits::RateLimits>()?;
    m.add_class::<usage::UsageReport>()?;
    m.add_class::<usage::UserUsage>()?;
    m.add_class::<usage::ModelUsage>()?;
    m.add_class::<usage::DailyUsage>()?;
    m.add_class::<usage::Forecast>()?;
    m.add_class::<audit::AuditEntry>()?;
    m.add_class::<audit::AuditHead>()?;
    m.add_class::<audit::ChainBreak>()?;
    m.add_class::<audit::AuditVerification>()?;
    m.add_class::<gitops::GitopsState>()?;
    m.add_class::<gitops::GitopsSettings>()?;
    m.add_class::<gitops::GitopsPlan>()?;
    m.add_class::<gitops::FieldChange>()?;
    m.add_class::<gitops::BlockedUser>()?;
    errors::register(m)?;
    Ok(())
}

/// Whether `key` has the shape of an ias API key (checked without any lookup).
#[pyfunction]
fn is_well_formed_key(key: String) -> bool {
    ias_core::key::is_well_formed(&key)
}
