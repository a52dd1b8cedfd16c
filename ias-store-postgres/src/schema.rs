//! Roles, permissions and the schema version.

use async_trait::async_trait;
use ias_core::{Grant, Result, SchemaStore};
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::store::{PostgresStore, all, optional};

fn grant(row: &PgRow) -> sqlx::Result<(String, String, String)> {
    Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
}

fn to_grants(rows: Vec<(String, String, String)>) -> Result<Vec<Grant>> {
    rows.into_iter()
        .map(|(role, permission, scope)| {
            Ok(Grant {
                role,
                permission: permission.parse()?,
                scope: scope.parse()?,
            })
        })
        .collect()
}

#[async_trait]
impl SchemaStore for PostgresStore {
    async fn role_grants(&self, role: &str) -> Result<Vec<Grant>> {
        let query = sqlx::query(
            "SELECT role, permission, scope FROM role_permissions
             WHERE role = $1 ORDER BY permission",
        )
        .bind(role);
        to_grants(all(&mut *self.conn().await?, query, grant).await?)
    }

    async fn all_grants(&self) -> Result<Vec<Grant>> {
        let query = sqlx::query(
            "SELECT role, permission, scope FROM role_permissions ORDER BY role, permission",
        );
        to_grants(all(&mut *self.conn().await?, query, grant).await?)
    }

    async fn schema_version(&self) -> Result<i64> {
        let query = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM schema_migrations");
        let version = optional(&mut *self.conn().await?, query, |row| row.try_get(0)).await?;
        Ok(version.unwrap_or_default())
    }
}
