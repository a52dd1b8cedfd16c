//! Usage counters, budget leases, usage events and reports.
//!
//! # Locking
//!
//! A lease sync first makes sure every counter row it touches exists, then
//! locks them all with `SELECT … FOR UPDATE`, both in one fixed order
//! (scope, id, period), so two syncs on overlapping scopes wait for each
//! other instead of deadlocking, and no other sync can read or change
//! those counters, or the leases under them, until this one commits. Other
//! holders' leases are only taken back (deleted) under their scope's
//! counter lock. Renewing the holder's own leases elsewhere skips rows that
//! another transaction has locked: those are either being renewed by a
//! concurrent sync of the same holder or taken back because they expired,
//! and waiting for them could close a cycle. Daily roll-ups are written in
//! one fixed order too.

use std::collections::BTreeMap;

use async_trait::async_trait;
use ias_core::lease::{self, LeaseEntry, LeaseState, LeaseSync, UsageEvent};
use ias_core::usage::{DailyUsage, ModelUsage, UserUsage};
use ias_core::{
    BudgetState, Counter, Error, LimitScope, OrgId, Result, UsageReport, UsageStore, UserId,
};
use sqlx::{PgConnection, Row};

use crate::rows::millis;
use crate::store::{PostgresStore, all, commit, execute, optional};

const ORG: &str = "org";
const USER: &str = "user";

/// A counter row's key: scope, scope id, period.
type CounterKey = (String, i64, String);

fn counter_key(entry: &LeaseEntry) -> CounterKey {
    (
        entry.scope.as_str().to_owned(),
        entry.scope_id,
        entry.period.clone(),
    )
}

async fn counter(conn: &mut PgConnection, scope: &str, id: i64, period: &str) -> Result<Counter> {
    let query = sqlx::query(
        "SELECT used_tokens, reserved_tokens FROM usage_counters
         WHERE scope = $1 AND scope_id = $2 AND period = $3",
    )
    .bind(scope)
    .bind(id)
    .bind(period);
    let counter = optional(conn, query, |row| {
        Ok(Counter {
            used: row.try_get(0)?,
            reserved: row.try_get(1)?,
        })
    })
    .await?;
    Ok(counter.unwrap_or_default())
}

async fn org_budget(conn: &mut PgConnection, org: OrgId) -> Result<i64> {
    let query =
        sqlx::query("SELECT monthly_token_budget FROM organizations WHERE id = $1").bind(org.0);
    optional(conn, query, |row| row.try_get(0))
        .await?
        .ok_or_else(|| Error::not_found("organization", org.to_string()))
}

async fn state(
    conn: &mut PgConnection,
    org: OrgId,
    user: UserId,
    period: &str,
) -> Result<BudgetState> {
    let org_limit = org_budget(conn, org).await?;
    let query = sqlx::query("SELECT monthly_token_limit FROM users WHERE id = $1 AND org_id = $2")
        .bind(user.0)
        .bind(org.0);
    let user_limit: Option<i64> = optional(conn, query, |row| row.try_get(0))
        .await?
        .ok_or_else(|| Error::not_found("user", user.to_string()))?;
    Ok(BudgetState {
        org_limit,
        org: counter(conn, ORG, org.0, period).await?,
        user_limit,
        user: counter(conn, USER, user.0, period).await?,
    })
}

/// Creates the sync's missing counter rows, then locks all of them, in one fixed order.
async fn lock_counters(
    conn: &mut PgConnection,
    sync: &LeaseSync,
) -> Result<BTreeMap<CounterKey, Counter>> {
    if sync.entries.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut scopes = Vec::new();
    let mut ids = Vec::new();
    let mut periods = Vec::new();
    for entry in &sync.entries {
        scopes.push(entry.scope.as_str());
        ids.push(entry.scope_id);
        periods.push(entry.period.as_str());
    }
    let create = sqlx::query(
        "INSERT INTO usage_counters (scope, scope_id, period)
         SELECT s, i, p FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::TEXT[]) AS t (s, i, p)
         ORDER BY s, i, p
         ON CONFLICT DO NOTHING",
    )
    .bind(&scopes)
    .bind(&ids)
    .bind(&periods);
    execute(conn, create).await?;
    let lock = sqlx::query(
        "SELECT scope, scope_id, period, used_tokens, reserved_tokens FROM usage_counters
         WHERE (scope, scope_id, period) IN
           (SELECT s, i, p FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::TEXT[]) AS t (s, i, p))
         ORDER BY scope, scope_id, period
         FOR UPDATE",
    )
    .bind(&scopes)
    .bind(&ids)
    .bind(&periods);
    let rows = all(conn, lock, |row| {
        let key = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        let counter = Counter {
            used: row.try_get(3)?,
            reserved: row.try_get(4)?,
        };
        Ok((key, counter))
    })
    .await?;
    Ok(rows.into_iter().collect())
}

