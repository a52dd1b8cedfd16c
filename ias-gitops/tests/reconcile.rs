//! GitOps end to end: `GitManifestSource` and the `Reconciler` against real
//! repositories made by the test, served over `file://` and over git's smart
//! HTTP protocol on loopback, with a SQLite store on a temporary file; and
//! two reconcilers sharing one SQLite file or one PostgreSQL database.
//!
//! Every sync uses a new source over the scenario's cache directory, as a
//! new `ias-admin gitops sync` process does: a source reuses a remote head
//! for a few seconds, and the scenarios push faster than that.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ias_core::gitops::manifest;
use ias_core::gitops::reconcile::{ManifestSource, Reconciler, ReconcilerConfig};
use ias_core::gitops::{ChangeOp, GitopsState, NewGitopsSettings, SyncStatus};
use ias_core::{
    Actor, Admin, AuditEntry, AuditFilter, Decision, Governor, LimitTarget, ManagedBy, PageRequest,
    Role, Source, Store,
};
use ias_gitops::{GitManifestSource, check_settings};
use ias_store_postgres::PostgresStore;
use ias_store_sqlite::SqliteStore;
use serde_json::json;
use support::postgres::TestDb;
use support::{GitHttpServer, Upstream};
use tempfile::TempDir;

const FILE: &str = "ias.yaml";
const MODEL: &str = "gpt-4o-mini";

// ---------------------------------------------------------------------------
// Declared files

/// One declared user.
#[derive(Debug, Clone)]
struct Member {
    email: String,
    role: &'static str,
    limit: Option<i64>,
}

fn member(email: &str, role: &'static str, limit: Option<i64>) -> Member {
    Member {
        email: email.to_owned(),
        role,
        limit,
    }
}

/// A GitOps file, written out by [`Declared::yaml`].
#[derive(Debug, Clone)]
struct Declared {
    org: String,
    budget: i64,
    models: Vec<String>,
    users: Vec<Member>,
}

impl Declared {
    /// Org `acme`: alice (org admin, 1,000,000 tokens a month) and bob (member, no limit).
    fn team() -> Declared {
        Declared::of(
            "acme",
            vec![
                member("alice@acme.io", "org_admin", Some(1_000_000)),
                member("bob@acme.io", "member", None),
            ],
        )
    }

    /// `org` with a budget of 4,000,000 tokens, one model and `users`.
    fn of(org: &str, users: Vec<Member>) -> Declared {
        Declared {
            org: org.to_owned(),
            budget: 4_000_000,
            models: vec![MODEL.to_owned()],
            users,
        }
    }

    fn with_users(mut self, users: Vec<Member>) -> Declared {
        self.users = users;
        self
    }

    fn with_budget(mut self, budget: i64) -> Declared {
        self.budget = budget;
        self
    }

    /// Changes the declared user `email` with `change`.
    fn with_user(mut self, email: &str, change: impl FnOnce(&mut Member)) -> Declared {
        let user = self.users.iter_mut().find(|u| u.email == email).unwrap();
        change(user);
        self
    }

    fn yaml(&self) -> String {
        let models: Vec<String> = self.models.iter().map(|m| format!("\"{m}\"")).collect();
        let mut text = format!(
            "version: 1\norg: {}\nbudget:\n  monthly_tokens: {}\n  timezone: Europe/Berlin\n\
             rate_limits: {{rpm: 600}}\nallowed_models: [{}]\n",
            self.org,
            self.budget,
            models.join(", ")
        );
        if self.users.is_empty() {
            text.push_str("users: []\n");
            return text;
        }
        text.push_str("users:\n");
        for user in &self.users {
            text.push_str(&user_yaml(user));
        }
        text
    }
}

fn user_yaml(user: &Member) -> String {
    let limit = user.limit.map_or("null".to_owned(), |l| l.to_string());
    format!(
        "  - email: \"{}\"\n    role: {}\n    monthly_token_limit: {limit}\n",
        user.email, user.role
    )
}

// ---------------------------------------------------------------------------
// Remotes, stores and reconcilers

/// How the remote repository is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    File,
    Http,
}

/// An upstream repository, served over one transport.
struct Remote {
    transport: Transport,
    upstream: Upstream,
    server: Option<GitHttpServer>,
    token: Option<String>,
    port: u16,
    url: String,
}

impl Remote {
    fn new(transport: Transport) -> Remote {
        Remote::serve(transport, None)
    }

    /// A smart HTTP remote that answers only requests carrying `token`.
    fn with_token(token: &str) -> Remote {
        Remote::serve(Transport::Http, Some(token))
    }

    fn serve(transport: Transport, token: Option<&str>) -> Remote {
        let upstream = Upstream::new();
        let (server, url) = match transport {
            Transport::File => (None, upstream.file_url()),
            Transport::Http => {
                let server = GitHttpServer::start_with_token(&upstream.project_root(), token);
                let url = server.url();
                (Some(server), url)
            }
        };
        Remote {
            transport,
            port: server.as_ref().map_or(0, GitHttpServer::port),
            upstream,
            server,
            token: token.map(str::to_owned),
            url,
        }
    }

    /// Commits `declared` as `ias.yaml` on `main` and pushes it; returns the commit.
    fn push(&self, declared: &Declared) -> String {
        self.push_text(&declared.yaml())
    }

