//! Bulk writes for seeding: every batch through `COPY`, in one transaction.
//!
//! The transaction locks `organizations`, `users` and `api_keys` against
//! writes and takes the write-log lock (as every admin write does), so it
//! can hand out ids from above each identity sequence and move the
//! sequences past them at the end. Foreign keys and change-feed triggers
//! are set aside while the rows load and put back before commit
//! ([`aside`]), which locks the tables the seed fills until then.

mod aside;
mod copy;

use async_trait::async_trait;
use ias_core::Result;
use ias_core::seed::{SeedBatch, SeedCensus, SeedCounts, SeedIds, SeedStore, SeedWrite};
use sqlx::{PgConnection, Row};

use crate::audit::{self, LOG_LOCK};
use crate::rows::millis;
use crate::store::{PostgresStore, commit, execute, optional};
use aside::SetAside;
use copy::{CopyData, Field};

/// The tables whose ids a seed hands out itself.
const ID_TABLES: [&str; 3] = ["organizations", "users", "api_keys"];

#[async_trait]
impl SeedStore for PostgresStore {
    async fn seed_census(&self) -> Result<SeedCensus> {
        census(&mut *self.conn().await?).await
    }

    async fn write_seed(&self, seed: SeedWrite) -> Result<SeedCounts> {
        let mut tx = self.begin().await?;
        // Tables first: a single admin write holds its table before it
        // takes the write-log lock (in the change trigger), so taking them in
        // the same order waits for it instead of deadlocking with it.
        let tables = ID_TABLES.join(", ");
        let lock = format!("LOCK TABLE {tables} IN SHARE ROW EXCLUSIVE MODE");
        execute(&mut tx, sqlx::query(&lock)).await?;
        let lock = sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(LOG_LOCK);
        execute(&mut tx, lock).await?;
        if seed.require_empty {
            let found = census(&mut tx).await?;
            if !found.is_empty() {
                return Err(found.refusal());
            }
        }
        let ids = SeedIds {
            org: next_id(&mut tx, "organizations").await?,
            user: next_id(&mut tx, "users").await?,
            key: next_id(&mut tx, "api_keys").await?,
        };
        let aside = SetAside::take(&mut tx).await?;
        let mut counts = SeedCounts::default();
        for batch in seed.batches {
            write_batch(&mut tx, &ids, &batch).await?;
            counts.add(&batch);
            (seed.progress)(&counts);
        }
        if let Some(aside) = aside {
            aside.restore(&mut tx, &ids, &counts).await?;
        }
        for table in ID_TABLES {
            advance_sequence(&mut tx, table).await?;
        }
        audit::append(&mut tx, &seed.audit, None).await?;
        commit(tx).await?;
        analyze(&mut *self.conn().await?).await;
        Ok(counts)
    }
}

/// The tables a seed fills, whose statistics it brings up to date.
const SEEDED: &str = "organizations, org_allowed_models, rate_limits, users, api_keys, \
     usage_events, usage_daily, usage_counters, changes";

/// Gathers the planner's statistics of the seeded tables at once: until
/// autovacuum gets to them, the planner would take the freshly loaded
/// tables for nearly empty and pick plans hundreds of times slower (an
/// organization's usage report: 0.8 s instead of 1 ms at a million keys).
/// The data is committed either way; a failure is only logged.
async fn analyze(conn: &mut PgConnection) {
    let sql = format!("ANALYZE {SEEDED}");
    if let Err(err) = execute(conn, sqlx::query(&sql)).await {
        tracing::warn!(error = %err, "could not gather statistics after seeding");
    }
}

async fn census(conn: &mut PgConnection) -> Result<SeedCensus> {
    let query = sqlx::query(
        "SELECT (SELECT COUNT(*) FROM organizations), (SELECT COUNT(*) FROM users),
                (SELECT COUNT(*) FROM api_keys),
                (SELECT slug FROM organizations ORDER BY id LIMIT 1)",
    );
    let found = optional(conn, query, |row| {
        let count = |idx: usize| -> sqlx::Result<u64> {
            Ok(u64::try_from(row.try_get::<i64, _>(idx)?).unwrap_or(0))
        };
        Ok(SeedCensus {
            organizations: count(0)?,
            users: count(1)?,
            api_keys: count(2)?,
            first_org: row.try_get(3)?,
        })
    })
    .await?;
    Ok(found.unwrap_or_default())
}

/// The first id above every id the table has and every value its sequence gave.
async fn next_id(conn: &mut PgConnection, table: &'static str) -> Result<i64> {
    let sql = format!(
        "SELECT GREATEST(
                    COALESCE(pg_sequence_last_value(pg_get_serial_sequence('{table}', 'id')::regclass), 0),
                    COALESCE((SELECT MAX(id) FROM {table}), 0)) + 1"
    );
    Ok(optional(conn, sqlx::query(&sql), |row| row.try_get(0))
        .await?
        .unwrap_or(1))
}

