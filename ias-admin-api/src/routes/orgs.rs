//! Organizations, and the caller itself.

use axum::Json;
use axum::http::StatusCode;
use ias_core::{Organization, Page, User};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{self, Path, Query};
use crate::routes::PageQuery;

/// A new organization.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOrg {
    /// Unique, URL-safe name such as `team-alpha`.
    #[schema(
        example = "team-alpha",
        pattern = "^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
    )]
    pub slug: String,
    /// Tokens the whole organization may spend per calendar month.
    #[schema(example = 10_000_000, minimum = 0, maximum = 1_000_000_000_000_000_i64)]
    pub monthly_token_budget: i64,
    /// The IANA time zone whose calendar months are the budget periods (default `UTC`).
    #[schema(example = "Europe/Paris")]
    pub timezone: Option<String>,
}

/// A change to an organization; absent fields stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrgPatch {
    /// Tokens the whole organization may spend per calendar month, from now on.
    #[schema(minimum = 0, maximum = 1_000_000_000_000_000_i64)]
    pub monthly_token_budget: Option<i64>,
    /// The IANA time zone whose calendar months are the budget periods.
    #[schema(example = "Europe/Paris")]
    pub timezone: Option<String>,
}

/// The caller's own user.
#[utoipa::path(get, path = "/me", tag = "organizations",
    responses((status = 200, description = "the user whose key was sent", body = User)))]
pub async fn me(caller: Caller) -> Json<User> {
    Json(caller.user)
}

/// A page of the organizations the caller may read, by id.
#[utoipa::path(get, path = "/orgs", tag = "organizations", params(PageQuery),
    responses((status = 200, description = "a page of organizations", body = Page<Organization>)))]
pub async fn list(
    caller: Caller,
    Query(page): Query<PageQuery>,
) -> Result<Json<Page<Organization>>, ApiError> {
    Ok(Json(caller.admin.list_orgs(&page.request()).await?))
}

/// Creates an organization (system admins).
#[utoipa::path(post, path = "/orgs", tag = "organizations", request_body = NewOrg,
    responses((status = 201, description = "the organization created", body = Organization)))]
pub async fn create(
    caller: Caller,
    extract::Json(new): extract::Json<NewOrg>,
) -> Result<(StatusCode, Json<Organization>), ApiError> {
    let timezone = new.timezone.as_deref().unwrap_or("UTC");
    let org = caller
        .admin
        .create_org(&new.slug, new.monthly_token_budget, timezone)
        .await?;
    Ok((StatusCode::CREATED, Json(org)))
}

/// One organization, by slug.
#[utoipa::path(get, path = "/orgs/{org}", tag = "organizations",
    params(("org" = String, Path, description = "the organization's slug", pattern = "^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")),
    responses((status = 200, description = "the organization", body = Organization)))]
pub async fn get(caller: Caller, Path(org): Path<String>) -> Result<Json<Organization>, ApiError> {
    Ok(Json(caller.admin.org(&org).await?))
}

/// Changes an organization's monthly budget or time zone (`org.update`: its
/// org admins and system admins); 409 `gitops_managed` in GitOps mode.
#[utoipa::path(patch, path = "/orgs/{org}", tag = "organizations", request_body = OrgPatch,
    params(("org" = String, Path, description = "the organization's slug", pattern = "^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")),
    responses((status = 200, description = "the organization as changed", body = Organization)))]
pub async fn update(
    caller: Caller,
    Path(org): Path<String>,
    extract::Json(patch): extract::Json<OrgPatch>,
) -> Result<Json<Organization>, ApiError> {
    let org = caller
        .admin
        .set_org_budget(&org, patch.monthly_token_budget, patch.timezone.as_deref())
        .await?;
    Ok(Json(org))
}