    fn push_text(&self, text: &str) -> String {
        self.upstream.commit_and_push(FILE, text.as_bytes())
    }

    /// Makes the remote unreachable: the repository moves away (`file://`),
    /// or the server stops and its port is closed (HTTP).
    fn cut(&mut self) {
        match self.transport {
            Transport::File => self.upstream.take_offline(),
            Transport::Http => self.server = None,
        }
    }

    /// Undoes [`Remote::cut`]: the same URL works again.
    fn restore(&mut self) {
        match self.transport {
            Transport::File => self.upstream.bring_online(),
            Transport::Http => {
                let root = self.upstream.project_root();
                let token = self.token.as_deref();
                self.server = Some(GitHttpServer::start_on(&root, token, self.port));
            }
        }
    }
}

fn operator(store: &Arc<dyn Store>) -> Admin {
    Admin::new(
        store.clone(),
        Actor::Operator { name: "ops".into() },
        Source::Library,
    )
}

/// Enables GitOps as `ias-admin gitops enable` does: the transport checks
/// the settings (nothing is fetched), then the library stores them.
async fn enable_like_ias_admin(
    admin: &Admin,
    org: &str,
    settings: NewGitopsSettings,
) -> ias_core::Result<GitopsState> {
    check_settings(&settings)?;
    admin.gitops_enable(org, settings).await
}

/// A reconciler over `store` with a new Git source caching under `cache`.
fn reconciler(store: &Arc<dyn Store>, cache: &Path, holder: &str) -> Reconciler {
    let source: Arc<dyn ManifestSource> = Arc::new(GitManifestSource::new(cache).unwrap());
    let config = ReconcilerConfig {
        holder: holder.to_owned(),
        ..ReconcilerConfig::default()
    };
    Reconciler::new(store.clone(), source, config)
}

/// One scenario: org `acme` in a SQLite store on a temporary file, and a remote.
struct Setup {
    dir: TempDir,
    store: Arc<dyn Store>,
    admin: Admin,
    remote: Remote,
}

impl Setup {
    async fn new(transport: Transport) -> Setup {
        Setup::with_remote(Remote::new(transport)).await
    }

    async fn with_remote(remote: Remote) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = SqliteStore::open(dir.path().join("ias.db")).await.unwrap();
        let admin = operator(&store);
        admin.create_org("acme", 5_000_000, "UTC").await.unwrap();
        Setup {
            dir,
            store,
            admin,
            remote,
        }
    }

    /// Default settings for the remote's `ias.yaml` on `main`.
    fn settings(&self) -> NewGitopsSettings {
        NewGitopsSettings::new(&self.remote.url)
    }

    async fn enable(&self, settings: NewGitopsSettings) -> GitopsState {
        enable_like_ias_admin(&self.admin, "acme", settings)
            .await
            .unwrap()
    }

    fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    fn reconciler(&self, holder: &str) -> Reconciler {
        reconciler(&self.store, &self.cache(), holder)
    }

    /// Reconciles `acme` now, as `ias-admin gitops sync` does.
    async fn sync(&self) -> GitopsState {
        let org = self.admin.org("acme").await.unwrap();
        self.reconciler("replica-a").sync_org(org.id).await.unwrap()
    }

    async fn push_and_sync(&self, declared: &Declared) -> (String, GitopsState) {
        let commit = self.remote.push(declared);
        (commit, self.sync().await)
    }

    /// Every Git-owned value of `acme`, and the change feed's position.
    async fn governed(&self) -> Governed {
        Governed {
            change_seq: self.store.change_seq().await.unwrap(),
            org: self.admin.org("acme").await.unwrap(),
            org_limits: self
                .admin
                .rate_limits("acme", LimitTarget::Org)
                .await
                .unwrap(),
            models: self
                .admin
                .list_models("acme", &PageRequest::default())
                .await
                .unwrap()
                .items,
            users: self
                .admin
                .list_users("acme", &PageRequest::default())
                .await
                .unwrap()
                .items,
        }
    }

    async fn used_by(&self, email: &str) -> i64 {
        let report = self
            .admin
            .usage("acme", Some(email.into()), &PageRequest::default())
            .await
            .unwrap();
        report.users[0].counter.used
    }
}

/// What a refused or failed attempt must leave as it was. Every write to a
/// Git-owned field also moves the change feed, so an unchanged position
/// means nothing governed was written at all.
#[derive(Debug, PartialEq)]
struct Governed {
    change_seq: i64,
    org: ias_core::Organization,
    org_limits: ias_core::RateLimits,
    models: Vec<String>,
    users: Vec<ias_core::User>,
}

async fn entries(store: &Arc<dyn Store>, action: &str) -> Vec<AuditEntry> {
    let filter = AuditFilter {
        action: Some(action.to_owned()),
        ..AuditFilter::default()
    };
    let found = store.search_audit(None, &filter, None, 100_000).await;
    found.unwrap()
}

/// The `gitops.apply` entries of one commit.
async fn applies_of(store: &Arc<dyn Store>, commit: &str) -> Vec<AuditEntry> {
    let mut applies = entries(store, "gitops.apply").await;
    applies.retain(|e| e.record.changes["commit"] == json!(commit));
    applies
}