/// Moves the table's identity sequence past the ids the seed handed out.
async fn advance_sequence(conn: &mut PgConnection, table: &'static str) -> Result<()> {
    let sql = format!(
        "SELECT setval(pg_get_serial_sequence('{table}', 'id'), MAX(id)) FROM {table}
         HAVING MAX(id) > COALESCE(
             pg_sequence_last_value(pg_get_serial_sequence('{table}', 'id')::regclass), 0)"
    );
    execute(conn, sqlx::query(&sql)).await?;
    Ok(())
}

async fn write_batch(conn: &mut PgConnection, ids: &SeedIds, batch: &SeedBatch) -> Result<()> {
    let mut data = CopyData::default();
    for org in &batch.orgs {
        data.row(&[
            ids.org(org.n).0.into(),
            org.slug.as_str().into(),
            org.monthly_token_budget.into(),
            org.timezone.name().into(),
            millis(org.created_at).into(),
            millis(org.created_at).into(),
        ]);
    }
    let columns = "id, slug, monthly_token_budget, timezone, created_at, updated_at";
    data.copy(conn, "organizations", columns, "organization")
        .await?;

    for model in &batch.models {
        data.row(&[
            ids.org(model.org).0.into(),
            model.model.into(),
            millis(model.created_at).into(),
        ]);
    }
    data.copy(
        conn,
        "org_allowed_models",
        "org_id, model, created_at",
        "model",
    )
    .await?;

    for limit in &batch.rate_limits {
        data.row(&[
            limit.scope.as_str().into(),
            ids.scope(limit.scope, limit.n).into(),
            limit.limits.rpm.into(),
            limit.limits.tpm.into(),
            millis(limit.updated_at).into(),
        ]);
    }
    let columns = "scope, scope_id, rpm, tpm, updated_at";
    data.copy(conn, "rate_limits", columns, "rate limit")
        .await?;

    write_users(conn, ids, batch, &mut data).await?;
    write_usage(conn, ids, batch, &mut data).await
}

async fn write_users(
    conn: &mut PgConnection,
    ids: &SeedIds,
    batch: &SeedBatch,
    data: &mut CopyData,
) -> Result<()> {
    for user in &batch.users {
        data.row(&[
            ids.user(user.n).0.into(),
            ids.org(user.org).0.into(),
            user.email.as_str().into(),
            user.role.as_str().into(),
            user.monthly_token_limit.into(),
            millis(user.created_at).into(),
            millis(user.created_at).into(),
        ]);
    }
    let columns = "id, org_id, email, role, monthly_token_limit, created_at, updated_at";
    data.copy(conn, "users", columns, "user").await?;

    for key in &batch.keys {
        data.row(&[
            ids.key(key.n).0.into(),
            ids.user(key.user).0.into(),
            ids.org(key.org).0.into(),
            Field::Bytes(&key.hash.0),
            key.prefix.as_str().into(),
            millis(key.created_at).into(),
            key.expires_at.map(millis).into(),
            key.revoked_at.map(millis).into(),
        ]);
    }
    let columns = "id, user_id, org_id, key_hash, prefix, created_at, expires_at, revoked_at";
    data.copy(conn, "api_keys", columns, "key").await
}

async fn write_usage(
    conn: &mut PgConnection,
    ids: &SeedIds,
    batch: &SeedBatch,
    data: &mut CopyData,
) -> Result<()> {
    for event in &batch.events {
        data.row(&[
            ids.org(event.org).0.into(),
            ids.user(event.user).0.into(),
            ids.key(event.key).0.into(),
            event.model.into(),
            event.period.as_str().into(),
            event.reserved.into(),
            event.tokens.into(),
            millis(event.at).into(),
        ]);
    }
    let columns = "org_id, user_id, key_id, model, period, reserved_tokens, tokens, created_at";
    data.copy(conn, "usage_events", columns, "usage event")
        .await?;

    for day in &batch.daily {
        data.row(&[
            ids.org(day.org).0.into(),
            day.day.as_str().into(),
            ids.user(day.user).0.into(),
            day.model.into(),
            day.tokens.into(),
            day.requests.into(),
        ]);
    }
    let columns = "org_id, day, user_id, model, tokens, requests";
    data.copy(conn, "usage_daily", columns, "daily usage")
        .await?;

    for counter in &batch.counters {
        data.row(&[
            counter.scope.as_str().into(),
            ids.scope(counter.scope, counter.n).into(),
            counter.period.as_str().into(),
            counter.used.into(),
            0_i64.into(),
        ]);
    }
    let columns = "scope, scope_id, period, used_tokens, reserved_tokens";
    data.copy(conn, "usage_counters", columns, "usage counter")
        .await
}
