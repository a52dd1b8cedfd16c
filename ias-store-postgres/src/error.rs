//! The one place where PostgreSQL errors become [`ias_core::Error`].

use ias_core::Error;
use sqlx::error::DatabaseError;
use sqlx::postgres::PgDatabaseError;

/// The backend name used in errors.
pub(crate) const BACKEND: &str = "postgres";

/// SQLSTATE classes and codes worth a retry: the connection, the server's
/// resources or state, and transactions aborted by lock conflicts.
const RETRYABLE_CLASSES: &[&str] = &["08", "53", "57"];
const RETRYABLE_CODES: &[&str] = &["40001", "40P01", "55P03"];

/// Converts a driver error.
///
/// Connection, pool and server-state problems are retryable
/// ([`Error::Unavailable`]); a unique violation becomes [`Error::Conflict`]
/// and a missing referenced row [`Error::NotFound`]; everything else is
/// [`Error::Store`].
pub(crate) fn from_sqlx(err: sqlx::Error) -> Error {
    if let Some(db) = err.as_database_error() {
        return from_database(db);
    }
    let retryable = matches!(
        err,
        sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::BeginFailed
    );
    if is_unreachable(&err) {
        unavailable(format!("{LOST}: {err}"))
    } else if retryable {
        unavailable(err.to_string())
    } else {
        store(err.to_string())
    }
}

/// How the message of an error from a lost or refused connection starts.
const LOST: &str = "no connection to the server";

/// Whether `err` came from a lost or refused connection (see [`is_unreachable`]).
pub(crate) fn is_lost_connection(err: &Error) -> bool {
    matches!(err, Error::Unavailable { message, .. } if message.starts_with(LOST))
}

/// Whether `err` says the server cannot be reached at all (rather than
/// refusing one statement): nothing else will get through either.
pub(crate) fn is_unreachable(err: &sqlx::Error) -> bool {
    matches!(
        err,
        sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::WorkerCrashed
    )
}

fn from_database(db: &(dyn DatabaseError + 'static)) -> Error {
    if db.code().as_deref() == Some(NOT_FOUND) {
        return raised_not_found(db);
    }
    if db.is_unique_violation() {
        let what = db.constraint().unwrap_or("unique constraint");
        return Error::conflict("row", what, "already exists");
    }
    if db.is_foreign_key_violation() {
        return missing_reference(db);
    }
    let code = db.code().unwrap_or_default();
    let retryable =
        RETRYABLE_CODES.contains(&&*code) || RETRYABLE_CLASSES.iter().any(|c| code.starts_with(c));
    let message = format!("{} ({code})", db.message());
    if retryable {
        unavailable(message)
    } else {
        store(message)
    }
}

/// The SQLSTATE `ias_sync_leases()` raises for a missing organization or user.
const NOT_FOUND: &str = "P0002";

/// A row `ias_sync_leases()` did not find: the entity is the message, its id the detail.
fn raised_not_found(db: &(dyn DatabaseError + 'static)) -> Error {
    let entity = match db.message() {
        "organization" => "organization",
        "user" => "user",
        _ => "row",
    };
    let key = db
        .try_downcast_ref::<PgDatabaseError>()
        .and_then(PgDatabaseError::detail)
        .unwrap_or_default();
    Error::not_found(entity, key)
}

/// A foreign-key violation: the referenced row, named from the column and
/// the server's detail (`Key (org_id)=(42) is not present …`).
fn missing_reference(db: &(dyn DatabaseError + 'static)) -> Error {
    let detail = db
        .try_downcast_ref::<PgDatabaseError>()
        .and_then(PgDatabaseError::detail)
        .unwrap_or_default();
    let column = between(detail, "Key (", ")=").unwrap_or_default();
    let entity = match column {
        "org_id" => "organization",
        "user_id" => "user",
        "key_id" => "key",
        "role" => "role",
        "permission" => "permission",
        _ => "referenced row",
    };
    let key = between(detail, ")=(", ")").unwrap_or(column);
    Error::not_found(entity, key)
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let rest = &text[text.find(start)? + start.len()..];
    Some(&rest[..rest.find(end)?])
}

/// Converts a driver error, naming a unique violation as a conflict on `entity` `key`.
pub(crate) fn unique_or(err: sqlx::Error, entity: &'static str, key: &str) -> Error {
    let unique = err
        .as_database_error()
        .is_some_and(DatabaseError::is_unique_violation);
    if unique {
        Error::conflict(entity, key, "already exists")
    } else {
        from_sqlx(err)
    }
}

pub(crate) fn unavailable(message: impl Into<String>) -> Error {
    Error::Unavailable {
        backend: BACKEND,
        message: message.into(),
    }
}

pub(crate) fn store(message: impl Into<String>) -> Error {
    Error::Store {
        backend: BACKEND,
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_name_the_missing_row() {
        let detail = "Key (org_id)=(42) is not present in table \"organizations\".";
        assert_eq!(between(detail, "Key (", ")="), Some("org_id"));
        assert_eq!(between(detail, ")=(", ")"), Some("42"));
        assert_eq!(between("", "Key (", ")="), None);
    }

    #[test]
    fn pool_problems_are_retryable() {
        assert!(from_sqlx(sqlx::Error::PoolTimedOut).is_retryable());
        assert!(!from_sqlx(sqlx::Error::RowNotFound).is_retryable());
    }
}