async fn audit_len(store: &Arc<dyn Store>) -> usize {
    store.list_audit(None, 100_000).await.unwrap().len()
}

/// The whole audit log and every organization's sync state, as JSON text.
async fn recorded_text(store: &Arc<dyn Store>) -> String {
    let audit = store.list_audit(None, 100_000).await.unwrap();
    let states = store.gitops_states(None, 1_000).await.unwrap();
    format!(
        "{}\n{}",
        serde_json::to_string(&audit).unwrap(),
        serde_json::to_string(&states).unwrap()
    )
}

#[track_caller]
fn assert_status(state: &GitopsState, status: SyncStatus, reason: &str) {
    assert_eq!(
        (state.status.status, state.status.reason.as_str()),
        (status, reason),
        "status message: {}",
        state.status.message
    );
}

#[track_caller]
fn assert_applied(state: &GitopsState, commit: &str) {
    assert_eq!(state.status.last_applied_commit.as_deref(), Some(commit));
    let inventory = state.inventory.as_ref().unwrap();
    assert_eq!(inventory.commit, commit);
}

/// Spends `tokens` on `email`'s new key through a governor; returns the key.
async fn spend(s: &Setup, email: &str, tokens: i64) -> ias_core::CreatedKey {
    let key = s.admin.create_key(email, None).await.unwrap();
    let governor = Governor::open(s.store.clone()).await.unwrap();
    let decision = governor
        .authorize(key.secret.expose(), MODEL, tokens)
        .await
        .unwrap();
    let Decision::Allowed(allowed) = decision else {
        panic!("{decision:?}")
    };
    governor
        .settle(allowed.reservation.as_ref().unwrap(), tokens)
        .await
        .unwrap();
    governor.shutdown().await.unwrap();
    key
}

async fn key_works(store: &Arc<dyn Store>, key: &ias_core::CreatedKey) -> bool {
    let governor = Governor::open(store.clone()).await.unwrap();
    let decision = governor
        .check(key.secret.expose(), MODEL, 10)
        .await
        .unwrap();
    governor.shutdown().await.unwrap();
    matches!(decision, Decision::Allowed(_))
}

// ---------------------------------------------------------------------------
// Scenarios, each run over `file://` and over smart HTTP

/// An unreachable remote is status `error` (`fetch_failed`): nothing governed
/// is written, the last good state stays, the failure is audited once, and
/// the organization recovers when the remote is back.
async fn an_unreachable_remote_keeps_the_last_good_state(transport: Transport) {
    let mut s = Setup::new(transport).await;
    s.enable(s.settings()).await;
    let (good, state) = s.push_and_sync(&Declared::team()).await;
    assert_status(&state, SyncStatus::Synced, "synced");
    let before = s.governed().await;
    let applies = entries(&s.store, "gitops.apply").await.len();

    s.remote.cut();
    let state = s.sync().await;
    assert_status(&state, SyncStatus::Error, "fetch_failed");
    assert!(
        state.status.message.contains(&s.remote.url),
        "{}",
        state.status.message
    );
    assert_eq!(s.governed().await, before, "nothing governed was written");
    assert_applied(&state, &good);
    assert_eq!(state.status.consecutive_failures, 1);
    assert!(state.status.next_retry_at.is_some());
    assert_eq!(entries(&s.store, "gitops.apply").await.len(), applies);
    assert_eq!(entries(&s.store, "gitops.error").await.len(), 1);

    let again = s.sync().await;
    assert_status(&again, SyncStatus::Error, "fetch_failed");
    assert_eq!(again.status.consecutive_failures, 2);
    assert_eq!(
        entries(&s.store, "gitops.error").await.len(),
        1,
        "a failure is audited once"
    );
    assert_eq!(s.governed().await, before);

    s.remote.restore();
    let state = s.sync().await;
    assert_status(&state, SyncStatus::Synced, "synced");
    assert_eq!(state.status.consecutive_failures, 0);
    assert_applied(&state, &good);
    assert_eq!(s.governed().await, before);
}

/// A commit that empties the users list is refused by the guard, even with
/// prune on and no removal limit.
async fn a_commit_that_empties_the_users_is_refused(transport: Transport) {
    let s = Setup::new(transport).await;
    let mut settings = s.settings();
    settings.prune = true;
    settings.max_removal_percent = 100;
    s.enable(settings).await;
    let (good, _) = s.push_and_sync(&Declared::team()).await;
    let before = s.governed().await;

    let (_, state) = s
        .push_and_sync(&Declared::team().with_users(Vec::new()))
        .await;
    assert_status(&state, SyncStatus::Error, "guard_refused");
    assert!(
        state.status.message.contains("no user"),
        "{}",
        state.status.message
    );
    assert_applied(&state, &good);
    assert_eq!(s.governed().await, before);
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

/// A file with invalid values applies nothing and lists every error.
async fn invalid_values_apply_nothing(transport: Transport) {
    let s = Setup::new(transport).await;
    s.enable(s.settings()).await;
    let (good, _) = s.push_and_sync(&Declared::team()).await;
    let before = s.governed().await;

    let text = "version: 1
org: acme
budget:
  monthly_tokens: -5
  timezone: Mars/Olympus_Mons
rate_limits: {rpm: 0}
allowed_models: [\"gpt*4\"]
users:
  - email: alice@acme.io
    role: owner
    monthly_token_limit: 1.5
  - email: not-an-email
    role: member
";
    s.remote.push_text(text);
    let state = s.sync().await;
    assert_status(&state, SyncStatus::Error, "invalid_file");
    let message = &state.status.message;
    for path in [
        "budget.monthly_tokens",
        "budget.timezone",
        "rate_limits.rpm",
        "allowed_models[0]",
        "users[0].role",
        "users[0].monthly_token_limit",
        "users[1].email",
    ] {
        assert!(
            message.contains(&format!(": {path}: ")),
            "{path}: {message}"
        );
    }
    assert!(message.starts_with("ias.yaml: "), "{message}");
    assert_applied(&state, &good);
    assert_eq!(state.status.consecutive_failures, 1);
    assert_eq!(s.governed().await, before);
    let errors = entries(&s.store, "gitops.error").await;
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].record.changes["reason"], json!("invalid_file"));
}

