//! Seeding on PostgreSQL. By a database user that does not own the tables, the store
//! cannot set foreign keys and change triggers aside, loads row by row
//! with both in place, and ends with the same result.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::TestDb;
use ias_core::snapshot::ChangeEntity;
use ias_core::{Actor, Admin, CacheStore, Governor, SeedPlan, SeedStore, Source};
use ias_store_postgres::PostgresStore;
use sqlx::{Connection, PgConnection};

/// A login role with read and write rights on a test database's tables, owning none.
struct Guest {
    name: String,
    db_url: String,
    url: String,
}

impl Guest {
    async fn create(db: &TestDb) -> Guest {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("ias_test_guest_{}_{n}", std::process::id());
        let mut conn = db.connect().await;
        for sql in [
            format!("CREATE ROLE {name} LOGIN"),
            // Opening a store runs `CREATE TABLE IF NOT EXISTS`, which needs CREATE.
            format!("GRANT USAGE, CREATE ON SCHEMA public TO {name}"),
            format!(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {name}"
            ),
            format!("GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {name}"),
        ] {
            sqlx::query(&sql).execute(&mut conn).await.unwrap();
        }
        conn.close().await.ok();
        let mut url = url::Url::parse(db.url()).unwrap();
        url.set_username(&name).unwrap();
        Guest {
            name,
            db_url: db.url().to_owned(),
            url: url.to_string(),
        }
    }
}

impl Drop for Guest {
    /// Drops the role from a thread of its own, also when the test failed.
    fn drop(&mut self) {
        let (name, db_url) = (self.name.clone(), self.db_url.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let mut conn = PgConnection::connect(&db_url).await?;
                sqlx::query(&format!("DROP OWNED BY {name}"))
                    .execute(&mut conn)
                    .await?;
                sqlx::query(&format!("DROP ROLE IF EXISTS {name}"))
                    .execute(&mut conn)
                    .await?;
                conn.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test role `{}`: {dropped:?}", self.name);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_who_owns_no_table_seeds_row_by_row_with_the_same_result() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    // The owner migrates the database; the guest only uses it.
    PostgresStore::open(db.url()).await.unwrap().close().await;
    let guest = Guest::create(&db).await;
    let store = PostgresStore::open(&guest.url).await.unwrap();
    let actor = Actor::Operator {
        name: "seed-test".into(),
    };
    let admin = Admin::new(store.clone(), actor, Source::Library);
    let plan = SeedPlan::new(2, 3, 2).unwrap().with_seed(5);
    let seeded = admin.seed(plan, false, Arc::new(|_| {})).await.unwrap();
    let census = store.seed_census().await.unwrap();
    assert_eq!(
        (census.organizations, census.users, census.api_keys),
        (2, 6, 12)
    );

    // The triggers wrote the feed, row by row: every org, user and key is in it.
    let changes = store.changes_since(0, 10_000).await.unwrap();
    let fed: HashSet<(ChangeEntity, i64)> = changes.iter().map(|c| (c.entity, c.id)).collect();
    for (entity, count) in [
        (ChangeEntity::Org, 2),
        (ChangeEntity::User, 6),
        (ChangeEntity::Key, 12),
    ] {
        for id in 1..=count {
            assert!(
                fed.contains(&(entity, id)),
                "{entity:?} {id} not in the feed"
            );
        }
    }
    let verified = admin.verify_audit(None).await.unwrap();
    assert!(
        verified.is_intact() && verified.checked == 1,
        "{verified:?}"
    );

    let governor = Governor::open(store.clone()).await.unwrap();
    for key in &seeded.harvest.sample {
        let decision = governor
            .check(key.secret.expose(), key.model, 10)
            .await
            .unwrap();
        assert!(decision.is_allowed(), "{decision:?}");
    }
    governor.shutdown().await.unwrap();
    store.close().await;
    drop(guest);
}

/// A seed leaves the planner's statistics of the tables it filled up to date:
/// without them the planner takes the freshly loaded tables for nearly empty
/// and an organization's usage report scans every counter of the period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_leaves_planner_statistics_behind() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = PostgresStore::open(db.url()).await.unwrap();
    let admin = Admin::new(store.clone(), Actor::local_operator(), Source::Library);
    let plan = SeedPlan::new(3, 4, 2).unwrap().with_seed(7);
    admin.seed(plan, false, Arc::new(|_| {})).await.unwrap();

    let mut conn = db.connect().await;
    for table in [
        "users",
        "api_keys",
        "usage_events",
        "usage_daily",
        "usage_counters",
    ] {
        let columns: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pg_stats WHERE tablename = $1")
            .bind(table)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert!(columns > 0, "no statistics for `{table}`");
    }
    conn.close().await.ok();
    store.close().await;
}
