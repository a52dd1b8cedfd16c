//! API keys: stored hashed; the governor caches them by hash.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ias_core::{ApiKey, AuditRecord, Error, KeyId, KeyStore, Result, UserId, domain::NewApiKey};
use sqlx::PgConnection;

use crate::audit;
use crate::error::unique_or;
use crate::rows::{self, KEY_COLUMNS, millis};
use crate::store::{PostgresStore, all, commit, execute, optional};

/// The statement of [`KeyStore::key_by_id`].
pub fn by_id_sql() -> String {
    format!("SELECT {KEY_COLUMNS} FROM api_keys k WHERE k.id = $1")
}

/// A page of a user's (`$1`) keys, newest first: ids below `$2`, at most `$3`.
pub fn list_sql() -> String {
    format!(
        "SELECT {KEY_COLUMNS} FROM api_keys k
         WHERE k.user_id = $1 AND k.id < $2 ORDER BY k.id DESC LIMIT $3"
    )
}

async fn by_id(conn: &mut PgConnection, id: KeyId) -> Result<Option<ApiKey>> {
    let sql = by_id_sql();
    optional(conn, sqlx::query(&sql).bind(id.0), |row| rows::key(row, 0)).await
}

async fn insert(conn: &mut PgConnection, key: &NewApiKey) -> Result<KeyId> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO api_keys (user_id, org_id, key_hash, prefix, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         RETURNING id",
    )
    .bind(key.user_id.0)
    .bind(key.org_id.0)
    .bind(&key.hash.0[..])
    .bind(&key.prefix)
    .bind(millis(key.created_at))
    .bind(key.expires_at.map(millis))
    .fetch_one(conn)
    .await
    .map_err(|e| unique_or(e, "key", &key.prefix))?;
    Ok(KeyId(id))
}

#[async_trait]
impl KeyStore for PostgresStore {
    async fn create_key(&self, key: &NewApiKey, record: &AuditRecord) -> Result<ApiKey> {
        let mut tx = self.begin().await?;
        let id = insert(&mut tx, key).await?;
        audit::append(&mut tx, record, Some(id.0)).await?;
        let created = by_id(&mut tx, id)
            .await?
            .ok_or_else(|| Error::not_found("key", id.to_string()))?;
        commit(tx).await?;
        Ok(created)
    }

    async fn key_by_id(&self, id: KeyId) -> Result<Option<ApiKey>> {
        by_id(&mut *self.conn().await?, id).await
    }

    async fn list_keys(
        &self,
        user: UserId,
        before: Option<KeyId>,
        limit: u32,
    ) -> Result<Vec<ApiKey>> {
        let sql = list_sql();
        let query = sqlx::query(&sql)
            .bind(user.0)
            .bind(before.map_or(i64::MAX, |id| id.0))
            .bind(i64::from(limit));
        all(&mut *self.conn().await?, query, |row| rows::key(row, 0)).await
    }

    async fn revoke_key(
        &self,
        id: KeyId,
        at: DateTime<Utc>,
        record: &AuditRecord,
    ) -> Result<ApiKey> {
        let mut tx = self.begin().await?;
        let revoke =
            sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                .bind(id.0)
                .bind(millis(at));
        if execute(&mut tx, revoke).await? == 0 {
            return match by_id(&mut tx, id).await? {
                Some(_) => Err(Error::conflict("key", id.to_string(), "is already revoked")),
                None => Err(Error::not_found("key", id.to_string())),
            };
        }
        audit::append(&mut tx, record, Some(id.0)).await?;
        let revoked = by_id(&mut tx, id)
            .await?
            .ok_or_else(|| Error::not_found("key", id.to_string()))?;
        commit(tx).await?;
        Ok(revoked)
    }
}
