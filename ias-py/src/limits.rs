//! Requests- and tokens-per-minute limits of an organization, a user or a key.

use ias_core::{Admin, KeyId, LimitTarget, Result};
use pyo3::prelude::*;

use crate::errors;
use crate::governor::Governor;
use crate::runtime::{awaitable, block_on};

/// The per-minute limits of one organization, user or key; `None`: no limit.
#[pyclass(frozen, get_all, module = "ias")]
pub struct RateLimits {
    /// Requests per minute.
    rpm: Option<i64>,
    /// Tokens per minute.
    tpm: Option<i64>,
}

#[pymethods]
impl RateLimits {
    fn __repr__(&self) -> String {
        format!("RateLimits(rpm={:?}, tpm={:?})", self.rpm, self.tpm)
    }
}

/// Whose limits: the organization's unless a user's email or a key's id is given.
fn target(email: Option<String>, key_id: Option<i64>) -> PyResult<LimitTarget> {
    match (email, key_id) {
        (Some(_), Some(id)) => Err(errors::invalid(
            "key_id",
            &id.to_string(),
            "give `email` or `key_id`, not both",
        )),
        (Some(email), None) => Ok(LimitTarget::User(email.into())),
        (None, Some(id)) => Ok(LimitTarget::Key(KeyId(id))),
        (None, None) => Ok(LimitTarget::Org),
    }
}

async fn set_rate_limits(
    admin: Admin,
    org: String,
    target: LimitTarget,
    limits: ias_core::RateLimits,
) -> Result<bool> {
    admin.set_rate_limits(&org, target, limits).await
}

async fn rate_limits(admin: Admin, org: String, target: LimitTarget) -> Result<RateLimits> {
    let limits = admin.rate_limits(&org, target).await?;
    Ok(RateLimits {
        rpm: limits.rpm,
        tpm: limits.tpm,
    })
}

#[pymethods]
impl Governor {
    /// Sets the per-minute limits of an org, or of one of its users or keys.
    ///
    /// Both limits are replaced: `None` removes one. Returns whether anything changed.
    #[pyo3(signature = (org, *, email = None, key_id = None, rpm = None, tpm = None))]
    fn set_rate_limits(
        &self,
        py: Python<'_>,
        org: String,
        email: Option<String>,
        key_id: Option<i64>,
        rpm: Option<i64>,
        tpm: Option<i64>,
    ) -> PyResult<bool> {
        let target = target(email, key_id)?;
        let limits = ias_core::RateLimits { rpm, tpm };
        block_on(py, set_rate_limits(self.admin()?, org, target, limits))
    }

    /// `set_rate_limits` as an awaitable.
    #[pyo3(signature = (org, *, email = None, key_id = None, rpm = None, tpm = None))]
    fn set_rate_limits_async<'py>(
        &self,
        py: Python<'py>,
        org: String,
        email: Option<String>,
        key_id: Option<i64>,
        rpm: Option<i64>,
        tpm: Option<i64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let target = target(email, key_id)?;
        let limits = ias_core::RateLimits { rpm, tpm };
        awaitable(py, set_rate_limits(self.admin()?, org, target, limits))
    }

    /// The per-minute limits set on an org, or on one of its users or keys.
    #[pyo3(signature = (org, *, email = None, key_id = None))]
    fn rate_limits(
        &self,
        py: Python<'_>,
        org: String,
        email: Option<String>,
        key_id: Option<i64>,
    ) -> PyResult<RateLimits> {
        let target = target(email, key_id)?;
        block_on(py, rate_limits(self.admin()?, org, target))
    }

    /// `rate_limits` as an awaitable.
    #[pyo3(signature = (org, *, email = None, key_id = None))]
    fn rate_limits_async<'py>(
        &self,
        py: Python<'py>,
        org: String,
        email: Option<String>,
        key_id: Option<i64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let target = target(email, key_id)?;
        awaitable(py, rate_limits(self.admin()?, org, target))
    }
}
