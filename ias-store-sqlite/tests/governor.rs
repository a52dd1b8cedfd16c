#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The hot path on SQLite: budgets under concurrency, time zones and
//! calendar edges, model patterns, rate limits, bad input, durability and
//! expired reservations.
//!
//! The randomized tests print their seed; set `IAS_TEST_SEED` to replay one.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use ias_core::{
    Actor, Admin, Allowed, Clock, Decision, Denied, DenyReason, Durability, Error, Governor,
    GovernorConfig, KeyId, KeyModels, LimitKind, LimitScope, LimitTarget, ManualClock, OrgId,
    RateLimits, Reservation, Role, Source, UsageStore, UserId,
};
use ias_store_sqlite::SqliteStore;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rusqlite::Connection;

const MODEL: &str = "gpt-4o-mini";
const MODELS: [&str; 3] = ["gpt-4o-mini", "anthropic/claude-3-5", " GPT-4o-Mini "];

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

fn admin(store: &Arc<SqliteStore>, clock: &Arc<ManualClock>) -> Admin {
    Admin::new(store.clone(), Actor::local_operator(), Source::Library).with_clock(clock.clone())
}

#[track_caller]
fn allowed(decision: Decision) -> Allowed {
    match decision {
        Decision::Allowed(allowed) => allowed,
        Decision::Denied(denied) => panic!("expected an allowed request: {}", denied.message()),
    }
}

#[track_caller]
fn denied(decision: Decision) -> Denied {
    match decision {
        Decision::Denied(denied) => denied,
        Decision::Allowed(allowed) => panic!("expected a denial, got {allowed:?}"),
    }
}

#[track_caller]
fn invalid_field(result: ias_core::Result<impl std::fmt::Debug>) -> &'static str {
    match result {
        Err(Error::InvalidInput { field, .. }) => field,
        other => panic!("expected invalid input, got {other:?}"),
    }
}

/// The seed from `IAS_TEST_SEED`, or a new one; printed so a failure can be replayed.
fn seed(test: &str) -> u64 {
    let seed = std::env::var("IAS_TEST_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("{test}: seed {seed} (replay with IAS_TEST_SEED={seed})");
    seed
}

// ---------------------------------------------------------------------------
// One organization, one user, one key.
// ---------------------------------------------------------------------------

struct One {
    store: Arc<SqliteStore>,
    admin: Admin,
    governor: Governor,
    clock: Arc<ManualClock>,
    key: String,
    key_id: KeyId,
    org: OrgId,
    user: UserId,
}

impl One {
    async fn new(tz: &str, budget: i64, limit: Option<i64>, start: &str) -> One {
        One::with(tz, budget, limit, start, Durability::WriteBehind).await
    }

    async fn with(
        tz: &str,
        budget: i64,
        limit: Option<i64>,
        start: &str,
        durability: Durability,
    ) -> One {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let clock = Arc::new(ManualClock::new(at(start)));
        let admin = admin(&store, &clock);
        let org = admin.create_org("acme", budget, tz).await.unwrap();
        admin.allow_model("acme", MODEL).await.unwrap();
        let user = admin
            .create_user("acme", "u@acme.io", Role::Member, limit)
            .await
            .unwrap();
        let created = admin.create_key("u@acme.io", None).await.unwrap();
        let governor = Governor::builder(store.clone())
            .clock(clock.clone())
            .reservation_ttl(StdDuration::from_secs(60))
            .durability(durability)
            .open()
            .await
            .unwrap();
        One {
            admin: admin.with_governor(governor.clone()),
            store,
            governor,
            clock,
            key: created.secret.expose().to_owned(),
            key_id: created.key.id,
            org: org.id,
            user: user.id,
        }
    }

    async fn authorize(&self, estimate: i64) -> Decision {
        self.governor
            .authorize(&self.key, MODEL, estimate)
            .await
            .unwrap()
    }

    /// Authorizes and settles at once, at the clock's time.
    async fn spend(&self, estimate: i64, actual: i64) -> Reservation {
        let reservation = allowed(self.authorize(estimate).await).reservation.unwrap();
        self.governor.settle(&reservation, actual).await.unwrap();
        reservation
    }

    async fn used(&self, period: &str) -> (i64, i64) {
        let state = self
            .store
            .budget_state(self.org, self.user, period)
            .await
            .unwrap();
        (state.org.used, state.user.used)
    }

    async fn daily(&self, from: &str, to: &str) -> Vec<(String, i64, i64)> {
        self.store
            .daily_usage(self.org, None, from, to, None, 1000)
            .await
            .unwrap()
            .into_iter()
            .map(|d| (d.day, d.tokens, d.requests))
            .collect()
    }
}

// ---------------------------------------------------------------------------
// The concurrency harness: several orgs, users and keys, one SQLite file,
// one or more governors on it, workers, and a driver that moves time.
// ---------------------------------------------------------------------------

struct UserSpec {
    id: UserId,
    limit: Option<i64>,
}

struct OrgSpec {
    id: OrgId,
    slug: String,
    budget: i64,
    /// The largest ordinary estimate workers ask for in this org.
    max_estimate: i64,
    /// Whether no request here can ever run out of budget: every denial is wrong.
    ample: bool,
    users: Vec<UserSpec>,
}

struct KeySpec {
    secret: String,
    org: usize,
    user: usize,
}

/// Tokens granted and not yet given back, and tokens settled, per scope.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    /// Estimates of open reservations plus settled usage.
    committed: i64,
    /// Settled usage.
    used: i64,
    peak: i64,
    settles: u64,
    /// Settled usage of expired reservations (settled late): charged on top
    /// of tokens that were already free again, so it may go over a limit.
    late: i64,
}

impl Tally {
    fn check(&self, limit: Option<i64>, what: &str, seed: u64) {
        if let Some(limit) = limit {
            assert!(
                self.committed <= limit + self.late,
                "seed {seed}: {what} granted {} of a limit of {limit} (late usage {})",
                self.committed,
                self.late
            );
        }
    }
}

/// An outside view of what the governors granted, checked at every grant.
///
/// Tokens are given back here *before* the governor frees them, and grants
/// are added *after* the governor made them, so this view never exceeds
/// what the governors really hold: a limit it sees exceeded was exceeded.
/// Late usage is counted in `late` before it is charged, for the same reason.
#[derive(Default)]
struct Tracker {
    orgs: HashMap<OrgId, Tally>,
    users: HashMap<UserId, Tally>,
    org_limits: HashMap<OrgId, i64>,
    user_limits: HashMap<UserId, Option<i64>>,
}

impl Tracker {
    fn grant(&mut self, r: &Reservation, seed: u64) {
        let org_limit = self.org_limits[&r.org_id];
        let user_limit = self.user_limits[&r.user_id];
        for (tally, limit, whose) in [
            (
                self.orgs.entry(r.org_id).or_default(),
                Some(org_limit),
                "org",
            ),
            (self.users.entry(r.user_id).or_default(), user_limit, "user"),
        ] {
            tally.committed += r.tokens;
            tally.peak = tally.peak.max(tally.committed - tally.late);
            tally.check(limit, &format!("{whose} ({r:?})"), seed);
        }
    }

    /// Before a late settle of `actual`: it may take the scopes over their limits.
    fn expect_late(&mut self, r: &Reservation, actual: i64) {
        for tally in [
            self.orgs.entry(r.org_id).or_default(),
            self.users.entry(r.user_id).or_default(),
        ] {
            tally.late += actual;
        }
    }

    /// After a late settle: `Some(actual)` was charged, `None` was not (forgotten).
    fn settled_late(&mut self, r: &Reservation, expected: i64, charged: Option<i64>) {
        for tally in [
            self.orgs.entry(r.org_id).or_default(),
            self.users.entry(r.user_id).or_default(),
        ] {
            match charged {
                Some(actual) => {
                    tally.committed += actual;
                    tally.used += actual;
                    tally.settles += 1;
                }
                None => tally.late -= expected,
            }
        }
    }

