//! What governors load into memory, and the change feed.

use async_trait::async_trait;
use ias_core::snapshot::{Change, ChangeEntity, KeyRecord, OrgPolicy, UserPolicy};
use ias_core::{CacheStore, KeyHash, KeyId, LimitScope, OrgId, RateLimits, Result, UserId};
use rusqlite::{Connection, Row, params};

use crate::error::from_sqlite;
use crate::limits::rate_limits;
use crate::org;
use crate::rows::{self, ORG_COLUMNS};
use crate::store::{SqliteStore, optional_row};

/// A key whose user GitOps removed reads as revoked when the user was removed.
const KEY_RECORD_COLUMNS: &str = "k.id, k.user_id, k.org_id, k.key_hash, k.expires_at, \
     COALESCE(k.revoked_at, u.removed_at), r.rpm, r.tpm";

fn key_record(row: &Row<'_>) -> rusqlite::Result<KeyRecord> {
    let hash: Vec<u8> = row.get(3)?;
    let hash: [u8; 32] = hash.try_into().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            3,
            rusqlite::types::Type::Blob,
            "key hash is not 32 bytes".into(),
        )
    })?;
    let time = |idx: usize| -> rusqlite::Result<Option<chrono::DateTime<chrono::Utc>>> {
        Ok(row
            .get::<_, Option<i64>>(idx)?
            .and_then(chrono::DateTime::from_timestamp_millis))
    };
    Ok(KeyRecord {
        id: KeyId(row.get(0)?),
        user_id: UserId(row.get(1)?),
        org_id: OrgId(row.get(2)?),
        hash: KeyHash(hash),
        expires_at: time(4)?,
        revoked_at: time(5)?,
        rate_limits: RateLimits {
            rpm: row.get(6)?,
            tpm: row.get(7)?,
        },
    })
}

fn key_sql(filter: &str) -> String {
    format!(
        "SELECT {KEY_RECORD_COLUMNS} FROM api_keys k
         JOIN users u ON u.id = k.user_id
         LEFT JOIN rate_limits r ON r.scope = 'key' AND r.scope_id = k.id
         {filter}"
    )
}

/// The user columns for the cache. The hot path never reads a user's role,
/// so a role this build does not know (a custom role added as rows) is read
/// as `member` here instead of making the whole load fail.
const CACHED_USER_COLUMNS: &str = "u.id, u.org_id, u.email, \
     CASE WHEN u.role IN ('system_admin', 'org_admin', 'member') THEN u.role ELSE 'member' END, \
     u.monthly_token_limit, u.managed_by, u.created_at, u.removed_at";

fn user_sql(filter: &str) -> String {
    format!(
        "SELECT {CACHED_USER_COLUMNS}, r.rpm, r.tpm FROM users u
         LEFT JOIN rate_limits r ON r.scope = 'user' AND r.scope_id = u.id
         {filter}"
    )
}

fn user_policy(row: &Row<'_>) -> rusqlite::Result<UserPolicy> {
    Ok(UserPolicy {
        user: rows::user(row, 0)?,
        rate_limits: RateLimits {
            rpm: row.get(8)?,
            tpm: row.get(9)?,
        },
    })
}

fn org_policy(conn: &Connection, id: OrgId) -> Result<Option<OrgPolicy>> {
    let Some(org) = org::by_id(conn, id)? else {
        return Ok(None);
    };
    Ok(Some(OrgPolicy {
        allowed_models: org::allowed_models(conn, org.id)?,
        rate_limits: rate_limits(conn, LimitScope::Org, org.id.0)?,
        org,
    }))
}

fn collect<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql).map_err(from_sqlite)?;
    let rows = stmt.query_map(params, map).map_err(from_sqlite)?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .map_err(from_sqlite)
}

#[async_trait]
impl CacheStore for SqliteStore {
    async fn change_seq(&self) -> Result<i64> {
        self.run(|conn| {
            optional_row(
                conn,
                "SELECT COALESCE(MAX(seq), 0) FROM changes",
                [],
                |row| row.get(0),
            )
            .map(Option::unwrap_or_default)
        })
        .await
    }

    async fn changes_since(&self, after: i64, limit: u32) -> Result<Vec<Change>> {
        self.run(move |conn| {
            let rows = collect(
                conn,
                "SELECT seq, entity, entity_id FROM changes WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                params![after, limit],
                |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get(2)?)),
            )?;
            Ok(rows
                .into_iter()
                .filter_map(|(seq, entity, id)| {
                    ChangeEntity::parse(&entity).map(|entity| Change { seq, entity, id })
                })
                .collect())
        })
        .await
    }

    async fn org_policies(&self) -> Result<Vec<OrgPolicy>> {
        self.run(|conn| {
            let sql = format!("SELECT {ORG_COLUMNS} FROM organizations o ORDER BY o.id");
            let orgs = collect(conn, &sql, [], |row| rows::org(row, 0))?;
            let mut policies = Vec::with_capacity(orgs.len());
            for org in orgs {
                policies.push(OrgPolicy {
                    allowed_models: org::allowed_models(conn, org.id)?,
                    rate_limits: rate_limits(conn, LimitScope::Org, org.id.0)?,
                    org,
                });
            }
            Ok(policies)
        })
        .await
    }

    async fn user_policies(&self, after: Option<UserId>, limit: u32) -> Result<Vec<UserPolicy>> {
        let after = after.map_or(0, |id| id.0);
        self.run(move |conn| {
            let sql = user_sql("WHERE u.id > ?1 ORDER BY u.id LIMIT ?2");
            collect(conn, &sql, params![after, limit], user_policy)
        })
        .await
    }

    async fn key_records(&self, after: Option<KeyId>, limit: u32) -> Result<Vec<KeyRecord>> {
        let after = after.map_or(0, |id| id.0);
        self.run(move |conn| {
            let sql = key_sql("WHERE k.id > ?1 ORDER BY k.id LIMIT ?2");
            collect(conn, &sql, params![after, limit], key_record)
        })
        .await
    }

    async fn org_policy(&self, id: OrgId) -> Result<Option<OrgPolicy>> {
        self.run(move |conn| org_policy(conn, id)).await
    }

    async fn user_policy(&self, id: UserId) -> Result<Option<UserPolicy>> {
        self.run(move |conn| optional_row(conn, &user_sql("WHERE u.id = ?1"), [id.0], user_policy))
            .await
    }

    async fn key_record(&self, id: KeyId) -> Result<Option<KeyRecord>> {
        self.run(move |conn| optional_row(conn, &key_sql("WHERE k.id = ?1"), [id.0], key_record))
            .await
    }
}
