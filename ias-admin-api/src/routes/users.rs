//! Users: create, read, their monthly limits, and password resets.

use axum::Json;
use axum::http::StatusCode;
use ias_core::{Page, Role, User, UserId};
use serde::{Deserialize, Deserializer};
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{self, Path, Query};
use crate::routes::PageQuery;

/// A new user of an organization.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// The user's email; unique across all organizations.
    #[schema(example = "ada@example.com")]
    pub email: String,
    /// `org_admin` or `member` (`system_admin` for system admins only).
    pub role: Role,
    /// The user's own monthly token limit; absent or `null`: only the org budget applies.
    #[schema(minimum = 0, maximum = 1_000_000_000_000_000_i64)]
    pub monthly_token_limit: Option<i64>,
}

/// A change to a user.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    /// The user's own monthly token limit; `null` removes it, so only the
    /// org budget applies. Required.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>, required = true, minimum = 0, maximum = 1_000_000_000_000_000_i64)]
    pub monthly_token_limit: Option<Option<i64>>,
}

/// A new password for a user.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordReset {
    /// The new password: 12 to 128 characters mixing three of lowercase,
    /// uppercase, digits and symbols; not the email's name, not a common password.
    #[schema(format = Password)]
    pub new_password: String,
}

/// A field that was sent, `null` included.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<i64>>, D::Error> {
    Option::<i64>::deserialize(d).map(Some)
}

/// A page of an organization's users, by id.
#[utoipa::path(get, path = "/orgs/{org}/users", tag = "users",
    params(("org" = String, Path, description = "the organization's slug", pattern = "^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"), PageQuery),
    responses((status = 200, description = "a page of users", body = Page<User>)))]
pub async fn list(
    caller: Caller,
    Path(org): Path<String>,
    Query(page): Query<PageQuery>,
) -> Result<Json<Page<User>>, ApiError> {
    Ok(Json(caller.admin.list_users(&org, &page.request()).await?))
}

/// Adds a user to an organization.
#[utoipa::path(post, path = "/orgs/{org}/users", tag = "users", request_body = NewUser,
    params(("org" = String, Path, description = "the organization's slug", pattern = "^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")),
    responses((status = 201, description = "the user created", body = User)))]
pub async fn create(
    caller: Caller,
    Path(org): Path<String>,
    extract::Json(new): extract::Json<NewUser>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    let user = caller
        .admin
        .create_user(&org, &new.email, new.role, new.monthly_token_limit)
        .await?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// One user, by id.
#[utoipa::path(get, path = "/users/{id}", tag = "users",
    params(("id" = i64, Path, description = "the user's id")),
    responses((status = 200, description = "the user", body = User)))]
pub async fn get(caller: Caller, Path(id): Path<i64>) -> Result<Json<User>, ApiError> {
    Ok(Json(caller.admin.user(UserId(id)).await?))
}

/// Sets or removes a user's own monthly token limit.
#[utoipa::path(patch, path = "/users/{id}", tag = "users", request_body = UserPatch,
    params(("id" = i64, Path, description = "the user's id")),
    responses((status = 200, description = "the user as changed", body = User)))]
pub async fn update(
    caller: Caller,
    Path(id): Path<i64>,
    extract::Json(patch): extract::Json<UserPatch>,
) -> Result<Json<User>, ApiError> {
    let Some(limit) = patch.monthly_token_limit else {
        return Err(ApiError::invalid(
            "monthly_token_limit",
            "(missing)",
            "is required: a whole number of tokens, or null to remove the limit",
        ));
    };
    Ok(Json(caller.admin.set_user_limit(UserId(id), limit).await?))
}

/// Sets a user's password (system admins only).
///
/// Only an argon2id hash is stored; the audit log records that the
/// password changed, never the password or its hash.
#[utoipa::path(post, path = "/users/{id}/reset-password", tag = "users",
    request_body = PasswordReset,
    params(("id" = i64, Path, description = "the user's id")),
    responses((status = 200, description = "the user whose password was set", body = User)))]
pub async fn reset_password(
    caller: Caller,
    Path(id): Path<i64>,
    extract::Json(reset): extract::Json<PasswordReset>,
) -> Result<Json<User>, ApiError> {
    let user = caller
        .admin
        .reset_password(UserId(id), &reset.new_password)
        .await?;
    Ok(Json(user))
}
