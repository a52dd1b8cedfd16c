//! API keys: create (the only time a secret is seen), list and revoke.

use chrono::{DateTime, Utc};
use ias_core::{Admin, KeyId, Result};
use pyo3::prelude::*;

use crate::governor::Governor;
use crate::page::{self, Paged};
use crate::runtime::{awaitable, block_on};

/// The stored, non-secret half of an API key.
#[pyclass(frozen, get_all, module = "ias")]
#[derive(Clone)]
pub struct ApiKey {
    /// Store-assigned id.
    id: i64,
    /// The key's owner.
    user_id: i64,
    /// The owner's organization.
    org_id: i64,
    /// The first characters of the secret, enough to recognise it in a list.
    prefix: String,
    /// When the key was created.
    created_at: DateTime<Utc>,
    /// When the key stops working, if ever.
    expires_at: Option<DateTime<Utc>>,
    /// When the key was revoked, if it was.
    revoked_at: Option<DateTime<Utc>>,
    /// `active`, `expired` or `revoked`, when it was read.
    status: String,
}

impl From<ias_core::ApiKey> for ApiKey {
    fn from(key: ias_core::ApiKey) -> Self {
        let status = key.status(Utc::now()).as_str().to_owned();
        ApiKey {
            id: key.id.0,
            user_id: key.user_id.0,
            org_id: key.org_id.0,
            prefix: key.prefix,
            created_at: key.created_at,
            expires_at: key.expires_at,
            revoked_at: key.revoked_at,
            status,
        }
    }
}

#[pymethods]
impl ApiKey {
    fn __repr__(&self) -> String {
        format!(
            "ApiKey(id={}, prefix={:?}, status={:?})",
            self.id, self.prefix, self.status
        )
    }
}

/// A key just created: the only time its secret is available.
#[pyclass(frozen, get_all, module = "ias")]
pub struct CreatedKey {
    /// The stored key.
    key: ApiKey,
    /// The secret, to be shown once and never stored.
    secret: String,
}

#[pymethods]
impl CreatedKey {
    /// Never shows the secret.
    fn __repr__(&self) -> String {
        format!("CreatedKey(key={}, secret=<hidden>)", self.key.__repr__())
    }
}

/// How long a new key lives: `"30d"`-style text or a `timedelta`.
#[derive(FromPyObject)]
enum Lifetime {
    Text(String),
    Delta(chrono::Duration),
}

async fn create_key(
    admin: Admin,
    email: String,
    expires_in: Option<Lifetime>,
) -> Result<CreatedKey> {
    let lifetime = match expires_in {
        None => None,
        Some(Lifetime::Delta(delta)) => Some(delta),
        Some(Lifetime::Text(text)) => Some(ias_core::admin::parse_lifetime(&text)?),
    };
    let created = admin.create_key(&email, lifetime).await?;
    Ok(CreatedKey {
        key: created.key.into(),
        secret: created.secret.expose().to_owned(),
    })
}

async fn list_keys(
    admin: Admin,
    email: String,
    limit: i64,
    after: Option<String>,
) -> Result<Paged<ApiKey>> {
    let page = page::request(limit, after)?;
    let keys = admin.list_keys(&email, &page).await?;
    Ok(Paged::of(keys, ApiKey::from))
}

async fn revoke_key(admin: Admin, key_id: i64) -> Result<ApiKey> {
    Ok(admin.revoke_key(KeyId(key_id)).await?.into())
}

#[pymethods]
impl Governor {
    /// Creates an API key for a user; `expires_in` is such as `"30d"` or a `timedelta`.
    #[pyo3(signature = (email, expires_in = None))]
    fn create_key(
        &self,
        py: Python<'_>,
        email: String,
        expires_in: Option<Lifetime>,
    ) -> PyResult<CreatedKey> {
        block_on(py, create_key(self.admin()?, email, expires_in))
    }

    /// `create_key` as an awaitable.
    #[pyo3(signature = (email, expires_in = None))]
    fn create_key_async<'py>(
        &self,
        py: Python<'py>,
        email: String,
        expires_in: Option<Lifetime>,
    ) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, create_key(self.admin()?, email, expires_in))
    }

    /// A page of a user's keys, newest first, never their secrets.
    #[pyo3(signature = (email, *, limit = 100, after = None))]
    fn list_keys(
        &self,
        py: Python<'_>,
        email: String,
        limit: i64,
        after: Option<String>,
    ) -> PyResult<Paged<ApiKey>> {
        block_on(py, list_keys(self.admin()?, email, limit, after))
    }

    /// `list_keys` as an awaitable.
    #[pyo3(signature = (email, *, limit = 100, after = None))]
    fn list_keys_async<'py>(
        &self,
        py: Python<'py>,
        email: String,
        limit: i64,
        after: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, list_keys(self.admin()?, email, limit, after))
    }

    /// Revokes a key by id; it is refused from then on.
    fn revoke_key(&self, py: Python<'_>, key_id: i64) -> PyResult<ApiKey> {
        block_on(py, revoke_key(self.admin()?, key_id))
    }

    /// `revoke_key` as an awaitable.
    fn revoke_key_async<'py>(&self, py: Python<'py>, key_id: i64) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, revoke_key(self.admin()?, key_id))
    }
}
