//! The exception classes, and the one place where a core error becomes one.
//!
//! Every class derives from `ias.IasError`. Each [`ias_core::Error`] variant
//! has its own subclass, whose instances carry the variant's fields as
//! attributes besides `kind` (the stable name the CLI prints) and
//! `retryable`. Denials are values; [`crate::decision`] turns one into a
//! `RequestDenied` subclass only when asked to.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

use ias_core::Error;

create_exception!(
    ias,
    IasError,
    PyException,
    "The base class of every exception raised by ias."
);
create_exception!(
    ias,
    InvalidInputError,
    IasError,
    "An input value was rejected before anything was written."
);
create_exception!(
    ias,
    WeakPasswordError,
    InvalidInputError,
    "A new password breaks complexity rules; `rules` names each one."
);
create_exception!(
    ias,
    DatabaseUrlError,
    InvalidInputError,
    "A database URL could not be understood or opened."
);
create_exception!(
    ias,
    NotFoundError,
    IasError,
    "The named organization, user, key or reservation does not exist."
);
create_exception!(
    ias,
    ConflictError,
    IasError,
    "The change conflicts with what is already stored."
);
create_exception!(
    ias,
    PermissionDeniedError,
    IasError,
    "The acting user's role lacks the permission the operation needs."
);
create_exception!(
    ias,
    PasswordHashingError,
    IasError,
    "Hashing a password failed for a reason other than the password."
);
create_exception!(
    ias,
    UnsupportedError,
    IasError,
    "The operation is not supported by this build or store."
);
create_exception!(
    ias,
    UnavailableError,
    IasError,
    "The store could not be reached; retrying later may succeed."
);
create_exception!(
    ias,
    StoreError,
    IasError,
    "The store failed in a way that retrying will not fix."
);
create_exception!(
    ias,
    GovernorClosedError,
    IasError,
    "The governor was closed; open a new one."
);
create_exception!(
    ias,
    RequestDenied,
    IasError,
    "A denied decision raised by `Decision.raise_for_denial()`."
);
create_exception!(
    ias,
    InvalidKey,
    RequestDenied,
    "The API key is malformed, unknown, expired or revoked (HTTP 401)."
);
create_exception!(
    ias,
    ModelNotAllowed,
    RequestDenied,
    "The organization may not call the model (HTTP 403)."
);
create_exception!(
    ias,
    BudgetExceeded,
    RequestDenied,
    "A monthly budget, user limit or rate limit cannot cover the request (HTTP 429)."
);

/// Adds every exception class to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("IasError", py.get_type::<IasError>())?;
    m.add("InvalidInputError", py.get_type::<InvalidInputError>())?;
    m.add("WeakPasswordError", py.get_type::<WeakPasswordError>())?;
    m.add("DatabaseUrlError", py.get_type::<DatabaseUrlError>())?;
    m.add("NotFoundError", py.get_type::<NotFoundError>())?;
    m.add("ConflictError", py.get_type::<ConflictError>())?;
    m.add(
        "PermissionDeniedError",
        py.get_type::<PermissionDeniedError>(),
    )?;
    m.add(
        "PasswordHashingError",
        py.get_type::<PasswordHashingError>(),
    )?;
    m.add("UnsupportedError", py.get_type::<UnsupportedError>())?;
    m.add("UnavailableError", py.get_type::<UnavailableError>())?;
    m.add("StoreError", py.get_type::<StoreError>())?;
    m.add("GovernorClosedError", py.get_type::<GovernorClosedError>())?;
    m.add("RequestDenied", py.get_type::<RequestDenied>())?;
    m.add("InvalidKey", py.get_type::<InvalidKey>())?;
    m.add("ModelNotAllowed", py.get_type::<ModelNotAllowed>())?;
    m.add("BudgetExceeded", py.get_type::<BudgetExceeded>())?;
    // Class-level defaults, so that every instance answers both attributes.
    let base = py.get_type::<IasError>();
    base.setattr("kind", "error")?;
    base.setattr("retryable", false)?;
    py.get_type::<GovernorClosedError>()
        .setattr("kind", "closed")?;
    py.get_type::<RequestDenied>().setattr("kind", "denied")?;
    Ok(())
}

