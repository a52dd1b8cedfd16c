//! GitOps settings, sync state, reconcile leases and applies.
//!
//! # Locking
//!
//! Every write here changes the organization's `gitops_sync_state` row
//! first, and so holds that row's lock before it appends to the audit
//! chain or the change feed (the write-log lock). Two writes on one
//! organization take turns on the row: another holder trying to take the
//! lease while an apply runs waits for the apply to commit, and an apply
//! that starts after a take-over finds the new holder and refuses.
//!
//! An apply then locks the organization's row and the rows of the users
//! its operations name, in id order, before its first write. Other admin
//! writes lock their row first and take the write-log lock last (the
//! feed's trigger takes it), so an apply that held the write-log lock and
//! then waited for one of those rows would close a cycle with them (which
//! PostgreSQL breaks by failing one, retryably). Holding those rows from
//! the start, the apply waits for such a writer, or the writer for it,
//! never both. Rows an apply creates (a new user, an allowed model) cannot
//! be locked ahead; a writer creating the same row at the same moment may
//! still meet it in such a cycle.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ias_core::gitops::{
    ApplyOp, DeclaredUser, GitopsApply, GitopsSettings, GitopsState, GitopsStatus, OrgView,
    ViewUser,
};
use ias_core::{
    AuditRecord, Error, GitopsStore, LimitScope, OrgId, Organization, RateLimits, Result,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use crate::audit;
use crate::error::{store, unique_or};
use crate::limits::store_limits;
use crate::org;
use crate::rows::{self, ORG_COLUMNS, USER_COLUMNS, conversion, millis, optional_time, parsed};
use crate::store::{PgQuery, PostgresStore, all, commit, execute, optional};

const STATE_COLUMNS: &str = "s.org_id, o.slug, s.repo_url, s.git_ref, s.path, s.credentials, \
     s.prune, s.drift_policy, s.max_removal_percent, s.allow_empty, s.suspended, \
     s.status, s.reason, s.message, s.last_fetched_commit, s.last_attempted_commit, \
     s.last_applied_commit, s.last_attempt_at, s.last_success_at, s.consecutive_failures, \
     s.next_retry_at, s.drift_count, s.drift, s.inventory, s.enabled_at";

fn state_sql(filter: &str) -> String {
    format!(
        "SELECT {STATE_COLUMNS} FROM gitops_sync_state s
         JOIN organizations o ON o.id = s.org_id {filter}"
    )
}

/// A page of GitOps states: organization ids above `$1`, at most `$2`.
pub fn list_states_sql() -> String {
    state_sql("WHERE s.org_id > $1 ORDER BY s.org_id LIMIT $2")
}

/// The status columns `$2`…`$13` of [`bind_status`], for an `UPDATE` of the row `org_id = $1`.
const STATUS_SET: &str = "status = $2, reason = $3, message = $4, last_fetched_commit = $5, \
     last_attempted_commit = $6, last_attempt_at = $7, last_success_at = $8, \
     consecutive_failures = $9, next_retry_at = $10, drift_count = $11, drift = $12, \
     updated_at = $13";

/// A stored number read into a narrower type.
fn number<T: TryFrom<i64>>(row: &PgRow, idx: usize) -> sqlx::Result<T> {
    T::try_from(row.try_get::<i64, _>(idx)?).map_err(|_| conversion(idx, "number out of range"))
}

fn json<T: DeserializeOwned>(row: &PgRow, idx: usize) -> sqlx::Result<Option<T>> {
    match row.try_get::<Option<String>, _>(idx)? {
        Some(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|_| conversion(idx, "column is not the expected JSON")),
        None => Ok(None),
    }
}

fn state(row: &PgRow) -> sqlx::Result<GitopsState> {
    let settings = GitopsSettings {
        org_id: OrgId(row.try_get(0)?),
        org_slug: row.try_get(1)?,
        repo_url: row.try_get(2)?,
        git_ref: row.try_get(3)?,
        path: row.try_get(4)?,
        credentials: row.try_get(5)?,
        prune: row.try_get(6)?,
        drift: parsed(row, 7)?,
        max_removal_percent: number(row, 8)?,
        allow_empty: row.try_get(9)?,
        suspended: row.try_get(10)?,
    };
    let status = GitopsStatus {
        status: parsed(row, 11)?,
        reason: row.try_get(12)?,
        message: row.try_get(13)?,
        last_fetched_commit: row.try_get(14)?,
        last_attempted_commit: row.try_get(15)?,
        last_applied_commit: row.try_get(16)?,
        last_attempt_at: optional_time(row, 17)?,
        last_success_at: optional_time(row, 18)?,
        consecutive_failures: number(row, 19)?,
        next_retry_at: optional_time(row, 20)?,
        drift_count: number(row, 21)?,
        drift: json(row, 22)?.unwrap_or_default(),
    };
    Ok(GitopsState {
        settings,
        status,
        inventory: json(row, 23)?,
        enabled_at: rows::time(row, 24)?,
    })
}

async fn state_of(conn: &mut PgConnection, org: OrgId) -> Result<Option<GitopsState>> {
    let sql = state_sql("WHERE s.org_id = $1");
    optional(conn, sqlx::query(&sql).bind(org.0), state).await
}

fn to_json(value: &impl Serialize) -> Result<String> {
    serde_json::to_string(value).map_err(|e| store(format!("could not encode gitops state: {e}")))
}

/// Binds `org` and the status columns of [`STATUS_SET`] to `query`.
fn bind_status<'q>(
    query: PgQuery<'q>,
    org: OrgId,
    status: &'q GitopsStatus,
    at: i64,
) -> Result<PgQuery<'q>> {
    let drift_count = i64::try_from(status.drift_count)
        .map_err(|_| store(format!("drift count `{}` out of range", status.drift_count)))?;
    Ok(query
        .bind(org.0)
        .bind(status.status.as_str())
        .bind(&status.reason)
        .bind(&status.message)
        .bind(&status.last_fetched_commit)
        .bind(&status.last_attempted_commit)
        .bind(status.last_attempt_at.map(millis))
        .bind(status.last_success_at.map(millis))
        .bind(i64::from(status.consecutive_failures))
        .bind(status.next_retry_at.map(millis))
        .bind(drift_count)
        .bind(to_json(&status.drift)?)
        .bind(at))
}

