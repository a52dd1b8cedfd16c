//! Bulk writes for seeding: every batch in one immediate transaction.
//!
//! Rows go in through cached prepared statements with the ids reserved at
//! the start. The change-feed triggers fire for every row as for any
//! write, so governors already running load the seeded rows. For the
//! duration of the write the page cache is enlarged, so that the random
//! inserts into the key-hash index stay in memory; it is put back after,
//! and the write-ahead log is emptied.

use async_trait::async_trait;
use ias_core::Result;
use ias_core::seed::{SeedBatch, SeedCensus, SeedCounts, SeedIds, SeedStore, SeedWrite};
use rusqlite::{Connection, Transaction, params};

use crate::audit;
use crate::error::{from_sqlite, unique_or};
use crate::rows::millis;
use crate::store::{SqliteStore, optional_row, write};

/// The page cache while seeding, in KiB (SQLite's negative `cache_size`).
const SEED_CACHE_KIB: i64 = 512 * 1024;

#[async_trait]
impl SeedStore for SqliteStore {
    async fn seed_census(&self) -> Result<SeedCensus> {
        self.run(|conn| census(conn)).await
    }

    async fn write_seed(&self, seed: SeedWrite) -> Result<SeedCounts> {
        self.run(move |conn| {
            let cache: i64 = conn
                .pragma_query_value(None, "cache_size", |row| row.get(0))
                .map_err(from_sqlite)?;
            conn.pragma_update(None, "cache_size", -SEED_CACHE_KIB)
                .map_err(from_sqlite)?;
            let written = write(conn, |tx| write_all(tx, seed));
            let restored = conn
                .pragma_update(None, "cache_size", cache)
                .map_err(from_sqlite);
            let counts = written?;
            restored?;
            shrink_wal(conn);
            Ok(counts)
        })
        .await
    }
}

/// Empties the write-ahead log, which grew to the size of the seed, once
/// readers let it; it would otherwise keep that size while the file is open.
fn shrink_wal(conn: &Connection) {
    let checkpoint = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
    if let Err(err) = checkpoint {
        tracing::warn!(error = %err, "could not shrink the write-ahead log after seeding");
    }
}

fn census(conn: &Connection) -> Result<SeedCensus> {
    let found = optional_row(
        conn,
        "SELECT (SELECT COUNT(*) FROM organizations), (SELECT COUNT(*) FROM users),
                (SELECT COUNT(*) FROM api_keys),
                (SELECT slug FROM organizations ORDER BY id LIMIT 1)",
        [],
        |row| {
            Ok(SeedCensus {
                organizations: row.get(0)?,
                users: row.get(1)?,
                api_keys: row.get(2)?,
                first_org: row.get(3)?,
            })
        },
    )?;
    Ok(found.unwrap_or_default())
}

fn write_all(tx: &Transaction<'_>, seed: SeedWrite) -> Result<SeedCounts> {
    if seed.require_empty {
        let found = census(tx)?;
        if !found.is_empty() {
            return Err(found.refusal());
        }
    }
    let ids = SeedIds {
        org: next_id(tx, "organizations")?,
        user: next_id(tx, "users")?,
        key: next_id(tx, "api_keys")?,
    };
    let mut counts = SeedCounts::default();
    for batch in seed.batches {
        write_batch(tx, &ids, &batch)?;
        counts.add(&batch);
        (seed.progress)(&counts);
    }
    audit::append(tx, &seed.audit, None).map_err(from_sqlite)?;
    Ok(counts)
}

/// The first id above every id the table has or had (its AUTOINCREMENT high-water mark).
fn next_id(tx: &Transaction<'_>, table: &'static str) -> Result<i64> {
    let sql = format!(
        "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = '{table}'), 0),
                    COALESCE((SELECT MAX(id) FROM {table}), 0)) + 1"
    );
    Ok(optional_row(tx, &sql, [], |row| row.get(0))?.unwrap_or(1))
}

fn write_batch(tx: &Transaction<'_>, ids: &SeedIds, batch: &SeedBatch) -> Result<()> {
    write_orgs(tx, ids, batch)?;
    write_users(tx, ids, batch)?;
    write_keys(tx, ids, batch)?;
    write_usage(tx, ids, batch)
}

