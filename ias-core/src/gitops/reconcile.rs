//! The reconcile loop: fetch, check, plan, apply, report — for every organization.
//!
//! The Git transport is behind [`ManifestSource`] (the `ias-gitops` crate
//! implements it with libgit2), so the rules here are the same whatever
//! serves the file. One cycle looks at every organization with GitOps
//! enabled, a bounded number at a time; one failing organization never
//! holds up another. Per organization:
//!
//! 1. ask the source for the commit the ref points at (cheap: no file read);
//! 2. an unchanged commit costs no fetch or parse: only the drift check
//!    runs, comparing the store with the file last applied;
//! 3. a new commit is fetched and parsed; any error in the file fails the
//!    attempt (status `error`) and nothing is applied;
//! 4. the plan is checked by the guards (mass removal, no user, no org
//!    admin); a refused plan fails the attempt, and nothing is applied;
//! 5. under the organization's reconcile lease, so two replicas never apply
//!    the same organization at once, the plan is applied in one transaction.
//!
//! A failure keeps the last good state, counts as a consecutive failure and
//! backs off (doubling from the interval up to ten minutes) before the
//! next attempt. A suspended organization is fetched and reported on, never
//! applied.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::admin::{Admin, PlannedApply};
use crate::audit::{Actor, Source};
use crate::clock::{Clock, SystemClock};
use crate::domain::OrgId;
use crate::error::{Error, Result};
use crate::gitops::manifest::{self, Manifest};
use crate::gitops::plan::{FieldChange, Plan};
use crate::gitops::settings::{
    DEFAULT_INTERVAL_SECS, DriftPolicy, GitopsSettings, NewGitopsSettings,
};
use crate::gitops::state::{GitopsState, GitopsStatus, SyncStatus, short_commit};
use crate::store::Store;

/// The longest back-off after repeated failures.
const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// Every this many cycles, drift is checked for every organization, even
/// those the change feed says nothing touched.
const FULL_DRIFT_CHECK_EVERY: u64 = 10;

/// Change-feed entries read at a time; more than [`MAX_FEED_READ`] in one
/// cycle marks every organization for a drift check instead.
const FEED_PAGE: u32 = 5_000;
const MAX_FEED_READ: usize = 50_000;

/// Written users looked up one at a time (to find their organization) in
/// one cycle; more marks every organization for a drift check instead,
/// which then costs less than the lookups.
const MAX_USER_LOOKUPS: usize = 2_000;

/// GitOps states read at a time at the start of a cycle.
const STATES_PAGE: u32 = 500;

/// A file fetched from a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedFile {
    /// The commit the file was read from.
    pub commit: String,
    /// The file's bytes.
    pub content: Vec<u8>,
}

/// Where the reconciler gets files from: a Git transport, or a test's double.
#[async_trait]
pub trait ManifestSource: Send + Sync {
    /// The commit the settings' ref points at now, without reading the file.
    ///
    /// A source may answer from a head it asked for a moment ago (several
    /// organizations often share one repository within a cycle).
    async fn head(&self, settings: &GitopsSettings) -> Result<String>;

    /// Like [`ManifestSource::head`], asking the remote whatever it saw a
    /// moment ago: for an explicit sync, right after a push.
    async fn fresh_head(&self, settings: &GitopsSettings) -> Result<String> {
        self.head(settings).await
    }

    /// The settings' file at the ref's commit.
    async fn fetch(&self, settings: &GitopsSettings) -> Result<FetchedFile>;

    /// Refuses settings this source cannot fetch from (a URL scheme its
    /// transport lacks, say), before they are stored; accepts all by default.
    fn check(&self, settings: &NewGitopsSettings) -> Result<()> {
        let _ = settings;
        Ok(())
    }
}

/// How the reconciler runs.
#[derive(Debug, Clone)]
pub struct ReconcilerConfig {
    /// Time between cycles (default 30 s).
    pub interval: Duration,
    /// Each wait is the interval plus or minus up to this share of it (default 0.1).
    pub jitter: f64,
    /// Organizations reconciled at once (default 8).
    pub concurrency: usize,
    /// How long an apply's lease holds an organization (default 60 s).
    pub lease_ttl: Duration,
    /// This reconciler's name in leases: unique per process.
    pub holder: String,
    /// The longest one organization's attempt may take in a cycle (default
    /// 120 s); a slower one is left behind so the others go on.
    pub org_timeout: Duration,
}

