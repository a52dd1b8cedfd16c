//! Row mapping: PostgreSQL values to core types.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use ias_core::{ApiKey, KeyId, ManagedBy, OrgId, Organization, Role, User, UserId};
use sqlx::Row;
use sqlx::postgres::PgRow;

/// The columns read by [`org`], in order, for `organizations o`.
pub(crate) const ORG_COLUMNS: &str =
    "o.id, o.slug, o.monthly_token_budget, o.timezone, o.managed_by, o.created_at";

/// The columns read by [`user`], in order, for `users u`.
pub(crate) const USER_COLUMNS: &str = "u.id, u.org_id, u.email, u.role, u.monthly_token_limit, \
     u.managed_by, u.created_at, u.removed_at";

/// The columns read by [`key`], in order, for `api_keys k`.
pub(crate) const KEY_COLUMNS: &str =
    "k.id, k.user_id, k.org_id, k.prefix, k.created_at, k.expires_at, k.revoked_at";

/// Milliseconds since the Unix epoch.
pub(crate) fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

/// Reads a time stored as Unix milliseconds.
pub(crate) fn time(row: &PgRow, idx: usize) -> sqlx::Result<DateTime<Utc>> {
    let ms: i64 = row.try_get(idx)?;
    DateTime::from_timestamp_millis(ms).ok_or_else(|| conversion(idx, "timestamp out of range"))
}

/// Reads a time stored as Unix milliseconds, or `NULL`.
pub(crate) fn optional_time(row: &PgRow, idx: usize) -> sqlx::Result<Option<DateTime<Utc>>> {
    match row.try_get::<Option<i64>, _>(idx)? {
        None => Ok(None),
        Some(_) => time(row, idx).map(Some),
    }
}

/// Reads a text column through `FromStr`.
pub(crate) fn parsed<T: std::str::FromStr>(row: &PgRow, idx: usize) -> sqlx::Result<T> {
    let text: String = row.try_get(idx)?;
    text.parse()
        .map_err(|_| conversion(idx, "unexpected value in column"))
}

/// A value that was read but does not fit its type.
pub(crate) fn conversion(idx: usize, message: &str) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: idx.to_string(),
        source: message.to_owned().into(),
    }
}

/// Reads an organization starting at column `at`.
pub(crate) fn org(row: &PgRow, at: usize) -> sqlx::Result<Organization> {
    Ok(Organization {
        id: OrgId(row.try_get(at)?),
        slug: row.try_get(at + 1)?,
        monthly_token_budget: row.try_get(at + 2)?,
        timezone: parsed::<Tz>(row, at + 3)?,
        managed_by: parsed::<ManagedBy>(row, at + 4)?,
        created_at: time(row, at + 5)?,
    })
}

/// Reads a user starting at column `at`.
pub(crate) fn user(row: &PgRow, at: usize) -> sqlx::Result<User> {
    Ok(User {
        id: UserId(row.try_get(at)?),
        org_id: OrgId(row.try_get(at + 1)?),
        email: row.try_get(at + 2)?,
        role: parsed::<Role>(row, at + 3)?,
        monthly_token_limit: row.try_get(at + 4)?,
        managed_by: parsed::<ManagedBy>(row, at + 5)?,
        created_at: time(row, at + 6)?,
        removed_at: optional_time(row, at + 7)?,
    })
}

/// Reads an API key starting at column `at`.
pub(crate) fn key(row: &PgRow, at: usize) -> sqlx::Result<ApiKey> {
    Ok(ApiKey {
        id: KeyId(row.try_get(at)?),
        user_id: UserId(row.try_get(at + 1)?),
        org_id: OrgId(row.try_get(at + 2)?),
        prefix: row.try_get(at + 3)?,
        created_at: time(row, at + 4)?,
        expires_at: optional_time(row, at + 5)?,
        revoked_at: optional_time(row, at + 6)?,
    })
}
