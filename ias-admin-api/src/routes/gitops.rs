//! GitOps per organization: enable, disable, suspend, sync, status, drift, plan.

use axum::Json;
use axum::extract::State;
use ias_core::gitops::manifest;
use ias_core::gitops::{DriftPolicy, FieldChange, GitopsState, NewGitopsSettings, Plan};
use ias_core::{Error, Page};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{self, Path, Query};
use crate::routes::PageQuery;
use crate::state::{AdminApi, body_field};

/// Where an organization's file lives and how it is applied; absent fields take their defaults.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnableGitops {
    /// The repository URL (`https://`, `ssh://`, `git@host:path` or `file://`); never with credentials.
    #[schema(example = "https://git.example.com/acme/ias-orgs.git")]
    pub repo_url: String,
    /// A branch, a tag or a full 40-hex commit id (default `main`).
    pub git_ref: Option<String>,
    /// The file's path inside the repository (default `ias.yaml`).
    pub path: Option<String>,
    /// Where the transport finds credentials (`env:NAME`, `token-file:PATH`, …;
    /// system admins only); never a secret itself.
    pub credentials: Option<String>,
    /// Whether users Git added and the file no longer lists lose their membership (default false).
    pub prune: Option<bool>,
    /// `report` (default) or `heal` out-of-band changes.
    pub drift: Option<DriftPolicy>,
    /// The largest share of users (percent) one apply may remove (default 25).
    #[schema(minimum = 0, maximum = 100)]
    pub max_removal_percent: Option<u8>,
    /// Whether an apply may leave the organization with no user or no org admin (default false).
    pub allow_empty: Option<bool>,
}

/// A file to plan instead of the one at the ref.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanRequest {
    /// The GitOps file's YAML text; absent or `null` (a body of `{}`): the file at
    /// the ref is fetched.
    pub manifest: Option<String>,
}

/// What applying a file would change.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanView {
    /// The organization's slug.
    pub org: String,
    /// The commit the file came from; `null` for a file sent in the request.
    pub commit: Option<String>,
    /// The changes, the operations that make them, and any guard that refuses them.
    pub plan: Plan,
}

/// Out-of-band changes to Git-owned fields since the last apply.
#[derive(Debug, Serialize, ToSchema)]
pub struct DriftView {
    /// The organization's slug.
    pub org: String,
    /// Each field that differs from what Git applied; empty when none.
    pub changes: Vec<FieldChange>,
}

/// Whether a switch changed anything.
#[derive(Debug, Serialize, ToSchema)]
pub struct Switched {
    /// `false` when it was already so.
    pub changed: bool,
}

/// A page of the GitOps states of the organizations the caller may read.
#[utoipa::path(get, path = "/gitops", tag = "gitops", params(PageQuery),
    responses((status = 200, description = "a page of states", body = Page<GitopsState>)))]
pub async fn list(
    caller: Caller,
    Query(page): Query<PageQuery>,
) -> Result<Json<Page<GitopsState>>, ApiError> {
    Ok(Json(caller.admin.gitops_statuses(&page.request()).await?))
}

/// An organization's GitOps settings, sync status and inventory.
#[utoipa::path(get, path = "/orgs/{org}/gitops", tag = "gitops",
    params(("org" = String, Path, description = "the organization's slug", pattern = "^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")),
    responses((status = 200, description = "the state", body = GitopsState)))]
pub async fn status(
    caller: Caller,
    Path(org): Path<String>,
) -> Result<Json<GitopsState>, ApiError> {
    Ok(Json(caller.admin.gitops_status(&org).await?))
}

/// Enables GitOps for an organization, or changes its settings.
///
/// From then on its budget, rate limits, allowed models and users follow
/// the file; writes to them here answer 409 `gitops_managed`.
#[utoipa::path(put, path = "/orgs/{org}/gitops", tag = "gitops", request_body = EnableGitops,
    params(("org" = String, Path, description = "the organization's slug", pattern = "^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")),
    responses((status = 200, description = "the state", body = GitopsState)))]
pub async fn enable(
    State(api): State<AdminApi>,
    caller: Caller,
    Path(org): Path<String>,
    extract::Json(body): extract::Json<EnableGitops>,
) -> Result<Json<GitopsState>, ApiError> {
    let reconciler = api
        .reconciler()
        .ok_or_else(|| ApiError::gitops_unavailable("enabling GitOps"))?;
    let defaults = NewGitopsSettings::new(body.repo_url);
    let settings = NewGitopsSettings {
        git_ref: body.git_ref.unwrap_or(defaults.git_ref.clone()),
        path: body.path.unwrap_or(defaults.path.clone()),
        credentials: body.credentials,
        prune: body.prune.unwrap_or(defaults.prune),
        drift: body.drift.unwrap_or(defaults.drift),
        max_removal_percent: body
            .max_removal_percent
            .unwrap_or(defaults.max_removal_percent),
        allow_empty: body.allow_empty.unwrap_or(defaults.allow_empty),
        ..defaults
    };
    let check = |settings: &NewGitopsSettings| api.check_settings(reconciler, settings);
    let state = caller
        .admin
        .gitops_enable_checked(&org, settings, check)
        .await
        .map_err(body_field)?;
    Ok(Json(state))
}

