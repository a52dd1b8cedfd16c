//! The router, governed by [`ias_tower::GovernLayer`], and the state its handlers share.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use ias_admin_api::AdminApi;
use ias_core::Governor;
use ias_tower::{ApiError, Drain, GovernLayer};
use serde_json::json;
use tracing::debug;

use crate::metrics::{self, Metrics};
use crate::proxy;
use crate::upstream::Upstream;

/// What every request handler needs.
#[derive(Clone)]
pub struct AppState {
    /// Decides and charges requests.
    pub governor: Governor,
    /// Answers allowed requests.
    pub upstream: Arc<Upstream>,
    /// Counts decisions and charges; read by `GET /metrics`.
    pub metrics: Arc<Metrics>,
    /// Governs every request under `/v1/`.
    pub layer: GovernLayer,
    /// The admin REST API under `/api/v1`.
    pub admin: AdminApi,
}

impl AppState {
    /// State deciding with `governor`, sending allowed requests to `upstream`.
    pub fn new(governor: Governor, upstream: Upstream) -> Self {
        let metrics = Arc::new(Metrics::new());
        let layer = GovernLayer::builder(governor.clone())
            .body_limit(MAX_BODY_BYTES)
            .observer(metrics.clone())
            .build();
        AppState {
            admin: AdminApi::new(governor.clone()),
            governor,
            upstream: Arc::new(upstream),
            metrics,
            layer,
        }
    }

    /// The same state serving `admin` under `/api/v1` (with GitOps, say).
    pub fn with_admin(mut self, admin: AdminApi) -> Self {
        self.admin = admin;
        self
    }

    /// The same state for another serving thread: it shares everything but
    /// the upstream's connections, which belong to one thread's event loop.
    pub fn for_thread(&self) -> Self {
        AppState {
            upstream: Upstream::for_thread(&self.upstream),
            ..self.clone()
        }
    }

    /// The governed requests in flight, for a graceful shutdown.
    pub fn drain(&self) -> Drain {
        self.layer.drain()
    }
}

/// The largest request body accepted: 16 MiB, room for inline images.
pub const MAX_BODY_BYTES: usize = ias_tower::DEFAULT_BODY_LIMIT;

/// How long `GET /readyz` waits for the store.
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// The gateway's routes: every `/v1/` path forwarded upstream (governed by
/// the Layer), the admin API under `/api/v1`, `GET /healthz`, `GET /readyz`
/// and `GET /metrics`.
pub fn router(state: AppState) -> Router {
    let layer = state.layer.clone();
    let admin = ias_admin_api::router(state.admin.clone());
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/{*route}", any(proxy::forward))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .merge(admin)
        .layer(layer)
}

/// Alive: answers as long as the process serves; never touches the store.
async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// Ready: 200 when the store answers a cheap query in time, 503 otherwise.
async fn readyz(State(state): State<AppState>) -> Response {
    let store = state.governor.store().clone();
    match tokio::time::timeout(READY_TIMEOUT, store.change_seq()).await {
        Ok(Ok(_)) => Json(json!({ "status": "ready" })).into_response(),
        Ok(Err(err)) => {
            debug!(error = %err, "not ready: the store failed");
            not_ready("store_unavailable")
        }
        Err(_) => {
            debug!("not ready: the store did not answer in time");
            not_ready("store_timeout")
        }
    }
}

fn not_ready(reason: &str) -> Response {
    let body = json!({ "status": "unavailable", "reason": reason });
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    let text = state.metrics.render(&state.governor, &state.drain()).await;
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(metrics::CONTENT_TYPE),
    );
    response
}

async fn not_found(uri: Uri) -> Response {
    let served = "this gateway serves `/v1/chat/completions`, `/v1/completions`, \
                  `/v1/embeddings`, `/v1/responses`, `/v1/models`, the admin API under \
                  `/api/v1`, `/healthz`, `/readyz` and `/metrics`";
    ApiError::not_found(uri.path(), served).into_http()
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    ApiError::method_not_allowed(method.as_str(), uri.path()).into_http()
}
