//! The HTTP upstream: forwards each request to `{base}/{route}` and streams the answer back.

use std::fmt;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{Method, StatusCode, header};
use axum::response::Response;
use ias_tower::ApiError;
use tracing::warn;

/// How long connecting to the upstream may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one upstream request may take, answer (or whole stream) included.
///
/// Shorter than the governor's reservation lifetime, so a slow answer is
/// still settled against its reservation.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);

/// An OpenAI-compatible service reached over HTTP.
pub struct HttpUpstream {
    client: reqwest::Client,
    base: reqwest::Url,
    /// The URLs of the routes the gateway serves, parsed once.
    routes: Vec<(&'static str, reqwest::Url)>,
    api_key: Option<String>,
}

/// The routes whose upstream URLs are parsed once, at start.
const ROUTES: [&str; 5] = [
    "chat/completions",
    "completions",
    "embeddings",
    "responses",
    "models",
];

impl HttpUpstream {
    /// An upstream at `base_url` (such as `http://127.0.0.1:9000/v1`).
    pub fn new(base_url: &str, api_key: Option<String>) -> Result<Self, String> {
        let shown = ias_core::url::redact(base_url);
        // A trailing `/` makes every route a path below the base.
        let base = format!("{}/", base_url.trim_end_matches('/'));
        let base = reqwest::Url::parse(&base)
            .map_err(|err| format!("invalid upstream url `{shown}`: {err}"))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(format!(
                "invalid upstream url `{shown}`: expected an http:// or https:// URL"
            ));
        }
        let client = client()?;
        let routes = ROUTES
            .iter()
            .filter_map(|route| Some((*route, base.join(route).ok()?)))
            .collect();
        Ok(HttpUpstream {
            client,
            base,
            routes,
            api_key,
        })
    }

    /// The same upstream with a connection pool of its own.
    pub fn for_thread(&self) -> Self {
        HttpUpstream {
            // Building a client failed only if the first one failed: then
            // there is no `self`. Should it fail anyway, sharing the pool
            // still works, with connections driven by another thread.
            client: client().unwrap_or_else(|_| self.client.clone()),
            base: self.base.clone(),
            routes: self.routes.clone(),
            api_key: self.api_key.clone(),
        }
    }

    /// The URL of `route` (such as `chat/completions`) below the base.
    pub fn url(&self, route: &str, query: Option<&str>) -> Result<reqwest::Url, String> {
        let known = self.routes.iter().find(|(known, _)| *known == route);
        let mut url = match known {
            Some((_, url)) => url.clone(),
            None => self
                .base
                .join(route.trim_start_matches('/'))
                .map_err(|err| format!("invalid upstream route `{route}`: {err}"))?,
        };
        if query.is_some() {
            url.set_query(query);
        }
        Ok(url)
    }

    /// Sends the request and streams the answer back; an error status is 502.
    pub async fn forward(
        &self,
        method: &Method,
        route: &str,
        query: Option<&str>,
        body: Bytes,
    ) -> Response {
        let url = match self.url(route, query) {
            Ok(url) => url,
            Err(message) => return super::not_served(&message),
        };
        let mut outgoing = self.client.request(method.clone(), url);
        if !body.is_empty() {
            outgoing = outgoing
                .header(header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        if let Some(key) = &self.api_key {
            outgoing = outgoing.bearer_auth(key);
        }
        let answer = match outgoing.send().await {
            Ok(answer) => answer,
            Err(err) => return unreachable(err),
        };
        let status = answer.status();
        if !status.is_success() {
            warn!(
                status = status.as_u16(),
                route, "the upstream answered with an error"
            );
            let message = format!("the upstream model service answered {status}");
            return ApiError::bad_gateway("upstream_error", message).into_http();
        }
        pass_on(answer)
    }

    /// The base URL with any password hidden, safe to log.
    pub fn describe(&self) -> String {
        ias_core::url::redact(self.base.as_str().trim_end_matches('/'))
    }
}

/// A client for the upstream, with its own connection pool.
fn client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|err| format!("cannot build the upstream HTTP client: {err}"))
}

/// The upstream's answer as a response whose body follows the upstream's chunks.
fn pass_on(answer: reqwest::Response) -> Response {
    let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::OK);
    let chunks = futures_util::stream::try_unfold(answer, |mut answer| async move {
        let chunk = answer.chunk().await?;
        Ok::<_, reqwest::Error>(chunk.map(|chunk| (chunk, answer)))
    });
    let mut response = Response::new(Body::from_stream(chunks));
    *response.status_mut() = status;
    if let Some(content_type) = content_type {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
    }
    response
}

fn unreachable(err: reqwest::Error) -> Response {
    // Without the URL: it may hold a password.
    warn!(error = %err.without_url(), "the upstream could not be reached");
    let message = "the upstream model service could not be reached".to_owned();
    ApiError::bad_gateway("upstream_unreachable", message).into_http()
}

impl fmt::Debug for HttpUpstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpUpstream")
            .field("base", &self.describe())
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_below_the_base_url() {
        let upstream = HttpUpstream::new("http://127.0.0.1:9000/v1/", None).unwrap();
        assert_eq!(upstream.describe(), "http://127.0.0.1:9000/v1");
        let chat = upstream.url("chat/completions", None).unwrap();
        assert_eq!(chat.as_str(), "http://127.0.0.1:9000/v1/chat/completions");
        let models = upstream.url("/models", Some("limit=2")).unwrap();
        assert_eq!(models.as_str(), "http://127.0.0.1:9000/v1/models?limit=2");
        let bare = HttpUpstream::new("http://127.0.0.1:9000", None).unwrap();
        let chat = bare.url("chat/completions", None).unwrap();
        assert_eq!(chat.as_str(), "http://127.0.0.1:9000/chat/completions");
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
