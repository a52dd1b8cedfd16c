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

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The window's length in milliseconds.
pub const WINDOW_MS: i64 = 60_000;

/// The highest accepted limit, for requests and tokens alike.
pub const MAX_RATE: i64 = 1_000_000_000;

/// Grant numbers, unique in the process: an idle window is dropped and a
/// new one made later, and a ticket of the old one must not match a grant
/// of the new one.
static NEXT_SEQ: AtomicU64 = AtomicU64::new(0);

/// The rate limits of one scope; `None` means no limit of that kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Copy)]
struct Grant {
    at_ms: i64,
    seq: u64,
    tokens: i64,
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

/// The grants of one scope in the last 60 seconds.
#[derive(Debug, Clone, Default)]
pub struct RateWindow {
    grants: VecDeque<Grant>,
    tokens: i64,
    last_ms: i64,
}

/// Identifies one grant in a [`RateWindow`], to correct its tokens later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateTicket(u64);

impl RateWindow {
    /// Whether a request of `tokens` fits in `limits` at `now_ms`.
    ///
    /// When both limits refuse it, the answer is the one that clears later,
    /// so waiting `retry_after_ms` is enough for both.
    pub fn check(&mut self, now_ms: i64, tokens: i64, limits: RateLimits) -> Option<RateExceeded> {
        let now_ms = self.evict(now_ms);
        let requests = limits
            .rpm
            .and_then(|rpm| self.requests_exceeded(rpm, now_ms));
        let tokens = limits
            .tpm
            .and_then(|tpm| self.tokens_exceeded(tokens.max(1), tpm, now_ms));
        match (requests, tokens) {
            (Some(a), Some(b)) => Some(a.later(b)),
            (a, b) => a.or(b),
        }
    }

    fn requests_exceeded(&self, rpm: i64, now_ms: i64) -> Option<RateExceeded> {
        let count = i64::try_from(self.grants.len()).unwrap_or(i64::MAX);
        // The request fits once `count - rpm + 1` of the oldest have left.
        (count >= rpm).then(|| RateExceeded {
            kind: RateKind::Requests,
            limit: rpm,
            current: count,
            retry_after_ms: Some(
                self.leaves_at(usize::try_from(count - rpm).unwrap_or(0)) - now_ms,
            ),
        })
    }

    fn tokens_exceeded(&self, need: i64, tpm: i64, now_ms: i64) -> Option<RateExceeded> {
        (self.tokens.saturating_add(need) > tpm).then(|| RateExceeded {
            kind: RateKind::Tokens,
            limit: tpm,
            current: self.tokens,
            retry_after_ms: self.wait_for_tokens(need, tpm, now_ms),
        })
    }

    /// Records a granted request of `tokens` at `now_ms`.
    pub fn record(&mut self, now_ms: i64, tokens: i64) -> RateTicket {
        let at_ms = self.evict(now_ms);
        // Increasing within the window too: its grants are recorded one at a time.
        let seq = NEXT_SEQ.fetch_add(1, Ordering::Relaxed);
        let tokens = tokens.max(1);
        self.grants.push_back(Grant { at_ms, seq, tokens });
        self.tokens = self.tokens.saturating_add(tokens);
        RateTicket(seq)
    }

    /// Corrects a grant's tokens to `actual`, if it is still in the window.
    pub fn correct(&mut self, ticket: RateTicket, actual: i64) {
        let found = self.grants.binary_search_by_key(&ticket.0, |g| g.seq);
        if let Ok(index) = found
            && let Some(grant) = self.grants.get_mut(index)
        {
            self.tokens = self
                .tokens
                .saturating_sub(grant.tokens)
                .saturating_add(actual);
            grant.tokens = actual;
        }
    }

    /// Whether the window holds no grant at `now_ms` (it can be dropped).
    pub fn is_idle(&mut self, now_ms: i64) -> bool {
        self.evict(now_ms);
        self.grants.is_empty()
    }

    /// Requests and tokens granted in the last 60 seconds.
    pub fn current(&mut self, now_ms: i64) -> (i64, i64) {
        self.evict(now_ms);
        let count = i64::try_from(self.grants.len()).unwrap_or(i64::MAX);
        (count, self.tokens)
    }

