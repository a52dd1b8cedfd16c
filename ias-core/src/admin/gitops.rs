//! GitOps operations of [`Admin`]: enable, disable, suspend, status, plan, drift, apply.

use std::collections::BTreeMap;

use serde_json::json;

use super::{Admin, org_label};
use crate::audit::AuditRecord;
use crate::domain::{ManagedBy, OrgId, Organization};
use crate::error::{Error, Result};
use crate::gitops::plan::{self, FieldChange, Plan};
use crate::gitops::reconcile::Reconciler;
use crate::gitops::state::short_commit;
use crate::gitops::{
    GitopsApply, GitopsSettings, GitopsState, GitopsStatus, Inventory, Manifest, NewGitopsSettings,
    SyncStatus,
};
use crate::page::{Page, PageRequest};
use crate::period::MonthlyPeriod;
use crate::rbac::{Permission, Target};
use crate::validate;

impl Admin {
    /// Enables GitOps for an organization, or changes its settings.
    ///
    /// From then on the organization's budget, rate limits, allowed models
    /// and users are owned by its file: writes to them through the API are
    /// refused with a conflict that names the repository.
    pub async fn gitops_enable(
        &self,
        org_slug: &str,
        new: NewGitopsSettings,
    ) -> Result<GitopsState> {
        self.gitops_enable_checked(org_slug, new, |_| Ok(())).await
    }

    /// Enables GitOps like [`Admin::gitops_enable`], and runs `check` on the
    /// settings once the actor's permission is established: the rules of a
    /// transport or of a server (the repositories it accepts), which a caller
    /// without the permission is refused before it learns them.
    pub async fn gitops_enable_checked(
        &self,
        org_slug: &str,
        new: NewGitopsSettings,
        check: impl FnOnce(&NewGitopsSettings) -> Result<()>,
    ) -> Result<GitopsState> {
        let org = self.find_org(org_slug).await?;
        let settings = settings_for(&org, new.clone())?;
        let changes = json!({
            "repo_url": settings.repo_url,
            "git_ref": settings.git_ref,
            "path": settings.path,
            "prune": settings.prune,
            "drift": settings.drift.as_str(),
            "max_removal_percent": settings.max_removal_percent,
            "allow_empty": settings.allow_empty,
            "credentials": settings.credentials.as_deref().map(credential_kind),
        });
        let record = self.record("gitops.enable", Some(org.id), org_label(&org), changes);
        self.require(Permission::GitopsManage, Target::org(org.id), &record)
            .await?;
        let to_host = reaches_host(&settings);
        self.require_global_if_host(org.id, to_host, &record)
            .await?;
        check(&new)?;
        let at = self.clock.now();
        let enabled = self.store.gitops_enable(&settings, at, &record).await;
        self.applied(&record, enabled).await
    }

    /// Disables GitOps for an organization: its fields are API-managed again.
    ///
    /// Returns `false` when it was not enabled.
    pub async fn gitops_disable(&self, org_slug: &str) -> Result<bool> {
        let org = self.find_org(org_slug).await?;
        let changes = json!({ "enabled": { "before": true, "after": false } });
        let record = self.record("gitops.disable", Some(org.id), org_label(&org), changes);
        self.require(Permission::GitopsManage, Target::org(org.id), &record)
            .await?;
        self.require_global_if_host(org.id, false, &record).await?;
        let disabled = self.store.gitops_disable(org.id, &record).await;
        self.applied(&record, disabled).await
    }

    /// Requires the global `gitops.manage` (a system admin's) when the
    /// organization's settings reach the host (`file://`, credentials), now
    /// or, with `to_host`, after the change: only a system admin may point
    /// ias at host paths and secrets, or away from them.
    async fn require_global_if_host(
        &self,
        org: OrgId,
        to_host: bool,
        record: &AuditRecord,
    ) -> Result<()> {
        let from_host = self
            .store
            .gitops_state(org)
            .await?
            .is_some_and(|state| reaches_host(&state.settings));
        if to_host || from_host {
            self.require(Permission::GitopsManage, Target::global(), record)
                .await?;
        }
        Ok(())
    }

