//! GitOps: applies, guards, drift, ownership and leases, on every store.
//!
//! The reconciler runs for real against the store; only the Git transport
//! is replaced by [`MemorySource`], a repository held in memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::{admin, audit_count};
use crate::audit::{Actor, AuditFilter, Source};
use crate::domain::{ManagedBy, Role};
use crate::error::{Error, Result};
use crate::gitops::reconcile::{FetchedFile, ManifestSource, Reconciler, ReconcilerConfig};
use crate::gitops::{
    ChangeOp, DriftPolicy, GitopsSettings, GitopsState, NewGitopsSettings, SyncStatus,
};
use crate::governor::{Decision, Governor};
use crate::page::PageRequest;
use crate::{Admin, LimitTarget, RateLimits, Store};

const REPO: &str = "https://git.example.com/acme/governance.git";

/// A repository in memory: one file per URL, each commit a new id.
#[derive(Default)]
pub struct MemorySource {
    files: Mutex<HashMap<String, std::result::Result<FetchedFile, String>>>,
    commits: Mutex<u64>,
}

impl MemorySource {
    /// Commits `content` as the file of `url`; returns the commit id.
    pub fn commit(&self, url: &str, content: &str) -> String {
        let mut n = self.commits.lock().unwrap();
        *n += 1;
        let commit = hex::encode(&Sha256::digest(format!("{n}:{content}"))[..20]);
        let file = FetchedFile {
            commit: commit.clone(),
            content: content.as_bytes().to_vec(),
        };
        self.files.lock().unwrap().insert(url.to_owned(), Ok(file));
        commit
    }

    /// Makes `url` unreachable until the next commit.
    pub fn cut(&self, url: &str) {
        self.files
            .lock()
            .unwrap()
            .insert(url.to_owned(), Err("connection refused".to_owned()));
    }

    fn file(&self, url: &str) -> Result<FetchedFile> {
        match self.files.lock().unwrap().get(url) {
            Some(Ok(file)) => Ok(file.clone()),
            Some(Err(reason)) => Err(Error::Unavailable {
                backend: "git",
                message: format!("could not reach `{url}`: {reason}"),
            }),
            None => Err(Error::not_found("repository", url)),
        }
    }
}

#[async_trait]
impl ManifestSource for MemorySource {
    async fn head(&self, settings: &GitopsSettings) -> Result<String> {
        self.file(&settings.repo_url).map(|f| f.commit)
    }

    async fn fetch(&self, settings: &GitopsSettings) -> Result<FetchedFile> {
        self.file(&settings.repo_url)
    }
}

/// A declared user: email, role, monthly limit.
pub(super) type U<'a> = (&'a str, &'a str, Option<i64>);

