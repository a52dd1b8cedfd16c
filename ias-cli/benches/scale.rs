//! The in-process part of the scale report (`scripts/scale-report`), on a
//! database that `ias-admin seed` filled:
//!
//! - the cache load: `Governor::open` over every key, user and organization,
//!   and the process's resident memory before and after;
//! - authorize + settle over the seeded keys (`--keys-out`), each call timed:
//!   once per key first (cold), then on random keys (warm);
//! - admin reads through `Admin`, each timed: a page of organizations, an
//!   organization's users, a user's keys, an organization's usage report;
//! - GitOps: every organization's file generated from what the database
//!   holds, in one `file://` repository; the first reconcile cycle (which
//!   takes ownership and applies what differs) and cycles with no new commit.
//!
//! Prints `RESULT<TAB>name<TAB>value` lines, which the report collects, and
//! a readable summary on stderr. Run through the report, or by hand:
//!
//! ```text
//! IAS_SCALE_DATABASE_URL=sqlite:///tmp/ias.db IAS_SCALE_KEYS=/tmp/keys.tsv \
//!     cargo bench -p ias-cli --bench scale
//! ```
//!
//! It writes to the database (usage, GitOps settings): run it on a copy.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use ias_core::gitops::NewGitopsSettings;
use ias_core::gitops::reconcile::{Reconciler, ReconcilerConfig};
use ias_core::page::PageRequest;
use ias_core::{
    Actor, Admin, Decision, Governor, LimitTarget, ManualClock, Organization, Role, Source, Store,
    User,
};
use ias_gitops::GitManifestSource;

/// Tokens each authorize reserves and each settle charges: small, so that a
/// run of calls at the full size stays far below the seeded budgets and
/// limits (at a few organizations, the same calls spend some of them, and
/// the denied calls, which are counted, are timed with the rest).
const ESTIMATE: i64 = 50;
const ACTUAL: i64 = 40;
const WARM_UP: usize = 20_000;
const CALLS: usize = 200_000;
/// Settled usage is written every this many calls, outside the timing, as
/// the governor's background task does in a gateway.
const FLUSH_EVERY: usize = 5_000;
const ADMIN_CALLS: usize = 500;
const QUIET_CYCLES: usize = 3;
/// Longer than the time a `GitManifestSource` reuses a remote head.
const PAST_HEAD_REUSE: Duration = Duration::from_millis(5_200);

fn main() {
    let url = std::env::var("IAS_SCALE_DATABASE_URL")
        .expect("IAS_SCALE_DATABASE_URL names the seeded database");
    let keys = std::env::var("IAS_SCALE_KEYS").expect("IAS_SCALE_KEYS names the --keys-out file");
    let keys = read_keys(Path::new(&keys));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = open(&url).await;
        let governor = cache_load(&store).await;
        hot_path(&governor, &keys).await;
        governor.shutdown().await.unwrap();
        let admin = Admin::new(store.clone(), Actor::local_operator(), Source::Cli);
        let orgs = all_orgs(&admin).await;
        admin_reads(&admin, &orgs).await;
        reconcile(&store, &admin, &orgs).await;
    });
}

async fn open(url: &str) -> Arc<dyn Store> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        return ias_store_sqlite::SqliteStore::open(path).await.unwrap();
    }
    ias_store_postgres::PostgresStore::open(url).await.unwrap()
}

/// One `--keys-out` line: `SECRET<TAB>SLUG<TAB>MODEL`.
struct SeededKey {
    secret: String,
    model: String,
}

fn read_keys(path: &Path) -> Vec<SeededKey> {
    let text = std::fs::read_to_string(path).unwrap();
    let keys: Vec<SeededKey> = text
        .lines()
        .map(|line| {
            let mut fields = line.split('\t');
            let secret = fields.next().unwrap().to_owned();
            let model = fields.nth(1).unwrap().to_owned();
            SeededKey { secret, model }
        })
        .collect();
    assert!(!keys.is_empty(), "no keys in {}", path.display());
    keys
}

fn result(name: &str, value: impl std::fmt::Display) {
    println!("RESULT\t{name}\t{value}");
    eprintln!("{name:<28} {value}");
}

/// The process's resident memory, in MiB.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

async fn cache_load(store: &Arc<dyn Store>) -> Governor {
    let before = rss_mib();
    let started = Instant::now();
    let governor = Governor::open(store.clone()).await.unwrap();
    result("open_ms", started.elapsed().as_millis());
    result("cache_rss_mb", format!("{:.0}", rss_mib() - before));
    let stats = governor.stats();
    result("cached_keys", stats.keys);
    governor
}