    /// Suspends (fetch and report only) or resumes an organization's sync.
    pub async fn gitops_suspend(&self, org_slug: &str, suspended: bool) -> Result<bool> {
        let org = self.find_org(org_slug).await?;
        let action = if suspended {
            "gitops.suspend"
        } else {
            "gitops.resume"
        };
        let changes = json!({ "suspended": { "before": !suspended, "after": suspended } });
        let record = self.record(action, Some(org.id), org_label(&org), changes);
        self.require(Permission::GitopsManage, Target::org(org.id), &record)
            .await?;
        let result = self
            .store
            .gitops_set_suspended(org.id, suspended, &record)
            .await;
        self.applied(&record, result).await
    }

    /// Reconciles an organization now through `reconciler`, whatever its
    /// back-off, and returns its state after the attempt.
    ///
    /// Needs `gitops.manage`, like enable and suspend; the apply itself is
    /// audited as coming from the reconciler (source `gitops`).
    pub async fn gitops_sync(
        &self,
        org_slug: &str,
        reconciler: &Reconciler,
    ) -> Result<GitopsState> {
        let org = self.find_org(org_slug).await?;
        let attempt = self.attempt("gitops.sync", Some(org.id), org_label(&org));
        self.require(Permission::GitopsManage, Target::org(org.id), &attempt)
            .await?;
        self.enabled_state(&org).await?;
        reconciler.sync_org(org.id).await
    }

    /// An organization's GitOps settings, status and inventory.
    pub async fn gitops_status(&self, org_slug: &str) -> Result<GitopsState> {
        let org = self.find_org(org_slug).await?;
        let attempt = self.attempt("gitops.read", Some(org.id), org_label(&org));
        self.require(Permission::OrgRead, Target::org(org.id), &attempt)
            .await?;
        self.enabled_state(&org).await
    }

    /// A page of the GitOps states of the organizations the actor may read,
    /// by organization id; the others are left out, so a page may hold fewer
    /// than `page.limit`.
    pub async fn gitops_statuses(&self, page: &PageRequest) -> Result<Page<GitopsState>> {
        let fetch = page.fetch()?;
        let after = page.after_id()?.map(OrgId);
        let grants = self.grants().await?;
        let states = self.store.gitops_states(after, fetch).await?;
        let states = Page::from_rows(states, page.limit, |state| {
            state.settings.org_id.to_string()
        });
        Ok(states.retain(|state| {
            crate::rbac::is_permitted(
                &self.actor,
                &grants,
                Permission::OrgRead,
                Target::org(state.settings.org_id),
            )
        }))
    }

    /// What applying `manifest` to the organization would change.
    pub async fn gitops_plan(&self, org_slug: &str, manifest: &Manifest) -> Result<Plan> {
        let org = self.find_org(org_slug).await?;
        let attempt = self.attempt("gitops.plan", Some(org.id), org_label(&org));
        self.require(Permission::OrgRead, Target::org(org.id), &attempt)
            .await?;
        let state = self.enabled_state(&org).await?;
        self.plan_for(&org, &state, manifest, true).await
    }

    /// Out-of-band changes to Git-owned fields since the last apply.
    ///
    /// Empty before the first apply: there is nothing to drift from yet.
    pub async fn gitops_drift(&self, org_slug: &str) -> Result<Vec<FieldChange>> {
        let org = self.find_org(org_slug).await?;
        let attempt = self.attempt("gitops.drift", Some(org.id), org_label(&org));
        self.require(Permission::OrgRead, Target::org(org.id), &attempt)
            .await?;
        let state = self.enabled_state(&org).await?;
        match &state.inventory {
            Some(inventory) => {
                let manifest = inventory.manifest.clone();
                Ok(self.plan_for(&org, &state, &manifest, false).await?.changes)
            }
            None => Ok(Vec::new()),
        }
    }

