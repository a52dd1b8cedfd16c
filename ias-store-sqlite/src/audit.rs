//! The hash-chained, append-only audit log.

use async_trait::async_trait;
use chrono::DateTime;
use ias_core::audit::AuditLink;
use ias_core::{AuditEntry, AuditFilter, AuditRecord, AuditStore, OrgId, Result, Source};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::error::from_sqlite;
use crate::rows::millis;
use crate::store::{SqliteStore, write};

/// Appends `record` to the chain; call inside the transaction of the change it records.
pub(crate) fn append(
    conn: &Connection,
    record: &AuditRecord,
    target_id: Option<i64>,
) -> rusqlite::Result<AuditEntry> {
    let last: Option<(i64, String)> = conn
        .query_row(
            "SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    let entry = AuditEntry::next(last, record, target_id)
        .ok_or(rusqlite::Error::IntegralValueOutOfRange(0, i64::MAX))?;
    let stored = &entry.record;
    conn.execute(
        "INSERT INTO audit_log
           (id, at, actor, source, action, org_id, target, target_id, changes, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            entry.id,
            millis(stored.at),
            stored.actor,
            stored.source.as_str(),
            stored.action,
            stored.org_id.map(|o| o.0),
            stored.target,
            entry.target_id,
            stored.changes.to_string(),
            entry.prev_hash,
            entry.hash,
        ],
    )?;
    Ok(entry)
}

fn entry(row: &Row<'_>) -> rusqlite::Result<AuditEntry> {
    let bad = |idx: usize, what: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            rusqlite::types::Type::Text,
            what.to_owned().into(),
        )
    };
    let source =
        Source::parse(&row.get::<_, String>(3)?).ok_or_else(|| bad(3, "unknown audit source"))?;
    let changes: String = row.get(8)?;
    Ok(AuditEntry {
        id: row.get(0)?,
        record: AuditRecord {
            at: DateTime::from_timestamp_millis(row.get(1)?)
                .ok_or_else(|| bad(1, "timestamp out of range"))?,
            actor: row.get(2)?,
            source,
            action: row.get(4)?,
            org_id: row.get::<_, Option<i64>>(5)?.map(OrgId),
            target: row.get(6)?,
            changes: serde_json::from_str(&changes).map_err(|_| bad(8, "changes is not JSON"))?,
        },
        target_id: row.get(7)?,
        prev_hash: row.get(9)?,
        hash: row.get(10)?,
    })
}

const ENTRY_COLUMNS: &str =
    "id, at, actor, source, action, org_id, target, target_id, changes, prev_hash, hash";

/// A row read for verification: its id, and its fields unless they cannot be read.
fn link(row: &Row<'_>) -> rusqlite::Result<AuditLink> {
    let id: i64 = row.get(0)?;
    let stored: Option<String> = row.get(8).ok();
    let fields = entry(row).map_err(|e| e.to_string());
    Ok(AuditLink::from_stored(id, fields, stored.as_deref()))
}

/// The statement reading a page of entries, newest first, below id `?4`.
///
/// Only the filters given are in it (organization `?1`, time `?2`, action
/// `?3`), so that each combination reads through its index; every
/// statement takes all five arguments.
fn search_sql(org: bool, since: bool, action: bool) -> String {
    let mut sql = format!("SELECT {ENTRY_COLUMNS} FROM audit_log WHERE id < ?4");
    for (wanted, filter) in [
        (org, " AND org_id = ?1"),
        (since, " AND at >= ?2"),
        (action, " AND action = ?3"),
    ] {
        if wanted {
            sql.push_str(filter);
        }
    }
    sql.push_str(" ORDER BY id DESC LIMIT ?5");
    sql
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn append_audit(&self, record: &AuditRecord) -> Result<AuditEntry> {
        let record = record.clone();
        self.run(move |conn| write(conn, |tx| append(tx, &record, None).map_err(from_sqlite)))
            .await
    }

    async fn search_audit(
        &self,
        org: Option<OrgId>,
        filter: &AuditFilter,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>> {
        let filter = filter.clone();
        self.run(move |conn| {
            let since = filter.since.map(millis);
            let sql = search_sql(org.is_some(), since.is_some(), filter.action.is_some());
            let mut stmt = conn.prepare_cached(&sql).map_err(from_sqlite)?;
            let before = before.unwrap_or(i64::MAX);
            let org = org.map(|o| o.0);
            let rows = stmt
                .query_map(params![org, since, filter.action, before, limit], entry)
                .map_err(from_sqlite)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(from_sqlite)
        })
        .await
    }

    async fn audit_chain(&self, after: i64, limit: u32) -> Result<Vec<AuditLink>> {
        self.run(move |conn| {
            let sql =
                format!("SELECT {ENTRY_COLUMNS} FROM audit_log WHERE id > ?1 ORDER BY id LIMIT ?2");
            let mut stmt = conn.prepare_cached(&sql).map_err(from_sqlite)?;
            let rows = stmt
                .query_map(params![after, limit], link)
                .map_err(from_sqlite)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(from_sqlite)
        })
        .await
    }
}
