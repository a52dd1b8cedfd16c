//! Roles, permissions and the schema version.

use async_trait::async_trait;
use ias_core::{Grant, Result, SchemaStore};
use rusqlite::Row;

use crate::error::from_sqlite;
use crate::store::SqliteStore;

fn grant(row: &Row<'_>) -> rusqlite::Result<(String, String, String)> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
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
impl SchemaStore for SqliteStore {
    async fn role_grants(&self, role: &str) -> Result<Vec<Grant>> {
        let role = role.to_owned();
        let rows = self
            .run(move |conn| {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT role, permission, scope FROM role_permissions
                         WHERE role = ?1 ORDER BY permission",
                    )
                    .map_err(from_sqlite)?;
                let rows = stmt.query_map([role], grant).map_err(from_sqlite)?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(from_sqlite)
            })
            .await?;
        to_grants(rows)
    }

    async fn all_grants(&self) -> Result<Vec<Grant>> {
        let rows = self
            .run(|conn| {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT role, permission, scope FROM role_permissions
                         ORDER BY role, permission",
                    )
                    .map_err(from_sqlite)?;
                let rows = stmt.query_map([], grant).map_err(from_sqlite)?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(from_sqlite)
            })
            .await?;
        to_grants(rows)
    }

    async fn schema_version(&self) -> Result<i64> {
        self.run(|conn| {
            conn.query_row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                [],
                |r| r.get(0),
            )
            .map_err(from_sqlite)
        })
        .await
    }
}