    /// Applies `plan` (made from `manifest` at `commit`) under the reconcile
    /// lease of `holder`, in one store transaction, and returns the new status.
    ///
    /// `action` is `gitops.apply` for a new commit, `gitops.heal` when drift is reverted.
    pub(crate) async fn gitops_apply_plan(
        &self,
        state: &GitopsState,
        apply: PlannedApply<'_>,
    ) -> Result<GitopsStatus> {
        let org_id = state.settings.org_id;
        let label = format!("org:{}", state.settings.org_slug);
        let guard = self.record(apply.action, Some(org_id), label, json!({}));
        self.require(Permission::GitopsManage, Target::org(org_id), &guard)
            .await?;
        let now = self.clock.now();
        let mut status = state.status.clone();
        status.status = SyncStatus::Synced;
        status.reason = "synced".to_owned();
        status.message = format!(
            "applied {} change(s) from {}",
            apply.plan.changes.len(),
            short_commit(apply.commit)
        );
        status.last_attempted_commit = Some(apply.commit.to_owned());
        status.last_applied_commit = Some(apply.commit.to_owned());
        status.last_attempt_at = Some(now);
        status.last_success_at = Some(now);
        status.consecutive_failures = 0;
        status.next_retry_at = None;
        status.drift = Vec::new();
        let write = GitopsApply {
            org_id,
            ops: apply.plan.ops.clone(),
            audit: self.apply_records(state, &apply),
            inventory: Inventory {
                commit: apply.commit.to_owned(),
                manifest: apply.manifest.clone(),
                added_users: apply.plan.added_users.clone(),
            },
            status: status.clone(),
            at: now,
            holder: apply.holder.to_owned(),
        };
        let first = write.audit.first().cloned().unwrap_or(guard);
        let result = self.store.gitops_apply(&write).await;
        self.applied(&first, result).await?;
        Ok(status)
    }

    /// One audit record per target (the organization, each user), source `gitops`.
    fn apply_records(&self, state: &GitopsState, apply: &PlannedApply<'_>) -> Vec<AuditRecord> {
        let org_id = state.settings.org_id;
        let mut by_target: BTreeMap<String, Vec<&FieldChange>> = BTreeMap::new();
        for change in &apply.plan.changes {
            let target = if change.target.starts_with("model:") {
                format!("org:{}", state.settings.org_slug)
            } else {
                change.target.clone()
            };
            by_target.entry(target).or_default().push(change);
        }
        by_target
            .into_iter()
            .map(|(target, changes)| {
                let changes = json!({
                    "commit": apply.commit,
                    "repo_url": state.settings.repo_url,
                    "changes": changes,
                });
                self.record(apply.action, Some(org_id), target, changes)
            })
            .collect()
    }

    /// The state of an organization where GitOps is enabled.
    pub(crate) async fn enabled_state(&self, org: &Organization) -> Result<GitopsState> {
        self.store
            .gitops_state(org.id)
            .await?
            .ok_or_else(|| Error::not_found("gitops settings of organization", &org.slug))
    }

    pub(crate) async fn plan_for(
        &self,
        org: &Organization,
        state: &GitopsState,
        manifest: &Manifest,
        guards: bool,
    ) -> Result<Plan> {
        let period = MonthlyPeriod::containing(self.clock.now(), org.timezone);
        let view = self.store.gitops_view(org.id, &period.key).await?;
        Ok(plan::plan(
            manifest,
            &view,
            state.inventory.as_ref(),
            &state.settings,
            guards,
        ))
    }

    /// Refuses a write to a Git-owned field of `org`, unless break-glass applies.
    ///
    /// With break-glass (a system admin's forced write), the write goes
    /// ahead and the organization's sync state records it as drift.
    pub(crate) async fn ensure_not_git_owned(
        &self,
        org_id: OrgId,
        managed_by: ManagedBy,
        entity: &'static str,
        key: &str,
    ) -> Result<Option<GitopsState>> {
        if managed_by != ManagedBy::Gitops || self.source == crate::audit::Source::Gitops {
            return Ok(None);
        }
        let Some(state) = self.store.gitops_state(org_id).await? else {
            return Ok(None);
        };
        if self.break_glass && self.is_system_admin().await? {
            return Ok(Some(state));
        }
        Err(Error::GitopsOwned {
            entity,
            key: key.to_owned(),
            repo_url: state.settings.repo_url,
            commit: state.status.last_applied_commit,
        })
    }

    /// Records a forced write as drift in the organization's sync state.
    pub(crate) async fn note_break_glass(&self, state: Option<GitopsState>, what: &str) {
        let Some(state) = state else { return };
        let mut status = state.status;
        status.status = SyncStatus::OutOfSync;
        status.reason = "break_glass".to_owned();
        status.message = format!("{what} was changed with break-glass by {}", self.actor);
        status.drift_count += 1;
        let org_id = state.settings.org_id;
        if let Err(err) = self.store.gitops_save_status(org_id, &status, None).await {
            tracing::warn!(error = %err, "could not record a break-glass change as drift");
        }
    }

