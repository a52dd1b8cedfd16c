//! Rate meters: this process's share of per-minute limits, leased from the store.
//!
//! A meter holds credits of one scope's requests or tokens per minute (its
//! lease) and the grants made from them that the store has not taken yet.
//! A request fits when the lease has enough credits no grant uses; the
//! store keeps the window, so no grant is counted twice and every
//! governor on one database counts against the same limit
//! (see [`crate::lease`]).

use rustc_hash::FxHashMap as HashMap;

use crate::budget::LimitScope;
use crate::lease::{RateCharge, RateEntry, RateScope, RateState};
use crate::rate::{self, RateExceeded, RateKind, RateLimits};

use super::{DrainMode, SLICE_DIVISOR, Want, next_slice};

/// How long a refusal waits when the store gave no time: another holder's
/// lease stands in the way, and holders answer a recall within a second.
const UNKNOWN_WAIT_MS: i64 = 1_000;

/// A grant or a correction the store has not taken yet.
#[derive(Debug, Clone, Copy)]
struct Pending {
    seq: u64,
    at_ms: i64,
    amount: i64,
}

/// What the store last answered when it could not cover a request.
#[derive(Debug, Clone, Copy)]
struct Short {
    /// When it answered (Unix ms).
    at_ms: i64,
    /// What the request lacked.
    need: i64,
    /// How long from then until the request fits, if known.
    wait_ms: Option<i64>,
    /// Other holders held credits of the scope.
    others: bool,
}

/// One scope's requests or tokens per minute, as this process sees them.
#[derive(Debug, Default)]
struct RateMeter {
    /// Credits this process holds from the store.
    lease: i64,
    /// Grants and corrections not yet handed to the store, by `seq`.
    unreported: Vec<Pending>,
    /// Credits the unreported grants use. Negative corrections free
    /// nothing here: the store adds them to the lease when it takes them.
    unreported_use: i64,
    /// Grants and corrections handed to a sync that has not answered yet.
    in_flight: Vec<Pending>,
    in_flight_use: i64,
    /// The store's limit, window total and leases at the last sync.
    limit: Option<i64>,
    used_base: i64,
    held_base: i64,
    synced: bool,
    /// Credits to keep in hand beyond current needs; grows with demand.
    slice: i64,
    /// Whether credits were asked for since the last periodic sync.
    acquired: bool,
    /// Credits granted since the last periodic sync.
    granted_round: i64,
    /// The store's last answer granted less than was wanted: keep no spare.
    tight: bool,
    /// The limit changed since the last sync: give everything back and lease anew.
    stale: bool,
    /// Another holder waits for credits of this scope: keep none unused.
    recalled: bool,
    short: Option<Short>,
}

impl RateMeter {
    fn free(&self) -> i64 {
        self.lease - self.unreported_use - self.in_flight_use
    }

    fn fits(&self, need: i64, leases_valid: bool) -> bool {
        leases_valid && !self.stale && need <= self.free()
    }

    fn is_idle(&self) -> bool {
        self.lease == 0 && self.unreported.is_empty() && self.in_flight.is_empty() && !self.acquired
    }

    /// Requests or tokens granted in the window, as far as this process knows.
    fn current(&self) -> i64 {
        self.used_base
            .saturating_add(self.unreported_use)
            .saturating_add(self.in_flight_use)
    }

    /// The grants and corrections for the store, adjacent ones of one time and sign merged.
    fn charges(pending: &[Pending]) -> Vec<RateCharge> {
        let mut charges: Vec<RateCharge> = Vec::with_capacity(pending.len());
        for p in pending.iter().filter(|p| p.amount != 0) {
            match charges.last_mut() {
                Some(last) if last.at_ms == p.at_ms && (last.amount > 0) == (p.amount > 0) => {
                    last.amount = last.amount.saturating_add(p.amount);
                }
                _ => charges.push(RateCharge {
                    at_ms: p.at_ms,
                    amount: p.amount,
                }),
            }
        }
        charges
    }
}

/// A tokens-per-minute grant of an open reservation, corrected when it closes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokenGrant {
    rate: RateScope,
    seq: u64,
    at_ms: i64,
    tokens: i64,
}

