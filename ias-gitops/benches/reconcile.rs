//! The reconciler's cost on a SQLite store (a temporary file) and real
//! `file://` repositories, printed as one table with the targets:
//!
//! - one cycle over 1,000 organizations of 20 declared users each, all
//!   already applied, with no new commit: with one repository holding the
//!   1,000 files, and with 1,000 repositories. The first cycle (which
//!   applies every organization) is shown apart; the cycles after it run
//!   30 s apart on the reconciler's clock, and more than the source's head
//!   reuse window apart in real time, so each asks the remote again as a
//!   production cycle does;
//! - one organization whose new commit changes all 100 users' limits:
//!   `Admin::gitops_plan` alone, and `Reconciler::sync_org` (ls-remote,
//!   fetch, parse, plan and apply in one transaction).
//!
//! Run with `cargo bench -p ias-gitops --bench reconcile`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use ias_core::gitops::manifest;
use ias_core::gitops::reconcile::{ManifestSource, Reconciler, ReconcilerConfig};
use ias_core::gitops::{NewGitopsSettings, SyncStatus};
use ias_core::{Actor, Admin, ManualClock, Source, Store};
use ias_gitops::GitManifestSource;
use ias_store_sqlite::SqliteStore;
use support::{Upstream, bare_repo_with_file};
use tempfile::TempDir;

const ORGS: usize = 1_000;
const USERS_PER_ORG: usize = 20;
/// Cycles timed after the first: cycles 2 to 12.
const QUIET_CYCLES: usize = 11;
const CHANGED_USERS: usize = 100;
const APPLY_RUNS: usize = 15;

const CYCLE_TARGET: Duration = Duration::from_secs(1);
const APPLY_TARGET: Duration = Duration::from_millis(200);

/// Longer than the time a `GitManifestSource` reuses a remote head.
const PAST_HEAD_REUSE: Duration = Duration::from_millis(5_200);
/// The reconciler's interval, by which its clock moves between cycles.
const INTERVAL: chrono::Duration = chrono::Duration::seconds(30);

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let one_repo = runtime.block_on(cycles(Layout::OneRepository));
    let many_repos = runtime.block_on(cycles(Layout::ManyRepositories));
    let apply = runtime.block_on(one_org_apply());

    println!("GitOps reconcile benchmark: SQLite on a temporary file, file:// repositories");
    println!(
        "targets set for a 2-core KVM guest, Xeon 2.6 GHz; this run: {} cores, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model()
    );
    println!("cycles: 1,000 orgs of 20 declared users each; apply: 1 org of 100 users");
    println!();
    println!(
        "{:<56} {:>4} {:>10} {:>10} {:>8} {:>6} {:>6}",
        "case", "runs", "median", "max", "target", "med/t", "max/t"
    );
    for (name, figures) in [
        ("1 repository of 1,000 files", &one_repo),
        ("1,000 repositories", &many_repos),
    ] {
        row(
            &format!("cycle, no new commit, {name}"),
            &figures.quiet,
            Some(CYCLE_TARGET),
        );
        row(
            "  first cycle (applies all 1,000 orgs)",
            &[figures.first],
            None,
        );
    }
    row(
        "plan, 1 org, 100 changed users (Admin::gitops_plan)",
        &apply.plan,
        Some(APPLY_TARGET),
    );
    row(
        "sync_org, 1 org, 100 changed users (plan and apply)",
        &apply.sync,
        Some(APPLY_TARGET),
    );
    row("  of which: head (ls-remote)", &apply.head, None);
    row("  of which: fetch of the new commit", &apply.fetch, None);
    println!();
    for (name, figures) in [
        ("1 repository", &one_repo),
        ("1,000 repositories", &many_repos),
    ] {
        let each: Vec<String> = figures
            .quiet
            .iter()
            .map(|d| format!("{:.0}", ms(*d)))
            .collect();
        println!("cycles 2-12, {name} (ms): {}", each.join(" "));
    }
    println!(
        "cycle 2 drift-checks every org (the change feed holds the first apply's writes) and \
         saves each status; cycle 10 is the periodic full drift check; cycle 12 refreshes every \
         status's attempt time (5 minutes on the reconciler's clock)"
    );
}

/// How the 1,000 organizations' files are stored.
#[derive(Debug, Clone, Copy)]
enum Layout {
    /// One repository, `orgs/org-0001.yaml` and so on.
    OneRepository,
    /// One repository per organization, each with its `ias.yaml`.
    ManyRepositories,
}