/// A small xorshift generator: the same sequence on every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Authorize + settle, one call at a time: first once per sampled key, in
/// file order (cold: the first request of an organization or user fetches
/// its budget lease from the store), then `CALLS` on random keys after a
/// warm-up (warm: leases held, the steady state of a running gateway).
async fn hot_path(governor: &Governor, keys: &[SeededKey]) {
    let mut cold = Vec::with_capacity(keys.len());
    let mut denied = 0;
    for (call, key) in keys.iter().enumerate() {
        if call % FLUSH_EVERY == 0 {
            governor.flush().await.unwrap();
        }
        let (took, allowed) = authorize_settle(governor, key).await;
        cold.push(took);
        denied += usize::from(!allowed);
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut warm = Vec::with_capacity(CALLS);
    for call in 0..WARM_UP + CALLS {
        if call % FLUSH_EVERY == 0 {
            governor.flush().await.unwrap();
        }
        let key = &keys[rng.below(keys.len())];
        let (took, allowed) = authorize_settle(governor, key).await;
        if call >= WARM_UP {
            warm.push(took);
            denied += usize::from(!allowed);
        }
    }
    cold.sort_unstable();
    warm.sort_unstable();
    result("authorize_keys", keys.len());
    result("authorize_calls", CALLS);
    result("authorize_denied", denied);
    result("authorize_cold_p50_us", micros(percentile(&cold, 0.50)));
    result("authorize_cold_p99_us", micros(percentile(&cold, 0.99)));
    result("authorize_p50_us", micros(percentile(&warm, 0.50)));
    result("authorize_p99_us", micros(percentile(&warm, 0.99)));
    result("authorize_p999_us", micros(percentile(&warm, 0.999)));
}

/// One authorize and, when allowed, its settle: how long both took.
async fn authorize_settle(governor: &Governor, key: &SeededKey) -> (Duration, bool) {
    let started = Instant::now();
    let decision = governor
        .authorize(&key.secret, &key.model, ESTIMATE)
        .await
        .unwrap();
    let allowed = match &decision {
        Decision::Allowed(allowed) => {
            let reservation = allowed.reservation.as_ref().unwrap();
            governor.settle(reservation, ACTUAL).await.unwrap();
            true
        }
        Decision::Denied(_) => false,
    };
    (started.elapsed(), allowed)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at]
}

fn micros(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e6)
}

