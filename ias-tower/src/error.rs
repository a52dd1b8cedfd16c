//! Error answers in OpenAI's shape, so that OpenAI clients raise their usual exceptions.
//!
//! Every error body is
//! `{"error": {"message": "...", "type": "...", "param": null, "code": "..."}}`.
//! `code` is stable: a [`DenyReason::as_str`] for refusals, or one of the
//! codes listed on the constructors below.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode, header};
use ias_core::{Denied, DenyCategory, DenyReason};
use serde_json::{Value, json};

/// Tells OpenAI's clients whether retrying can help.
pub const SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");

/// An error answer: status, OpenAI error fields, and retry hints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    code: &'static str,
    message: String,
    param: Option<String>,
    retry_after: Option<i64>,
    should_retry: Option<bool>,
}

impl ApiError {
    /// An error with any status, OpenAI `type` (`kind`) and stable `code`.
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: String,
    ) -> Self {
        ApiError {
            status,
            kind,
            code,
            message,
            param: None,
            retry_after: None,
            should_retry: None,
        }
    }

    /// 400 `invalid_request_error` with `code`, naming the request field `param`.
    pub fn invalid_request(code: &'static str, message: String, param: Option<&str>) -> Self {
        let mut error = Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            code,
            message,
        );
        error.param = param.map(str::to_owned);
        error
    }

    /// The same error with another status, such as 413 for a body that is too large.
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// 401 `missing_api_key`: no usable `Authorization: Bearer` header.
    pub fn missing_key() -> Self {
        let message = "missing API key: send `Authorization: Bearer <ias key>`".to_owned();
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "missing_api_key",
            message,
        )
    }

    /// The answer to a key refused before the request was read (401).
    pub fn key_refused(reason: DenyReason) -> Self {
        let denied = Denied {
            reason,
            principal: None,
            model: String::new(),
            requested: 0,
            limit: None,
        };
        Self::denied(&denied)
    }

    /// The answer to a refused request.
    ///
    /// A 429 carries `Retry-After` when waiting can help: until the month
    /// resets, or until a per-minute window has room. A request that can
    /// never fit (larger than the limit itself) gets none.
    pub fn denied(denied: &Denied) -> Self {
        let reason = denied.reason;
        let (status, kind) = denial_status(reason);
        let mut error = Self::new(status, kind, reason.as_str(), denied.message());
        if reason == DenyReason::ModelNotAllowed {
            error.param = Some("model".to_owned());
        }
        if let Some(limit) = &denied.limit {
            error.retry_after = limit
                .retry_after_secs
                .map(|secs| i64::try_from(secs).unwrap_or(i64::MAX));
            // A per-minute limit clears soon: clients may retry after the wait.
            // A spent monthly budget does not clear until the period resets.
            error.should_retry =
                Some(reason == DenyReason::RateLimited && limit.retry_after_secs.is_some());
        }
        error
    }

    /// The answer when the governor could not decide: 400, 503 or 500.
    ///
    /// Bad input names its field; store failures get a generic message (the
    /// detail is for the operator's log, not for the caller).
    pub fn governor(err: &ias_core::Error) -> Self {
        if let ias_core::Error::InvalidInput { field, .. } = err {
            let param = (*field == "model").then_some("model");
            return Self::invalid_request("invalid_value", err.to_string(), param);
        }
        if err.is_retryable() {
            let message = "the governance store is unavailable; try again later".to_owned();
            return Self::unavailable("store_unavailable", message);
        }
        Self::internal("store_error")
    }

    /// 503 `server_error` with `code` and `Retry-After: 1`.
    pub fn unavailable(code: &'static str, message: String) -> Self {
        let mut error = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            code,
            message,
        );
        error.retry_after = Some(1);
        error
    }

    /// 500 `server_error` with `code`, for failures the caller cannot fix.
    pub fn internal(code: &'static str) -> Self {
        let message = "the gateway failed to handle the request".to_owned();
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            code,
            message,
        )
    }

    /// 502 `server_error` with `code` (`upstream_unreachable` or `upstream_error`).
    pub fn bad_gateway(code: &'static str, message: String) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "server_error", code, message)
    }

    /// 404 `not_found` for a path that is not served; `served` says what is.
    pub fn not_found(path: &str, served: &str) -> Self {
        let message = format!("no route for `{path}`; {served}");
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "not_found",
            message,
        )
    }

    /// 405 `method_not_allowed` for a served path called with another method.
    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        let message = format!("method `{method}` is not allowed on `{path}`");
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "method_not_allowed",
            message,
        )
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable error code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// Seconds the caller is told to wait, if any.
    pub fn retry_after(&self) -> Option<i64> {
        self.retry_after
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        })
    }

    /// The HTTP answer: status, JSON body, and `Retry-After` / `x-should-retry` when set.
    pub fn into_http<B: From<Bytes>>(self) -> http::Response<B> {
        let body = Bytes::from(self.body().to_string());
        let mut response = http::Response::new(B::from(body));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(retry) = self.should_retry {
            headers.insert(SHOULD_RETRY, HeaderValue::from_static(bool_str(retry)));
        }
        response
    }
}

