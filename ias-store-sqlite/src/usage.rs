//! Usage counters, budget leases, usage events and reports.

use async_trait::async_trait;
use ias_core::lease::{self, LeaseEntry, LeaseState, LeaseSync, Synced, UsageEvent};
use ias_core::usage::{DailyUsage, DayModel, ModelUsage, UserUsage};
use ias_core::{
    BudgetState, Counter, Error, LimitScope, OrgId, Result, UsageReport, UsageStore, UserId,
};
use rusqlite::{Connection, params};

use crate::error::from_sqlite;
use crate::rates;
use crate::rows::millis;
use crate::store::{SqliteStore, optional_row, write};

const ORG: &str = "org";
const USER: &str = "user";

fn counter(conn: &Connection, scope: &str, id: i64, period: &str) -> Result<Counter> {
    let counter = optional_row(
        conn,
        "SELECT used_tokens, reserved_tokens FROM usage_counters
         WHERE scope = ?1 AND scope_id = ?2 AND period = ?3",
        params![scope, id, period],
        |row| {
            Ok(Counter {
                used: row.get(0)?,
                reserved: row.get(1)?,
            })
        },
    )?;
    Ok(counter.unwrap_or_default())
}

fn org_budget(conn: &Connection, org: OrgId) -> Result<i64> {
    optional_row(
        conn,
        "SELECT monthly_token_budget FROM organizations WHERE id = ?1",
        [org.0],
        |row| row.get(0),
    )?
    .ok_or_else(|| Error::not_found("organization", org.to_string()))
}

fn state(conn: &Connection, org: OrgId, user: UserId, period: &str) -> Result<BudgetState> {
    let org_limit = org_budget(conn, org)?;
    let user_limit: Option<i64> = optional_row(
        conn,
        "SELECT monthly_token_limit FROM users WHERE id = ?1 AND org_id = ?2",
        params![user.0, org.0],
        |row| row.get(0),
    )?
    .ok_or_else(|| Error::not_found("user", user.to_string()))?;
    Ok(BudgetState {
        org_limit,
        org: counter(conn, ORG, org.0, period)?,
        user_limit,
        user: counter(conn, USER, user.0, period)?,
    })
}

fn scope_limit(conn: &Connection, entry: &LeaseEntry) -> Result<Option<i64>> {
    let (sql, entity) = match entry.scope {
        LimitScope::Org => (
            "SELECT monthly_token_budget FROM organizations WHERE id = ?1",
            "organization",
        ),
        _ => (
            "SELECT monthly_token_limit FROM users WHERE id = ?1",
            "user",
        ),
    };
    optional_row(conn, sql, [entry.scope_id], |row| row.get(0))?
        .ok_or_else(|| Error::not_found(entity, entry.scope_id.to_string()))
}

/// Takes back other holders' expired leases on the entry's scope and period.
fn reclaim(conn: &Connection, entry: &LeaseEntry, holder: &str, now: i64) -> Result<i64> {
    let reclaimed: i64 = optional_row(
        conn,
        "SELECT COALESCE(SUM(tokens), 0) FROM leases
         WHERE scope = ?1 AND scope_id = ?2 AND period = ?3 AND holder <> ?4 AND expires_at <= ?5",
        params![
            entry.scope.as_str(),
            entry.scope_id,
            entry.period,
            holder,
            now
        ],
        |row| row.get(0),
    )?
    .unwrap_or(0);
    if reclaimed > 0 {
        conn.prepare_cached(
            "DELETE FROM leases
             WHERE scope = ?1 AND scope_id = ?2 AND period = ?3 AND holder <> ?4 AND expires_at <= ?5",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![entry.scope.as_str(), entry.scope_id, entry.period, holder, now])
        })
        .map_err(from_sqlite)?;
        tracing::warn!(
            scope = entry.scope.as_str(),
            id = entry.scope_id,
            tokens = reclaimed,
            "took back expired leases of a governor that stopped"
        );
    }
    Ok(reclaimed)
}

fn lease_of(conn: &Connection, entry: &LeaseEntry, holder: &str) -> Result<i64> {
    Ok(optional_row(
        conn,
        "SELECT tokens FROM leases WHERE scope = ?1 AND scope_id = ?2 AND period = ?3 AND holder = ?4",
        params![entry.scope.as_str(), entry.scope_id, entry.period, holder],
        |row| row.get(0),
    )?
    .unwrap_or(0))
}