fn millis(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

/// Every organization, read a page of 1,000 at a time.
async fn all_orgs(admin: &Admin) -> Vec<Organization> {
    let mut orgs = Vec::new();
    let mut request = Some(PageRequest::first(1_000));
    while let Some(page) = request {
        let got = admin.list_orgs(&page).await.unwrap();
        request = page.next(&got);
        orgs.extend(got.items);
    }
    orgs
}

/// An organization's users, read a page of 1,000 at a time.
async fn all_users(admin: &Admin, org: &str) -> Vec<User> {
    let mut users = Vec::new();
    let mut request = Some(PageRequest::first(1_000));
    while let Some(page) = request {
        let got = admin.list_users(org, &page).await.unwrap();
        request = page.next(&got);
        users.extend(got.items);
    }
    users
}

/// Runs `call` `ADMIN_CALLS` times on random organizations; each call times
/// its own work and answers how long it took. Prints the p50 and p99.
async fn timed<F, Fut>(orgs: &[Organization], name: &str, mut call: F)
where
    F: FnMut(Organization) -> Fut,
    Fut: Future<Output = Duration>,
{
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut latencies = Vec::with_capacity(ADMIN_CALLS);
    for _ in 0..ADMIN_CALLS {
        let org = orgs[rng.below(orgs.len())].clone();
        latencies.push(call(org).await);
    }
    latencies.sort_unstable();
    result(
        &format!("{name}_p50_ms"),
        millis(percentile(&latencies, 0.50)),
    );
    result(
        &format!("{name}_p99_ms"),
        millis(percentile(&latencies, 0.99)),
    );
}

/// How long `work` takes; its answer is kept from the optimiser.
async fn time<T>(work: impl Future<Output = T>) -> Duration {
    let started = Instant::now();
    std::hint::black_box(work.await);
    started.elapsed()
}

async fn admin_reads(admin: &Admin, orgs: &[Organization]) {
    let page = PageRequest::first(100);
    let page = &page;
    timed(orgs, "list_orgs", |_| {
        time(async { admin.list_orgs(page).await.unwrap() })
    })
    .await;
    timed(orgs, "list_users", |org| async move {
        time(async { admin.list_users(&org.slug, page).await.unwrap() }).await
    })
    .await;
    timed(orgs, "list_keys", |org| async move {
        let users = admin.list_users(&org.slug, page).await.unwrap().items;
        let email = &users[users.len() / 2].email;
        time(async { admin.list_keys(email, page).await.unwrap() }).await
    })
    .await;
    timed(orgs, "usage", |org| async move {
        time(async { admin.usage(&org.slug, None, page).await.unwrap() }).await
    })
    .await;
}

/// Every organization's file, written from what the database holds.
async fn manifest(admin: &Admin, org: &Organization) -> String {
    let models = admin
        .list_models(&org.slug, &PageRequest::first(1_000))
        .await
        .unwrap()
        .items;
    let limits = admin
        .rate_limits(&org.slug, LimitTarget::Org)
        .await
        .unwrap();
    let mut text = format!(
        "version: 1\norg: {}\nbudget:\n  monthly_tokens: {}\n  timezone: {}\n",
        org.slug, org.monthly_token_budget, org.timezone
    );
    if limits.rpm.is_some() || limits.tpm.is_some() {
        text.push_str("rate_limits:\n");
        for (name, value) in [("rpm", limits.rpm), ("tpm", limits.tpm)] {
            if let Some(value) = value {
                text.push_str(&format!("  {name}: {value}\n"));
            }
        }
    }
    text.push_str("allowed_models:\n");
    for model in models {
        text.push_str(&format!("  - \"{model}\"\n"));
    }
    text.push_str("users:\n");
    for user in all_users(admin, &org.slug).await {
        let role = match user.role {
            Role::OrgAdmin => "org_admin",
            Role::Member => "member",
            // Never declared in a file; such a user stays as it is.
            Role::SystemAdmin => continue,
        };
        text.push_str(&format!("  - email: {}\n    role: {role}\n", user.email));
        if let Some(limit) = user.monthly_token_limit {
            text.push_str(&format!("    monthly_token_limit: {limit}\n"));
        }
    }
    text
}

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "ias scale report")
        .env("GIT_AUTHOR_EMAIL", "scale@ias.invalid")
        .env("GIT_COMMITTER_NAME", "ias scale report")
        .env("GIT_COMMITTER_EMAIL", "scale@ias.invalid")
        .status()
        .unwrap();
    assert!(status.success(), "git {args:?}");
}

async fn reconcile(store: &Arc<dyn Store>, admin: &Admin, orgs: &[Organization]) {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(work.join("orgs")).unwrap();
    let started = Instant::now();
    for org in orgs {
        let text = manifest(admin, org).await;
        std::fs::write(work.join(format!("orgs/{}.yaml", org.slug)), text).unwrap();
    }
    git(&work, &["init", "-q", "-b", "main"]);
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "every organization"]);
    let bare = dir.path().join("all.git");
    let bare_arg = bare.to_str().unwrap();
    git(dir.path(), &["clone", "-q", "--bare", "work", bare_arg]);
    result("manifests_ms", started.elapsed().as_millis());

    for org in orgs {
        let mut settings = NewGitopsSettings::new(format!("file://{}", bare.display()));
        settings.path = format!("orgs/{}.yaml", org.slug);
        admin.gitops_enable(&org.slug, settings).await.unwrap();
    }
    let source = GitManifestSource::new(dir.path().join("cache")).unwrap();
    let config = ReconcilerConfig {
        holder: "scale-report".to_owned(),
        ..ReconcilerConfig::default()
    };
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let reconciler =
        Reconciler::new(store.clone(), Arc::new(source), config).with_clock(clock.clone());

    let started = Instant::now();
    let outcomes = reconciler.cycle().await.unwrap();
    result("reconcile_first_ms", started.elapsed().as_millis());
    result("reconcile_orgs", outcomes.len());
    result(
        "reconcile_applied",
        outcomes.iter().filter(|o| o.applied).count(),
    );
    let mut quiet = Vec::new();
    for _ in 0..QUIET_CYCLES {
        clock.advance(chrono::Duration::seconds(30));
        tokio::time::sleep(PAST_HEAD_REUSE).await;
        let started = Instant::now();
        let outcomes = reconciler.cycle().await.unwrap();
        quiet.push(started.elapsed());
        assert!(outcomes.iter().all(|o| !o.applied), "a quiet cycle applied");
    }
    quiet.sort_unstable();
    result("reconcile_quiet_ms", quiet[quiet.len() / 2].as_millis());
}
