//! What governors load into memory, and the change feed.
//!
//! The feed is safe to follow with `seq > last seen` although PostgreSQL
//! hands out sequence values before transactions commit: the trigger that
//! appends a change takes the write-log lock before drawing `seq` and
//! holds it to the end of the transaction (see migration 2), so changes
//! become visible in `seq` order and a reader never sees a later change
//! while an earlier one is still in flight. Taking a lock in the trigger
//! rather than in every reader keeps reads lock-free; an advisory lock
//! rather than `LOCK TABLE changes` leaves the table's own locks to
//! maintenance (vacuum, indexes) and shares one lock with the audit chain,
//! which every such transaction appends to anyway.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use ias_core::snapshot::{Change, ChangeEntity, KeyRecord, OrgPolicy, UserPolicy};
use ias_core::{CacheStore, KeyHash, KeyId, LimitScope, OrgId, RateLimits, Result, UserId};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use crate::limits::rate_limits;
use crate::org;
use crate::rows::{self, ORG_COLUMNS, conversion, optional_time};
use crate::store::{PostgresStore, all, optional};

/// A key whose user GitOps removed reads as revoked when the user was removed.
const KEY_RECORD_COLUMNS: &str = "k.id, k.user_id, k.org_id, k.key_hash, k.expires_at, \
     COALESCE(k.revoked_at, u.removed_at), r.rpm, r.tpm";

fn key_record(row: &PgRow) -> sqlx::Result<KeyRecord> {
    let hash: Vec<u8> = row.try_get(3)?;
    let hash: [u8; 32] = hash
        .try_into()
        .map_err(|_| conversion(3, "key hash is not 32 bytes"))?;
    Ok(KeyRecord {
        id: KeyId(row.try_get(0)?),
        user_id: UserId(row.try_get(1)?),
        org_id: OrgId(row.try_get(2)?),
        hash: KeyHash(hash),
        expires_at: optional_time(row, 4)?,
        revoked_at: optional_time(row, 5)?,
        rate_limits: RateLimits {
            rpm: row.try_get(6)?,
            tpm: row.try_get(7)?,
        },
    })
}

/// A page of keys for the cache: ids above `$1`, at most `$2`.
pub fn key_page_sql() -> String {
    key_sql("WHERE k.id > $1 ORDER BY k.id LIMIT $2")
}

/// A page of users for the cache: ids above `$1`, at most `$2`.
pub fn user_page_sql() -> String {
    user_sql("WHERE u.id > $1 ORDER BY u.id LIMIT $2")
}

/// The newest position of the change feed.
pub const CHANGE_SEQ: &str = "SELECT COALESCE(MAX(seq), 0) FROM changes";

/// Up to `$2` changes after position `$1`, oldest first.
pub const CHANGES_SINCE: &str =
    "SELECT seq, entity, entity_id FROM changes WHERE seq > $1 ORDER BY seq LIMIT $2";

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

fn user_policy(row: &PgRow) -> sqlx::Result<UserPolicy> {
    Ok(UserPolicy {
        user: rows::user(row, 0)?,
        rate_limits: RateLimits {
            rpm: row.try_get(8)?,
            tpm: row.try_get(9)?,
        },
    })
}

fn change(row: &PgRow) -> sqlx::Result<(i64, String, i64)> {
    Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
}

async fn policy_of(conn: &mut PgConnection, org: ias_core::Organization) -> Result<OrgPolicy> {
    Ok(OrgPolicy {
        allowed_models: org::allowed_models(conn, org.id).await?,
        rate_limits: rate_limits(conn, LimitScope::Org, org.id.0).await?,
        org,
    })
}

/// Every organization's allowed models, sorted, by organization id.
async fn every_allowed_model(conn: &mut PgConnection) -> Result<HashMap<i64, Vec<String>>> {
    let query = sqlx::query("SELECT org_id, model FROM org_allowed_models ORDER BY org_id, model");
    let rows = all(conn, query, |row| {
        Ok((row.try_get::<i64, _>(0)?, row.try_get::<String, _>(1)?))
    })
    .await?;
    let mut models: HashMap<i64, Vec<String>> = HashMap::new();
    for (org, model) in rows {
        models.entry(org).or_default().push(model);
    }
    Ok(models)
}