/// What a refused request may still hope for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RateRetry {
    /// The store says it does not fit before the refusal's wait.
    Final,
    /// The store had room: other requests of this process took it first. Ask again.
    Contended,
    /// Other holders hold credits; they give back what they do not use. Wait, then ask again.
    Recall,
}

/// A rate limit a request does not fit in, in this process.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RateShort {
    rate: RateScope,
    need: i64,
    limit: i64,
}

/// Up to six limits (requests and tokens of the org, the user and the key).
pub(crate) type Shorts = [Option<RateShort>; 6];

/// Whether a request asks for more than one of the limits it is short of.
pub(crate) fn never_fits(shorts: &Shorts) -> bool {
    shorts.iter().flatten().any(|s| s.need > s.limit)
}

/// Every rate meter of one organization's ledger.
#[derive(Debug, Default)]
pub(crate) struct RateMeters {
    meters: HashMap<RateScope, RateMeter>,
    next_seq: u64,
}

/// The limits of one request, with what each needs: `(rate, need, limit)`.
fn limits_of(
    rates: &[(LimitScope, i64, RateLimits); 3],
    tokens: i64,
) -> impl Iterator<Item = (RateScope, i64, i64)> + '_ {
    let tokens = tokens.max(1);
    rates.iter().flat_map(move |(scope, id, limits)| {
        [(RateKind::Requests, 1), (RateKind::Tokens, tokens)]
            .into_iter()
            .filter_map(move |(kind, need)| {
                let limit = limits.of(kind)?;
                let rate = RateScope {
                    scope: *scope,
                    scope_id: *id,
                    kind,
                };
                Some((rate, need, limit))
            })
    })
}

impl RateMeters {
    /// The limits that a request of `tokens` does not fit in, in this process.
    pub fn check(
        &mut self,
        rates: &[(LimitScope, i64, RateLimits); 3],
        tokens: i64,
        leases_valid: bool,
    ) -> Shorts {
        let mut shorts: Shorts = [None; 6];
        let mut n = 0;
        for (rate, need, limit) in limits_of(rates, tokens) {
            let meter = self.meters.entry(rate).or_default();
            if !meter.fits(need, leases_valid)
                && let Some(slot) = shorts.get_mut(n)
            {
                *slot = Some(RateShort { rate, need, limit });
                n += 1;
            }
        }
        shorts
    }

    /// Records a granted request at `now_ms`; the tokens-per-minute grants to correct later.
    pub fn record(
        &mut self,
        rates: &[(LimitScope, i64, RateLimits); 3],
        tokens: i64,
        now_ms: i64,
    ) -> [Option<TokenGrant>; 3] {
        let mut grants = [None; 3];
        let mut n = 0;
        for (rate, need, _) in limits_of(rates, tokens) {
            self.next_seq += 1;
            let seq = self.next_seq;
            let meter = self.meters.entry(rate).or_default();
            meter.unreported.push(Pending {
                seq,
                at_ms: now_ms,
                amount: need,
            });
            meter.unreported_use = meter.unreported_use.saturating_add(need);
            meter.granted_round = meter.granted_round.saturating_add(need);
            if rate.kind == RateKind::Tokens
                && let Some(slot) = grants.get_mut(n)
            {
                *slot = Some(TokenGrant {
                    rate,
                    seq,
                    at_ms: now_ms,
                    tokens: need,
                });
                n += 1;
            }
        }
        grants
    }

    /// Corrects tokens-per-minute grants to `actual`, if they are still in the window.
    pub fn correct(&mut self, grants: &[Option<TokenGrant>; 3], actual: i64, now_ms: i64) {
        for grant in grants.iter().flatten() {
            if !rate::in_window(grant.at_ms, now_ms) {
                continue;
            }
            let Some(meter) = self.meters.get_mut(&grant.rate) else {
                continue;
            };
            let found = meter.unreported.binary_search_by_key(&grant.seq, |p| p.seq);
            if let Ok(i) = found
                && let Some(pending) = meter.unreported.get_mut(i)
            {
                // Not reported yet: correct it in place.
                meter.unreported_use = meter
                    .unreported_use
                    .saturating_sub(pending.amount)
                    .saturating_add(actual);
                pending.amount = actual;
                continue;
            }
            let delta = actual.saturating_sub(grant.tokens);
            if delta != 0 {
                self.next_seq += 1;
                meter.unreported.push(Pending {
                    seq: self.next_seq,
                    at_ms: grant.at_ms,
                    amount: delta,
                });
                meter.unreported_use = meter.unreported_use.saturating_add(delta.max(0));
            }
        }
    }

