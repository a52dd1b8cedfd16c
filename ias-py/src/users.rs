//! Users: create, read, list, set their monthly limits and reset passwords.

use chrono::{DateTime, Utc};
use std::sync::Arc;

use ias_core::{Admin, Result, Role, Store};
use pyo3::prelude::*;

use crate::governor::{Governor, UserArg};
use crate::page::{self, Paged};
use crate::runtime::{awaitable, block_on};

/// A person or service account that belongs to one organization.
#[pyclass(frozen, get_all, module = "ias")]
#[derive(Clone)]
pub struct User {
    /// Store-assigned id.
    id: i64,
    /// The organization the user belongs to.
    org_id: i64,
    /// Normalised (trimmed, lowercase) email.
    email: String,
    /// `system_admin`, `org_admin` or `member`.
    role: String,
    /// The user's own monthly token limit; `None`: only the org budget applies.
    monthly_token_limit: Option<i64>,
    /// Who owns the declarative fields: `api` or `gitops`.
    managed_by: String,
    /// When the user was created.
    created_at: DateTime<Utc>,
}

impl From<ias_core::User> for User {
    fn from(user: ias_core::User) -> Self {
        User {
            id: user.id.0,
            org_id: user.org_id.0,
            email: user.email,
            role: user.role.as_str().to_owned(),
            monthly_token_limit: user.monthly_token_limit,
            managed_by: user.managed_by.as_str().to_owned(),
            created_at: user.created_at,
        }
    }
}

#[pymethods]
impl User {
    fn __repr__(&self) -> String {
        format!(
            "User(id={}, email={:?}, role={:?}, monthly_token_limit={:?})",
            self.id, self.email, self.role, self.monthly_token_limit
        )
    }
}

async fn create_user(
    admin: Admin,
    org: String,
    email: String,
    role: String,
    limit: Option<i64>,
) -> Result<User> {
    let role: Role = role.parse()?;
    Ok(admin.create_user(&org, &email, role, limit).await?.into())
}

async fn user(admin: Admin, email: String) -> Result<User> {
    Ok(admin.user(&email).await?.into())
}

async fn list_users(
    admin: Admin,
    org: String,
    limit: i64,
    after: Option<String>,
) -> Result<Paged<User>> {
    let page = page::request(limit, after)?;
    let users = admin.list_users(&org, &page).await?;
    Ok(Paged::of(users, User::from))
}

async fn set_user_limit(admin: Admin, email: String, limit: Option<i64>) -> Result<User> {
    Ok(admin.set_user_limit(&email, limit).await?.into())
}

async fn reset_password(admin: Admin, user: UserArg, password: String) -> Result<User> {
    Ok(admin.reset_password(user, &password).await?.into())
}

async fn verify_password(store: Arc<dyn Store>, user: UserArg, password: String) -> Result<bool> {
    ias_core::verify_password(&*store, user, &password).await
}

#[pymethods]
impl Governor {
    /// Creates a user in an organization; `role` is `system_admin`, `org_admin` or `member`.
    #[pyo3(
        signature = (org, email, role = String::from("member"), monthly_token_limit = None),
        text_signature = "($self, org, email, role='member', monthly_token_limit=None)"
    )]
    fn create_user(
        &self,
        py: Python<'_>,
        org: String,
        email: String,
        role: String,
        monthly_token_limit: Option<i64>,
    ) -> PyResult<User> {
        let work = create_user(self.admin()?, org, email, role, monthly_token_limit);
        block_on(py, work)
    }

    /// `create_user` as an awaitable.
    #[pyo3(
        signature = (org, email, role = String::from("member"), monthly_token_limit = None),
        text_signature = "($self, org, email, role='member', monthly_token_limit=None)"
    )]
    fn create_user_async<'py>(
        &self,
        py: Python<'py>,
        org: String,
        email: String,
        role: String,
        monthly_token_limit: Option<i64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let work = create_user(self.admin()?, org, email, role, monthly_token_limit);
        awaitable(py, work)
    }

    /// The user with this email.
    fn user(&self, py: Python<'_>, email: String) -> PyResult<User> {
        block_on(py, user(self.admin()?, email))
    }

    /// `user` as an awaitable.
    fn user_async<'py>(&self, py: Python<'py>, email: String) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, user(self.admin()?, email))
    }

    /// A page of the users of an organization, by id.
    #[pyo3(signature = (org, *, limit = 100, after = None))]
    fn list_users(
        &self,
        py: Python<'_>,
        org: String,
        limit: i64,
        after: Option<String>,
    ) -> PyResult<Paged<User>> {
        block_on(py, list_users(self.admin()?, org, limit, after))
    }

    /// `list_users` as an awaitable.
    #[pyo3(signature = (org, *, limit = 100, after = None))]
    fn list_users_async<'py>(
        &self,
        py: Python<'py>,
        org: String,
        limit: i64,
        after: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, list_users(self.admin()?, org, limit, after))
    }

    /// Sets a user's own monthly token limit; `None` leaves only the org budget.
    fn set_user_limit(
        &self,
        py: Python<'_>,
        email: String,
        monthly_token_limit: Option<i64>,
    ) -> PyResult<User> {
        block_on(
            py,
            set_user_limit(self.admin()?, email, monthly_token_limit),
        )
    }

    /// `set_user_limit` as an awaitable.
    fn set_user_limit_async<'py>(
        &self,
        py: Python<'py>,
        email: String,
        monthly_token_limit: Option<i64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        awaitable(
            py,
            set_user_limit(self.admin()?, email, monthly_token_limit),
        )
    }

    /// Sets a user's password (by id or email); system admins only.
    fn reset_password(
        &self,
        py: Python<'_>,
        user: UserArg,
        new_password: String,
    ) -> PyResult<User> {
        block_on(py, reset_password(self.admin()?, user, new_password))
    }

    /// `reset_password` as an awaitable.
    fn reset_password_async<'py>(
        &self,
        py: Python<'py>,
        user: UserArg,
        new_password: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, reset_password(self.admin()?, user, new_password))
    }

    /// Whether `password` is the user's password (by id or email), as a login checks it.
    ///
    /// Checks no permission and writes no audit entry. An unknown user, or one with no
    /// password, answers `False` after the same work as a wrong password.
    fn verify_password(&self, py: Python<'_>, user: UserArg, password: String) -> PyResult<bool> {
        let (store, _) = self.store_and_governor()?;
        block_on(py, verify_password(store, user, password))
    }

    /// `verify_password` as an awaitable.
    fn verify_password_async<'py>(
        &self,
        py: Python<'py>,
        user: UserArg,
        password: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (store, _) = self.store_and_governor()?;
        awaitable(py, verify_password(store, user, password))
    }
}
