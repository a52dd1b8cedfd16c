//! Who is calling: the ias key in `Authorization: Bearer`, its user and role.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use ias_core::audit::Actor;
use ias_core::{Admin, DenyReason, User};

use crate::error::ApiError;
use crate::state::AdminApi;

/// The header with which a system admin forces a write to a Git-owned field.
pub const BREAK_GLASS_HEADER: &str = "ias-break-glass";

/// The authenticated caller: its user, and admin operations in its name.
///
/// The key is checked against the governor's cache (unknown, expired,
/// revoked: 401); the user is then read from the store, so a role changed
/// a moment ago applies to the next call. Every operation checks the
/// user's role and organization through ias-core's RBAC.
pub struct Caller {
    /// The key's user, as stored now.
    pub user: User,
    /// Admin operations performed as this user (source `api`).
    pub admin: Admin,
}

impl FromRequestParts<AdminApi> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &AdminApi) -> Result<Self, ApiError> {
        let key = bearer(&parts.headers)?;
        let principal = match api.governor().key_principal(key).await? {
            Ok(principal) => principal,
            Err(reason) => return Err(ApiError::unauthenticated(reason)),
        };
        let user = api
            .store()
            .user_by_id(principal.user_id)
            .await?
            .ok_or_else(|| ApiError::unauthenticated(DenyReason::InvalidKey))?;
        if user.removed_at.is_some() {
            return Err(ApiError::unauthenticated(DenyReason::RevokedKey));
        }
        let break_glass = break_glass(&parts.headers)?;
        let admin = api.admin(Actor::user(&user), break_glass);
        Ok(Caller { user, admin })
    }
}

/// The key of `Authorization: Bearer <key>`, read as the inference Layer reads it.
fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    if !headers.contains_key(AUTHORIZATION) {
        return Err(ApiError::missing_key());
    }
    ias_tower::bearer_key(headers).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing_api_key",
            "the `Authorization` header must be `Bearer <key>`",
        )
    })
}

/// Whether `Ias-Break-Glass: true` asks to force a write to a Git-owned field.
fn break_glass(headers: &HeaderMap) -> Result<bool, ApiError> {
    let Some(value) = headers.get(BREAK_GLASS_HEADER) else {
        return Ok(false);
    };
    match value.to_str().map(str::trim) {
        Ok("true") => Ok(true),
        Ok("false") => Ok(false),
        Ok(other) => Err(ApiError::invalid(
            "Ias-Break-Glass",
            other,
            "expected `true` or `false`",
        )),
        Err(_) => Err(ApiError::invalid(
            "Ias-Break-Glass",
            "(not text)",
            "expected `true` or `false`",
        )),
    }
}