/// Unknown keys are errors, with a hint when a known key is close; nothing applies.
async fn unknown_keys_apply_nothing(transport: Transport) {
    let s = Setup::new(transport).await;
    s.enable(s.settings()).await;
    let (good, _) = s.push_and_sync(&Declared::team()).await;
    let before = s.governed().await;

    let text = "version: 1
org: acme
budget:
  monthly_tokens: 3000000
  currency: EUR
rate_limit: {rpm: 600}
allowed_models: [gpt-4o-mini]
users:
  - email: alice@acme.io
    role: org_admin
    monthly_limit: 5
  - email: bob@acme.io
    role: member
";
    s.remote.push_text(text);
    let state = s.sync().await;
    assert_status(&state, SyncStatus::Error, "invalid_file");
    let message = &state.status.message;
    for path in ["budget.currency", "rate_limit", "users[0].monthly_limit"] {
        assert!(
            message.contains(&format!(": {path}: ")),
            "{path}: {message}"
        );
    }
    assert!(message.contains("did you mean `rate_limits`"), "{message}");
    assert_applied(&state, &good);
    assert_eq!(s.governed().await, before, "not even the budget changed");
}

/// One bad entry among fifty: nothing of the commit is applied (not the
/// new users, not the other limits) and every error of the entry is listed.
async fn one_bad_entry_among_many_applies_nothing(transport: Transport) {
    let s = Setup::new(transport).await;
    s.enable(s.settings()).await;
    let mut users = vec![member("alice@acme.io", "org_admin", Some(1_000))];
    users.extend((1..40).map(|i| member(&format!("u{i:02}@acme.io"), "member", Some(1_000))));
    let (good, _) = s
        .push_and_sync(&Declared::team().with_users(users.clone()))
        .await;
    let before = s.governed().await;
    assert_eq!(before.users.len(), 40);

    let mut next = users.clone();
    for user in &mut next {
        user.limit = Some(2_000);
    }
    next.extend((1..=10).map(|i| member(&format!("new{i:02}@acme.io"), "member", None)));
    let good_entry = user_yaml(&next[25]);
    let bad_entry = "  - email: \"u25@acme.io\"
    role: superuser
    monthly_token_limit: lots
    rate_limts: {rpm: 5}
";
    let text = Declared::team()
        .with_users(next)
        .yaml()
        .replace(&good_entry, bad_entry);
    assert!(text.contains("superuser"));
    s.remote.push_text(&text);
    let state = s.sync().await;
    assert_status(&state, SyncStatus::Error, "invalid_file");
    let message = &state.status.message;
    for path in [
        "users[25].role",
        "users[25].monthly_token_limit",
        "users[25].rate_limts",
    ] {
        assert!(
            message.contains(&format!(": {path}: ")),
            "{path}: {message}"
        );
    }
    assert_eq!(
        message.matches(": users[").count(),
        3,
        "only the bad entry's errors: {message}"
    );
    assert_applied(&state, &good);
    assert_eq!(s.governed().await, before);
    assert!(s.admin.user("new01@acme.io").await.is_err());
}