fn store_counter(conn: &Connection, entry: &LeaseEntry, state: &LeaseState) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO usage_counters (scope, scope_id, period, used_tokens, reserved_tokens)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (scope, scope_id, period)
         DO UPDATE SET used_tokens = excluded.used_tokens, reserved_tokens = excluded.reserved_tokens",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            entry.scope.as_str(),
            entry.scope_id,
            entry.period,
            state.used,
            state.held
        ])
    })
    .map_err(from_sqlite)?;
    Ok(())
}

fn store_lease(conn: &Connection, entry: &LeaseEntry, sync: &LeaseSync, tokens: i64) -> Result<()> {
    let key = params![
        entry.scope.as_str(),
        entry.scope_id,
        entry.period,
        sync.holder
    ];
    let result = if tokens > 0 {
        conn.prepare_cached(
            "INSERT INTO leases (scope, scope_id, period, holder, tokens, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (scope, scope_id, period, holder)
             DO UPDATE SET tokens = excluded.tokens, expires_at = excluded.expires_at",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                entry.scope.as_str(),
                entry.scope_id,
                entry.period,
                sync.holder,
                tokens,
                millis(sync.lease_expires_at)
            ])
        })
    } else {
        conn.prepare_cached(
            "DELETE FROM leases WHERE scope = ?1 AND scope_id = ?2 AND period = ?3 AND holder = ?4",
        )
        .and_then(|mut stmt| stmt.execute(key))
    };
    result.map_err(from_sqlite)?;
    Ok(())
}

fn sync_entry(conn: &Connection, entry: &LeaseEntry, sync: &LeaseSync) -> Result<LeaseState> {
    let limit = scope_limit(conn, entry)?;
    let mut c = counter(conn, entry.scope.as_str(), entry.scope_id, &entry.period)?;
    if entry.want > 0 {
        let reclaimed = reclaim(conn, entry, &sync.holder, millis(sync.now))?;
        c.reserved = (c.reserved - reclaimed).max(0);
    }
    let lease = lease_of(conn, entry, &sync.holder)?;
    let state = lease::apply(entry, limit, c.used, c.reserved, lease);
    store_counter(conn, entry, &state)?;
    store_lease(conn, entry, sync, state.lease)?;
    Ok(state)
}

/// The midpoint of the sync's time and its new lease expiry, in milliseconds:
/// a sync renews the holder's leases that would expire by then.
pub(crate) fn renew_by(sync: &LeaseSync) -> i64 {
    let now = millis(sync.now);
    now + (millis(sync.lease_expires_at) - now) / 2
}

/// Renews the holder's budget leases past half their life (see [`renew_by`]).
fn renew(conn: &Connection, sync: &LeaseSync) -> Result<()> {
    conn.prepare_cached("UPDATE leases SET expires_at = ?2 WHERE holder = ?1 AND expires_at <= ?3")
        .and_then(|mut stmt| {
            stmt.execute(params![
                sync.holder,
                millis(sync.lease_expires_at),
                renew_by(sync)
            ])
        })
        .map_err(from_sqlite)?;
    Ok(())
}

fn record_event(conn: &Connection, event: &UsageEvent) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO usage_events
           (org_id, user_id, key_id, model, period, reserved_tokens, tokens, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            event.org_id.0,
            event.user_id.0,
            event.key_id.0,
            event.model,
            event.period,
            event.reserved,
            event.tokens,
            millis(event.at)
        ])
    })
    .map_err(from_sqlite)?;
    conn.prepare_cached(
        "INSERT INTO usage_daily (org_id, day, user_id, model, tokens, requests)
         VALUES (?1, ?2, ?3, ?4, ?5, 1)
         ON CONFLICT (org_id, day, user_id, model)
         DO UPDATE SET tokens = tokens + excluded.tokens, requests = requests + 1",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            event.org_id.0,
            event.day,
            event.user_id.0,
            event.model,
            event.tokens
        ])
    })
    .map_err(from_sqlite)?;
    Ok(())
}

/// How long the number of a governor's last sync is kept after its last sync.
const SYNC_MEMORY_MS: i64 = 24 * 60 * 60 * 1000;