fn denial_status(reason: DenyReason) -> (StatusCode, &'static str) {
    let category = reason.category();
    let status =
        StatusCode::from_u16(category.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let kind = match category {
        DenyCategory::Unauthenticated => "authentication_error",
        DenyCategory::Forbidden => "permission_error",
        DenyCategory::LimitExceeded if reason == DenyReason::RateLimited => "rate_limit_exceeded",
        DenyCategory::LimitExceeded => "insufficient_quota",
    };
    (status, kind)
}

fn bool_str(value: bool) -> &'static str {
    if value { "true" } else { "false" }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, TimeZone, Utc};
    use ias_core::{KeyId, LimitDetail, LimitKind, LimitScope, OrgId, Principal, UserId};

    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + seconds, 0).unwrap()
    }

    fn denied(reason: DenyReason, scope: Option<LimitScope>) -> Denied {
        let principal = Principal {
            org_id: OrgId(1),
            org_slug: "team-alpha".to_owned(),
            user_id: UserId(2),
            email: "bob@example.com".to_owned(),
            key_id: KeyId(3),
        };
        let limit = scope.map(|scope| LimitDetail {
            scope,
            kind: LimitKind::MonthlyTokens,
            limit: 100,
            used: 90,
            reserved: 0,
            period: Some("2023-11".to_owned()),
            resets_at: at(3_600),
            retry_after_secs: Some(3_600),
        });
        Denied {
            reason,
            principal: Some(principal),
            model: "gpt-4o".to_owned(),
            requested: 20,
            limit,
        }
    }

    fn http(error: ApiError) -> http::Response<Bytes> {
        error.into_http()
    }

    #[test]
    fn denials_map_to_openai_statuses_and_types() {
        let cases = [
            (DenyReason::InvalidKey, None, 401, "authentication_error"),
            (DenyReason::ExpiredKey, None, 401, "authentication_error"),
            (DenyReason::RevokedKey, None, 401, "authentication_error"),
            (DenyReason::ModelNotAllowed, None, 403, "permission_error"),
            (
                DenyReason::OrgBudgetExhausted,
                Some(LimitScope::Org),
                429,
                "insufficient_quota",
            ),
            (
                DenyReason::UserLimitExhausted,
                Some(LimitScope::User),
                429,
                "insufficient_quota",
            ),
            (
                DenyReason::RateLimited,
                Some(LimitScope::Key),
                429,
                "rate_limit_exceeded",
            ),
        ];
        for (reason, scope, status, kind) in cases {
            let error = ApiError::denied(&denied(reason, scope));
            assert_eq!(error.status().as_u16(), status, "{reason:?}");
            let body = error.body();
            assert_eq!(body["error"]["type"], kind, "{reason:?}");
            assert_eq!(body["error"]["code"], reason.as_str());
        }
    }

    #[test]
    fn the_body_has_every_openai_field() {
        let body = ApiError::denied(&denied(DenyReason::ModelNotAllowed, None)).body();
        let error = body["error"].as_object().unwrap();
        let mut fields: Vec<_> = error.keys().map(String::as_str).collect();
        fields.sort_unstable();
        assert_eq!(fields, ["code", "message", "param", "type"]);
        assert_eq!(error["param"], "model");
        assert!(error["message"].as_str().unwrap().contains("`gpt-4o`"));
        let missing = ApiError::missing_key().body();
        assert_eq!(missing["error"]["param"], Value::Null);
    }

    #[test]
    fn limits_say_when_to_retry_and_not_to_retry_now() {
        let error = ApiError::denied(&denied(
            DenyReason::OrgBudgetExhausted,
            Some(LimitScope::Org),
        ));
        assert_eq!(error.retry_after(), Some(3_600));
        let response = http(error);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3600");
        assert_eq!(response.headers()[SHOULD_RETRY], "false");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body: Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(body["error"]["code"], "org_budget_exhausted");
        let forbidden = ApiError::denied(&denied(DenyReason::ModelNotAllowed, None));
        assert!(!http(forbidden).headers().contains_key(header::RETRY_AFTER));
    }

    #[test]
    fn a_request_that_can_never_fit_gets_no_retry_after() {
        let mut never = denied(DenyReason::OrgBudgetExhausted, Some(LimitScope::Org));
        if let Some(limit) = never.limit.as_mut() {
            limit.retry_after_secs = None;
        }
        let response = http(ApiError::denied(&never));
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(!response.headers().contains_key(header::RETRY_AFTER));
        assert_eq!(response.headers()[SHOULD_RETRY], "false");
    }

    #[test]
    fn governor_errors_map_to_400_503_and_500() {
        let invalid = ias_core::Error::invalid("model", "gpt 4", "bad character");
        let error = ApiError::governor(&invalid);
        assert_eq!(
            (error.status(), error.code()),
            (StatusCode::BAD_REQUEST, "invalid_value")
        );
        assert_eq!(error.body()["error"]["param"], "model");

        let down = ias_core::Error::Unavailable {
            backend: "sqlite",
            message: "database is locked at /secret/path".to_owned(),
        };
        let error = ApiError::governor(&down);
        assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error.code(), "store_unavailable");
        assert_eq!(error.retry_after(), Some(1));
        assert!(!error.body().to_string().contains("/secret/path"));

        let broken = ias_core::Error::Store {
            backend: "sqlite",
            message: "disk image is malformed".to_owned(),
        };
        assert_eq!(
            ApiError::governor(&broken).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
