//! GitOps: an organization declared in a file in a Git repository.
//!
//! The same calls as `ias-admin gitops`, with the same actors and
//! permissions: `enable`, `disable`, `suspend`, `resume` and `sync` need
//! `gitops.manage`; `status`, `plan` and `drift` need `org.read`. Files are
//! fetched through `ias_gitops::GitManifestSource`, caching repositories in
//! `IAS_GITOPS_CACHE_DIR` (else the user's cache directory).

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ias_core::gitops::reconcile::{ManifestSource, Reconciler, ReconcilerConfig};
use ias_core::gitops::{DriftPolicy, NewGitopsSettings, manifest};
use ias_core::{Admin, Error, Result};
use ias_gitops::GitManifestSource;
use pyo3::prelude::*;

use crate::audit::json_to_py;
use crate::governor::Governor;
use crate::page::{self, Paged};
use crate::runtime::{awaitable, block_on};

/// Where an organization's file lives and how it is applied.
#[pyclass(frozen, module = "ias")]
#[derive(Clone)]
pub struct GitopsSettings {
    /// The organization's slug, which the file's `org` must name.
    #[pyo3(get)]
    org: String,
    /// The repository URL (never with credentials).
    #[pyo3(get)]
    repo: String,
    /// A branch, a tag or a full 40-hex commit id.
    #[pyo3(get, name = "ref")]
    git_ref: String,
    /// The file's path in the repository.
    #[pyo3(get)]
    path: String,
    /// Where credentials come from (`env:NAME`, `token-file:PATH`, …); never a secret.
    #[pyo3(get)]
    credentials: Option<String>,
    /// Whether users Git added and the file no longer lists lose their membership.
    #[pyo3(get)]
    prune: bool,
    /// `report` or `heal`.
    #[pyo3(get)]
    drift: &'static str,
    /// The largest share of users, in percent, one apply may remove.
    #[pyo3(get)]
    max_removal: u8,
    /// Whether an apply may leave the organization with no user or no org admin.
    #[pyo3(get)]
    allow_empty: bool,
    /// Fetched and reported on, never applied.
    #[pyo3(get)]
    suspended: bool,
}

impl From<&ias_core::gitops::GitopsSettings> for GitopsSettings {
    fn from(s: &ias_core::gitops::GitopsSettings) -> Self {
        GitopsSettings {
            org: s.org_slug.clone(),
            repo: s.repo_url.clone(),
            git_ref: s.git_ref.clone(),
            path: s.path.clone(),
            credentials: s.credentials.clone(),
            prune: s.prune,
            drift: s.drift.as_str(),
            max_removal: s.max_removal_percent,
            allow_empty: s.allow_empty,
            suspended: s.suspended,
        }
    }
}

#[pymethods]
impl GitopsSettings {
    fn __repr__(&self) -> String {
        format!(
            "GitopsSettings(org={:?}, repo={:?}, ref={:?}, path={:?})",
            self.org, self.repo, self.git_ref, self.path
        )
    }
}

/// One field-level difference between a file and the store.
#[pyclass(frozen, module = "ias")]
pub struct FieldChange {
    change: ias_core::gitops::FieldChange,
}

#[pymethods]
impl FieldChange {
    /// `add`, `change` or `remove`.
    #[getter]
    fn op(&self) -> &'static str {
        match self.change.op {
            ias_core::gitops::ChangeOp::Add => "add",
            ias_core::gitops::ChangeOp::Change => "change",
            ias_core::gitops::ChangeOp::Remove => "remove",
        }
    }

    /// `org:SLUG`, `user:EMAIL` or `model:PATTERN`.
    #[getter]
    fn target(&self) -> &str {
        &self.change.target
    }

    /// The field, such as `budget.monthly_tokens`, `role` or `membership`.
    #[getter]
    fn field(&self) -> &str {
        &self.change.field
    }

    /// The value the store holds (`None` when absent).
    #[getter]
    fn before<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_to_py(py, &self.change.before)
    }

    /// The declared value (`None` when removed).
    #[getter]
    fn after<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_to_py(py, &self.change.after)
    }

    fn __str__(&self) -> String {
        self.change.to_string()
    }

    fn __repr__(&self) -> String {
        format!("FieldChange({:?})", self.change.to_string())
    }
}

fn changes(changes: Vec<ias_core::gitops::FieldChange>) -> Vec<FieldChange> {
    changes
        .into_iter()
        .map(|change| FieldChange { change })
        .collect()
}