/// A mass removal is refused by the guard, and applied once the guard is raised.
async fn a_mass_removal_needs_a_raised_guard(transport: Transport) {
    let s = Setup::new(transport).await;
    let mut settings = s.settings();
    settings.prune = true;
    s.enable(settings.clone()).await;
    let mut users = vec![member("alice@acme.io", "org_admin", None)];
    users.extend((1..12).map(|i| member(&format!("m{i:02}@acme.io"), "member", None)));
    s.push_and_sync(&Declared::team().with_users(users.clone()))
        .await;
    let key = spend(&s, "m01@acme.io", 10).await;
    let before = s.governed().await;
    assert_eq!(before.users.len(), 12);

    let kept: Vec<Member> = [&users[..1], &users[5..]].concat();
    let (commit, state) = s.push_and_sync(&Declared::team().with_users(kept)).await;
    assert_status(&state, SyncStatus::Error, "guard_refused");
    assert!(
        state.status.message.contains("removes 4 of 12"),
        "{}",
        state.status.message
    );
    assert_eq!(s.governed().await, before);
    assert!(key_works(&s.store, &key).await);

    settings.max_removal_percent = 40;
    s.enable(settings).await;
    let state = s.sync().await;
    assert_status(&state, SyncStatus::Synced, "synced");
    assert_applied(&state, &commit);
    let emails: Vec<String> = s
        .admin
        .list_users("acme", &PageRequest::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|u| u.email)
        .collect();
    assert_eq!(emails.len(), 8);
    for i in 1..=4 {
        assert!(!emails.contains(&format!("m{i:02}@acme.io")), "{emails:?}");
    }
    let removed = s.admin.user("m01@acme.io").await.unwrap();
    assert!(
        removed.removed_at.is_some(),
        "the user stays for the record"
    );
    assert_eq!(
        s.admin
            .list_keys("m01@acme.io", &PageRequest::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    assert!(
        !key_works(&s.store, &key).await,
        "a removed user's key stops"
    );
    let applied = applies_of(&s.store, &commit).await;
    let targets: Vec<&str> = applied.iter().map(|e| e.record.target.as_str()).collect();
    assert_eq!(targets.len(), 4, "{targets:?}");
    for i in 1..=4 {
        assert!(targets.contains(&format!("user:m{i:02}@acme.io").as_str()));
    }
}

/// A role change is one field change; the user's key and usage stay.
async fn a_role_change_keeps_keys_and_usage(transport: Transport) {
    let s = Setup::new(transport).await;
    s.enable(s.settings()).await;
    s.push_and_sync(&Declared::team()).await;
    let key = spend(&s, "bob@acme.io", 600).await;
    assert_eq!(s.used_by("bob@acme.io").await, 600);

    let promoted = Declared::team().with_user("bob@acme.io", |u| u.role = "org_admin");
    let manifest = manifest::parse(&promoted.yaml(), Some("acme")).unwrap();
    let plan = s.admin.gitops_plan("acme", &manifest).await.unwrap();
    assert_eq!(plan.changes.len(), 1, "{:?}", plan.changes);
    let change = &plan.changes[0];
    assert_eq!(
        (change.op, change.target.as_str(), change.field.as_str()),
        (ChangeOp::Change, "user:bob@acme.io", "role")
    );
    assert_eq!(
        (&change.before, &change.after),
        (&json!("member"), &json!("org_admin"))
    );

    let (commit, state) = s.push_and_sync(&promoted).await;
    assert_status(&state, SyncStatus::Synced, "synced");
    let applied = applies_of(&s.store, &commit).await;
    assert_eq!(applied.len(), 1);
    assert_eq!(applied[0].record.target, "user:bob@acme.io");
    assert_eq!(
        applied[0].record.changes["changes"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
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
    assert!(keys[0].revoked_at.is_none());
    assert_eq!(s.used_by("bob@acme.io").await, 600);
    assert!(key_works(&s.store, &key).await);
}

/// Emails and model patterns in another letter case are no change: the
/// commit is recorded as applied, with no write and no audit entry.
async fn letter_case_is_no_change(transport: Transport) {
    let s = Setup::new(transport).await;
    s.enable(s.settings()).await;
    s.push_and_sync(&Declared::team()).await;
    let mut shouting = Declared::team().with_users(vec![
        member(" ALICE@Acme.IO ", "org_admin", Some(1_000_000)),
        member("Bob@ACME.io", "member", None),
    ]);
    shouting.models = vec!["GPT-4o-Mini".to_owned()];
    let manifest = manifest::parse(&shouting.yaml(), Some("acme")).unwrap();
    assert!(
        s.admin
            .gitops_plan("acme", &manifest)
            .await
            .unwrap()
            .is_empty()
    );
    let before = s.governed().await;
    let audit = audit_len(&s.store).await;

    let (commit, state) = s.push_and_sync(&shouting).await;
    assert_status(&state, SyncStatus::Synced, "synced");
    assert_applied(&state, &commit);
    assert_eq!(audit_len(&s.store).await, audit, "no audit entry");
    assert_eq!(s.governed().await, before);
}

/// Users created through the API before enable are never pruned, while
/// users Git added are.
async fn users_created_before_enable_are_never_pruned(transport: Transport) {
    let s = Setup::new(transport).await;
    s.admin
        .create_user("acme", "early@acme.io", Role::Member, Some(50))
        .await
        .unwrap();
    let mut settings = s.settings();
    settings.prune = true;
    settings.max_removal_percent = 100;
    s.enable(settings).await;
    let (_, state) = s.push_and_sync(&Declared::team()).await;
    assert_status(&state, SyncStatus::Synced, "synced");
    let inventory = state.inventory.unwrap();
    assert_eq!(inventory.added_users, ["alice@acme.io", "bob@acme.io"]);
    let plan = s
        .admin
        .gitops_plan("acme", &inventory.manifest)
        .await
        .unwrap();
    assert_eq!(plan.kept, ["early@acme.io"]);

    let alone = Declared::team().with_users(vec![member("alice@acme.io", "org_admin", None)]);
    let (_, state) = s.push_and_sync(&alone).await;
    assert_status(&state, SyncStatus::Synced, "synced");
    let emails: Vec<String> = s
        .admin
        .list_users("acme", &PageRequest::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|u| u.email)
        .collect();
    assert_eq!(emails, ["early@acme.io", "alice@acme.io"], "bob pruned");
    let early = s.admin.user("early@acme.io").await.unwrap();
    assert_eq!(
        (
            early.managed_by,
            early.monthly_token_limit,
            early.removed_at
        ),
        (ManagedBy::Api, Some(50), None)
    );
}

/// A force-pushed branch is followed: the rewritten commit is applied.
async fn a_force_pushed_branch_is_applied(transport: Transport) {
    let s = Setup::new(transport).await;
    s.enable(s.settings()).await;
    s.push_and_sync(&Declared::team()).await;
    let pushed = Declared::team().with_user("bob@acme.io", |u| u.limit = Some(5_000));
    let (first, state) = s.push_and_sync(&pushed).await;
    assert_applied(&state, &first);

    let rewritten = Declared::team().with_user("bob@acme.io", |u| u.limit = Some(7_000));
    let commit = s
        .remote
        .upstream
        .amend_and_force_push(FILE, rewritten.yaml().as_bytes());
    assert_ne!(commit, first);
    let state = s.sync().await;
    assert_status(&state, SyncStatus::Synced, "synced");
    assert_applied(&state, &commit);
    let bob = s.admin.user("bob@acme.io").await.unwrap();
    assert_eq!(bob.monthly_token_limit, Some(7_000));
    let applied = applies_of(&s.store, &commit).await;
    assert_eq!(applied.len(), 1);
    let change = &applied[0].record.changes["changes"][0];
    assert_eq!(
        (&change["before"], &change["after"]),
        (&json!(5000), &json!(7000))
    );
}

/// An explicit sync right after a push applies the new commit: it asks the
/// remote afresh, whatever head the same reconciler saw a moment ago.
async fn a_sync_right_after_a_push_applies_it(transport: Transport) {
    let s = Setup::new(transport).await;
    s.enable(s.settings()).await;
    let org = s.admin.org("acme").await.unwrap();
    let reconciler = s.reconciler("replica-a");
    let first = s.remote.push(&Declared::team());
    assert_applied(&reconciler.sync_org(org.id).await.unwrap(), &first);
    let pushed = Declared::team().with_user("bob@acme.io", |u| u.limit = Some(5_000));
    let second = s.remote.push(&pushed);
    assert_applied(&reconciler.sync_org(org.id).await.unwrap(), &second);
}

/// A ref pinned to a commit, and a tag, stay where they point while the
/// branch moves on.
async fn a_pinned_commit_and_a_tag_stay_put(transport: Transport) {
    let s = Setup::new(transport).await;
    let budget = |n: i64| Declared::team().with_budget(n);
    let pinned = s.remote.push(&budget(4_000_000));
    let tagged = s.remote.push(&budget(3_000_000));
    s.remote.push(&budget(2_000_000));

    let mut settings = s.settings();
    settings.git_ref = pinned.clone();
    s.enable(settings).await;
    let state = s.sync().await;
    assert_status(&state, SyncStatus::Synced, "synced");
    assert_applied(&state, &pinned);
    s.remote.push(&budget(1_000_000));
    let state = s.sync().await;
    assert_status(&state, SyncStatus::Synced, "synced");
    assert_applied(&state, &pinned);
    let org = s.admin.org("acme").await.unwrap();
    assert_eq!(org.monthly_token_budget, 4_000_000);

    s.remote.upstream.tag_and_push("v1", &tagged);
    let mut settings = s.settings();
    settings.git_ref = "v1".to_owned();
    s.enable(settings).await;
    let state = s.sync().await;
    assert_status(&state, SyncStatus::Synced, "synced");
    assert_applied(&state, &tagged);
    s.remote.push(&budget(500_000));
    let state = s.sync().await;
    assert_applied(&state, &tagged);
    let org = s.admin.org("acme").await.unwrap();
    assert_eq!(org.monthly_token_budget, 3_000_000);
}

/// A restart with an unchanged file: a new reconciler over the same store
/// applies nothing, writes no audit entry, and leaves usage and keys alone.
async fn a_restart_with_an_unchanged_file_changes_nothing(transport: Transport) {
    let s = Setup::new(transport).await;
    s.enable(s.settings()).await;
    let (commit, _) = s.push_and_sync(&Declared::team()).await;
    let key = spend(&s, "bob@acme.io", 600).await;
    let before = s.governed().await;
    let audit = audit_len(&s.store).await;
    let keys = s
        .admin
        .list_keys("bob@acme.io", &PageRequest::default())
        .await
        .unwrap()
        .items;

    let restarted = s.reconciler("replica-restarted");
    for _ in 0..2 {
        let outcomes = restarted.cycle().await.unwrap();
        assert_eq!(outcomes.len(), 1);
        assert_eq!(outcomes[0].status, SyncStatus::Synced, "{outcomes:?}");
        assert!(!outcomes[0].applied);
    }
    assert_eq!(audit_len(&s.store).await, audit, "no audit entry");
    assert_eq!(s.governed().await, before);
    assert_eq!(
        s.admin
            .list_keys("bob@acme.io", &PageRequest::default())
            .await
            .unwrap()
            .items,
        keys
    );
    assert_eq!(s.used_by("bob@acme.io").await, 600);
    assert!(key_works(&s.store, &key).await);
    let state = s.admin.gitops_status("acme").await.unwrap();
    assert_applied(&state, &commit);
}

/// A long-running reconciler finds a break-glass write to an organization
/// it last found clean on its next cycle, through the change feed.
async fn drift_in_a_clean_org_is_found_on_the_next_cycle(transport: Transport) {
    let s = Setup::new(transport).await;
    s.enable(s.settings()).await;
    s.remote.push(&Declared::team());
    let running = s.reconciler("replica-a");
    for _ in 0..2 {
        running.cycle().await.unwrap();
    }
    let state = s.admin.gitops_status("acme").await.unwrap();
    assert_status(&state, SyncStatus::Synced, "synced");

    let forced = Admin::new(
        s.store.clone(),
        Actor::Operator { name: "ops".into() },
        Source::Cli,
    )
    .with_break_glass();
    forced.set_user_limit("bob@acme.io", Some(5)).await.unwrap();
    running.cycle().await.unwrap();
    let state = s.admin.gitops_status("acme").await.unwrap();
    assert_status(&state, SyncStatus::OutOfSync, "drift");
    assert_eq!(state.status.drift.len(), 1);
    assert_eq!(state.status.drift[0].target, "user:bob@acme.io");
    assert_eq!(entries(&s.store, "gitops.drift").await.len(), 1);
}

/// Two reconcilers on one SQLite file, each with a store of its own.
async fn two_reconcilers_on_one_sqlite_file(transport: Transport) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ias.db");
    let a: Arc<dyn Store> = SqliteStore::open(&path).await.unwrap();
    let b: Arc<dyn Store> = SqliteStore::open(&path).await.unwrap();
    two_reconcilers_apply_each_commit_once([a, b], &Remote::new(transport), dir.path()).await;
}

macro_rules! over_file_and_http {
    ($($scenario:ident),* $(,)?) => {
        mod over_file {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Transport::File).await;
                }
            )*
        }

        mod over_http {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Transport::Http).await;
                }
            )*
        }
    };
}