    /// Gives a reservation back: `Some(actual)` settles, `None` releases or expires.
    fn give_back(&mut self, r: &Reservation, actual: Option<i64>) {
        for tally in [
            self.orgs.entry(r.org_id).or_default(),
            self.users.entry(r.user_id).or_default(),
        ] {
            tally.committed -= r.tokens - actual.unwrap_or(0);
            if let Some(actual) = actual {
                tally.used += actual;
                tally.settles += 1;
            }
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    granted: u64,
    denied: u64,
    settled: u64,
    released: u64,
    abandoned: u64,
    /// Expired reservations settled late, and those already forgotten.
    late: u64,
    forgotten: u64,
    /// Requests for exactly what a denial said was left, or one more.
    probes: u64,
    /// Denials in an org whose budget can never run out.
    wrong_denials: u64,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.granted += other.granted;
        self.denied += other.denied;
        self.settled += other.settled;
        self.released += other.released;
        self.abandoned += other.abandoned;
        self.late += other.late;
        self.forgotten += other.forgotten;
        self.probes += other.probes;
        self.wrong_denials += other.wrong_denials;
    }
}

struct Harness {
    seed: u64,
    _dir: tempfile::TempDir,
    path: PathBuf,
    clock: Arc<ManualClock>,
    ttl: Duration,
    /// One store per governor, each its own connection, as separate processes have.
    stores: Vec<Arc<SqliteStore>>,
    governors: Vec<Governor>,
    orgs: Vec<OrgSpec>,
    keys: Vec<KeySpec>,
    tracker: Mutex<Tracker>,
    /// Workers hold it shared for a whole request; the driver takes it
    /// alone to move the clock, so only abandoned reservations can expire.
    gate: tokio::sync::RwLock<()>,
    /// Reservations nobody settles in time, by governor.
    abandoned: Mutex<Vec<(usize, Reservation)>>,
    /// Abandoned reservations that expired: some are settled late.
    expired_open: Mutex<Vec<(usize, Reservation)>>,
    expired: Mutex<Vec<u64>>,
}

const PROPERTY_START: &str = "2026-05-10T00:00:00Z";
const AMPLE: i64 = 1_000_000_000_000;

/// An organization the harness creates.
struct Plan {
    slug: &'static str,
    tz: &'static str,
    budget: i64,
    max_estimate: i64,
    limits: Vec<Option<i64>>,
}

impl Harness {
    async fn new(seed: u64, governors: usize) -> Arc<Harness> {
        let mut rng = StdRng::seed_from_u64(seed);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ias.db");
        let first = SqliteStore::open(&path).await.unwrap();
        let clock = Arc::new(ManualClock::new(at(PROPERTY_START)));
        let admin = admin(&first, &clock);
        let tight_a = rng.random_range(20_000..=60_000);
        let tight_b = rng.random_range(5_000..=15_000);
        let plan = |slug, tz, budget, max_estimate, limits| Plan {
            slug,
            tz,
            budget,
            max_estimate,
            limits,
        };
        let plans = [
            plan(
                "tight-a",
                "UTC",
                tight_a,
                tight_a / 20,
                vec![Some(tight_a / 3), None, Some(tight_a / 2)],
            ),
            plan(
                "tight-b",
                "Europe/Berlin",
                tight_b,
                tight_b / 10,
                vec![None, Some(tight_b / 4)],
            ),
            // Far more than all workers can ask for: no request may be denied.
            plan(
                "ample",
                "Pacific/Kiritimati",
                AMPLE,
                10_000,
                vec![None, None],
            ),
        ];
        let mut orgs = Vec::new();
        let mut keys = Vec::new();
        let mut tracker = Tracker::default();
        for (o, plan) in plans.into_iter().enumerate() {
            let Plan {
                slug,
                tz,
                budget,
                max_estimate,
                limits,
            } = plan;
            let ample = budget == AMPLE;
            let org = admin.create_org(slug, budget, tz).await.unwrap();
            admin.allow_model(slug, "gpt-4o-mini").await.unwrap();
            admin.allow_model(slug, "anthropic/*").await.unwrap();
            tracker.org_limits.insert(org.id, budget);
            let mut users = Vec::new();
            for (u, limit) in limits.into_iter().enumerate() {
                let email = format!("u{u}@{slug}.io");
                let user = admin
                    .create_user(slug, &email, Role::Member, limit)
                    .await
                    .unwrap();
                tracker.user_limits.insert(user.id, limit);
                // Every user has a key; some have two.
                for _ in 0..(1 + u % 2) {
                    let created = admin.create_key(&email, None).await.unwrap();
                    keys.push(KeySpec {
                        secret: created.secret.expose().to_owned(),
                        org: o,
                        user: u,
                    });
                }
                users.push(UserSpec { id: user.id, limit });
            }
            orgs.push(OrgSpec {
                id: org.id,
                slug: slug.to_owned(),
                budget,
                max_estimate,
                ample,
                users,
            });
        }
        let ttl = Duration::seconds(30);
        let mut stores = vec![first];
        while stores.len() < governors {
            stores.push(SqliteStore::open(&path).await.unwrap());
        }
        let mut opened = Vec::new();
        for store in &stores {
            let governor = Governor::builder(store.clone())
                .clock(clock.clone())
                .reservation_ttl(ttl.to_std().unwrap())
                .open()
                .await
                .unwrap();
            opened.push(governor);
        }
        Arc::new(Harness {
            seed,
            _dir: dir,
            path,
            clock,
            ttl,
            stores,
            governors: opened,
            orgs,
            keys,
            tracker: Mutex::new(tracker),
            gate: tokio::sync::RwLock::new(()),
            abandoned: Mutex::new(Vec::new()),
            expired_open: Mutex::new(Vec::new()),
            expired: Mutex::new(vec![0; governors]),
        })
    }

    fn tracker(&self) -> std::sync::MutexGuard<'_, Tracker> {
        self.tracker.lock().unwrap()
    }

    /// Checks a grant against the governor's own counters and the outside view.
    fn granted(&self, allowed: &Allowed, reservation: &Reservation) {
        let seed = self.seed;
        let budget = &allowed.budget;
        let mut tracker = self.tracker();
        let org_late = tracker.orgs.get(&reservation.org_id).map_or(0, |t| t.late);
        let user_late = tracker
            .users
            .get(&reservation.user_id)
            .map_or(0, |t| t.late);
        assert!(
            budget.org.committed() <= budget.org_limit + org_late,
            "seed {seed}: the governor reports {:?} of an org budget of {}",
            budget.org,
            budget.org_limit
        );
        if let Some(limit) = budget.user_limit {
            assert!(
                budget.user.committed() <= limit + user_late,
                "seed {seed}: the governor reports {:?} of a user limit of {limit}",
                budget.user
            );
        }
        tracker.grant(reservation, seed);
    }

    /// Moves the clock (with every worker outside a request) and expires
    /// what was abandoned; every governor must expire exactly those.
    async fn advance(&self, by: Duration) {
        let _alone = self.gate.write().await;
        self.clock.advance(by);
        let now = self.clock.now();
        let due: Vec<(usize, Reservation)> = {
            let mut abandoned = self.abandoned.lock().unwrap();
            let (due, kept) = abandoned.drain(..).partition(|(_, r)| r.expires_at <= now);
            *abandoned = kept;
            due
        };
        {
            let mut tracker = self.tracker();
            let mut expired = self.expired.lock().unwrap();
            for (g, r) in &due {
                tracker.give_back(r, None);
                expired[*g] += 1;
            }
        }
        self.expired_open.lock().unwrap().extend(due);
        for (g, governor) in self.governors.iter().enumerate() {
            governor.maintain().await.unwrap();
            let stats = governor.stats();
            assert_eq!(
                stats.expired_reservations,
                self.expired.lock().unwrap()[g],
                "seed {}: governor {g} expired other reservations than the abandoned ones",
                self.seed
            );
        }
    }

    /// One worker: `ops` requests with random keys, estimates and outcomes.
    async fn worker(self: Arc<Self>, seed: u64, ops: usize) -> Counts {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut counts = Counts::default();
        for _ in 0..ops {
            let _request = self.gate.read().await;
            if rng.random_ratio(1, 15) {
                self.settle_late(&mut rng, &mut counts).await;
            }
            let spec = &self.keys[rng.random_range(0..self.keys.len())];
            let org = &self.orgs[spec.org];
            let estimate = match rng.random_range(0..40) {
                0 => 0,
                1..=3 => 1,
                // Now and then more than is likely left.
                4 if !org.ample => rng.random_range(0..=org.budget),
                _ => rng.random_range(1..=org.max_estimate),
            };
            let Some(denied) = self.request(&mut rng, &mut counts, spec, estimate).await else {
                continue;
            };
            // Ask for exactly what is left, or one token more: the edge of the limit.
            let left = denied.limit.as_ref().map_or(0, |l| l.left());
            if !org.ample && rng.random_bool(0.5) {
                counts.probes += 1;
                let probe = left + rng.random_range(0..=1);
                self.request(&mut rng, &mut counts, spec, probe).await;
            }
        }
        counts
    }

    /// One request from authorize to its end; the denial, if it was denied.
    async fn request(
        &self,
        rng: &mut StdRng,
        counts: &mut Counts,
        spec: &KeySpec,
        estimate: i64,
    ) -> Option<Denied> {
        let org = &self.orgs[spec.org];
        let g = rng.random_range(0..self.governors.len());
        let governor = &self.governors[g];
        let model = MODELS[rng.random_range(0..MODELS.len())];
        let decision = governor
            .authorize(&spec.secret, model, estimate)
            .await
            .unwrap();
        let allowed = match decision {
            Decision::Allowed(allowed) => allowed,
            Decision::Denied(denied) => {
                counts.denied += 1;
                let limit = denied.limit.as_ref().unwrap();
                match denied.reason {
                    DenyReason::OrgBudgetExhausted => assert_eq!(limit.scope, LimitScope::Org),
                    DenyReason::UserLimitExhausted => {
                        assert_eq!(limit.scope, LimitScope::User);
                        assert!(org.users[spec.user].limit.is_some());
                    }
                    other => panic!("seed {}: unexpected denial {other:?}", self.seed),
                }
                if org.ample {
                    counts.wrong_denials += 1;
                    eprintln!(
                        "seed {}: denied in `{}` with budget to spare: {}",
                        self.seed,
                        org.slug,
                        denied.message()
                    );
                }
                return Some(denied);
            }
        };
        counts.granted += 1;
        let reservation = allowed.reservation.clone().unwrap();
        assert_eq!(reservation.tokens, estimate);
        assert_eq!(reservation.user_id, org.users[spec.user].id);
        self.granted(&allowed, &reservation);
        if rng.random_bool(0.5) {
            // The model call: let the other tasks run.
            tokio::task::yield_now().await;
        }
        match rng.random_range(0..10) {
            0..=5 => {
                let actual = rng.random_range(0..=estimate);
                self.tracker().give_back(&reservation, Some(actual));
                let settlement = governor.settle(&reservation, actual).await.unwrap();
                assert_eq!(
                    (settlement.reserved, settlement.charged),
                    (estimate, actual)
                );
                counts.settled += 1;
            }
            // The client went away, or the upstream call failed.
            6 | 7 => {
                self.tracker().give_back(&reservation, None);
                governor.release(&reservation).await.unwrap();
                counts.released += 1;
            }
            // Not settled in time: the driver lets it expire.
            _ => {
                self.abandoned.lock().unwrap().push((g, reservation));
                counts.abandoned += 1;
            }
        }
        None
    }

