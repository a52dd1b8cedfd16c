//! Rate limits: requests and tokens per minute, over an exact sliding window.
//!
//! A scope (an organization, a user or a key) may have a limit on requests
//! per minute (`rpm`), on tokens per minute (`tpm`), both or neither. A
//! request is granted when, counting it, the requests and the tokens granted
//! in the last 60 seconds stay within the limits; nothing above is granted.
//! A denial says how long until the request would fit: the time until
//! enough of the oldest grants leave the window.
//!
//! Tokens count at their estimate when granted and are corrected to the
//! real usage when the request settles.
//!
//! The window is kept by the store, so that every governor on one database
//! counts against the same limit: a governor leases credits (requests or
//! tokens) of a limit, grants from them in memory, and reports each grant
//! with its time; a reported grant stays in the store's window for 60
//! seconds, then its credits are free again. See [`crate::lease`] for the
//! protocol and [`grant`] and [`wait_ms`] for the rules every store applies.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The window's length in milliseconds.
pub const WINDOW_MS: i64 = 60_000;

/// The highest accepted limit, for requests and tokens alike.
pub const MAX_RATE: i64 = 1_000_000_000;

/// The rate limits of one scope; `None` means no limit of that kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RateLimits {
    /// Requests per minute.
    pub rpm: Option<i64>,
    /// Tokens per minute.
    pub tpm: Option<i64>,
}

impl RateLimits {
    /// No limit of either kind.
    pub const NONE: RateLimits = RateLimits {
        rpm: None,
        tpm: None,
    };

    /// A requests-per-minute limit alone.
    pub const fn requests(rpm: i64) -> Self {
        RateLimits {
            rpm: Some(rpm),
            tpm: None,
        }
    }

    /// A tokens-per-minute limit alone.
    pub const fn tokens(tpm: i64) -> Self {
        RateLimits {
            rpm: None,
            tpm: Some(tpm),
        }
    }

    /// Whether neither limit is set.
    pub fn is_none(&self) -> bool {
        self.rpm.is_none() && self.tpm.is_none()
    }

    /// Checks both limits: each, when set, must be between 1 and [`MAX_RATE`].
    pub fn validated(self) -> Result<Self> {
        for (field, value) in [("rpm", self.rpm), ("tpm", self.tpm)] {
            if let Some(v) = value
                && !(1..=MAX_RATE).contains(&v)
            {
                return Err(Error::invalid(
                    field,
                    v.to_string(),
                    "must be between 1 and 1000000000 (or none to remove the limit)",
                ));
            }
        }
        Ok(self)
    }
}

/// Which per-minute limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateKind {
    /// Requests per minute.
    Requests,
    /// Tokens per minute.
    Tokens,
}

/// A per-minute limit that a request does not fit in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateExceeded {
    /// Which limit.
    pub kind: RateKind,
    /// Its size.
    pub limit: i64,
    /// Requests or tokens granted in the last 60 seconds.
    pub current: i64,
    /// Milliseconds until the request would fit; `None` if it never can
    /// (more tokens than the limit itself).
    pub retry_after_ms: Option<i64>,
}

impl RateExceeded {
    /// Of two refusals, the one that clears later (never, before any time).
    pub fn later(self, other: RateExceeded) -> RateExceeded {
        let wait = |e: &RateExceeded| e.retry_after_ms.unwrap_or(i64::MAX);
        if wait(&other) > wait(&self) {
            other
        } else {
            self
        }
    }
}

impl RateKind {
    /// The stable machine-readable name: `requests` or `tokens`.
    pub fn as_str(self) -> &'static str {
        match self {
            RateKind::Requests => "requests",
            RateKind::Tokens => "tokens",
        }
    }

    /// The kind named `name`, if any.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "requests" => Some(RateKind::Requests),
            "tokens" => Some(RateKind::Tokens),
            _ => None,
        }
    }
}

impl RateLimits {
    /// The limit of one kind, if set.
    pub fn of(&self, kind: RateKind) -> Option<i64> {
        match kind {
            RateKind::Requests => self.rpm,
            RateKind::Tokens => self.tpm,
        }
    }
}

/// How long (ms) a scope stays under demand after a holder found too few
/// credits while other holders held some: meanwhile no holder is granted
/// spare credits of it, and every holder gives back what it holds unused.
pub const DEMAND_MS: i64 = 1_000;