    async fn is_system_admin(&self) -> Result<bool> {
        let grants = self.grants().await?;
        Ok(crate::rbac::is_permitted(
            &self.actor,
            &grants,
            Permission::GitopsManage,
            Target::global(),
        ))
    }
}

/// Marks the audit record of a forced (break-glass) write with the repository and commit it overrode.
pub(super) fn mark_break_glass(record: &mut AuditRecord, forced: Option<&GitopsState>) {
    let Some(state) = forced else { return };
    if let serde_json::Value::Object(changes) = &mut record.changes {
        changes.insert(
            "break_glass".to_owned(),
            json!({
                "repo_url": state.settings.repo_url,
                "applied_commit": state.status.last_applied_commit,
            }),
        );
    }
}

/// A plan ready to apply, with where it came from.
pub(crate) struct PlannedApply<'a> {
    /// `gitops.apply` or `gitops.heal`.
    pub action: &'static str,
    /// The file applied.
    pub manifest: &'a Manifest,
    /// Its commit.
    pub commit: &'a str,
    /// The plan.
    pub plan: &'a Plan,
    /// The reconcile lease's holder.
    pub holder: &'a str,
}

/// Whether the settings reach into the host: a credentials setting (an
/// environment variable or a file of the server) or a `file://` repository.
fn reaches_host(settings: &GitopsSettings) -> bool {
    settings.credentials.is_some()
        || !settings.repo_url.contains("://") && !settings.repo_url.contains('@')
        || settings.repo_url.to_ascii_lowercase().starts_with("file:")
}

/// Refuses a repository URL that could carry a secret or fool a reader:
/// control characters, backslashes, a query or fragment, a password, or any
/// user name on http(s). The Git transport checks the rest.
fn check_repo_url(url: &str) -> Result<()> {
    let shown = crate::url::without_secrets(url);
    let refuse = |reason: &str| Err(Error::invalid("repo", &shown, reason));
    if url.is_empty() {
        return refuse("must not be empty");
    }
    if url.chars().any(|c| c.is_control() || c == '\\') {
        return refuse("must not hold control characters or backslashes");
    }
    if url.contains('?') || url.contains('#') {
        return refuse(
            "must not hold a query or a fragment; name credentials with `--credentials`",
        );
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        let authority = rest.split('/').next().unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            let http = scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https");
            if http || userinfo.contains(':') || userinfo.contains('%') {
                return refuse("must not carry credentials; name them with `--credentials`");
            }
        }
    }
    Ok(())
}

/// Refuses control characters in a setting printed back to people.
fn printable_setting(field: &'static str, value: &str) -> Result<()> {
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(
            field,
            crate::error::printable(value),
            "must not hold control characters",
        ));
    }
    Ok(())
}

fn settings_for(org: &Organization, new: NewGitopsSettings) -> Result<GitopsSettings> {
    check_repo_url(&new.repo_url)?;
    printable_setting("ref", &new.git_ref)?;
    printable_setting("path", &new.path)?;
    if let Some(credentials) = &new.credentials {
        printable_setting("credentials", credentials)?;
    }
    if new.max_removal_percent > 100 {
        return Err(Error::invalid(
            "max_removal",
            format!("{}%", new.max_removal_percent),
            "expected a percentage from 0% to 100%",
        ));
    }
    let git_ref = new.git_ref.trim();
    if git_ref.is_empty() {
        return Err(Error::invalid("ref", &new.git_ref, "must not be empty"));
    }
    let path = new.path.trim();
    if path.is_empty() || path.starts_with('/') || path.split('/').any(|p| p == "..") {
        return Err(Error::invalid(
            "path",
            &new.path,
            "expected a relative path inside the repository",
        ));
    }
    Ok(GitopsSettings {
        org_id: org.id,
        org_slug: validate::slug(&org.slug)?,
        repo_url: new.repo_url,
        git_ref: git_ref.to_owned(),
        path: path.to_owned(),
        credentials: new.credentials,
        prune: new.prune,
        drift: new.drift,
        max_removal_percent: new.max_removal_percent,
        allow_empty: new.allow_empty,
        suspended: false,
    })
}

/// The kind of a credentials reference (`env`, `token-file`, …), for the audit log.
fn credential_kind(reference: &str) -> &str {
    reference.split(':').next().unwrap_or(reference)
}