/// Whether `sync` was applied before (a retry); records its number either way.
fn seen_before(conn: &Connection, sync: &LeaseSync) -> Result<bool> {
    let seq = i64::try_from(sync.seq).unwrap_or(i64::MAX);
    let now = millis(sync.now);
    let seen: Option<i64> = optional_row(
        conn,
        "SELECT seq FROM lease_syncs WHERE holder = ?1",
        [&sync.holder],
        |row| row.get(0),
    )?;
    conn.prepare_cached(
        "INSERT INTO lease_syncs (holder, seq, at) VALUES (?1, ?2, ?3)
         ON CONFLICT (holder) DO UPDATE SET seq = MAX(seq, excluded.seq), at = excluded.at",
    )
    .and_then(|mut stmt| stmt.execute(params![sync.holder, seq, now]))
    .map_err(from_sqlite)?;
    conn.prepare_cached("DELETE FROM lease_syncs WHERE at < ?1")
        .and_then(|mut stmt| stmt.execute([now - SYNC_MEMORY_MS]))
        .map_err(from_sqlite)?;
    Ok(seen.is_some_and(|seen| seen >= seq))
}

/// A retry of an applied sync: the same scopes, asking and charging nothing.
fn as_retry(sync: &LeaseSync) -> LeaseSync {
    let mut retry = sync.clone();
    retry.events.clear();
    for entry in &mut retry.entries {
        (entry.charge, entry.give_back, entry.want, entry.need) = (0, 0, 0, 0);
    }
    for entry in &mut retry.rates {
        entry.charges.clear();
        (entry.give_back, entry.want, entry.need) = (0, 0, 0);
    }
    retry
}

fn sync_leases(conn: &Connection, sync: &LeaseSync) -> Result<Synced> {
    if seen_before(conn, sync)? {
        return apply_sync(conn, &as_retry(sync));
    }
    apply_sync(conn, sync)
}

fn apply_sync(conn: &Connection, sync: &LeaseSync) -> Result<Synced> {
    let budgets = sync
        .entries
        .iter()
        .map(|entry| sync_entry(conn, entry, sync))
        .collect::<Result<Vec<_>>>()?;
    let rates = sync
        .rates
        .iter()
        .map(|entry| rates::sync_rate(conn, entry, sync))
        .collect::<Result<Vec<_>>>()?;
    renew(conn, sync)?;
    rates::renew(conn, sync)?;
    for event in &sync.events {
        record_event(conn, event)?;
    }
    Ok(Synced {
        budgets,
        rates,
        recalled: rates::recalled(conn, sync)?,
    })
}

/// One page of daily usage to read.
struct Days {
    org: OrgId,
    user: Option<UserId>,
    from: String,
    to: String,
    /// The day and model of the row the page starts after; empty strings,
    /// which sort before every day, for the first page.
    after: (String, String),
    limit: u32,
}

/// A page of an organization's usage per day and model, after `(?4, ?5)`.
const ORG_DAYS: &str = "SELECT day, model, SUM(tokens), SUM(requests) FROM usage_daily
     WHERE org_id = ?1 AND day >= ?2 AND day <= ?3 AND (day, model) > (?4, ?5)
     GROUP BY day, model ORDER BY day, model LIMIT ?6";

/// The same for one user (`?7`), read through the user's index.
const USER_DAYS: &str = "SELECT day, model, SUM(tokens), SUM(requests) FROM usage_daily
     WHERE user_id = ?7 AND org_id = ?1 AND day >= ?2 AND day <= ?3
       AND (day, model) > (?4, ?5)
     GROUP BY day, model ORDER BY day, model LIMIT ?6";

fn daily_usage(conn: &Connection, days: &Days) -> Result<Vec<DailyUsage>> {
    let sql = if days.user.is_some() {
        USER_DAYS
    } else {
        ORG_DAYS
    };
    let mut stmt = conn.prepare_cached(sql).map_err(from_sqlite)?;
    let (org, from, to, limit) = (days.org.0, &days.from, &days.to, days.limit);
    let (day, model) = &days.after;
    let read = |row: &rusqlite::Row<'_>| {
        Ok(DailyUsage {
            day: row.get(0)?,
            model: row.get(1)?,
            tokens: row.get(2)?,
            requests: row.get(3)?,
        })
    };
    let rows = match days.user {
        Some(user) => stmt.query_map(params![org, from, to, day, model, limit, user.0], read),
        None => stmt.query_map(params![org, from, to, day, model, limit], read),
    }
    .map_err(from_sqlite)?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .map_err(from_sqlite)
}

/// Users of organization `?1` with their use in period `?2`, chosen by `filter`.
fn user_usage_sql(filter: &str) -> String {
    format!(
        "SELECT u.id, u.email, u.monthly_token_limit,
                COALESCE(c.used_tokens, 0), COALESCE(c.reserved_tokens, 0),
                (SELECT COUNT(*) FROM usage_events e WHERE e.user_id = u.id AND e.period = ?2)
         FROM users u
         LEFT JOIN usage_counters c
           ON c.scope = 'user' AND c.scope_id = u.id AND c.period = ?2
         WHERE u.org_id = ?1 AND {filter}"
    )
}