/// An organization's GitOps settings and where it stands against its repository.
#[pyclass(frozen, module = "ias")]
pub struct GitopsState {
    state: Box<ias_core::gitops::GitopsState>,
}

impl From<ias_core::gitops::GitopsState> for GitopsState {
    fn from(state: ias_core::gitops::GitopsState) -> Self {
        GitopsState {
            state: Box::new(state),
        }
    }
}

#[pymethods]
impl GitopsState {
    /// The organization's slug.
    #[getter]
    fn org(&self) -> &str {
        &self.state.settings.org_slug
    }

    /// Where the file lives and how it is applied.
    #[getter]
    fn settings(&self) -> GitopsSettings {
        GitopsSettings::from(&self.state.settings)
    }

    /// `synced`, `out_of_sync`, `error` or `suspended`.
    #[getter]
    fn status(&self) -> &'static str {
        self.state.status.status.as_str()
    }

    /// Whether the store holds the file at the remote head, with no drift.
    #[getter]
    fn synced(&self) -> bool {
        self.state.status.status == ias_core::gitops::SyncStatus::Synced
    }

    /// A stable reason, such as `never_synced`, `fetch_failed` or `invalid_file`.
    #[getter]
    fn reason(&self) -> &str {
        &self.state.status.reason
    }

    /// One line for people.
    #[getter]
    fn message(&self) -> &str {
        &self.state.status.message
    }

    /// The commit the ref pointed at when last fetched.
    #[getter]
    fn last_fetched_commit(&self) -> Option<&str> {
        self.state.status.last_fetched_commit.as_deref()
    }

    /// The commit of the last attempt.
    #[getter]
    fn last_attempted_commit(&self) -> Option<&str> {
        self.state.status.last_attempted_commit.as_deref()
    }

    /// The commit whose file the store holds.
    #[getter]
    fn last_applied_commit(&self) -> Option<&str> {
        self.state.status.last_applied_commit.as_deref()
    }

    /// When the organization was last looked at.
    #[getter]
    fn last_attempt_at(&self) -> Option<DateTime<Utc>> {
        self.state.status.last_attempt_at
    }

    /// When an attempt last ended synced.
    #[getter]
    fn last_success_at(&self) -> Option<DateTime<Utc>> {
        self.state.status.last_success_at
    }

    /// Failed attempts in a row.
    #[getter]
    fn consecutive_failures(&self) -> u32 {
        self.state.status.consecutive_failures
    }

    /// Before this, a failing organization is not tried again by the reconciler.
    #[getter]
    fn next_retry_at(&self) -> Option<DateTime<Utc>> {
        self.state.status.next_retry_at
    }

    /// How many times new drift was found.
    #[getter]
    fn drift_count(&self) -> u64 {
        self.state.status.drift_count
    }

    /// The drift found at the last check, field by field.
    #[getter]
    fn drift(&self) -> Vec<FieldChange> {
        changes(self.state.status.drift.clone())
    }

    /// The users whose membership Git created (only these may be pruned).
    #[getter]
    fn added_users(&self) -> Vec<String> {
        self.state
            .inventory
            .as_ref()
            .map(|i| i.added_users.clone())
            .unwrap_or_default()
    }

    /// What Git applied last (`commit`, `manifest`, `added_users`); `None` before the first apply.
    #[getter]
    fn inventory<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let value = serde_json::to_value(&self.state.inventory)
            .map_err(|err| crate::errors::host(format!("cannot convert the inventory: {err}")))?;
        json_to_py(py, &value)
    }

    /// When GitOps was enabled.
    #[getter]
    fn enabled_at(&self) -> DateTime<Utc> {
        self.state.enabled_at
    }

    fn __repr__(&self) -> String {
        let applied = self
            .state
            .status
            .last_applied_commit
            .as_deref()
            .map(ias_core::gitops::state::short_commit);
        format!(
            "GitopsState(org={:?}, status={:?}, reason={:?}, applied={})",
            self.state.settings.org_slug,
            self.state.status.status.as_str(),
            self.state.status.reason,
            py_optional(applied)
        )
    }
}

/// A user (or the organization) a lowered limit would block at once.
#[pyclass(frozen, get_all, module = "ias")]
#[derive(Clone)]
pub struct BlockedUser {
    /// `user:EMAIL`, or `org:SLUG` when the budget is lowered below its use.
    target: String,
    /// Tokens used this period.
    used: i64,
    /// The new limit.
    limit: i64,
}

#[pymethods]
impl BlockedUser {
    fn __repr__(&self) -> String {
        format!(
            "BlockedUser(target={:?}, used={}, limit={})",
            self.target, self.used, self.limit
        )
    }
}

