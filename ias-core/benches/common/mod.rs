//! Shared by the benchmarks: the key sets, seeding SQLite files and a small PRNG.
//!
//! Seeding a file with a million keys takes a while, so each seeded file is
//! kept in the system temp directory (`ias-core-bench/`) and reused; every
//! run works on a fresh copy, because settling requests writes usage rows.
//! Orgs, their first user and a few keys are created through [`Admin`]
//! (audited, one transaction each, like a real deployment); the remaining
//! users and keys are bulk-inserted with rusqlite in one transaction.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ias_core::{Actor, Admin, Governor, KeyHash, Role, Source};
use ias_store_sqlite::{MIGRATIONS, SqliteStore};

/// The model every benchmark asks for; each org allows exactly this one.
pub const MODEL: &str = "gpt-4o-mini";
/// Tokens estimated per request (reserved by authorize).
pub const ESTIMATE: i64 = 500;
/// Tokens charged per request (settle).
pub const ACTUAL: i64 = 420;
/// Each org's monthly budget: large enough that leases never run dry.
pub const BUDGET: i64 = 100_000_000_000_000;
/// The one-off reservation that grows each org's lease before measuring (see [`grow_leases`]).
pub const LEASE_GROWER: i64 = 10_000_000_000;
/// Keys created through `Admin` (random secrets, not in the lookup pool).
pub const ADMIN_KEYS: usize = 3;
/// Bump when the seeding changes, so stale cached files are not reused.
const SEED_VERSION: u32 = 1;
/// `ias_` plus 40 base62 characters.
pub const SECRET_LEN: usize = 44;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// One key-set size.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    /// Short label, such as `1M`.
    pub label: &'static str,
    /// Keys in total (including the few made through `Admin`).
    pub keys: usize,
    /// Organizations.
    pub orgs: usize,
    /// Users per organization.
    pub users_per_org: usize,
}

impl Size {
    /// Keys whose secrets the benchmark knows (all but the `Admin`-made ones).
    pub fn pool_len(&self) -> usize {
        self.keys - ADMIN_KEYS.min(self.orgs)
    }

    /// Users in total.
    pub fn users(&self) -> usize {
        self.orgs * self.users_per_org
    }
}

/// 10 keys per user everywhere; 10 orgs x 10 users, 100 x 100, 1,000 x 100.
pub const SIZES: [Size; 3] = [
    Size {
        label: "1k",
        keys: 1_000,
        orgs: 10,
        users_per_org: 10,
    },
    Size {
        label: "100k",
        keys: 100_000,
        orgs: 100,
        users_per_org: 100,
    },
    Size {
        label: "1M",
        keys: 1_000_000,
        orgs: 1_000,
        users_per_org: 100,
    },
];

/// The sizes to run: all of [`SIZES`], or those named in `IAS_BENCH_SIZES` (such as `1k,100k`).
pub fn sizes() -> Vec<Size> {
    match std::env::var("IAS_BENCH_SIZES") {
        Ok(names) => SIZES
            .into_iter()
            .filter(|s| {
                names
                    .split(',')
                    .any(|n| n.trim().eq_ignore_ascii_case(s.label))
            })
            .collect(),
        Err(_) => SIZES.to_vec(),
    }
}

/// Where the `hot_path` benchmark leaves its summary for the `memory` benchmark to print last.
pub const HANDOFF: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/hot_path_summary.md");

/// SplitMix64: tiny, fast and good enough to pick keys and make secrets.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform-enough index below `n` (multiply-shift, no division).
    #[inline]
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