/// Converts a core error into its exception, with the variant's fields as attributes.
pub(crate) fn to_py(py: Python<'_>, err: Error) -> PyErr {
    let message = err.to_string();
    let (exception, fields) = match &err {
        Error::InvalidInput {
            field,
            value,
            reason,
        } => (
            PyErr::new::<InvalidInputError, _>(message),
            vec![
                ("field", field.to_string()),
                ("value", value.clone()),
                ("reason", reason.clone()),
            ],
        ),
        // The whole file is the rejected value; `reason` lists every problem, one per line.
        Error::InvalidManifest { errors } => (
            PyErr::new::<InvalidInputError, _>(message),
            vec![
                ("field", "file".to_owned()),
                ("value", String::new()),
                ("reason", errors.to_string()),
            ],
        ),
        Error::NotFound { entity, key } => (
            PyErr::new::<NotFoundError, _>(message),
            vec![("entity", entity.to_string()), ("key", key.clone())],
        ),
        Error::Conflict {
            entity,
            key,
            reason,
        } => (
            PyErr::new::<ConflictError, _>(message),
            vec![
                ("entity", entity.to_string()),
                ("key", key.clone()),
                ("reason", reason.clone()),
            ],
        ),
        Error::GitopsOwned {
            entity,
            key,
            repo_url,
            commit,
        } => (
            PyErr::new::<ConflictError, _>(message.clone()),
            vec![
                ("entity", entity.to_string()),
                ("key", key.clone()),
                ("reason", reason_of(&message, key)),
                ("repo_url", repo_url.clone()),
                ("commit", commit.clone().unwrap_or_default()),
            ],
        ),
        Error::PermissionDenied {
            actor,
            permission,
            target,
        } => (
            PyErr::new::<PermissionDeniedError, _>(message),
            vec![
                ("actor", actor.clone()),
                ("permission", permission.clone()),
                ("target", target.clone()),
            ],
        ),
        Error::WeakPassword { .. } => (PyErr::new::<WeakPasswordError, _>(message), Vec::new()),
        Error::PasswordHashing { reason } => (
            PyErr::new::<PasswordHashingError, _>(message),
            vec![("reason", reason.clone())],
        ),
        Error::DatabaseUrl { url, reason } => (
            PyErr::new::<DatabaseUrlError, _>(message),
            vec![("url", url.clone()), ("reason", reason.clone())],
        ),
        Error::Unsupported(_) => (PyErr::new::<UnsupportedError, _>(message), Vec::new()),
        Error::Unavailable { backend, .. } => (
            PyErr::new::<UnavailableError, _>(message),
            vec![("backend", backend.to_string())],
        ),
        Error::Store { backend, .. } => (
            PyErr::new::<StoreError, _>(message),
            vec![("backend", backend.to_string())],
        ),
        _ => (PyErr::new::<IasError, _>(message), Vec::new()),
    };
    let value = exception.value(py);
    let attributes = || -> PyResult<()> {
        value.setattr("kind", err.kind())?;
        value.setattr("retryable", err.is_retryable())?;
        for (name, field) in fields {
            value.setattr(name, field)?;
        }
        if let Error::WeakPassword { broken } = &err {
            value.setattr("rules", rule_names(broken))?;
        }
        Ok(())
    };
    match attributes() {
        Ok(()) => exception,
        Err(failed) => failed,
    }
}

/// What follows ``entity `key` `` in a message: the reason alone.
fn reason_of(message: &str, key: &str) -> String {
    let marker = format!("`{key}` ");
    match message.split_once(&marker) {
        Some((_, reason)) => reason.to_owned(),
        None => message.to_owned(),
    }
}

/// The snake_case names of broken password rules, such as `too_short`.
fn rule_names(rules: &[ias_core::password::Rule]) -> Vec<String> {
    rules
        .iter()
        .filter_map(|rule| match serde_json::to_value(rule) {
            Ok(serde_json::Value::String(name)) => Some(name),
            _ => None,
        })
        .collect()
}

/// An `InvalidInputError` for a value the bindings reject before calling the core.
pub(crate) fn invalid(field: &'static str, value: &str, reason: &str) -> PyErr {
    Python::attach(|py| to_py(py, Error::invalid(field, value, reason)))
}

/// An `IasError` for a failure of the bindings themselves, not of the core.
pub(crate) fn host(message: String) -> PyErr {
    PyErr::new::<IasError, _>(message)
}

/// The error of a call on a closed governor.
pub(crate) fn closed() -> PyErr {
    PyErr::new::<GovernorClosedError, _>("the governor is closed")
}