async fn scope_limit(conn: &mut PgConnection, entry: &LeaseEntry) -> Result<Option<i64>> {
    let (sql, entity) = match entry.scope {
        LimitScope::Org => (
            "SELECT monthly_token_budget FROM organizations WHERE id = $1",
            "organization",
        ),
        _ => (
            "SELECT monthly_token_limit FROM users WHERE id = $1",
            "user",
        ),
    };
    optional(conn, sqlx::query(sql).bind(entry.scope_id), |row| {
        row.try_get::<Option<i64>, _>(0)
    })
    .await?
    .ok_or_else(|| Error::not_found(entity, entry.scope_id.to_string()))
}

/// Takes back other holders' expired leases on the entry's scope and period.
async fn reclaim(
    conn: &mut PgConnection,
    entry: &LeaseEntry,
    holder: &str,
    now: i64,
) -> Result<i64> {
    let query = sqlx::query(
        "DELETE FROM leases
         WHERE scope = $1 AND scope_id = $2 AND period = $3 AND holder <> $4 AND expires_at <= $5
         RETURNING tokens",
    )
    .bind(entry.scope.as_str())
    .bind(entry.scope_id)
    .bind(&entry.period)
    .bind(holder)
    .bind(now);
    let taken = all(conn, query, |row| row.try_get::<i64, _>(0)).await?;
    let reclaimed = taken.iter().sum();
    if reclaimed > 0 {
        tracing::warn!(
            scope = entry.scope.as_str(),
            id = entry.scope_id,
            tokens = reclaimed,
            "took back expired leases of a governor that stopped"
        );
    }
    Ok(reclaimed)
}

async fn lease_of(conn: &mut PgConnection, entry: &LeaseEntry, holder: &str) -> Result<i64> {
    let query = sqlx::query(
        "SELECT tokens FROM leases
         WHERE scope = $1 AND scope_id = $2 AND period = $3 AND holder = $4",
    )
    .bind(entry.scope.as_str())
    .bind(entry.scope_id)
    .bind(&entry.period)
    .bind(holder);
    Ok(optional(conn, query, |row| row.try_get(0))
        .await?
        .unwrap_or(0))
}

async fn store_lease(
    conn: &mut PgConnection,
    entry: &LeaseEntry,
    sync: &LeaseSync,
    tokens: i64,
) -> Result<()> {
    let (scope, id, period, holder) = (
        entry.scope.as_str(),
        entry.scope_id,
        &entry.period,
        &sync.holder,
    );
    let query = if tokens > 0 {
        sqlx::query(
            "INSERT INTO leases (scope, scope_id, period, holder, tokens, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (scope, scope_id, period, holder)
             DO UPDATE SET tokens = excluded.tokens, expires_at = excluded.expires_at",
        )
        .bind(scope)
        .bind(id)
        .bind(period)
        .bind(holder)
        .bind(tokens)
        .bind(millis(sync.lease_expires_at))
    } else {
        sqlx::query(
            "DELETE FROM leases
             WHERE scope = $1 AND scope_id = $2 AND period = $3 AND holder = $4",
        )
        .bind(scope)
        .bind(id)
        .bind(period)
        .bind(holder)
    };
    execute(conn, query).await?;
    Ok(())
}

async fn sync_entry(
    conn: &mut PgConnection,
    entry: &LeaseEntry,
    sync: &LeaseSync,
    counters: &mut BTreeMap<CounterKey, Counter>,
) -> Result<LeaseState> {
    let limit = scope_limit(conn, entry).await?;
    let key = counter_key(entry);
    let mut counter = counters.get(&key).copied().unwrap_or_default();
    if entry.want > 0 {
        let reclaimed = reclaim(conn, entry, &sync.holder, millis(sync.now)).await?;
        counter.reserved = (counter.reserved - reclaimed).max(0);
    }
    let lease = lease_of(conn, entry, &sync.holder).await?;
    let state = lease::apply(entry, limit, counter.used, counter.reserved, lease);
    let counter = Counter {
        used: state.used,
        reserved: state.held,
    };
    counters.insert(key, counter);
    store_lease(conn, entry, sync, state.lease).await?;
    Ok(state)
}

