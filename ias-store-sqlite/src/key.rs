//! API keys: stored hashed; the governor caches them by hash.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ias_core::{ApiKey, AuditRecord, Error, KeyId, KeyStore, Result, UserId, domain::NewApiKey};
use rusqlite::{Connection, OptionalExtension, params};

use crate::audit;
use crate::error::{from_sqlite, unique_or};
use crate::rows::{self, KEY_COLUMNS, millis};
use crate::store::{SqliteStore, write};

fn by_id(conn: &Connection, id: KeyId) -> Result<Option<ApiKey>> {
    let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys k WHERE k.id = ?1");
    conn.query_row(&sql, [id.0], |row| rows::key(row, 0))
        .optional()
        .map_err(from_sqlite)
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn create_key(&self, key: &NewApiKey, record: &AuditRecord) -> Result<ApiKey> {
        let (key, record) = (key.clone(), record.clone());
        self.run(move |conn| {
            write(conn, |tx| {
                tx.execute(
                    "INSERT INTO api_keys (user_id, org_id, key_hash, prefix, created_at, expires_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        key.user_id.0,
                        key.org_id.0,
                        &key.hash.0[..],
                        key.prefix,
                        millis(key.created_at),
                        key.expires_at.map(millis)
                    ],
                )
                .map_err(|e| unique_or(e, "key", &key.prefix))?;
                let id = KeyId(tx.last_insert_rowid());
                audit::append(tx, &record, Some(id.0)).map_err(from_sqlite)?;
                by_id(tx, id)?.ok_or_else(|| Error::not_found("key", id.to_string()))
            })
        })
        .await
    }

    async fn key_by_id(&self, id: KeyId) -> Result<Option<ApiKey>> {
        self.run(move |conn| by_id(conn, id)).await
    }

    async fn list_keys(
        &self,
        user: UserId,
        before: Option<KeyId>,
        limit: u32,
    ) -> Result<Vec<ApiKey>> {
        self.run(move |conn| {
            let sql = format!(
                "SELECT {KEY_COLUMNS} FROM api_keys k
                 WHERE k.user_id = ?1 AND k.id < ?2 ORDER BY k.id DESC LIMIT ?3"
            );
            let mut stmt = conn.prepare_cached(&sql).map_err(from_sqlite)?;
            let before = before.map_or(i64::MAX, |id| id.0);
            let keys = stmt
                .query_map(params![user.0, before, limit], |row| rows::key(row, 0))
                .map_err(from_sqlite)?;
            keys.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(from_sqlite)
        })
        .await
    }

    async fn revoke_key(
        &self,
        id: KeyId,
        at: DateTime<Utc>,
        record: &AuditRecord,
    ) -> Result<ApiKey> {
        let record = record.clone();
        self.run(move |conn| {
            write(conn, |tx| {
                let changed = tx
                    .execute(
                        "UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                        params![id.0, millis(at)],
                    )
                    .map_err(from_sqlite)?;
                if changed == 0 {
                    return match by_id(tx, id)? {
                        Some(_) => {
                            Err(Error::conflict("key", id.to_string(), "is already revoked"))
                        }
                        None => Err(Error::not_found("key", id.to_string())),
                    };
                }
                audit::append(tx, &record, Some(id.0)).map_err(from_sqlite)?;
                by_id(tx, id)?.ok_or_else(|| Error::not_found("key", id.to_string()))
            })
        })
        .await
    }
}