impl Default for ReconcilerConfig {
    fn default() -> Self {
        ReconcilerConfig {
            interval: Duration::from_secs(DEFAULT_INTERVAL_SECS),
            jitter: 0.1,
            concurrency: 8,
            lease_ttl: Duration::from_secs(60),
            holder: default_holder(),
            org_timeout: Duration::from_secs(120),
        }
    }
}

fn default_holder() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".to_owned());
    format!(
        "{host}:{}:{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// What happened to one organization in one cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgOutcome {
    /// The organization.
    pub org_id: OrgId,
    /// Its slug.
    pub org: String,
    /// Its status after the attempt.
    pub status: SyncStatus,
    /// The reason given with it.
    pub reason: String,
    /// Whether this attempt applied changes.
    pub applied: bool,
    /// Whether this attempt stood back: another reconciler held the
    /// organization's lease or changed its state meanwhile.
    pub yielded: bool,
}

/// Reconciles organizations with their repositories.
#[derive(Clone)]
pub struct Reconciler {
    store: Arc<dyn Store>,
    source: Arc<dyn ManifestSource>,
    clock: Arc<dyn Clock>,
    config: ReconcilerConfig,
    admin: Admin,
    watch: Arc<Mutex<DriftWatch>>,
}

/// Which organizations need a drift check: the change feed tells which
/// ones were written since they were last found clean.
#[derive(Debug, Default)]
struct DriftWatch {
    /// The feed position read up to; `None` before the first cycle.
    seq: Option<i64>,
    /// Organizations found clean, with nothing written to them since.
    clean: HashSet<OrgId>,
    /// Cycles run.
    cycles: u64,
}

impl Reconciler {
    /// A reconciler over `store`, fetching through `source`.
    pub fn new(
        store: Arc<dyn Store>,
        source: Arc<dyn ManifestSource>,
        config: ReconcilerConfig,
    ) -> Self {
        let actor = Actor::Operator {
            name: "gitops-reconciler".to_owned(),
        };
        let admin = Admin::new(store.clone(), actor, Source::Gitops);
        Reconciler {
            store,
            source,
            clock: Arc::new(SystemClock),
            config,
            admin,
            watch: Arc::new(Mutex::new(DriftWatch::default())),
        }
    }

    /// The source the reconciler fetches files through.
    pub fn source(&self) -> &Arc<dyn ManifestSource> {
        &self.source
    }