    /// Credits to ask the store for so that `need` fits, with room to spare.
    pub fn want(&mut self, rate: RateScope, need: i64, limit: i64) -> Want {
        let meter = self.meters.entry(rate).or_default();
        let cap = (limit / SLICE_DIVISOR).max(need);
        meter.slice = meter.slice.saturating_mul(2).clamp(need, cap);
        meter.acquired = true;
        let short = if meter.stale {
            need
        } else {
            need - meter.free()
        }
        .max(0);
        Want {
            need: short,
            total: short.saturating_add(meter.slice),
        }
    }

    /// Credits to ask the store for, for every short limit.
    pub fn wants(&mut self, shorts: &Shorts) -> Vec<(RateScope, Want)> {
        shorts
            .iter()
            .flatten()
            .map(|short| (short.rate, self.want(short.rate, short.need, short.limit)))
            .collect()
    }

    /// What a dry run asks the store: how much each short limit lacks, granting nothing.
    pub fn probe(&mut self, shorts: &Shorts) -> Vec<(RateScope, Want)> {
        shorts
            .iter()
            .flatten()
            .map(|short| {
                let meter = self.meters.entry(short.rate).or_default();
                let lacks = if meter.stale {
                    short.need
                } else {
                    (short.need - meter.free()).max(0)
                };
                (
                    short.rate,
                    Want {
                        need: lacks,
                        total: 0,
                    },
                )
            })
            .collect()
    }

    /// Whether the store's answer to a dry run's [`RateMeters::probe`] lets every short limit fit.
    pub fn probe_fits(&self, shorts: &Shorts) -> bool {
        shorts.iter().flatten().all(|short| {
            self.meters
                .get(&short.rate)
                .and_then(|m| m.short)
                .is_none_or(|s| s.wait_ms == Some(0))
        })
    }

    /// The refusal for limits a request does not fit in, after the store was asked.
    ///
    /// Of several, a limit the request never fits in comes first; then one
    /// where asking again may help; else the one that clears last.
    pub fn refusal(&self, shorts: &Shorts, now_ms: i64) -> (LimitScope, RateExceeded, RateRetry) {
        let mut worst: Option<(LimitScope, RateExceeded, RateRetry)> = None;
        for short in shorts.iter().flatten() {
            let found = self.refusal_of(short, now_ms);
            worst = Some(match worst {
                None => found,
                Some(current) => pick(current, found),
            });
        }
        // INVARIANT: called with at least one short limit; the fallback is never used.
        worst.unwrap_or((
            LimitScope::Org,
            RateExceeded {
                kind: RateKind::Requests,
                limit: 0,
                current: 0,
                retry_after_ms: Some(UNKNOWN_WAIT_MS),
            },
            RateRetry::Final,
        ))
    }

    fn refusal_of(&self, short: &RateShort, now_ms: i64) -> (LimitScope, RateExceeded, RateRetry) {
        let meter = self.meters.get(&short.rate);
        let mut exceeded = RateExceeded {
            kind: short.rate.kind,
            limit: short.limit,
            current: meter.map_or(0, RateMeter::current),
            retry_after_ms: Some(UNKNOWN_WAIT_MS),
        };
        if short.need > short.limit {
            exceeded.retry_after_ms = None;
            return (short.rate.scope, exceeded, RateRetry::Final);
        }
        let retry = match meter.and_then(|m| m.short) {
            None => RateRetry::Contended,
            Some(s) => {
                let wait = s.wait_ms.map(|w| s.at_ms.saturating_add(w) - now_ms);
                exceeded.retry_after_ms = Some(wait.unwrap_or(UNKNOWN_WAIT_MS));
                match wait {
                    Some(w) if w <= 0 => RateRetry::Contended,
                    _ if s.others => RateRetry::Recall,
                    _ => RateRetry::Final,
                }
            }
        };
        (short.rate.scope, exceeded, retry)
    }

