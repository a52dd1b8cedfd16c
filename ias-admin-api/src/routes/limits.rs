//! Requests- and tokens-per-minute limits of an organization, a user or a key.

use axum::Json;
use ias_core::{KeyId, LimitTarget, RateLimits, UserId};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{self, Path, Query};

/// Whose limits: the organization's, or one of its users' or keys'.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LimitQuery {
    /// A user of the organization, by id.
    pub user_id: Option<i64>,
    /// A key of one of the organization's users, by id.
    pub key_id: Option<i64>,
}

/// New rate limits: each replaces what was set; `null` or absent removes it.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLimits {
    /// Requests per minute, 1 to 1,000,000,000.
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    pub rpm: Option<i64>,
    /// Tokens per minute, 1 to 1,000,000,000.
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    pub tpm: Option<i64>,
}

/// The limits after a change.
#[derive(Debug, Serialize, ToSchema)]
pub struct LimitsChange {
    /// The limits now set.
    pub limits: RateLimits,
    /// Whether anything changed.
    pub changed: bool,
}

impl LimitQuery {
    fn target(&self) -> Result<LimitTarget, ApiError> {
        match (self.user_id, self.key_id) {
            (None, None) => Ok(LimitTarget::Org),
            (Some(user), None) => Ok(LimitTarget::User(UserId(user).into())),
            (None, Some(key)) => Ok(LimitTarget::Key(KeyId(key))),
            (Some(_), Some(key)) => Err(ApiError::invalid(
                "key_id",
                key.to_string(),
                "give `user_id` or `key_id`, not both",
            )),
        }
    }
}

/// The rate limits set on an organization, a user or a key.
#[utoipa::path(get, path = "/orgs/{org}/rate-limits", tag = "limits",
    params(("org" = String, Path, description = "the organization's slug", pattern = "^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"), LimitQuery),
    responses((status = 200, description = "the limits; `null`: no limit of that kind",
        body = RateLimits)))]
pub async fn get(
    caller: Caller,
    Path(org): Path<String>,
    Query(query): Query<LimitQuery>,
) -> Result<Json<RateLimits>, ApiError> {
    let target = query.target()?;
    Ok(Json(caller.admin.rate_limits(&org, target).await?))
}

/// Replaces the rate limits of an organization, a user or a key; `null` removes one.
#[utoipa::path(put, path = "/orgs/{org}/rate-limits", tag = "limits", request_body = NewLimits,
    params(("org" = String, Path, description = "the organization's slug", pattern = "^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"), LimitQuery),
    responses((status = 200, description = "the limits now set", body = LimitsChange)))]
pub async fn set(
    caller: Caller,
    Path(org): Path<String>,
    Query(query): Query<LimitQuery>,
    extract::Json(new): extract::Json<NewLimits>,
) -> Result<Json<LimitsChange>, ApiError> {
    let target = query.target()?;
    let limits = RateLimits {
        rpm: new.rpm,
        tpm: new.tpm,
    };
    let changed = caller.admin.set_rate_limits(&org, target, limits).await?;
    Ok(Json(LimitsChange { limits, changed }))
}