/// Stores `status`; the number of rows changed (0 when GitOps is not enabled).
async fn save_status(
    conn: &mut PgConnection,
    org: OrgId,
    status: &GitopsStatus,
    at: i64,
) -> Result<u64> {
    let sql = format!("UPDATE gitops_sync_state SET {STATUS_SET} WHERE org_id = $1");
    execute(conn, bind_status(sqlx::query(&sql), org, status, at)?).await
}

#[async_trait]
impl GitopsStore for PostgresStore {
    async fn gitops_enable(
        &self,
        settings: &GitopsSettings,
        at: DateTime<Utc>,
        record: &AuditRecord,
    ) -> Result<GitopsState> {
        let org = settings.org_id;
        let mut tx = self.begin().await?;
        if org::by_id(&mut tx, org).await?.is_none() {
            return Err(Error::not_found("organization", &settings.org_slug));
        }
        let fresh = GitopsStatus::never_synced();
        let upsert = sqlx::query(
            "INSERT INTO gitops_sync_state
               (org_id, repo_url, git_ref, path, credentials, prune, drift_policy,
                max_removal_percent, allow_empty, status, reason, message,
                enabled_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)
             ON CONFLICT (org_id) DO UPDATE SET
                repo_url = excluded.repo_url, git_ref = excluded.git_ref,
                path = excluded.path, credentials = excluded.credentials,
                prune = excluded.prune, drift_policy = excluded.drift_policy,
                max_removal_percent = excluded.max_removal_percent,
                allow_empty = excluded.allow_empty, updated_at = excluded.updated_at,
                last_applied_commit = CASE
                    WHEN gitops_sync_state.repo_url <> excluded.repo_url
                      OR gitops_sync_state.git_ref <> excluded.git_ref
                      OR gitops_sync_state.path <> excluded.path
                    THEN NULL ELSE gitops_sync_state.last_applied_commit END",
        )
        .bind(org.0)
        .bind(&settings.repo_url)
        .bind(&settings.git_ref)
        .bind(&settings.path)
        .bind(&settings.credentials)
        .bind(settings.prune)
        .bind(settings.drift.as_str())
        .bind(i64::from(settings.max_removal_percent))
        .bind(settings.allow_empty)
        .bind(fresh.status.as_str())
        .bind(&fresh.reason)
        .bind(&fresh.message)
        .bind(millis(at));
        execute(&mut tx, upsert).await?;
        let mark = sqlx::query(
            "UPDATE organizations SET managed_by = 'gitops', updated_at = $2
             WHERE id = $1 AND managed_by <> 'gitops'",
        )
        .bind(org.0)
        .bind(millis(at));
        execute(&mut tx, mark).await?;
        audit::append(&mut tx, record, Some(org.0)).await?;
        let enabled = state_of(&mut tx, org)
            .await?
            .ok_or_else(|| Error::not_found("organization", org.to_string()))?;
        commit(tx).await?;
        Ok(enabled)
    }

