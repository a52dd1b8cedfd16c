//! The router and the state its handlers share.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Uri};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use ias_core::Governor;
use serde_json::json;

use crate::chat;
use crate::errors::ApiError;
use crate::upstream::Upstream;

/// What every request handler needs.
#[derive(Clone)]
pub struct AppState {
    /// Decides and charges requests.
    pub governor: Governor,
    /// Answers allowed requests.
    pub upstream: Arc<Upstream>,
}

impl AppState {
    /// State deciding with `governor`, sending allowed requests to `upstream`.
    pub fn new(governor: Governor, upstream: Upstream) -> Self {
        AppState {
            governor,
            upstream: Arc::new(upstream),
        }
    }
}

/// The largest request body accepted: 16 MiB, room for inline images.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// The gateway's routes: `POST /v1/chat/completions` and `GET /healthz`.
pub fn router(state: AppState) -> Router {
    let chat = post(chat::chat_completions).layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/chat/completions", chat)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(uri.path())
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::method_not_allowed(method.as_str(), uri.path())
}
