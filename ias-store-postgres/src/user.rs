//! Users.

use async_trait::async_trait;
use ias_core::{
    AuditRecord, Error, HashedPassword, NewUser, OrgId, Result, User, UserId, UserStore,
};
use sqlx::{PgConnection, Row};

use crate::audit;
use crate::error::unique_or;
use crate::rows::{self, USER_COLUMNS, millis};
use crate::store::{PgQuery, PostgresStore, all, commit, execute, optional};

/// The statement of [`UserStore::user_by_id`].
pub fn by_id_sql() -> String {
    format!("SELECT {USER_COLUMNS} FROM users u WHERE u.id = $1")
}

/// The statement of [`UserStore::user_by_email`].
pub fn by_email_sql() -> String {
    format!("SELECT {USER_COLUMNS} FROM users u WHERE u.email = $1")
}

/// A page of an organization's (`$1`) current users: ids above `$2`, at most `$3`.
pub fn list_sql() -> String {
    format!(
        "SELECT {USER_COLUMNS} FROM users u
         WHERE u.org_id = $1 AND u.removed_at IS NULL AND u.id > $2
         ORDER BY u.id LIMIT $3"
    )
}

pub(crate) async fn by_id(conn: &mut PgConnection, id: UserId) -> Result<Option<User>> {
    let sql = by_id_sql();
    optional(conn, sqlx::query(&sql).bind(id.0), |row| rows::user(row, 0)).await
}

/// A missing organization is reported by its foreign key, as [`Error::NotFound`].
async fn insert(conn: &mut PgConnection, user: &NewUser) -> Result<UserId> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO users
           (org_id, email, role, monthly_token_limit, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $5)
         RETURNING id",
    )
    .bind(user.org_id.0)
    .bind(&user.email)
    .bind(user.role.as_str())
    .bind(user.monthly_token_limit)
    .bind(millis(user.created_at))
    .fetch_one(conn)
    .await
    .map_err(|e| unique_or(e, "user", &user.email))?;
    Ok(UserId(id))
}

/// Runs an update of one user with its audit entry; [`Error::NotFound`] if the user does not exist.
async fn update(
    store: &PostgresStore,
    user: UserId,
    change: PgQuery<'_>,
    record: &AuditRecord,
) -> Result<User> {
    let mut tx = store.begin().await?;
    if execute(&mut tx, change).await? == 0 {
        return Err(Error::not_found("user", user.to_string()));
    }
    audit::append(&mut tx, record, Some(user.0)).await?;
    let updated = by_id(&mut tx, user)
        .await?
        .ok_or_else(|| Error::not_found("user", user.to_string()))?;
    commit(tx).await?;
    Ok(updated)
}

#[async_trait]
impl UserStore for PostgresStore {
    async fn create_user(&self, user: &NewUser, record: &AuditRecord) -> Result<User> {
        let mut tx = self.begin().await?;
        let id = insert(&mut tx, user).await?;
        audit::append(&mut tx, record, Some(id.0)).await?;
        let created = by_id(&mut tx, id)
            .await?
            .ok_or_else(|| Error::not_found("user", user.email.clone()))?;
        commit(tx).await?;
        Ok(created)
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        let sql = by_email_sql();
        let query = sqlx::query(&sql).bind(email);
        optional(&mut *self.conn().await?, query, |row| rows::user(row, 0)).await
    }

    async fn user_by_id(&self, id: UserId) -> Result<Option<User>> {
        by_id(&mut *self.conn().await?, id).await
    }

    async fn list_users(&self, org: OrgId, after: Option<UserId>, limit: u32) -> Result<Vec<User>> {
        let sql = list_sql();
        let query = sqlx::query(&sql)
            .bind(org.0)
            .bind(after.map_or(0, |id| id.0))
            .bind(i64::from(limit));
        all(&mut *self.conn().await?, query, |row| rows::user(row, 0)).await
    }

    async fn set_user_limit(
        &self,
        user: UserId,
        limit: Option<i64>,
        record: &AuditRecord,
    ) -> Result<User> {
        let change =
            sqlx::query("UPDATE users SET monthly_token_limit = $2, updated_at = $3 WHERE id = $1")
                .bind(user.0)
                .bind(limit)
                .bind(millis(record.at));
        update(self, user, change, record).await
    }

    async fn password_hash(&self, user: UserId) -> Result<Option<HashedPassword>> {
        let query = sqlx::query("SELECT password_hash FROM users WHERE id = $1").bind(user.0);
        let phc = optional(&mut *self.conn().await?, query, |row| {
            row.try_get::<Option<String>, _>(0)
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
        let change =
            sqlx::query("UPDATE users SET password_hash = $2, updated_at = $3 WHERE id = $1")
                .bind(user.0)
                .bind(hash.as_phc())
                .bind(millis(record.at));
        update(self, user, change, record).await.map(|_| ())
    }
}