struct CycleFigures {
    first: Duration,
    quiet: Vec<Duration>,
}

struct ApplyFigures {
    plan: Vec<Duration>,
    sync: Vec<Duration>,
    head: Vec<Duration>,
    fetch: Vec<Duration>,
}

fn slug(i: usize) -> String {
    format!("org-{i:04}")
}

/// An organization's file: one org admin and `users - 1` members, each
/// with monthly limit `limit`.
fn yaml(org: &str, users: usize, limit: i64) -> String {
    let mut text = format!(
        "version: 1\norg: {org}\nbudget:\n  monthly_tokens: 50000000\n  timezone: Europe/Berlin\n\
         rate_limits: {{rpm: 600, tpm: 200000}}\nallowed_models: [gpt-4o-mini, \"anthropic/*\"]\n\
         users:\n"
    );
    for u in 0..users {
        let role = if u == 0 { "org_admin" } else { "member" };
        text.push_str(&format!(
            "  - email: u{u:03}@{org}.example.com\n    role: {role}\n    \
             monthly_token_limit: {limit}\n    rate_limits: {{rpm: 60}}\n"
        ));
    }
    text
}

fn operator(store: &Arc<dyn Store>) -> Admin {
    Admin::new(
        store.clone(),
        Actor::Operator {
            name: "bench".into(),
        },
        Source::Library,
    )
}

fn source(cache: &Path) -> Arc<dyn ManifestSource> {
    Arc::new(GitManifestSource::new(cache).unwrap())
}

fn config() -> ReconcilerConfig {
    ReconcilerConfig {
        holder: "bench".to_owned(),
        ..ReconcilerConfig::default()
    }
}

async fn open_store(dir: &TempDir) -> Arc<dyn Store> {
    SqliteStore::open(dir.path().join("ias.db")).await.unwrap()
}

/// The first cycle over 1,000 organizations, then [`QUIET_CYCLES`] with no new commit.
async fn cycles(layout: Layout) -> CycleFigures {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir).await;
    let admin = operator(&store);
    let _upstream = publish(layout, dir.path());
    for i in 0..ORGS {
        let org = slug(i);
        admin.create_org(&org, 50_000_000, "UTC").await.unwrap();
        let settings = match layout {
            Layout::OneRepository => {
                let mut settings = NewGitopsSettings::new(repo_url(dir.path(), "all"));
                settings.path = format!("orgs/{org}.yaml");
                settings
            }
            Layout::ManyRepositories => NewGitopsSettings::new(repo_url(dir.path(), &org)),
        };
        ias_gitops::check_settings(&settings).unwrap();
        admin.gitops_enable(&org, settings).await.unwrap();
    }

    let clock = Arc::new(ManualClock::new(Utc::now()));
    let reconciler = Reconciler::new(store.clone(), source(&dir.path().join("cache")), config())
        .with_clock(clock.clone());
    let started = Instant::now();
    let outcomes = reconciler.cycle().await.unwrap();
    let first = started.elapsed();
    assert_eq!(outcomes.len(), ORGS);
    assert!(outcomes.iter().all(|o| o.applied), "{:?}", outcomes.first());

    let mut quiet = Vec::new();
    for _ in 0..QUIET_CYCLES {
        clock.advance(INTERVAL);
        tokio::time::sleep(PAST_HEAD_REUSE).await;
        let started = Instant::now();
        let outcomes = reconciler.cycle().await.unwrap();
        quiet.push(started.elapsed());
        assert_eq!(outcomes.len(), ORGS);
        assert!(
            outcomes
                .iter()
                .all(|o| !o.applied && o.status == SyncStatus::Synced),
            "{:?}",
            outcomes.iter().find(|o| o.status != SyncStatus::Synced)
        );
    }
    CycleFigures { first, quiet }
}

fn repo_url(dir: &Path, name: &str) -> String {
    format!(
        "file://{}",
        dir.join("repos").join(format!("{name}.git")).display()
    )
}

