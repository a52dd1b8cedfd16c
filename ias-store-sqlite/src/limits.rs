//! Rate limits per organization, user and key.

use async_trait::async_trait;
use ias_core::{AuditRecord, Error, LimitScope, RateLimitStore, RateLimits, Result};
use rusqlite::{Connection, params};

use crate::audit;
use crate::error::from_sqlite;
use crate::rows::millis;
use crate::store::{SqliteStore, optional_row, write};

/// One scope's rate limits; none when no row is set.
pub(crate) fn rate_limits(conn: &Connection, scope: LimitScope, id: i64) -> Result<RateLimits> {
    let found = optional_row(
        conn,
        "SELECT rpm, tpm FROM rate_limits WHERE scope = ?1 AND scope_id = ?2",
        params![scope.as_str(), id],
        |row| {
            Ok(RateLimits {
                rpm: row.get(0)?,
                tpm: row.get(1)?,
            })
        },
    )?;
    Ok(found.unwrap_or_default())
}

fn scope_exists(conn: &Connection, scope: LimitScope, id: i64) -> Result<bool> {
    let sql = match scope {
        LimitScope::Org => "SELECT 1 FROM organizations WHERE id = ?1",
        LimitScope::User => "SELECT 1 FROM users WHERE id = ?1",
        LimitScope::Key => "SELECT 1 FROM api_keys WHERE id = ?1",
    };
    Ok(optional_row(conn, sql, [id], |_| Ok(()))?.is_some())
}

pub(crate) fn store_limits(
    conn: &Connection,
    scope: LimitScope,
    id: i64,
    limits: RateLimits,
    at: i64,
) -> Result<()> {
    if limits.is_none() {
        conn.execute(
            "DELETE FROM rate_limits WHERE scope = ?1 AND scope_id = ?2",
            params![scope.as_str(), id],
        )
        .map_err(from_sqlite)?;
        return Ok(());
    }
    conn.execute(
        "INSERT INTO rate_limits (scope, scope_id, rpm, tpm, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (scope, scope_id)
         DO UPDATE SET rpm = excluded.rpm, tpm = excluded.tpm, updated_at = excluded.updated_at",
        params![scope.as_str(), id, limits.rpm, limits.tpm, at],
    )
    .map_err(from_sqlite)?;
    Ok(())
}

#[async_trait]
impl RateLimitStore for SqliteStore {
    async fn set_rate_limits(
        &self,
        scope: LimitScope,
        id: i64,
        limits: RateLimits,
        record: &AuditRecord,
    ) -> Result<bool> {
        let record = record.clone();
        self.run(move |conn| {
            write(conn, |tx| {
                if !scope_exists(tx, scope, id)? {
                    return Err(Error::not_found(scope.as_str(), id.to_string()));
                }
                if rate_limits(tx, scope, id)? == limits {
                    return Ok(false);
                }
                store_limits(tx, scope, id, limits, millis(record.at))?;
                audit::append(tx, &record, Some(id)).map_err(from_sqlite)?;
                Ok(true)
            })
        })
        .await
    }

    async fn rate_limits(&self, scope: LimitScope, id: i64) -> Result<RateLimits> {
        self.run(move |conn| rate_limits(conn, scope, id)).await
    }
}