    /// Settles an expired reservation: charged once, or not at all once forgotten.
    async fn settle_late(&self, rng: &mut StdRng, counts: &mut Counts) {
        let Some((g, r)) = self.expired_open.lock().unwrap().pop() else {
            return;
        };
        let actual = rng.random_range(0..=r.tokens);
        // Forgotten at the first maintenance after one more TTL, and not before.
        let may_be_forgotten = self.clock.now() >= r.expires_at + self.ttl;
        self.tracker().expect_late(&r, actual);
        let governor = &self.governors[g];
        match governor.settle(&r, actual).await {
            Ok(settlement) => {
                assert_eq!(settlement.charged, actual);
                self.tracker().settled_late(&r, actual, Some(actual));
                counts.late += 1;
                let twice = governor.settle(&r, actual).await;
                assert!(matches!(twice, Err(Error::NotFound { .. })), "{twice:?}");
            }
            Err(Error::NotFound { .. }) => {
                assert!(
                    may_be_forgotten,
                    "seed {}: lost the expired {r:?}",
                    self.seed
                );
                self.tracker().settled_late(&r, actual, None);
                counts.forgotten += 1;
            }
            Err(err) => panic!("seed {}: {err}", self.seed),
        }
    }

    /// Until `stop`: write behind now and then, and move the clock past some expiries.
    async fn driver(self: Arc<Self>, seed: u64, stop: Arc<AtomicBool>) -> u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut moves = 0;
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(StdDuration::from_millis(rng.random_range(1..=4))).await;
            if rng.random_bool(0.4) {
                let by = rng.random_range(1..=self.ttl.num_seconds() * 2);
                self.advance(Duration::seconds(by)).await;
                moves += 1;
            } else {
                // Maintenance while requests are in flight.
                let governor = &self.governors[rng.random_range(0..self.governors.len())];
                governor.maintain().await.unwrap();
            }
        }
        moves
    }

    /// Expires what is left, shuts every governor down and checks the file.
    async fn finish(&self, counts: Counts) {
        let seed = self.seed;
        self.advance(self.ttl * 2 + Duration::seconds(1)).await;
        assert!(self.abandoned.lock().unwrap().is_empty());
        // Forget every expired reservation, then nothing can be settled late.
        self.advance(self.ttl * 2 + Duration::seconds(1)).await;
        let forgotten: Vec<_> = self.expired_open.lock().unwrap().drain(..).collect();
        for (g, r) in forgotten {
            let settled = self.governors[g].settle(&r, 1).await;
            assert!(
                matches!(settled, Err(Error::NotFound { .. })),
                "seed {seed}: {settled:?}"
            );
        }
        for governor in &self.governors {
            assert_eq!(governor.stats().open_reservations, 0, "seed {seed}");
        }
        for governor in &self.governors {
            governor.shutdown().await.unwrap();
        }
        let expired: u64 = self.expired.lock().unwrap().iter().sum();
        assert_eq!(expired, counts.abandoned, "seed {seed}");
        let period = "2026-05";
        let conn = Connection::open(&self.path).unwrap();
        let one = |sql: &str, id: i64| -> i64 {
            conn.query_row(sql, [id], |row| row.get::<_, Option<i64>>(0))
                .unwrap()
                .unwrap_or(0)
        };
        let none = |sql: &str| -> i64 { conn.query_row(sql, [], |row| row.get(0)).unwrap() };
        assert_eq!(none("SELECT COUNT(*) FROM leases"), 0, "seed {seed}");
        assert_eq!(
            none("SELECT COALESCE(SUM(reserved_tokens), 0) FROM usage_counters"),
            0,
            "seed {seed}: tokens still held after shutdown"
        );
        assert_eq!(
            none("SELECT COUNT(*) FROM usage_events"),
            i64::try_from(counts.settled + counts.late).unwrap(),
            "seed {seed}: one event per settle"
        );
        let (org_tallies, user_tallies) = {
            let tracker = self.tracker();
            (tracker.orgs.clone(), tracker.users.clone())
        };
        for org in &self.orgs {
            let id = org.id.0;
            let events = one("SELECT SUM(tokens) FROM usage_events WHERE org_id = ?1", id);
            let daily = one("SELECT SUM(tokens) FROM usage_daily WHERE org_id = ?1", id);
            let counter = one(
                "SELECT used_tokens FROM usage_counters WHERE scope = 'org' AND scope_id = ?1",
                id,
            );
            let users = one(
                "SELECT SUM(c.used_tokens) FROM usage_counters c JOIN users u
                 ON c.scope = 'user' AND c.scope_id = u.id WHERE u.org_id = ?1",
                id,
            );
            let tally = org_tallies.get(&org.id).copied().unwrap_or_default();
            assert_eq!(
                (events, daily, counter, users),
                (tally.used, tally.used, tally.used, tally.used),
                "seed {seed}: org `{}`: events, daily roll-up, org counter, user counters",
                org.slug
            );
            assert_eq!(tally.committed, tally.used, "seed {seed}: nothing open");
            assert!(
                counter <= org.budget + tally.late,
                "seed {seed}: `{}` overspent",
                org.slug
            );
            let report = self.stores[0]
                .usage_report(org.id, None, period, None, 1000)
                .await
                .unwrap();
            assert_eq!(report.org.reserved, 0);
            assert_eq!(
                report.models.iter().map(|m| m.tokens).sum::<i64>(),
                tally.used
            );
            assert_eq!(
                report.models.iter().map(|m| m.requests).sum::<i64>(),
                i64::try_from(tally.settles).unwrap()
            );
            for user in &org.users {
                let used = one(
                    "SELECT used_tokens FROM usage_counters WHERE scope = 'user' AND scope_id = ?1",
                    user.id.0,
                );
                let events = one(
                    "SELECT SUM(tokens) FROM usage_events WHERE user_id = ?1",
                    user.id.0,
                );
                let tally = user_tallies.get(&user.id).copied().unwrap_or_default();
                assert_eq!((used, events), (tally.used, tally.used), "seed {seed}");
                if let Some(limit) = user.limit {
                    assert!(
                        used <= limit + tally.late,
                        "seed {seed}: user {} overspent",
                        user.id
                    );
                    assert!(tally.peak <= limit);
                }
            }
            assert!(tally.peak <= org.budget);
        }
        let wrong = counts.wrong_denials;
        assert_eq!(
            wrong, 0,
            "seed {seed}: {wrong} denials with budget to spare"
        );
    }
}

const WORKERS: usize = 8;
const OPS: usize = 250;