pub(super) fn file(budget: i64, models: &[&str], users: &[U<'_>]) -> String {
    let mut text = format!(
        "version: 1\norg: acme\nbudget:\n  monthly_tokens: {budget}\n  timezone: Europe/Berlin\n\
         rate_limits: {{rpm: 600}}\nallowed_models: [{}]\nusers:\n",
        models
            .iter()
            .map(|m| format!("\"{m}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if users.is_empty() {
        text = text.replace("users:\n", "users: []\n");
    }
    for (email, role, limit) in users {
        let limit = limit.map_or("null".to_owned(), |l| l.to_string());
        text.push_str(&format!(
            "  - email: {email}\n    role: {role}\n    monthly_token_limit: {limit}\n"
        ));
    }
    text
}

const TEAM: &[U<'static>] = &[
    ("alice@acme.io", "org_admin", Some(1_000_000)),
    ("bob@acme.io", "member", None),
];

pub(super) struct Setup {
    source: Arc<MemorySource>,
    reconciler: Reconciler,
    pub(super) admin: Admin,
}

impl Setup {
    pub(super) async fn new(store: Arc<dyn Store>, settings: NewGitopsSettings) -> Self {
        let admin = admin(&store);
        admin.create_org("acme", 5_000_000, "UTC").await.unwrap();
        admin.gitops_enable("acme", settings).await.unwrap();
        let source = Arc::new(MemorySource::default());
        let reconciler = reconciler(&store, &source, "replica-a");
        Setup {
            source,
            reconciler,
            admin,
        }
    }

    async fn sync(&self) -> GitopsState {
        let org = self.admin.org("acme").await.unwrap();
        self.reconciler.sync_org(org.id).await.unwrap()
    }

    pub(super) async fn commit_and_sync(&self, text: &str) -> GitopsState {
        self.source.commit(REPO, text);
        self.sync().await
    }
}

fn reconciler(store: &Arc<dyn Store>, source: &Arc<MemorySource>, holder: &str) -> Reconciler {
    let config = ReconcilerConfig {
        holder: holder.to_owned(),
        ..ReconcilerConfig::default()
    };
    let source: Arc<dyn ManifestSource> = source.clone();
    Reconciler::new(store.clone(), source, config)
}

pub(super) fn settings() -> NewGitopsSettings {
    NewGitopsSettings::new(REPO)
}

fn cli_admin(store: &Arc<dyn Store>) -> Admin {
    Admin::new(
        store.clone(),
        Actor::Operator { name: "ops".into() },
        Source::Cli,
    )
}

/// The audit entries of `action`, newest first.
async fn entries(store: &Arc<dyn Store>, action: &str) -> Vec<crate::audit::AuditEntry> {
    let filter = AuditFilter {
        action: Some(action.to_owned()),
        ..AuditFilter::default()
    };
    store
        .search_audit(None, &filter, None, 10_000)
        .await
        .unwrap()
}

async fn actions(store: &Arc<dyn Store>, action: &str) -> usize {
    entries(store, action).await.len()
}

fn assert_status(state: &GitopsState, status: SyncStatus, reason: &str) {
    assert_eq!(
        (state.status.status, state.status.reason.as_str()),
        (status, reason),
        "status message: {}",
        state.status.message
    );
}

/// A first sync creates what the file declares, audited with source `gitops`.
pub async fn gitops_apply_creates_the_declared_state(store: Arc<dyn Store>) {
    let s = Setup::new(store.clone(), settings()).await;
    let commit = s.source.commit(
        REPO,
        &file(4_000_000, &["gpt-4o-mini", "anthropic/*"], TEAM),
    );
    let state = s.sync().await;
    assert_status(&state, SyncStatus::Synced, "synced");
    assert_eq!(
        state.status.last_applied_commit.as_deref(),
        Some(commit.as_str())
    );
    let inventory = state.inventory.unwrap();
    assert_eq!(inventory.added_users, ["alice@acme.io", "bob@acme.io"]);

    let org = s.admin.org("acme").await.unwrap();
    assert_eq!(org.monthly_token_budget, 4_000_000);
    assert_eq!(org.timezone.name(), "Europe/Berlin");
    assert_eq!(org.managed_by, ManagedBy::Gitops);
    assert_eq!(
        s.admin
            .list_models("acme", &PageRequest::default())
            .await
            .unwrap()
            .items,
        ["anthropic/*", "gpt-4o-mini"]
    );
    let limits = s.admin.rate_limits("acme", LimitTarget::Org).await.unwrap();
    assert_eq!(limits.rpm, Some(600));
    let alice = s.admin.user("alice@acme.io").await.unwrap();
    assert_eq!(
        (alice.role, alice.monthly_token_limit),
        (Role::OrgAdmin, Some(1_000_000))
    );
    assert_eq!(alice.managed_by, ManagedBy::Gitops);
    let bob = s.admin.user("bob@acme.io").await.unwrap();
    assert_eq!((bob.role, bob.monthly_token_limit), (Role::Member, None));
    let applied = entries(&store, "gitops.apply").await;
    assert_eq!(applied.len(), 3, "one entry for the org and one per user");
    assert!(applied.iter().all(|e| e.record.source == Source::Gitops));
}

/// An unchanged commit applies nothing again: no write, keys and usage intact.
pub async fn gitops_an_unchanged_commit_changes_nothing(store: Arc<dyn Store>) {
    let s = Setup::new(store.clone(), settings()).await;
    s.commit_and_sync(&file(4_000_000, &["gpt-4o-mini"], TEAM))
        .await;
    let key = s.admin.create_key("bob@acme.io", None).await.unwrap();
    let before = audit_count(&store).await;
    let state = s.sync().await;
    assert_status(&state, SyncStatus::Synced, "synced");
    let restarted = reconciler(&store, &s.source, "replica-restarted");
    restarted.cycle().await.unwrap();
    assert_eq!(audit_count(&store).await, before, "nothing written");
    let governor = Governor::open(store.clone()).await.unwrap();
    let decision = governor
        .check(key.secret.expose(), "gpt-4o-mini", 10)
        .await
        .unwrap();
    assert!(matches!(decision, Decision::Allowed(_)), "{decision:?}");
}

/// A file with errors applies nothing, keeps the last good state and lists every error.
pub async fn gitops_an_invalid_file_applies_nothing(store: Arc<dyn Store>) {
    let s = Setup::new(store.clone(), settings()).await;
    let good = s
        .source
        .commit(REPO, &file(4_000_000, &["gpt-4o-mini"], TEAM));
    s.sync().await;
    let bad = file(
        -5,
        &["gpt-4o-mini"],
        &[("carol@acme.io", "owner", None), TEAM[0]],
    )
    .replace("rate_limits:", "rate_limit:");
    let state = s.commit_and_sync(&bad).await;
    assert_status(&state, SyncStatus::Error, "invalid_file");
    for field in ["budget.monthly_tokens", "users[0].role", "rate_limit"] {
        assert!(
            state.status.message.contains(field),
            "{}",
            state.status.message
        );
    }
    assert_eq!(
        state.status.last_applied_commit.as_deref(),
        Some(good.as_str())
    );
    assert_eq!(state.status.consecutive_failures, 1);
    assert!(state.status.next_retry_at.is_some());
    assert!(s.admin.user("carol@acme.io").await.is_err());
    assert_eq!(
        s.admin.org("acme").await.unwrap().monthly_token_budget,
        4_000_000
    );
}

/// An unreachable remote is an error status; the last good state stays.
pub async fn gitops_an_unreachable_remote_keeps_the_last_state(store: Arc<dyn Store>) {
    let s = Setup::new(store.clone(), settings()).await;
    s.commit_and_sync(&file(4_000_000, &["gpt-4o-mini"], TEAM))
        .await;
    s.source.cut(REPO);
    let users_before = s
        .admin
        .list_users("acme", &PageRequest::default())
        .await
        .unwrap()
        .items;
    let state = s.sync().await;
    assert_status(&state, SyncStatus::Error, "fetch_failed");
    assert!(state.status.message.contains("connection refused"));
    assert_eq!(
        s.admin
            .list_users("acme", &PageRequest::default())
            .await
            .unwrap()
            .items,
        users_before
    );
    assert_eq!(actions(&store, "gitops.error").await, 1);
    let again = s.sync().await;
    assert_eq!(again.status.consecutive_failures, 2);
    assert_eq!(
        actions(&store, "gitops.error").await,
        1,
        "a failure is audited once"
    );
}

/// A commit that empties the users list is refused, and so is one with no org admin.
pub async fn gitops_emptying_the_users_is_refused(store: Arc<dyn Store>) {
    let mut new = settings();
    new.prune = true;
    new.max_removal_percent = 100;
    let s = Setup::new(store.clone(), new).await;
    s.commit_and_sync(&file(4_000_000, &["gpt-4o-mini"], TEAM))
        .await;
    let state = s
        .commit_and_sync(&file(4_000_000, &["gpt-4o-mini"], &[]))
        .await;
    assert_status(&state, SyncStatus::Error, "guard_refused");
    assert!(
        state.status.message.contains("no user"),
        "{}",
        state.status.message
    );
    let state = s
        .commit_and_sync(&file(4_000_000, &["gpt-4o-mini"], &[TEAM[1]]))
        .await;
    assert_status(&state, SyncStatus::Error, "guard_refused");
    assert!(state.status.message.contains("no org_admin"));
    assert_eq!(
        s.admin
            .list_users("acme", &PageRequest::default())
            .await
            .unwrap()
            .items
            .len(),
        2
    );
}

/// Removing more than the guard allows is refused; within it, removed users' keys stop.
pub async fn gitops_mass_removal_is_refused(store: Arc<dyn Store>) {
    let mut new = settings();
    new.prune = true;
    let s = Setup::new(store.clone(), new).await;
    let emails: Vec<String> = (0..8).map(|i| format!("m{i}@acme.io")).collect();
    let mut users: Vec<U<'_>> = vec![TEAM[0]];
    users.extend(emails.iter().map(|e| (e.as_str(), "member", None)));
    s.commit_and_sync(&file(4_000_000, &["gpt-4o-mini"], &users))
        .await;
    let key = s.admin.create_key("m0@acme.io", None).await.unwrap();
    let governor = Governor::open(store.clone()).await.unwrap();
    let before = governor
        .check(key.secret.expose(), "gpt-4o-mini", 10)
        .await
        .unwrap();
    assert!(matches!(before, Decision::Allowed(_)), "{before:?}");

    let state = s
        .commit_and_sync(&file(4_000_000, &["gpt-4o-mini"], &users[..6]))
        .await;
    assert_status(&state, SyncStatus::Error, "guard_refused");
    assert!(
        state.status.message.contains("removes 3 of 9"),
        "{}",
        state.status.message
    );
    assert_eq!(
        s.admin
            .list_users("acme", &PageRequest::default())
            .await
            .unwrap()
            .items
            .len(),
        9
    );

    let state = s
        .commit_and_sync(&file(
            4_000_000,
            &["gpt-4o-mini"],
            &[&users[..1], &users[2..]].concat(),
        ))
        .await;
    assert_status(&state, SyncStatus::Synced, "synced");
    let listed = s
        .admin
        .list_users("acme", &PageRequest::default())
        .await
        .unwrap()
        .items;
    assert_eq!(listed.len(), 8);
    assert!(listed.iter().all(|u| u.email != "m0@acme.io"));
    let removed = s.admin.user("m0@acme.io").await.unwrap();
    assert!(
        removed.removed_at.is_some(),
        "the user stays for the record"
    );
    assert_eq!(
        s.admin
            .list_keys("m0@acme.io", &PageRequest::default())
            .await
            .unwrap()
            .items
            .len(),
        1,
        "its key stays"
    );
    let err = s.admin.create_key("m0@acme.io", None).await.unwrap_err();
    assert_eq!(
        err.kind(),
        "conflict",
        "no new key for a removed user: {err}"
    );
    governor.refresh().await.unwrap();
    let decision = governor
        .check(key.secret.expose(), "gpt-4o-mini", 10)
        .await
        .unwrap();
    assert!(matches!(decision, Decision::Denied(_)), "{decision:?}");
}

/// Users created through the API before enable are never pruned.
pub async fn gitops_prune_spares_users_git_did_not_add(store: Arc<dyn Store>) {
    let admin = admin(&store);
    admin.create_org("acme", 5_000_000, "UTC").await.unwrap();
    admin
        .create_user("acme", "early@acme.io", Role::Member, None)
        .await
        .unwrap();
    let mut new = settings();
    new.prune = true;
    new.max_removal_percent = 100;
    admin.gitops_enable("acme", new).await.unwrap();
    let source = Arc::new(MemorySource::default());
    let reconciler = reconciler(&store, &source, "replica-a");
    source.commit(REPO, &file(4_000_000, &["gpt-4o-mini"], TEAM));
    let org = admin.org("acme").await.unwrap();
    let state = reconciler.sync_org(org.id).await.unwrap();
    assert_status(&state, SyncStatus::Synced, "synced");
    let manifest = state.inventory.clone().unwrap().manifest;
    let plan = admin.gitops_plan("acme", &manifest).await.unwrap();
    assert_eq!(plan.kept, ["early@acme.io"]);
    source.commit(REPO, &file(4_000_000, &["gpt-4o-mini"], &[TEAM[0]]));
    let state = reconciler.sync_org(org.id).await.unwrap();
    assert_status(&state, SyncStatus::Synced, "synced");
    let emails: Vec<String> = admin
        .list_users("acme", &PageRequest::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|u| u.email)
        .collect();
    assert_eq!(
        emails,
        ["early@acme.io", "alice@acme.io"],
        "bob (added by Git) pruned"
    );
}

/// A role change is one field change; keys and usage stay.
pub async fn gitops_a_role_change_is_one_field_change(store: Arc<dyn Store>) {
    let s = Setup::new(store.clone(), settings()).await;
    let state = s
        .commit_and_sync(&file(4_000_000, &["gpt-4o-mini"], TEAM))
        .await;
    let key = s.admin.create_key("bob@acme.io", None).await.unwrap();
    let promoted = [TEAM[0], ("bob@acme.io", "org_admin", None)];
    let manifest_text = file(4_000_000, &["gpt-4o-mini"], &promoted);
    let mut manifest = state.inventory.unwrap().manifest;
    manifest.users[1].role = Role::OrgAdmin;
    let plan = s.admin.gitops_plan("acme", &manifest).await.unwrap();
    assert_eq!(plan.changes.len(), 1, "{:?}", plan.changes);
    assert_eq!(plan.changes[0].field, "role");
    assert_eq!(plan.changes[0].op, ChangeOp::Change);
    let state = s.commit_and_sync(&manifest_text).await;
    assert_status(&state, SyncStatus::Synced, "synced");
    assert_eq!(
        s.admin.user("bob@acme.io").await.unwrap().role,
        Role::OrgAdmin
    );
    let keys = s
        .admin
        .list_keys("bob@acme.io", &PageRequest::default())
        .await
        .unwrap()
        .items;
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].id, key.key.id);
}

/// Emails and model names in another letter case are no change.
pub async fn gitops_letter_case_is_no_change(store: Arc<dyn Store>) {
    let s = Setup::new(store.clone(), settings()).await;
    s.commit_and_sync(&file(4_000_000, &["gpt-4o-mini"], TEAM))
        .await;
    let shouting = [
        ("ALICE@Acme.IO", "org_admin", Some(1_000_000)),
        ("Bob@ACME.io", "member", None),
    ];
    let before = audit_count(&store).await;
    let state = s
        .commit_and_sync(&file(4_000_000, &["GPT-4o-Mini"], &shouting))
        .await;
    assert_status(&state, SyncStatus::Synced, "synced");
    let applied = entries(&store, "gitops.apply").await;
    assert_eq!(applied.len(), 3, "only the first apply wrote entries");
    assert_eq!(audit_count(&store).await, before);
}

/// API writes to Git-owned fields are refused naming the repo; break-glass is drift.
pub async fn gitops_api_writes_to_owned_fields_conflict(store: Arc<dyn Store>) {
    let s = Setup::new(store.clone(), settings()).await;
    let state = s
        .commit_and_sync(&file(4_000_000, &["gpt-4o-mini"], TEAM))
        .await;
    let commit = state.status.last_applied_commit.unwrap();
    let cli = cli_admin(&store);
    let refused = [
        cli.set_user_limit("bob@acme.io", Some(5)).await.err(),
        cli.allow_model("acme", "gpt-5").await.err(),
        cli.create_user("acme", "new@acme.io", Role::Member, None)
            .await
            .err(),
        cli.set_rate_limits("acme", LimitTarget::Org, RateLimits::NONE)
            .await
            .err(),
    ];
    for err in refused {
        let err = err.expect("refused");
        assert_eq!(err.kind(), "conflict", "{err}");
        let text = err.to_string();
        assert!(
            text.contains(REPO) && text.contains(&commit[..12]),
            "{text}"
        );
    }
    cli.create_key("bob@acme.io", None).await.unwrap();

    let forced = cli.clone().with_break_glass();
    forced.set_user_limit("bob@acme.io", Some(5)).await.unwrap();
    let forced_entry = entries(&store, "user.set_limit").await;
    let marked = &forced_entry[0].record.changes["break_glass"];
    assert_eq!(
        marked["repo_url"], REPO,
        "the forced write says what it overrode"
    );
    let state = s.admin.gitops_status("acme").await.unwrap();
    assert_status(&state, SyncStatus::OutOfSync, "break_glass");
    assert_eq!(state.status.drift_count, 1);
    let member = s.admin.user("bob@acme.io").await.unwrap();
    let as_member = Admin::new(store.clone(), Actor::user(&member), Source::Api).with_break_glass();
    let err = as_member.allow_model("acme", "gpt-5").await.unwrap_err();
    assert_eq!(err.kind(), "permission_denied");
}

/// Drift is reported by default, and healed on the next cycle with `heal`.
pub async fn gitops_drift_is_reported_or_healed(store: Arc<dyn Store>) {
    let s = Setup::new(store.clone(), settings()).await;
    s.commit_and_sync(&file(4_000_000, &["gpt-4o-mini"], TEAM))
        .await;
    let forced = cli_admin(&store).with_break_glass();
    forced.set_user_limit("bob@acme.io", Some(5)).await.unwrap();
    let state = s.sync().await;
    assert_status(&state, SyncStatus::OutOfSync, "drift");
    assert_eq!(state.status.drift.len(), 1);
    assert_eq!(state.status.drift[0].target, "user:bob@acme.io");
    assert_eq!(state.status.drift[0].field, "monthly_token_limit");
    assert_eq!(s.admin.gitops_drift("acme").await.unwrap().len(), 1);
    assert_eq!(actions(&store, "gitops.drift").await, 1);
    s.sync().await;
    assert_eq!(
        actions(&store, "gitops.drift").await,
        1,
        "the same drift is audited once"
    );
    assert_eq!(
        s.admin
            .user("bob@acme.io")
            .await
            .unwrap()
            .monthly_token_limit,
        Some(5)
    );

    let mut heal = settings();
    heal.drift = DriftPolicy::Heal;
    s.admin.gitops_enable("acme", heal).await.unwrap();
    let state = s.sync().await;
    assert_status(&state, SyncStatus::Synced, "synced");
    assert_eq!(
        s.admin
            .user("bob@acme.io")
            .await
            .unwrap()
            .monthly_token_limit,
        None
    );
    assert_eq!(actions(&store, "gitops.heal").await, 1);
}

/// Only the lease holder applies: two reconcilers never apply the same org at once.
pub async fn gitops_two_reconcilers_never_apply_together(store: Arc<dyn Store>) {
    let s = Setup::new(store.clone(), settings()).await;
    let org = s.admin.org("acme").await.unwrap();
    let now = chrono::Utc::now();
    let later = now + chrono::Duration::seconds(60);
    assert!(
        store
            .gitops_try_lease(org.id, "other", now, later)
            .await
            .unwrap()
    );
    assert!(
        !store
            .gitops_try_lease(org.id, "replica-a", now, later)
            .await
            .unwrap()
    );
    s.source
        .commit(REPO, &file(4_000_000, &["gpt-4o-mini"], TEAM));
    let err = s.reconciler.sync_org(org.id).await.unwrap_err();
    assert_eq!(
        err.kind(),
        "conflict",
        "the lease holder is elsewhere: {err}"
    );
    let state = s.admin.gitops_status("acme").await.unwrap();
    assert!(state.status.last_applied_commit.is_none());
    assert!(
        s.admin
            .list_users("acme", &PageRequest::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    store.gitops_release_lease(org.id, "other").await.unwrap();

    let b = reconciler(&store, &s.source, "replica-b");
    let (ra, rb) = tokio::join!(s.reconciler.cycle(), b.cycle());
    ra.unwrap();
    rb.unwrap();
    assert_eq!(
        actions(&store, "gitops.apply").await,
        3,
        "applied once, by one of them"
    );
    assert_eq!(
        s.admin
            .list_users("acme", &PageRequest::default())
            .await
            .unwrap()
            .items
            .len(),
        2
    );
}

/// A suspended organization is fetched and reported on, never applied.
pub async fn gitops_a_suspended_org_is_not_applied(store: Arc<dyn Store>) {
    let s = Setup::new(store.clone(), settings()).await;
    s.admin.gitops_suspend("acme", true).await.unwrap();
    let state = s
        .commit_and_sync(&file(4_000_000, &["gpt-4o-mini"], TEAM))
        .await;
    assert_status(&state, SyncStatus::Suspended, "suspended");
    assert!(
        state.status.message.contains("change(s)"),
        "{}",
        state.status.message
    );
    assert!(state.status.last_fetched_commit.is_some());
    assert!(
        s.admin
            .list_users("acme", &PageRequest::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    s.admin.gitops_suspend("acme", false).await.unwrap();
    let state = s.sync().await;
    assert_status(&state, SyncStatus::Synced, "synced");
}

/// An apply is all or nothing: a user of another org fails it, and nothing changes.
pub async fn gitops_an_apply_is_all_or_nothing(store: Arc<dyn Store>) {
    let s = Setup::new(store.clone(), settings()).await;
    s.admin.create_org("other", 1_000, "UTC").await.unwrap();
    s.admin
        .create_user("other", "taken@acme.io", Role::Member, None)
        .await
        .unwrap();
    let before = audit_count(&store).await;
    let users = [TEAM[0], TEAM[1], ("taken@acme.io", "member", None)];
    let state = s
        .commit_and_sync(&file(4_000_000, &["gpt-4o-mini"], &users))
        .await;
    assert_status(&state, SyncStatus::Error, "apply_failed");
    assert!(
        state.status.message.contains("taken@acme.io"),
        "{}",
        state.status.message
    );
    assert!(
        s.admin
            .list_users("acme", &PageRequest::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        s.admin
            .list_models("acme", &PageRequest::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(
        s.admin.org("acme").await.unwrap().monthly_token_budget,
        5_000_000
    );
    assert_eq!(
        audit_count(&store).await,
        before + 1,
        "only the failure is audited"
    );
}

/// Disabling gives the fields back to the API.
pub async fn gitops_disabling_returns_fields_to_the_api(store: Arc<dyn Store>) {
    let s = Setup::new(store.clone(), settings()).await;
    s.commit_and_sync(&file(4_000_000, &["gpt-4o-mini"], TEAM))
        .await;
    assert!(s.admin.gitops_disable("acme").await.unwrap());
    assert!(!s.admin.gitops_disable("acme").await.unwrap());
    assert_eq!(
        s.admin.org("acme").await.unwrap().managed_by,
        ManagedBy::Api
    );
    let cli = cli_admin(&store);
    cli.set_user_limit("bob@acme.io", Some(5)).await.unwrap();
    cli.allow_model("acme", "gpt-5").await.unwrap();
    assert!(s.admin.gitops_status("acme").await.is_err());
}

/// A plan names the users a lowered limit blocks at once.
pub async fn gitops_a_plan_names_users_a_lower_limit_blocks(store: Arc<dyn Store>) {
    let s = Setup::new(store.clone(), settings()).await;
    let state = s
        .commit_and_sync(&file(4_000_000, &["gpt-4o-mini"], TEAM))
        .await;
    let key = s.admin.create_key("alice@acme.io", None).await.unwrap();
    let governor = Governor::open(store.clone()).await.unwrap();
    let decision = governor
        .authorize(key.secret.expose(), "gpt-4o-mini", 600)
        .await
        .unwrap();
    let Decision::Allowed(allowed) = decision else {
        panic!("{decision:?}")
    };
    governor
        .settle(allowed.reservation.as_ref().unwrap(), 600)
        .await
        .unwrap();
    governor.shutdown().await.unwrap();
    let mut manifest = state.inventory.unwrap().manifest;
    manifest.users[0].monthly_token_limit = Some(500);
    manifest.users[1].monthly_token_limit = Some(500);
    let plan = s.admin.gitops_plan("acme", &manifest).await.unwrap();
    assert_eq!(plan.blocked.len(), 1, "{:?}", plan.blocked);
    assert_eq!(plan.blocked[0].target, "user:alice@acme.io");
    assert_eq!((plan.blocked[0].used, plan.blocked[0].limit), (600, 500));
}

/// A user Git added and the file drops while prune is off goes back to the
/// API; turning prune on later removes it.
pub async fn gitops_a_user_dropped_without_prune_is_released(store: Arc<dyn Store>) {
    let s = Setup::new(store.clone(), settings()).await;
    let users = [TEAM[0], TEAM[1], ("carol@acme.io", "member", None)];
    s.commit_and_sync(&file(4_000_000, &["gpt-4o-mini"], &users))
        .await;
    let state = s
        .commit_and_sync(&file(4_000_000, &["gpt-4o-mini"], &users[..2]))
        .await;
    assert_status(&state, SyncStatus::Synced, "synced");
    let carol = s.admin.user("carol@acme.io").await.unwrap();
    assert_eq!(carol.managed_by, ManagedBy::Api, "no longer declared");
    assert!(carol.removed_at.is_none(), "prune is off: still a member");
    let inventory = state.inventory.unwrap();
    assert!(inventory.added_users.contains(&"carol@acme.io".to_owned()));
    cli_admin(&store)
        .set_user_limit("carol@acme.io", Some(7))
        .await
        .unwrap();
    assert!(s.admin.gitops_drift("acme").await.unwrap().is_empty());

    let mut prune = settings();
    prune.prune = true;
    prune.max_removal_percent = 50;
    s.admin.gitops_enable("acme", prune).await.unwrap();
    s.source.commit(
        REPO,
        &file(4_000_000, &["gpt-4o-mini"], &users[..2]).replace("gpt-4o-mini", "gpt-4o"),
    );
    let state = s.sync().await;
    assert_status(&state, SyncStatus::Synced, "synced");
    assert!(
        s.admin
            .user("carol@acme.io")
            .await
            .unwrap()
            .removed_at
            .is_some()
    );
}

/// A file may not change a system admin; only system admins point GitOps at host secrets.
pub async fn gitops_cannot_reach_past_an_org_admin(store: Arc<dyn Store>) {
    let s = Setup::new(store.clone(), settings()).await;
    s.commit_and_sync(&file(4_000_000, &["gpt-4o-mini"], TEAM))
        .await;
    let forced = cli_admin(&store).with_break_glass();
    forced
        .create_user("acme", "root@acme.io", Role::SystemAdmin, None)
        .await
        .unwrap();
    let demoted = [TEAM[0], TEAM[1], ("ROOT@acme.io", "member", Some(0))];
    let state = s
        .commit_and_sync(&file(4_000_000, &["gpt-4o-mini"], &demoted))
        .await;
    assert_status(&state, SyncStatus::Error, "guard_refused");
    assert!(
        state.status.message.contains("system_admin"),
        "{}",
        state.status.message
    );
    assert_eq!(
        s.admin.user("root@acme.io").await.unwrap().role,
        Role::SystemAdmin
    );

    let alice = s.admin.user("alice@acme.io").await.unwrap();
    let org_admin = Admin::new(store.clone(), Actor::user(&alice), Source::Api);
    let mut secret = settings();
    secret.credentials = Some("env:DATABASE_PASSWORD".into());
    let err = org_admin.gitops_enable("acme", secret).await.unwrap_err();
    assert_eq!(err.kind(), "permission_denied", "{err}");
    let mut local = settings();
    local.repo_url = "file:///srv/other-team/config.git".into();
    let err = org_admin.gitops_enable("acme", local).await.unwrap_err();
    assert_eq!(err.kind(), "permission_denied", "{err}");
    org_admin.gitops_enable("acme", settings()).await.unwrap();
    for url in [
        "https://user:s3cret@git.example.com/x.git",
        "https://tok3n@git.example.com/x.git",
        "https://git.example.com/x.git?private_token=s3cret",
        "ssh://git:s3cret@git.example.com/x.git",
    ] {
        let mut bad = settings();
        bad.repo_url = url.into();
        let err = s.admin.gitops_enable("acme", bad).await.unwrap_err();
        assert_eq!(err.kind(), "invalid_input", "{url}: {err}");
        assert!(
            !err.to_string().contains("s3cret") && !err.to_string().contains("tok3n"),
            "{err}"
        );
    }
}

/// A new path, ref or repository is applied even when the commit is the same;
/// a suspended organization's pending apply is refused by the store.
pub async fn gitops_settings_changes_take_effect(store: Arc<dyn Store>) {
    let s = Setup::new(store.clone(), settings()).await;
    s.commit_and_sync(&file(4_000_000, &["gpt-4o-mini"], TEAM))
        .await;
    const OTHER: &str = "https://git.example.com/acme/other.git";
    s.source.commit(OTHER, &file(42, &["gpt-4o-mini"], TEAM));
    let mut moved = settings();
    moved.repo_url = OTHER.into();
    s.admin.gitops_enable("acme", moved).await.unwrap();
    let state = s.sync().await;
    assert_status(&state, SyncStatus::Synced, "synced");
    assert_eq!(s.admin.org("acme").await.unwrap().monthly_token_budget, 42);

    let org = s.admin.org("acme").await.unwrap();
    let now = chrono::Utc::now();
    let later = now + chrono::Duration::seconds(60);
    assert!(
        store
            .gitops_try_lease(org.id, "slow", now, later)
            .await
            .unwrap()
    );
    s.admin.gitops_suspend("acme", true).await.unwrap();
    let state = s.admin.gitops_status("acme").await.unwrap();
    let apply = crate::gitops::GitopsApply {
        org_id: org.id,
        ops: vec![crate::gitops::ApplyOp::AllowModel {
            pattern: "gpt-5".into(),
        }],
        audit: Vec::new(),
        inventory: state.inventory.clone().unwrap(),
        status: state.status.clone(),
        at: now,
        holder: "slow".into(),
    };
    let err = store.gitops_apply(&apply).await.unwrap_err();
    assert_eq!(err.kind(), "conflict", "{err}");
    assert_eq!(
        s.admin
            .list_models("acme", &PageRequest::default())
            .await
            .unwrap()
            .items,
        ["gpt-4o-mini"]
    );
}
