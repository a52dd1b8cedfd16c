//! An example OpenAI-compatible gateway governed by ias.
//!
//! `ias-gateway` forwards OpenAI-compatible requests, with an ias key as
//! `Authorization: Bearer <key>`, to an upstream model service (or to a
//! built-in deterministic mock). Every request under `/v1/` goes through
//! [`ias_tower::GovernLayer`], which asks [`ias_core::Governor`] whether the
//! key's user may call the model within the budgets and rate limits,
//! reserves the tokens, and charges the tokens the upstream reports.
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
//! | endpoint | what |
//! |---|---|
//! | `POST /v1/chat/completions` | chat completions, plain or streamed (`"stream": true`) |
//! | `POST /v1/completions` | legacy completions, plain or streamed |
//! | `POST /v1/embeddings` | embeddings (prompt tokens only) |
//! | `POST /v1/responses` | the responses API, plain or streamed |
//! | `GET /v1/models` | the models the caller's organization may call (a valid key is needed) |
//! | `GET /healthz` | `200 {"status":"ok"}` while the process serves; never touches the store |
//! | `GET /readyz` | `200 {"status":"ready"}` when the store answers a cheap query within 2 s, else `503` |
//! | `GET /metrics` | Prometheus series ([`metrics`]), in the OpenMetrics text format |
//!
//! Any other path under `/v1/` is refused with 404 `not_found` before it
//! reaches the upstream; `/healthz`, `/readyz` and `/metrics` need no key.
//!
//! # A request's life
//!
//! 1. The key is read from `Authorization: Bearer`; none, unknown, expired
//!    or revoked: 401 (before the body is read).
//! 2. The body is parsed; not JSON, no `model`, no input (`messages`,
//!    `prompt`, `input`), or a field of the wrong type: 400.
//! 3. Tokens are estimated ([`ias_tower::estimate`]) and reserved; a
//!    refusal answers 401, 403 or 429.
//! 4. The body is forwarded upstream as it was checked: every field, each
//!    once. A streamed chat or completions request is sent with
//!    `stream_options.include_usage = true`, so the upstream reports the
//!    usage in the last chunk.
//! 5. A JSON answer: its `usage` is charged (the estimate, with a warning
//!    in the log, when it has none) and the answer passed on. A stream:
//!    each chunk is passed on as it arrives, the usage of its last chunk
//!    (for the responses API, of `response.completed`) is charged at its
//!    end. An upstream error or no answer: the reservation is released
//!    and the caller gets 502.
//!
//! A caller who hangs up before the answer does not leave tokens
//! reserved: steps 3 to 5 then go on in a task of their own. A caller who hangs up
//! mid-stream is charged what was produced so far: the usage if the
//! stream reported it, else the prompt estimate plus the streamed text at
//! 4 characters a token.
//!
//! # Upstream
//!
//! `IAS_UPSTREAM_URL` names an OpenAI-compatible base URL; `/v1/{route}`
//! goes to `{base}/{route}` ([`upstream::HttpUpstream`]), answers stream
//! back chunk by chunk. Without it, [`upstream::MockUpstream`] answers
//! every route in process, deterministically, streams included.
//!
//! # Errors
//!
//! Every error is in OpenAI's shape,
//! `{"error": {"message", "type", "param", "code"}}`, so OpenAI clients raise
//! their usual exceptions:
//!
//! | status | `type` | `code` |
//! |---|---|---|
//! | 400 | `invalid_request_error` | `invalid_json`, `missing_required_parameter`, `invalid_type`, `invalid_value`, `invalid_body` |
//! | 401 | `authentication_error` | `missing_api_key`, `invalid_key`, `expired_key`, `revoked_key` |
//! | 403 | `permission_error` | `model_not_allowed` |
//! | 404 | `invalid_request_error` | `not_found` |
//! | 405 | `invalid_request_error` | `method_not_allowed` |
//! | 413 | `invalid_request_error` | `invalid_body` (larger than 16 MiB) |
//! | 429 | `insufficient_quota` | `org_budget_exhausted`, `user_limit_exhausted` |
//! | 429 | `rate_limit_exceeded` | `rate_limited` |
//! | 502 | `server_error` | `upstream_unreachable`, `upstream_error` |
//! | 503 | `server_error` | `store_unavailable`, `shutting_down` |
//! | 500 | `server_error` | `store_error`, `internal_error` |
//!
//! A 429 carries `Retry-After` (seconds until the budget period resets, or
//! until a per-minute window has room) and `x-should-retry: false` for a
//! monthly budget, which tells OpenAI's clients not to retry a budget that
//! will not come back within seconds. A 503 carries `Retry-After: 1`.
//!
//! # Shutting down
//!
//! On Ctrl-C or SIGTERM the gateway stops accepting connections and lets
//! the requests in flight finish, streams included, for up to
//! `--shutdown-grace` seconds (30 by default). What is still open then is
//! cut off and charged what it produced. Then the settled usage is written
//! to the store and the process exits (status 1 if that write failed).
//!
//! # Logging
//!
//! `tracing` to stderr, filtered by `RUST_LOG` (default `info`), as
//! key-value fields: one line at start and one at stop; nothing for a
//! successful request; a warning when the upstream fails, an answer reports
//! no usage, or the store is unavailable; an error when a charge could not
//! be recorded. Keys, passwords in URLs and the upstream key are never
//! logged.
//!
//! # Limitations
//!
//! - Request bodies are limited to 16 MiB ([`app::MAX_BODY_BYTES`]); a
//!   larger one is answered 413 `invalid_body`.
//! - Only the routes above are served; other `/v1/` routes (files,
//!   batches, audio, images, `GET /v1/models/{model}`) are refused.
//! - An upstream error status is answered with 502 and the upstream's body
//!   is not passed on.
//! - An upstream request, a whole stream included, may last at most 600 s
//!   ([`upstream::http::REQUEST_TIMEOUT`]).
//! - Only `Content-Type` (and the gateway's own upstream key) is sent
//!   upstream; the caller's other headers are not forwarded.
//! - The estimate counts text only (see [`ias_tower::estimate`]); the real
//!   usage is charged whatever it is.
//! - If charging fails after the upstream answered (store down), the answer
//!   is still returned and the reservation expires after 15 minutes: that
//!   request is not charged.

pub mod app;
pub mod demo;
pub mod metrics;
pub mod proxy;
pub mod server;
pub mod store;
pub mod threads;
pub mod upstream;