    /// Uses `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.admin = self.admin.with_clock(clock.clone());
        self.clock = clock;
        self
    }

    /// Keeps `admin`'s attached governor current after each apply.
    pub fn with_governor(mut self, governor: crate::governor::Governor) -> Self {
        self.admin = self.admin.with_governor(governor);
        self
    }

    /// One cycle over every organization with GitOps enabled.
    pub async fn cycle(&self) -> Result<Vec<OrgOutcome>> {
        self.read_feed().await?;
        let states = self.enabled_states().await?;
        let permits = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        let mut tasks = JoinSet::new();
        for state in states {
            let this = self.clone();
            let permits = permits.clone();
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                let slug = state.settings.org_slug.clone();
                let limit = this.config.org_timeout;
                match tokio::time::timeout(limit, this.reconcile(state, false)).await {
                    Ok(outcome) => outcome,
                    Err(_) => {
                        tracing::warn!(org = %slug, ?limit, "gitops attempt timed out; the cycle goes on");
                        None
                    }
                }
            });
        }
        let mut outcomes = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Some(outcome)) => outcomes.push(outcome),
                Ok(None) => {}
                Err(err) => tracing::error!(error = %err, "a reconcile task failed"),
            }
        }
        outcomes.sort_by_key(|o| o.org_id);
        Ok(outcomes)
    }

    /// The state of every organization with GitOps enabled, read a page at a time.
    async fn enabled_states(&self) -> Result<Vec<GitopsState>> {
        let mut states = Vec::new();
        let mut after = None;
        loop {
            let page = self.store.gitops_states(after, STATES_PAGE).await?;
            let full = page.len() == STATES_PAGE as usize;
            after = page.last().map(|state| state.settings.org_id);
            states.extend(page);
            if !full {
                return Ok(states);
            }
        }
    }

    /// Forgets clean organizations that were written to since the last cycle.
    async fn read_feed(&self) -> Result<()> {
        let newest = self.store.change_seq().await?;
        let (from, full) = {
            let mut watch = self.lock_watch();
            watch.cycles += 1;
            let full = watch.cycles.is_multiple_of(FULL_DRIFT_CHECK_EVERY);
            (watch.seq, full)
        };
        let Some(mut after) = from.filter(|seq| *seq <= newest && !full) else {
            let mut watch = self.lock_watch();
            watch.clean.clear();
            watch.seq = Some(newest);
            return Ok(());
        };
        let mut touched = HashSet::new();
        let mut users = HashSet::new();
        let mut read = 0;
        while after < newest && read <= MAX_FEED_READ {
            let page = self.store.changes_since(after, FEED_PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            read += page.len();
            for change in &page {
                match change.entity {
                    crate::snapshot::ChangeEntity::Org => {
                        touched.insert(OrgId(change.id));
                    }
                    crate::snapshot::ChangeEntity::User => {
                        users.insert(crate::domain::UserId(change.id));
                    }
                    crate::snapshot::ChangeEntity::Key => {}
                }
            }
        }
        // Users are resolved to their organization one store call each: not
        // at all when no organization is clean (nothing to forget), and past
        // MAX_USER_LOOKUPS checking every organization costs less.
        let everything = read > MAX_FEED_READ || users.len() > MAX_USER_LOOKUPS;
        let any_clean = !self.lock_watch().clean.is_empty();
        if any_clean && !everything {
            for user in users {
                if let Some(user) = self.store.user_by_id(user).await? {
                    touched.insert(user.org_id);
                }
            }
        }
        let mut watch = self.lock_watch();
        if everything {
            watch.clean.clear();
        } else {
            watch.clean.retain(|org| !touched.contains(org));
        }
        watch.seq = Some(after.max(newest));
        Ok(())
    }

    fn lock_watch(&self) -> std::sync::MutexGuard<'_, DriftWatch> {
        // A panic while holding the lock cannot leave the set inconsistent in
        // a way that matters: at worst an organization is checked once more.
        self.watch.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_clean(&self, org: OrgId) -> bool {
        self.lock_watch().clean.contains(&org)
    }

    fn mark(&self, org: OrgId, clean: bool) {
        let mut watch = self.lock_watch();
        if clean {
            watch.clean.insert(org);
        } else {
            watch.clean.remove(&org);
        }
    }

    /// Reconciles one organization now, whatever its back-off, and returns its state.
    pub async fn sync_org(&self, org: OrgId) -> Result<GitopsState> {
        let outcome = self.reconcile(self.enabled(org).await?, true).await;
        if let Some(outcome) = outcome.filter(|o| o.yielded) {
            return Err(Error::conflict(
                "gitops lease of organization",
                outcome.org,
                "is held by another reconciler applying it now; try again in a minute",
            ));
        }
        self.enabled(org).await
    }

    async fn enabled(&self, org: OrgId) -> Result<GitopsState> {
        self.store
            .gitops_state(org)
            .await?
            .ok_or_else(|| Error::not_found("gitops settings of organization", org.to_string()))
    }

    /// Runs cycles every interval (with jitter) until `shutdown` turns true.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        loop {
            let cycle = self.cycle().instrument(tracing::info_span!("gitops_cycle"));
            tokio::select! {
                result = cycle => {
                    if let Err(err) = result {
                        tracing::warn!(error = %err, "gitops cycle failed; trying again next interval");
                    }
                }
                _ = shutdown.changed() => return,
            }
            let wait = self.next_wait();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }

    fn next_wait(&self) -> Duration {
        let jitter = self.config.jitter.clamp(0.0, 1.0);
        let factor = 1.0 + jitter * (rand::random::<f64>() * 2.0 - 1.0);
        self.config.interval.mul_f64(factor.max(0.0))
    }

    /// One attempt on one organization; `None` when it was left alone (back-off).
    async fn reconcile(&self, state: GitopsState, force: bool) -> Option<OrgOutcome> {
        let now = self.clock.now();
        if !force && state.status.next_retry_at.is_some_and(|at| now < at) {
            return None;
        }
        let span = tracing::info_span!("gitops_org", org = %state.settings.org_slug);
        let attempt = Attempt {
            reconciler: self,
            now,
            fresh: force,
        };
        let (status, ended) = attempt.run(&state).instrument(span).await;
        let outcome = OrgOutcome {
            org_id: state.settings.org_id,
            org: state.settings.org_slug.clone(),
            status: status.status,
            reason: status.reason.clone(),
            applied: ended == Ended::Applied,
            yielded: ended == Ended::Yielded,
        };
        if ended == Ended::Attempted && worth_saving(&state.status, &status) {
            let audit = self.status_audit(&state, &status);
            let saved = self
                .store
                .gitops_save_status(state.settings.org_id, &status, audit.as_ref())
                .await;
            if let Err(err) = saved {
                tracing::warn!(error = %err, org = %state.settings.org_slug, "could not save the gitops status");
            }
        }
        Some(outcome)
    }

    /// An audit record when drift is newly found, or an attempt newly fails.
    fn status_audit(
        &self,
        state: &GitopsState,
        status: &GitopsStatus,
    ) -> Option<crate::audit::AuditRecord> {
        let before = &state.status;
        let new_drift = status.reason == "drift" && status.drift != before.drift;
        let new_error = status.status == SyncStatus::Error
            && (before.status != SyncStatus::Error || before.reason != status.reason);
        if !new_drift && !new_error {
            return None;
        }
        let action = if new_drift {
            "gitops.drift"
        } else {
            "gitops.error"
        };
        let changes = json!({
            "repo_url": state.settings.repo_url,
            "reason": status.reason,
            "message": status.message,
            "drift": status.drift,
        });
        Some(crate::audit::AuditRecord {
            at: self.clock.now(),
            actor: "operator:gitops-reconciler".to_owned(),
            source: Source::Gitops,
            action: action.to_owned(),
            org_id: Some(state.settings.org_id),
            target: format!("org:{}", state.settings.org_slug),
            changes,
        })
    }
}

