//! An organization's allowed models.

use axum::Json;
use ias_core::{ModelChange, Page};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{self, Path, Query};
use crate::routes::PageQuery;

/// A model name or pattern to allow.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AllowModel {
    /// A model name (`gpt-4o`), a provider pattern (`anthropic/*`) or `*` for every model.
    #[schema(example = "gpt-4o")]
    pub model: String,
}

/// A page of an organization's allowed model patterns, sorted.
#[utoipa::path(get, path = "/orgs/{org}/models", tag = "models",
    params(("org" = String, Path, description = "the organization's slug", pattern = "^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"), PageQuery),
    responses((status = 200, description = "a page of model patterns", body = Page<String>)))]
pub async fn list(
    caller: Caller,
    Path(org): Path<String>,
    Query(page): Query<PageQuery>,
) -> Result<Json<Page<String>>, ApiError> {
    Ok(Json(caller.admin.list_models(&org, &page.request()).await?))
}

/// Allows a model name or pattern; `changed` is false when it already was.
#[utoipa::path(post, path = "/orgs/{org}/models", tag = "models", request_body = AllowModel,
    params(("org" = String, Path, description = "the organization's slug", pattern = "^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")),
    responses((status = 200, description = "the pattern as stored", body = ModelChange)))]
pub async fn allow(
    caller: Caller,
    Path(org): Path<String>,
    extract::Json(body): extract::Json<AllowModel>,
) -> Result<Json<ModelChange>, ApiError> {
    Ok(Json(caller.admin.allow_model(&org, &body.model).await?))
}

/// Which pattern to remove.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DenyModel {
    /// The name or pattern, as listed (`gpt-4o`, `anthropic/*`); in the query,
    /// not the path, because a pattern may hold `/`.
    pub model: String,
}

/// Removes a model name or pattern from the allowed list.
#[utoipa::path(delete, path = "/orgs/{org}/models", tag = "models",
    params(
        ("org" = String, Path, description = "the organization's slug", pattern = "^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"),
        DenyModel,
    ),
    responses((status = 200, description = "the pattern; `changed` is false when it was not allowed",
        body = ModelChange)))]
pub async fn deny(
    caller: Caller,
    Path(org): Path<String>,
    Query(query): Query<DenyModel>,
) -> Result<Json<ModelChange>, ApiError> {
    Ok(Json(caller.admin.deny_model(&org, &query.model).await?))
}
