//! Error answers: `{"error": {"code", "message", "details"?}}` with a stable code.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ias_core::error::printable;
use ias_core::{DenyReason, Error};
use serde::Serialize;
use serde_json::{Value, json};
use tracing::{error, warn};
use utoipa::ToSchema;

/// An error answer of the admin API.
///
/// Every error is JSON, `{"error": {"code", "message"}}`, with `details`
/// where there is more for a program to read. The code is stable: clients
/// branch on it, never on the message. Messages name the field and value
/// at fault and never hold a secret.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Option<Value>,
}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong, for programs (`code`, `details`) and people (`message`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable code, such as `not_found` or `gitops_managed`.
    pub code: String,
    /// One line for people; names the field and value at fault.
    pub message: String,
    /// More for programs: the field at fault, the rules a password breaks,
    /// the repository and commit that own a field, a file's problems.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }

    /// The same error with `details`.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// 400 `invalid_input` naming `field` and `value`.
    pub fn invalid(field: &'static str, value: impl AsRef<str>, reason: &str) -> Self {
        ApiError::from(Error::invalid(field, value, reason))
    }

    /// 401: no usable key in `Authorization: Bearer`.
    pub fn unauthenticated(reason: DenyReason) -> Self {
        let message = match reason {
            DenyReason::ExpiredKey => "the API key has expired",
            DenyReason::RevokedKey => "the API key was revoked",
            _ => "the API key is not valid",
        };
        ApiError::new(StatusCode::UNAUTHORIZED, reason.as_str(), message)
    }

    /// 401: no `Authorization: Bearer` header at all.
    pub fn missing_key() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing_api_key",
            "missing API key: send `Authorization: Bearer <ias key>`",
        )
    }

    /// 404 for a path the API does not serve.
    pub fn no_route(path: &str) -> Self {
        ApiError::invalid_route(StatusCode::NOT_FOUND, "not_found", path, "no such endpoint")
    }

    /// 405 for a method a path does not serve.
    pub fn wrong_method(method: &str, path: &str) -> Self {
        let reason = format!("does not accept `{}`", printable(method));
        ApiError::invalid_route(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            path,
            &reason,
        )
    }

    /// 501: GitOps needs a reconciler this server was started without.
    pub fn gitops_unavailable(what: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "gitops_unavailable",
            format!("{what} needs the GitOps reconciler, which this server does not run"),
        )
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    fn invalid_route(status: StatusCode, code: &'static str, path: &str, reason: &str) -> Self {
        ApiError::new(status, code, format!("`{}` {reason}", printable(path)))
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        let mut message = err.to_string();
        let (status, code, details) = match &err {
            Error::InvalidInput { field, .. } => (
                StatusCode::BAD_REQUEST,
                "invalid_input",
                Some(json!({ "field": field })),
            ),
            Error::InvalidManifest { errors } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_manifest",
                Some(json!({ "errors": errors })),
            ),
            Error::NotFound { entity, .. } => (
                StatusCode::NOT_FOUND,
                "not_found",
                Some(json!({ "entity": entity })),
            ),
            Error::Conflict { entity, .. } => (
                StatusCode::CONFLICT,
                "conflict",
                Some(json!({ "entity": entity })),
            ),
            Error::GitopsOwned {
                entity,
                repo_url,
                commit,
                ..
            } => (
                StatusCode::CONFLICT,
                "gitops_managed",
                Some(json!({ "entity": entity, "repo_url": repo_url, "commit": commit })),
            ),
            Error::PermissionDenied { permission, .. } => {
                // Not the target: it could name a user or key of another organization.
                message = format!("permission denied: your role may not `{permission}` here");
                (
                    StatusCode::FORBIDDEN,
                    "permission_denied",
                    Some(json!({ "permission": permission })),
                )
            }
            Error::WeakPassword { broken } => (
                StatusCode::BAD_REQUEST,
                "weak_password",
                Some(json!({ "broken": broken })),
            ),
            Error::Unavailable { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", None)
            }
            Error::Unsupported(_) => (StatusCode::NOT_IMPLEMENTED, "unsupported", None),
            Error::PasswordHashing { .. } => {
                (StatusCode::INTERNAL_SERVER_ERROR, "password_hashing", None)
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "store_error", None),
        };
        if status.is_server_error() {
            match status {
                StatusCode::SERVICE_UNAVAILABLE => {
                    warn!(error = %err, "admin API: store unavailable")
                }
                _ => error!(error = %err, "admin API: request failed"),
            }
        }
        ApiError {
            status,
            code,
            message,
            details,
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            _ => "invalid_body",
        };
        // Bodies are checked against the schema: a wrong shape is a 400 like any bad input.
        let status = match status {
            StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
            other => other,
        };
        ApiError::new(status, code, one_line(&rejection.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            one_line(&rejection.body_text()),
        )
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_path",
            one_line(&rejection.body_text()),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
                details: self.details,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        match self.status {
            StatusCode::UNAUTHORIZED => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

/// A rejection's text on one line, lowercase first letter, no final period,
/// with Rust's integer type names said in words.
pub(crate) fn one_line(text: &str) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let line = plain_types(&line);
    let line = line.trim().trim_end_matches('.');
    let mut chars = line.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).take(300).collect(),
        None => "the request could not be read".to_owned(),
    }
}