    /// Whether the store said, within `memory_ms` and before the wait it
    /// gave has passed, that every short limit cannot fit a request lacking
    /// just as much, with no other holder holding credits of it.
    pub fn known_refused(&self, shorts: &Shorts, now_ms: i64, memory_ms: i64) -> bool {
        let mut shorts = shorts.iter().flatten().peekable();
        shorts.peek().is_some()
            && shorts.all(|short| {
                let Some(meter) = self.meters.get(&short.rate) else {
                    return false;
                };
                let lacks = short.need - meter.free();
                meter.short.is_some_and(|s| match s.wait_ms {
                    // The same lack: the wait the store gave holds for it.
                    Some(wait) if !s.others && !meter.stale && lacks == s.need => {
                        now_ms < s.at_ms.saturating_add(wait.min(memory_ms))
                    }
                    _ => false,
                })
            })
    }

    /// Takes out what the store should learn: grants, give-backs, wants.
    pub fn drain(&mut self, wants: &[(RateScope, Want)], mode: DrainMode) -> Vec<RateEntry> {
        for (rate, _) in wants {
            self.meters.entry(*rate).or_default();
        }
        let mut entries = Vec::new();
        for (rate, meter) in &mut self.meters {
            let mut want = wants
                .iter()
                .find(|(r, _)| r == rate)
                .map_or(Want { need: 0, total: 0 }, |(_, w)| *w);
            let free = meter.free().max(0);
            if mode == DrainMode::Periodic {
                let cap = meter.limit.map_or(i64::MAX, |limit| limit / SLICE_DIVISOR);
                meter.slice = if meter.recalled || meter.tight {
                    0
                } else {
                    next_slice(meter.slice, meter.granted_round, cap)
                };
                let busy = meter.granted_round > 0 && meter.limit.is_some() && !meter.stale;
                meter.granted_round = 0;
                meter.acquired = false;
                if busy && free < meter.slice / 2 {
                    // Refill in this round's sync, which is made anyway.
                    want.total = meter.slice - free;
                }
            }
            let removed = meter.synced && meter.limit.is_none();
            // Recalled: another governor waits; what no request here asked for goes.
            let recalled = meter.recalled && want.total == 0;
            let give = if mode == DrainMode::Closing || meter.stale || removed || recalled {
                free
            } else if mode == DrainMode::Asking {
                0
            } else {
                (free - meter.slice).max(0)
            };
            let quiet = want.total == 0 && want.need == 0;
            if meter.unreported.is_empty() && give == 0 && quiet {
                continue;
            }
            meter.lease -= give;
            meter.in_flight.append(&mut meter.unreported);
            meter.in_flight_use = meter
                .in_flight_use
                .saturating_add(std::mem::take(&mut meter.unreported_use));
            entries.push(RateEntry {
                rate: *rate,
                charges: RateMeter::charges(&meter.in_flight),
                give_back: give,
                want: want.total,
                need: want.need,
            });
        }
        entries
    }

    /// Takes in the store's answer to a sync of `entries`, made at `now_ms`.
    pub fn apply(&mut self, entries: &[RateEntry], states: &[RateState], now_ms: i64) {
        for (entry, state) in entries.iter().zip(states) {
            let meter = self.meters.entry(entry.rate).or_default();
            if state.granted < entry.want {
                // Near the limit: keep no spare, so what is left goes to whoever needs it.
                meter.slice = 0;
                meter.tight = true;
            } else if entry.want > 0 {
                meter.tight = false;
            }
            meter.lease = state.lease;
            meter.limit = state.limit;
            meter.used_base = state.used;
            meter.held_base = state.held;
            meter.synced = true;
            meter.in_flight.clear();
            meter.in_flight_use = 0;
            meter.stale = false;
            meter.recalled = state.recall;
            if state.recall {
                meter.slice = 0;
            }
            meter.short = (state.granted < entry.need).then_some(Short {
                at_ms: now_ms,
                need: entry.need,
                wait_ms: state.wait_ms,
                others: state.held > state.lease,
            });
        }
    }

