//! Settling or releasing one request's reservation, exactly once.

use std::sync::Arc;
use std::time::Duration;

use ias_core::{Governor, Reservation};
use tracing::{error, warn};

use crate::api::Api;
use crate::drain::InFlight;
use crate::estimate::Estimate;
use crate::observe::Observer;

/// How often a charge that failed for a passing reason is tried.
const SETTLE_ATTEMPTS: u32 = 4;

/// The wait before the second try; later tries wait longer.
const SETTLE_BACKOFF: Duration = Duration::from_millis(100);

/// An allowed request's reservation, to be settled or released.
///
/// Consumed by either: a reservation is never charged twice. Holding it
/// keeps the request counted in [`crate::Drain`].
pub(crate) struct Charge {
    pub governor: Governor,
    pub reservation: Reservation,
    pub api: Api,
    pub estimate: Estimate,
    pub observer: Option<Arc<dyn Observer>>,
    pub _in_flight: InFlight,
}

impl Charge {
    /// Charges `tokens` (capped at what ias accepts) and frees the reservation.
    ///
    /// A failure to charge is logged and does not take the answer from the
    /// caller: the model has already done the work.
    pub async fn settle(self, tokens: i64) {
        // An absurd figure from the upstream is charged as the most ias
        // accepts, rather than refused and not charged at all.
        let tokens = tokens.clamp(0, ias_core::validate::MAX_TOKENS);
        let id = self.reservation.id.0;
        for attempt in 1..=SETTLE_ATTEMPTS {
            match self.governor.settle(&self.reservation, tokens).await {
                Ok(_) => {
                    if let Some(observer) = &self.observer {
                        observer.charged(self.api, tokens);
                    }
                    return;
                }
                // Safe to repeat: a settle that did commit removed the
                // reservation, so a repeat finds nothing and charges nothing.
                Err(err) if err.is_retryable() && attempt < SETTLE_ATTEMPTS => {
                    warn!(reservation = id, attempt, error = %err, "retrying a charge");
                    tokio::time::sleep(SETTLE_BACKOFF * attempt).await;
                }
                Err(err) => {
                    error!(reservation = id, tokens, error = %err, "could not charge a request");
                    return;
                }
            }
        }
    }

    /// Frees the reservation without charging, for a request the model did not serve.
    pub async fn release(self) {
        if let Err(err) = self.governor.release(&self.reservation).await {
            warn!(reservation = self.reservation.id.0, error = %err, "could not release a reservation");
        }
    }

    /// What a request that stopped early produced: the prompt, plus the
    /// streamed text at 4 characters a token.
    pub fn produced(&self, streamed_chars: u64) -> i64 {
        self.estimate
            .prompt
            .saturating_add(crate::estimate::chars_to_tokens(streamed_chars))
    }
}
