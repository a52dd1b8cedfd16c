//! Where allowed requests go: an OpenAI-compatible HTTP service, or a built-in mock.
//!
//! `IAS_UPSTREAM_URL` (a base URL such as `http://127.0.0.1:9000/v1`) selects
//! the HTTP upstream; requests go to `{base}/chat/completions`, with
//! `Authorization: Bearer $IAS_UPSTREAM_API_KEY` when that variable is set.
//! Without `IAS_UPSTREAM_URL` the gateway answers from [`MockUpstream`], in
//! process, without any network.

mod http;
mod mock;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

pub use self::http::HttpUpstream;
pub use self::mock::MockUpstream;
use crate::request::ChatRequest;

/// The environment variable naming the upstream's base URL.
pub const URL_VAR: &str = "IAS_UPSTREAM_URL";

/// The environment variable holding the upstream's API key.
pub const API_KEY_VAR: &str = "IAS_UPSTREAM_API_KEY";

/// The model service behind the gateway.
#[derive(Debug)]
pub enum Upstream {
    /// The built-in deterministic mock.
    Mock(MockUpstream),
    /// An OpenAI-compatible HTTP service.
    Http(HttpUpstream),
}

/// A successful (2xx) answer from the upstream.
#[derive(Debug, Clone)]
pub struct UpstreamReply {
    /// The status, passed on to the caller.
    pub status: StatusCode,
    /// The content type, passed on to the caller.
    pub content_type: Option<HeaderValue>,
    /// The body, passed on to the caller unchanged.
    pub body: Bytes,
}

/// Why the upstream gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamError {
    /// The request could not be sent or the answer not read.
    Unreachable(String),
    /// The upstream answered with a status other than 2xx.
    Status(StatusCode),
}

impl Upstream {
    /// The upstream chosen by [`URL_VAR`] and [`API_KEY_VAR`].
    pub fn from_env() -> Result<Self, String> {
        let url = std::env::var(URL_VAR)
            .ok()
            .filter(|url| !url.trim().is_empty());
        let Some(url) = url else {
            return Ok(Upstream::Mock(MockUpstream::default()));
        };
        let api_key = std::env::var(API_KEY_VAR)
            .ok()
            .filter(|key| !key.is_empty());
        HttpUpstream::new(url.trim(), api_key).map(Upstream::Http)
    }

    /// Sends a chat completion request.
    pub async fn chat(&self, request: &ChatRequest) -> Result<UpstreamReply, UpstreamError> {
        match self {
            Upstream::Mock(mock) => Ok(mock.chat(request)),
            Upstream::Http(http) => http.chat(request).await,
        }
    }

    /// A description safe to log: `mock`, or the endpoint with any password hidden.
    pub fn describe(&self) -> String {
        match self {
            Upstream::Mock(_) => "mock".to_owned(),
            Upstream::Http(http) => http.describe(),
        }
    }
}

impl UpstreamReply {
    /// `usage.total_tokens` of the answer, if it is there and makes sense.
    pub fn total_tokens(&self) -> Option<i64> {
        let value: Value = serde_json::from_slice(&self.body).ok()?;
        value
            .get("usage")?
            .get("total_tokens")?
            .as_i64()
            .filter(|tokens| *tokens >= 0)
    }
}

impl IntoResponse for UpstreamReply {
    fn into_response(self) -> Response {
        let content_type = self
            .content_type
            .unwrap_or(HeaderValue::from_static("application/json"));
        let mut response = (self.status, Body::from(self.body)).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(body: &'static str) -> UpstreamReply {
        UpstreamReply {
            status: StatusCode::OK,
            content_type: None,
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    #[test]
    fn total_tokens_is_read_from_usage() {
        assert_eq!(
            reply(r#"{"usage":{"total_tokens":42}}"#).total_tokens(),
            Some(42)
        );
        assert_eq!(reply(r#"{"choices":[]}"#).total_tokens(), None);
        assert_eq!(
            reply(r#"{"usage":{"total_tokens":-3}}"#).total_tokens(),
            None
        );
        assert_eq!(reply("not json").total_tokens(), None);
    }
}
