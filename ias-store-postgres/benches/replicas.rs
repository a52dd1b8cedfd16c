//! Governors as replicas on one PostgreSQL database: authorize throughput
//! and database round trips per request with 1, 2 and 3 replicas.
//!
//! `cargo bench -p ias-store-postgres --bench replicas` (needs the server
//! named by `IAS_TEST_POSTGRES_URL`, as the tests do; a database of its own
//! is made and dropped). Each replica is a governor on a store of its own
//! (its own connection pool), reaching the server through a loopback proxy
//! of its own that counts round trips on the wire: every request and its
//! answer, whatever the driver sends (statements, pool pings, connection
//! set-up, change notices' listening). Settle writes are included: usage is
//! written behind, as in a gateway, by each replica's maintenance task.
//!
//! Two loads, each for every replica count:
//! - steady: a fixed rate of requests per replica, what a busy gateway
//!   sees; the ratio of authorizes to round trips is the figure of merit;
//! - saturated: as many requests as the machine serves (closed loop).
//!
//! The traffic goes round 80 keys of 8 organizations. One organization's
//! budget runs out during the run, and a key of another has a limit of 150
//! requests per minute that its traffic exceeds: the summary checks that
//! the budget was not overspent and that exactly 150 requests of that key
//! were granted, across the replicas.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::TestDb;
use common::proxy::Proxy;
use ias_core::{
    Actor, Admin, Decision, Governor, LimitTarget, PageRequest, RateLimits, Role, Source, Store,
};
use ias_store_postgres::PostgresStore;

const ORGS: usize = 8;
const USERS: usize = 5;
const KEYS_PER_USER: usize = 2;
const TIGHT_BUDGET: i64 = 150_000;
const TIGHT_RPM: i64 = 150;
const ESTIMATE: i64 = 100;
const ACTUAL: i64 = 80;
const WORKERS: usize = 4;

struct Keys {
    secrets: Vec<String>,
    /// The key with its own rate limit.
    limited: usize,
}

/// Eight organizations of five users with two keys each; `org-0` has a
/// budget that runs out, the first key of `org-1` a requests-per-minute limit.
async fn seed(store: Arc<dyn Store>) -> Keys {
    let admin = Admin::new(store, Actor::local_operator(), Source::Library);
    let mut secrets = Vec::new();
    let mut limited = None;
    for o in 0..ORGS {
        let slug = format!("org-{o}");
        let budget = if o == 0 {
            TIGHT_BUDGET
        } else {
            1_000_000_000_000
        };
        admin.create_org(&slug, budget, "UTC").await.unwrap();
        admin.allow_model(&slug, "*").await.unwrap();
        // Every organization has a rate limit its traffic never reaches:
        // its credits are leased too.
        admin
            .set_rate_limits(&slug, LimitTarget::Org, RateLimits::requests(10_000_000))
            .await
            .unwrap();
        for u in 0..USERS {
            let email = format!("u{u}@{slug}.example.com");
            admin
                .create_user(&slug, &email, Role::Member, None)
                .await
                .unwrap();
            for _ in 0..KEYS_PER_USER {
                let created = admin.create_key(&email, None).await.unwrap();
                if o == 1 && limited.is_none() {
                    let limits = RateLimits::requests(TIGHT_RPM);
                    let target = LimitTarget::Key(created.key.id);
                    admin.set_rate_limits(&slug, target, limits).await.unwrap();
                    limited = Some(secrets.len());
                }
                secrets.push(created.secret.expose().to_owned());
            }
        }
    }
    Keys {
        secrets,
        limited: limited.unwrap(),
    }
}

/// What one run measured.
#[derive(Debug, Default)]
struct Run {
    replicas: usize,
    seconds: f64,
    authorizes: u64,
    allowed: u64,
    round_trips: u64,
    syncs: u64,
    /// Requests that took over 50 ms to decide.
    slow: u64,
    limited_granted: u64,
}

impl Run {
    fn per_second(&self) -> f64 {
        self.authorizes as f64 / self.seconds
    }

    fn per_round_trip(&self) -> f64 {
        self.authorizes as f64 / self.round_trips.max(1) as f64
    }
}