over_file_and_http!(
    an_unreachable_remote_keeps_the_last_good_state,
    a_commit_that_empties_the_users_is_refused,
    invalid_values_apply_nothing,
    unknown_keys_apply_nothing,
    one_bad_entry_among_many_applies_nothing,
    a_mass_removal_needs_a_raised_guard,
    a_role_change_keeps_keys_and_usage,
    letter_case_is_no_change,
    users_created_before_enable_are_never_pruned,
    a_force_pushed_branch_is_applied,
    a_sync_right_after_a_push_applies_it,
    a_pinned_commit_and_a_tag_stay_put,
    a_restart_with_an_unchanged_file_changes_nothing,
    drift_in_a_clean_org_is_found_on_the_next_cycle,
    two_reconcilers_on_one_sqlite_file,
);

// ---------------------------------------------------------------------------
// Credentials

const SECRET: &str = "glpat-e2e-Zq81vXk3";

/// A URL with credentials is refused by `check_settings` and so at enable;
/// the secret is in no error, no status and no audit entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_the_url_are_refused_and_never_recorded() {
    let s = Setup::with_remote(Remote::with_token(SECRET)).await;
    let token_file = s.dir.path().join("token");
    std::fs::write(&token_file, SECRET).unwrap();
    let credentials = format!("token-file:{}", token_file.display());
    let mut good = s.settings();
    good.credentials = Some(credentials.clone());
    s.enable(good).await;
    let (_, state) = s.push_and_sync(&Declared::team()).await;
    assert_status(&state, SyncStatus::Synced, "synced");

    let port = s.remote.port;
    let urls = [
        format!("http://x-access-token:{SECRET}@127.0.0.1:{port}/org.git"),
        format!("http://{SECRET}@127.0.0.1:{port}/org.git"),
        format!("https://{SECRET}@127.0.0.1:{port}/org.git"),
        format!("https://x-access-token:{SECRET}@localhost:{port}/org.git"),
        format!("ssh://git:{SECRET}@127.0.0.1:{port}/org.git"),
    ];
    for url in &urls {
        let settings = NewGitopsSettings::new(url);
        let checked = check_settings(&settings).unwrap_err();
        let enabled = enable_like_ias_admin(&s.admin, "acme", settings)
            .await
            .unwrap_err();
        for err in [checked, enabled] {
            assert_eq!(err.kind(), "invalid_input", "{err}");
            let text = format!("{err} {err:?}");
            assert!(text.contains("credentials in the url"), "{text}");
            assert!(text.contains("***"), "{text}");
            assert!(!text.contains(SECRET), "{text}");
        }
    }
    let mut pasted = s.settings();
    pasted.credentials = Some(SECRET.to_owned());
    let err = enable_like_ias_admin(&s.admin, "acme", pasted)
        .await
        .unwrap_err();
    assert!(!format!("{err} {err:?}").contains(SECRET), "{err}");

    let state = s.admin.gitops_status("acme").await.unwrap();
    assert_eq!(state.settings.repo_url, s.remote.url);
    assert_eq!(state.settings.credentials, Some(credentials));
    assert_eq!(entries(&s.store, "gitops.enable").await.len(), 1);
    let recorded = recorded_text(&s.store).await;
    assert!(recorded.contains("gitops.apply"), "the log was read");
    assert!(!recorded.contains(SECRET));
}

