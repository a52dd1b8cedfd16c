//! A gateway process killed with SIGKILL in the middle of traffic leaves the
//! counters consistent, and its leases come back once they expire.
//!
//! The test runs this same program twice: the parent makes the database and
//! judges; the child (started with `IAS_SIGKILL_CHILD` set) is a governor
//! in a process of its own, sending traffic until it is killed. No test
//! harness, so that the child is not a test of its own.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestDb;
use ias_core::{
    Actor, Admin, Durability, Governor, GovernorConfig, PageRequest, Role, Source, Store,
};
use ias_store_postgres::PostgresStore;

const CHILD: &str = "IAS_SIGKILL_CHILD";
const BUDGET: i64 = 10_000;
const REQUEST: i64 = 100;
const LEASE_TTL: Duration = Duration::from_secs(2);

fn config() -> GovernorConfig {
    GovernorConfig {
        lease_ttl: LEASE_TTL,
        durability: Durability::Strict,
        ..GovernorConfig::default()
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    match std::env::var(CHILD) {
        Ok(setup) => runtime.block_on(child(&setup)),
        Err(_) => {
            runtime.block_on(parent());
            println!("test a_killed_process_leaves_counters_consistent ... ok");
        }
    }
}

/// The child: authorize and settle until killed, one line per settled request.
async fn child(setup: &str) {
    let mut parts = setup.splitn(3, '\n');
    let (url, key, log) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let store: Arc<dyn Store> = PostgresStore::open(url).await.unwrap();
    let governor = Governor::builder(store)
        .config(config())
        .open()
        .await
        .unwrap();
    let _maintenance = governor.spawn_maintenance();
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(log)
        .unwrap();
    loop {
        let decision = governor.authorize(key, "m", REQUEST).await.unwrap();
        let Some(reservation) = decision.reservation().cloned() else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        governor.settle(&reservation, REQUEST).await.unwrap();
        writeln!(log, "settled").unwrap();
    }
}

fn settled(log: &Path) -> i64 {
    std::fs::read_to_string(log).map_or(0, |text| text.lines().count() as i64)
}

async fn parent() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store: Arc<dyn Store> = PostgresStore::open(db.url()).await.unwrap();
    let admin = Admin::new(
        store.clone(),
        Actor::Operator {
            name: "test".into(),
        },
        Source::Library,
    );
    admin.create_org("acme", BUDGET, "UTC").await.unwrap();
    admin.allow_model("acme", "*").await.unwrap();
    admin
        .create_user("acme", "a@b.io", Role::Member, None)
        .await
        .unwrap();
    let key = admin.create_key("a@b.io", None).await.unwrap();
    let dir = std::env::temp_dir().join(format!("ias-sigkill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("settled.log");

    let setup = format!("{}\n{}\n{}", db.url(), key.secret.expose(), log.display());
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(CHILD, setup)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while settled(&log) < 20 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the child sent no traffic"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the child stopped by itself"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL: no shutdown, no flush, leases left behind
    child.wait().unwrap();
    let acknowledged = settled(&log);

    let usage = admin
        .usage("acme", None, &PageRequest::default())
        .await
        .unwrap();
    let used = usage.org.used;
    // Strict durability: every acknowledged settle is stored; at most the one
    // being logged when the kill came is stored but not yet counted.
    assert!(
        (acknowledged * REQUEST..=(acknowledged + 1) * REQUEST).contains(&used),
        "stored {used} for {acknowledged} acknowledged requests"
    );
    assert!(used + usage.org.reserved <= BUDGET, "{usage:?}");

    tokio::time::sleep(LEASE_TTL + Duration::from_millis(500)).await;
    // A settle whose COMMIT reached the server just before the kill may
    // land after the first read: read again now that the server is done.
    let used = admin
        .usage("acme", None, &PageRequest::default())
        .await
        .unwrap()
        .org
        .used;
    assert!(
        (acknowledged * REQUEST..=(acknowledged + 1) * REQUEST).contains(&used),
        "stored {used} for {acknowledged} acknowledged requests"
    );
    let survivor = Governor::builder(store.clone())
        .config(config())
        .open()
        .await
        .unwrap();
    let left = BUDGET - used;
    let decision = survivor
        .authorize(key.secret.expose(), "m", left)
        .await
        .unwrap();
    let reservation = decision
        .reservation()
        .cloned()
        .unwrap_or_else(|| panic!("the dead process's leases did not come back: {decision:?}"));
    let more = survivor
        .authorize(key.secret.expose(), "m", 1)
        .await
        .unwrap();
    assert!(!more.is_allowed(), "granted past the budget: {more:?}");
    survivor.settle(&reservation, left).await.unwrap();
    survivor.shutdown().await.unwrap();

    let usage = admin
        .usage("acme", None, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(
        (usage.org.used, usage.org.reserved),
        (BUDGET, 0),
        "{usage:?}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