/// Disables GitOps for an organization: its fields are managed here again.
#[utoipa::path(delete, path = "/orgs/{org}/gitops", tag = "gitops",
    params(("org" = String, Path, description = "the organization's slug", pattern = "^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")),
    responses((status = 200, description = "`changed` is false when it was not enabled",
        body = Switched)))]
pub async fn disable(caller: Caller, Path(org): Path<String>) -> Result<Json<Switched>, ApiError> {
    let changed = caller.admin.gitops_disable(&org).await?;
    Ok(Json(Switched { changed }))
}

/// Suspends an organization's sync: fetched and reported on, never applied.
#[utoipa::path(post, path = "/orgs/{org}/gitops/suspend", tag = "gitops",
    params(("org" = String, Path, description = "the organization's slug", pattern = "^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")),
    responses((status = 200, description = "`changed` is false when it already was", body = Switched)))]
pub async fn suspend(caller: Caller, Path(org): Path<String>) -> Result<Json<Switched>, ApiError> {
    let changed = caller.admin.gitops_suspend(&org, true).await?;
    Ok(Json(Switched { changed }))
}

/// Resumes a suspended organization's sync.
#[utoipa::path(post, path = "/orgs/{org}/gitops/resume", tag = "gitops",
    params(("org" = String, Path, description = "the organization's slug", pattern = "^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")),
    responses((status = 200, description = "`changed` is false when it was not suspended",
        body = Switched)))]
pub async fn resume(caller: Caller, Path(org): Path<String>) -> Result<Json<Switched>, ApiError> {
    let changed = caller.admin.gitops_suspend(&org, false).await?;
    Ok(Json(Switched { changed }))
}

/// Reconciles an organization now, whatever its back-off, and returns its state after.
#[utoipa::path(post, path = "/orgs/{org}/gitops/sync", tag = "gitops",
    params(("org" = String, Path, description = "the organization's slug", pattern = "^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")),
    responses((status = 200, description = "the state after the attempt", body = GitopsState)))]
pub async fn sync(
    State(api): State<AdminApi>,
    caller: Caller,
    Path(org): Path<String>,
) -> Result<Json<GitopsState>, ApiError> {
    let reconciler = api
        .reconciler()
        .ok_or_else(|| ApiError::gitops_unavailable("a sync"))?;
    Ok(Json(caller.admin.gitops_sync(&org, reconciler).await?))
}

/// Out-of-band changes to Git-owned fields since the last apply.
#[utoipa::path(get, path = "/orgs/{org}/gitops/drift", tag = "gitops",
    params(("org" = String, Path, description = "the organization's slug", pattern = "^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")),
    responses((status = 200, description = "the drift", body = DriftView)))]
pub async fn drift(caller: Caller, Path(org): Path<String>) -> Result<Json<DriftView>, ApiError> {
    let changes = caller.admin.gitops_drift(&org).await?;
    Ok(Json(DriftView { org, changes }))
}

/// What applying the file at the ref (or the one sent) would change; changes nothing.
#[utoipa::path(post, path = "/orgs/{org}/gitops/plan", tag = "gitops",
    request_body(content = PlanRequest,
        description = "a file to plan; `{}` plans the file at the ref"),
    params(("org" = String, Path, description = "the organization's slug", pattern = "^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")),
    responses((status = 200, description = "the plan", body = PlanView)))]
pub async fn plan(
    State(api): State<AdminApi>,
    caller: Caller,
    Path(org): Path<String>,
    extract::Json(request): extract::Json<PlanRequest>,
) -> Result<Json<PlanView>, ApiError> {
    let state = caller.admin.gitops_status(&org).await?;
    let (text, commit) = match request.manifest {
        Some(text) => (text.into_bytes(), None),
        None => {
            let reconciler = api
                .reconciler()
                .ok_or_else(|| ApiError::gitops_unavailable("planning the file at the ref"))?;
            let file = reconciler.source().fetch(&state.settings).await?;
            (file.content, Some(file.commit))
        }
    };
    let manifest = manifest::parse_bytes(&text, Some(&state.settings.org_slug))
        .map_err(|errors| Error::InvalidManifest { errors })?;
    let plan = caller.admin.gitops_plan(&org, &manifest).await?;
    Ok(Json(PlanView {
        org: state.settings.org_slug,
        commit,
        plan,
    }))
}
