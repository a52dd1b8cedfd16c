//! Reservations, counters and usage reports.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ias_core::budget::{self, ReserveOutcome, ReserveRequest};
use ias_core::usage::{ModelUsage, UserUsage};
use ias_core::{
    BudgetState, Counter, Error, OrgId, ReservationId, Result, Settlement, UsageReport, UsageStore,
    UserId,
};
use rusqlite::{Connection, params};

use crate::error::from_sqlite;
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

/// Adds `used` and `reserved` (either may be negative) to one counter.
fn bump(
    conn: &Connection,
    scope: &str,
    id: i64,
    period: &str,
    used: i64,
    reserved: i64,
) -> Result<()> {
    let updated = conn
        .prepare_cached(
            "UPDATE usage_counters
             SET used_tokens = used_tokens + ?4, reserved_tokens = reserved_tokens + ?5
             WHERE scope = ?1 AND scope_id = ?2 AND period = ?3",
        )
        .and_then(|mut stmt| stmt.execute(params![scope, id, period, used, reserved]))
        .map_err(from_sqlite)?;
    if updated == 0 {
        conn.prepare_cached(
            "INSERT INTO usage_counters (scope, scope_id, period, used_tokens, reserved_tokens)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .and_then(|mut stmt| stmt.execute(params![scope, id, period, used, reserved]))
        .map_err(from_sqlite)?;
    }
    Ok(())
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

struct Held {
    org_id: i64,
    user_id: i64,
    key_id: i64,
    model: String,
    period: String,
    tokens: i64,
}

fn take_reservation(conn: &Connection, id: ReservationId) -> Result<Held> {
    let held = optional_row(
        conn,
        "DELETE FROM reservations WHERE id = ?1
         RETURNING org_id, user_id, key_id, model, period, tokens",
        [id.0],
        |row| {
            Ok(Held {
                org_id: row.get(0)?,
                user_id: row.get(1)?,
                key_id: row.get(2)?,
                model: row.get(3)?,
                period: row.get(4)?,
                tokens: row.get(5)?,
            })
        },
    )?;
    held.ok_or_else(|| Error::not_found("reservation", id.to_string()))
}

fn unhold(conn: &Connection, held: &Held, charged: i64) -> Result<()> {
    bump(conn, ORG, held.org_id, &held.period, charged, -held.tokens)?;
    bump(
        conn,
        USER,
        held.user_id,
        &held.period,
        charged,
        -held.tokens,
    )
}

/// Releases the organization's reservations that were neither settled nor released in time.
fn release_expired(conn: &Connection, org: OrgId, now: DateTime<Utc>) -> Result<()> {
    let expired: Vec<i64> = conn
        .prepare_cached("SELECT id FROM reservations WHERE org_id = ?1 AND expires_at <= ?2")
        .and_then(|mut stmt| {
            stmt.query_map(params![org.0, millis(now)], |row| row.get(0))?
                .collect()
        })
        .map_err(from_sqlite)?;
    for id in expired {
        let held = take_reservation(conn, ReservationId(id))?;
        unhold(conn, &held, 0)?;
        tracing::warn!(
            reservation = id,
            org = org.0,
            tokens = held.tokens,
            "released an expired reservation"
        );
    }
    Ok(())
}

fn reserve(conn: &Connection, req: &ReserveRequest) -> Result<ReserveOutcome> {
    release_expired(conn, req.org_id, req.created_at)?;
    let before = state(conn, req.org_id, req.user_id, &req.period)?;
    if let Some(exceeded) = budget::first_exceeded(&before, req.tokens) {
        return Ok(ReserveOutcome::Exceeded(exceeded));
    }
    conn.prepare_cached(
        "INSERT INTO reservations
           (org_id, user_id, key_id, model, period, tokens, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            req.org_id.0,
            req.user_id.0,
            req.key_id.0,
            req.model,
            req.period,
            req.tokens,
            millis(req.created_at),
            millis(req.expires_at)
        ])
    })
    .map_err(from_sqlite)?;
    let id = ReservationId(conn.last_insert_rowid());
    bump(conn, ORG, req.org_id.0, &req.period, 0, req.tokens)?;
    bump(conn, USER, req.user_id.0, &req.period, 0, req.tokens)?;
    Ok(ReserveOutcome::Reserved {
        id,
        state: before.reserving(req.tokens),
    })
}

