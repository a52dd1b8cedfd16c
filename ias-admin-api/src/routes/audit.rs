//! The append-only audit log: list and verify.

use axum::Json;
use chrono::{DateTime, Utc};
use ias_core::{AuditEntry, AuditFilter, AuditHead, AuditVerification, Page};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::Query;
use crate::routes::page_request;

/// Which entries, newest first.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only this organization's entries, by slug (default: every organization's,
    /// which needs a global audit permission).
    pub org: Option<String>,
    /// Only this action, such as `key.create` or `key.create.denied`.
    #[param(example = "key.create")]
    pub action: Option<String>,
    /// Only entries at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Entries per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// The `next_after` of the previous page: older entries follow.
    pub after: Option<String>,
}

/// An entry reported by an earlier verification, which must still be there.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct VerifyQuery {
    /// The anchor entry's id (with `anchor_hash`).
    pub anchor_id: Option<i64>,
    /// The anchor entry's hash (with `anchor_id`).
    pub anchor_hash: Option<String>,
}

/// A page of audit entries, newest first.
#[utoipa::path(get, path = "/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, description = "a page of entries", body = Page<AuditEntry>)))]
pub async fn list(
    caller: Caller,
    Query(query): Query<AuditQuery>,
) -> Result<Json<Page<AuditEntry>>, ApiError> {
    let filter = AuditFilter {
        since: query.since,
        action: query.action,
    };
    let page = page_request(query.limit, query.after);
    let entries = caller
        .admin
        .audit_log(query.org.as_deref(), &filter, &page)
        .await?;
    Ok(Json(entries))
}

/// Walks the whole hash chain and names the first entry changed or removed.
///
/// A broken chain is a 200 answer with `broken` set, not an error.
#[utoipa::path(get, path = "/audit/verify", tag = "audit", params(VerifyQuery),
    responses((status = 200, description = "the verification", body = AuditVerification)))]
pub async fn verify(
    caller: Caller,
    Query(query): Query<VerifyQuery>,
) -> Result<Json<AuditVerification>, ApiError> {
    let anchor = match (query.anchor_id, query.anchor_hash) {
        (None, None) => None,
        (Some(id), Some(hash)) => Some(AuditHead { id, hash }),
        (Some(id), None) => {
            return Err(ApiError::invalid(
                "anchor_hash",
                "(missing)",
                &format!("is needed with anchor_id `{id}`"),
            ));
        }
        (None, Some(_)) => {
            return Err(ApiError::invalid(
                "anchor_id",
                "(missing)",
                "is needed with anchor_hash",
            ));
        }
    };
    Ok(Json(caller.admin.verify_audit(anchor).await?))
}
