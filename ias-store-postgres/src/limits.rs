//! Rate limits per organization, user and key.

use async_trait::async_trait;
use ias_core::{AuditRecord, Error, LimitScope, RateLimitStore, RateLimits, Result};
use sqlx::{PgConnection, Row};

use crate::audit;
use crate::rows::millis;
use crate::store::{PostgresStore, commit, execute, optional};

/// One scope's rate limits; none when no row is set.
pub(crate) async fn rate_limits(
    conn: &mut PgConnection,
    scope: LimitScope,
    id: i64,
) -> Result<RateLimits> {
    let query = sqlx::query("SELECT rpm, tpm FROM rate_limits WHERE scope = $1 AND scope_id = $2")
        .bind(scope.as_str())
        .bind(id);
    let found = optional(conn, query, |row| {
        Ok(RateLimits {
            rpm: row.try_get(0)?,
            tpm: row.try_get(1)?,
        })
    })
    .await?;
    Ok(found.unwrap_or_default())
}

/// Locks the limited row, so that concurrent changes of its limits take
/// turns and each sees what the one before wrote; `false` if it does not exist.
///
/// `FOR NO KEY UPDATE` does not block the foreign-key checks of usage writes.
async fn lock_scope(conn: &mut PgConnection, scope: LimitScope, id: i64) -> Result<bool> {
    let sql = match scope {
        LimitScope::Org => "SELECT 1 FROM organizations WHERE id = $1 FOR NO KEY UPDATE",
        LimitScope::User => "SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE",
        LimitScope::Key => "SELECT 1 FROM api_keys WHERE id = $1 FOR NO KEY UPDATE",
    };
    Ok(optional(conn, sqlx::query(sql).bind(id), |_| Ok(()))
        .await?
        .is_some())
}

/// Sets one scope's limits without checks or audit: deletes the row for `RateLimits::NONE`.
pub(crate) async fn store_limits(
    conn: &mut PgConnection,
    scope: LimitScope,
    id: i64,
    limits: RateLimits,
    at: i64,
) -> Result<()> {
    let query = if limits.is_none() {
        sqlx::query("DELETE FROM rate_limits WHERE scope = $1 AND scope_id = $2")
            .bind(scope.as_str())
            .bind(id)
    } else {
        sqlx::query(
            "INSERT INTO rate_limits (scope, scope_id, rpm, tpm, updated_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (scope, scope_id)
             DO UPDATE SET rpm = excluded.rpm, tpm = excluded.tpm, updated_at = excluded.updated_at",
        )
        .bind(scope.as_str())
        .bind(id)
        .bind(limits.rpm)
        .bind(limits.tpm)
        .bind(at)
    };
    execute(conn, query).await?;
    Ok(())
}

#[async_trait]
impl RateLimitStore for PostgresStore {
    async fn set_rate_limits(
        &self,
        scope: LimitScope,
        id: i64,
        limits: RateLimits,
        record: &AuditRecord,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        if !lock_scope(&mut tx, scope, id).await? {
            return Err(Error::not_found(scope.as_str(), id.to_string()));
        }
        if rate_limits(&mut tx, scope, id).await? == limits {
            return Ok(false);
        }
        store_limits(&mut tx, scope, id, limits, millis(record.at)).await?;
        audit::append(&mut tx, record, Some(id)).await?;
        commit(tx).await?;
        Ok(true)
    }

    async fn rate_limits(&self, scope: LimitScope, id: i64) -> Result<RateLimits> {
        rate_limits(&mut *self.conn().await?, scope, id).await
    }
}
