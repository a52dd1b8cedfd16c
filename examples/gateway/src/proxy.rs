//! `/v1/*`: forwards a request the Layer allowed to the upstream.
//!
//! By the time a request gets here, [`ias_tower::GovernLayer`] has checked
//! its key, model and budget and reserved its tokens; the answer goes back
//! through the Layer, which charges it. The route is forwarded in its
//! normal form (lowercase, no empty segments), which is the form the Layer
//! governed.

use axum::extract::{Request, State};
use axum::response::Response;
use ias_tower::ApiError;

use crate::app::AppState;

/// Forwards one request to the upstream and returns its answer.
pub async fn forward(State(state): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    // The Layer has read the body already and passes it on in one piece.
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(body) => body,
        Err(err) => {
            let message = format!("the request body could not be read: {err}");
            return ApiError::invalid_request("invalid_body", message, None).into_http();
        }
    };
    let route = route(parts.uri.path());
    state
        .upstream
        .forward(&parts.method, &route, parts.uri.query(), body)
        .await
}

/// The route below `/v1/`, lowercase, without empty segments.
fn route(path: &str) -> String {
    let lower = path.to_ascii_lowercase();
    let mut segments = lower.split('/').filter(|s| !s.is_empty());
    // The first segment is `v1`, which the upstream's base URL stands for.
    segments.next();
    segments.collect::<Vec<_>>().join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_forwarded_in_their_normal_form() {
        assert_eq!(route("/v1/chat/completions"), "chat/completions");
        assert_eq!(route("/v1//Chat/completions/"), "chat/completions");
        assert_eq!(route("/v1/models"), "models");
    }
}