/// What applying a file would change.
#[pyclass(frozen, module = "ias")]
pub struct GitopsPlan {
    org: String,
    commit: Option<String>,
    plan: ias_core::gitops::Plan,
}

#[pymethods]
impl GitopsPlan {
    /// The organization's slug.
    #[getter]
    fn org(&self) -> &str {
        &self.org
    }

    /// The commit the file was read from; `None` for a local file.
    #[getter]
    fn commit(&self) -> Option<&str> {
        self.commit.as_deref()
    }

    /// Every field-level change.
    #[getter]
    fn changes(&self) -> Vec<FieldChange> {
        changes(self.plan.changes.clone())
    }

    /// Whether the plan changes anything.
    #[getter]
    fn has_changes(&self) -> bool {
        !self.plan.is_empty()
    }

    /// Members absent from the file that stay (Git did not add them, or prune is off).
    #[getter]
    fn kept(&self) -> Vec<String> {
        self.plan.kept.clone()
    }

    /// Who a lowered limit would block at once.
    #[getter]
    fn blocked(&self) -> Vec<BlockedUser> {
        self.plan
            .blocked
            .iter()
            .map(|b| BlockedUser {
                target: b.target.clone(),
                used: b.used,
                limit: b.limit,
            })
            .collect()
    }

    /// Why a guard refuses the plan, if one does.
    #[getter]
    fn refused(&self) -> Option<String> {
        self.plan.refused.as_ref().map(ToString::to_string)
    }

    fn __repr__(&self) -> String {
        format!(
            "GitopsPlan(org={:?}, commit={}, changes={}, refused={})",
            self.org,
            py_optional(self.commit.as_deref()),
            self.plan.changes.len(),
            if self.plan.refused.is_some() {
                "True"
            } else {
                "False"
            }
        )
    }
}

/// An optional string as Python shows it: quoted, or `None`.
fn py_optional(value: Option<&str>) -> String {
    value.map_or_else(|| "None".to_owned(), |v| format!("{v:?}"))
}

/// One state, or a page of the states the actor may read (`gitops_status` without an org).
#[derive(IntoPyObject)]
pub enum States {
    /// One organization's state.
    One(GitopsState),
    /// A page of organizations' states.
    All(Paged<GitopsState>),
}

/// A source of files over Git, new for each call so that it never answers a stale head.
fn git_source() -> Result<Arc<dyn ManifestSource>> {
    let source = GitManifestSource::new(GitManifestSource::default_cache_dir())?;
    Ok(Arc::new(source))
}

/// The settings `gitops_enable` was given, checked as the transport will read them.
struct EnableArgs {
    repo: String,
    git_ref: String,
    path: String,
    credentials: Option<String>,
    prune: bool,
    drift: String,
    max_removal: i64,
    allow_empty: bool,
}

impl EnableArgs {
    fn settings(self) -> Result<NewGitopsSettings> {
        let max_removal = u8::try_from(self.max_removal)
            .ok()
            .filter(|percent| *percent <= 100)
            .ok_or_else(|| {
                Error::invalid(
                    "max_removal",
                    self.max_removal.to_string(),
                    "expected a percentage from 0 to 100",
                )
            })?;
        let settings = NewGitopsSettings {
            repo_url: self.repo,
            git_ref: self.git_ref,
            path: self.path,
            credentials: self.credentials,
            prune: self.prune,
            drift: self.drift.parse::<DriftPolicy>()?,
            max_removal_percent: max_removal,
            allow_empty: self.allow_empty,
        };
        ias_gitops::check_settings(&settings)?;
        Ok(settings)
    }
}

async fn gitops_enable(admin: Admin, org: String, args: EnableArgs) -> Result<GitopsState> {
    let settings = args.settings()?;
    Ok(admin.gitops_enable(&org, settings).await?.into())
}

async fn gitops_disable(admin: Admin, org: String) -> Result<bool> {
    admin.gitops_disable(&org).await
}

async fn gitops_suspend(admin: Admin, org: String, suspended: bool) -> Result<bool> {
    admin.gitops_suspend(&org, suspended).await
}

async fn gitops_status(
    admin: Admin,
    org: Option<String>,
    limit: i64,
    after: Option<String>,
) -> Result<States> {
    let page = page::request(limit, after)?;
    Ok(match org {
        Some(org) => States::One(admin.gitops_status(&org).await?.into()),
        None => States::All(Paged::of(
            admin.gitops_statuses(&page).await?,
            GitopsState::from,
        )),
    })
}

