//! Usage counters, budget leases, usage events and reports.
//!
//! A lease sync is one statement: `ias_sync_leases()` (migration 5)
//! applies every entry under row locks taken in one fixed order, renews
//! the holder's leases, appends the usage events and their daily
//! roll-ups, and answers a row per entry. It runs on the store's kept
//! connection, outside an explicit transaction, so it costs one round
//! trip; a statement is atomic on its own.

use std::collections::BTreeMap;

use async_trait::async_trait;
use ias_core::lease::{LeaseState, LeaseSync, Synced, UsageEvent};
use ias_core::usage::{DailyUsage, DayModel, ModelUsage, UserUsage};
use ias_core::{BudgetState, Counter, Error, OrgId, Result, UsageReport, UsageStore, UserId};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use crate::rates;
use crate::rows::millis;
use crate::store::{PgQuery, PostgresStore, all, optional};

const ORG: &str = "org";
const USER: &str = "user";

/// One scope's (`$1`, `$2`) counter in period `$3`.
pub const COUNTER: &str = "SELECT used_tokens, reserved_tokens FROM usage_counters
     WHERE scope = $1 AND scope_id = $2 AND period = $3";

/// A user's (`$1`) own limit, when it belongs to organization `$2`.
pub const USER_LIMIT: &str = "SELECT monthly_token_limit FROM users WHERE id = $1 AND org_id = $2";

/// A page of an organization's (`$1`) usage per day and model, for days
/// `$2..=$3`, after the day and model `($4, $5)`, at most `$6` rows.
pub const ORG_DAYS: &str =
    "SELECT day, model, SUM(tokens)::BIGINT, SUM(requests)::BIGINT FROM usage_daily
     WHERE org_id = $1 AND day >= $2 AND day <= $3 AND (day, model) > ($4, $5)
     GROUP BY day, model ORDER BY day, model LIMIT $6";

/// The same for one user (`$7`), read through the user's index.
pub const USER_DAYS: &str =
    "SELECT day, model, SUM(tokens)::BIGINT, SUM(requests)::BIGINT FROM usage_daily
     WHERE user_id = $7 AND org_id = $1 AND day >= $2 AND day <= $3
       AND (day, model) > ($4, $5)
     GROUP BY day, model ORDER BY day, model LIMIT $6";

/// Users of organization `$1` with their use in period `$2`, chosen by `filter`.
fn user_usage_sql(filter: &str) -> String {
    format!(
        "SELECT u.id, u.email, u.monthly_token_limit,
                COALESCE(c.used_tokens, 0), COALESCE(c.reserved_tokens, 0),
                (SELECT COUNT(*) FROM usage_events e WHERE e.user_id = u.id AND e.period = $2)
         FROM users u
         LEFT JOIN usage_counters c
           ON c.scope = 'user' AND c.scope_id = u.id AND c.period = $2
         WHERE u.org_id = $1 AND {filter}"
    )
}

/// A page of an organization's users with their use: ids above `$3`, at most `$4`.
pub fn users_usage_sql() -> String {
    user_usage_sql("u.id > $3 ORDER BY u.id LIMIT $4")
}

/// One user (`$3`) of an organization with its use.
pub fn one_user_usage_sql() -> String {
    user_usage_sql("u.id = $3")
}

/// An organization's (`$1`) use per model in period `$2`.
pub const MODEL_USAGE: &str = "SELECT model, SUM(tokens)::BIGINT, COUNT(*) FROM usage_events
     WHERE org_id = $1 AND period = $2
     GROUP BY model ORDER BY model";

/// One user's (`$3`, of organization `$1`) use per model in period `$2`,
/// read through the user's index.
pub const USER_MODEL_USAGE: &str = "SELECT model, SUM(tokens)::BIGINT, COUNT(*) FROM usage_events
     WHERE user_id = $3 AND period = $2 AND org_id = $1
     GROUP BY model ORDER BY model";

