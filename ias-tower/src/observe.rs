//! Hooks for metrics: what the Layer decided and charged.

use std::time::Duration;

use crate::api::Api;

/// What the Layer decided about one governed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decided {
    /// The API called; `None` for `GET /v1/models`.
    pub api: Option<Api>,
    /// Allowed, denied, or not decided because the governor failed.
    pub outcome: Outcome,
    /// Why, for a denial or failure: a [`ias_core::DenyReason::as_str`],
    /// `missing_api_key`, or the error code answered (`store_unavailable`,
    /// `store_error`, `invalid_value`).
    pub reason: Option<&'static str>,
    /// How long [`ias_core::Governor::authorize`] took, when it was called.
    pub authorize_time: Option<Duration>,
}

/// The outcome of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The request went upstream.
    Allowed,
    /// The request was refused (401, 403 or 429).
    Denied,
    /// The governor could not decide (store unavailable, bad input).
    Failed,
}

impl Outcome {
    /// `allowed`, `denied` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
            Outcome::Failed => "failed",
        }
    }
}

/// Receives the Layer's decisions and charges, such as to count them.
///
/// Called on the request path: keep it cheap and never block.
pub trait Observer: Send + Sync + 'static {
    /// A decision was made (or could not be).
    fn decided(&self, decided: &Decided);

    /// `tokens` were charged for a request to `api`.
    fn charged(&self, api: Api, tokens: i64) {
        let _ = (api, tokens);
    }
}