    /// Puts back what a failed sync took out; nothing is lost.
    pub fn restore(&mut self, entries: &[RateEntry]) {
        for entry in entries {
            let meter = self.meters.entry(entry.rate).or_default();
            meter.lease += entry.give_back;
            let mut later = std::mem::take(&mut meter.unreported);
            meter.unreported = std::mem::take(&mut meter.in_flight);
            meter.unreported.append(&mut later);
            meter.unreported_use = meter
                .unreported_use
                .saturating_add(std::mem::take(&mut meter.in_flight_use));
        }
    }

    /// Marks the meters of rate leases the store recalled.
    pub fn recall(&mut self, recalled: &[RateScope]) {
        for rate in recalled {
            if let Some(meter) = self.meters.get_mut(rate) {
                meter.recalled = true;
                meter.slice = 0;
            }
        }
    }

    /// Whether a recalled meter holds credits it should give back now.
    pub fn owes(&self) -> bool {
        self.meters
            .values()
            .any(|m| m.recalled && m.free() > 0 && m.in_flight.is_empty())
    }

    /// Marks both meters of one scope as leased under an old limit.
    pub fn mark_stale(&mut self, scope: LimitScope, id: i64) {
        for (rate, meter) in &mut self.meters {
            if rate.scope == scope && rate.scope_id == id {
                meter.stale = true;
            }
        }
    }

    /// Forgets meters that hold nothing and were not asked for since the last round.
    pub fn forget_idle(&mut self) {
        self.meters.retain(|_, meter| !meter.is_idle());
    }
}