async fn counter(conn: &mut PgConnection, scope: &str, id: i64, period: &str) -> Result<Counter> {
    let query = sqlx::query(COUNTER).bind(scope).bind(id).bind(period);
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
    let query = sqlx::query(USER_LIMIT).bind(user.0).bind(org.0);
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

/// The statement of a lease sync: every argument of `ias_sync_leases()`, column by column.
const SYNC: &str = "SELECT o_part, o_ord, o_limit, o_used, o_held, o_lease, o_granted, o_wait,
        o_recall, o_scope, o_scope_id, o_kind
 FROM ias_sync_leases($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                      $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31,
                      $32, $33, $34)";

fn bind_budgets<'q>(query: PgQuery<'q>, sync: &'q LeaseSync) -> PgQuery<'q> {
    let entries = &sync.entries;
    let int =
        |f: fn(&ias_core::lease::LeaseEntry) -> i64| entries.iter().map(f).collect::<Vec<_>>();
    query
        .bind(entries.iter().map(|e| e.scope.as_str()).collect::<Vec<_>>())
        .bind(int(|e| e.scope_id))
        .bind(
            entries
                .iter()
                .map(|e| e.period.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(int(|e| e.charge))
        .bind(int(|e| e.give_back))
        .bind(int(|e| e.want))
        .bind(int(|e| e.need))
}

fn bind_events<'q>(query: PgQuery<'q>, events: &'q [UsageEvent]) -> PgQuery<'q> {
    let int = |f: fn(&UsageEvent) -> i64| events.iter().map(f).collect::<Vec<_>>();
    let text = |f: fn(&UsageEvent) -> &str| events.iter().map(f).collect::<Vec<_>>();
    query
        .bind(int(|e| e.org_id.0))
        .bind(int(|e| e.user_id.0))
        .bind(int(|e| e.key_id.0))
        .bind(text(|e| &e.model))
        .bind(text(|e| &e.period))
        .bind(int(|e| e.reserved))
        .bind(int(|e| e.tokens))
        .bind(int(|e| millis(e.at)))
}

/// The events summed per day, user and model, in key order, so that rows
/// are locked in one order by every writer.
fn bind_roll_up<'q>(query: PgQuery<'q>, events: &'q [UsageEvent]) -> PgQuery<'q> {
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
    query
        .bind(orgs)
        .bind(dates)
        .bind(users)
        .bind(models)
        .bind(tokens)
        .bind(requests)
}

/// One row of the answer: its part (`budget`, `rate`, `recall`, `reclaimed`) and position.
fn part(row: &PgRow) -> sqlx::Result<(String, i32)> {
    Ok((row.try_get(0)?, row.try_get(1)?))
}

fn budget_state(row: &PgRow) -> sqlx::Result<LeaseState> {
    Ok(LeaseState {
        limit: row.try_get(2)?,
        used: row.try_get(3)?,
        held: row.try_get(4)?,
        lease: row.try_get(5)?,
        granted: row.try_get(6)?,
    })
}

/// What the statement answered, sorted into the parts of a [`Synced`].
enum Answer {
    Budget(LeaseState),
    Rate(ias_core::lease::RateState),
    Recall(ias_core::lease::RateScope),
    Reclaimed,
}

fn answer(row: &PgRow) -> sqlx::Result<Answer> {
    let (part, _) = part(row)?;
    Ok(match part.as_str() {
        "budget" => Answer::Budget(budget_state(row)?),
        "rate" => Answer::Rate(rates::state(row)?),
        "recall" => match rates::recalled(row)? {
            Some(scope) => Answer::Recall(scope),
            None => Answer::Reclaimed,
        },
        _ => {
            rates::log_reclaimed(row)?;
            Answer::Reclaimed
        }
    })
}

async fn sync_leases(conn: &mut PgConnection, sync: &LeaseSync) -> Result<Synced> {
    let query = sqlx::query(SYNC)
        .bind(&sync.holder)
        .bind(i64::try_from(sync.seq).unwrap_or(i64::MAX))
        .bind(millis(sync.now))
        .bind(millis(sync.lease_expires_at));
    let query = bind_budgets(query, sync);
    let query = rates::bind(query, &sync.rates);
    let query = bind_events(query, &sync.events);
    let query = bind_roll_up(query, &sync.events);
    let mut synced = Synced::default();
    for answer in all(conn, query, answer).await? {
        match answer {
            Answer::Budget(state) => synced.budgets.push(state),
            Answer::Rate(state) => synced.rates.push(state),
            Answer::Recall(scope) => synced.recalled.push(scope),
            Answer::Reclaimed => {}
        }
    }
    let complete =
        synced.budgets.len() == sync.entries.len() && synced.rates.len() == sync.rates.len();
    if !complete {
        return Err(crate::error::store(format!(
            "a lease sync answered {} budget and {} rate states for {} and {}",
            synced.budgets.len(),
            synced.rates.len(),
            sync.entries.len(),
            sync.rates.len()
        )));
    }
    Ok(synced)
}

/// One page of daily usage to read.
struct Days<'a> {
    org: OrgId,
    user: Option<UserId>,
    from: &'a str,
    to: &'a str,
    after: Option<&'a DayModel>,
    limit: u32,
}

async fn daily_usage(conn: &mut PgConnection, days: Days<'_>) -> Result<Vec<DailyUsage>> {
    let sql = if days.user.is_some() {
        USER_DAYS
    } else {
        ORG_DAYS
    };
    // Empty strings sort before every day: the first page.
    let (day, model) = days
        .after
        .map_or(("", ""), |a| (a.day.as_str(), a.model.as_str()));
    let mut query = sqlx::query(sql)
        .bind(days.org.0)
        .bind(days.from)
        .bind(days.to)
        .bind(day)
        .bind(model)
        .bind(i64::from(days.limit));
    if let Some(user) = days.user {
        query = query.bind(user.0);
    }
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

/// One user's use, or a page of the organization's users: ids above
/// `after`, at most `limit`, by id.
async fn user_usage(
    conn: &mut PgConnection,
    org: OrgId,
    user: Option<UserId>,
    period: &str,
    after: Option<UserId>,
    limit: u32,
) -> Result<Vec<UserUsage>> {
    let sql = match user {
        Some(_) => one_user_usage_sql(),
        None => users_usage_sql(),
    };
    let query = sqlx::query(&sql).bind(org.0).bind(period);
    let query = match user {
        Some(user) => query.bind(user.0),
        None => query.bind(after.map_or(0, |a| a.0)).bind(i64::from(limit)),
    };
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
    let query = match user {
        Some(user) => sqlx::query(USER_MODEL_USAGE)
            .bind(org.0)
            .bind(period)
            .bind(user.0),
        None => sqlx::query(MODEL_USAGE).bind(org.0).bind(period),
    };
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
    async fn sync_leases(&self, sync: &LeaseSync) -> Result<Synced> {
        let mut hot = self.hot().await?;
        let synced = sync_leases(hot.conn()?, sync).await;
        hot.check(synced)
    }

    async fn budget_state(&self, org: OrgId, user: UserId, period: &str) -> Result<BudgetState> {
        state(&mut *self.conn().await?, org, user, period).await
    }

    async fn usage_report(
        &self,
        org: OrgId,
        user: Option<UserId>,
        period: &str,
        after: Option<UserId>,
        limit: u32,
    ) -> Result<UsageReport> {
        let mut conn = self.conn().await?;
        Ok(UsageReport {
            monthly_token_budget: org_budget(&mut conn, org).await?,
            org: counter(&mut conn, ORG, org.0, period).await?,
            users: user_usage(&mut conn, org, user, period, after, limit).await?,
            models: model_usage(&mut conn, org, user, period).await?,
            period: period.to_owned(),
            next_after: None,
        })
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
            from,
            to,
            after,
            limit,
        };
        daily_usage(&mut *self.conn().await?, days).await
    }
}
