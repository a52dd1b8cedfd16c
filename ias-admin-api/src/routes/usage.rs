//! Usage by organization, user, model and day, and the burn-rate forecast.

use axum::Json;
use ias_core::usage::{DailyUsage, Forecast};
use ias_core::{Page, PageRequest, UsageReport, UserId, UserRef};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{Path, Query};
use crate::routes::page_request;

// `limit` and `after` are repeated here rather than flattened from `PageQuery`:
// under `#[serde(flatten)]` query values arrive as strings and numbers no longer parse.

/// Whose usage, and which page of the organization's users.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// Only this user of the organization, by id.
    pub user_id: Option<i64>,
    /// Users per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// The `next_after` of the previous page: a user id.
    pub after: Option<String>,
}

/// Whose daily usage, over which days, and which page.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DailyQuery {
    /// Only this user of the organization, by id.
    pub user_id: Option<i64>,
    /// The first local day, `YYYY-MM-DD` (default: the first of this month).
    #[param(example = "2026-12-01")]
    pub from: Option<String>,
    /// The last local day, `YYYY-MM-DD` (default: today).
    #[param(example = "2026-12-31")]
    pub to: Option<String>,
    /// Rows per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// The `next_after` of the previous page: `DAY/MODEL`.
    pub after: Option<String>,
}

/// Whose forecast.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ForecastQuery {
    /// This user's own monthly limit instead of the organization's budget, by id.
    pub user_id: Option<i64>,
}

fn user(id: Option<i64>) -> Option<UserRef> {
    id.map(|id| UserRef::Id(UserId(id)))
}

/// This month's usage of an organization (or one user): the budget, the
/// organization's counter, per model, and one page of its users.
#[utoipa::path(get, path = "/orgs/{org}/usage", tag = "usage",
    params(("org" = String, Path, description = "the organization's slug", pattern = "^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"), UsageQuery),
    responses((status = 200, description = "the month's usage", body = UsageReport)))]
pub async fn report(
    caller: Caller,
    Path(org): Path<String>,
    Query(query): Query<UsageQuery>,
) -> Result<Json<UsageReport>, ApiError> {
    let page = page_request(query.limit, query.after);
    let report = caller.admin.usage(&org, user(query.user_id), &page).await?;
    Ok(Json(report))
}

/// Usage per local day and model, by day then model.
#[utoipa::path(get, path = "/orgs/{org}/usage/daily", tag = "usage",
    params(("org" = String, Path, description = "the organization's slug", pattern = "^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"), DailyQuery),
    responses((status = 200, description = "a page of days and models", body = Page<DailyUsage>)))]
pub async fn daily(
    caller: Caller,
    Path(org): Path<String>,
    Query(query): Query<DailyQuery>,
) -> Result<Json<Page<DailyUsage>>, ApiError> {
    let page: PageRequest = page_request(query.limit, query.after);
    let days = caller
        .admin
        .daily_usage(
            &org,
            user(query.user_id),
            query.from.as_deref(),
            query.to.as_deref(),
            &page,
        )
        .await?;
    Ok(Json(days))
}

/// When the budget (or the user's own limit) runs out at the pace of the last 7 days.
#[utoipa::path(get, path = "/orgs/{org}/usage/forecast", tag = "usage",
    params(("org" = String, Path, description = "the organization's slug", pattern = "^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"), ForecastQuery),
    responses((status = 200, description = "the forecast", body = Forecast)))]
pub async fn forecast(
    caller: Caller,
    Path(org): Path<String>,
    Query(query): Query<ForecastQuery>,
) -> Result<Json<Forecast>, ApiError> {
    let forecast = caller
        .admin
        .usage_forecast(&org, user(query.user_id))
        .await?;
    Ok(Json(forecast))
}