/// Of two refusals, the one to report: never first, then one worth asking
/// again for, then the one that clears later.
fn pick(
    a: (LimitScope, RateExceeded, RateRetry),
    b: (LimitScope, RateExceeded, RateRetry),
) -> (LimitScope, RateExceeded, RateRetry) {
    let never = |r: &(LimitScope, RateExceeded, RateRetry)| r.1.retry_after_ms.is_none();
    let hopeful = |r: &(LimitScope, RateExceeded, RateRetry)| r.2 != RateRetry::Final;
    if never(&a) || never(&b) {
        return if never(&a) { a } else { b };
    }
    if hopeful(&a) != hopeful(&b) {
        return if hopeful(&a) { a } else { b };
    }
    if a.1.later(b.1) == a.1 { a } else { b }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rpm: Option<i64>, tpm: Option<i64>) -> [(LimitScope, i64, RateLimits); 3] {
        [
            (LimitScope::Org, 1, RateLimits { rpm, tpm }),
            (LimitScope::User, 2, RateLimits::NONE),
            (LimitScope::Key, 3, RateLimits::NONE),
        ]
    }

    fn tokens() -> RateScope {
        RateScope {
            scope: LimitScope::Org,
            scope_id: 1,
            kind: RateKind::Tokens,
        }
    }

    /// Answers a drain as a store with `lease` credits for the holder would.
    fn answer(meters: &mut RateMeters, entries: &[RateEntry], lease: i64, now_ms: i64) {
        let states: Vec<_> = entries
            .iter()
            .map(|e| RateState {
                limit: Some(100),
                used: 0,
                held: lease,
                lease,
                granted: e.want.min(lease),
                wait_ms: None,
                recall: false,
            })
            .collect();
        meters.apply(entries, &states, now_ms);
    }

    #[test]
    fn grants_come_from_the_lease_and_are_reported_once() {
        let rates = limits(Some(10), Some(100));
        let mut meters = RateMeters::default();
        let shorts = meters.check(&rates, 30, true);
        assert_eq!(shorts.iter().flatten().count(), 2, "nothing leased yet");
        let wants: Vec<_> = shorts
            .iter()
            .flatten()
            .map(|s| (s.rate, meters.want(s.rate, s.need, s.limit)))
            .collect();
        let entries = meters.drain(&wants, DrainMode::Asking);
        answer(&mut meters, &entries, 40, 0);
        assert!(meters.check(&rates, 30, true).iter().all(Option::is_none));
        meters.record(&rates, 30, 1_000);
        // 10 tokens left: a request of 30 does not fit.
        assert_eq!(meters.check(&rates, 30, true).iter().flatten().count(), 1);
        let entries = meters.drain(&[], DrainMode::Trimming);
        let mut charged: Vec<(RateKind, RateCharge)> = entries
            .iter()
            .flat_map(|e| e.charges.iter().map(move |c| (e.rate.kind, *c)))
            .collect();
        charged.sort_by_key(|(kind, _)| kind.as_str());
        let at = |amount| RateCharge {
            at_ms: 1_000,
            amount,
        };
        assert_eq!(
            charged,
            [(RateKind::Requests, at(1)), (RateKind::Tokens, at(30))]
        );
        // Restored after a failure, the same grants are reported again.
        meters.restore(&entries);
        let again = meters.drain(&[], DrainMode::Trimming);
        assert_eq!(again.iter().map(|e| e.charges.len()).sum::<usize>(), 2);
    }

    #[test]
    fn corrections_free_tokens_only_through_the_store() {
        let rates = limits(None, Some(100));
        let mut meters = RateMeters::default();
        let wants = [(tokens(), meters.want(tokens(), 50, 100))];
        let entries = meters.drain(&wants, DrainMode::Asking);
        answer(&mut meters, &entries, 50, 0);
        let grants = meters.record(&rates, 50, 0);
        // Not reported yet: corrected in place, the tokens are free again.
        meters.correct(&grants, 20, 10);
        assert!(meters.check(&rates, 30, true).iter().all(Option::is_none));
        let grants = meters.record(&rates, 30, 20);
        let entries = meters.drain(&[], DrainMode::Asking);
        answer(&mut meters, &entries, 0, 30);
        // Reported: a lower real usage is a negative charge, free once the store takes it.
        meters.correct(&grants, 10, 40);
        assert_eq!(meters.check(&rates, 1, true).iter().flatten().count(), 1);
        let entries = meters.drain(&[], DrainMode::Asking);
        assert_eq!(
            entries[0].charges,
            [RateCharge {
                at_ms: 20,
                amount: -20
            }]
        );
        // A correction of a grant that left the window is dropped.
        meters.correct(&grants, 0, 20 + rate::WINDOW_MS);
        meters.restore(&entries);
        let entries = meters.drain(&[], DrainMode::Asking);
        assert_eq!(entries[0].charges.len(), 1);
    }

    #[test]
    fn refusals_say_whether_asking_again_may_help() {
        let rates = limits(Some(1), Some(10));
        let mut meters = RateMeters::default();
        let never = meters.check(&rates, 11, true);
        let (_, exceeded, retry) = meters.refusal(&never, 0);
        assert_eq!(
            (exceeded.kind, exceeded.retry_after_ms, retry),
            (RateKind::Tokens, None, RateRetry::Final)
        );
        let shorts = meters.check(&rates, 1, true);
        let wants: Vec<_> = shorts
            .iter()
            .flatten()
            .map(|s| (s.rate, meters.want(s.rate, s.need, s.limit)))
            .collect();
        let entries = meters.drain(&wants, DrainMode::Asking);
        let states: Vec<_> = entries
            .iter()
            .map(|e| RateState {
                limit: Some(1),
                used: 1,
                held: if e.rate.kind == RateKind::Requests {
                    1
                } else {
                    0
                },
                lease: 0,
                granted: 0,
                wait_ms: Some(30_000),
                recall: false,
            })
            .collect();
        meters.apply(&entries, &states, 1_000);
        let (_, exceeded, retry) = meters.refusal(&shorts, 2_000);
        // Requests: another holder holds the one credit; tokens: wait 29 s.
        assert_eq!(retry, RateRetry::Recall);
        assert_eq!(exceeded.kind, RateKind::Requests);
        // Once the wait has passed, asking again may help.
        let (_, _, retry) = meters.refusal(&shorts, 40_000);
        assert_eq!(retry, RateRetry::Contended);
    }
}
