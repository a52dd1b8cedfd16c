//! Row mapping: SQLite values to core types.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use ias_core::{ApiKey, KeyId, ManagedBy, OrgId, Organization, Role, User, UserId};
use rusqlite::Row;
use rusqlite::types::Type;

/// The columns read by [`org`], in order, for `organizations o`.
pub(crate) const ORG_COLUMNS: &str =
    "o.id, o.slug, o.monthly_token_budget, o.timezone, o.managed_by, o.created_at";

/// The columns read by [`user`], in order, for `users u`.
pub(crate) const USER_COLUMNS: &str = "u.id, u.org_id, u.email, u.role, u.monthly_token_limit, u.managed_by, u.created_at, \
     u.removed_at";

/// The columns read by [`key`], in order, for `api_keys k`.
pub(crate) const KEY_COLUMNS: &str =
    "k.id, k.user_id, k.org_id, k.prefix, k.created_at, k.expires_at, k.revoked_at";

/// Milliseconds since the Unix epoch.
pub(crate) fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

fn time(row: &Row<'_>, idx: usize) -> rusqlite::Result<DateTime<Utc>> {
    let ms: i64 = row.get(idx)?;
    DateTime::from_timestamp_millis(ms).ok_or_else(|| conversion(idx, "timestamp out of range"))
}

fn optional_time(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<DateTime<Utc>>> {
    match row.get::<_, Option<i64>>(idx)? {
        None => Ok(None),
        Some(_) => time(row, idx).map(Some),
    }
}

fn parsed<T: std::str::FromStr>(row: &Row<'_>, idx: usize) -> rusqlite::Result<T> {
    let text: String = row.get(idx)?;
    text.parse()
        .map_err(|_| conversion(idx, "unexpected value in column"))
}

fn conversion(idx: usize, message: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, message.to_owned().into())
}

/// Reads an organization starting at column `at`.
pub(crate) fn org(row: &Row<'_>, at: usize) -> rusqlite::Result<Organization> {
    Ok(Organization {
        id: OrgId(row.get(at)?),
        slug: row.get(at + 1)?,
        monthly_token_budget: row.get(at + 2)?,
        timezone: parsed::<Tz>(row, at + 3)?,
        managed_by: parsed::<ManagedBy>(row, at + 4)?,
        created_at: time(row, at + 5)?,
    })
}

/// Reads a user starting at column `at`.
pub(crate) fn user(row: &Row<'_>, at: usize) -> rusqlite::Result<User> {
    Ok(User {
        id: UserId(row.get(at)?),
        org_id: OrgId(row.get(at + 1)?),
        email: row.get(at + 2)?,
        role: parsed::<Role>(row, at + 3)?,
        monthly_token_limit: row.get(at + 4)?,
        managed_by: parsed::<ManagedBy>(row, at + 5)?,
        created_at: time(row, at + 6)?,
        removed_at: optional_time(row, at + 7)?,
    })
}

/// Reads an API key starting at column `at`.
pub(crate) fn key(row: &Row<'_>, at: usize) -> rusqlite::Result<ApiKey> {
    Ok(ApiKey {
        id: KeyId(row.get(at)?),
        user_id: UserId(row.get(at + 1)?),
        org_id: OrgId(row.get(at + 2)?),
        prefix: row.get(at + 3)?,
        created_at: time(row, at + 4)?,
        expires_at: optional_time(row, at + 5)?,
        revoked_at: optional_time(row, at + 6)?,
    })
}