    /// Drops grants older than the window; returns the time to use as now.
    ///
    /// Time never goes backwards inside a window: a clock that steps back
    /// is treated as standing still, so grants stay in order.
    fn evict(&mut self, now_ms: i64) -> i64 {
        let now_ms = now_ms.max(self.last_ms);
        self.last_ms = now_ms;
        while let Some(oldest) = self.grants.front() {
            if oldest.at_ms + WINDOW_MS > now_ms {
                break;
            }
            self.tokens = self.tokens.saturating_sub(oldest.tokens);
            self.grants.pop_front();
        }
        now_ms
    }

    fn leaves_at(&self, index: usize) -> i64 {
        self.grants
            .get(index)
            .map_or(self.last_ms, |g| g.at_ms + WINDOW_MS)
    }

    fn wait_for_tokens(&self, need: i64, tpm: i64, now_ms: i64) -> Option<i64> {
        if need > tpm {
            return None;
        }
        let mut in_window = self.tokens;
        for grant in &self.grants {
            in_window = in_window.saturating_sub(grant.tokens);
            if in_window.saturating_add(need) <= tpm {
                return Some(grant.at_ms + WINDOW_MS - now_ms);
            }
        }
        Some(0)
    }
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
    fn a_burst_exactly_at_the_limit_passes_and_one_more_waits() {
        let mut w = RateWindow::default();
        for i in 0..5 {
            assert_eq!(w.check(1_000 + i * 100, 1, RateLimits::requests(5)), None);
            w.record(1_000 + i * 100, 1);
        }
        let over = w.check(2_000, 1, RateLimits::requests(5)).unwrap();
        assert_eq!(over.kind, RateKind::Requests);
        assert_eq!(over.current, 5);
        // The first grant (at 1_000) leaves at 61_000.
        assert_eq!(over.retry_after_ms, Some(59_000));
        assert_eq!(
            w.check(60_999, 1, RateLimits::requests(5))
                .map(|e| e.retry_after_ms),
            Some(Some(1))
        );
        assert_eq!(w.check(61_000, 1, RateLimits::requests(5)), None);
    }

    #[test]
    fn tokens_wait_for_enough_old_grants_to_leave() {
        let mut w = RateWindow::default();
        w.record(0, 40);
        w.record(10_000, 40);
        w.record(20_000, 20);
        assert_eq!(
            w.check(30_000, 1, RateLimits::tokens(100))
                .unwrap()
                .retry_after_ms,
            Some(30_000)
        );
        // 50 tokens need the first two grants gone: at 70_000.
        assert_eq!(
            w.check(30_000, 50, RateLimits::tokens(100))
                .unwrap()
                .retry_after_ms,
            Some(40_000)
        );
        assert_eq!(w.check(70_000, 50, RateLimits::tokens(100)), None);
    }

    #[test]
    fn a_request_larger_than_the_limit_never_fits() {
        let mut w = RateWindow::default();
        let over = w.check(0, 101, RateLimits::tokens(100)).unwrap();
        assert_eq!(over.retry_after_ms, None);
        assert_eq!(w.check(0, 100, RateLimits::tokens(100)), None);
    }

    #[test]
    fn corrections_follow_the_real_usage() {
        let mut w = RateWindow::default();
        let t = w.record(0, 90);
        assert!(w.check(0, 20, RateLimits::tokens(100)).is_some());
        w.correct(t, 10);
        assert_eq!(w.check(0, 90, RateLimits::tokens(100)), None);
        w.correct(t, 150);
        assert_eq!(w.current(0), (1, 150));
    }

    #[test]
    fn a_clock_stepping_back_keeps_grants_counted() {
        let mut w = RateWindow::default();
        w.record(100_000, 1);
        assert!(w.check(50_000, 1, RateLimits::requests(1)).is_some());
        assert!(w.check(159_999, 1, RateLimits::requests(1)).is_some());
        assert!(w.check(160_000, 1, RateLimits::requests(1)).is_none());
    }

    #[test]
    fn the_later_of_two_refusals_is_reported() {
        let both = RateLimits {
            rpm: Some(2),
            tpm: Some(1_000),
        };
        let mut w = RateWindow::default();
        w.record(0, 15);
        w.record(45_000, 855);
        // Both limits refuse at 46 s: requests clear at 60 s, tokens at 105 s.
        let over = w.check(46_000, 200, both).unwrap();
        assert_eq!(over.kind, RateKind::Tokens);
        assert_eq!(over.retry_after_ms, Some(59_000));
        assert_eq!(w.check(105_000, 200, both), None);
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
