//! A tower [`Layer`](tower::Layer) that governs an OpenAI-compatible gateway with ias.
//!
//! [`GovernLayer`] wraps any `Service<http::Request<B>>` that forwards
//! OpenAI-compatible requests to a model service. Before a request goes
//! on, it checks the caller's ias key, the model against the
//! organization's allowed models, and the monthly budgets and rate limits,
//! reserving the tokens the request may use; after the answer, it charges
//! what the model really used. It runs in-process on an
//! [`ias_core::Governor`], which answers from memory.
//!
//! On an axum gateway it takes a route and a layer:
//!
//! ```no_run
//! # async fn run(store: std::sync::Arc<dyn ias_core::Store>) -> Result<(), Box<dyn std::error::Error>> {
//! use axum::{Router, extract::Request, response::Response, routing::any};
//! use ias_tower::GovernLayer;
//!
//! async fn forward(request: Request) -> Response {
//!     // Send the request, as the Layer checked it, to the model service.
//! #   drop(request);
//! #   Response::default()
//! }
//!
//! let governor = ias_core::Governor::open(store).await?;
//! let maintenance = governor.spawn_maintenance(); // writes usage to the store
//! let app = Router::new()
//!     .route("/v1/{*path}", any(forward))
//!     .layer(GovernLayer::new(governor));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! maintenance.shutdown().await?; // the last usage, before exit
//! # Ok(()) }
//! ```
//!
//! The inner service gets a request body built from bytes (`B:
//! From<Bytes>`, as `axum::body::Body` is) and may answer with any body of
//! [`Bytes`](bytes::Bytes); callers get a [`GovernBody`].
//!
//! # Routes
//!
//! Everything under the prefix (`/v1` by default, see
//! [`GovernLayerBuilder::prefix`]) is governed; other paths (`/healthz`,
//! `/metrics`) pass to the inner service untouched.
//!
//! | route | model | estimate | usage charged |
//! |---|---|---|---|
//! | `POST /v1/chat/completions` | `model` | `messages` + reply allowance | `usage` (a stream: its last chunk) |
//! | `POST /v1/completions` | `model` | `prompt` + reply allowance | `usage` (a stream: its last chunk) |
//! | `POST /v1/embeddings` | `model` | `input` | `usage` (prompt tokens only) |
//! | `POST /v1/responses` | `model` | `instructions`, `input` + reply allowance | `usage.input_tokens` + `output_tokens` (a stream: the `response.completed` event) |
//! | `GET /v1/models` | — | — | nothing: lists the models the caller's organization may call |
//! | any other path under `/v1/` | — | — | refused with 404 `not_found`, unless [`UnknownPaths::Govern`] |
//!
//! Other methods on these paths are answered 405. The estimate is described
//! in [`estimate`]; the usage read in [`usage`]. With
//! [`UnknownPaths::Govern`], a `POST` to another path under the prefix is
//! governed when its JSON body has a `model` ([`Api::Generic`]); nothing
//! else under the prefix ever reaches the inner service ungoverned.
//!
//! # A request's life
//!
//! 1. The key is read from `Authorization: Bearer` and looked up before the
//!    body is read; none, or unknown, expired or revoked: 401.
//! 2. The body is read (at most [`DEFAULT_BODY_LIMIT`], else 413) and
//!    checked: not JSON, no `model`, a field of the wrong type: 400.
//! 3. Tokens are estimated and reserved by [`ias_core::Governor::authorize`];
//!    a refusal answers 401, 403 or 429.
//! 4. The body is forwarded as it was checked: every field, each once. A
//!    chat or completions stream gets `stream_options.include_usage =
//!    true` (the caller's other stream options are kept), so the upstream
//!    reports usage in its last chunk.
//! 5. The answer decides the charge:
//!    - an error status (not 2xx): the reservation is released and the
//!      answer passed on as it is;
//!    - a JSON answer: read whole, `usage` charged (the estimate when it
//!      has none, with a warning in the log), then passed on;
//!    - a stream (`text/event-stream`): passed on frame by frame as the
//!      upstream sends it, never buffered. Its `data:` events are read on
//!      the way; at its end the last usage seen is charged, before the end
//!      reaches the caller. A stream that reports no usage is charged the
//!      prompt estimate plus its streamed text at 4 characters a token.
//!
//! A caller who hangs up before the answer does not leave tokens
//! reserved: steps 3 to 5 then go on in a task of their own (the upstream
//! call finishes and is charged). A caller who hangs up mid-stream drops the body: what was
//! produced so far is charged (the usage if it was seen, else the estimate
//! from the streamed text), and the reservation is closed.
//!
//! # Errors
//!
//! Every answer the Layer writes is in OpenAI's error shape
//! ([`ApiError`]), so OpenAI clients raise their usual exceptions:
//!
//! | status | `type` | `code` |
//! |---|---|---|
//! | 400 | `invalid_request_error` | `invalid_json`, `missing_required_parameter`, `invalid_type`, `invalid_value`, `invalid_body` |
//! | 401 | `authentication_error` | `missing_api_key`, `invalid_key`, `expired_key`, `revoked_key` |
//! | 403 | `permission_error` | `model_not_allowed` |
//! | 404 | `invalid_request_error` | `not_found` |
//! | 405 | `invalid_request_error` | `method_not_allowed` |
//! | 413 | `invalid_request_error` | `invalid_body` |
//! | 429 | `insufficient_quota` | `org_budget_exhausted`, `user_limit_exhausted` |
//! | 429 | `rate_limit_exceeded` | `rate_limited` |
//! | 503 | `server_error` | `store_unavailable`, `shutting_down` |
//! | 500 | `server_error` | `store_error`, `internal_error` |
//!
//! A 429 carries `Retry-After` (seconds until the budget period resets, or
//! until a per-minute window has room) and `x-should-retry`. A 503 carries
//! `Retry-After: 1`.
//!
//! # Shutting down
//!
//! [`GovernLayer::drain`] tells how many governed requests are in flight
//! (a stream counts until its charge is made) and can cut off the rest:
//! see [`Drain`].
//!
//! # Logging
//!
//! `tracing`: nothing for a request that went well; a warning when an
//! answer reports no usage or the store is unavailable; an error when a
//! charge could not be recorded. Keys are never logged.
//!
//! # Limitations
//!
//! - The estimate counts text only (see [`estimate`]); the real usage is
//!   charged whatever it is.
//! - A non-streaming answer is read whole before it is passed on (its
//!   usage comes at its end); a stream is never buffered.
//! - A non-streaming answer whose body fails midway is answered 502 and its
//!   reservation released: nothing is charged.
//! - If charging fails after the upstream answered (store down), the answer
//!   is still returned and the reservation expires by itself
//!   ([`ias_core::GovernorConfig::reservation_ttl`]): that request is not
//!   charged.
//! - The Layer reads streams as the inner service sends them: put it
//!   inside any compression layer (a compressed stream's usage cannot be
//!   read, and only its prompt estimate is charged).
//! - `GET /v1/models/{model}` and other `/v1/` routes (files, batches,
//!   audio, images) are refused by default; [`UnknownPaths::Govern`]
//!   governs those that carry a `model` in a JSON body.

mod api;
mod body;
mod charge;
mod drain;
mod error;
pub mod estimate;
mod layer;
mod models;
mod observe;
mod request;
mod route;
mod sse;
pub mod usage;

pub use api::Api;
pub use body::{BoxError, GovernBody};
pub use drain::Drain;
pub use error::{ApiError, SHOULD_RETRY};
pub use estimate::Estimate;
pub use layer::{
    DEFAULT_BODY_LIMIT, DEFAULT_PREFIX, Govern, GovernFuture, GovernLayer, GovernLayerBuilder,
    bearer_key,
};
pub use observe::{Decided, Observer, Outcome};
pub use request::{Estimator, Inference};
pub use route::UnknownPaths;
pub use sse::MAX_EVENT_BYTES;
