//! Foreign keys and change-feed triggers, set aside while a seed loads.
//!
//! Row by row, each foreign key costs the server a lookup and a row lock
//! in the referenced table, and each change-feed trigger a function call
//! and an insert: most of a bulk load's time. Set aside, the seed writes
//! the change feed in three statements at the end (one change per
//! organization, user and key), and each foreign key, added back, checks
//! every row in one pass; a row without its referenced row fails the
//! whole seed as before. All of it is inside the seed's transaction:
//! other sessions never see the keys or triggers missing, and wait for
//! the commit to use the tables.

use ias_core::Result;
use ias_core::seed::{SeedCounts, SeedIds};
use sqlx::{PgConnection, Row};

use crate::store::{all, execute};

/// The tables a seed writes that have foreign keys of their own.
const REFERENCING: &str =
    "ARRAY['org_allowed_models', 'users', 'api_keys', 'usage_events', 'usage_daily']::regclass[]";

/// The tables a seed writes that have change-feed triggers.
const FED: &str =
    "ARRAY['organizations', 'org_allowed_models', 'rate_limits', 'users', 'api_keys']::regclass[]";

/// The functions of the change-feed triggers (migration 2).
const FEED_FUNCTIONS: &str = "ARRAY['ias_change_row', 'ias_change_model', 'ias_change_rate']";

/// What was set aside, to be put back before commit.
pub(super) struct SetAside {
    /// Table, constraint name and definition of each foreign key dropped.
    foreign_keys: Vec<(String, String, String)>,
    /// Table and name of each trigger disabled.
    triggers: Vec<(String, String)>,
}

impl SetAside {
    /// Sets the foreign keys and change-feed triggers aside; `None`, having
    /// changed nothing, when the store's user may not (it must own the
    /// tables), and then the seed loads row by row with both in place.
    pub(super) async fn take(conn: &mut PgConnection) -> Result<Option<SetAside>> {
        execute(conn, sqlx::query("SAVEPOINT ias_seed_set_aside")).await?;
        match SetAside::try_take(conn).await {
            Ok(aside) => {
                execute(conn, sqlx::query("RELEASE SAVEPOINT ias_seed_set_aside")).await?;
                Ok(Some(aside))
            }
            Err(err) => {
                tracing::warn!(
                    error = %err,
                    "cannot set foreign keys and change triggers aside for the seed; \
                     loading row by row, which is slower"
                );
                let undo = sqlx::query("ROLLBACK TO SAVEPOINT ias_seed_set_aside");
                execute(conn, undo).await?;
                Ok(None)
            }
        }
    }

    async fn try_take(conn: &mut PgConnection) -> Result<SetAside> {
        let sql = format!(
            "SELECT c.conrelid::regclass::text, quote_ident(c.conname), pg_get_constraintdef(c.oid)
             FROM pg_constraint c
             WHERE c.contype = 'f' AND c.conrelid = ANY({REFERENCING})
             ORDER BY 1, 2"
        );
        let foreign_keys = all(conn, sqlx::query(&sql), |row| {
            Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
        })
        .await?;
        let sql = format!(
            "SELECT t.tgrelid::regclass::text, quote_ident(t.tgname)
             FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
             WHERE NOT t.tgisinternal AND t.tgenabled <> 'D'
               AND t.tgrelid = ANY({FED}) AND p.proname = ANY({FEED_FUNCTIONS})
             ORDER BY 1, 2"
        );
        let triggers = all(conn, sqlx::query(&sql), |row| {
            Ok((row.try_get(0)?, row.try_get(1)?))
        })
        .await?;
        for (table, name, _) in &foreign_keys {
            let drop = format!("ALTER TABLE {table} DROP CONSTRAINT {name}");
            execute(conn, sqlx::query(&drop)).await?;
        }
        for (table, name) in &triggers {
            let disable = format!("ALTER TABLE {table} DISABLE TRIGGER {name}");
            execute(conn, sqlx::query(&disable)).await?;
        }
        Ok(SetAside {
            foreign_keys,
            triggers,
        })
    }

    /// Writes the changes the triggers would have, then puts everything back.
    ///
    /// Adding a foreign key back checks every row of its table; a missing
    /// referenced row fails it, and with it the seed.
    pub(super) async fn restore(
        self,
        conn: &mut PgConnection,
        ids: &SeedIds,
        counts: &SeedCounts,
    ) -> Result<()> {
        let fed = [
            ("org", ids.org, counts.organizations),
            ("user", ids.user, counts.users),
            ("key", ids.key, counts.api_keys),
        ];
        for (entity, first, count) in fed {
            feed(conn, entity, first, count).await?;
        }
        for (table, name) in &self.triggers {
            let enable = format!("ALTER TABLE {table} ENABLE TRIGGER {name}");
            execute(conn, sqlx::query(&enable)).await?;
        }
        for (table, name, definition) in &self.foreign_keys {
            let add = format!("ALTER TABLE {table} ADD CONSTRAINT {name} {definition}");
            execute(conn, sqlx::query(&add)).await?;
        }
        Ok(())
    }
}

/// One change for each of the `count` rows of `entity` from id `first`, in id order.
async fn feed(conn: &mut PgConnection, entity: &str, first: i64, count: u64) -> Result<()> {
    let Some(last) = i64::try_from(count)
        .ok()
        .filter(|count| *count > 0)
        .and_then(|count| first.checked_add(count - 1))
    else {
        return Ok(());
    };
    let insert = sqlx::query(
        "INSERT INTO changes (entity, entity_id)
         SELECT $1, id FROM generate_series($2::BIGINT, $3::BIGINT) AS id ORDER BY id",
    )
    .bind(entity)
    .bind(first)
    .bind(last);
    execute(conn, insert).await?;
    Ok(())
}