/// Writes the organizations' files in `layout` under `dir/repos`; returns
/// the working repository that must outlive the run, if any.
fn publish(layout: Layout, dir: &Path) -> Option<Upstream> {
    let repos = dir.join("repos");
    match layout {
        Layout::OneRepository => {
            let upstream = Upstream::new();
            let files: Vec<(String, String)> = (0..ORGS)
                .map(|i| {
                    let org = slug(i);
                    (
                        format!("orgs/{org}.yaml"),
                        yaml(&org, USERS_PER_ORG, 100_000),
                    )
                })
                .collect();
            let files: Vec<(&str, &[u8])> = files
                .iter()
                .map(|(path, text)| (path.as_str(), text.as_bytes()))
                .collect();
            upstream.commit_files_and_push(&files);
            std::fs::create_dir_all(&repos).unwrap();
            std::fs::rename(upstream.bare_path(), repos.join("all.git")).unwrap();
            Some(upstream)
        }
        Layout::ManyRepositories => {
            for i in 0..ORGS {
                let org = slug(i);
                let text = yaml(&org, USERS_PER_ORG, 100_000);
                let path = repos.join(format!("{org}.git"));
                bare_repo_with_file(&path, "ias.yaml", text.as_bytes());
            }
            None
        }
    }
}

/// One organization of 100 users: each run pushes a commit that changes
/// every user's limit, then times the plan alone and a sync that applies it.
async fn one_org_apply() -> ApplyFigures {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir).await;
    let admin = operator(&store);
    let upstream = Upstream::new();
    let cache = dir.path().join("cache");
    upstream.commit_and_push("ias.yaml", yaml("big", CHANGED_USERS, 1_000).as_bytes());
    let org = admin.create_org("big", 50_000_000, "UTC").await.unwrap();
    admin
        .gitops_enable("big", NewGitopsSettings::new(upstream.file_url()))
        .await
        .unwrap();
    let reconciler = Reconciler::new(store.clone(), source(&cache), config());
    let state = reconciler.sync_org(org.id).await.unwrap();
    assert_eq!(
        state.status.status,
        SyncStatus::Synced,
        "{}",
        state.status.message
    );

    let mut figures = ApplyFigures {
        plan: Vec::new(),
        sync: Vec::new(),
        head: Vec::new(),
        fetch: Vec::new(),
    };
    for run in 1..=APPLY_RUNS {
        let limit = 1_000 + 10 * i64::try_from(run).unwrap();
        let text = yaml("big", CHANGED_USERS, limit);
        let commit = upstream.commit_and_push("ias.yaml", text.as_bytes());
        let manifest = manifest::parse(&text, Some("big")).unwrap();

        let started = Instant::now();
        let plan = admin.gitops_plan("big", &manifest).await.unwrap();
        figures.plan.push(started.elapsed());
        assert_eq!(plan.changes.len(), CHANGED_USERS);

        // A new source, as a cycle more than a few seconds later would ask anew.
        let reconciler = Reconciler::new(store.clone(), source(&cache), config());
        let started = Instant::now();
        let state = reconciler.sync_org(org.id).await.unwrap();
        figures.sync.push(started.elapsed());
        assert_eq!(state.status.last_applied_commit, Some(commit));
    }

    let settings = admin.gitops_status("big").await.unwrap().settings;
    for run in 1..=APPLY_RUNS {
        let text = yaml("big", CHANGED_USERS, 5_000 + i64::try_from(run).unwrap());
        upstream.commit_and_push("ias.yaml", text.as_bytes());
        let source = source(&cache);
        let started = Instant::now();
        source.head(&settings).await.unwrap();
        figures.head.push(started.elapsed());
        let started = Instant::now();
        source.fetch(&settings).await.unwrap();
        figures.fetch.push(started.elapsed());
    }
    figures
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

fn row(name: &str, times: &[Duration], target: Option<Duration>) {
    let mut sorted = times.to_vec();
    sorted.sort();
    let median = sorted[sorted.len() / 2];
    let max = sorted[sorted.len() - 1];
    let (target, med_ratio, max_ratio) = match target {
        Some(t) => (
            format!("{:.0} ms", ms(t)),
            format!("{:.2}", median.as_secs_f64() / t.as_secs_f64()),
            format!("{:.2}", max.as_secs_f64() / t.as_secs_f64()),
        ),
        None => (String::new(), String::new(), String::new()),
    };
    println!(
        "{name:<56} {:>4} {:>7.1} ms {:>7.1} ms {target:>8} {med_ratio:>6} {max_ratio:>6}",
        times.len(),
        ms(median),
        ms(max)
    );
}

/// The processor's model name where the system tells it, for the note.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, name)| name.trim().to_owned())
        })
        .unwrap_or_else(|| "processor unknown".to_owned())
}