async fn store_counters(
    conn: &mut PgConnection,
    counters: &BTreeMap<CounterKey, Counter>,
) -> Result<()> {
    if counters.is_empty() {
        return Ok(());
    }
    let mut scopes = Vec::new();
    let mut ids = Vec::new();
    let mut periods = Vec::new();
    let mut used = Vec::new();
    let mut reserved = Vec::new();
    for ((scope, id, period), counter) in counters {
        scopes.push(scope.as_str());
        ids.push(*id);
        periods.push(period.as_str());
        used.push(counter.used);
        reserved.push(counter.reserved);
    }
    let query = sqlx::query(
        "UPDATE usage_counters c SET used_tokens = t.u, reserved_tokens = t.r
         FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::TEXT[], $4::BIGINT[], $5::BIGINT[])
           AS t (s, i, p, u, r)
         WHERE c.scope = t.s AND c.scope_id = t.i AND c.period = t.p",
    )
    .bind(&scopes)
    .bind(&ids)
    .bind(&periods)
    .bind(&used)
    .bind(&reserved);
    execute(conn, query).await?;
    Ok(())
}

/// Renews every lease of the holder, except rows another transaction holds (see the module docs).
async fn renew(conn: &mut PgConnection, sync: &LeaseSync) -> Result<()> {
    let query = sqlx::query(
        "UPDATE leases SET expires_at = $2
         WHERE (scope, scope_id, period, holder) IN
           (SELECT scope, scope_id, period, holder FROM leases
            WHERE holder = $1 FOR UPDATE SKIP LOCKED)",
    )
    .bind(&sync.holder)
    .bind(millis(sync.lease_expires_at));
    execute(conn, query).await?;
    Ok(())
}

async fn record_events(conn: &mut PgConnection, events: &[UsageEvent]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&UsageEvent) -> i64| events.iter().map(f).collect::<Vec<_>>();
    let text = |f: fn(&UsageEvent) -> &str| events.iter().map(f).collect::<Vec<_>>();
    let query = sqlx::query(
        "INSERT INTO usage_events
           (org_id, user_id, key_id, model, period, reserved_tokens, tokens, created_at)
         SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::BIGINT[], $4::TEXT[],
                              $5::TEXT[], $6::BIGINT[], $7::BIGINT[], $8::BIGINT[])",
    )
    .bind(column(|e| e.org_id.0))
    .bind(column(|e| e.user_id.0))
    .bind(column(|e| e.key_id.0))
    .bind(text(|e| &e.model))
    .bind(text(|e| &e.period))
    .bind(column(|e| e.reserved))
    .bind(column(|e| e.tokens))
    .bind(column(|e| millis(e.at)));
    execute(conn, query).await?;
    roll_up(conn, events).await
}

/// Adds the events to their daily rows, one row per day, user and model, in key order.
async fn roll_up(conn: &mut PgConnection, events: &[UsageEvent]) -> Result<()> {
    let mut days: BTreeMap<(i64, &str, i64, &str), (i64, i64)> = BTreeMap::new();
    for e in events {
        let day = days
            .entry((e.org_id.0, &e.day, e.user_id.0, &e.model))
            .or_default();
        *day = (day.0 + e.tokens, day.1 + 1);
    }
    let mut orgs = Vec::new();
    let mut dates = Vec::new();
    let mut users = Vec::new();
    let mut models = Vec::new();
    let mut tokens = Vec::new();
    let mut requests = Vec::new();
    for ((org, date, user, model), (t, r)) in days {
        orgs.push(org);
        dates.push(date);
        users.push(user);
        models.push(model);
        tokens.push(t);
        requests.push(r);
    }
    // UNNEST yields the rows in array order, so rows are locked in key order.
    let query = sqlx::query(
        "INSERT INTO usage_daily (org_id, day, user_id, model, tokens, requests)
         SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::BIGINT[], $4::TEXT[],
                              $5::BIGINT[], $6::BIGINT[])
         ON CONFLICT (org_id, day, user_id, model)
         DO UPDATE SET tokens = usage_daily.tokens + excluded.tokens,
                       requests = usage_daily.requests + excluded.requests",
    )
    .bind(orgs)
    .bind(dates)
    .bind(users)
    .bind(models)
    .bind(tokens)
    .bind(requests);
    execute(conn, query).await?;
    Ok(())
}

