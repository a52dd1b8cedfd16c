//! Several governors on one PostgreSQL database, each with its own store
//! (its own connection pool), as gateway replicas in separate processes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestDb;
use ias_core::{
    Actor, Admin, CreatedKey, Decision, DenyReason, Governor, GovernorConfig, Role, Source, Store,
};
use ias_store_postgres::PostgresStore;
use sqlx::PgConnection;

const REPLICAS: usize = 4;

fn operator(store: Arc<dyn Store>) -> Admin {
    Admin::new(
        store,
        Actor::Operator {
            name: "test".into(),
        },
        Source::Library,
    )
}

/// Org `acme` with `budget`, any model, user `a@b.io` without a limit of its own; its key.
async fn acme(store: Arc<dyn Store>, budget: i64) -> CreatedKey {
    let admin = operator(store);
    admin.create_org("acme", budget, "UTC").await.unwrap();
    admin.allow_model("acme", "*").await.unwrap();
    admin
        .create_user("acme", "a@b.io", Role::Member, None)
        .await
        .unwrap();
    admin.create_key("a@b.io", None).await.unwrap()
}

/// A store of its own, as another process would open.
async fn replica(db: &TestDb) -> Arc<dyn Store> {
    PostgresStore::open(db.url()).await.unwrap()
}

/// Every counter's `reserved_tokens` is what the leases under it hold.
async fn assert_leases_add_up(conn: &mut PgConnection) {
    let mismatched: Vec<String> = sqlx::query_scalar(
        "SELECT c.scope || ' ' || c.scope_id || ': reserved ' || c.reserved_tokens
                || ', leased ' || COALESCE(SUM(l.tokens), 0)
         FROM usage_counters c
         LEFT JOIN leases l
           ON l.scope = c.scope AND l.scope_id = c.scope_id AND l.period = c.period
         GROUP BY c.scope, c.scope_id, c.period, c.reserved_tokens
         HAVING c.reserved_tokens <> COALESCE(SUM(l.tokens), 0)",
    )
    .fetch_all(conn)
    .await
    .unwrap();
    assert!(mismatched.is_empty(), "{mismatched:?}");
}

/// Tokens leased to any governor, on the organization.
async fn org_leased(conn: &mut PgConnection) -> i64 {
    sqlx::query_scalar("SELECT COALESCE(SUM(tokens), 0)::BIGINT FROM leases WHERE scope = 'org'")
        .fetch_one(conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_never_grant_more_than_the_budget_together() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let key = acme(replica(&db).await, 10_000)
        .await
        .secret
        .expose()
        .to_owned();
    let mut governors = Vec::new();
    for _ in 0..REPLICAS {
        governors.push(Governor::open(replica(&db).await).await.unwrap());
    }

    let mut tasks = Vec::new();
    for governor in governors.iter().chain(governors.iter()) {
        let (governor, key) = (governor.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let mut granted = 0;
            for _ in 0..40 {
                if let Decision::Allowed(allowed) =
                    governor.authorize(&key, "m", 100).await.unwrap()
                {
                    governor
                        .settle(&allowed.reservation.unwrap(), 100)
                        .await
                        .unwrap();
                    granted += 1;
                }
            }
            granted
        }));
    }
    let mut granted = 0;
    for task in tasks {
        granted += task.await.unwrap();
    }
    assert!(
        granted <= 100,
        "granted {granted} requests of 100 from 10000"
    );
    assert_leases_add_up(&mut db.connect().await).await;

    for governor in &governors {
        governor.shutdown().await.unwrap();
    }
    let admin = operator(replica(&db).await);
    let report = admin.usage("acme", None).await.unwrap();
    assert_eq!((report.org.used, report.org.reserved), (granted * 100, 0));
    // What one replica held and did not use went back: another uses the rest.
    let last = Governor::open(replica(&db).await).await.unwrap();
    let mut more = 0;
    while last.authorize(&key, "m", 100).await.unwrap().is_allowed() {
        more += 1;
    }
    assert_eq!(granted + more, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_through_one_replica_is_refused_by_another_within_a_second() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let first = replica(&db).await;
    let created = acme(first.clone(), 10_000).await;
    let key = created.secret.expose().to_owned();
    let other = Governor::open(replica(&db).await).await.unwrap();
    let maintenance = other.spawn_maintenance();
    assert!(other.check(&key, "m", 1).await.unwrap().is_allowed());

    operator(first).revoke_key(created.key.id).await.unwrap();
    let revoked = Instant::now();
    let refused = loop {
        if let Decision::Denied(denied) = other.check(&key, "m", 1).await.unwrap() {
            break denied;
        }
        assert!(
            revoked.elapsed() < Duration::from_secs(3),
            "still allowed after 3 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = revoked.elapsed();
    assert_eq!(refused.reason, DenyReason::RevokedKey);
    // Maintenance reads the feed every half second: well within the 1 s promised,
    // with room for a loaded machine.
    assert!(took < Duration::from_secs(1), "refused after {took:?}");
    eprintln!("the other replica refused the revoked key after {took:?}");
    maintenance.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_leaves_counters_consistent_once_its_leases_expire() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let key = acme(replica(&db).await, 1_000)
        .await
        .secret
        .expose()
        .to_owned();
    let lease_ttl = Duration::from_secs(1);
    let config = GovernorConfig {
        lease_ttl,
        ..GovernorConfig::default()
    };
    let killed = Governor::builder(replica(&db).await)
        .config(config)
        .open()
        .await
        .unwrap();
    for _ in 0..2 {
        let decision = killed.authorize(&key, "m", 100).await.unwrap();
        let reservation = decision.reservation().unwrap().clone();
        killed.settle(&reservation, 100).await.unwrap();
    }
    // A third request is in flight when the process dies.
    assert!(killed.authorize(&key, "m", 100).await.unwrap().is_allowed());
    killed.flush().await.unwrap();
    drop(killed); // no shutdown: its leases stay behind

    let mut conn = db.connect().await;
    assert_leases_add_up(&mut conn).await;
    let held = org_leased(&mut conn).await;
    assert!(held >= 100, "the killed replica held {held}");
    let survivor = Governor::open(replica(&db).await).await.unwrap();
    let early = survivor.authorize(&key, "m", 800).await.unwrap();
    assert!(!early.is_allowed(), "a live lease was taken: {early:?}");

    tokio::time::sleep(lease_ttl + Duration::from_millis(200)).await;
    let decision = survivor.authorize(&key, "m", 800).await.unwrap();
    let reservation = decision.reservation().unwrap().clone();
    assert!(!survivor.authorize(&key, "m", 1).await.unwrap().is_allowed());
    assert_leases_add_up(&mut conn).await;
    survivor.settle(&reservation, 800).await.unwrap();
    survivor.shutdown().await.unwrap();

    let report = operator(replica(&db).await)
        .usage("acme", None)
        .await
        .unwrap();
    assert_eq!((report.org.used, report.org.reserved), (1_000, 0));
    assert_eq!(org_leased(&mut conn).await, 0);
    assert_leases_add_up(&mut conn).await;
}
