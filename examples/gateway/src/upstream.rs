//! Where allowed requests go: an OpenAI-compatible HTTP service, or a built-in mock.
//!
//! `IAS_UPSTREAM_URL` (a base URL such as `http://127.0.0.1:9000/v1`) selects
//! the HTTP upstream; a request to `/v1/{route}` goes to `{base}/{route}`,
//! with `Authorization: Bearer $IAS_UPSTREAM_API_KEY` when that variable is
//! set. Without `IAS_UPSTREAM_URL` the gateway answers from
//! [`MockUpstream`], in process, without any network.

pub mod http;
pub mod mock;

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::Method;
use axum::response::Response;
use ias_tower::ApiError;

pub use self::http::HttpUpstream;
pub use self::mock::MockUpstream;

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

    /// The upstream for another serving thread: an HTTP upstream with
    /// connections of its own (they belong to one thread's event loop), the
    /// same mock.
    pub fn for_thread(upstream: &Arc<Self>) -> Arc<Self> {
        match &**upstream {
            Upstream::Mock(_) => upstream.clone(),
            Upstream::Http(http) => Arc::new(Upstream::Http(http.for_thread())),
        }
    }

    /// Sends a request for `route` (such as `chat/completions`) and returns
    /// the answer: the upstream's status, content type and body (streamed
    /// as it comes) on success, 502 in OpenAI's error shape otherwise.
    pub async fn forward(
        &self,
        method: &Method,
        route: &str,
        query: Option<&str>,
        body: Bytes,
    ) -> Response {
        match self {
            Upstream::Mock(mock) => mock.answer(method, route, &body),
            Upstream::Http(http) => http.forward(method, route, query, body).await,
        }
    }

    /// A description safe to log: `mock`, or the base URL with any password hidden.
    pub fn describe(&self) -> String {
        match self {
            Upstream::Mock(_) => "mock".to_owned(),
            Upstream::Http(http) => http.describe(),
        }
    }
}

/// The answer to a route the upstream does not serve.
fn not_served(route: &str) -> Response {
    let served = "the upstream serves `chat/completions`, `completions`, `embeddings`, \
                  `responses` and `models`";
    ApiError::not_found(&format!("/v1/{route}"), served).into_http()
}