/// `text` with `i64`, `u32`, `u8` (as serde and axum name the expected type) in words.
fn plain_types(text: &str) -> String {
    let mut text = text.to_owned();
    for (rust, words) in [
        ("i64", "a whole number"),
        ("u64", "a whole number"),
        ("u32", "a whole number"),
        ("u8", "a whole number from 0 to 255"),
    ] {
        for (before, after) in [
            (format!("expected {rust}"), format!("expected {words}")),
            (format!("to a `{rust}`"), format!("to {words}")),
            (format!("to a {rust}"), format!("to {words}")),
        ] {
            text = text.replace(&before, &after);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gitops_owned_names_repo_and_commit() {
        let err = ApiError::from(Error::GitopsOwned {
            entity: "user",
            key: "bob@example.com".into(),
            repo_url: "https://git.example/acme.git".into(),
            commit: Some("0123456789abcdef0123".into()),
        });
        assert_eq!(err.status(), StatusCode::CONFLICT);
        assert_eq!(err.code(), "gitops_managed");
        assert!(
            err.message
                .contains("https://git.example/acme.git at 0123456789ab")
        );
        assert_eq!(
            err.details,
            Some(json!({
                "entity": "user",
                "repo_url": "https://git.example/acme.git",
                "commit": "0123456789abcdef0123",
            }))
        );
    }

    #[test]
    fn core_kinds_map_to_statuses() {
        let cases = [
            (
                Error::invalid("limit", "0", "too small"),
                400,
                "invalid_input",
            ),
            (Error::not_found("organization", "x"), 404, "not_found"),
            (
                Error::conflict("key", "3", "is already revoked"),
                409,
                "conflict",
            ),
            (
                Error::Unavailable {
                    backend: "sqlite",
                    message: "locked".into(),
                },
                503,
                "store_unavailable",
            ),
        ];
        for (err, status, code) in cases {
            let err = ApiError::from(err);
            assert_eq!((err.status().as_u16(), err.code()), (status, code));
        }
    }

    #[test]
    fn rust_type_names_are_said_in_words() {
        assert_eq!(
            one_line("invalid type: string \"100\", expected i64 at line 1 column 9"),
            "invalid type: string \"100\", expected a whole number at line 1 column 9"
        );
        assert_eq!(
            one_line("Cannot parse `abc` to a `i64`"),
            "cannot parse `abc` to a whole number"
        );
    }

    #[test]
    fn rejection_text_becomes_one_line() {
        assert_eq!(
            one_line("Failed to parse.\nmore\n"),
            "failed to parse. more"
        );
        assert_eq!(one_line(""), "the request could not be read");
    }
}