async fn run_tasks(h: &Arc<Harness>) -> Counts {
    let stop = Arc::new(AtomicBool::new(false));
    let driver = tokio::spawn(h.clone().driver(h.seed ^ 0xd1, stop.clone()));
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| tokio::spawn(h.clone().worker(h.seed.wrapping_add(w as u64 + 1), OPS)))
        .collect();
    let mut counts = Counts::default();
    for worker in workers {
        counts.add(worker.await.unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    let moves = driver.await.unwrap();
    eprintln!("{counts:?}, clock moved {moves} times");
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_tasks_never_grant_more_than_any_limit() {
    let h = Harness::new(seed("concurrent_tasks"), 1).await;
    let counts = run_tasks(&h).await;
    assert!(counts.granted > 0 && counts.denied > 0, "{counts:?}");
    h.finish(counts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn several_governors_on_one_file_never_overspend() {
    // Three stores on one file, each with its own connection and governor:
    // as three processes sharing the database.
    let h = Harness::new(seed("several_governors"), 3).await;
    let counts = run_tasks(&h).await;
    assert!(counts.granted > 0, "{counts:?}");
    h.finish(counts).await;
}

#[test]
fn os_threads_never_grant_more_than_any_limit() {
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let main = runtime();
    let h = main.block_on(Harness::new(seed("os_threads"), 1));
    let stop = Arc::new(AtomicBool::new(false));
    let driver = {
        let (h, stop) = (h.clone(), stop.clone());
        std::thread::spawn(move || runtime().block_on(h.clone().driver(h.seed ^ 0xd1, stop)))
    };
    // Each thread has its own runtime, as hosts with their own threads do.
    let threads: Vec<_> = (0..WORKERS)
        .map(|w| {
            let h = h.clone();
            std::thread::spawn(move || {
                let seed = h.seed.wrapping_add(w as u64 + 1);
                runtime().block_on(h.worker(seed, OPS))
            })
        })
        .collect();
    let mut counts = Counts::default();
    for thread in threads {
        counts.add(thread.join().unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    let moves = driver.join().unwrap();
    eprintln!("{counts:?}, clock moved {moves} times");
    assert!(counts.granted > 0 && counts.denied > 0, "{counts:?}");
    main.block_on(h.finish(counts));
}

// ---------------------------------------------------------------------------
// Overshoot: usage above the estimate is charged in full.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn overshoot_is_charged_in_full_and_the_next_request_is_denied() {
    let t = One::new("UTC", 100, None, "2026-05-10T12:00:00Z").await;
    let reservation = allowed(t.authorize(10).await).reservation.unwrap();
    let settlement = t.governor.settle(&reservation, 150).await.unwrap();
    assert_eq!((settlement.reserved, settlement.charged), (10, 150));
    let next = denied(t.authorize(1).await);
    assert_eq!(next.reason, DenyReason::OrgBudgetExhausted);
    let limit = next.limit.unwrap();
    assert_eq!((limit.used, limit.left()), (150, 0));
    t.governor.shutdown().await.unwrap();
    assert_eq!(t.used("2026-05").await, (150, 150));
}

/// A request that fits the org budget but not the user's limit is always
/// refused on the user's limit, and what it leased goes back at once, so
/// another governor can still grant small requests right away. Near a limit
/// no governor keeps a spare slice past its next maintenance round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denial_names_the_limit_that_decided_and_holds_nothing() {
    let t = One::new("UTC", 3_000, Some(2_000), "2026-05-10T12:00:00Z").await;
    t.spend(950, 950).await;
    let other = Governor::builder(t.store.clone())
        .clock(t.clock.clone())
        .open()
        .await
        .unwrap();
    for round in 0..6 {
        // A fresh governor each round as well as the long-lived one.
        let fresh = Governor::builder(t.store.clone())
            .clock(t.clock.clone())
            .open()
            .await
            .unwrap();
        for governor in [&t.governor, &fresh] {
            let decision = governor.authorize(&t.key, MODEL, 1_200).await.unwrap();
            let refused = denied(decision);
            assert_eq!(
                refused.reason,
                DenyReason::UserLimitExhausted,
                "round {round}"
            );
            assert_eq!(refused.limit.unwrap().left(), 1_050, "round {round}");
        }
        let small = other.authorize(&t.key, MODEL, 1_000).await.unwrap();
        let reservation = allowed(small).reservation.unwrap();
        other.release(&reservation).await.unwrap();
        // The round its background task would run within 200 ms.
        other.maintain().await.unwrap();
        fresh.shutdown().await.unwrap();
    }
    assert!(t.authorize(1_050).await.is_allowed());
}

#[tokio::test]
async fn overshoot_is_at_most_the_excess_of_requests_in_flight() {
    let t = One::new("UTC", 1_000, None, "2026-05-10T12:00:00Z").await;
    let mut in_flight = Vec::new();
    for _ in 0..10 {
        in_flight.push(allowed(t.authorize(100).await).reservation.unwrap());
    }
    assert_eq!(
        denied(t.authorize(1).await).reason,
        DenyReason::OrgBudgetExhausted
    );
    for reservation in &in_flight {
        t.governor.settle(reservation, 150).await.unwrap();
    }
    // 1 000 granted, each used 50 more than it estimated.
    t.governor.flush().await.unwrap();
    assert_eq!(t.used("2026-05").await, (1_500, 1_500));
    assert_eq!(
        denied(t.authorize(1).await).reason,
        DenyReason::OrgBudgetExhausted
    );
    t.governor.shutdown().await.unwrap();
    let state = t
        .store
        .budget_state(t.org, t.user, "2026-05")
        .await
        .unwrap();
    assert_eq!((state.org.used, state.org.reserved), (1_500, 0));
}

// ---------------------------------------------------------------------------
// Time: zones far from UTC, DST, leap days, key expiry.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn month_rolls_over_at_local_midnight_far_from_utc() {
    // Kiritimati is UTC+14: 1 February starts at 10:00 UTC on 31 January.
    let t = One::new("Pacific/Kiritimati", 1_000, None, "2026-01-31T09:00:00Z").await;
    let before = allowed(t.authorize(900).await);
    assert_eq!(before.period, "2026-01");
    assert_eq!(before.resets_at, at("2026-01-31T10:00:00Z"));
    t.governor
        .settle(before.reservation.as_ref().unwrap(), 900)
        .await
        .unwrap();
    t.clock.set(at("2026-01-31T09:59:59.999Z"));
    let late = allowed(t.authorize(100).await).reservation.unwrap();
    assert_eq!(late.period, "2026-01");
    let spent = denied(t.authorize(1).await);
    assert_eq!(spent.reason, DenyReason::OrgBudgetExhausted);
    assert_eq!(spent.retry_after_secs(), Some(1));

    t.clock.set(at("2026-01-31T10:00:00Z"));
    let after = allowed(t.authorize(1_000).await);
    assert_eq!(after.period, "2026-02");
    assert_eq!(after.resets_at, at("2026-02-28T10:00:00Z"));
    assert_eq!(after.budget.org.used, 0, "a fresh budget");
    t.governor
        .settle(after.reservation.as_ref().unwrap(), 400)
        .await
        .unwrap();
    // Reserved in January, settled in February: charged to January.
    t.governor.settle(&late, 100).await.unwrap();
    t.governor.shutdown().await.unwrap();
    assert_eq!(t.used("2026-01").await, (1_000, 1_000));
    assert_eq!(t.used("2026-02").await, (400, 400));
    let january = t
        .store
        .usage_report(t.org, None, "2026-01", None, 1000)
        .await
        .unwrap();
    assert_eq!(
        (january.models[0].tokens, january.models[0].requests),
        (1_000, 2)
    );
    let february = t
        .store
        .usage_report(t.org, None, "2026-02", None, 1000)
        .await
        .unwrap();
    assert_eq!(
        (february.models[0].tokens, february.models[0].requests),
        (400, 1)
    );
    assert_eq!(
        t.daily("2026-01-31", "2026-02-01").await,
        vec![
            ("2026-01-31".to_owned(), 900, 1),
            ("2026-02-01".to_owned(), 500, 2),
        ]
    );
}

#[tokio::test]
async fn a_budget_spent_before_local_midnight_is_fresh_right_after() {
    // Honolulu is UTC-10: 30 June ends at 10:00 UTC on 1 July.
    let t = One::new("Pacific/Honolulu", 500, Some(500), "2026-07-01T09:30:00Z").await;
    t.spend(500, 500).await;
    t.clock.set(at("2026-07-01T09:59:59Z"));
    let spent = denied(t.authorize(1).await);
    assert_eq!(spent.reason, DenyReason::OrgBudgetExhausted);
    let limit = spent.limit.clone().unwrap();
    assert_eq!(limit.period.as_deref(), Some("2026-06"));
    assert_eq!(limit.resets_at, at("2026-07-01T10:00:00Z"));
    assert_eq!(limit.retry_after_secs, Some(1));
    assert!(spent.message().contains("monthly budget exhausted"));

    t.clock.set(at("2026-07-01T10:00:00Z"));
    let fresh = allowed(t.authorize(500).await);
    assert_eq!(fresh.period, "2026-07");
    assert_eq!(fresh.resets_at, at("2026-08-01T10:00:00Z"));
    assert_eq!((fresh.budget.org.used, fresh.budget.user.used), (0, 0));
    t.governor.shutdown().await.unwrap();
    assert_eq!(t.used("2026-06").await, (500, 500));
}

#[tokio::test]
async fn dst_days_keep_their_local_day_and_period() {
    let t = One::new("Europe/Berlin", 1_000_000, None, "2026-03-28T22:59:59Z").await;
    // 29 March 2026: clocks jump from 02:00 CET to 03:00 CEST (a 23-hour day).
    let spring = [
        ("2026-03-28T22:59:59Z", 1, "2026-03"), // 23:59:59 CET, 28 March
        ("2026-03-28T23:00:00Z", 2, "2026-03"), // 00:00 CET, 29 March
        ("2026-03-29T00:59:59Z", 4, "2026-03"), // 01:59:59 CET
        ("2026-03-29T01:00:00Z", 8, "2026-03"), // 03:00 CEST
        ("2026-03-29T21:59:59Z", 16, "2026-03"), // 23:59:59 CEST
        ("2026-03-29T22:00:00Z", 32, "2026-03"), // 00:00 CEST, 30 March
        ("2026-03-31T21:59:59Z", 64, "2026-03"), // 23:59:59 CEST, 31 March
        ("2026-03-31T22:00:00Z", 128, "2026-04"), // 00:00 CEST, 1 April
    ];
    for (when, tokens, period) in spring {
        t.clock.set(at(when));
        assert_eq!(t.spend(tokens, tokens).await.period, period, "{when}");
    }
    // 25 October 2026: clocks fall back from 03:00 CEST to 02:00 CET (25 hours).
    let autumn = [
        ("2026-10-24T21:59:59Z", 1, "2026-10"), // 23:59:59 CEST, 24 October
        ("2026-10-24T22:00:00Z", 2, "2026-10"), // 00:00 CEST, 25 October
        ("2026-10-25T00:30:00Z", 4, "2026-10"), // 02:30 CEST
        ("2026-10-25T01:30:00Z", 8, "2026-10"), // 02:30 CET, the second time
        ("2026-10-25T22:59:59Z", 16, "2026-10"), // 23:59:59 CET
        ("2026-10-25T23:00:00Z", 32, "2026-10"), // 00:00 CET, 26 October
        ("2026-10-31T22:59:59Z", 64, "2026-10"), // 23:59:59 CET, 31 October
        ("2026-10-31T23:00:00Z", 128, "2026-11"), // 00:00 CET, 1 November
    ];
    for (when, tokens, period) in autumn {
        t.clock.set(at(when));
        assert_eq!(t.spend(tokens, tokens).await.period, period, "{when}");
    }
    t.governor.shutdown().await.unwrap();
    let day = |d: &str, tokens, requests| (d.to_owned(), tokens, requests);
    assert_eq!(
        t.daily("2026-03-01", "2026-04-30").await,
        vec![
            day("2026-03-28", 1, 1),
            day("2026-03-29", 30, 4),
            day("2026-03-30", 32, 1),
            day("2026-03-31", 64, 1),
            day("2026-04-01", 128, 1),
        ]
    );
    assert_eq!(
        t.daily("2026-10-01", "2026-11-30").await,
        vec![
            day("2026-10-24", 1, 1),
            day("2026-10-25", 30, 4),
            day("2026-10-26", 32, 1),
            day("2026-10-31", 64, 1),
            day("2026-11-01", 128, 1),
        ]
    );
    assert_eq!(t.used("2026-03").await.0, 127);
    assert_eq!(t.used("2026-04").await.0, 128);
    assert_eq!(t.used("2026-10").await.0, 127);
    assert_eq!(t.used("2026-11").await.0, 128);
}

#[tokio::test]
async fn a_leap_day_is_its_own_day_in_february() {
    // Tokyo is UTC+9: 29 February 2028 runs from 15:00 UTC on the 28th.
    let t = One::new("Asia/Tokyo", 100, None, "2028-02-28T14:59:59Z").await;
    assert_eq!(t.spend(10, 10).await.period, "2028-02");
    t.clock.set(at("2028-02-28T15:00:00Z"));
    let leap = allowed(t.authorize(90).await);
    assert_eq!(leap.period, "2028-02");
    assert_eq!(leap.resets_at, at("2028-02-29T15:00:00Z"));
    t.governor
        .settle(leap.reservation.as_ref().unwrap(), 90)
        .await
        .unwrap();
    t.clock.set(at("2028-02-29T14:59:59.999Z"));
    let spent = denied(t.authorize(1).await);
    assert_eq!(spent.retry_after_secs(), Some(1));
    t.clock.set(at("2028-02-29T15:00:00Z"));
    let march = allowed(t.authorize(100).await);
    assert_eq!(march.period, "2028-03");
    t.governor
        .settle(march.reservation.as_ref().unwrap(), 5)
        .await
        .unwrap();
    t.governor.shutdown().await.unwrap();
    assert_eq!(
        t.daily("2028-02-01", "2028-03-31").await,
        vec![
            ("2028-02-28".to_owned(), 10, 1),
            ("2028-02-29".to_owned(), 90, 1),
            ("2028-03-01".to_owned(), 5, 1),
        ]
    );
    assert_eq!(t.used("2028-02").await.0, 100);
    assert_eq!(t.used("2028-03").await.0, 5);
}

#[tokio::test]
async fn a_key_expires_exactly_at_its_second() {
    let t = One::new("UTC", 1_000, None, "2026-05-10T12:00:00Z").await;
    let created = t
        .admin
        .create_key("u@acme.io", Some(Duration::hours(1)))
        .await
        .unwrap();
    let key = created.secret.expose();
    assert_eq!(created.key.expires_at, Some(at("2026-05-10T13:00:00Z")));
    t.clock.set(at("2026-05-10T12:59:59.999Z"));
    assert!(t.governor.check(key, MODEL, 1).await.unwrap().is_allowed());
    let last = allowed(t.governor.authorize(key, MODEL, 1).await.unwrap());
    t.clock.set(at("2026-05-10T13:00:00Z"));
    for decision in [
        t.governor.check(key, MODEL, 1).await.unwrap(),
        t.governor.authorize(key, MODEL, 1).await.unwrap(),
    ] {
        let expired = denied(decision);
        assert_eq!(expired.reason, DenyReason::ExpiredKey);
        assert_eq!(expired.principal.unwrap().key_id, created.key.id);
    }
    // A request allowed just before the expiry still settles.
    t.governor
        .settle(last.reservation.as_ref().unwrap(), 1)
        .await
        .unwrap();
    // The key without an expiry is untouched.
    assert!(t.authorize(1).await.is_allowed());
}

// ---------------------------------------------------------------------------
// Model patterns, through authorize.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn model_patterns_decide_through_the_governor() {
    let t = One::new("UTC", 1_000_000, None, "2026-05-10T12:00:00Z").await;
    let admin = &t.admin;
    admin.allow_model("acme", "  Anthropic/*  ").await.unwrap();
    admin.allow_model("acme", " GPT-4o-Mini ").await.unwrap();
    for (slug, patterns) in [("open", &["*"][..]), ("closed", &[][..])] {
        admin.create_org(slug, 1_000_000, "UTC").await.unwrap();
        for pattern in patterns {
            admin.allow_model(slug, pattern).await.unwrap();
        }
        let email = format!("u@{slug}.io");
        admin
            .create_user(slug, &email, Role::Member, None)
            .await
            .unwrap();
    }
    let open = admin.create_key("u@open.io", None).await.unwrap();
    let closed = admin.create_key("u@closed.io", None).await.unwrap();
    let g = &t.governor;
    let decide = |key: String, model: &'static str| async move {
        let checked = g.check(&key, model, 1).await;
        let decision = g.authorize(&key, model, 1).await;
        if let Ok(decision) = &decision {
            assert_eq!(
                decision.is_allowed(),
                checked.as_ref().unwrap().is_allowed(),
                "check and authorize disagree on {model:?}"
            );
            if let Some(reservation) = decision.reservation() {
                g.release(reservation).await.unwrap();
            }
        } else {
            assert!(checked.is_err(), "check accepted {model:?}");
        }
        decision
    };
    let acme = || t.key.clone();
    for model in [
        "gpt-4o-mini",
        " GPT-4O-MINI\t",
        "anthropic/claude-3-5",
        "Anthropic/Claude-3-5",
        "anthropic/a/b",
        "anthropic/x",
    ] {
        let decision = decide(acme(), model).await.unwrap();
        assert!(decision.is_allowed(), "{model:?}: {decision:?}");
    }
    for model in [
        "gpt-4o",
        "gpt-4o-mini-2",
        "gpt-4o-min",
        "anthropic/",
        "anthropic",
        "anthropic-compat/claude",
        "anthropicx/claude",
        "openai/anthropic/claude",
    ] {
        let denial = denied(decide(acme(), model).await.unwrap());
        assert_eq!(denial.reason, DenyReason::ModelNotAllowed, "{model:?}");
        assert!(
            denial
                .message()
                .contains("is not allowed for organization `acme`")
        );
    }
    for model in ["", "   ", "anthropic/*", "*", "gpt 4o", "gpt-4o*"] {
        assert_eq!(
            invalid_field(decide(acme(), model).await),
            "model",
            "{model:?}"
        );
    }
    for model in ["anything/at-all", "x", " Mixed-Case "] {
        let decision = decide(open.secret.expose().to_owned(), model)
            .await
            .unwrap();
        assert!(decision.is_allowed(), "`*` grants {model:?}");
    }
    let closed_key = || closed.secret.expose().to_owned();
    for model in ["gpt-4o-mini", "x", "anthropic/claude"] {
        let denial = denied(decide(closed_key(), model).await.unwrap());
        assert_eq!(
            denial.reason,
            DenyReason::ModelNotAllowed,
            "an empty list grants nothing"
        );
    }
    // Changes reach the governor's cache through the admin.
    admin.allow_model("closed", "openai/*").await.unwrap();
    assert!(
        decide(closed_key(), "OpenAI/GPT-5 ")
            .await
            .unwrap()
            .is_allowed()
    );
    assert!(!decide(closed_key(), "openai").await.unwrap().is_allowed());
    admin.deny_model("closed", "openai/*").await.unwrap();
    assert!(
        !decide(closed_key(), "openai/gpt-5")
            .await
            .unwrap()
            .is_allowed()
    );
    admin.deny_model("acme", "anthropic/*").await.unwrap();
    assert!(
        !decide(acme(), "anthropic/claude-3-5")
            .await
            .unwrap()
            .is_allowed()
    );
    assert!(decide(acme(), "gpt-4o-mini").await.unwrap().is_allowed());
    assert_eq!(g.stats().open_reservations, 0);
}

#[tokio::test]
async fn key_models_lists_the_org_entries_and_follows_changes() {
    let t = One::new("UTC", 1_000, None, "2026-05-10T12:00:00Z").await;
    t.admin.allow_model("acme", " Anthropic/* ").await.unwrap();
    let listed = |models: KeyModels| match models {
        KeyModels::Usable {
            principal,
            allowed_models,
        } => {
            assert_eq!(principal.key_id, t.key_id);
            allowed_models
        }
        KeyModels::Refused(reason) => panic!("refused: {reason:?}"),
    };

    let models = listed(t.governor.key_models(&t.key).await.unwrap());
    assert_eq!(models, ["anthropic/*", MODEL]);
    t.admin.deny_model("acme", MODEL).await.unwrap();
    let models = listed(t.governor.key_models(&t.key).await.unwrap());
    assert_eq!(models, ["anthropic/*"]);

    let unknown = ias_core::KeySecret::generate();
    for key in [unknown.expose(), "not-a-key"] {
        assert_eq!(
            t.governor.key_models(key).await.unwrap(),
            KeyModels::Refused(DenyReason::InvalidKey)
        );
    }
    t.admin.revoke_key(t.key_id).await.unwrap();
    let revoked = t.governor.key_models(&t.key).await.unwrap();
    assert_eq!(revoked, KeyModels::Refused(DenyReason::RevokedKey));
    assert_eq!(
        serde_json::to_value(&revoked).unwrap(),
        serde_json::json!({ "refused": "revoked_key" })
    );
}

// ---------------------------------------------------------------------------
// Rate limits.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_burst_at_the_rpm_limit_passes_and_one_more_waits_exactly() {
    let t = One::new("UTC", 1_000_000, None, "2026-05-10T12:00:00Z").await;
    let start = t.clock.now();
    t.admin
        .set_rate_limits("acme", LimitTarget::Org, RateLimits::requests(5))
        .await
        .unwrap();
    let mut open = Vec::new();
    for s in 0..5 {
        t.clock.set(start + Duration::seconds(s));
        open.push(allowed(t.authorize(1).await).reservation.unwrap());
    }
    t.clock.set(start + Duration::seconds(5));
    let sixth = denied(t.authorize(1).await);
    assert_eq!(sixth.reason, DenyReason::RateLimited);
    let limit = sixth.limit.clone().unwrap();
    assert_eq!(
        (limit.scope, limit.kind, limit.limit, limit.used),
        (LimitScope::Org, LimitKind::RequestsPerMinute, 5, 5)
    );
    // The first grant leaves the window 60 s after it was made.
    assert_eq!(limit.retry_after_secs, Some(55));
    assert_eq!(limit.resets_at, start + Duration::seconds(60));
    assert!(
        sixth
            .message()
            .contains("5 of 5 requests per minute used; retry in 55 s")
    );
    // A check decides the same and records nothing.
    assert_eq!(
        denied(t.governor.check(&t.key, MODEL, 1).await.unwrap()).retry_after_secs(),
        Some(55)
    );
    t.clock.set(start + Duration::milliseconds(59_999));
    assert_eq!(denied(t.authorize(1).await).retry_after_secs(), Some(1));
    t.clock.set(start + Duration::seconds(60));
    open.push(allowed(t.authorize(1).await).reservation.unwrap());
    assert_eq!(denied(t.authorize(1).await).retry_after_secs(), Some(1));
    t.clock.set(start + Duration::milliseconds(60_500));
    assert_eq!(denied(t.authorize(1).await).retry_after_secs(), Some(1));
    t.clock.set(start + Duration::seconds(61));
    open.push(allowed(t.authorize(1).await).reservation.unwrap());
    for reservation in &open {
        t.governor.settle(reservation, 1).await.unwrap();
    }
}

