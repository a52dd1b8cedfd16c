//! Users.

use async_trait::async_trait;
use ias_core::{
    AuditRecord, Error, HashedPassword, NewUser, OrgId, Result, User, UserId, UserStore,
};
use rusqlite::{Connection, OptionalExtension, params};

use crate::audit;
use crate::error::{from_sqlite, unique_or};
use crate::org;
use crate::rows::{self, USER_COLUMNS, millis};
use crate::store::{SqliteStore, write};

pub(crate) fn by_id(conn: &Connection, id: UserId) -> Result<Option<User>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users u WHERE u.id = ?1");
    conn.query_row(&sql, [id.0], |row| rows::user(row, 0))
        .optional()
        .map_err(from_sqlite)
}

#[async_trait]
impl UserStore for SqliteStore {
    async fn create_user(&self, user: &NewUser, record: &AuditRecord) -> Result<User> {
        let (user, record) = (user.clone(), record.clone());
        self.run(move |conn| {
            write(conn, |tx| {
                if org::by_id(tx, user.org_id)?.is_none() {
                    return Err(Error::not_found("organization", user.org_id.to_string()));
                }
                tx.execute(
                    "INSERT INTO users
                       (org_id, email, role, monthly_token_limit, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                    params![
                        user.org_id.0,
                        user.email,
                        user.role.as_str(),
                        user.monthly_token_limit,
                        millis(user.created_at)
                    ],
                )
                .map_err(|e| unique_or(e, "user", &user.email))?;
                let id = UserId(tx.last_insert_rowid());
                audit::append(tx, &record, Some(id.0)).map_err(from_sqlite)?;
                by_id(tx, id)?.ok_or_else(|| Error::not_found("user", user.email.clone()))
            })
        })
        .await
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        let email = email.to_owned();
        self.run(move |conn| {
            let sql = format!("SELECT {USER_COLUMNS} FROM users u WHERE u.email = ?1");
            conn.query_row(&sql, [email], |row| rows::user(row, 0))
                .optional()
                .map_err(from_sqlite)
        })
        .await
    }

    async fn user_by_id(&self, id: UserId) -> Result<Option<User>> {
        self.run(move |conn| by_id(conn, id)).await
    }

    async fn list_users(&self, org: OrgId, after: Option<UserId>, limit: u32) -> Result<Vec<User>> {
        self.run(move |conn| {
            let sql = format!(
                "SELECT {USER_COLUMNS} FROM users u
                 WHERE u.org_id = ?1 AND u.removed_at IS NULL AND u.id > ?2
                 ORDER BY u.id LIMIT ?3"
            );
            let mut stmt = conn.prepare_cached(&sql).map_err(from_sqlite)?;
            let after = after.map_or(0, |id| id.0);
            let users = stmt
                .query_map(params![org.0, after, limit], |row| rows::user(row, 0))
                .map_err(from_sqlite)?;
            users
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(from_sqlite)
        })
        .await
    }

    async fn set_user_limit(
        &self,
        user: UserId,
        limit: Option<i64>,
        record: &AuditRecord,
    ) -> Result<User> {
        let record = record.clone();
        self.run(move |conn| {
            write(conn, |tx| {
                let changed = tx
                    .execute(
                        "UPDATE users SET monthly_token_limit = ?2, updated_at = ?3 WHERE id = ?1",
                        params![user.0, limit, millis(record.at)],
                    )
                    .map_err(from_sqlite)?;
                if changed == 0 {
                    return Err(Error::not_found("user", user.to_string()));
                }
                audit::append(tx, &record, Some(user.0)).map_err(from_sqlite)?;
                by_id(tx, user)?.ok_or_else(|| Error::not_found("user", user.to_string()))
            })
        })
        .await
    }

    async fn password_hash(&self, user: UserId) -> Result<Option<HashedPassword>> {
        let phc: Option<Option<String>> = self
            .run(move |conn| {
                conn.query_row(
                    "SELECT password_hash FROM users WHERE id = ?1",
                    [user.0],
                    |row| row.get(0),
                )
                .optional()
                .map_err(from_sqlite)
            })
            .await?;
        Ok(phc.flatten().map(HashedPassword::from_phc))
    }

    async fn set_password_hash(
        &self,
        user: UserId,
        hash: &HashedPassword,
        record: &AuditRecord,
    ) -> Result<()> {
        let (phc, record) = (hash.as_phc().to_owned(), record.clone());
        self.run(move |conn| {
            write(conn, |tx| {
                let changed = tx
                    .execute(
                        "UPDATE users SET password_hash = ?2, updated_at = ?3 WHERE id = ?1",
                        params![user.0, phc, millis(record.at)],
                    )
                    .map_err(from_sqlite)?;
                if changed == 0 {
                    return Err(Error::not_found("user", user.to_string()));
                }
                audit::append(tx, &record, Some(user.0)).map_err(from_sqlite)?;
                Ok(())
            })
        })
        .await
    }
}