/// How an attempt ended, which decides whether its status is saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// Its status is saved, when it differs from the stored one.
    Attempted,
    /// It applied: the apply's transaction stored the status.
    Applied,
    /// Another reconciler holds the lease, or changed the sync state since
    /// this attempt read it: this attempt's status is stale, and not saved.
    Yielded,
}

/// One attempt's steps, each answering the status to store and how it ended.
struct Attempt<'a> {
    reconciler: &'a Reconciler,
    now: DateTime<Utc>,
    /// An explicit sync: the remote is asked for its head afresh.
    fresh: bool,
}

impl Attempt<'_> {
    async fn run(&self, state: &GitopsState) -> (GitopsStatus, Ended) {
        let mut status = state.status.clone();
        status.last_attempt_at = Some(self.now);
        let source = &self.reconciler.source;
        let head = match self.fresh {
            true => source.fresh_head(&state.settings).await,
            false => source.head(&state.settings).await,
        };
        let head = match head {
            Ok(head) => head,
            Err(err) => {
                return (
                    self.failed(status, "fetch_failed", &err.to_string()),
                    Ended::Attempted,
                );
            }
        };
        status.last_fetched_commit = Some(head.clone());
        if state.status.last_applied_commit.as_deref() == Some(head.as_str()) {
            return self.check_drift(state, status, &head).await;
        }
        self.apply_new_commit(state, status).await
    }

    /// The commit is already applied: compare the store with the file last applied.
    async fn check_drift(
        &self,
        state: &GitopsState,
        mut status: GitopsStatus,
        head: &str,
    ) -> (GitopsStatus, Ended) {
        let Some(inventory) = &state.inventory else {
            return self.apply_new_commit(state, status).await;
        };
        let org = state.settings.org_id;
        if self.reconciler.is_clean(org) && state.status.drift.is_empty() {
            return (self.synced(state, status, head), Ended::Attempted);
        }
        let drift = match self.plan(state, &inventory.manifest, false).await {
            Ok(plan) => plan,
            Err(err) => {
                return (
                    self.failed(status, "store_failed", &err.to_string()),
                    Ended::Attempted,
                );
            }
        };
        if drift.is_empty() {
            self.reconciler.mark(org, true);
            return (self.synced(state, status, head), Ended::Attempted);
        }
        self.reconciler.mark(org, false);
        if state.settings.drift == DriftPolicy::Heal && !state.settings.suspended {
            return self
                .apply(
                    state,
                    status,
                    &inventory.manifest,
                    head,
                    &drift,
                    "gitops.heal",
                )
                .await;
        }
        if drift.changes != state.status.drift {
            status.drift_count += 1;
        }
        status.status = if state.settings.suspended {
            SyncStatus::Suspended
        } else {
            SyncStatus::OutOfSync
        };
        status.reason = "drift".to_owned();
        status.message = drift_message(&drift.changes);
        status.drift = drift.changes;
        status.consecutive_failures = 0;
        status.next_retry_at = None;
        (status, Ended::Attempted)
    }

    async fn apply_new_commit(
        &self,
        state: &GitopsState,
        mut status: GitopsStatus,
    ) -> (GitopsStatus, Ended) {
        let settings = &state.settings;
        let file = match self.reconciler.source.fetch(settings).await {
            Ok(file) => file,
            Err(err) => {
                return (
                    self.failed(status, "fetch_failed", &err.to_string()),
                    Ended::Attempted,
                );
            }
        };
        status.last_fetched_commit = Some(file.commit.clone());
        status.last_attempted_commit = Some(file.commit.clone());
        let manifest = match manifest::parse_bytes(&file.content, Some(&settings.org_slug)) {
            Ok(manifest) => manifest,
            Err(errors) => {
                let message = format!("{}: {}", settings.path, errors.one_line());
                return (
                    self.failed(status, "invalid_file", &message),
                    Ended::Attempted,
                );
            }
        };
        let plan = match self.plan(state, &manifest, true).await {
            Ok(plan) => plan,
            Err(err) => {
                return (
                    self.failed(status, "store_failed", &err.to_string()),
                    Ended::Attempted,
                );
            }
        };
        if let Some(refused) = &plan.refused {
            return (
                self.failed(status, "guard_refused", &refused.to_string()),
                Ended::Attempted,
            );
        }
        if settings.suspended {
            status.status = SyncStatus::Suspended;
            status.reason = "suspended".to_owned();
            status.message = format!(
                "suspended: {} change(s) from {} wait to be applied",
                plan.changes.len(),
                short_commit(&file.commit)
            );
            return (status, Ended::Attempted);
        }
        self.apply(
            state,
            status,
            &manifest,
            &file.commit,
            &plan,
            "gitops.apply",
        )
        .await
    }

    async fn apply(
        &self,
        state: &GitopsState,
        status: GitopsStatus,
        manifest: &Manifest,
        commit: &str,
        plan: &Plan,
        action: &'static str,
    ) -> (GitopsStatus, Ended) {
        let reconciler = self.reconciler;
        let org = state.settings.org_id;
        let holder = reconciler.config.holder.as_str();
        let ttl = chrono::Duration::from_std(reconciler.config.lease_ttl)
            .unwrap_or(chrono::Duration::seconds(60));
        match reconciler
            .store
            .gitops_try_lease(org, holder, self.now, self.now + ttl)
            .await
        {
            Ok(true) => {}
            // Another reconciler is applying: its status is the one to keep.
            Ok(false) => return (state.status.clone(), Ended::Yielded),
            Err(err) => {
                return (
                    self.failed(status, "store_failed", &err.to_string()),
                    Ended::Attempted,
                );
            }
        }
        // The plan was made from the sync state this attempt read before the
        // lease. Another reconciler may have applied and given the lease back
        // since; applying this plan too would apply the commit twice.
        match reconciler.store.gitops_state(org).await {
            Ok(Some(current)) if current == *state => {}
            Ok(current) => {
                self.give_back_lease(org, holder).await;
                let current = current.map_or_else(|| state.status.clone(), |c| c.status);
                return (current, Ended::Yielded);
            }
            Err(err) => {
                self.give_back_lease(org, holder).await;
                return (
                    self.failed(status, "store_failed", &err.to_string()),
                    Ended::Attempted,
                );
            }
        }
        let mut with_attempt = state.clone();
        with_attempt.status = status.clone();
        let planned = PlannedApply {
            action,
            manifest,
            commit,
            plan,
            holder,
        };
        let result = reconciler
            .admin
            .gitops_apply_plan(&with_attempt, planned)
            .await;
        self.give_back_lease(org, holder).await;
        match result {
            Ok(applied) => (applied, Ended::Applied),
            Err(err) => (
                self.failed(status, "apply_failed", &err.to_string()),
                Ended::Attempted,
            ),
        }
    }

    async fn give_back_lease(&self, org: OrgId, holder: &str) {
        if let Err(err) = self
            .reconciler
            .store
            .gitops_release_lease(org, holder)
            .await
        {
            tracing::warn!(error = %err, "could not give back a gitops lease; it expires by itself");
        }
    }

    async fn plan(&self, state: &GitopsState, manifest: &Manifest, guards: bool) -> Result<Plan> {
        let org = self
            .reconciler
            .store
            .org_by_slug(&state.settings.org_slug)
            .await?
            .ok_or_else(|| Error::not_found("organization", &state.settings.org_slug))?;
        self.reconciler
            .admin
            .plan_for(&org, state, manifest, guards)
            .await
    }

    fn synced(&self, state: &GitopsState, mut status: GitopsStatus, head: &str) -> GitopsStatus {
        status.status = if state.settings.suspended {
            SyncStatus::Suspended
        } else {
            SyncStatus::Synced
        };
        status.reason = if state.settings.suspended {
            "suspended".to_owned()
        } else {
            "synced".to_owned()
        };
        status.message = format!("{} is applied", short_commit(head));
        status.drift = Vec::new();
        status.consecutive_failures = 0;
        status.next_retry_at = None;
        if status.status == SyncStatus::Synced && state.status.status != SyncStatus::Synced {
            status.last_success_at = Some(self.now);
        }
        status
    }

    fn failed(&self, mut status: GitopsStatus, reason: &str, message: &str) -> GitopsStatus {
        status.status = SyncStatus::Error;
        status.reason = reason.to_owned();
        status.message = bounded(message);
        status.consecutive_failures = status.consecutive_failures.saturating_add(1);
        let backoff = backoff(self.reconciler.config.interval, status.consecutive_failures);
        status.next_retry_at = chrono::Duration::from_std(backoff)
            .ok()
            .map(|b| self.now + b);
        tracing::warn!(reason, message, "gitops attempt failed");
        status
    }
}