#[tokio::test]
async fn a_burst_at_the_tpm_limit_passes_and_one_more_waits_exactly() {
    let t = One::new("UTC", 1_000_000, None, "2026-05-10T12:00:00Z").await;
    let start = t.clock.now();
    t.admin
        .set_rate_limits(
            "acme",
            LimitTarget::User("u@acme.io".into()),
            RateLimits::tokens(100),
        )
        .await
        .unwrap();
    let mut open = Vec::new();
    for (s, tokens) in [(0, 40), (10, 40), (20, 20)] {
        t.clock.set(start + Duration::seconds(s));
        open.push(allowed(t.authorize(tokens).await).reservation.unwrap());
    }
    t.clock.set(start + Duration::seconds(30));
    let over = denied(t.authorize(1).await);
    let limit = over.limit.clone().unwrap();
    assert_eq!(
        (limit.scope, limit.kind, limit.limit, limit.used),
        (LimitScope::User, LimitKind::TokensPerMinute, 100, 100)
    );
    assert_eq!(limit.retry_after_secs, Some(30));
    // 50 tokens need the first two grants gone: at 70 s.
    assert_eq!(denied(t.authorize(50).await).retry_after_secs(), Some(40));
    // More than the limit itself never fits.
    let never = denied(t.authorize(101).await);
    assert_eq!(never.retry_after_secs(), None);
    assert!(
        never.message().contains("it can never fit"),
        "{}",
        never.message()
    );
    // A settle corrects the window to the real usage: 30 tokens come free.
    t.governor.settle(&open.remove(0), 10).await.unwrap();
    open.push(allowed(t.authorize(30).await).reservation.unwrap());
    assert_eq!(denied(t.authorize(1).await).limit.unwrap().used, 100);
    t.clock.set(start + Duration::milliseconds(59_999));
    assert_eq!(denied(t.authorize(1).await).retry_after_secs(), Some(1));
    t.clock.set(start + Duration::seconds(60));
    // The first grant (now 10 tokens) left the window.
    open.push(allowed(t.authorize(10).await).reservation.unwrap());
    assert_eq!(denied(t.authorize(1).await).retry_after_secs(), Some(10));
    for reservation in &open {
        t.governor
            .settle(reservation, reservation.tokens)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_tasks_get_exactly_the_rate_limit() {
    let t = Arc::new(One::new("UTC", 1_000_000_000, None, "2026-05-10T12:00:00Z").await);
    for (target, limits, estimate, expected) in [
        (LimitTarget::Key(t.key_id), RateLimits::requests(10), 1, 10),
        (
            LimitTarget::Key(t.key_id),
            RateLimits::tokens(1_000),
            100,
            10,
        ),
        (LimitTarget::Org, RateLimits::tokens(1_000), 30, 33),
    ] {
        t.admin
            .set_rate_limits("acme", LimitTarget::Key(t.key_id), RateLimits::NONE)
            .await
            .unwrap();
        t.admin
            .set_rate_limits("acme", LimitTarget::Org, RateLimits::NONE)
            .await
            .unwrap();
        let scope = match target {
            LimitTarget::Org => LimitScope::Org,
            LimitTarget::User(_) => LimitScope::User,
            LimitTarget::Key(_) => LimitScope::Key,
        };
        t.admin
            .set_rate_limits("acme", target, limits)
            .await
            .unwrap();
        // A new window for each round.
        t.clock.advance(Duration::seconds(61));
        let barrier = Arc::new(tokio::sync::Barrier::new(64));
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let (t, barrier) = (t.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    t.authorize(estimate).await
                })
            })
            .collect();
        let mut granted = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                Decision::Allowed(allowed) => granted.push(allowed.reservation.unwrap()),
                Decision::Denied(denied) => {
                    assert_eq!(denied.reason, DenyReason::RateLimited);
                    assert_eq!(denied.limit.unwrap().scope, scope);
                }
            }
        }
        assert_eq!(granted.len(), expected, "{limits:?} on {scope:?}");
        for reservation in &granted {
            t.governor.settle(reservation, estimate).await.unwrap();
        }
    }
}