async fn gitops_drift(admin: Admin, org: String) -> Result<Vec<FieldChange>> {
    Ok(changes(admin.gitops_drift(&org).await?))
}

/// Plans the organization's file at its ref, or a local file.
async fn gitops_plan(admin: Admin, org: String, file: Option<PathBuf>) -> Result<GitopsPlan> {
    let state = admin.gitops_status(&org).await?;
    let (bytes, commit) = match file {
        Some(path) => (read_file(path).await?, None),
        None => {
            let fetched = git_source()?.fetch(&state.settings).await?;
            (fetched.content, Some(fetched.commit))
        }
    };
    let org = state.settings.org_slug;
    let manifest = manifest::parse_bytes(&bytes, Some(&org))?;
    let plan = admin.gitops_plan(&org, &manifest).await?;
    Ok(GitopsPlan { org, commit, plan })
}

/// Reads a local GitOps file, refusing one larger than a file may be.
async fn read_file(path: PathBuf) -> Result<Vec<u8>> {
    let shown = path.display().to_string();
    let read = tokio::task::spawn_blocking(move || {
        let limit = manifest::MAX_FILE_BYTES as u64;
        let size = std::fs::metadata(&path)?.len();
        if size > limit {
            return Ok(Err(size));
        }
        std::fs::read(&path).map(Ok)
    })
    .await
    .map_err(|err| Error::invalid("file", &shown, format!("cannot be read: {err}")))?;
    match read {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(size)) => Err(Error::invalid(
            "file",
            &shown,
            format!(
                "{size} bytes, more than the {} a GitOps file may have",
                manifest::MAX_FILE_BYTES
            ),
        )),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            Err(Error::not_found("file", shown))
        }
        Err(err) => Err(Error::invalid(
            "file",
            &shown,
            format!("cannot be read: {err}"),
        )),
    }
}

/// Runs one reconcile of `org` now, applying through `governor` so that it
/// sees the result at once.
async fn gitops_sync(
    admin: Admin,
    store: Arc<dyn ias_core::Store>,
    governor: ias_core::Governor,
    org: String,
) -> Result<GitopsState> {
    let reconciler =
        Reconciler::new(store, git_source()?, ReconcilerConfig::default()).with_governor(governor);
    Ok(admin.gitops_sync(&org, &reconciler).await?.into())
}

