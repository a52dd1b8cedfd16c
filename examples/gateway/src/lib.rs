//! An example OpenAI-compatible gateway governed by ias.
//!
//! `ias-gateway` takes `POST /v1/chat/completions` with an ias key as
//! `Authorization: Bearer <key>`, asks [`ias_core::Governor`] whether the
//! key's user may call the model within the monthly budgets, forwards the
//! request upstream, and charges the tokens the upstream reports.
//!
//! ```text
//! $ ias-gateway --demo                       # prints a key and a curl line
//! $ IAS_UPSTREAM_URL=http://127.0.0.1:9000/v1 ias-gateway --database-url sqlite://./ias.db
//! ```
//!
//! The router can be driven in-process, as the tests do:
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<dyn ias_core::Store>) -> Result<(), Box<dyn std::error::Error>> {
//! use ias_gateway::app::{AppState, router};
//! use ias_gateway::upstream::{MockUpstream, Upstream};
//!
//! let governor = ias_core::Governor::open(store).await?;
//! let maintenance = governor.spawn_maintenance();
//! let app = router(AppState::new(governor, Upstream::Mock(MockUpstream::default())));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! axum::serve(listener, app).await?;
//! maintenance.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! # Endpoints
//!
//! - `POST /v1/chat/completions`: a chat completion, answered with the
//!   upstream's body and status;
//! - `GET /healthz`: `200 {"status":"ok"}` while the process serves.
//!
//! # A request's life
//!
//! 1. The key is read from `Authorization: Bearer`; none: 401.
//! 2. The body is parsed; not JSON, or no `model` or `messages`: 400.
//! 3. Tokens are estimated ([`estimate`]) and reserved by
//!    [`ias_core::Governor::authorize`]; a refusal answers 401, 403 or 429.
//! 4. The body is forwarded upstream as it was checked: every field, each once ([`upstream`]).
//! 5. On a 2xx answer, `usage.total_tokens` is charged (the estimate, with a
//!    warning in the log, when the answer has no usage) and the answer is
//!    passed on. On an error or no answer, the reservation is released and
//!    the caller gets 502.
//!
//! Steps 3 to 5 run in their own task: a caller who hangs up does not
//! leave tokens reserved.
//!
//! # Token estimate
//!
//! Reserved per request: the prompt estimate, `ceil(characters of the
//! messages' text / 4) + 4 per message`, plus the completion allowance,
//! `max_completion_tokens` (else `max_tokens`, else 1024) times `n`. See
//! [`estimate`] for the details.
//!
//! # Errors
//!
//! Every error is in OpenAI's shape,
//! `{"error": {"message", "type", "param", "code"}}`, so OpenAI clients raise
//! their usual exceptions:
//!
//! | status | `type` | `code` |
//! |---|---|---|
//! | 400 | `invalid_request_error` | `invalid_json`, `missing_required_parameter`, `invalid_type`, `invalid_value`, `stream_not_supported`, `invalid_body` |
//! | 413 | `invalid_request_error` | `invalid_body` (larger than 16 MiB) |
//! | 401 | `authentication_error` | `missing_api_key`, `invalid_key`, `expired_key`, `revoked_key` |
//! | 403 | `permission_error` | `model_not_allowed` |
//! | 429 | `insufficient_quota` | `org_budget_exhausted`, `user_limit_exhausted` |
//! | 502 | `server_error` | `upstream_unreachable`, `upstream_error` |
//! | 503 | `server_error` | `store_unavailable` |
//! | 500 | `server_error` | `store_error`, `internal_error` |
//!
//! A 429 carries `Retry-After` (seconds until the budget period resets)
//! and `x-should-retry: false`, which tells OpenAI's clients not to retry
//! a budget that will not come back within seconds.
//!
//! # Logging
//!
//! `tracing` to stderr, filtered by `RUST_LOG` (default `info`): one line at
//! start and one at stop; nothing for a successful request; a warning when
//! the upstream fails or reports no usage; an error when a charge could not
//! be recorded. Keys are never logged.
//!
//! # Limitations
//!
//! - `"stream": true` is refused with 400 `stream_not_supported`.
//! - Request bodies are limited to 16 MiB ([`app::MAX_BODY_BYTES`]); a
//!   larger one is answered 413 `invalid_body`.
//! - Only `/v1/chat/completions` is served (no `/v1/models`, embeddings or
//!   responses API).
//! - An upstream error status is answered with 502 and the upstream's body
//!   is not passed on.
//! - The estimate counts text only (see [`estimate`]); the real usage is
//!   charged whatever it is.
//! - If charging fails after the upstream answered (store down), the answer
//!   is still returned and the reservation expires after 15 minutes: that
//!   request is not charged.

pub mod app;
pub mod chat;
pub mod demo;
pub mod errors;
pub mod estimate;
pub mod request;
pub mod server;
pub mod store;
pub mod upstream;