#[tokio::test]
async fn rate_denials_name_the_org_the_user_or_the_key() {
    let t = One::new("UTC", 1_000_000, None, "2026-05-10T12:00:00Z").await;
    let user = LimitTarget::User("u@acme.io".into());
    let key = LimitTarget::Key(t.key_id);
    let phases = [
        (
            LimitTarget::Org,
            LimitScope::Org,
            "organization `acme` rate limit".to_owned(),
        ),
        (
            user,
            LimitScope::User,
            "user `u@acme.io` rate limit".to_owned(),
        ),
        (key, LimitScope::Key, format!("key {} rate limit", t.key_id)),
    ];
    let mut previous: Option<LimitTarget> = None;
    for (target, scope, words) in phases {
        if let Some(previous) = previous.take() {
            t.admin
                .set_rate_limits("acme", previous, RateLimits::NONE)
                .await
                .unwrap();
        }
        t.admin
            .set_rate_limits("acme", target.clone(), RateLimits::requests(1))
            .await
            .unwrap();
        t.clock.advance(Duration::seconds(61));
        let first = t.spend(1, 1).await;
        let second = denied(t.authorize(1).await);
        assert_eq!(second.reason, DenyReason::RateLimited);
        assert_eq!(second.limit.as_ref().unwrap().scope, scope);
        assert_eq!(second.retry_after_secs(), Some(60));
        assert!(second.message().contains(&words), "{}", second.message());
        assert_eq!(second.principal.as_ref().unwrap().key_id, first.key_id);
        previous = Some(target);
    }
}

/// Governors on one database file, each with a connection of its own as
/// separate processes have, racing for one rate limit: exactly the limit
/// is granted between them, and once the window is spent each refuses
/// with the time until the first grant leaves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn governors_sharing_a_file_grant_a_rate_limit_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ias.db");
    let clock = Arc::new(ManualClock::new(at("2026-05-10T12:00:00Z")));
    let first = SqliteStore::open(&path).await.unwrap();
    let admin = admin(&first, &clock);
    admin.create_org("acme", 1_000_000, "UTC").await.unwrap();
    admin.allow_model("acme", MODEL).await.unwrap();
    admin
        .create_user("acme", "u@acme.io", Role::Member, None)
        .await
        .unwrap();
    let key = admin.create_key("u@acme.io", None).await.unwrap();
    let key = key.secret.expose().to_owned();
    admin
        .set_rate_limits("acme", LimitTarget::Org, RateLimits::requests(25))
        .await
        .unwrap();
    let config = GovernorConfig {
        flush_interval: StdDuration::from_millis(50),
        ..GovernorConfig::default()
    };
    let mut governors = Vec::new();
    let mut maintenance = Vec::new();
    for _ in 0..3 {
        let store = SqliteStore::open(&path).await.unwrap();
        let governor = Governor::builder(store)
            .clock(clock.clone())
            .config(config)
            .open()
            .await
            .unwrap();
        maintenance.push(governor.spawn_maintenance());
        governors.push(governor);
    }
    let tasks: Vec<_> = governors
        .iter()
        .cycle()
        .take(9)
        .map(|governor| {
            let (governor, key) = (governor.clone(), key.clone());
            tokio::spawn(async move {
                let mut granted = 0;
                for _ in 0..100 {
                    match governor.authorize(&key, MODEL, 1).await.unwrap() {
                        Decision::Allowed(allowed) => {
                            governor
                                .settle(&allowed.reservation.unwrap(), 1)
                                .await
                                .unwrap();
                            granted += 1;
                        }
                        // Spent: the wait is for the window, not for another governor.
                        Decision::Denied(denied) if denied.retry_after_secs() == Some(60) => break,
                        Decision::Denied(_) => {}
                    }
                }
                granted
            })
        })
        .collect();
    let mut granted = 0;
    for task in tasks {
        granted += task.await.unwrap();
    }
    assert_eq!(granted, 25);
    clock.advance(Duration::seconds(20));
    for governor in &governors {
        let refused = denied(governor.authorize(&key, MODEL, 1).await.unwrap());
        assert_eq!(refused.reason, DenyReason::RateLimited);
        assert_eq!(refused.retry_after_secs(), Some(40));
        assert_eq!(refused.limit.unwrap().used, 25);
    }
    clock.advance(Duration::seconds(40));
    for governor in &governors {
        let again = allowed(governor.authorize(&key, MODEL, 1).await.unwrap());
        governor
            .settle(&again.reservation.unwrap(), 1)
            .await
            .unwrap();
    }
    for m in maintenance {
        m.shutdown().await.unwrap();
    }
}

/// A flood of requests against a spent limit is refused from memory: the
/// store is asked again only after a second.
#[tokio::test]
async fn a_flood_against_a_spent_limit_costs_the_store_little() {
    let t = One::new("UTC", 1_000, None, "2026-05-10T12:00:00Z").await;
    t.admin
        .set_rate_limits("acme", LimitTarget::Key(t.key_id), RateLimits::requests(3))
        .await
        .unwrap();
    for _ in 0..3 {
        t.spend(1, 1).await;
    }
    let before = t.governor.stats().syncs;
    for _ in 0..100 {
        let refused = denied(t.authorize(1).await);
        assert_eq!(refused.reason, DenyReason::RateLimited);
        assert_eq!(refused.retry_after_secs(), Some(60));
    }
    let asked = t.governor.stats().syncs - before;
    assert!(asked <= 2, "{asked} syncs for 100 refusals");
    t.clock.advance(Duration::milliseconds(1_100));
    denied(t.authorize(1).await);
    assert!(
        t.governor.stats().syncs > before + asked,
        "asked again later"
    );

    // The same for a spent budget.
    t.admin
        .set_rate_limits("acme", LimitTarget::Key(t.key_id), RateLimits::NONE)
        .await
        .unwrap();
    t.spend(990, 990).await;
    let before = t.governor.stats().syncs;
    for _ in 0..100 {
        assert_eq!(
            denied(t.authorize(50).await).reason,
            DenyReason::OrgBudgetExhausted
        );
    }
    let asked = t.governor.stats().syncs - before;
    assert!(asked <= 3, "{asked} syncs for 100 refusals");
    // What is left still fits.
    allowed(t.authorize(7).await);
}

