//! The one place where SQLite errors become [`ias_core::Error`].

use ias_core::Error;
use rusqlite::ErrorCode;

/// The backend name used in errors.
pub(crate) const BACKEND: &str = "sqlite";

/// Converts a driver error; locking and I/O problems are retryable.
pub(crate) fn from_sqlite(err: rusqlite::Error) -> Error {
    let retryable = matches!(
        err.sqlite_error_code(),
        Some(
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::CannotOpen
                | ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull
        )
    );
    if retryable {
        Error::Unavailable {
            backend: BACKEND,
            message: err.to_string(),
        }
    } else {
        Error::Store {
            backend: BACKEND,
            message: err.to_string(),
        }
    }
}

/// Whether `err` is a UNIQUE or PRIMARY KEY violation.
pub(crate) fn is_unique_violation(err: &rusqlite::Error) -> bool {
    match err {
        rusqlite::Error::SqliteFailure(e, _) => {
            e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
        }
        _ => false,
    }
}

/// Converts a driver error, turning a unique violation into a conflict on `entity` `key`.
pub(crate) fn unique_or(err: rusqlite::Error, entity: &'static str, key: &str) -> Error {
    if is_unique_violation(&err) {
        Error::conflict(entity, key, "already exists")
    } else {
        from_sqlite(err)
    }
}