async fn sync_leases(conn: &mut PgConnection, sync: &LeaseSync) -> Result<Vec<LeaseState>> {
    let mut counters = lock_counters(conn, sync).await?;
    let mut states = Vec::with_capacity(sync.entries.len());
    for entry in &sync.entries {
        states.push(sync_entry(conn, entry, sync, &mut counters).await?);
    }
    store_counters(conn, &counters).await?;
    renew(conn, sync).await?;
    record_events(conn, &sync.events).await?;
    Ok(states)
}

async fn daily_usage(
    conn: &mut PgConnection,
    org: OrgId,
    user: Option<UserId>,
    from: &str,
    to: &str,
) -> Result<Vec<DailyUsage>> {
    let query = sqlx::query(
        "SELECT day, model, SUM(tokens)::BIGINT, SUM(requests)::BIGINT FROM usage_daily
         WHERE org_id = $1 AND day >= $2 AND day <= $3 AND ($4::BIGINT IS NULL OR user_id = $4)
         GROUP BY day, model ORDER BY day, model",
    )
    .bind(org.0)
    .bind(from)
    .bind(to)
    .bind(user.map(|u| u.0));
    all(conn, query, |row| {
        Ok(DailyUsage {
            day: row.try_get(0)?,
            model: row.try_get(1)?,
            tokens: row.try_get(2)?,
            requests: row.try_get(3)?,
        })
    })
    .await
}

async fn user_usage(
    conn: &mut PgConnection,
    org: OrgId,
    user: Option<UserId>,
    period: &str,
) -> Result<Vec<UserUsage>> {
    let query = sqlx::query(
        "SELECT u.id, u.email, u.monthly_token_limit,
                COALESCE(c.used_tokens, 0), COALESCE(c.reserved_tokens, 0),
                (SELECT COUNT(*) FROM usage_events e WHERE e.user_id = u.id AND e.period = $2)
         FROM users u
         LEFT JOIN usage_counters c
           ON c.scope = 'user' AND c.scope_id = u.id AND c.period = $2
         WHERE u.org_id = $1 AND ($3::BIGINT IS NULL OR u.id = $3)
         ORDER BY u.email",
    )
    .bind(org.0)
    .bind(period)
    .bind(user.map(|u| u.0));
    all(conn, query, |row| {
        Ok(UserUsage {
            user_id: UserId(row.try_get(0)?),
            email: row.try_get(1)?,
            monthly_token_limit: row.try_get(2)?,
            counter: Counter {
                used: row.try_get(3)?,
                reserved: row.try_get(4)?,
            },
            requests: row.try_get(5)?,
        })
    })
    .await
}

async fn model_usage(
    conn: &mut PgConnection,
    org: OrgId,
    user: Option<UserId>,
    period: &str,
) -> Result<Vec<ModelUsage>> {
    let query = sqlx::query(
        "SELECT model, SUM(tokens)::BIGINT, COUNT(*) FROM usage_events
         WHERE org_id = $1 AND period = $2 AND ($3::BIGINT IS NULL OR user_id = $3)
         GROUP BY model ORDER BY model",
    )
    .bind(org.0)
    .bind(period)
    .bind(user.map(|u| u.0));
    all(conn, query, |row| {
        Ok(ModelUsage {
            model: row.try_get(0)?,
            tokens: row.try_get(1)?,
            requests: row.try_get(2)?,
        })
    })
    .await
}

#[async_trait]
impl UsageStore for PostgresStore {
    async fn sync_leases(&self, sync: &LeaseSync) -> Result<Vec<LeaseState>> {
        let mut tx = self.begin().await?;
        let states = sync_leases(&mut tx, sync).await?;
        commit(tx).await?;
        Ok(states)
    }

    async fn budget_state(&self, org: OrgId, user: UserId, period: &str) -> Result<BudgetState> {
        state(&mut *self.conn().await?, org, user, period).await
    }

    async fn usage_report(
        &self,
        org: OrgId,
        user: Option<UserId>,
        period: &str,
    ) -> Result<UsageReport> {
        let mut conn = self.conn().await?;
        Ok(UsageReport {
            monthly_token_budget: org_budget(&mut conn, org).await?,
            org: counter(&mut conn, ORG, org.0, period).await?,
            users: user_usage(&mut conn, org, user, period).await?,
            models: model_usage(&mut conn, org, user, period).await?,
            period: period.to_owned(),
        })
    }

    async fn daily_usage(
        &self,
        org: OrgId,
        user: Option<UserId>,
        from: &str,
        to: &str,
    ) -> Result<Vec<DailyUsage>> {
        daily_usage(&mut *self.conn().await?, org, user, from, to).await
    }
}
