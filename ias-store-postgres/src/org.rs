//! Organizations and their allowed models.

use async_trait::async_trait;
use ias_core::{AuditRecord, Error, NewOrganization, OrgId, OrgStore, Organization, Result};
use sqlx::{PgConnection, Row};

use crate::audit;
use crate::error::unique_or;
use crate::rows::{self, ORG_COLUMNS, millis};
use crate::store::{PostgresStore, all, commit, execute, optional};

pub(crate) async fn by_id(conn: &mut PgConnection, id: OrgId) -> Result<Option<Organization>> {
    let sql = format!("SELECT {ORG_COLUMNS} FROM organizations o WHERE o.id = $1");
    optional(conn, sqlx::query(&sql).bind(id.0), |row| rows::org(row, 0)).await
}

/// The statement of [`OrgStore::org_by_slug`].
pub fn by_slug_sql() -> String {
    format!("SELECT {ORG_COLUMNS} FROM organizations o WHERE o.slug = $1")
}

/// Sets organization `$1`'s budget (`$2`), time zone (`$3`) and update time (`$4`).
pub(crate) const SET_BUDGET: &str = "UPDATE organizations
     SET monthly_token_budget = $2, timezone = $3, updated_at = $4 WHERE id = $1";

/// A page of organizations: ids above `$1`, at most `$2`.
pub fn list_sql() -> String {
    format!("SELECT {ORG_COLUMNS} FROM organizations o WHERE o.id > $1 ORDER BY o.id LIMIT $2")
}

/// A page of an organization's (`$1`) allowed models: names after `$2`, at most `$3`.
pub const LIST_MODELS: &str = "SELECT model FROM org_allowed_models
     WHERE org_id = $1 AND model > $2 ORDER BY model LIMIT $3";

pub(crate) async fn allowed_models(conn: &mut PgConnection, org: OrgId) -> Result<Vec<String>> {
    let query =
        sqlx::query("SELECT model FROM org_allowed_models WHERE org_id = $1 ORDER BY model")
            .bind(org.0);
    all(conn, query, |row| row.try_get(0)).await
}

async fn insert(conn: &mut PgConnection, org: &NewOrganization) -> Result<OrgId> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO organizations
           (slug, monthly_token_budget, timezone, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $4)
         RETURNING id",
    )
    .bind(&org.slug)
    .bind(org.monthly_token_budget)
    .bind(org.timezone.name())
    .bind(millis(org.created_at))
    .fetch_one(conn)
    .await
    .map_err(|e| unique_or(e, "organization", &org.slug))?;
    Ok(OrgId(id))
}

#[async_trait]
impl OrgStore for PostgresStore {
    async fn create_org(
        &self,
        org: &NewOrganization,
        record: &AuditRecord,
    ) -> Result<Organization> {
        let mut tx = self.begin().await?;
        let id = insert(&mut tx, org).await?;
        let mut record = record.clone();
        record.org_id = Some(id);
        audit::append(&mut tx, &record, Some(id.0)).await?;
        let created = by_id(&mut tx, id)
            .await?
            .ok_or_else(|| Error::not_found("organization", org.slug.clone()))?;
        commit(tx).await?;
        Ok(created)
    }

    async fn org_by_slug(&self, slug: &str) -> Result<Option<Organization>> {
        let sql = by_slug_sql();
        let query = sqlx::query(&sql).bind(slug);
        optional(&mut *self.conn().await?, query, |row| rows::org(row, 0)).await
    }

    async fn list_orgs(&self, after: Option<OrgId>, limit: u32) -> Result<Vec<Organization>> {
        let sql = list_sql();
        let query = sqlx::query(&sql)
            .bind(after.map_or(0, |id| id.0))
            .bind(i64::from(limit));
        all(&mut *self.conn().await?, query, |row| rows::org(row, 0)).await
    }

    async fn set_org_budget(
        &self,
        org: OrgId,
        monthly_token_budget: i64,
        timezone: chrono_tz::Tz,
        record: &AuditRecord,
    ) -> Result<Organization> {
        let mut tx = self.begin().await?;
        let change = sqlx::query(SET_BUDGET)
            .bind(org.0)
            .bind(monthly_token_budget)
            .bind(timezone.name())
            .bind(millis(record.at));
        if execute(&mut tx, change).await? == 0 {
            return Err(Error::not_found("organization", org.to_string()));
        }
        audit::append(&mut tx, record, Some(org.0)).await?;
        let updated = by_id(&mut tx, org)
            .await?
            .ok_or_else(|| Error::not_found("organization", org.to_string()))?;
        commit(tx).await?;
        Ok(updated)
    }

    async fn set_model_allowed(
        &self,
        org: OrgId,
        pattern: &str,
        allowed: bool,
        record: &AuditRecord,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        if by_id(&mut tx, org).await?.is_none() {
            return Err(Error::not_found("organization", org.to_string()));
        }
        let change = if allowed {
            sqlx::query(
                "INSERT INTO org_allowed_models (org_id, model, created_at)
                 VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(org.0)
            .bind(pattern)
            .bind(millis(record.at))
        } else {
            sqlx::query("DELETE FROM org_allowed_models WHERE org_id = $1 AND model = $2")
                .bind(org.0)
                .bind(pattern)
        };
        let changed = execute(&mut tx, change).await? > 0;
        if changed {
            audit::append(&mut tx, record, Some(org.0)).await?;
            commit(tx).await?;
        }
        Ok(changed)
    }

    async fn allowed_models(
        &self,
        org: OrgId,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>> {
        // Every model name sorts after the empty string.
        let query = sqlx::query(LIST_MODELS)
            .bind(org.0)
            .bind(after.unwrap_or_default())
            .bind(i64::from(limit));
        all(&mut *self.conn().await?, query, |row| row.try_get(0)).await
    }
}
