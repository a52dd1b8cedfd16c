//! `POST /v1/chat/completions`: authenticate, decide, forward, charge.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use ias_core::{Allowed, Decision, Reservation};
use tracing::{debug, error, warn};

use crate::app::AppState;
use crate::errors::ApiError;
use crate::request::ChatRequest;
use crate::upstream::{UpstreamError, UpstreamReply};

/// Handles one chat completion request.
///
/// The key is checked (by [`CallerKey`]) before the body is read, so a
/// caller without a usable key cannot make the gateway read and parse a
/// large body.
pub async fn chat_completions(
    State(state): State<AppState>,
    CallerKey(key): CallerKey,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match handle(state, &key, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

/// The caller's ias key, taken from `Authorization: Bearer` and known to the governor.
pub struct CallerKey(pub String);

impl FromRequestParts<AppState> for CallerKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let key = bearer_key(&parts.headers).ok_or_else(ApiError::missing_key)?;
        match state.governor.check_key(key).await {
            Ok(None) => Ok(CallerKey(key.to_owned())),
            Ok(Some(reason)) => Err(ApiError::key_refused(reason)),
            Err(err) => {
                log_governor_error(&err);
                Err(ApiError::governor(&err))
            }
        }
    }
}

async fn handle(
    state: AppState,
    key: &str,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(unreadable_body)?;
    let request = ChatRequest::parse(body)?;

    // Deciding, calling the upstream and charging run in their own task,
    // so a caller who hangs up midway does not leave a reservation open.
    let task = tokio::spawn(serve(state, key.to_owned(), request));
    task.await.map_err(|err| {
        error!(error = %err, "the request task failed");
        ApiError::internal("internal_error")
    })?
}

async fn serve(state: AppState, key: String, request: ChatRequest) -> Result<Response, ApiError> {
    let allowed = authorize(&state, &key, &request).await?;
    let Some(reservation) = allowed.reservation else {
        // INVARIANT: `Governor::authorize` reserves for every allowed request.
        error!("the governor allowed a request without reserving tokens");
        return Err(ApiError::internal("missing_reservation"));
    };
    forward(state, reservation, request).await
}

/// The key from `Authorization: Bearer <key>`, if the header has that shape.
pub fn bearer_key(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.trim().split_once(' ')?;
    let key = key.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !key.is_empty()).then_some(key)
}

fn unreadable_body(rejection: BytesRejection) -> ApiError {
    let message = format!(
        "the request body could not be read: {}",
        rejection.body_text()
    );
    ApiError::invalid_request("invalid_body", message, None).with_status(rejection.status())
}

async fn authorize(
    state: &AppState,
    key: &str,
    request: &ChatRequest,
) -> Result<Allowed, ApiError> {
    let decision = state
        .governor
        .authorize(key, &request.model, request.estimated_tokens())
        .await
        .map_err(|err| {
            log_governor_error(&err);
            ApiError::governor(&err)
        })?;
    match decision {
        Decision::Allowed(allowed) => Ok(allowed),
        Decision::Denied(denied) => {
            let key_id = denied.principal.as_ref().map(|p| p.key_id.0);
            debug!(reason = denied.reason.as_str(), key_id, "request denied");
            Err(ApiError::denied(&denied))
        }
    }
}

async fn forward(
    state: AppState,
    reservation: Reservation,
    request: ChatRequest,
) -> Result<Response, ApiError> {
    match state.upstream.chat(&request).await {
        Ok(reply) => {
            settle(&state, &reservation, &reply, request.estimated_tokens()).await;
            Ok(reply.into_response())
        }
        Err(err) => {
            release(&state, &reservation).await;
            Err(upstream_failure(&err))
        }
    }
}

/// Charges the upstream's real usage, or the estimate when it reports none.
///
/// A failure to charge is logged and does not take the answer from the
/// caller: the model has already done the work.
async fn settle(state: &AppState, reservation: &Reservation, reply: &UpstreamReply, estimate: i64) {
    let tokens = reply.total_tokens().unwrap_or_else(|| {
        warn!(
            reservation = reservation.id.0,
            estimate, "the upstream answer has no usage; charging the estimate"
        );
        estimate
    });
    // An absurd figure from the upstream is charged as the most ias accepts,
    // rather than refused and not charged at all.
    let tokens = tokens.min(ias_core::validate::MAX_TOKENS);
    for attempt in 1..=SETTLE_ATTEMPTS {
        match state.governor.settle(reservation, tokens).await {
            Ok(_) => return,
            // Safe to repeat: a settle that did commit removed the
            // reservation, so a repeat finds nothing and charges nothing.
            Err(err) if err.is_retryable() && attempt < SETTLE_ATTEMPTS => {
                warn!(reservation = reservation.id.0, attempt, error = %err, "retrying a charge");
                tokio::time::sleep(SETTLE_BACKOFF * attempt).await;
            }
            Err(err) => {
                error!(reservation = reservation.id.0, tokens, error = %err, "could not charge a request");
                return;
            }
        }
    }
}

/// How often a charge that failed for a passing reason is tried.
const SETTLE_ATTEMPTS: u32 = 4;

/// The wait before the second try; later tries wait longer.
const SETTLE_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

async fn release(state: &AppState, reservation: &Reservation) {
    if let Err(err) = state.governor.release(reservation).await {
        warn!(reservation = reservation.id.0, error = %err, "could not release a reservation");
    }
}

fn upstream_failure(err: &UpstreamError) -> ApiError {
    match err {
        UpstreamError::Unreachable(detail) => {
            warn!(error = %detail, "the upstream could not be reached");
            let message = "the upstream model service could not be reached".to_owned();
            ApiError::bad_gateway("upstream_unreachable", message)
        }
        UpstreamError::Status(status) => {
            warn!(
                status = status.as_u16(),
                "the upstream answered with an error"
            );
            let message = format!("the upstream model service answered {status}");
            ApiError::bad_gateway("upstream_error", message)
        }
    }
}

fn log_governor_error(err: &ias_core::Error) {
    if err.is_invalid_input() {
        debug!(error = %err, "request refused as invalid");
    } else if err.is_retryable() {
        warn!(error = %err, "the store is unavailable");
    } else {
        error!(error = %err, "the governor failed");
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn with_authorization(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn bearer_keys_are_read_from_the_header() {
        assert_eq!(
            bearer_key(&with_authorization("Bearer ias_abc")),
            Some("ias_abc")
        );
        assert_eq!(
            bearer_key(&with_authorization("bearer  ias_abc ")),
            Some("ias_abc")
        );
    }

    #[test]
    fn other_headers_carry_no_key() {
        assert_eq!(bearer_key(&HeaderMap::new()), None);
        assert_eq!(bearer_key(&with_authorization("Basic dXNlcjpwYXNz")), None);
        assert_eq!(bearer_key(&with_authorization("Bearer")), None);
        assert_eq!(bearer_key(&with_authorization("Bearer   ")), None);
        assert_eq!(bearer_key(&with_authorization("ias_abc")), None);
    }
}
