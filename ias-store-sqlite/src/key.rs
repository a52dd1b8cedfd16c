//! API keys: stored hashed, looked up by hash on the hot path.

use std::sync::LazyLock;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ias_core::{
    ApiKey, AuditRecord, Error, KeyContext, KeyHash, KeyId, KeyStore, Result, UserId,
    domain::NewApiKey,
};
use rusqlite::{Connection, OptionalExtension, params};

use crate::audit;
use crate::error::{from_sqlite, unique_or};
use crate::org;
use crate::rows::{self, KEY_COLUMNS, ORG_COLUMNS, USER_COLUMNS, millis};
use crate::store::{SqliteStore, optional_row, write};

fn by_id(conn: &Connection, id: KeyId) -> Result<Option<ApiKey>> {
    let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys k WHERE k.id = ?1");
    conn.query_row(&sql, [id.0], |row| rows::key(row, 0))
        .optional()
        .map_err(from_sqlite)
}

/// The hot-path lookup, built once: a key with its owner and organization.
static CONTEXT_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {KEY_COLUMNS}, {USER_COLUMNS}, {ORG_COLUMNS}
         FROM api_keys k
         JOIN users u ON u.id = k.user_id
         JOIN organizations o ON o.id = k.org_id
         WHERE k.key_hash = ?1"
    )
});

fn context(conn: &Connection, hash: &KeyHash) -> Result<Option<KeyContext>> {
    let found = optional_row(conn, &CONTEXT_SQL, [&hash.0[..]], |row| {
        Ok((rows::key(row, 0)?, rows::user(row, 7)?, rows::org(row, 14)?))
    })?;
    let Some((key, user, org)) = found else {
        return Ok(None);
    };
    let allowed_models = org::allowed_models(conn, org.id)?;
    Ok(Some(KeyContext {
        key,
        user,
        org,
        allowed_models,
    }))
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

    async fn list_keys(&self, user: UserId) -> Result<Vec<ApiKey>> {
        self.run(move |conn| {
            let sql = format!(
                "SELECT {KEY_COLUMNS} FROM api_keys k WHERE k.user_id = ?1 ORDER BY k.id DESC"
            );
            let mut stmt = conn.prepare_cached(&sql).map_err(from_sqlite)?;
            let keys = stmt
                .query_map([user.0], |row| rows::key(row, 0))
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

    async fn key_context(&self, hash: &KeyHash) -> Result<Option<KeyContext>> {
        let hash = *hash;
        self.run(move |conn| context(conn, &hash)).await
    }
}