/// A settle long after its grant left the rate window must not correct
/// a newer grant of the same scope.
#[tokio::test]
async fn a_late_settle_corrects_only_its_own_rate_grant() {
    let t = One::new("UTC", 1_000_000, None, "2026-05-10T12:00:00Z").await;
    t.admin
        .set_rate_limits("acme", LimitTarget::Org, RateLimits::tokens(100))
        .await
        .unwrap();
    // A long request: granted now, settled two minutes later.
    let slow = allowed(t.authorize(10).await).reservation.unwrap();
    t.clock.advance(Duration::seconds(61));
    // Maintenance forgets windows that hold no grant.
    t.governor.maintain().await.unwrap();
    let fast = allowed(t.authorize(100).await).reservation.unwrap();
    t.governor.settle(&slow, 1).await.unwrap();
    // `fast` still holds all 100 tokens of the window.
    let over = denied(t.authorize(99).await);
    assert_eq!(over.limit.unwrap().kind, LimitKind::TokensPerMinute);
    t.governor.settle(&fast, 100).await.unwrap();
    assert!(!t.authorize(1).await.is_allowed());
}

// ---------------------------------------------------------------------------
// Bad input.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn bad_token_counts_are_refused_by_field_and_never_overflow() {
    let t = One::new("UTC", 1_000, None, "2026-05-10T12:00:00Z").await;
    let g = &t.governor;
    for estimate in [-1, i64::MIN, i64::MAX, 1_000_000_000_000_001] {
        let authorized = g.authorize(&t.key, MODEL, estimate).await;
        assert_eq!(invalid_field(authorized), "estimated_tokens", "{estimate}");
        let checked = g.check(&t.key, MODEL, estimate).await;
        assert_eq!(invalid_field(checked), "estimated_tokens", "{estimate}");
    }
    let reservation = allowed(t.authorize(10).await).reservation.unwrap();
    for actual in [-1, i64::MIN, i64::MAX] {
        let settled = g.settle(&reservation, actual).await;
        assert_eq!(invalid_field(settled), "actual_tokens", "{actual}");
    }
    // Nothing was charged and the reservation is still open.
    assert_eq!(g.stats().open_reservations, 1);
    g.settle(&reservation, 7).await.unwrap();

    // The largest accepted estimate: far above the budget, refused for good.
    let huge = denied(t.authorize(1_000_000_000_000_000).await);
    assert_eq!(huge.reason, DenyReason::OrgBudgetExhausted);
    assert_eq!(huge.retry_after_secs(), None);
    assert!(
        huge.message()
            .contains("lower the request's token estimate")
    );
    assert_eq!(huge.limit.unwrap().left(), 993);
    assert_eq!(
        denied(g.check(&t.key, MODEL, 1_000_000_000_000_000).await.unwrap()).reason,
        DenyReason::OrgBudgetExhausted
    );
    // Largest usage over a tiny estimate: charged, saturating nowhere.
    let small = allowed(t.authorize(1).await).reservation.unwrap();
    g.settle(&small, 1_000_000_000_000_000).await.unwrap();
    assert_eq!(
        denied(t.authorize(0).await).reason,
        DenyReason::OrgBudgetExhausted
    );
    // Under the largest tokens-per-minute limit, the largest estimate never fits either.
    t.admin
        .set_rate_limits(
            "acme",
            LimitTarget::Key(t.key_id),
            RateLimits::tokens(1_000_000_000),
        )
        .await
        .unwrap();
    let rate = denied(t.authorize(1_000_000_000_000_000).await);
    assert_eq!(rate.reason, DenyReason::RateLimited);
    assert_eq!(rate.retry_after_secs(), None);
    g.shutdown().await.unwrap();
    assert_eq!(
        t.used("2026-05").await,
        (1_000_000_000_000_007, 1_000_000_000_000_007)
    );
}

#[tokio::test]
async fn an_estimate_as_large_as_a_whole_budget_fits_exactly() {
    let max = 1_000_000_000_000_000;
    let t = One::new("UTC", max, Some(max), "2026-05-10T12:00:00Z").await;
    let all = allowed(t.authorize(max).await).reservation.unwrap();
    assert_eq!(
        denied(t.authorize(0).await).reason,
        DenyReason::OrgBudgetExhausted
    );
    t.governor.settle(&all, max).await.unwrap();
    assert_eq!(
        denied(t.authorize(0).await).reason,
        DenyReason::OrgBudgetExhausted
    );
    t.governor.shutdown().await.unwrap();
    assert_eq!(t.used("2026-05").await, (max, max));
}

#[tokio::test]
async fn control_characters_in_model_names_are_refused() {
    let t = One::new("UTC", 1_000, None, "2026-05-10T12:00:00Z").await;
    for model in [
        "gpt-4o\u{0}",
        "gpt\n4o-mini",
        "gpt-4o-mini\u{7}",
        "\u{1b}[31mgpt-4o-mini",
        "gpt-4o-mini\u{7f}",
        "gpt-4o-mini\u{202e}",
    ] {
        let result = t.governor.authorize(&t.key, model, 1).await;
        let message = match &result {
            Err(err @ Error::InvalidInput { field: "model", .. }) => err.to_string(),
            other => panic!("{model:?}: {other:?}"),
        };
        assert!(!message.chars().any(char::is_control), "{message:?}");
        assert_eq!(
            invalid_field(t.governor.check(&t.key, model, 1).await),
            "model"
        );
    }
    // An unknown key learns nothing about its model; the echo is printable.
    let denial = denied(
        t.governor
            .authorize("ias_nope", "gpt\u{0}\n4o", 1)
            .await
            .unwrap(),
    );
    assert_eq!(denial.reason, DenyReason::InvalidKey);
    assert!(
        !denial.model.chars().any(char::is_control),
        "{:?}",
        denial.model
    );
    assert_eq!(t.governor.stats().open_reservations, 0);
}

// ---------------------------------------------------------------------------
// Durability and expiry.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn strict_durability_stores_a_settle_before_it_returns() {
    let t = One::with(
        "UTC",
        1_000,
        None,
        "2026-05-10T12:00:00Z",
        Durability::Strict,
    )
    .await;
    let reservation = allowed(t.authorize(100).await).reservation.unwrap();
    t.governor.settle(&reservation, 70).await.unwrap();
    assert_eq!(t.used("2026-05").await, (70, 70));
    assert_eq!(t.governor.stats().queued_events, 0);
    let report = t
        .store
        .usage_report(t.org, None, "2026-05", None, 1000)
        .await
        .unwrap();
    assert_eq!(
        (report.models[0].tokens, report.models[0].requests),
        (70, 1)
    );

    // Write-behind, for contrast: stored only once flushed.
    let lazy = One::new("UTC", 1_000, None, "2026-05-10T12:00:00Z").await;
    lazy.spend(100, 70).await;
    assert_eq!(lazy.used("2026-05").await, (0, 0));
    assert_eq!(lazy.governor.stats().queued_events, 1);
    lazy.governor.flush().await.unwrap();
    assert_eq!(lazy.used("2026-05").await, (70, 70));
}

#[tokio::test]
async fn an_expired_reservation_is_released_and_a_late_settle_charges_once() {
    let t = One::new("UTC", 100, None, "2026-05-10T12:00:00Z").await;
    let first = allowed(t.authorize(100).await).reservation.unwrap();
    assert_eq!(first.expires_at, at("2026-05-10T12:01:00Z"));
    assert_eq!(
        denied(t.authorize(1).await).reason,
        DenyReason::OrgBudgetExhausted
    );
    // One millisecond before its TTL it is still held.
    t.clock.set(at("2026-05-10T12:00:59.999Z"));
    t.governor.maintain().await.unwrap();
    assert_eq!(t.governor.stats().expired_reservations, 0);
    assert_eq!(t.governor.stats().open_reservations, 1);

    t.clock.set(at("2026-05-10T12:01:00Z"));
    t.governor.maintain().await.unwrap();
    let stats = t.governor.stats();
    assert_eq!(
        (stats.expired_reservations, stats.open_reservations),
        (1, 0)
    );
    // Its tokens are available again.
    let second = allowed(t.authorize(100).await).reservation.unwrap();

    let late = t.governor.settle(&first, 30).await.unwrap();
    assert_eq!((late.reserved, late.charged), (100, 30));
    // Its tokens were freed once, at expiry; the late settle frees nothing more.
    let over = denied(t.authorize(1).await);
    assert_eq!(over.reason, DenyReason::OrgBudgetExhausted);
    assert_eq!(over.limit.unwrap().left(), 0);
    let again = t.governor.settle(&first, 30).await;
    assert!(matches!(again, Err(Error::NotFound { .. })), "{again:?}");
    assert!(matches!(
        t.governor.release(&first).await,
        Err(Error::NotFound { .. })
    ));

    // Charged in full: the late settle is usage above what was held.
    t.governor.settle(&second, 100).await.unwrap();
    t.governor.shutdown().await.unwrap();
    assert_eq!(t.used("2026-05").await, (130, 130));
    let state = t
        .store
        .budget_state(t.org, t.user, "2026-05")
        .await
        .unwrap();
    assert_eq!(state.org.reserved, 0);
    let report = t
        .store
        .usage_report(t.org, None, "2026-05", None, 1000)
        .await
        .unwrap();
    assert_eq!(
        (report.models[0].tokens, report.models[0].requests),
        (130, 2)
    );
    assert_eq!(t.governor.stats().expired_reservations, 1);
}

