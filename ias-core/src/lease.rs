//! Budget leases: how a governor holds part of a budget in memory, exactly.
//!
//! The store keeps, per scope (an organization or a user) and period, the
//! tokens `used` and the tokens `held` by leases. A governor takes a lease
//! (a slice of what is left) with one atomic store call, grants requests
//! from it in memory, and in later calls charges what those requests used
//! and gives back what it no longer needs. The store never lets
//! `used + held` of leases it grants exceed the limit, so any number of
//! governors, in one process or many, never grant more than the limit
//! between them (except the documented overshoot of requests that use
//! more than they estimated).
//!
//! A lease has an expiry that every call of its holder renews; a lease
//! whose holder stopped (a crashed process) is taken back by the next
//! holder that needs tokens of the same scope once it has expired.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::budget::LimitScope;
use crate::domain::{KeyId, OrgId, UserId};

/// One scope's part of a [`LeaseSync`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseEntry {
    /// `Org` or `User`.
    pub scope: LimitScope,
    /// The organization's or user's id.
    pub scope_id: i64,
    /// The period key, `YYYY-MM`.
    pub period: String,
    /// Tokens to charge to `used`; taken out of the holder's lease first.
    pub charge: i64,
    /// Tokens of the lease to give back (after the charge).
    pub give_back: i64,
    /// Tokens to add to the lease: `need` of them if what is left allows,
    /// plus a spare part, of which at most half of what then remains is
    /// granted, so one holder never takes the rest of a limit for later.
    pub want: i64,
    /// The part of `want` a waiting request needs (0 for none).
    pub need: i64,
}

/// One settled request, recorded with the charge that pays for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageEvent {
    /// The organization charged.
    pub org_id: OrgId,
    /// The user charged.
    pub user_id: UserId,
    /// The key presented.
    pub key_id: KeyId,
    /// The normalised model name.
    pub model: String,
    /// The budget period key, `YYYY-MM`.
    pub period: String,
    /// The organization's local day, `YYYY-MM-DD`, for daily roll-ups.
    pub day: String,
    /// Tokens that were reserved for the request.
    pub reserved: i64,
    /// Tokens the request really used.
    pub tokens: i64,
    /// When it was settled.
    pub at: DateTime<Utc>,
}

/// Everything one governor hands the store in one atomic call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSync {
    /// The governor's holder id, unique per running governor.
    pub holder: String,
    /// The time of the call: leases of other holders that expired before it may be taken back.
    pub now: DateTime<Utc>,
    /// The new expiry of every lease this holder keeps.
    pub lease_expires_at: DateTime<Utc>,
    /// Charges, give-backs and wants, per scope.
    pub entries: Vec<LeaseEntry>,
    /// Usage events to append and roll up per day.
    pub events: Vec<UsageEvent>,
}

/// A scope's state after a [`LeaseSync`], one per entry, in order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseState {
    /// The scope's monthly limit; `None` for a user without one.
    pub limit: Option<i64>,
    /// Tokens used in the period, by every holder.
    pub used: i64,
    /// Tokens held by every holder's leases.
    pub held: i64,
    /// Tokens this holder's lease now holds.
    pub lease: i64,
    /// Tokens granted by this call (at most the entry's `want`).
    pub granted: i64,
}

/// Applies one entry to a scope's numbers, as every store must.
///
/// `limit` is the scope's limit, `used` and `held` its counters, `lease`
/// this holder's lease. Stores call this inside the transaction that reads
/// and writes those numbers, so the rule is written once.
pub fn apply(
    entry: &LeaseEntry,
    limit: Option<i64>,
    used: i64,
    held: i64,
    lease: i64,
) -> LeaseState {
    let charge = entry.charge.max(0);
    let consumed = charge.min(lease);
    let mut lease = lease - consumed;
    let mut held = (held - consumed).max(0);
    let used = used.saturating_add(charge);

    let give = entry.give_back.clamp(0, lease);
    lease -= give;
    held = (held - give).max(0);

    let want = entry.want.max(0);
    let granted = match limit {
        Some(limit) => {
            let left = limit.saturating_sub(used).saturating_sub(held).max(0);
            let must = entry.need.clamp(0, want);
            if left <= must {
                left
            } else {
                must + (want - must).min((left - must) / 2)
            }
        }
        None => want,
    };
    LeaseState {
        limit,
        used,
        held: held.saturating_add(granted),
        lease: lease.saturating_add(granted),
        granted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(charge: i64, give_back: i64, want: i64) -> LeaseEntry {
        LeaseEntry {
            scope: LimitScope::Org,
            scope_id: 1,
            period: "2026-12".into(),
            charge,
            give_back,
            want,
            need: want,
        }
    }

    #[test]
    fn grants_never_exceed_what_is_left() {
        let s = apply(&entry(0, 0, 500), Some(1_000), 600, 300, 0);
        assert_eq!((s.granted, s.held, s.lease), (100, 400, 100));
        let s = apply(&entry(0, 0, 500), Some(1_000), 1_200, 0, 0);
        assert_eq!(s.granted, 0);
    }

    #[test]
    fn charges_come_out_of_the_lease_and_overshoot_goes_to_used() {
        let s = apply(&entry(150, 0, 0), Some(1_000), 0, 100, 100);
        assert_eq!((s.used, s.held, s.lease), (150, 0, 0));
    }

    #[test]
    fn give_back_returns_tokens_to_everyone() {
        let s = apply(&entry(10, 50, 0), Some(100), 0, 100, 100);
        assert_eq!((s.used, s.held, s.lease), (10, 40, 40));
        // Giving back more than is held gives back what is held.
        let s = apply(&entry(0, 500, 0), Some(100), 0, 100, 100);
        assert_eq!((s.held, s.lease), (0, 0));
    }

    #[test]
    fn the_spare_part_takes_at_most_half_of_what_remains() {
        let mut e = entry(0, 0, 1_000);
        e.need = 100;
        // 500 left: the 100 needed, then half of the other 400.
        let s = apply(&e, Some(1_000), 500, 0, 0);
        assert_eq!(s.granted, 300);
        // Plenty left: everything wanted.
        let s = apply(&e, Some(100_000), 0, 0, 0);
        assert_eq!(s.granted, 1_000);
        // Less left than needed: what is left.
        let s = apply(&e, Some(1_000), 950, 0, 0);
        assert_eq!(s.granted, 50);
    }

    #[test]
    fn no_limit_grants_what_is_wanted() {
        let s = apply(&entry(0, 0, 7), None, 10, 0, 0);
        assert_eq!(s.granted, 7);
    }
}
