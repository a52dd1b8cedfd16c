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
//! A lease has an expiry that its holder's calls renew once the lease is
//! past half its life (a call renews what would expire by the midpoint of
//! its time and the new expiry), so a holder with many leases does not
//! rewrite them all on every call; a lease whose holder stopped (a crashed
//! process) is taken back by the next holder that needs tokens of the same
//! scope once it has expired.
//!
//! # Rate leases
//!
//! Per-minute limits ([`crate::rate`]) are leased the same way, in the same
//! call ([`RateEntry`], [`RateState`]). The store keeps, per scope (an
//! organization, a user or a key) and kind (requests or tokens), the grants
//! of the last 60 seconds (the window, `used` in total) and what every
//! holder's lease holds (`held`). A holder grants requests from its lease
//! in memory and reports each grant with its time at its next call; a
//! reported grant moves from the lease to the window and leaves it 60
//! seconds after it was made. The store never grants past
//! `used + held <= limit`, so holders together never grant more than the
//! limit in any 60 seconds.
//!
//! For one rate entry, in one transaction, a store:
//!
//! 1. charges the entry's positive charges: together they come out of the
//!    holder's lease (at most all of it), and each whose time is still in
//!    the window is added to the window at that time;
//! 2. applies its negative charges (corrections of grants reported
//!    earlier), in order: each takes back from the window's grant at its
//!    time at most what that grant holds, and adds what it took to the
//!    holder's lease; a correction whose time has left the window does
//!    nothing;
//! 3. gives back `give_back` (at most the lease);
//! 4. drops the window's grants that left it (`at + 60 s <= now`);
//! 5. when the entry wants credits, takes back other holders' rate leases
//!    that expired at least 60 seconds before `now` (a stopped holder's
//!    grants not yet reported stay counted until they would have left the
//!    window);
//! 6. grants `grant(want, need, limit - used - held, demand)`
//!    ([`crate::rate::grant`]), where `demand` says the scope is under demand;
//! 7. when less than `need` was granted, answers how long until `need`
//!    fits ([`crate::rate::wait_ms`]) and, if the entry wants credits and
//!    other holders hold some, puts the scope under demand until
//!    `now + `[`crate::rate::DEMAND_MS`].
//!
//! A holder whose lease is on a scope under demand is told so (`recall`,
//! or [`Synced::recalled`] for leases not in the call) and gives back what
//! it holds unused, so a holder that found too few credits gets them once
//! the others have answered: near a limit every credit is granted, none
//! twice.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::budget::LimitScope;
use crate::domain::{KeyId, OrgId, UserId};
use crate::rate::RateKind;

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
    /// A number the holder raises with every new sync. A sync whose number
    /// the store has already seen from this holder is the retry of one
    /// whose answer was lost (the connection broke after the store applied
    /// it, say): the store applies none of it again (no charge, give-back,
    /// grant or event), renews the holder's leases and answers the current
    /// state, so a retried sync never counts twice.
    pub seq: u64,
    /// The time of the call: leases of other holders that expired before it may be taken back.
    pub now: DateTime<Utc>,
    /// The new expiry of the leases this call grants or renews; the holder's
    /// leases expiring by the midpoint of `now` and this are renewed to it.
    pub lease_expires_at: DateTime<Utc>,
    /// Charges, give-backs and wants, per scope.
    pub entries: Vec<LeaseEntry>,
    /// Usage events to append and roll up per day.
    pub events: Vec<UsageEvent>,
    /// Rate-limit charges, give-backs and wants, per scope and kind.
    pub rates: Vec<RateEntry>,
}

/// A rate limit: a scope's requests or tokens per minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RateScope {
    /// `Org`, `User` or `Key`.
    pub scope: LimitScope,
    /// The organization's, user's or key's id.
    pub scope_id: i64,
    /// Requests or tokens.
    pub kind: RateKind,
}

/// One rate limit's part of a [`LeaseSync`]; see [rate leases](self#rate-leases).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateEntry {
    /// Which limit.
    pub rate: RateScope,
    /// Grants made from the lease since the last call, and corrections
    /// (negative) of grants reported earlier, in the order they were made.
    pub charges: Vec<RateCharge>,
    /// Credits of the lease to give back (after the charges).
    pub give_back: i64,
    /// Credits to add to the lease: `need`, whole or not at all, plus a spare part.
    pub want: i64,
    /// The part of `want` a waiting request needs; with `want` 0, a probe:
    /// nothing is granted, but the answer says whether and when `need` fits.
    pub need: i64,
}

/// Credits a holder granted at one time, or a correction of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateCharge {
    /// When the grant was made, Unix milliseconds.
    pub at_ms: i64,
    /// Credits: a grant (positive) or a correction of grants made at `at_ms` (negative).
    pub amount: i64,
}

/// A rate limit's state after a [`LeaseSync`], one per [`RateEntry`], in order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateState {
    /// The limit; `None` when the scope has no limit of this kind.
    pub limit: Option<i64>,
    /// Credits of the grants in the window, by every holder.
    pub used: i64,
    /// Credits held by every holder's leases.
    pub held: i64,
    /// Credits this holder's lease now holds.
    pub lease: i64,
    /// Credits granted by this call.
    pub granted: i64,
    /// When less than `need` was granted: milliseconds until `need` fits as
    /// grants leave the window (`Some(0)`: it fits now); `None` when other
    /// holders' leases stand in the way.
    pub wait_ms: Option<i64>,
    /// The scope is under demand: give back what the lease holds unused.
    pub recall: bool,
}

/// The store's answer to a [`LeaseSync`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Synced {
    /// One state per [`LeaseEntry`], in order.
    pub budgets: Vec<LeaseState>,
    /// One state per [`RateEntry`], in order.
    pub rates: Vec<RateState>,
    /// Other rate leases of the holder on scopes under demand.
    pub recalled: Vec<RateScope>,
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
