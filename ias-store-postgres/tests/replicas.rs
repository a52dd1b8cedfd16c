//! Several governors on one PostgreSQL database, each with its own store
//! (its own connection pool), as gateway replicas in separate processes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestDb;
use ias_core::{
    Actor, Admin, CreatedKey, Decision, DenyReason, Governor, GovernorConfig, LimitTarget,
    Maintenance, PageRequest, RateLimits, Role, Source, Store,
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
    let report = admin
        .usage("acme", None, &PageRequest::default())
        .await
        .unwrap();
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
        .usage("acme", None, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!((report.org.used, report.org.reserved), (1_000, 0));
    assert_eq!(org_leased(&mut conn).await, 0);
    assert_leases_add_up(&mut conn).await;
}

/// Governors of their own, each on a store of its own, with maintenance running.
async fn governors(db: &TestDb, n: usize) -> Vec<(Governor, Maintenance)> {
    let mut opened = Vec::new();
    for _ in 0..n {
        let governor = Governor::open(replica(db).await).await.unwrap();
        let maintenance = governor.spawn_maintenance();
        opened.push((governor, maintenance));
    }
    opened
}

/// N requests spread over three replicas within a minute all pass; the
/// next is refused by each, with the time until the first grant leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rate_limit_of_n_grants_exactly_n_across_replicas() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let first = replica(&db).await;
    let key = acme(first.clone(), 10_000_000)
        .await
        .secret
        .expose()
        .to_owned();
    operator(first)
        .set_rate_limits("acme", LimitTarget::Org, RateLimits::requests(30))
        .await
        .unwrap();
    let replicas = governors(&db, 3).await;
    let started = Instant::now();
    for i in 0..30 {
        let governor = &replicas[i % 3].0;
        let decision = governor.authorize(&key, "m", 1).await.unwrap();
        let Decision::Allowed(allowed) = decision else {
            panic!("request {} of 30 was refused: {decision:?}", i + 1);
        };
        governor
            .settle(&allowed.reservation.unwrap(), 1)
            .await
            .unwrap();
    }
    for (governor, _) in &replicas {
        let Decision::Denied(denied) = governor.authorize(&key, "m", 1).await.unwrap() else {
            panic!("a 31st request was granted");
        };
        assert_eq!(denied.reason, DenyReason::RateLimited);
        assert_eq!(denied.limit.as_ref().unwrap().used, 30);
        // The first grant leaves the window 60 s after it was made.
        let retry = denied.retry_after_secs().unwrap();
        let elapsed = started.elapsed().as_secs();
        assert!(
            retry <= 60 && retry + elapsed + 1 >= 60,
            "retry after {retry} s, {elapsed} s after the first grant"
        );
    }
    for (_, maintenance) in replicas {
        maintenance.shutdown().await.unwrap();
    }
}

/// Tasks on three replicas racing for a rate limit get exactly all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_racing_for_a_rate_limit_get_exactly_it() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let first = replica(&db).await;
    let key = acme(first.clone(), 10_000_000)
        .await
        .secret
        .expose()
        .to_owned();
    operator(first)
        .set_rate_limits("acme", LimitTarget::Org, RateLimits::requests(40))
        .await
        .unwrap();
    let replicas = governors(&db, 3).await;
    let mut tasks = Vec::new();
    for (governor, _) in replicas.iter().chain(&replicas).chain(&replicas) {
        let (governor, key) = (governor.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let mut granted = 0;
            // Until the window is spent: a refusal that waits for it, not
            // one that only waited for another replica's credits.
            for _ in 0..200 {
                match governor.authorize(&key, "m", 1).await.unwrap() {
                    Decision::Allowed(allowed) => {
                        governor
                            .settle(&allowed.reservation.unwrap(), 1)
                            .await
                            .unwrap();
                        granted += 1;
                    }
                    Decision::Denied(denied) if denied.retry_after_secs() > Some(5) => break,
                    Decision::Denied(_) => {}
                }
            }
            granted
        }));
    }
    let mut granted = 0;
    for task in tasks {
        granted += task.await.unwrap();
    }
    assert_eq!(granted, 40);
    for (_, maintenance) in replicas {
        maintenance.shutdown().await.unwrap();
    }
    let mut conn = db.connect().await;
    let leased: i64 =
        sqlx::query_scalar("SELECT COALESCE(SUM(credits), 0)::BIGINT FROM rate_leases")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(leased, 0, "every replica gave its credits back");
}

/// A key revoked through one governor is refused by another within a
/// fraction of a second, by notice: that one reads the feed only every 30 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_reaches_another_replica_by_notice() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let first_store = replica(&db).await;
    let created = acme(first_store.clone(), 10_000).await;
    let key = created.secret.expose().to_owned();
    let first = Governor::open(first_store.clone()).await.unwrap();
    let admin = operator(first_store).with_governor(first.clone());
    let config = GovernorConfig {
        refresh_interval: Duration::from_secs(30),
        ..GovernorConfig::default()
    };
    let other = Governor::builder(replica(&db).await)
        .config(config)
        .open()
        .await
        .unwrap();
    let maintenance = other.spawn_maintenance();
    // Once a change reaches `other`, it listens for notices.
    admin.set_user_limit("a@b.io", Some(5_000)).await.unwrap();
    let listening = Instant::now();
    loop {
        let Decision::Allowed(allowed) = other.check(&key, "m", 1).await.unwrap() else {
            panic!("the key was refused before it was revoked");
        };
        if allowed.budget.user_limit == Some(5_000) {
            break;
        }
        assert!(
            listening.elapsed() < Duration::from_secs(10),
            "no notice came"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    admin.revoke_key(created.key.id).await.unwrap();
    let revoked = Instant::now();
    let refused = loop {
        if let Decision::Denied(denied) = other.check(&key, "m", 1).await.unwrap() {
            break denied;
        }
        assert!(
            revoked.elapsed() < Duration::from_secs(5),
            "still allowed after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let took = revoked.elapsed();
    assert_eq!(refused.reason, DenyReason::RevokedKey);
    assert!(took < Duration::from_millis(500), "refused after {took:?}");
    eprintln!("the other replica refused the revoked key after {took:?}");
    maintenance.shutdown().await.unwrap();
}
