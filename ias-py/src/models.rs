//! The models an organization may call: allow, deny and list.

use ias_core::{Admin, Result};
use pyo3::prelude::*;

use crate::governor::Governor;
use crate::page::{self, Paged};
use crate::runtime::{awaitable, block_on};

/// A change in an organization's allowed models.
#[pyclass(frozen, get_all, module = "ias")]
pub struct ModelChange {
    /// The normalised name or pattern.
    model: String,
    /// Whether the list changed (`False`: it was already so).
    changed: bool,
}

#[pymethods]
impl ModelChange {
    fn __repr__(&self) -> String {
        let changed = if self.changed { "True" } else { "False" };
        format!("ModelChange(model={:?}, changed={changed})", self.model)
    }
}

async fn set_model(admin: Admin, org: String, model: String, allowed: bool) -> Result<ModelChange> {
    let change = if allowed {
        admin.allow_model(&org, &model).await?
    } else {
        admin.deny_model(&org, &model).await?
    };
    Ok(ModelChange {
        model: change.model,
        changed: change.changed,
    })
}

async fn list_models(
    admin: Admin,
    org: String,
    limit: i64,
    after: Option<String>,
) -> Result<Paged<String>> {
    let page = page::request(limit, after)?;
    let models = admin.list_models(&org, &page).await?;
    Ok(Paged::of(models, |model| model))
}

#[pymethods]
impl Governor {
    /// Allows a model name or pattern (`name`, `prefix/*` or `*`) for an organization.
    fn allow_model(&self, py: Python<'_>, org: String, model: String) -> PyResult<ModelChange> {
        block_on(py, set_model(self.admin()?, org, model, true))
    }

    /// `allow_model` as an awaitable.
    fn allow_model_async<'py>(
        &self,
        py: Python<'py>,
        org: String,
        model: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, set_model(self.admin()?, org, model, true))
    }

    /// Removes a model name or pattern from an organization's allowed list.
    fn deny_model(&self, py: Python<'_>, org: String, model: String) -> PyResult<ModelChange> {
        block_on(py, set_model(self.admin()?, org, model, false))
    }

    /// `deny_model` as an awaitable.
    fn deny_model_async<'py>(
        &self,
        py: Python<'py>,
        org: String,
        model: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, set_model(self.admin()?, org, model, false))
    }

    /// A page of an organization's allowed model names and patterns, sorted.
    #[pyo3(signature = (org, *, limit = 100, after = None))]
    fn list_models(
        &self,
        py: Python<'_>,
        org: String,
        limit: i64,
        after: Option<String>,
    ) -> PyResult<Paged<String>> {
        block_on(py, list_models(self.admin()?, org, limit, after))
    }

    /// `list_models` as an awaitable.
    #[pyo3(signature = (org, *, limit = 100, after = None))]
    fn list_models_async<'py>(
        &self,
        py: Python<'py>,
        org: String,
        limit: i64,
        after: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, list_models(self.admin()?, org, limit, after))
    }
}
