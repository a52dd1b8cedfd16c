//! The ias admin REST API as an axum [`Router`](axum::Router), with its OpenAPI 3.1 document.
//!
//! Organizations, users and their monthly limits, API keys (a new secret
//! is shown once), allowed models, rate limits, usage by organization,
//! user, model and day with a burn-rate forecast, the audit log, password
//! resets and GitOps, under `/api/v1`. Callers authenticate with an ias key
//! as `Authorization: Bearer <key>`; every operation checks the key's user
//! against ias-core's RBAC (its role and organization) and is audited with
//! source `api`. The document is served at `/api/v1/openapi.json`.
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<dyn ias_core::Store>) -> Result<(), Box<dyn std::error::Error>> {
//! use ias_admin_api::AdminApi;
//!
//! let governor = ias_core::Governor::open(store).await?;
//! let app = axum::Router::new()
//!     // … the gateway's own routes …
//!     .merge(ias_admin_api::router(AdminApi::new(governor)));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! The endpoints, their errors and their pagination are described in
//! `docs/http-api.md`, and exactly in the OpenAPI document ([`openapi`]).
//!
//! # Errors
//!
//! Every error answer is `{"error": {"code", "message", "details"?}}`
//! ([`ErrorBody`]) with a stable `code`; see [`ApiError`].
//!
//! # Limitations
//!
//! - There is no endpoint that changes a user's role or deletes an
//!   organization or user.
//! - The caller's user is read from the store on every call, so the admin
//!   API costs a store query per request (the inference hot path does not).

mod auth;
mod error;
mod extract;
mod routes;
mod state;

pub use auth::{BREAK_GLASS_HEADER, Caller};
pub use error::{ApiError, ErrorBody, ErrorDetail};
pub use routes::{PREFIX, openapi, router};
pub use state::AdminApi;
