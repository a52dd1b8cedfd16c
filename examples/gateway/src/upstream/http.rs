//! The HTTP upstream: forwards the request body to `{base}/chat/completions`.

use std::fmt;
use std::time::Duration;

use axum::http::header;

use super::{UpstreamError, UpstreamReply};
use crate::request::ChatRequest;

/// How long connecting to the upstream may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one upstream request may take, answer included.
///
/// Shorter than the governor's reservation lifetime, so a slow answer is
/// still settled against its reservation.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);

/// An OpenAI-compatible service reached over HTTP.
pub struct HttpUpstream {
    client: reqwest::Client,
    endpoint: reqwest::Url,
    api_key: Option<String>,
}

impl HttpUpstream {
    /// An upstream at `base_url` (such as `http://127.0.0.1:9000/v1`).
    pub fn new(base_url: &str, api_key: Option<String>) -> Result<Self, String> {
        let shown = ias_core::url::redact(base_url);
        let endpoint = format!("{}/chat/completions", base_url.trim_end_matches('/'));
        let endpoint = reqwest::Url::parse(&endpoint)
            .map_err(|err| format!("invalid upstream url `{shown}`: {err}"))?;
        if !matches!(endpoint.scheme(), "http" | "https") {
            return Err(format!(
                "invalid upstream url `{shown}`: expected an http:// or https:// URL"
            ));
        }
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|err| format!("cannot build the upstream HTTP client: {err}"))?;
        Ok(HttpUpstream {
            client,
            endpoint,
            api_key,
        })
    }

    /// Forwards the checked request body and reads the whole answer.
    pub async fn chat(&self, request: &ChatRequest) -> Result<UpstreamReply, UpstreamError> {
        let mut outgoing = self
            .client
            .post(self.endpoint.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(request.body.clone());
        if let Some(key) = &self.api_key {
            outgoing = outgoing.bearer_auth(key);
        }
        let response = outgoing.send().await.map_err(unreachable)?;
        let status = response.status();
        if !status.is_success() {
            return Err(UpstreamError::Status(status));
        }
        let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
        let body = response.bytes().await.map_err(unreachable)?;
        Ok(UpstreamReply {
            status,
            content_type,
            body,
        })
    }

    /// The endpoint with any password hidden, safe to log.
    pub fn describe(&self) -> String {
        ias_core::url::redact(self.endpoint.as_str())
    }
}

impl fmt::Debug for HttpUpstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpUpstream")
            .field("endpoint", &self.describe())
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .finish()
    }
}

fn unreachable(err: reqwest::Error) -> UpstreamError {
    UpstreamError::Unreachable(err.without_url().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_is_below_the_base_url() {
        let upstream = HttpUpstream::new("http://127.0.0.1:9000/v1/", None).unwrap();
        assert_eq!(
            upstream.describe(),
            "http://127.0.0.1:9000/v1/chat/completions"
        );
    }

    #[test]
    fn a_request_times_out_before_its_reservation_expires() {
        let ttl = ias_core::governor::DEFAULT_RESERVATION_TTL;
        assert!(REQUEST_TIMEOUT + CONNECT_TIMEOUT < ttl);
    }

    #[test]
    fn only_http_urls_are_accepted() {
        assert!(HttpUpstream::new("ftp://127.0.0.1/v1", None).is_err());
        assert!(HttpUpstream::new("not a url", None).is_err());
    }

    #[test]
    fn debug_hides_the_key_and_the_password() {
        let key = Some("sk-very-secret".to_owned());
        let upstream = HttpUpstream::new("http://user:hunter2@127.0.0.1:9000/v1", key).unwrap();
        let shown = format!("{upstream:?}");
        assert!(!shown.contains("sk-very-secret"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