#[tokio::test]
async fn an_expired_reservation_is_forgotten_one_ttl_later() {
    let t = One::new("UTC", 1_000, None, "2026-05-10T12:00:00Z").await;
    let abandoned = allowed(t.authorize(10).await).reservation.unwrap();
    t.clock.advance(Duration::seconds(60));
    t.governor.maintain().await.unwrap();
    assert_eq!(t.governor.stats().expired_reservations, 1);
    t.clock.advance(Duration::seconds(60));
    t.governor.maintain().await.unwrap();
    let settled = t.governor.settle(&abandoned, 10).await;
    assert!(
        matches!(settled, Err(Error::NotFound { .. })),
        "{settled:?}"
    );
    t.governor.shutdown().await.unwrap();
    assert_eq!(t.used("2026-05").await, (0, 0));
    let state = t
        .store
        .budget_state(t.org, t.user, "2026-05")
        .await
        .unwrap();
    assert_eq!(state.org.reserved, 0);
}

/// A host drops `authorize` when its client goes away. Dropped while the
/// governor waits for the store to grow its lease, the sync still finishes
/// and records the lease, so shutdown gives it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorize_dropped_during_a_lease_sync_leaves_nothing_held() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ias.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let clock = Arc::new(ManualClock::new(at("2026-05-10T12:00:00Z")));
    let admin = admin(&store, &clock);
    let org = admin.create_org("acme", 1_000, "UTC").await.unwrap();
    admin.allow_model("acme", MODEL).await.unwrap();
    let user = admin
        .create_user("acme", "u@acme.io", Role::Member, None)
        .await
        .unwrap();
    let key = admin.create_key("u@acme.io", None).await.unwrap();
    let governor = Governor::builder(store.clone())
        .clock(clock)
        .open()
        .await
        .unwrap();
    // Another connection holds the write lock, so the lease sync must wait.
    let blocker = Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    {
        let mut authorize = std::pin::pin!(governor.authorize(key.secret.expose(), MODEL, 100));
        let first = std::future::poll_fn(|cx| Poll::Ready(authorize.as_mut().poll(cx))).await;
        assert!(first.is_pending(), "the lease sync should be waiting");
    }
    blocker.execute_batch("COMMIT").unwrap();
    // Let the store call, which runs on, finish.
    tokio::time::sleep(StdDuration::from_millis(200)).await;
    governor.shutdown().await.unwrap();
    let state = store
        .budget_state(org.id, user.id, "2026-05")
        .await
        .unwrap();
    assert_eq!((state.org.used, state.org.reserved), (0, 0));
}

/// A governor that leased nearly a whole budget in a burst, then gives
/// back what it does not need, must keep granting while that give-back is
/// being written: the tokens it gives back are free again, not reserved by
/// anyone, and the budget is far from spent.
#[tokio::test]
async fn requests_during_a_give_back_are_not_refused() {
    const BUDGET: i64 = 1_000_000_000_000;
    const ESTIMATE: i64 = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ias.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let clock = Arc::new(ManualClock::new(at("2026-05-10T12:00:00Z")));
    let admin = admin(&store, &clock);
    let org = admin.create_org("acme", BUDGET, "UTC").await.unwrap();
    admin.allow_model("acme", MODEL).await.unwrap();
    let user = admin
        .create_user("acme", "u@acme.io", Role::Member, None)
        .await
        .unwrap();
    let key = admin.create_key("u@acme.io", None).await.unwrap();
    let key = key.secret.expose().to_owned();
    let governor = Governor::builder(store.clone())
        .clock(clock)
        .open()
        .await
        .unwrap();

    // A burst on an empty lease: every request finds nothing free and asks
    // the store, each for a larger spare slice, until this governor holds
    // the whole budget (on one thread, every task asks before any sync runs).
    let burst: Vec<_> = (0..64)
        .map(|_| {
            let (governor, key) = (governor.clone(), key.clone());
            tokio::spawn(async move { governor.authorize(&key, MODEL, ESTIMATE).await })
        })
        .collect();
    for task in burst {
        let reservation = allowed(task.await.unwrap().unwrap()).reservation.unwrap();
        governor.settle(&reservation, ESTIMATE).await.unwrap();
    }
    let state = store
        .budget_state(org.id, user.id, "2026-05")
        .await
        .unwrap();
    assert!(
        state.org.reserved > BUDGET / 10 * 9,
        "the burst should lease nearly the whole budget: {state:?}"
    );

    // A flush gives back what is free; another connection holds the write
    // lock, so the give-back waits in the store.
    let blocker = Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let syncs = governor.stats().syncs;
    let flush = tokio::spawn({
        let governor = governor.clone();
        async move { governor.flush().await }
    });
    while governor.stats().syncs == syncs {
        tokio::task::yield_now().await;
    }

    // Meanwhile a request must wait for the store, not be refused.
    let mut authorize = std::pin::pin!(governor.authorize(&key, MODEL, ESTIMATE));
    let first = std::future::poll_fn(|cx| Poll::Ready(authorize.as_mut().poll(cx))).await;
    if let Poll::Ready(decision) = &first {
        let decision = decision.as_ref().unwrap();
        assert!(
            decision.is_allowed(),
            "refused during a give-back: {decision:?}"
        );
    }
    blocker.execute_batch("COMMIT").unwrap();
    flush.await.unwrap().unwrap();
    let decision = match first {
        Poll::Ready(decision) => decision.unwrap(),
        Poll::Pending => authorize.await.unwrap(),
    };
    governor
        .settle(&allowed(decision).reservation.unwrap(), ESTIMATE)
        .await
        .unwrap();
    governor.shutdown().await.unwrap();
    let state = store
        .budget_state(org.id, user.id, "2026-05")
        .await
        .unwrap();
    assert_eq!((state.org.used, state.org.reserved), (65 * ESTIMATE, 0));
}

// ---------------------------------------------------------------------------
// Fencing, feed resets.
// ---------------------------------------------------------------------------

/// A governor that has not reached the store for half its lease TTL (a
/// paused process) grants nothing more from its leases: another governor may
/// have taken them back, and the store decides again.
#[tokio::test]
async fn a_governor_past_its_lease_fence_asks_the_store_again() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let clock = Arc::new(ManualClock::new(at("2026-05-10T12:00:00Z")));
    let admin = admin(&store, &clock);
    admin.create_org("acme", 100, "UTC").await.unwrap();
    admin.allow_model("acme", MODEL).await.unwrap();
    admin
        .create_user("acme", "u@acme.io", Role::Member, None)
        .await
        .unwrap();
    let key = admin.create_key("u@acme.io", None).await.unwrap();
    let key = key.secret.expose().to_owned();
    let config = GovernorConfig {
        lease_ttl: StdDuration::from_secs(2),
        ..GovernorConfig::default()
    };
    let open = || {
        Governor::builder(store.clone())
            .clock(clock.clone())
            .config(config)
            .open()
    };
    let (paused, other) = (open().await.unwrap(), open().await.unwrap());

    let first = allowed(paused.authorize(&key, MODEL, 10).await.unwrap());
    paused
        .settle(&first.reservation.unwrap(), 10)
        .await
        .unwrap();
    // `paused` stops; its lease expires and `other` takes it back.
    clock.advance(Duration::seconds(3));
    let big = allowed(other.authorize(&key, MODEL, 90).await.unwrap());
    other.settle(&big.reservation.unwrap(), 90).await.unwrap();
    other.flush().await.unwrap();

    // Resumed, `paused` must not grant from the lease it no longer has.
    let late = paused.authorize(&key, MODEL, 10).await.unwrap();
    assert!(!late.is_allowed(), "{late:?}");
    paused.shutdown().await.unwrap();
    other.shutdown().await.unwrap();
    let state = store
        .budget_state(first.principal.org_id, first.principal.user_id, "2026-05")
        .await
        .unwrap();
    assert_eq!((state.org.used, state.org.reserved), (100, 0));
}

/// A change feed that goes back (emptied, or a backup restored under a
/// running governor) makes the governor reload everything, keeping its
/// open reservations, instead of missing every later change.
#[tokio::test]
async fn a_feed_that_goes_back_is_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ias.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let clock = Arc::new(ManualClock::new(at("2026-05-10T12:00:00Z")));
    let admin = admin(&store, &clock);
    admin.create_org("acme", 1_000, "UTC").await.unwrap();
    admin.allow_model("acme", MODEL).await.unwrap();
    admin
        .create_user("acme", "u@acme.io", Role::Member, None)
        .await
        .unwrap();
    let first = admin.create_key("u@acme.io", None).await.unwrap();
    let governor = Governor::builder(store.clone())
        .clock(clock.clone())
        .open()
        .await
        .unwrap();
    let open = allowed(
        governor
            .authorize(first.secret.expose(), MODEL, 100)
            .await
            .unwrap(),
    );

    let conn = Connection::open(&path).unwrap();
    conn.execute_batch("DELETE FROM changes; DELETE FROM sqlite_sequence WHERE name = 'changes';")
        .unwrap();
    admin.revoke_key(first.key.id).await.unwrap();
    governor.refresh().await.unwrap();
    let refused = denied(
        governor
            .authorize(first.secret.expose(), MODEL, 1)
            .await
            .unwrap(),
    );
    assert_eq!(refused.reason, DenyReason::RevokedKey);
    // The reservation made before the reload is still open, and settles.
    governor
        .settle(&open.reservation.unwrap(), 50)
        .await
        .unwrap();
    assert_eq!(governor.stats().open_reservations, 0);
}

/// The queue of settled usage stays within its bound: a settle that finds it
/// full writes it first.
#[tokio::test]
async fn the_usage_queue_stays_within_its_bound() {
    let t = One::new("UTC", 1_000_000, None, "2026-05-10T12:00:00Z").await;
    let governor = Governor::builder(t.store.clone())
        .clock(t.clock.clone())
        .config(GovernorConfig {
            max_queued_events: 3,
            ..GovernorConfig::default()
        })
        .open()
        .await
        .unwrap();
    for settled in 1..=10 {
        let decision = governor.authorize(&t.key, MODEL, 10).await.unwrap();
        governor
            .settle(&allowed(decision).reservation.unwrap(), 10)
            .await
            .unwrap();
        let queued = governor.stats().queued_events;
        assert!(queued <= 3, "{queued} queued after {settled} settles");
    }
    governor.shutdown().await.unwrap();
    assert_eq!(t.used("2026-05").await.0, 100);
}