fn settle(
    conn: &Connection,
    id: ReservationId,
    actual: i64,
    at: DateTime<Utc>,
) -> Result<Settlement> {
    let held = take_reservation(conn, id)?;
    unhold(conn, &held, actual)?;
    conn.prepare_cached(
        "INSERT INTO usage_events
           (org_id, user_id, key_id, model, period, reserved_tokens, tokens, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            held.org_id,
            held.user_id,
            held.key_id,
            held.model,
            held.period,
            held.tokens,
            actual,
            millis(at)
        ])
    })
    .map_err(from_sqlite)?;
    Ok(Settlement {
        reserved: held.tokens,
        charged: actual,
    })
}

fn user_usage(
    conn: &Connection,
    org: OrgId,
    user: Option<UserId>,
    period: &str,
) -> Result<Vec<UserUsage>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT u.id, u.email, u.monthly_token_limit,
                    COALESCE(c.used_tokens, 0), COALESCE(c.reserved_tokens, 0),
                    (SELECT COUNT(*) FROM usage_events e WHERE e.user_id = u.id AND e.period = ?2)
             FROM users u
             LEFT JOIN usage_counters c
               ON c.scope = 'user' AND c.scope_id = u.id AND c.period = ?2
             WHERE u.org_id = ?1 AND (?3 IS NULL OR u.id = ?3)
             ORDER BY u.email",
        )
        .map_err(from_sqlite)?;
    let rows = stmt
        .query_map(params![org.0, period, user.map(|u| u.0)], |row| {
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
        })
        .map_err(from_sqlite)?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .map_err(from_sqlite)
}

fn model_usage(
    conn: &Connection,
    org: OrgId,
    user: Option<UserId>,
    period: &str,
) -> Result<Vec<ModelUsage>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT model, SUM(tokens), COUNT(*) FROM usage_events
             WHERE org_id = ?1 AND period = ?2 AND (?3 IS NULL OR user_id = ?3)
             GROUP BY model ORDER BY model",
        )
        .map_err(from_sqlite)?;
    let rows = stmt
        .query_map(params![org.0, period, user.map(|u| u.0)], |row| {
            Ok(ModelUsage {
                model: row.get(0)?,
                tokens: row.get(1)?,
                requests: row.get(2)?,
            })
        })
        .map_err(from_sqlite)?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .map_err(from_sqlite)
}

#[async_trait]
impl UsageStore for SqliteStore {
    async fn reserve(&self, request: &ReserveRequest) -> Result<ReserveOutcome> {
        let request = request.clone();
        self.run(move |conn| write(conn, |tx| reserve(tx, &request)))
            .await
    }

    async fn settle(
        &self,
        id: ReservationId,
        actual: i64,
        at: DateTime<Utc>,
    ) -> Result<Settlement> {
        self.run(move |conn| write(conn, |tx| settle(tx, id, actual, at)))
            .await
    }

    async fn release(&self, id: ReservationId) -> Result<()> {
        self.run(move |conn| {
            write(conn, |tx| {
                let held = take_reservation(tx, id)?;
                unhold(tx, &held, 0)
            })
        })
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
    ) -> Result<UsageReport> {
        let period = period.to_owned();
        self.run(move |conn| {
            Ok(UsageReport {
                monthly_token_budget: org_budget(conn, org)?,
                org: counter(conn, ORG, org.0, &period)?,
                users: user_usage(conn, org, user, &period)?,
                models: model_usage(conn, org, user, &period)?,
                period,
            })
        })
        .await
    }
}