#[pymethods]
impl Governor {
    /// Declares an organization in a file in a Git repository, or changes its settings.
    ///
    /// From then on its budget, rate limits, allowed models and users follow
    /// the file, and writes to them through other calls are refused with a
    /// `ConflictError` (unless break-glass).
    // Literal defaults, so that Python's signature shows them; they are the
    // core's `DEFAULT_REF`, `DEFAULT_PATH` and `DriftPolicy::default()`. The
    // signature is spelt out because pyo3 shows a raw identifier's default
    // (`r#ref`) as `...`.
    #[pyo3(
        signature = (
            org, repo, r#ref = "main", path = "ias.yaml", credentials = None, prune = false,
            drift = "report", max_removal = 25, allow_empty = false
        ),
        text_signature = "(self, /, org, repo, ref='main', path='ias.yaml', credentials=None, \
                          prune=False, drift='report', max_removal=25, allow_empty=False)"
    )]
    #[expect(clippy::too_many_arguments, reason = "Python keyword arguments")]
    fn gitops_enable(
        &self,
        py: Python<'_>,
        org: String,
        repo: String,
        r#ref: &str,
        path: &str,
        credentials: Option<String>,
        prune: bool,
        drift: &str,
        max_removal: i64,
        allow_empty: bool,
    ) -> PyResult<GitopsState> {
        let args = EnableArgs {
            repo,
            git_ref: r#ref.to_owned(),
            path: path.to_owned(),
            credentials,
            prune,
            drift: drift.to_owned(),
            max_removal,
            allow_empty,
        };
        block_on(py, gitops_enable(self.admin()?, org, args))
    }

    /// `gitops_enable` as an awaitable.
    // Literal defaults, so that Python's signature shows them; they are the
    // core's `DEFAULT_REF`, `DEFAULT_PATH` and `DriftPolicy::default()`. The
    // signature is spelt out because pyo3 shows a raw identifier's default
    // (`r#ref`) as `...`.
    #[pyo3(
        signature = (
            org, repo, r#ref = "main", path = "ias.yaml", credentials = None, prune = false,
            drift = "report", max_removal = 25, allow_empty = false
        ),
        text_signature = "(self, /, org, repo, ref='main', path='ias.yaml', credentials=None, \
                          prune=False, drift='report', max_removal=25, allow_empty=False)"
    )]
    #[expect(clippy::too_many_arguments, reason = "Python keyword arguments")]
    fn gitops_enable_async<'py>(
        &self,
        py: Python<'py>,
        org: String,
        repo: String,
        r#ref: &str,
        path: &str,
        credentials: Option<String>,
        prune: bool,
        drift: &str,
        max_removal: i64,
        allow_empty: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let args = EnableArgs {
            repo,
            git_ref: r#ref.to_owned(),
            path: path.to_owned(),
            credentials,
            prune,
            drift: drift.to_owned(),
            max_removal,
            allow_empty,
        };
        awaitable(py, gitops_enable(self.admin()?, org, args))
    }

    /// Stops GitOps for an organization; returns `False` when it was not enabled.
    fn gitops_disable(&self, py: Python<'_>, org: String) -> PyResult<bool> {
        block_on(py, gitops_disable(self.admin()?, org))
    }

    /// `gitops_disable` as an awaitable.
    fn gitops_disable_async<'py>(
        &self,
        py: Python<'py>,
        org: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, gitops_disable(self.admin()?, org))
    }

    /// Keeps fetching and reporting on an organization, but applies nothing.
    ///
    /// Returns `False` when it was already suspended.
    fn gitops_suspend(&self, py: Python<'_>, org: String) -> PyResult<bool> {
        block_on(py, gitops_suspend(self.admin()?, org, true))
    }

    /// `gitops_suspend` as an awaitable.
    fn gitops_suspend_async<'py>(
        &self,
        py: Python<'py>,
        org: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, gitops_suspend(self.admin()?, org, true))
    }

    /// Applies again after `gitops_suspend`; returns `False` when it was not suspended.
    fn gitops_resume(&self, py: Python<'_>, org: String) -> PyResult<bool> {
        block_on(py, gitops_suspend(self.admin()?, org, false))
    }

    /// `gitops_resume` as an awaitable.
    fn gitops_resume_async<'py>(
        &self,
        py: Python<'py>,
        org: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, gitops_suspend(self.admin()?, org, false))
    }

    /// One organization's GitOps state, or a page of every one the actor may
    /// read, by organization id.
    #[pyo3(signature = (org = None, *, limit = 100, after = None))]
    fn gitops_status(
        &self,
        py: Python<'_>,
        org: Option<String>,
        limit: i64,
        after: Option<String>,
    ) -> PyResult<States> {
        block_on(py, gitops_status(self.admin()?, org, limit, after))
    }

    /// `gitops_status` as an awaitable.
    #[pyo3(signature = (org = None, *, limit = 100, after = None))]
    fn gitops_status_async<'py>(
        &self,
        py: Python<'py>,
        org: Option<String>,
        limit: i64,
        after: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, gitops_status(self.admin()?, org, limit, after))
    }

    /// What the file at the ref (or the local `file`) would change; writes nothing.
    #[pyo3(signature = (org, file = None))]
    fn gitops_plan(
        &self,
        py: Python<'_>,
        org: String,
        file: Option<PathBuf>,
    ) -> PyResult<GitopsPlan> {
        block_on(py, gitops_plan(self.admin()?, org, file))
    }

    /// `gitops_plan` as an awaitable.
    #[pyo3(signature = (org, file = None))]
    fn gitops_plan_async<'py>(
        &self,
        py: Python<'py>,
        org: String,
        file: Option<PathBuf>,
    ) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, gitops_plan(self.admin()?, org, file))
    }

    /// Out-of-band changes to Git-owned fields since the last apply.
    fn gitops_drift(&self, py: Python<'_>, org: String) -> PyResult<Vec<FieldChange>> {
        block_on(py, gitops_drift(self.admin()?, org))
    }

    /// `gitops_drift` as an awaitable.
    fn gitops_drift_async<'py>(&self, py: Python<'py>, org: String) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, gitops_drift(self.admin()?, org))
    }

    /// Reconciles an organization now, whatever its back-off, and returns its state.
    fn gitops_sync(&self, py: Python<'_>, org: String) -> PyResult<GitopsState> {
        let (store, governor) = self.store_and_governor()?;
        block_on(py, gitops_sync(self.admin()?, store, governor, org))
    }

    /// `gitops_sync` as an awaitable.
    fn gitops_sync_async<'py>(&self, py: Python<'py>, org: String) -> PyResult<Bound<'py, PyAny>> {
        let (store, governor) = self.store_and_governor()?;
        awaitable(py, gitops_sync(self.admin()?, store, governor, org))
    }
}