/// A token-protected remote with a `token-file:` setting: the right token
/// syncs, a wrong one is `fetch_failed` without either token in the message,
/// and a rotated file is used from the next fetch on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_protected_remote_with_a_token_file() {
    const WRONG: &str = "e2e-wrong-token-77b0d2";
    let s = Setup::with_remote(Remote::with_token(SECRET)).await;
    let token_file = s.dir.path().join("token");
    std::fs::write(&token_file, format!("  {SECRET}\n")).unwrap();
    let mut settings = s.settings();
    settings.credentials = Some(format!("token-file:{}", token_file.display()));
    s.enable(settings).await;
    let (first, state) = s.push_and_sync(&Declared::team()).await;
    assert_status(&state, SyncStatus::Synced, "synced");
    assert_applied(&state, &first);

    std::fs::write(&token_file, WRONG).unwrap();
    let before = s.governed().await;
    let next = Declared::team().with_user("bob@acme.io", |u| u.limit = Some(5_000));
    let (commit, state) = s.push_and_sync(&next).await;
    assert_status(&state, SyncStatus::Error, "fetch_failed");
    let message = &state.status.message;
    assert!(message.contains("authentication"), "{message}");
    assert!(
        !message.contains(SECRET) && !message.contains(WRONG),
        "{message}"
    );
    assert_eq!(s.governed().await, before);
    assert_applied(&state, &first);

    std::fs::write(&token_file, SECRET).unwrap();
    let state = s.sync().await;
    assert_status(&state, SyncStatus::Synced, "synced");
    assert_applied(&state, &commit);
    let recorded = recorded_text(&s.store).await;
    assert!(
        recorded.contains("authentication"),
        "the failure was recorded"
    );
    assert!(!recorded.contains(SECRET) && !recorded.contains(WRONG));
}

