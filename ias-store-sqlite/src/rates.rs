//! Rate leases: every governor's reported grants of the last minute, and
//! the credits each holds (see `ias_core::lease`, "Rate leases").
//!
//! Everything here runs inside the immediate transaction of a lease sync,
//! which holds the database's write lock, so no other governor reads or
//! changes a scope's counter, window or leases meanwhile.

use ias_core::LimitScope;
use ias_core::Result;
use ias_core::lease::{LeaseSync, RateEntry, RateScope, RateState};
use ias_core::rate::{self, DEMAND_MS, RateKind, WINDOW_MS};
use rusqlite::{Connection, params};

use crate::error::from_sqlite;
use crate::rows::millis;
use crate::store::optional_row;
use crate::usage;

/// A scope's counter row.
#[derive(Debug, Default)]
struct Counter {
    used: i64,
    held: i64,
    demand_until: i64,
}

/// `(scope, scope_id, kind)` as stored.
type Key<'a> = (&'a str, i64, &'a str);

fn key(rate: &RateScope) -> Key<'static> {
    (rate.scope.as_str(), rate.scope_id, rate.kind.as_str())
}

fn limit(conn: &Connection, rate: &RateScope) -> Result<Option<i64>> {
    let sql = match rate.kind {
        RateKind::Requests => "SELECT rpm FROM rate_limits WHERE scope = ?1 AND scope_id = ?2",
        RateKind::Tokens => "SELECT tpm FROM rate_limits WHERE scope = ?1 AND scope_id = ?2",
    };
    let row = optional_row(
        conn,
        sql,
        params![rate.scope.as_str(), rate.scope_id],
        |row| row.get::<_, Option<i64>>(0),
    )?;
    Ok(row.flatten())
}

fn counter(conn: &Connection, k: Key<'_>) -> Result<Counter> {
    let found = optional_row(
        conn,
        "SELECT used, held, demand_until FROM rate_counters
         WHERE scope = ?1 AND scope_id = ?2 AND kind = ?3",
        params![k.0, k.1, k.2],
        |row| {
            Ok(Counter {
                used: row.get(0)?,
                held: row.get(1)?,
                demand_until: row.get(2)?,
            })
        },
    )?;
    Ok(found.unwrap_or_default())
}

fn lease_of(conn: &Connection, k: Key<'_>, holder: &str) -> Result<i64> {
    let found = optional_row(
        conn,
        "SELECT credits FROM rate_leases
         WHERE scope = ?1 AND scope_id = ?2 AND kind = ?3 AND holder = ?4",
        params![k.0, k.1, k.2, holder],
        |row| row.get(0),
    )?;
    Ok(found.unwrap_or(0))
}

