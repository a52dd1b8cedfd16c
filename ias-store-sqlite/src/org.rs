//! Organizations and their allowed models.

use async_trait::async_trait;
use ias_core::{AuditRecord, Error, NewOrganization, OrgId, OrgStore, Organization, Result};
use rusqlite::{Connection, OptionalExtension, params};

use crate::audit;
use crate::error::{from_sqlite, unique_or};
use crate::rows::{self, ORG_COLUMNS, millis};
use crate::store::{SqliteStore, write};

/// Sets organization `?1`'s budget (`?2`), time zone (`?3`) and update time (`?4`).
pub(crate) const SET_BUDGET: &str = "UPDATE organizations
     SET monthly_token_budget = ?2, timezone = ?3, updated_at = ?4 WHERE id = ?1";

pub(crate) fn by_id(conn: &Connection, id: OrgId) -> Result<Option<Organization>> {
    let sql = format!("SELECT {ORG_COLUMNS} FROM organizations o WHERE o.id = ?1");
    conn.query_row(&sql, [id.0], |row| rows::org(row, 0))
        .optional()
        .map_err(from_sqlite)
}

#[async_trait]
impl OrgStore for SqliteStore {
    async fn create_org(
        &self,
        org: &NewOrganization,
        record: &AuditRecord,
    ) -> Result<Organization> {
        let (org, record) = (org.clone(), record.clone());
        self.run(move |conn| {
            write(conn, |tx| {
                let at = millis(org.created_at);
                tx.execute(
                    "INSERT INTO organizations
                       (slug, monthly_token_budget, timezone, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?4)",
                    params![org.slug, org.monthly_token_budget, org.timezone.name(), at],
                )
                .map_err(|e| unique_or(e, "organization", &org.slug))?;
                let id = OrgId(tx.last_insert_rowid());
                let mut record = record;
                record.org_id = Some(id);
                audit::append(tx, &record, Some(id.0)).map_err(from_sqlite)?;
                by_id(tx, id)?.ok_or_else(|| Error::not_found("organization", org.slug.clone()))
            })
        })
        .await
    }

    async fn org_by_slug(&self, slug: &str) -> Result<Option<Organization>> {
        let slug = slug.to_owned();
        self.run(move |conn| {
            let sql = format!("SELECT {ORG_COLUMNS} FROM organizations o WHERE o.slug = ?1");
            conn.query_row(&sql, [slug], |row| rows::org(row, 0))
                .optional()
                .map_err(from_sqlite)
        })
        .await
    }

    async fn list_orgs(&self, after: Option<OrgId>, limit: u32) -> Result<Vec<Organization>> {
        self.run(move |conn| {
            let sql = format!(
                "SELECT {ORG_COLUMNS} FROM organizations o WHERE o.id > ?1 ORDER BY o.id LIMIT ?2"
            );
            let mut stmt = conn.prepare_cached(&sql).map_err(from_sqlite)?;
            let after = after.map_or(0, |id| id.0);
            let orgs = stmt
                .query_map(params![after, limit], |row| rows::org(row, 0))
                .map_err(from_sqlite)?;
            orgs.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(from_sqlite)
        })
        .await
    }

    async fn set_org_budget(
        &self,
        org: OrgId,
        monthly_token_budget: i64,
        timezone: chrono_tz::Tz,
        record: &AuditRecord,
    ) -> Result<Organization> {
        let record = record.clone();
        self.run(move |conn| {
            write(conn, |tx| {
                let changed = tx
                    .execute(
                        SET_BUDGET,
                        params![
                            org.0,
                            monthly_token_budget,
                            timezone.name(),
                            millis(record.at)
                        ],
                    )
                    .map_err(from_sqlite)?;
                if changed == 0 {
                    return Err(Error::not_found("organization", org.to_string()));
                }
                audit::append(tx, &record, Some(org.0)).map_err(from_sqlite)?;
                by_id(tx, org)?.ok_or_else(|| Error::not_found("organization", org.to_string()))
            })
        })
        .await
    }

    async fn set_model_allowed(
        &self,
        org: OrgId,
        pattern: &str,
        allowed: bool,
        record: &AuditRecord,
    ) -> Result<bool> {
        let (pattern, record) = (pattern.to_owned(), record.clone());
        self.run(move |conn| {
            write(conn, |tx| {
                if by_id(tx, org)?.is_none() {
                    return Err(Error::not_found("organization", org.to_string()));
                }
                let changed = if allowed {
                    tx.execute(
                        "INSERT INTO org_allowed_models (org_id, model, created_at)
                         VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                        params![org.0, pattern, millis(record.at)],
                    )
                } else {
                    tx.execute(
                        "DELETE FROM org_allowed_models WHERE org_id = ?1 AND model = ?2",
                        params![org.0, pattern],
                    )
                }
                .map_err(from_sqlite)?;
                if changed > 0 {
                    audit::append(tx, &record, Some(org.0)).map_err(from_sqlite)?;
                }
                Ok(changed > 0)
            })
        })
        .await
    }

    async fn allowed_models(
        &self,
        org: OrgId,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>> {
        // Every model name sorts after the empty string.
        let after = after.unwrap_or_default().to_owned();
        self.run(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT model FROM org_allowed_models
                     WHERE org_id = ?1 AND model > ?2 ORDER BY model LIMIT ?3",
                )
                .map_err(from_sqlite)?;
            let models = stmt
                .query_map(params![org.0, after, limit], |row| row.get(0))
                .map_err(from_sqlite)?;
            models
                .collect::<rusqlite::Result<Vec<String>>>()
                .map_err(from_sqlite)
        })
        .await
    }
}

pub(crate) fn allowed_models(conn: &Connection, org: OrgId) -> Result<Vec<String>> {
    let mut stmt = conn
        .prepare_cached("SELECT model FROM org_allowed_models WHERE org_id = ?1 ORDER BY model")
        .map_err(from_sqlite)?;
    let models = stmt
        .query_map([org.0], |row| row.get(0))
        .map_err(from_sqlite)?;
    models
        .collect::<rusqlite::Result<Vec<String>>>()
        .map_err(from_sqlite)
}