/// Credits a store grants a holder that asks for `want`, of which it needs `need` now.
///
/// `left` is what neither a lease holds nor a grant in the window uses.
/// The needed part is granted in full or not at all, so a holder never
/// holds part of what one request needs and two waiting holders cannot
/// split the rest between them. The spare part is at most half of what
/// then remains, and nothing while the scope is under `demand`.
pub fn grant(want: i64, need: i64, left: i64, demand: bool) -> i64 {
    let want = want.max(0);
    let left = left.max(0);
    let must = need.clamp(0, want);
    if left < must {
        0
    } else if demand {
        must
    } else {
        must + (want - must).min((left - must) / 2)
    }
}

/// Milliseconds from `now_ms` until `need` credits fit, as grants leave the window.
///
/// `left` is what is left now; `window` yields the window's grants as
/// `(at_ms, amount)`, oldest first. `Some(0)`: it fits now. `None`: even
/// an empty window would not leave enough, because leases stand in the way.
pub fn wait_ms(
    left: i64,
    need: i64,
    window: impl IntoIterator<Item = (i64, i64)>,
    now_ms: i64,
) -> Option<i64> {
    let mut left = left;
    if left >= need {
        return Some(0);
    }
    for (at_ms, amount) in window {
        left = left.saturating_add(amount);
        if left >= need {
            return Some(
                at_ms
                    .saturating_add(WINDOW_MS)
                    .saturating_sub(now_ms)
                    .max(0),
            );
        }
    }
    None
}

/// Whether a grant made at `at_ms` still counts at `now_ms`.
pub fn in_window(at_ms: i64, now_ms: i64) -> bool {
    at_ms.saturating_add(WINDOW_MS) > now_ms
}

/// Whole seconds to wait for `ms` milliseconds, at least 1.
pub fn retry_after_secs(ms: i64) -> u64 {
    let secs = (ms.max(0) + 999) / 1000;
    u64::try_from(secs.max(1)).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_needed_part_is_granted_whole_or_not_at_all() {
        // Plenty left: what is needed, plus half of the rest at most.
        assert_eq!(grant(10, 1, 100, false), 10);
        assert_eq!(grant(100, 1, 21, false), 11);
        // Too little for what is needed: nothing, not a part.
        assert_eq!(grant(10, 5, 4, false), 0);
        assert_eq!(grant(10, 5, -3, false), 0);
        // Under demand: exactly what is needed.
        assert_eq!(grant(10, 5, 100, true), 5);
        // A probe (want 0) is granted nothing.
        assert_eq!(grant(0, 5, 100, false), 0);
    }

    #[test]
    fn waits_end_when_enough_old_grants_leave() {
        let window = [(0, 40), (10_000, 40), (20_000, 20)];
        assert_eq!(wait_ms(0, 1, window, 30_000), Some(30_000));
        // 50 need the first two gone: at 70 s.
        assert_eq!(wait_ms(0, 50, window, 30_000), Some(40_000));
        assert_eq!(wait_ms(60, 50, window, 30_000), Some(0));
        // Leases of 10 stand in the way of 100.
        assert_eq!(wait_ms(-10, 100, window, 30_000), None);
        assert!(in_window(0, 59_999));
        assert!(!in_window(0, 60_000));
    }

    #[test]
    fn kinds_have_stable_names() {
        for kind in [RateKind::Requests, RateKind::Tokens] {
            assert_eq!(RateKind::parse(kind.as_str()), Some(kind));
        }
        let limits = RateLimits {
            rpm: Some(1),
            tpm: None,
        };
        assert_eq!(limits.of(RateKind::Requests), Some(1));
        assert_eq!(limits.of(RateKind::Tokens), None);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(1), 1);
        assert_eq!(retry_after_secs(0), 1);
        assert_eq!(retry_after_secs(1_000), 1);
        assert_eq!(retry_after_secs(1_001), 2);
        assert_eq!(retry_after_secs(-5), 1);
    }

    #[test]
    fn limits_are_validated_with_the_field_named() {
        let bad = RateLimits {
            rpm: Some(0),
            tpm: None,
        };
        assert!(bad.validated().unwrap_err().to_string().contains("rpm"));
        let bad = RateLimits {
            rpm: None,
            tpm: Some(-3),
        };
        assert!(bad.validated().unwrap_err().to_string().contains("tpm"));
    }
}
