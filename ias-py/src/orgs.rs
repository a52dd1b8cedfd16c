//! Organizations: create, read and list.

use chrono::{DateTime, Utc};
use ias_core::{Admin, Result};
use pyo3::prelude::*;

use crate::governor::Governor;
use crate::page::{self, Paged};
use crate::runtime::{awaitable, block_on};

/// An organization: the unit that owns a monthly token budget.
#[pyclass(frozen, get_all, module = "ias")]
#[derive(Clone)]
pub struct Organization {
    /// Store-assigned id.
    id: i64,
    /// Unique, URL-safe name such as `team-alpha`.
    slug: String,
    /// Tokens the whole organization may spend per calendar month.
    monthly_token_budget: i64,
    /// The IANA time zone whose calendar months are the budget periods.
    timezone: String,
    /// Who owns the declarative fields: `api` or `gitops`.
    managed_by: String,
    /// When the organization was created.
    created_at: DateTime<Utc>,
}

impl From<ias_core::Organization> for Organization {
    fn from(org: ias_core::Organization) -> Self {
        Organization {
            id: org.id.0,
            slug: org.slug,
            monthly_token_budget: org.monthly_token_budget,
            timezone: org.timezone.name().to_owned(),
            managed_by: org.managed_by.as_str().to_owned(),
            created_at: org.created_at,
        }
    }
}

#[pymethods]
impl Organization {
    fn __repr__(&self) -> String {
        format!(
            "Organization(id={}, slug={:?}, monthly_token_budget={}, timezone={:?})",
            self.id, self.slug, self.monthly_token_budget, self.timezone
        )
    }
}

async fn create_org(
    admin: Admin,
    slug: String,
    budget: i64,
    timezone: String,
) -> Result<Organization> {
    let org = admin.create_org(&slug, budget, &timezone).await?;
    Ok(org.into())
}

async fn set_org_budget(
    admin: Admin,
    slug: String,
    budget: Option<i64>,
    timezone: Option<String>,
) -> Result<Organization> {
    let org = admin
        .set_org_budget(&slug, budget, timezone.as_deref())
        .await?;
    Ok(org.into())
}

async fn org(admin: Admin, slug: String) -> Result<Organization> {
    Ok(admin.org(&slug).await?.into())
}

async fn list_orgs(admin: Admin, limit: i64, after: Option<String>) -> Result<Paged<Organization>> {
    let page = page::request(limit, after)?;
    let orgs = admin.list_orgs(&page).await?;
    Ok(Paged::of(orgs, Organization::from))
}

#[pymethods]
impl Governor {
    /// Changes an organization's monthly token budget, its time zone, or both.
    #[pyo3(
        signature = (slug, *, monthly_token_budget = None, timezone = None),
        text_signature = "($self, slug, *, monthly_token_budget=None, timezone=None)"
    )]
    fn set_org_budget(
        &self,
        py: Python<'_>,
        slug: String,
        monthly_token_budget: Option<i64>,
        timezone: Option<String>,
    ) -> PyResult<Organization> {
        let change = set_org_budget(self.admin()?, slug, monthly_token_budget, timezone);
        block_on(py, change)
    }

    /// `set_org_budget` as an awaitable.
    #[pyo3(
        signature = (slug, *, monthly_token_budget = None, timezone = None),
        text_signature = "($self, slug, *, monthly_token_budget=None, timezone=None)"
    )]
    fn set_org_budget_async<'py>(
        &self,
        py: Python<'py>,
        slug: String,
        monthly_token_budget: Option<i64>,
        timezone: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let change = set_org_budget(self.admin()?, slug, monthly_token_budget, timezone);
        awaitable(py, change)
    }

    /// Creates an organization with a monthly token budget.
    #[pyo3(
        signature = (slug, monthly_token_budget, timezone = String::from("UTC")),
        text_signature = "($self, slug, monthly_token_budget, timezone='UTC')"
    )]
    fn create_org(
        &self,
        py: Python<'_>,
        slug: String,
        monthly_token_budget: i64,
        timezone: String,
    ) -> PyResult<Organization> {
        block_on(
            py,
            create_org(self.admin()?, slug, monthly_token_budget, timezone),
        )
    }

    /// `create_org` as an awaitable.
    #[pyo3(
        signature = (slug, monthly_token_budget, timezone = String::from("UTC")),
        text_signature = "($self, slug, monthly_token_budget, timezone='UTC')"
    )]
    fn create_org_async<'py>(
        &self,
        py: Python<'py>,
        slug: String,
        monthly_token_budget: i64,
        timezone: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        awaitable(
            py,
            create_org(self.admin()?, slug, monthly_token_budget, timezone),
        )
    }

    /// The organization with this slug.
    fn org(&self, py: Python<'_>, slug: String) -> PyResult<Organization> {
        block_on(py, org(self.admin()?, slug))
    }

    /// `org` as an awaitable.
    fn org_async<'py>(&self, py: Python<'py>, slug: String) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, org(self.admin()?, slug))
    }

    /// A page of the organizations the actor may read, by id.
    ///
    /// The others are left out, so a page may hold fewer than `limit`
    /// (even none) before the last: read on while `next_after` is set.
    #[pyo3(signature = (*, limit = 100, after = None))]
    fn list_orgs(
        &self,
        py: Python<'_>,
        limit: i64,
        after: Option<String>,
    ) -> PyResult<Paged<Organization>> {
        block_on(py, list_orgs(self.admin()?, limit, after))
    }

    /// `list_orgs` as an awaitable.
    #[pyo3(signature = (*, limit = 100, after = None))]
    fn list_orgs_async<'py>(
        &self,
        py: Python<'py>,
        limit: i64,
        after: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, list_orgs(self.admin()?, limit, after))
    }
}