/// The deterministic, well-formed secret of pool key `i`.
pub fn secret(i: usize) -> String {
    let mut rng = Rng::new(0x1A5B_E7C4_0000_0000 ^ (i as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let mut s = String::with_capacity(SECRET_LEN);
    s.push_str("ias_");
    for _ in 0..SECRET_LEN - 4 {
        s.push(char::from(BASE62[rng.below(BASE62.len())]));
    }
    s
}

/// Every pool secret of a size, packed end to end (`SECRET_LEN` bytes each).
pub struct Pool {
    text: String,
    len: usize,
}

impl Pool {
    /// The pool of `size`.
    pub fn new(size: Size) -> Self {
        let len = size.pool_len();
        let mut text = String::with_capacity(len * SECRET_LEN);
        for i in 0..len {
            text.push_str(&secret(i));
        }
        Pool { text, len }
    }

    /// Secrets in the pool.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Secret `i`.
    #[inline]
    pub fn get(&self, i: usize) -> &str {
        &self.text[i * SECRET_LEN..(i + 1) * SECRET_LEN]
    }
}

/// One authorize+settle; panics on a denial, which would make the figures meaningless.
#[inline]
pub async fn authorize_settle(governor: &Governor, key: &str, estimate: i64) {
    let decision = governor.authorize(key, MODEL, estimate).await.unwrap();
    let Some(reservation) = decision.reservation() else {
        panic!("request denied: {decision:?}");
    };
    std::hint::black_box(governor.settle(reservation, ACTUAL).await.unwrap());
    std::hint::black_box(&decision);
}

/// One request per user (so per org too), reserving [`LEASE_GROWER`] tokens.
///
/// A meter asks the store for the shortfall plus a slice that doubles on
/// every renewal and is at least the request, so this leaves every org
/// holding about 2 x 10^10 tokens: the steady state that the budgets of
/// 10^14 allow, in which no request waits for the store while measuring
/// (the benchmarks count and print the in-line store syncs to show it).
pub async fn grow_leases(governor: &Governor, pool: &Pool, size: Size) {
    for i in 0..size.users().min(pool.len()) {
        // Pool key i belongs to user i (round-robin), in org order.
        authorize_settle(governor, pool.get(i), LEASE_GROWER).await;
    }
    governor.flush().await.unwrap();
}

fn org_slug(o: usize) -> String {
    format!("bench-{o:04}")
}

fn email(o: usize, u: usize) -> String {
    format!("user{u:03}@org{o:04}.bench.example")
}

/// Where seeded files are kept between runs.
pub fn cache_dir() -> PathBuf {
    std::env::temp_dir().join("ias-core-bench")
}

fn cached_path(size: Size) -> PathBuf {
    cache_dir().join(format!(
        "seed-v{SEED_VERSION}-m{}-{}keys.sqlite",
        MIGRATIONS.len(),
        size.keys
    ))
}

/// The pristine seeded file of `size`, made now if not cached; and how long seeding took.
pub async fn seeded_file(size: Size) -> (PathBuf, Option<Duration>) {
    let path = cached_path(size);
    if path.exists() {
        return (path, None);
    }
    std::fs::create_dir_all(cache_dir()).unwrap();
    let partial = path.with_extension(format!("partial-{}", std::process::id()));
    remove_db(&partial);
    let started = Instant::now();
    seed_with_admin(&partial, size).await;
    bulk_insert(&partial, size);
    std::fs::rename(&partial, &path).unwrap();
    remove_db(&partial);
    (path, Some(started.elapsed()))
}

fn remove_db(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(name));
    }
}

/// Orgs (with their model), each org's first user, and `ADMIN_KEYS` keys, through `Admin`.
async fn seed_with_admin(path: &Path, size: Size) {
    let store = SqliteStore::open(path).await.unwrap();
    let admin = Admin::new(store, Actor::local_operator(), Source::Library);
    for o in 0..size.orgs {
        let slug = org_slug(o);
        admin.create_org(&slug, BUDGET, "UTC").await.unwrap();
        admin.allow_model(&slug, MODEL).await.unwrap();
        admin
            .create_user(&slug, &email(o, 0), Role::OrgAdmin, None)
            .await
            .unwrap();
    }
    for o in 0..ADMIN_KEYS.min(size.orgs) {
        admin.create_key(&email(o, 0), None).await.unwrap();
    }
}

/// The other users, and every pool key spread round-robin over all users.
fn bulk_insert(path: &Path, size: Size) {
    let mut conn = rusqlite::Connection::open(path).unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let tx = conn.transaction().unwrap();
    // (user id, org id), in org order then user order.
    let mut users: Vec<(i64, i64)> = Vec::with_capacity(size.users());
    {
        let mut find_org = tx
            .prepare("SELECT id FROM organizations WHERE slug = ?1")
            .unwrap();
        let mut find_user = tx.prepare("SELECT id FROM users WHERE email = ?1").unwrap();
        let mut add_user = tx
            .prepare(
                "INSERT INTO users (org_id, email, role, monthly_token_limit, password_hash, \
                 managed_by, created_at, updated_at) \
                 VALUES (?1, ?2, 'member', NULL, NULL, 'api', ?3, ?3)",
            )
            .unwrap();
        for o in 0..size.orgs {
            let org_id: i64 = find_org.query_row([org_slug(o)], |row| row.get(0)).unwrap();
            let first: i64 = find_user
                .query_row([email(o, 0)], |row| row.get(0))
                .unwrap();
            users.push((first, org_id));
            for u in 1..size.users_per_org {
                add_user
                    .execute(rusqlite::params![org_id, email(o, u), now])
                    .unwrap();
                users.push((tx.last_insert_rowid(), org_id));
            }
        }
        let mut add_key = tx
            .prepare(
                "INSERT INTO api_keys (user_id, org_id, key_hash, prefix, created_at, \
                 expires_at, revoked_at) VALUES (?1, ?2, ?3, ?4, ?5, NULL, NULL)",
            )
            .unwrap();
        for i in 0..size.pool_len() {
            let secret = secret(i);
            let (user_id, org_id) = users[i % users.len()];
            add_key
                .execute(rusqlite::params![
                    user_id,
                    org_id,
                    &KeyHash::of(&secret).0[..],
                    &secret[..12],
                    now
                ])
                .unwrap();
        }
    }
    tx.commit().unwrap();
    conn.pragma_update(None, "wal_checkpoint", "TRUNCATE")
        .unwrap();
    drop(conn);
}

/// A fresh working copy of a seeded file, in `dir`.
pub fn working_copy(seeded: &Path, dir: &Path, size: Size) -> PathBuf {
    let copy = dir.join(format!("work-{}.sqlite", size.keys));
    remove_db(&copy);
    std::fs::copy(seeded, &copy).unwrap();
    copy
}

/// Linux resident set size in bytes, from `/proc/self/statm` (0 elsewhere).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

/// The CPU model and core count, for the summary.
pub fn machine_line() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let mhz = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("cpu MHz"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{model} @ {mhz} MHz, {cores} cores")
}
