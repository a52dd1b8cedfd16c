//! GitOps settings, sync state, reconcile leases and applies.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ias_core::gitops::{
    ApplyOp, DeclaredUser, GitopsApply, GitopsSettings, GitopsState, GitopsStatus, OrgView,
    ViewUser,
};
use ias_core::{AuditRecord, Error, GitopsStore, LimitScope, OrgId, RateLimits, Result, UserId};
use rusqlite::{Connection, Row, Transaction, params};

use crate::audit;
use crate::error::{from_sqlite, unique_or};
use crate::limits::{rate_limits, store_limits};
use crate::org;
use crate::rows::{self, USER_COLUMNS, millis};
use crate::store::{SqliteStore, optional_row, write};

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

fn conversion(idx: usize, err: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        idx,
        rusqlite::types::Type::Text,
        err.to_string().into(),
    )
}

fn parsed<T: std::str::FromStr>(row: &Row<'_>, idx: usize) -> rusqlite::Result<T>
where
    T::Err: std::fmt::Display,
{
    let text: String = row.get(idx)?;
    text.parse().map_err(|e| conversion(idx, e))
}

fn json<T: serde::de::DeserializeOwned>(row: &Row<'_>, idx: usize) -> rusqlite::Result<T> {
    let text: String = row.get(idx)?;
    serde_json::from_str(&text).map_err(|e| conversion(idx, e))
}

fn time(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<DateTime<Utc>>> {
    Ok(row
        .get::<_, Option<i64>>(idx)?
        .and_then(DateTime::from_timestamp_millis))
}

fn state(row: &Row<'_>) -> rusqlite::Result<GitopsState> {
    let settings = GitopsSettings {
        org_id: OrgId(row.get(0)?),
        org_slug: row.get(1)?,
        repo_url: row.get(2)?,
        git_ref: row.get(3)?,
        path: row.get(4)?,
        credentials: row.get(5)?,
        prune: row.get(6)?,
        drift: parsed(row, 7)?,
        max_removal_percent: row.get(8)?,
        allow_empty: row.get(9)?,
        suspended: row.get(10)?,
    };
    let status = GitopsStatus {
        status: parsed(row, 11)?,
        reason: row.get(12)?,
        message: row.get(13)?,
        last_fetched_commit: row.get(14)?,
        last_attempted_commit: row.get(15)?,
        last_applied_commit: row.get(16)?,
        last_attempt_at: time(row, 17)?,
        last_success_at: time(row, 18)?,
        consecutive_failures: row.get(19)?,
        next_retry_at: time(row, 20)?,
        drift_count: row.get(21)?,
        drift: json(row, 22)?,
    };
    let inventory = match row.get::<_, Option<String>>(23)? {
        Some(text) => Some(serde_json::from_str(&text).map_err(|e| conversion(23, e))?),
        None => None,
    };
    Ok(GitopsState {
        settings,
        status,
        inventory,
        enabled_at: time(row, 24)?.unwrap_or_default(),
    })
}

fn state_of(conn: &Connection, org: OrgId) -> Result<Option<GitopsState>> {
    optional_row(conn, &state_sql("WHERE s.org_id = ?1"), [org.0], state)
}

fn to_json(value: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Store {
        backend: crate::error::BACKEND,
        message: format!("could not encode gitops state: {e}"),
    })
}

fn save_status(conn: &Connection, org: OrgId, status: &GitopsStatus, at: i64) -> Result<usize> {
    conn.execute(
        "UPDATE gitops_sync_state SET
            status = ?2, reason = ?3, message = ?4, last_fetched_commit = ?5,
            last_attempted_commit = ?6, last_attempt_at = ?7, last_success_at = ?8,
            consecutive_failures = ?9, next_retry_at = ?10, drift_count = ?11, drift = ?12,
            updated_at = ?13
         WHERE org_id = ?1",
        params![
            org.0,
            status.status.as_str(),
            status.reason,
            status.message,
            status.last_fetched_commit,
            status.last_attempted_commit,
            status.last_attempt_at.map(millis),
            status.last_success_at.map(millis),
            status.consecutive_failures,
            status.next_retry_at.map(millis),
            status.drift_count,
            to_json(&status.drift)?,
            at,
        ],
    )
    .map_err(from_sqlite)
}

#[async_trait]
impl GitopsStore for SqliteStore {
    async fn gitops_enable(
        &self,
        settings: &GitopsSettings,
        at: DateTime<Utc>,
        record: &AuditRecord,
    ) -> Result<GitopsState> {
        let (settings, record) = (settings.clone(), record.clone());
        self.run(move |conn| {
            write(conn, |tx| {
                let org = settings.org_id;
                if org::by_id(tx, org)?.is_none() {
                    return Err(Error::not_found("organization", &settings.org_slug));
                }
                let fresh = GitopsStatus::never_synced();
                tx.execute(
                    "INSERT INTO gitops_sync_state
                       (org_id, repo_url, git_ref, path, credentials, prune, drift_policy,
                        max_removal_percent, allow_empty, status, reason, message,
                        enabled_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13)
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
                    params![
                        org.0,
                        settings.repo_url,
                        settings.git_ref,
                        settings.path,
                        settings.credentials,
                        settings.prune,
                        settings.drift.as_str(),
                        settings.max_removal_percent,
                        settings.allow_empty,
                        fresh.status.as_str(),
                        fresh.reason,
                        fresh.message,
                        millis(at),
                    ],
                )
                .map_err(from_sqlite)?;
                tx.execute(
                    "UPDATE organizations SET managed_by = 'gitops', updated_at = ?2
                     WHERE id = ?1 AND managed_by <> 'gitops'",
                    params![org.0, millis(at)],
                )
                .map_err(from_sqlite)?;
                audit::append(tx, &record, Some(org.0)).map_err(from_sqlite)?;
                state_of(tx, org)?.ok_or_else(|| Error::not_found("organization", org.to_string()))
            })
        })
        .await
    }

    async fn gitops_disable(&self, org: OrgId, record: &AuditRecord) -> Result<bool> {
        let record = record.clone();
        self.run(move |conn| {
            write(conn, |tx| {
                let deleted = tx
                    .execute("DELETE FROM gitops_sync_state WHERE org_id = ?1", [org.0])
                    .map_err(from_sqlite)?;
                if deleted == 0 {
                    return Ok(false);
                }
                let at = millis(record.at);
                tx.execute(
                    "UPDATE organizations SET managed_by = 'api', updated_at = ?2 WHERE id = ?1",
                    params![org.0, at],
                )
                .map_err(from_sqlite)?;
                tx.execute(
                    "UPDATE users SET managed_by = 'api', updated_at = ?2
                     WHERE org_id = ?1 AND managed_by = 'gitops'",
                    params![org.0, at],
                )
                .map_err(from_sqlite)?;
                audit::append(tx, &record, Some(org.0)).map_err(from_sqlite)?;
                Ok(true)
            })
        })
        .await
    }

    async fn gitops_set_suspended(
        &self,
        org: OrgId,
        suspended: bool,
        record: &AuditRecord,
    ) -> Result<bool> {
        let record = record.clone();
        self.run(move |conn| {
            write(conn, |tx| {
                let Some(current) = state_of(tx, org)? else {
                    return Err(Error::not_found(
                        "gitops settings of organization",
                        org.to_string(),
                    ));
                };
                if current.settings.suspended == suspended {
                    return Ok(false);
                }
                tx.execute(
                    "UPDATE gitops_sync_state SET suspended = ?2, updated_at = ?3 WHERE org_id = ?1",
                    params![org.0, suspended, millis(record.at)],
                )
                .map_err(from_sqlite)?;
                audit::append(tx, &record, Some(org.0)).map_err(from_sqlite)?;
                Ok(true)
            })
        })
        .await
    }

    async fn gitops_state(&self, org: OrgId) -> Result<Option<GitopsState>> {
        self.run(move |conn| state_of(conn, org)).await
    }

    async fn gitops_states(&self, after: Option<OrgId>, limit: u32) -> Result<Vec<GitopsState>> {
        self.run(move |conn| {
            let sql = state_sql("WHERE s.org_id > ?1 ORDER BY s.org_id LIMIT ?2");
            let mut stmt = conn.prepare_cached(&sql).map_err(from_sqlite)?;
            let after = after.map_or(0, |id| id.0);
            let rows = stmt
                .query_map(params![after, limit], state)
                .map_err(from_sqlite)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(from_sqlite)
        })
        .await
    }

    async fn gitops_save_status(
        &self,
        org: OrgId,
        status: &GitopsStatus,
        record: Option<&AuditRecord>,
    ) -> Result<()> {
        let (status, record) = (status.clone(), record.cloned());
        self.run(move |conn| {
            write(conn, |tx| {
                let at = millis(Utc::now());
                let saved = save_status(tx, org, &status, at)?;
                if let (1, Some(record)) = (saved, &record) {
                    audit::append(tx, record, Some(org.0)).map_err(from_sqlite)?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn gitops_try_lease(
        &self,
        org: OrgId,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool> {
        let holder = holder.to_owned();
        self.run(move |conn| {
            write(conn, |tx| {
                let taken = tx
                    .execute(
                        "UPDATE gitops_sync_state SET lease_holder = ?2, lease_until = ?4
                         WHERE org_id = ?1
                           AND (lease_holder IS NULL OR lease_holder = ?2 OR lease_until <= ?3)",
                        params![org.0, holder, millis(now), millis(until)],
                    )
                    .map_err(from_sqlite)?;
                Ok(taken == 1)
            })
        })
        .await
    }

    async fn gitops_release_lease(&self, org: OrgId, holder: &str) -> Result<()> {
        let holder = holder.to_owned();
        self.run(move |conn| {
            write(conn, |tx| {
                tx.execute(
                    "UPDATE gitops_sync_state SET lease_holder = NULL, lease_until = NULL
                     WHERE org_id = ?1 AND lease_holder = ?2",
                    params![org.0, holder],
                )
                .map_err(from_sqlite)?;
                Ok(())
            })
        })
        .await
    }

    async fn gitops_view(&self, org: OrgId, period: &str) -> Result<OrgView> {
        let period = period.to_owned();
        self.run(move |conn| view(conn, org, &period)).await
    }

    async fn gitops_apply(&self, apply: &GitopsApply) -> Result<()> {
        let apply = apply.clone();
        self.run(move |conn| write(conn, |tx| apply_in(tx, &apply)))
            .await
    }
}

fn view(conn: &Connection, org_id: OrgId, period: &str) -> Result<OrgView> {
    let org = org::by_id(conn, org_id)?
        .ok_or_else(|| Error::not_found("organization", org_id.to_string()))?;
    let mut stmt = conn
        .prepare_cached("SELECT model FROM org_allowed_models WHERE org_id = ?1 ORDER BY model")
        .map_err(from_sqlite)?;
    let models = stmt
        .query_map([org_id.0], |row| row.get::<_, String>(0))
        .map_err(from_sqlite)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(from_sqlite)?;
    let sql = format!(
        "SELECT {USER_COLUMNS}, r.rpm, r.tpm, COALESCE(c.used_tokens, 0) FROM users u
         LEFT JOIN rate_limits r ON r.scope = 'user' AND r.scope_id = u.id
         LEFT JOIN usage_counters c
           ON c.scope = 'user' AND c.scope_id = u.id AND c.period = ?2
         WHERE u.org_id = ?1 ORDER BY u.email"
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(from_sqlite)?;
    let users = stmt
        .query_map(params![org_id.0, period], |row| {
            Ok(ViewUser {
                user: rows::user(row, 0)?,
                rate_limits: RateLimits {
                    rpm: row.get(8)?,
                    tpm: row.get(9)?,
                },
                used: row.get(10)?,
            })
        })
        .map_err(from_sqlite)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(from_sqlite)?;
    let used = optional_row(
        conn,
        "SELECT used_tokens FROM usage_counters
         WHERE scope = 'org' AND scope_id = ?1 AND period = ?2",
        params![org_id.0, period],
        |row| row.get::<_, i64>(0),
    )?
    .unwrap_or(0);
    Ok(OrgView {
        rate_limits: rate_limits(conn, LimitScope::Org, org_id.0)?,
        org,
        models,
        users,
        used,
    })
}

fn apply_in(tx: &Transaction<'_>, apply: &GitopsApply) -> Result<()> {
    let org = apply.org_id;
    let holds = optional_row(
        tx,
        "SELECT 1 FROM gitops_sync_state
         WHERE org_id = ?1 AND lease_holder = ?2 AND suspended = 0",
        params![org.0, apply.holder],
        |_| Ok(()),
    )?;
    if holds.is_none() {
        return Err(Error::conflict(
            "gitops lease of organization",
            org.to_string(),
            "is no longer held by this reconciler, or the organization was suspended",
        ));
    }
    let at = millis(apply.at);
    for op in &apply.ops {
        apply_op(tx, org, op, at)?;
    }
    for record in &apply.audit {
        audit::append(tx, record, Some(org.0)).map_err(from_sqlite)?;
    }
    save_status(tx, org, &apply.status, at)?;
    tx.execute(
        "UPDATE gitops_sync_state SET last_applied_commit = ?2, inventory = ?3 WHERE org_id = ?1",
        params![org.0, apply.inventory.commit, to_json(&apply.inventory)?],
    )
    .map_err(from_sqlite)?;
    Ok(())
}

fn apply_op(tx: &Transaction<'_>, org: OrgId, op: &ApplyOp, at: i64) -> Result<()> {
    match op {
        ApplyOp::SetBudget {
            monthly_tokens,
            timezone,
        } => {
            tx.execute(
                crate::org::SET_BUDGET,
                params![org.0, monthly_tokens, timezone.name(), at],
            )
            .map_err(from_sqlite)?;
        }
        ApplyOp::SetOrgRateLimits { limits } => {
            store_limits(tx, LimitScope::Org, org.0, *limits, at)?;
        }
        ApplyOp::AllowModel { pattern } => {
            tx.execute(
                "INSERT INTO org_allowed_models (org_id, model, managed_by, created_at)
                 VALUES (?1, ?2, 'gitops', ?3) ON CONFLICT DO NOTHING",
                params![org.0, pattern, at],
            )
            .map_err(from_sqlite)?;
        }
        ApplyOp::DenyModel { pattern } => {
            tx.execute(
                "DELETE FROM org_allowed_models WHERE org_id = ?1 AND model = ?2",
                params![org.0, pattern],
            )
            .map_err(from_sqlite)?;
        }
        ApplyOp::AddUser { user } => add_user(tx, org, user, at)?,
        ApplyOp::UpdateUser { user } => {
            tx.execute(
                "UPDATE users SET role = ?3, monthly_token_limit = ?4, managed_by = 'gitops',
                    updated_at = ?5
                 WHERE org_id = ?1 AND email = ?2",
                params![
                    org.0,
                    user.email,
                    user.role.as_str(),
                    user.monthly_token_limit,
                    at
                ],
            )
            .map_err(from_sqlite)?;
        }
        ApplyOp::SetUserRateLimits { email, limits } => {
            let id = user_id(tx, org, email)?;
            store_limits(tx, LimitScope::User, id.0, *limits, at)?;
        }
        ApplyOp::ReleaseUser { email } => {
            tx.execute(
                "UPDATE users SET managed_by = 'api', updated_at = ?3
                 WHERE org_id = ?1 AND email = ?2",
                params![org.0, email, at],
            )
            .map_err(from_sqlite)?;
        }
        ApplyOp::RemoveUser { email } => {
            tx.execute(
                "UPDATE users SET removed_at = ?3, updated_at = ?3
                 WHERE org_id = ?1 AND email = ?2 AND removed_at IS NULL",
                params![org.0, email, at],
            )
            .map_err(from_sqlite)?;
        }
    }
    Ok(())
}

fn add_user(tx: &Transaction<'_>, org: OrgId, user: &DeclaredUser, at: i64) -> Result<()> {
    let existing = optional_row(
        tx,
        "SELECT org_id FROM users WHERE email = ?1",
        [&user.email],
        |row| row.get::<_, i64>(0),
    )?;
    match existing {
        Some(owner) if owner != org.0 => Err(Error::conflict(
            "user",
            &user.email,
            "belongs to another organization",
        )),
        Some(_) => {
            tx.execute(
                "UPDATE users SET role = ?3, monthly_token_limit = ?4, managed_by = 'gitops',
                    removed_at = NULL, updated_at = ?5
                 WHERE org_id = ?1 AND email = ?2",
                params![
                    org.0,
                    user.email,
                    user.role.as_str(),
                    user.monthly_token_limit,
                    at
                ],
            )
            .map_err(from_sqlite)?;
            Ok(())
        }
        None => {
            tx.execute(
                "INSERT INTO users
                   (org_id, email, role, monthly_token_limit, managed_by, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, 'gitops', ?5, ?5)",
                params![
                    org.0,
                    user.email,
                    user.role.as_str(),
                    user.monthly_token_limit,
                    at
                ],
            )
            .map_err(|e| unique_or(e, "user", &user.email))?;
            Ok(())
        }
    }
}

fn user_id(tx: &Transaction<'_>, org: OrgId, email: &str) -> Result<UserId> {
    optional_row(
        tx,
        "SELECT id FROM users WHERE org_id = ?1 AND email = ?2",
        params![org.0, email],
        |row| Ok(UserId(row.get(0)?)),
    )?
    .ok_or_else(|| Error::not_found("user", email))
}