fn write_orgs(tx: &Transaction<'_>, ids: &SeedIds, batch: &SeedBatch) -> Result<()> {
    let mut orgs = tx
        .prepare_cached(
            "INSERT INTO organizations
               (id, slug, monthly_token_budget, timezone, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
        )
        .map_err(from_sqlite)?;
    for org in &batch.orgs {
        orgs.execute(params![
            ids.org(org.n).0,
            org.slug,
            org.monthly_token_budget,
            org.timezone.name(),
            millis(org.created_at)
        ])
        .map_err(|e| unique_or(e, "organization", &org.slug))?;
    }
    let mut models = tx
        .prepare_cached(
            "INSERT INTO org_allowed_models (org_id, model, created_at) VALUES (?1, ?2, ?3)",
        )
        .map_err(from_sqlite)?;
    for model in &batch.models {
        let row = params![ids.org(model.org).0, model.model, millis(model.created_at)];
        models.execute(row).map_err(from_sqlite)?;
    }
    let mut limits = tx
        .prepare_cached(
            "INSERT INTO rate_limits (scope, scope_id, rpm, tpm, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(from_sqlite)?;
    for limit in &batch.rate_limits {
        limits
            .execute(params![
                limit.scope.as_str(),
                ids.scope(limit.scope, limit.n),
                limit.limits.rpm,
                limit.limits.tpm,
                millis(limit.updated_at)
            ])
            .map_err(from_sqlite)?;
    }
    Ok(())
}

fn write_users(tx: &Transaction<'_>, ids: &SeedIds, batch: &SeedBatch) -> Result<()> {
    let mut users = tx
        .prepare_cached(
            "INSERT INTO users
               (id, org_id, email, role, monthly_token_limit, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
        )
        .map_err(from_sqlite)?;
    for user in &batch.users {
        users
            .execute(params![
                ids.user(user.n).0,
                ids.org(user.org).0,
                user.email,
                user.role.as_str(),
                user.monthly_token_limit,
                millis(user.created_at)
            ])
            .map_err(|e| unique_or(e, "user", &user.email))?;
    }
    Ok(())
}

fn write_keys(tx: &Transaction<'_>, ids: &SeedIds, batch: &SeedBatch) -> Result<()> {
    let mut keys = tx
        .prepare_cached(
            "INSERT INTO api_keys
               (id, user_id, org_id, key_hash, prefix, created_at, expires_at, revoked_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .map_err(from_sqlite)?;
    for key in &batch.keys {
        keys.execute(params![
            ids.key(key.n).0,
            ids.user(key.user).0,
            ids.org(key.org).0,
            &key.hash.0[..],
            key.prefix,
            millis(key.created_at),
            key.expires_at.map(millis),
            key.revoked_at.map(millis)
        ])
        .map_err(|e| unique_or(e, "key", &key.prefix))?;
    }
    Ok(())
}

fn write_usage(tx: &Transaction<'_>, ids: &SeedIds, batch: &SeedBatch) -> Result<()> {
    let mut events = tx
        .prepare_cached(
            "INSERT INTO usage_events
               (org_id, user_id, key_id, model, period, reserved_tokens, tokens, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .map_err(from_sqlite)?;
    for event in &batch.events {
        events
            .execute(params![
                ids.org(event.org).0,
                ids.user(event.user).0,
                ids.key(event.key).0,
                event.model,
                event.period,
                event.reserved,
                event.tokens,
                millis(event.at)
            ])
            .map_err(from_sqlite)?;
    }
    let mut daily = tx
        .prepare_cached(
            "INSERT INTO usage_daily (org_id, day, user_id, model, tokens, requests)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(from_sqlite)?;
    for day in &batch.daily {
        daily
            .execute(params![
                ids.org(day.org).0,
                day.day,
                ids.user(day.user).0,
                day.model,
                day.tokens,
                day.requests
            ])
            .map_err(from_sqlite)?;
    }
    let mut counters = tx
        .prepare_cached(
            "INSERT INTO usage_counters (scope, scope_id, period, used_tokens, reserved_tokens)
             VALUES (?1, ?2, ?3, ?4, 0)",
        )
        .map_err(from_sqlite)?;
    for counter in &batch.counters {
        let id = ids.scope(counter.scope, counter.n);
        let row = params![counter.scope.as_str(), id, counter.period, counter.used];
        counters.execute(row).map_err(from_sqlite)?;
    }
    Ok(())
}