/// Every organization's own rate limits, by organization id.
async fn every_org_rate_limit(conn: &mut PgConnection) -> Result<HashMap<i64, RateLimits>> {
    let query = sqlx::query("SELECT scope_id, rpm, tpm FROM rate_limits WHERE scope = 'org'");
    let rows = all(conn, query, |row| {
        let limits = RateLimits {
            rpm: row.try_get(1)?,
            tpm: row.try_get(2)?,
        };
        Ok((row.try_get::<i64, _>(0)?, limits))
    })
    .await?;
    Ok(rows.into_iter().collect())
}

#[async_trait]
impl CacheStore for PostgresStore {
    async fn change_seq(&self) -> Result<i64> {
        let query = sqlx::query(CHANGE_SEQ);
        let mut hot = self.hot().await?;
        let seq = optional(hot.conn()?, query, |row| row.try_get(0)).await;
        Ok(hot.check(seq)?.unwrap_or_default())
    }

    async fn changes_since(&self, after: i64, limit: u32) -> Result<Vec<Change>> {
        let query = sqlx::query(CHANGES_SINCE)
            .bind(after)
            .bind(i64::from(limit));
        let mut hot = self.hot().await?;
        let rows = all(hot.conn()?, query, change).await;
        let rows = hot.check(rows)?;
        Ok(rows
            .into_iter()
            .filter_map(|(seq, entity, id)| {
                ChangeEntity::parse(&entity).map(|entity| Change { seq, entity, id })
            })
            .collect())
    }

    async fn org_policies(&self) -> Result<Vec<OrgPolicy>> {
        let mut conn = self.conn().await?;
        let sql = format!("SELECT {ORG_COLUMNS} FROM organizations o ORDER BY o.id");
        let orgs = all(&mut conn, sqlx::query(&sql), |row| rows::org(row, 0)).await?;
        let mut models = every_allowed_model(&mut conn).await?;
        let mut limits = every_org_rate_limit(&mut conn).await?;
        Ok(orgs
            .into_iter()
            .map(|org| OrgPolicy {
                allowed_models: models.remove(&org.id.0).unwrap_or_default(),
                rate_limits: limits.remove(&org.id.0).unwrap_or_default(),
                org,
            })
            .collect())
    }

    async fn user_policies(&self, after: Option<UserId>, limit: u32) -> Result<Vec<UserPolicy>> {
        let sql = user_page_sql();
        let query = sqlx::query(&sql)
            .bind(after.map_or(0, |id| id.0))
            .bind(i64::from(limit));
        all(&mut *self.conn().await?, query, user_policy).await
    }

    async fn key_records(&self, after: Option<KeyId>, limit: u32) -> Result<Vec<KeyRecord>> {
        let sql = key_page_sql();
        let query = sqlx::query(&sql)
            .bind(after.map_or(0, |id| id.0))
            .bind(i64::from(limit));
        all(&mut *self.conn().await?, query, key_record).await
    }

    async fn org_policy(&self, id: OrgId) -> Result<Option<OrgPolicy>> {
        let mut conn = self.conn().await?;
        match org::by_id(&mut conn, id).await? {
            Some(org) => Ok(Some(policy_of(&mut conn, org).await?)),
            None => Ok(None),
        }
    }

    async fn user_policy(&self, id: UserId) -> Result<Option<UserPolicy>> {
        let sql = user_sql("WHERE u.id = $1");
        let query = sqlx::query(&sql).bind(id.0);
        optional(&mut *self.conn().await?, query, user_policy).await
    }

    async fn key_record(&self, id: KeyId) -> Result<Option<KeyRecord>> {
        let sql = key_sql("WHERE k.id = $1");
        let query = sqlx::query(&sql).bind(id.0);
        optional(&mut *self.conn().await?, query, key_record).await
    }

    /// Waits for a notice on `ias_changes` (see migration 5), or `timeout`.
    async fn wait_for_change(&self, seen: u64, timeout: Duration) -> Result<u64> {
        Ok(self.notices.wait(seen, timeout).await)
    }
}