    async fn gitops_disable(&self, org: OrgId, record: &AuditRecord) -> Result<bool> {
        let mut tx = self.begin().await?;
        let delete = sqlx::query("DELETE FROM gitops_sync_state WHERE org_id = $1").bind(org.0);
        if execute(&mut tx, delete).await? == 0 {
            return Ok(false);
        }
        let at = millis(record.at);
        let org_api = sqlx::query(
            "UPDATE organizations SET managed_by = 'api', updated_at = $2 WHERE id = $1",
        )
        .bind(org.0)
        .bind(at);
        execute(&mut tx, org_api).await?;
        let users_api = sqlx::query(
            "UPDATE users SET managed_by = 'api', updated_at = $2
             WHERE org_id = $1 AND managed_by = 'gitops'",
        )
        .bind(org.0)
        .bind(at);
        execute(&mut tx, users_api).await?;
        audit::append(&mut tx, record, Some(org.0)).await?;
        commit(tx).await?;
        Ok(true)
    }

    async fn gitops_set_suspended(
        &self,
        org: OrgId,
        suspended: bool,
        record: &AuditRecord,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let change = sqlx::query(
            "UPDATE gitops_sync_state SET suspended = $2, updated_at = $3
             WHERE org_id = $1 AND suspended <> $2",
        )
        .bind(org.0)
        .bind(suspended)
        .bind(millis(record.at));
        if execute(&mut tx, change).await? == 0 {
            let exists = sqlx::query("SELECT 1 FROM gitops_sync_state WHERE org_id = $1");
            return match optional(&mut tx, exists.bind(org.0), |_| Ok(())).await? {
                Some(()) => Ok(false),
                None => Err(Error::not_found(
                    "gitops settings of organization",
                    org.to_string(),
                )),
            };
        }
        audit::append(&mut tx, record, Some(org.0)).await?;
        commit(tx).await?;
        Ok(true)
    }

    async fn gitops_state(&self, org: OrgId) -> Result<Option<GitopsState>> {
        state_of(&mut *self.conn().await?, org).await
    }

    async fn gitops_states(&self, after: Option<OrgId>, limit: u32) -> Result<Vec<GitopsState>> {
        let sql = list_states_sql();
        let query = sqlx::query(&sql)
            .bind(after.map_or(0, |id| id.0))
            .bind(i64::from(limit));
        all(&mut *self.conn().await?, query, state).await
    }