/// One worker's loop: authorize and settle round the keys, at `pace` per
/// second or as fast as it can.
async fn work(
    governor: Governor,
    keys: Arc<Keys>,
    start: usize,
    pace: Option<f64>,
    stop: Arc<AtomicBool>,
    counts: Arc<[AtomicU64; 4]>,
) {
    let began = Instant::now();
    let mut i = start;
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if let Some(pace) = pace {
            let due = began + Duration::from_secs_f64(sent as f64 / pace);
            tokio::time::sleep_until(due.into()).await;
        }
        let k = i % keys.secrets.len();
        i += 7;
        sent += 1;
        let asked = Instant::now();
        let decision = governor.authorize(&keys.secrets[k], "m", ESTIMATE).await;
        if asked.elapsed() > Duration::from_millis(50) {
            counts[3].fetch_add(1, Ordering::Relaxed);
        }
        match decision {
            Ok(Decision::Allowed(allowed)) => {
                counts[1].fetch_add(1, Ordering::Relaxed);
                if k == keys.limited {
                    counts[2].fetch_add(1, Ordering::Relaxed);
                }
                governor
                    .settle(&allowed.reservation.unwrap(), ACTUAL)
                    .await
                    .unwrap();
            }
            Ok(Decision::Denied(_)) => {}
            Err(err) => panic!("authorize failed: {err}"),
        }
        counts[0].fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs `replicas` governors for `seconds` after a warm-up second.
async fn run(
    db: &TestDb,
    keys: &Arc<Keys>,
    replicas: usize,
    pace: Option<f64>,
    seconds: u64,
) -> Run {
    let mut proxies = Vec::new();
    let mut governors = Vec::new();
    for _ in 0..replicas {
        let proxy = Proxy::start(db.url()).await;
        let store = PostgresStore::open(&proxy.url(db.url())).await.unwrap();
        let governor = Governor::open(store).await.unwrap();
        governors.push((governor.clone(), governor.spawn_maintenance()));
        proxies.push(proxy);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Arc<[AtomicU64; 4]> = Arc::new(Default::default());
    let mut tasks = Vec::new();
    for (r, (governor, _)) in governors.iter().enumerate() {
        for w in 0..WORKERS {
            let per_worker = pace.map(|p| p / WORKERS as f64);
            tasks.push(tokio::spawn(work(
                governor.clone(),
                keys.clone(),
                r * WORKERS + w,
                per_worker,
                stop.clone(),
                counts.clone(),
            )));
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let trips_before: u64 = proxies.iter().map(Proxy::round_trips).sum();
    let syncs = |g: &[(Governor, ias_core::Maintenance)]| -> u64 {
        g.iter().map(|(governor, _)| governor.stats().syncs).sum()
    };
    let syncs_before = syncs(&governors);
    let counted_before: Vec<u64> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let seconds = started.elapsed().as_secs_f64();
    let trips_after: u64 = proxies.iter().map(Proxy::round_trips).sum();
    let syncs_after = syncs(&governors);
    let counted: Vec<u64> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    for (_, maintenance) in governors {
        maintenance.shutdown().await.unwrap();
    }
    Run {
        replicas,
        seconds,
        authorizes: counted[0] - counted_before[0],
        allowed: counted[1] - counted_before[1],
        round_trips: trips_after - trips_before,
        syncs: syncs_after - syncs_before,
        slow: counted[3] - counted_before[3],
        limited_granted: counted[2],
    }
}

fn print(title: &str, runs: &[Run]) {
    println!("\n{title}");
    println!(
        "| replicas | authorizes/s | allowed | DB round trips/s | of which lease syncs/s \
         | authorizes per round trip | decided in over 50 ms |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in runs {
        println!(
            "| {} | {:.0} | {:.0} % | {:.1} | {:.1} | {:.0} | {:.2} % |",
            r.replicas,
            r.per_second(),
            100.0 * r.allowed as f64 / r.authorizes.max(1) as f64,
            r.round_trips as f64 / r.seconds,
            r.syncs as f64 / r.seconds,
            r.per_round_trip(),
            100.0 * r.slow as f64 / r.authorizes.max(1) as f64
        );
    }
}

/// Checks the spent budget and the rate limit after a load, then resets both.
async fn check_and_reset(db: &TestDb, store: &Arc<dyn Store>, limited_granted: u64) -> (i64, u64) {
    let admin = Admin::new(store.clone(), Actor::local_operator(), Source::Library);
    let page = PageRequest::default();
    let report = admin.usage("org-0", None, &page).await.unwrap();
    let used = report.org.used;
    // Requests use less than they estimate, so no overshoot is allowed either.
    assert!(
        used <= TIGHT_BUDGET,
        "the budget of {TIGHT_BUDGET} was overspent: {used}"
    );
    assert_eq!(report.org.reserved, 0, "leases left behind");
    // Every run lasts under a minute and offers the key more than its limit.
    assert_eq!(
        limited_granted, TIGHT_RPM as u64,
        "requests granted under a limit of {TIGHT_RPM} per minute"
    );
    // A fresh month and window for the next load: clear the counters.
    let mut conn = db.connect().await;
    for sql in [
        "DELETE FROM usage_counters",
        "DELETE FROM leases",
        "DELETE FROM rate_window",
        "DELETE FROM rate_leases",
        "DELETE FROM rate_counters",
    ] {
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
    (used, limited_granted)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench());
}

async fn bench() {
    let seconds = std::env::var("IAS_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let Some(db) = TestDb::create().await else {
        eprintln!("no PostgreSQL server: nothing measured");
        return;
    };
    let store: Arc<dyn Store> = PostgresStore::open(db.url()).await.unwrap();
    let keys = Arc::new(seed(store.clone()).await);
    println!(
        "{} keys in {ORGS} organizations; {WORKERS} workers per replica; {seconds} s per run \
         after 1 s of warm-up; estimate {ESTIMATE}, settle {ACTUAL} tokens",
        keys.secrets.len()
    );
    let mut checks = Vec::new();
    for (title, pace) in [
        ("steady: 2,000 requests/s per replica", Some(2_000.0)),
        ("saturated: closed loop", None),
    ] {
        let mut runs = Vec::new();
        for replicas in 1..=3 {
            let measured = run(&db, &keys, replicas, pace, seconds).await;
            checks.push(check_and_reset(&db, &store, measured.limited_granted).await);
            runs.push(measured);
        }
        print(title, &runs);
    }
    println!(
        "\noverspend checks (budget of {TIGHT_BUDGET} tokens; {TIGHT_RPM} requests per minute):"
    );
    for (i, (used, granted)) in checks.iter().enumerate() {
        println!(
            "  run {}: budget used {used} of {TIGHT_BUDGET}, rate-limited key granted {granted} of {TIGHT_RPM}",
            i + 1
        );
    }
}
