//! A governor whose database goes away under traffic, through a loopback
//! proxy that the test cuts off and brings back (the server keeps running).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::TestDb;
use common::proxy::Proxy;
use ias_core::{
    Actor, Admin, Decision, Governor, GovernorConfig, KeySecret, PageRequest, Role, Source, Store,
};
use ias_store_postgres::PostgresStore;
use tokio::sync::Mutex;

/// What the traffic saw, by phase.
#[derive(Debug, Default)]
struct Seen {
    allowed: u64,
    unavailable: u64,
    /// Denials of any kind: there must be none, least of all `invalid_key`.
    denied: Vec<String>,
    /// Tokens settled without error.
    settled: i64,
    /// Errors other than `Unavailable`.
    other: Vec<String>,
}

/// Authorizes and settles in a loop, recording every outcome in `phase`'s tally.
async fn traffic(
    governor: Governor,
    key: String,
    tallies: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        let outcome = governor.authorize(&key, "m", 10).await;
        let mut tallies = tallies.lock().await;
        let seen = tallies.last_mut().unwrap();
        match outcome {
            Ok(Decision::Allowed(allowed)) => {
                seen.allowed += 1;
                match governor.settle(&allowed.reservation.unwrap(), 7).await {
                    Ok(_) => seen.settled += 7,
                    Err(err) => seen.other.push(format!("settle: {err}")),
                }
            }
            Ok(Decision::Denied(denied)) => seen.denied.push(denied.reason.as_str().to_owned()),
            Err(err) if err.is_retryable() => seen.unavailable += 1,
            Err(err) => seen.other.push(err.to_string()),
        }
        drop(tallies);
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_answers_unavailable_and_loses_no_usage() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let direct: Arc<dyn Store> = PostgresStore::open(db.url()).await.unwrap();
    let admin = Admin::new(direct.clone(), Actor::local_operator(), Source::Library);
    admin.create_org("acme", 10_000_000, "UTC").await.unwrap();
    admin.allow_model("acme", "*").await.unwrap();
    admin
        .create_user("acme", "a@b.io", Role::Member, None)
        .await
        .unwrap();
    let key = admin.create_key("a@b.io", None).await.unwrap();
    let key = key.secret.expose().to_owned();

    let proxy = Proxy::start(db.url()).await;
    let config = GovernorConfig {
        lease_ttl: Duration::from_secs(2),
        flush_interval: Duration::from_millis(100),
        refresh_interval: Duration::from_millis(200),
        ..GovernorConfig::default()
    };
    let store = PostgresStore::open(&proxy.url(db.url())).await.unwrap();
    let governor = Governor::builder(store)
        .config(config)
        .open()
        .await
        .unwrap();
    let maintenance = governor.spawn_maintenance();
    let tallies = Arc::new(Mutex::new(vec![Seen::default()]));
    let stop = Arc::new(AtomicBool::new(false));
    let running = tokio::spawn(traffic(
        governor.clone(),
        key.clone(),
        tallies.clone(),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The database goes away: leases still serve until half their TTL has
    // passed without a renewal, then every request needs the store.
    proxy.cut();
    tallies.lock().await.push(Seen::default());
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let unknown = KeySecret::generate();
    let answer = governor.authorize(unknown.expose(), "m", 10).await;
    assert!(
        matches!(&answer, Err(err) if err.is_retryable()),
        "an unknown key while the store is away: {answer:?}"
    );

    proxy.restore().await;
    tallies.lock().await.push(Seen::default());
    let restored = Instant::now();
    loop {
        if tallies.lock().await.last().unwrap().allowed >= 20 {
            break;
        }
        assert!(
            restored.elapsed() < Duration::from_secs(15),
            "no recovery 15 s after the database came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recovered_after = restored.elapsed();
    stop.store(true, Ordering::Relaxed);
    running.await.unwrap();
    maintenance.shutdown().await.unwrap();

    let tallies = tallies.lock().await;
    let [before, during, after] = &tallies[..] else {
        panic!("three phases");
    };
    eprintln!("before: {before:?}\nduring: {during:?}\nafter: {after:?}");
    eprintln!("requests passed again {recovered_after:?} after the database came back");
    for seen in [before, during, after] {
        assert!(seen.denied.is_empty(), "denials: {:?}", seen.denied);
        assert!(seen.other.is_empty(), "errors: {:?}", seen.other);
    }
    assert!(before.allowed > 0 && before.unavailable == 0, "{before:?}");
    assert!(during.unavailable > 0, "{during:?}");
    assert!(after.allowed >= 20, "{after:?}");

    // Everything settled, also while the store was away, is stored.
    let settled = before.settled + during.settled + after.settled;
    let report = admin
        .usage("acme", None, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!((report.org.used, report.org.reserved), (settled, 0));
    let requests: i64 = report.models.iter().map(|m| m.requests).sum();
    assert_eq!(requests * 7, settled);
}