    async fn gitops_save_status(
        &self,
        org: OrgId,
        status: &GitopsStatus,
        record: Option<&AuditRecord>,
    ) -> Result<()> {
        let at = millis(Utc::now());
        let Some(record) = record else {
            save_status(&mut *self.conn().await?, org, status, at).await?;
            return Ok(());
        };
        let mut tx = self.begin().await?;
        if save_status(&mut tx, org, status, at).await? == 1 {
            audit::append(&mut tx, record, Some(org.0)).await?;
        }
        commit(tx).await
    }

    async fn gitops_try_lease(
        &self,
        org: OrgId,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool> {
        // One statement: a concurrent taker waits for the row and then
        // checks the condition again against what this one wrote.
        let take = sqlx::query(
            "UPDATE gitops_sync_state SET lease_holder = $2, lease_until = $4
             WHERE org_id = $1
               AND (lease_holder IS NULL OR lease_holder = $2 OR lease_until <= $3)",
        )
        .bind(org.0)
        .bind(holder)
        .bind(millis(now))
        .bind(millis(until));
        Ok(execute(&mut *self.conn().await?, take).await? == 1)
    }

    async fn gitops_release_lease(&self, org: OrgId, holder: &str) -> Result<()> {
        let release = sqlx::query(
            "UPDATE gitops_sync_state SET lease_holder = NULL, lease_until = NULL
             WHERE org_id = $1 AND lease_holder = $2",
        )
        .bind(org.0)
        .bind(holder);
        execute(&mut *self.conn().await?, release).await?;
        Ok(())
    }

    async fn gitops_view(&self, org: OrgId, period: &str) -> Result<OrgView> {
        view(&mut *self.conn().await?, org, period).await
    }

    async fn gitops_apply(&self, apply: &GitopsApply) -> Result<()> {
        let mut tx = self.begin().await?;
        apply_in(&mut tx, apply).await?;
        commit(tx).await
    }
}

/// The organization with its allowed models, its rate limits and its use in `period`.
struct OrgRow {
    org: Organization,
    models: Vec<String>,
    rate_limits: RateLimits,
    used: i64,
}

/// Two queries: the organization with everything of its own, then its users with theirs.
async fn view(conn: &mut PgConnection, org_id: OrgId, period: &str) -> Result<OrgView> {
    let sql = format!(
        "SELECT {ORG_COLUMNS},
                ARRAY(SELECT m.model FROM org_allowed_models m
                      WHERE m.org_id = o.id ORDER BY m.model),
                r.rpm, r.tpm, COALESCE(c.used_tokens, 0)
         FROM organizations o
         LEFT JOIN rate_limits r ON r.scope = 'org' AND r.scope_id = o.id
         LEFT JOIN usage_counters c
           ON c.scope = 'org' AND c.scope_id = o.id AND c.period = $2
         WHERE o.id = $1"
    );
    let query = sqlx::query(&sql).bind(org_id.0).bind(period);
    let found = optional(conn, query, |row| {
        Ok(OrgRow {
            org: rows::org(row, 0)?,
            models: row.try_get(6)?,
            rate_limits: RateLimits {
                rpm: row.try_get(7)?,
                tpm: row.try_get(8)?,
            },
            used: row.try_get(9)?,
        })
    })
    .await?;
    let own = found.ok_or_else(|| Error::not_found("organization", org_id.to_string()))?;
    Ok(OrgView {
        users: view_users(conn, org_id, period).await?,
        org: own.org,
        models: own.models,
        rate_limits: own.rate_limits,
        used: own.used,
    })
}

/// Every user of the organization, members or removed, with its rate limits and use.
async fn view_users(conn: &mut PgConnection, org: OrgId, period: &str) -> Result<Vec<ViewUser>> {
    let sql = format!(
        "SELECT {USER_COLUMNS}, r.rpm, r.tpm, COALESCE(c.used_tokens, 0) FROM users u
         LEFT JOIN rate_limits r ON r.scope = 'user' AND r.scope_id = u.id
         LEFT JOIN usage_counters c
           ON c.scope = 'user' AND c.scope_id = u.id AND c.period = $2
         WHERE u.org_id = $1 ORDER BY u.email"
    );
    let query = sqlx::query(&sql).bind(org.0).bind(period);
    all(conn, query, |row| {
        Ok(ViewUser {
            user: rows::user(row, 0)?,
            rate_limits: RateLimits {
                rpm: row.try_get(8)?,
                tpm: row.try_get(9)?,
            },
            used: row.try_get(10)?,
        })
    })
    .await
}

/// The users an apply names, by email: their id and organization.
type NamedUsers = HashMap<String, (i64, OrgId)>;

async fn apply_in(conn: &mut PgConnection, apply: &GitopsApply) -> Result<()> {
    let org = apply.org_id;
    hold_lease(conn, apply).await?;
    let mut users = lock_users(conn, &apply.ops).await?;
    let at = millis(apply.at);
    for op in &apply.ops {
        apply_op(conn, org, op, at, &mut users).await?;
    }
    for record in &apply.audit {
        audit::append(conn, record, Some(org.0)).await?;
    }
    let sql = format!(
        "UPDATE gitops_sync_state SET {STATUS_SET}, last_applied_commit = $14, inventory = $15
         WHERE org_id = $1"
    );
    let save = bind_status(sqlx::query(&sql), org, &apply.status, at)?
        .bind(&apply.inventory.commit)
        .bind(to_json(&apply.inventory)?);
    execute(conn, save).await?;
    Ok(())
}

/// Locks the sync state and the organization; [`Error::Conflict`] unless
/// `apply.holder` holds the lease.
async fn hold_lease(conn: &mut PgConnection, apply: &GitopsApply) -> Result<()> {
    let query = sqlx::query(
        "SELECT CASE WHEN s.suspended THEN NULL ELSE s.lease_holder END
         FROM gitops_sync_state s
         JOIN organizations o ON o.id = s.org_id
         WHERE s.org_id = $1
         FOR UPDATE OF s FOR NO KEY UPDATE OF o",
    )
    .bind(apply.org_id.0);
    let holder = optional(conn, query, |row| row.try_get::<Option<String>, _>(0)).await?;
    if holder.flatten().as_deref() == Some(apply.holder.as_str()) {
        return Ok(());
    }
    Err(Error::conflict(
        "gitops lease of organization",
        apply.org_id.to_string(),
        "is no longer held by this reconciler, or the organization was suspended",
    ))
}

fn named_email(op: &ApplyOp) -> Option<&str> {
    match op {
        ApplyOp::AddUser { user } | ApplyOp::UpdateUser { user } => Some(&user.email),
        ApplyOp::SetUserRateLimits { email, .. }
        | ApplyOp::RemoveUser { email }
        | ApplyOp::ReleaseUser { email } => Some(email),
        ApplyOp::SetBudget { .. }
        | ApplyOp::SetOrgRateLimits { .. }
        | ApplyOp::AllowModel { .. }
        | ApplyOp::DenyModel { .. } => None,
    }
}

/// Locks the existing users that `ops` name, in id order (see the module docs).
async fn lock_users(conn: &mut PgConnection, ops: &[ApplyOp]) -> Result<NamedUsers> {
    let emails: Vec<&str> = ops.iter().filter_map(named_email).collect();
    if emails.is_empty() {
        return Ok(NamedUsers::new());
    }
    let query = sqlx::query(
        "SELECT email, id, org_id FROM users WHERE email = ANY($1)
         ORDER BY id FOR NO KEY UPDATE",
    )
    .bind(emails);
    let found = all(conn, query, |row| {
        let email: String = row.try_get(0)?;
        Ok((email, (row.try_get(1)?, OrgId(row.try_get(2)?))))
    })
    .await?;
    Ok(found.into_iter().collect())
}

async fn apply_op(
    conn: &mut PgConnection,
    org: OrgId,
    op: &ApplyOp,
    at: i64,
    users: &mut NamedUsers,
) -> Result<()> {
    match op {
        ApplyOp::SetBudget {
            monthly_tokens,
            timezone,
        } => {
            let query = sqlx::query(crate::org::SET_BUDGET)
                .bind(org.0)
                .bind(monthly_tokens)
                .bind(timezone.name())
                .bind(at);
            execute(conn, query).await?;
        }
        ApplyOp::SetOrgRateLimits { limits } => {
            store_limits(conn, LimitScope::Org, org.0, *limits, at).await?;
        }
        ApplyOp::AllowModel { pattern } => {
            let query = sqlx::query(
                "INSERT INTO org_allowed_models (org_id, model, managed_by, created_at)
                 VALUES ($1, $2, 'gitops', $3) ON CONFLICT DO NOTHING",
            )
            .bind(org.0)
            .bind(pattern)
            .bind(at);
            execute(conn, query).await?;
        }
        ApplyOp::DenyModel { pattern } => {
            let query =
                sqlx::query("DELETE FROM org_allowed_models WHERE org_id = $1 AND model = $2")
                    .bind(org.0)
                    .bind(pattern);
            execute(conn, query).await?;
        }
        ApplyOp::AddUser { user } => add_user(conn, org, user, at, users).await?,
        ApplyOp::UpdateUser { user } => {
            let query = sqlx::query(
                "UPDATE users SET role = $3, monthly_token_limit = $4, managed_by = 'gitops',
                    updated_at = $5
                 WHERE org_id = $1 AND email = $2",
            )
            .bind(org.0)
            .bind(&user.email)
            .bind(user.role.as_str())
            .bind(user.monthly_token_limit)
            .bind(at);
            execute(conn, query).await?;
        }
        ApplyOp::SetUserRateLimits { email, limits } => {
            let id = match users.get(email) {
                Some((id, owner)) if *owner == org => *id,
                _ => return Err(Error::not_found("user", email)),
            };
            store_limits(conn, LimitScope::User, id, *limits, at).await?;
        }
        ApplyOp::ReleaseUser { email } => {
            let query = sqlx::query(
                "UPDATE users SET managed_by = 'api', updated_at = $3
                 WHERE org_id = $1 AND email = $2",
            )
            .bind(org.0)
            .bind(email)
            .bind(at);
            execute(conn, query).await?;
        }
        ApplyOp::RemoveUser { email } => {
            let query = sqlx::query(
                "UPDATE users SET removed_at = $3, updated_at = $3
                 WHERE org_id = $1 AND email = $2 AND removed_at IS NULL",
            )
            .bind(org.0)
            .bind(email)
            .bind(at);
            execute(conn, query).await?;
        }
    }
    Ok(())
}

/// Creates the user, or gives a user of this organization its membership back.
async fn add_user(
    conn: &mut PgConnection,
    org: OrgId,
    user: &DeclaredUser,
    at: i64,
    users: &mut NamedUsers,
) -> Result<()> {
    match users.get(&user.email) {
        Some((_, owner)) if *owner != org => Err(Error::conflict(
            "user",
            &user.email,
            "belongs to another organization",
        )),
        Some(_) => {
            let query = sqlx::query(
                "UPDATE users SET role = $3, monthly_token_limit = $4, managed_by = 'gitops',
                    removed_at = NULL, updated_at = $5
                 WHERE org_id = $1 AND email = $2",
            )
            .bind(org.0)
            .bind(&user.email)
            .bind(user.role.as_str())
            .bind(user.monthly_token_limit)
            .bind(at);
            execute(conn, query).await?;
            Ok(())
        }
        None => {
            // A user created meanwhile by another writer is a unique violation: a conflict.
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO users
                   (org_id, email, role, monthly_token_limit, managed_by, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, 'gitops', $5, $5)
                 RETURNING id",
            )
            .bind(org.0)
            .bind(&user.email)
            .bind(user.role.as_str())
            .bind(user.monthly_token_limit)
            .bind(at)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| unique_or(e, "user", &user.email))?;
            users.insert(user.email.clone(), (id, org));
            Ok(())
        }
    }
}