/// One user's use, or a page of the organization's users: ids above
/// `after`, at most `limit`, by id.
fn user_usage(
    conn: &Connection,
    org: OrgId,
    user: Option<UserId>,
    period: &str,
    after: Option<UserId>,
    limit: u32,
) -> Result<Vec<UserUsage>> {
    let read = |row: &rusqlite::Row<'_>| {
        Ok(UserUsage {
            user_id: UserId(row.get(0)?),
            email: row.get(1)?,
            monthly_token_limit: row.get(2)?,
            counter: Counter {
                used: row.get(3)?,
                reserved: row.get(4)?,
            },
            requests: row.get(5)?,
        })
    };
    let rows = match user {
        Some(user) => {
            let mut stmt = conn
                .prepare_cached(&user_usage_sql("u.id = ?3"))
                .map_err(from_sqlite)?;
            stmt.query_map(params![org.0, period, user.0], read)
                .map_err(from_sqlite)?
                .collect::<rusqlite::Result<Vec<_>>>()
        }
        None => {
            let filter = "u.id > ?3 ORDER BY u.id LIMIT ?4";
            let mut stmt = conn
                .prepare_cached(&user_usage_sql(filter))
                .map_err(from_sqlite)?;
            let after = after.map_or(0, |a| a.0);
            stmt.query_map(params![org.0, period, after, limit], read)
                .map_err(from_sqlite)?
                .collect::<rusqlite::Result<Vec<_>>>()
        }
    };
    rows.map_err(from_sqlite)
}

fn model_usage(
    conn: &Connection,
    org: OrgId,
    user: Option<UserId>,
    period: &str,
) -> Result<Vec<ModelUsage>> {
    let read = |row: &rusqlite::Row<'_>| {
        Ok(ModelUsage {
            model: row.get(0)?,
            tokens: row.get(1)?,
            requests: row.get(2)?,
        })
    };
    // One user's events are read through the user's index.
    let (sql, user) = match user {
        Some(user) => (
            "SELECT model, SUM(tokens), COUNT(*) FROM usage_events
             WHERE user_id = ?3 AND period = ?2 AND org_id = ?1
             GROUP BY model ORDER BY model",
            Some(user.0),
        ),
        None => (
            "SELECT model, SUM(tokens), COUNT(*) FROM usage_events
             WHERE org_id = ?1 AND period = ?2
             GROUP BY model ORDER BY model",
            None,
        ),
    };
    let mut stmt = conn.prepare_cached(sql).map_err(from_sqlite)?;
    let rows = match user {
        Some(user) => stmt.query_map(params![org.0, period, user], read),
        None => stmt.query_map(params![org.0, period], read),
    }
    .map_err(from_sqlite)?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .map_err(from_sqlite)
}

#[async_trait]
impl UsageStore for SqliteStore {
    async fn sync_leases(&self, sync: &LeaseSync) -> Result<Synced> {
        let sync = sync.clone();
        self.run(move |conn| write(conn, |tx| sync_leases(tx, &sync)))
            .await
    }

    async fn budget_state(&self, org: OrgId, user: UserId, period: &str) -> Result<BudgetState> {
        let period = period.to_owned();
        self.run(move |conn| state(conn, org, user, &period)).await
    }

    async fn usage_report(
        &self,
        org: OrgId,
        user: Option<UserId>,
        period: &str,
        after: Option<UserId>,
        limit: u32,
    ) -> Result<UsageReport> {
        let period = period.to_owned();
        self.run(move |conn| {
            Ok(UsageReport {
                monthly_token_budget: org_budget(conn, org)?,
                org: counter(conn, ORG, org.0, &period)?,
                users: user_usage(conn, org, user, &period, after, limit)?,
                models: model_usage(conn, org, user, &period)?,
                period,
                next_after: None,
            })
        })
        .await
    }

    async fn daily_usage(
        &self,
        org: OrgId,
        user: Option<UserId>,
        from: &str,
        to: &str,
        after: Option<&DayModel>,
        limit: u32,
    ) -> Result<Vec<DailyUsage>> {
        let days = Days {
            org,
            user,
            from: from.to_owned(),
            to: to.to_owned(),
            after: after.map_or_else(Default::default, |a| (a.day.clone(), a.model.clone())),
            limit,
        };
        self.run(move |conn| daily_usage(conn, &days)).await
    }
}
