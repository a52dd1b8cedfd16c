//! The hash-chained, append-only audit log.

use async_trait::async_trait;
use chrono::DateTime;
use ias_core::audit::AuditLink;
use ias_core::{AuditEntry, AuditFilter, AuditRecord, AuditStore, Error, OrgId, Result, Source};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use crate::rows::{conversion, millis};
use crate::store::{PostgresStore, all, commit, execute, optional};

/// The write-log lock, held until commit by every transaction that appends
/// to the audit chain or to the change feed: the bytes `ias:log_`.
///
/// INVARIANT: `ias_append_change` (migration 2) takes the same lock, by
/// its number, before it draws a change `seq`.
pub(crate) const LOG_LOCK: i64 = i64::from_be_bytes(*b"ias:log_");

/// The newest entry's id and hash, which the next entry continues.
pub const LAST_ENTRY: &str = "SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1";

/// Appends `record` to the chain; call inside the transaction of the change it records.
///
/// The lock makes appends take turns: the newest entry read here is the
/// newest committed one, and no other transaction can append until this
/// one ends, so the chain never forks and ids have no gaps.
pub(crate) async fn append(
    conn: &mut PgConnection,
    record: &AuditRecord,
    target_id: Option<i64>,
) -> Result<AuditEntry> {
    execute(
        conn,
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(LOG_LOCK),
    )
    .await?;
    let last = optional(conn, sqlx::query(LAST_ENTRY), |row| {
        Ok((row.try_get::<i64, _>(0)?, row.try_get::<String, _>(1)?))
    })
    .await?;
    let entry = AuditEntry::next(last, record, target_id).ok_or_else(|| Error::Store {
        backend: "postgres",
        message: "the audit log has no ids left".to_owned(),
    })?;
    let stored = &entry.record;
    let insert = sqlx::query(
        "INSERT INTO audit_log
           (id, at, actor, source, action, org_id, target, target_id, changes, prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(entry.id)
    .bind(millis(stored.at))
    .bind(&stored.actor)
    .bind(stored.source.as_str())
    .bind(&stored.action)
    .bind(stored.org_id.map(|o| o.0))
    .bind(&stored.target)
    .bind(entry.target_id)
    .bind(stored.changes.to_string())
    .bind(&entry.prev_hash)
    .bind(&entry.hash);
    execute(conn, insert).await?;
    Ok(entry)
}

fn entry(row: &PgRow) -> sqlx::Result<AuditEntry> {
    let source = Source::parse(&row.try_get::<String, _>(3)?)
        .ok_or_else(|| conversion(3, "unknown audit source"))?;
    let changes: String = row.try_get(8)?;
    Ok(AuditEntry {
        id: row.try_get(0)?,
        record: AuditRecord {
            at: DateTime::from_timestamp_millis(row.try_get(1)?)
                .ok_or_else(|| conversion(1, "timestamp out of range"))?,
            actor: row.try_get(2)?,
            source,
            action: row.try_get(4)?,
            org_id: row.try_get::<Option<i64>, _>(5)?.map(OrgId),
            target: row.try_get(6)?,
            changes: serde_json::from_str(&changes)
                .map_err(|_| conversion(8, "changes is not JSON"))?,
        },
        target_id: row.try_get(7)?,
        prev_hash: row.try_get(9)?,
        hash: row.try_get(10)?,
    })
}

const ENTRY_COLUMNS: &str =
    "id, at, actor, source, action, org_id, target, target_id, changes, prev_hash, hash";

/// The statement reading a page of entries, newest first: ids below `$1`,
/// at most `$2`, then one argument per filter given, in this order:
/// organization, earliest time, action.
///
/// Only the filters given are in it, so that each combination reads
/// through its index instead of testing arguments for `NULL`.
pub fn search_sql(org: bool, since: bool, action: bool) -> String {
    let mut sql = format!("SELECT {ENTRY_COLUMNS} FROM audit_log WHERE id < $1");
    let mut n = 2;
    for (wanted, test) in [(org, "org_id ="), (since, "at >="), (action, "action =")] {
        if wanted {
            n += 1;
            sql.push_str(&format!(" AND {test} ${n}"));
        }
    }
    sql.push_str(" ORDER BY id DESC LIMIT $2");
    sql
}

/// A row read for verification: its id, and its fields unless they cannot be read.
fn link(row: &PgRow) -> sqlx::Result<AuditLink> {
    let id: i64 = row.try_get(0)?;
    let stored: Option<String> = row.try_get(8).ok();
    let fields = entry(row).map_err(|e| e.to_string());
    Ok(AuditLink::from_stored(id, fields, stored.as_deref()))
}

#[async_trait]
impl AuditStore for PostgresStore {
    async fn append_audit(&self, record: &AuditRecord) -> Result<AuditEntry> {
        let mut tx = self.begin().await?;
        let entry = append(&mut tx, record, None).await?;
        commit(tx).await?;
        Ok(entry)
    }

    async fn search_audit(
        &self,
        org: Option<OrgId>,
        filter: &AuditFilter,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>> {
        let since = filter.since.map(millis);
        let action = filter.action.as_deref();
        let sql = search_sql(org.is_some(), since.is_some(), action.is_some());
        let mut query = sqlx::query(&sql)
            .bind(before.unwrap_or(i64::MAX))
            .bind(i64::from(limit));
        if let Some(org) = org {
            query = query.bind(org.0);
        }
        if let Some(since) = since {
            query = query.bind(since);
        }
        if let Some(action) = action {
            query = query.bind(action);
        }
        all(&mut *self.conn().await?, query, entry).await
    }

    async fn audit_chain(&self, after: i64, limit: u32) -> Result<Vec<AuditLink>> {
        let sql =
            format!("SELECT {ENTRY_COLUMNS} FROM audit_log WHERE id > $1 ORDER BY id LIMIT $2");
        let query = sqlx::query(&sql).bind(after).bind(i64::from(limit));
        all(&mut *self.conn().await?, query, link).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_change_feed_takes_the_write_log_lock() {
        let feed = crate::migrate::MIGRATIONS[1].sql;
        assert!(
            feed.contains(&format!("pg_advisory_xact_lock({LOG_LOCK})")),
            "migration 2 must lock {LOG_LOCK}"
        );
    }
}