fn run(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<()> {
    conn.prepare_cached(sql)
        .and_then(|mut stmt| stmt.execute(params))
        .map_err(from_sqlite)?;
    Ok(())
}

fn add_to_window(conn: &Connection, k: Key<'_>, at: i64, amount: i64) -> Result<()> {
    run(
        conn,
        "INSERT INTO rate_window (scope, scope_id, kind, at, amount) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (scope, scope_id, kind, at) DO UPDATE SET amount = amount + excluded.amount",
        params![k.0, k.1, k.2, at, amount],
    )
}

/// Takes up to `amount` from the window's grants at `at`; returns what it took.
fn take_from_window(conn: &Connection, k: Key<'_>, at: i64, amount: i64) -> Result<i64> {
    let there: i64 = optional_row(
        conn,
        "SELECT amount FROM rate_window WHERE scope = ?1 AND scope_id = ?2 AND kind = ?3 AND at = ?4",
        params![k.0, k.1, k.2, at],
        |row| row.get(0),
    )?
    .unwrap_or(0);
    let taken = amount.min(there);
    if taken > 0 {
        run(
            conn,
            "UPDATE rate_window SET amount = amount - ?5
             WHERE scope = ?1 AND scope_id = ?2 AND kind = ?3 AND at = ?4",
            params![k.0, k.1, k.2, at, taken],
        )?;
    }
    Ok(taken)
}

/// Drops the grants that left the window; returns their credits.
fn prune(conn: &Connection, k: Key<'_>, now: i64) -> Result<i64> {
    let horizon = now - WINDOW_MS;
    let left: i64 = optional_row(
        conn,
        "SELECT COALESCE(SUM(amount), 0) FROM rate_window
         WHERE scope = ?1 AND scope_id = ?2 AND kind = ?3 AND at <= ?4",
        params![k.0, k.1, k.2, horizon],
        |row| row.get(0),
    )?
    .unwrap_or(0);
    run(
        conn,
        "DELETE FROM rate_window WHERE scope = ?1 AND scope_id = ?2 AND kind = ?3 AND at <= ?4",
        params![k.0, k.1, k.2, horizon],
    )?;
    Ok(left)
}

/// Takes back other holders' leases that expired a window's length ago; returns their credits.
fn reclaim(conn: &Connection, k: Key<'_>, holder: &str, now: i64) -> Result<i64> {
    let horizon = now - WINDOW_MS;
    let reclaimed: i64 = optional_row(
        conn,
        "SELECT COALESCE(SUM(credits), 0) FROM rate_leases
         WHERE scope = ?1 AND scope_id = ?2 AND kind = ?3 AND holder <> ?4 AND expires_at <= ?5",
        params![k.0, k.1, k.2, holder, horizon],
        |row| row.get(0),
    )?
    .unwrap_or(0);
    if reclaimed > 0 {
        run(
            conn,
            "DELETE FROM rate_leases
             WHERE scope = ?1 AND scope_id = ?2 AND kind = ?3 AND holder <> ?4 AND expires_at <= ?5",
            params![k.0, k.1, k.2, holder, horizon],
        )?;
        tracing::warn!(
            scope = k.0,
            id = k.1,
            kind = k.2,
            credits = reclaimed,
            "took back expired rate leases of a governor that stopped"
        );
    }
    Ok(reclaimed)
}

/// Milliseconds until `need` fits, walking the window oldest first.
fn wait(conn: &Connection, k: Key<'_>, left: i64, need: i64, now: i64) -> Result<Option<i64>> {
    if left >= need {
        return Ok(Some(0));
    }
    let mut stmt = conn
        .prepare_cached(
            "SELECT at, amount FROM rate_window
             WHERE scope = ?1 AND scope_id = ?2 AND kind = ?3 ORDER BY at",
        )
        .map_err(from_sqlite)?;
    let rows = stmt
        .query_map(params![k.0, k.1, k.2], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?))
        })
        .map_err(from_sqlite)?;
    let window = rows
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(from_sqlite)?;
    Ok(rate::wait_ms(left, need, window, now))
}

fn store(conn: &Connection, k: Key<'_>, c: &Counter, sync: &LeaseSync, lease: i64) -> Result<()> {
    run(
        conn,
        "INSERT INTO rate_counters (scope, scope_id, kind, used, held, demand_until)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (scope, scope_id, kind) DO UPDATE
         SET used = excluded.used, held = excluded.held, demand_until = excluded.demand_until",
        params![k.0, k.1, k.2, c.used, c.held, c.demand_until],
    )?;
    if lease > 0 {
        run(
            conn,
            "INSERT INTO rate_leases (holder, scope, scope_id, kind, credits, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (scope, scope_id, kind, holder)
             DO UPDATE SET credits = excluded.credits, expires_at = excluded.expires_at",
            params![
                sync.holder,
                k.0,
                k.1,
                k.2,
                lease,
                millis(sync.lease_expires_at)
            ],
        )
    } else {
        run(
            conn,
            "DELETE FROM rate_leases
             WHERE scope = ?1 AND scope_id = ?2 AND kind = ?3 AND holder = ?4",
            params![k.0, k.1, k.2, sync.holder],
        )
    }
}