// ---------------------------------------------------------------------------
// Two reconcilers on one database

const ORGS: [&str; 3] = ["acme", "beta", "gamma"];
const ROUNDS: usize = 5;

/// Round `round`'s file for `org`: its admin and its developer, with limits
/// that change every round.
fn round_file(org: &str, round: usize) -> Declared {
    let n = i64::try_from(round).unwrap() + 1;
    Declared::of(
        org,
        vec![
            member(&format!("admin@{org}.io"), "org_admin", Some(1_000 * n)),
            member(&format!("dev@{org}.io"), "member", Some(500 * n)),
        ],
    )
}

/// Three organizations in one repository; each round pushes one commit that
/// changes all three, then the two reconcilers (stores `stores`, caches of
/// their own) run a cycle at the same time. Every organization ends each
/// round at the new commit, and each commit is applied exactly once: one
/// `gitops.apply` entry per changed target, never two.
async fn two_reconcilers_apply_each_commit_once(
    stores: [Arc<dyn Store>; 2],
    remote: &Remote,
    dir: &Path,
) {
    let admin = operator(&stores[0]);
    for org in ORGS {
        admin.create_org(org, 5_000_000, "UTC").await.unwrap();
        let mut settings = NewGitopsSettings::new(&remote.url);
        settings.path = format!("orgs/{org}.yaml");
        enable_like_ias_admin(&admin, org, settings).await.unwrap();
    }
    let mut commits = Vec::new();
    for round in 0..ROUNDS {
        let files: Vec<(String, String)> = ORGS
            .iter()
            .map(|org| (format!("orgs/{org}.yaml"), round_file(org, round).yaml()))
            .collect();
        let files: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(path, text)| (path.as_str(), text.as_bytes()))
            .collect();
        let commit = remote.upstream.commit_files_and_push(&files);
        let a = reconciler(&stores[0], &dir.join("cache-a"), "replica-a");
        let b = reconciler(&stores[1], &dir.join("cache-b"), "replica-b");
        let (ra, rb) = tokio::join!(a.cycle(), b.cycle());
        let outcomes = [ra.unwrap(), rb.unwrap()];
        for org in ORGS {
            let state = admin.gitops_status(org).await.unwrap();
            assert_eq!(
                state.status.status,
                SyncStatus::Synced,
                "round {round}, `{org}`: {outcomes:?}"
            );
            assert_applied(&state, &commit);
        }
        commits.push(commit);
    }

    let slugs: BTreeMap<_, _> = admin
        .list_orgs(&PageRequest::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|o| (o.id, o.slug))
        .collect();
    let mut seen: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for entry in entries(&stores[1], "gitops.apply").await {
        let commit = entry.record.changes["commit"].as_str().unwrap().to_owned();
        let slug = slugs[&entry.record.org_id.unwrap()].clone();
        seen.entry((slug, commit))
            .or_default()
            .push(entry.record.target);
    }
    for (round, commit) in commits.iter().enumerate() {
        for org in ORGS {
            let mut expected = vec![format!("user:admin@{org}.io"), format!("user:dev@{org}.io")];
            if round == 0 {
                expected.push(format!("org:{org}"));
            }
            expected.sort();
            let mut targets = seen
                .remove(&(org.to_owned(), commit.clone()))
                .unwrap_or_default();
            targets.sort();
            assert_eq!(targets, expected, "round {round}, `{org}`");
        }
    }
    assert!(seen.is_empty(), "entries of no round: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_reconcilers_on_one_postgres_database() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let a: Arc<dyn Store> = PostgresStore::open(db.url()).await.unwrap();
    let b: Arc<dyn Store> = PostgresStore::open(db.url()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let remote = Remote::new(Transport::File);
    two_reconcilers_apply_each_commit_once([a, b], &remote, dir.path()).await;
}