/// How stale `last_attempt_at` may get before an unchanged status is saved again.
const ATTEMPT_TIME_REFRESH: chrono::Duration = chrono::Duration::minutes(5);

/// Whether a status differs from the stored one enough to write it: any
/// field but the attempt time, or an attempt time gone stale. Unchanged
/// organizations thus cost no write per cycle.
fn worth_saving(before: &GitopsStatus, after: &GitopsStatus) -> bool {
    let mut same_time = after.clone();
    same_time.last_attempt_at = before.last_attempt_at;
    if same_time != *before {
        return true;
    }
    match (before.last_attempt_at, after.last_attempt_at) {
        (Some(then), Some(now)) => now - then >= ATTEMPT_TIME_REFRESH,
        _ => true,
    }
}

/// The longest status message stored; a file with thousands of errors is
/// summarised, not copied into the status and the audit log.
const MAX_MESSAGE_CHARS: usize = 2_000;

/// `message`, cut at [`MAX_MESSAGE_CHARS`] characters with a note saying so.
fn bounded(message: &str) -> String {
    let total = message.chars().count();
    if total <= MAX_MESSAGE_CHARS {
        return message.to_owned();
    }
    let kept: String = message.chars().take(MAX_MESSAGE_CHARS).collect();
    format!(
        "{kept} … ({} more characters; `gitops validate` lists every error)",
        total - MAX_MESSAGE_CHARS
    )
}

/// The wait before the next attempt after `failures` failures in a row.
fn backoff(interval: Duration, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    interval
        .saturating_mul(1u32 << doublings)
        .min(MAX_BACKOFF.max(interval))
}

fn drift_message(changes: &[FieldChange]) -> String {
    let first = changes.first().map(ToString::to_string).unwrap_or_default();
    match changes.len() {
        1 => format!("drift: {first}"),
        n => format!("drift in {n} fields, first: {first}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_ten_minutes() {
        let interval = Duration::from_secs(30);
        assert_eq!(backoff(interval, 1), Duration::from_secs(30));
        assert_eq!(backoff(interval, 2), Duration::from_secs(60));
        assert_eq!(backoff(interval, 3), Duration::from_secs(120));
        assert_eq!(backoff(interval, 30), MAX_BACKOFF);
    }
}