/// Applies the entry's charges (steps 1 and 2 of the rule); returns the lease after them.
fn charge(
    conn: &Connection,
    k: Key<'_>,
    entry: &RateEntry,
    c: &mut Counter,
    lease: i64,
    now: i64,
) -> Result<i64> {
    let positive = entry
        .charges
        .iter()
        .filter(|ch| ch.amount > 0)
        .fold(0i64, |sum, ch| sum.saturating_add(ch.amount));
    let consumed = positive.min(lease);
    let mut lease = lease - consumed;
    c.held = (c.held - consumed).max(0);
    for ch in entry.charges.iter().filter(|ch| ch.amount > 0) {
        if rate::in_window(ch.at_ms, now) {
            add_to_window(conn, k, ch.at_ms, ch.amount)?;
            c.used = c.used.saturating_add(ch.amount);
        }
    }
    for ch in entry.charges.iter().filter(|ch| ch.amount < 0) {
        if rate::in_window(ch.at_ms, now) {
            let back = take_from_window(conn, k, ch.at_ms, ch.amount.saturating_neg())?;
            c.used -= back;
            lease += back;
            c.held += back;
        }
    }
    Ok(lease)
}

/// Applies one rate entry of a lease sync.
pub(crate) fn sync_rate(
    conn: &Connection,
    entry: &RateEntry,
    sync: &LeaseSync,
) -> Result<RateState> {
    let k = key(&entry.rate);
    let now = millis(sync.now);
    let limit = limit(conn, &entry.rate)?;
    let mut c = counter(conn, k)?;
    let lease = lease_of(conn, k, &sync.holder)?;
    let mut lease = charge(conn, k, entry, &mut c, lease, now)?;
    let give = entry.give_back.clamp(0, lease);
    lease -= give;
    c.held = (c.held - give).max(0);
    c.used = (c.used - prune(conn, k, now)?).max(0);
    if entry.want > 0 {
        c.held = (c.held - reclaim(conn, k, &sync.holder, now)?).max(0);
    }
    let granted = match limit {
        None => entry.want.max(0),
        Some(limit) => rate::grant(
            entry.want,
            entry.need,
            limit - c.used - c.held,
            c.demand_until > now,
        ),
    };
    lease += granted;
    c.held += granted;
    let mut wait_ms = None;
    if let Some(limit) = limit
        && granted < entry.need
    {
        wait_ms = wait(conn, k, limit - c.used - c.held, entry.need - granted, now)?;
        if entry.want > 0 && c.held > lease {
            c.demand_until = c.demand_until.max(now + DEMAND_MS);
        }
    }
    store(conn, k, &c, sync, lease)?;
    Ok(RateState {
        limit,
        used: c.used,
        held: c.held,
        lease,
        granted,
        wait_ms,
        recall: c.demand_until > now,
    })
}

/// Renews the holder's rate leases past half their life (see [`usage::renew_by`]).
pub(crate) fn renew(conn: &Connection, sync: &LeaseSync) -> Result<()> {
    run(
        conn,
        "UPDATE rate_leases SET expires_at = ?2 WHERE holder = ?1 AND expires_at <= ?3",
        params![
            sync.holder,
            millis(sync.lease_expires_at),
            usage::renew_by(sync)
        ],
    )
}

/// The holder's rate leases on scopes under demand.
pub(crate) fn recalled(conn: &Connection, sync: &LeaseSync) -> Result<Vec<RateScope>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT l.scope, l.scope_id, l.kind FROM rate_leases l
             JOIN rate_counters c
               ON c.scope = l.scope AND c.scope_id = l.scope_id AND c.kind = l.kind
             WHERE l.holder = ?1 AND l.credits > 0 AND c.demand_until > ?2
             ORDER BY l.scope, l.scope_id, l.kind",
        )
        .map_err(from_sqlite)?;
    let rows = stmt
        .query_map(params![sync.holder, millis(sync.now)], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, String>(2)?,
            ))
        })
        .map_err(from_sqlite)?;
    let mut recalled = Vec::new();
    for row in rows {
        let (scope, scope_id, kind) = row.map_err(from_sqlite)?;
        if let (Some(scope), Some(kind)) = (LimitScope::parse(&scope), RateKind::parse(&kind)) {
            recalled.push(RateScope {
                scope,
                scope_id,
                kind,
            });
        }
    }
    Ok(recalled)
}
