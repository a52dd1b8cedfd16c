//! API keys: created with their secret shown once, listed, revoked.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ias_core::admin::parse_lifetime;
use ias_core::{ApiKey, KeyId, Page, UserId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{self, Path, Query};
use crate::routes::PageQuery;

/// A new key.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// How long the key works, such as `90d`, `12h` or `30m` (at most 10
    /// years); absent or `null`: it never expires.
    #[schema(example = "90d")]
    pub expires_in: Option<String>,
}

/// A key just created, with its secret: the only time the secret is shown.
#[derive(Serialize, ToSchema)]
pub struct CreatedKey {
    /// The stored key.
    pub key: ApiKey,
    /// The secret, to send as `Authorization: Bearer <secret>`. ias keeps
    /// only its hash: store it now, it cannot be shown again.
    pub secret: String,
}

/// A page of a user's keys (never their secrets), newest first.
#[utoipa::path(get, path = "/users/{id}/keys", tag = "keys",
    params(("id" = i64, Path, description = "the user's id"), PageQuery),
    responses((status = 200, description = "a page of keys", body = Page<ApiKey>)))]
pub async fn list(
    caller: Caller,
    Path(id): Path<i64>,
    Query(page): Query<PageQuery>,
) -> Result<Json<Page<ApiKey>>, ApiError> {
    Ok(Json(
        caller.admin.list_keys(UserId(id), &page.request()).await?,
    ))
}

/// Creates a key for a user; the answer holds its secret, shown this once.
#[utoipa::path(post, path = "/users/{id}/keys", tag = "keys", request_body = NewKey,
    params(("id" = i64, Path, description = "the user's id")),
    responses((status = 201, description = "the key and its secret; `Cache-Control: no-store`",
        body = CreatedKey)))]
pub async fn create(
    caller: Caller,
    Path(id): Path<i64>,
    extract::Json(new): extract::Json<NewKey>,
) -> Result<Response, ApiError> {
    let lifetime = new.expires_in.as_deref().map(parse_lifetime).transpose()?;
    let created = caller.admin.create_key(UserId(id), lifetime).await?;
    let body = CreatedKey {
        key: created.key,
        secret: created.secret.expose().to_owned(),
    };
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    // The secret must not be kept by any cache between here and the caller.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Revokes a key: it is refused from then on.
#[utoipa::path(delete, path = "/keys/{id}", tag = "keys",
    params(("id" = i64, Path, description = "the key's id")),
    responses((status = 200, description = "the key as revoked", body = ApiKey)))]
pub async fn revoke(caller: Caller, Path(id): Path<i64>) -> Result<Json<ApiKey>, ApiError> {
    Ok(Json(caller.admin.revoke_key(KeyId(id)).await?))
}
