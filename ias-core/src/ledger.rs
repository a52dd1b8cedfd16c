//! One organization's hot-path state in memory: budget meters, rate
//! meters and open reservations.
//!
//! Everything here runs under the organization's lock, so checking every
//! limit and reserving against all of them is one atomic step. The
//! ledger never talks to the store: when a meter's lease cannot cover a
//! request it answers [`Attempt::NeedLease`], and the governor syncs with
//! the store and asks again.

use std::sync::Arc;

use rustc_hash::FxHashMap as HashMap;

use chrono::{DateTime, Datelike, Utc};
use chrono_tz::Tz;

use crate::budget::{BudgetState, Counter, Exceeded, LimitScope, Settlement};
use crate::domain::{KeyId, OrgId, ReservationId, UserId};
use crate::lease::{LeaseEntry, LeaseState, RateEntry, RateScope, RateState, UsageEvent};
use crate::period::{self, MonthlyPeriod};
use crate::rate::{RateExceeded, RateLimits};

mod rates;

use rates::{RateMeters, TokenGrant};
pub(crate) use rates::{RateRetry, Shorts};

/// A budget period as a number, `year * 100 + month`.
pub(crate) type PeriodNo = u32;

/// Identifies one meter: a scope, its id and a period.
pub(crate) type MeterKey = (LimitScope, i64, PeriodNo);

/// The largest slice a meter asks for, as a fraction of its limit.
const SLICE_DIVISOR: i64 = 8;

/// How many write-behind rounds of the last round's demand a slice covers.
/// A meter whose free part falls below half its slice is refilled in the
/// next periodic sync, so steady traffic needs no store call of its own.
const KEEP_ROUNDS: i64 = 10;

/// The slice for the next rounds: what the last round granted, times
/// [`KEEP_ROUNDS`], at most `cap`; a larger slice shrinks by half a round.
fn next_slice(slice: i64, granted_round: i64, cap: i64) -> i64 {
    let keep = granted_round.saturating_mul(KEEP_ROUNDS).min(cap);
    if keep >= slice {
        keep
    } else {
        (slice / 2).max(keep)
    }
}

/// How long (ms) a store's answer that a limit has too little left is
/// trusted: meanwhile a request that lacks more than was left is refused
/// without asking the store again, so a flood of requests against a spent
/// limit costs the store a few calls a second, not one or two per request.
const REFUSAL_MEMORY_MS: i64 = 1_000;

/// One scope's budget in one period, as this process sees it.
#[derive(Debug, Clone, Default)]
struct Meter {
    /// The limit the lease was taken under; `None`: no limit of its own.
    limit: Option<i64>,
    /// `used` of the store at the last sync.
    used_base: i64,
    /// `held` of the store at the last sync (every holder's leases).
    held_base: i64,
    /// Tokens this process holds from the store.
    lease: i64,
    /// Tokens held by open reservations.
    pending: i64,
    /// Tokens charged by settled requests, not yet handed to the store.
    charged: i64,
    /// Charges handed to a sync that has not answered yet.
    in_flight: i64,
    /// Tokens to keep in hand beyond current needs; grows with demand.
    slice: i64,
    /// Whether a lease was taken since the last periodic sync.
    acquired: bool,
    /// Tokens reserved since the last periodic sync.
    granted_round: i64,
    /// The store's last answer granted less than was wanted: near the
    /// limit, keep no spare until a request's want is met in full.
    tight: bool,
    /// The limit changed since the last sync: the lease must be renewed under the new one.
    stale: bool,
    /// What no holder held or used at the last sync, and when (Unix ms).
    known_left: i64,
    known_at_ms: Option<i64>,
}

impl Meter {
    /// Whether the last sync, recent enough, said that `need` cannot fit.
    fn known_short(&self, need: i64, now_ms: i64) -> bool {
        let recent = self
            .known_at_ms
            .is_some_and(|at| now_ms.saturating_sub(at) < REFUSAL_MEMORY_MS);
        recent && !self.stale && need.saturating_sub(self.free()) > self.known_left
    }

    fn free(&self) -> i64 {
        self.lease - self.pending - self.charged - self.in_flight
    }

    fn fits(&self, need: i64, limit: Option<i64>, leases_valid: bool) -> bool {
        match limit {
            None => true,
            Some(_) => leases_valid && !self.stale && need <= self.free(),
        }
    }

    /// The counter as a caller should see it: everyone's usage, and what
    /// is held by other holders and by this process's open requests.
    fn counter(&self) -> Counter {
        Counter {
            used: self.used_base + self.charged + self.in_flight,
            reserved: (self.held_base - self.lease).max(0) + self.pending,
        }
    }

    fn is_empty(&self) -> bool {
        self.lease == 0 && self.pending == 0 && self.charged == 0 && self.in_flight == 0
    }
}

/// An open reservation.
#[derive(Debug, Clone)]
struct Held {
    user_id: UserId,
    key_id: KeyId,
    model: String,
    period: PeriodNo,
    tokens: i64,
    expires_ms: i64,
    /// Released by the expiry sweep; a late settle still charges it.
    expired: bool,
    /// Its tokens-per-minute grants, corrected to the real usage when it closes.
    token_grants: [Option<TokenGrant>; 3],
}

/// The period and day that `now` falls in, cached per organization.
#[derive(Debug, Clone, Default)]
struct Calendar {
    period: PeriodNo,
    period_key: String,
    starts_ms: i64,
    resets_at: Option<DateTime<Utc>>,
    day_key: Arc<str>,
    day_starts_ms: i64,
    day_ends_ms: i64,
}

impl Calendar {
    fn update(&mut self, now: DateTime<Utc>, tz: Tz) {
        let now_ms = now.timestamp_millis();
        let current = self
            .resets_at
            .is_some_and(|r| self.starts_ms <= now_ms && now_ms < r.timestamp_millis());
        if !current {
            let p = MonthlyPeriod::containing(now, tz);
            let local = now.with_timezone(&tz);
            self.period = period_no(local.year(), local.month());
            self.period_key = p.key;
            self.starts_ms = p.starts_at.timestamp_millis();
            self.resets_at = Some(p.resets_at);
        }
        if !(self.day_starts_ms <= now_ms && now_ms < self.day_ends_ms) {
            let date = now.with_timezone(&tz).date_naive();
            self.day_key = Arc::from(date.format("%Y-%m-%d").to_string());
            self.day_starts_ms = local_midnight(tz, date);
            self.day_ends_ms = date
                .succ_opt()
                .map_or(i64::MAX, |next| local_midnight(tz, next));
        }
    }
}

fn period_no(year: i32, month: u32) -> PeriodNo {
    u32::try_from(year).unwrap_or(0) * 100 + month
}

/// `YYYY-MM` for a period number.
pub(crate) fn period_key(period: PeriodNo) -> String {
    format!("{:04}-{:02}", period / 100, period % 100)
}

fn local_midnight(tz: Tz, date: chrono::NaiveDate) -> i64 {
    period::start_of_day(tz, date).timestamp_millis()
}

/// One request, as the ledger needs it.
#[derive(Debug, Clone)]
pub(crate) struct Ask<'a> {
    pub id: ReservationId,
    pub org_id: OrgId,
    pub user_id: UserId,
    pub key_id: KeyId,
    pub tz: Tz,
    pub org_limit: i64,
    pub user_limit: Option<i64>,
    pub rates: [(LimitScope, i64, RateLimits); 3],
    pub model: &'a str,
    pub tokens: i64,
    pub now: DateTime<Utc>,
    pub expires_ms: i64,
    /// Whether this process's leases may still be granted from.
    pub leases_valid: bool,
}

/// What the ledger answers to an [`Ask`].
#[derive(Debug, Clone)]
pub(crate) enum Attempt {
    /// Reserved; the reservation is open under the ask's id.
    Granted {
        period: String,
        resets_at: DateTime<Utc>,
        state: BudgetState,
    },
    /// A per-minute limit refuses the request.
    RateLimited {
        scope: LimitScope,
        exceeded: RateExceeded,
        retry: RateRetry,
    },
    /// A monthly limit refuses the request, even with what the store had left.
    Exhausted {
        exceeded: Exceeded,
        period: String,
        resets_at: DateTime<Utc>,
    },
    /// Leases must grow first: what each meter wants.
    NeedLease(Wants),
}

/// What one request asks the store for.
#[derive(Debug, Clone, Default)]
pub(crate) struct Wants {
    /// Tokens per budget meter.
    pub budgets: Vec<(MeterKey, Want)>,
    /// Credits per rate meter.
    pub rates: Vec<(RateScope, Want)>,
}

/// How much of its free lease a ledger gives back when drained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DrainMode {
    /// A request needs more: keep every lease of the current period.
    Asking,
    /// Give back what is free beyond each meter's slice.
    Trimming,
    /// Like `Trimming`, and halve the slices no request needed since the last round.
    Periodic,
    /// Give back everything free: the governor is shutting down.
    Closing,
}

/// Tokens a meter asks the store for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Want {
    /// What the waiting request lacks.
    pub need: i64,
    /// `need` plus a spare slice for the requests after it.
    pub total: i64,
}

/// What a sync takes out of a ledger, to hand back or apply later.
#[derive(Debug, Default)]
pub(crate) struct Drained {
    pub keys: Vec<MeterKey>,
    pub entries: Vec<LeaseEntry>,
    pub events: Vec<UsageEvent>,
    pub rates: Vec<RateEntry>,
}

/// Why a settle found nothing to charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NotOpen;

/// A settled request waiting to be written, kept compact until then.
#[derive(Debug, Clone)]
struct Settled {
    user_id: UserId,
    key_id: KeyId,
    model: String,
    period: PeriodNo,
    day: Arc<str>,
    reserved: i64,
    tokens: i64,
    at: DateTime<Utc>,
}

/// One organization's hot-path state.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    calendar: Calendar,
    meters: HashMap<MeterKey, Meter>,
    rates: RateMeters,
    open: HashMap<ReservationId, Held>,
    settled: Vec<Settled>,
    /// Events a failed sync handed back, written first at the next one.
    returned: Vec<UsageEvent>,
}

impl Ledger {
    /// Checks every limit and, if all hold, reserves; or says what is missing.
    pub fn try_reserve(&mut self, ask: &Ask<'_>, may_lease: bool) -> Attempt {
        self.calendar.update(ask.now, ask.tz);
        let now_ms = ask.now.timestamp_millis();
        let valid = ask.leases_valid;
        let rates = self.rates.check(&ask.rates, ask.tokens, valid);
        let period = self.calendar.period;
        let need = ask.tokens.max(1);
        let org_key = (LimitScope::Org, ask.org_id.0, period);
        let user_key = (LimitScope::User, ask.user_id.0, period);
        let org_limit = Some(ask.org_limit);
        let org_fits = self.meter(org_key).fits(need, org_limit, valid);
        let user_fits = self.meter(user_key).fits(need, ask.user_limit, valid);
        let rates_fit = rates.iter().all(Option::is_none);
        if !(org_fits && user_fits && rates_fit) {
            let meters = [
                (org_key, org_fits, org_limit),
                (user_key, user_fits, ask.user_limit),
            ];
            return self.short(ask, meters, &rates, may_lease, now_ms);
        }
        self.reserve(ask, org_key, user_key, now_ms)
    }

    fn short(
        &mut self,
        ask: &Ask<'_>,
        meters: [(MeterKey, bool, Option<i64>); 2],
        rates: &Shorts,
        may_lease: bool,
        now_ms: i64,
    ) -> Attempt {
        let need = ask.tokens.max(1);
        let known = self.known_refusal(&meters, rates, need, now_ms);
        if may_lease && !known && !rates::never_fits(rates) {
            let budgets = meters
                .iter()
                .filter(|(_, fits, _)| !fits)
                .map(|(key, _, limit)| (*key, self.want(*key, need, *limit)))
                .collect();
            let rates = self.rates.wants(rates);
            return Attempt::NeedLease(Wants { budgets, rates });
        }
        if rates.iter().any(Option::is_some) {
            let (scope, exceeded, retry) = self.rates.refusal(rates, now_ms);
            return Attempt::RateLimited {
                scope,
                exceeded,
                retry,
            };
        }
        let (key, _, limit) = meters.into_iter().find(|(_, fits, _)| !fits).unwrap_or((
            meters[0].0,
            false,
            Some(ask.org_limit),
        ));
        let counter = self.meter(key).counter();
        Attempt::Exhausted {
            exceeded: Exceeded {
                scope: key.0,
                limit: limit.unwrap_or(0),
                used: counter.used,
                reserved: counter.reserved,
            },
            period: self.calendar.period_key.clone(),
            resets_at: self.calendar.resets_at.unwrap_or(ask.now),
        }
    }

    /// Whether the store said recently enough that the request cannot fit
    /// in the limits it is short of, so that asking it again is no use.
    fn known_refusal(
        &self,
        meters: &[(MeterKey, bool, Option<i64>); 2],
        rates: &Shorts,
        need: i64,
        now_ms: i64,
    ) -> bool {
        if rates.iter().any(Option::is_some) {
            return self.rates.known_refused(rates, now_ms, REFUSAL_MEMORY_MS);
        }
        let mut short = meters.iter().filter(|(_, fits, _)| !fits).peekable();
        short.peek().is_some()
            && short.all(|(key, _, _)| {
                self.meters
                    .get(key)
                    .is_some_and(|m| m.known_short(need, now_ms))
            })
    }

    /// Tokens to ask the store for so that `need` fits, with room to spare.
    fn want(&mut self, key: MeterKey, need: i64, limit: Option<i64>) -> Want {
        // INVARIANT: only meters with a limit are leased; `limit` is `Some` here.
        let meter = self.meters.entry(key).or_default();
        let cap = limit.map_or(need, |l| (l / SLICE_DIVISOR).max(need));
        meter.slice = meter.slice.saturating_mul(2).clamp(need, cap.max(need));
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

    fn reserve(
        &mut self,
        ask: &Ask<'_>,
        org_key: MeterKey,
        user_key: MeterKey,
        now_ms: i64,
    ) -> Attempt {
        let token_grants = self.rates.record(&ask.rates, ask.tokens, now_ms);
        self.bump(ask.org_id, ask.user_id, org_key.2, ask.tokens, 0);
        let state = BudgetState {
            org_limit: ask.org_limit,
            org: self.meter(org_key).counter(),
            user_limit: ask.user_limit,
            user: self.meter(user_key).counter(),
        };
        self.open.insert(
            ask.id,
            Held {
                user_id: ask.user_id,
                key_id: ask.key_id,
                model: ask.model.to_owned(),
                period: org_key.2,
                tokens: ask.tokens,
                expires_ms: ask.expires_ms,
                expired: false,
                token_grants,
            },
        );
        Attempt::Granted {
            period: self.calendar.period_key.clone(),
            resets_at: self.calendar.resets_at.unwrap_or(ask.now),
            state,
        }
    }

    /// The per-minute limits a dry run of `ask` does not fit in locally,
    /// and what to ask the store about them; records nothing.
    pub fn rate_probe(&mut self, ask: &Ask<'_>) -> (Shorts, Vec<(RateScope, Want)>) {
        let shorts = self.rates.check(&ask.rates, ask.tokens, ask.leases_valid);
        let wants = if rates::never_fits(&shorts) {
            Vec::new()
        } else {
            self.rates.probe(&shorts)
        };
        (shorts, wants)
    }

    /// The refusal of a dry run, once the store answered [`Ledger::rate_probe`]'s wants.
    pub fn rate_verdict(&self, shorts: &Shorts, now_ms: i64) -> Option<(LimitScope, RateExceeded)> {
        let fits = !rates::never_fits(shorts) && self.rates.probe_fits(shorts);
        if shorts.iter().all(Option::is_none) || fits {
            return None;
        }
        let (scope, exceeded, _) = self.rates.refusal(shorts, now_ms);
        Some((scope, exceeded))
    }

    fn meter(&mut self, key: MeterKey) -> &Meter {
        self.meters.entry(key).or_default()
    }

    /// The monthly counters of `user` and the organization, for a dry run.
    pub fn local_state(
        &mut self,
        org: OrgId,
        user: UserId,
        now: DateTime<Utc>,
        tz: Tz,
    ) -> LocalState {
        self.calendar.update(now, tz);
        let period = self.calendar.period;
        let org_free = self.meter((LimitScope::Org, org.0, period)).free();
        let user_free = self.meter((LimitScope::User, user.0, period)).free();
        LocalState {
            period: self.calendar.period_key.clone(),
            resets_at: self.calendar.resets_at.unwrap_or(now),
            org_free,
            user_free,
        }
    }

    /// Charges `actual` tokens for an open (or expired) reservation and closes it.
    pub fn settle(
        &mut self,
        id: ReservationId,
        org: OrgId,
        actual: i64,
        now: DateTime<Utc>,
        tz: Tz,
    ) -> Result<Settlement, NotOpen> {
        let held = self.close(id, org)?;
        self.calendar.update(now, tz);
        self.bump(org, held.user_id, held.period, 0, actual);
        self.rates
            .correct(&held.token_grants, actual, now.timestamp_millis());
        self.settled.push(Settled {
            user_id: held.user_id,
            key_id: held.key_id,
            model: held.model,
            period: held.period,
            day: Arc::clone(&self.calendar.day_key),
            reserved: held.tokens,
            tokens: actual,
            at: now,
        });
        Ok(Settlement {
            reserved: held.tokens,
            charged: actual,
        })
    }

    /// Closes an open reservation without charging.
    pub fn release(&mut self, id: ReservationId, org: OrgId, now_ms: i64) -> Result<(), NotOpen> {
        let held = self.close(id, org)?;
        self.rates.correct(&held.token_grants, 0, now_ms);
        Ok(())
    }

    /// Takes an open reservation out and frees its tokens, unless its expiry already did.
    fn close(&mut self, id: ReservationId, org: OrgId) -> Result<Held, NotOpen> {
        let held = self.open.remove(&id).ok_or(NotOpen)?;
        if !held.expired {
            self.bump(org, held.user_id, held.period, -held.tokens, 0);
        }
        Ok(held)
    }

    /// Adds `pending` and `charged` (either may be negative) to the org's and the user's meters.
    fn bump(&mut self, org: OrgId, user: UserId, period: PeriodNo, pending: i64, charged: i64) {
        for (scope, id) in [(LimitScope::Org, org.0), (LimitScope::User, user.0)] {
            let meter = self.meters.entry((scope, id, period)).or_default();
            meter.pending += pending;
            meter.granted_round = meter.granted_round.saturating_add(pending.max(0));
            meter.charged = meter.charged.saturating_add(charged);
        }
    }

    /// Releases reservations past their expiry; forgets those expired one TTL ago.
    ///
    /// Returns how many were released now.
    pub fn expire(&mut self, org: OrgId, now_ms: i64, ttl_ms: i64) -> u64 {
        let mut released = 0;
        let mut freed = Vec::new();
        self.open.retain(|_, held| {
            if held.expired {
                return held.expires_ms.saturating_add(ttl_ms) > now_ms;
            }
            if held.expires_ms <= now_ms {
                held.expired = true;
                released += 1;
                freed.push((held.user_id, held.period, held.tokens));
            }
            true
        });
        for (user, period, tokens) in freed {
            self.bump(org, user, period, -tokens, 0);
        }
        self.rates.forget_idle();
        released
    }

    /// Takes out what the store should learn: charges, give-backs, wants, events.
    pub fn drain(&mut self, org: OrgId, wants: &Wants, mode: DrainMode) -> Drained {
        let current = self.calendar.period;
        let mut drained = Drained {
            events: self.take_events(org),
            rates: self.rates.drain(&wants.rates, mode),
            ..Drained::default()
        };
        let wants = &wants.budgets;
        for (key, _) in wants {
            // A meter emptied by a sync since the request asked is asked for again.
            self.meters.entry(*key).or_default();
        }
        for (key, meter) in &mut self.meters {
            let mut want = wants
                .iter()
                .find(|(k, _)| k == key)
                .map_or(Want { need: 0, total: 0 }, |(_, w)| *w);
            let free = meter.free().max(0);
            if mode == DrainMode::Periodic {
                // The slice follows demand: enough for the next rounds at
                // the last round's pace, shrinking by half when idle.
                let cap = meter.limit.map_or(i64::MAX, |limit| limit / SLICE_DIVISOR);
                meter.slice = if meter.tight {
                    0
                } else {
                    next_slice(meter.slice, meter.granted_round, cap)
                };
                let busy = meter.granted_round > 0 && key.2 == current;
                meter.granted_round = 0;
                meter.acquired = false;
                if busy && meter.limit.is_some() && !meter.stale && free < meter.slice / 2 {
                    // Refill in this round's sync, which is made anyway, so
                    // that steady traffic never waits for the store.
                    want.total = meter.slice - free;
                }
            }
            let give = if mode == DrainMode::Closing
                || meter.stale
                || key.2 != current
                || meter.limit.is_none()
            {
                free
            } else if mode == DrainMode::Asking {
                // The request that asked may need what is held right now.
                0
            } else {
                (free - meter.slice).max(0)
            };
            if meter.charged == 0 && give == 0 && want.total == 0 {
                continue;
            }
            meter.lease -= give;
            // What goes back is held by no one from now on: it must neither
            // count as reserved nor keep a refusal from memory standing.
            meter.held_base = meter.held_base.saturating_sub(give);
            meter.known_left = meter.known_left.saturating_add(give);
            meter.in_flight += meter.charged;
            drained.keys.push(*key);
            drained.entries.push(LeaseEntry {
                scope: key.0,
                scope_id: key.1,
                period: period_key(key.2),
                charge: std::mem::take(&mut meter.charged),
                give_back: give,
                want: want.total,
                need: want.need,
            });
        }
        drained
    }

    /// Takes in the store's answer to a sync of `drained`, made at `now_ms`.
    pub fn apply(
        &mut self,
        drained: &Drained,
        states: &[LeaseState],
        rates: &[RateState],
        now_ms: i64,
    ) {
        self.rates.apply(&drained.rates, rates, now_ms);
        // INVARIANT: the store answers one state per entry, in order.
        let current = self.calendar.period;
        for ((key, state), entry) in drained.keys.iter().zip(states).zip(&drained.entries) {
            let meter = self.meters.entry(*key).or_default();
            if state.granted < entry.want {
                // Near the limit: keep no spare slice, so what this process
                // does not need goes back for others at the next sync.
                meter.slice = 0;
                meter.tight = true;
            } else if entry.want > 0 {
                meter.tight = false;
            }
            meter.lease = state.lease;
            meter.used_base = state.used;
            meter.held_base = state.held;
            meter.limit = state.limit;
            meter.in_flight = 0;
            meter.stale = false;
            meter.known_left = state.limit.map_or(i64::MAX, |limit| {
                limit.saturating_sub(state.used).saturating_sub(state.held)
            });
            meter.known_at_ms = Some(now_ms);
        }
        self.meters
            .retain(|key, meter| key.2 == current || !meter.is_empty());
    }

    /// Puts back what a failed sync took out; nothing is lost.
    pub fn restore(&mut self, drained: Drained) {
        self.rates.restore(&drained.rates);
        for (key, entry) in drained.keys.iter().zip(&drained.entries) {
            let meter = self.meters.entry(*key).or_default();
            meter.lease += entry.give_back;
            meter.held_base = meter.held_base.saturating_add(entry.give_back);
            meter.known_left = meter.known_left.saturating_sub(entry.give_back);
            meter.charged = meter.charged.saturating_add(meter.in_flight);
            meter.in_flight = 0;
        }
        let mut events = drained.events;
        events.append(&mut self.returned);
        self.returned = events;
    }

    /// Every queued event, in the form the store takes.
    fn take_events(&mut self, org: OrgId) -> Vec<UsageEvent> {
        let mut events = std::mem::take(&mut self.returned);
        events.reserve(self.settled.len());
        let mut key = (0, String::new());
        for s in self.settled.drain(..) {
            if key.0 != s.period {
                key = (s.period, period_key(s.period));
            }
            events.push(UsageEvent {
                org_id: org,
                user_id: s.user_id,
                key_id: s.key_id,
                model: s.model,
                period: key.1.clone(),
                day: s.day.to_string(),
                reserved: s.reserved,
                tokens: s.tokens,
                at: s.at,
            });
        }
        events
    }

    /// Marks the rate meters of one scope as leased under old limits.
    pub fn mark_rates_stale(&mut self, scope: LimitScope, id: i64) {
        self.rates.mark_stale(scope, id);
    }

    /// Marks the rate meters of leases the store recalled.
    pub fn recall(&mut self, recalled: &[RateScope]) {
        self.rates.recall(recalled);
    }

    /// Whether recalled rate credits are held unused and should go back now.
    pub fn owes_credits(&self) -> bool {
        self.rates.owes()
    }

    /// Marks every meter of one scope as leased under an old limit.
    pub fn mark_stale(&mut self, scope: LimitScope, id: i64) {
        for (key, meter) in &mut self.meters {
            if key.0 == scope && key.1 == id {
                meter.stale = true;
            }
        }
    }

    /// Open reservations (not counting expired ones kept for late settles).
    pub fn open_reservations(&self) -> usize {
        self.open.values().filter(|h| !h.expired).count()
    }

    /// Usage events waiting for a sync.
    pub fn queued_events(&self) -> usize {
        self.settled.len() + self.returned.len()
    }
}

/// A dry run's view of the local leases.
#[derive(Debug, Clone)]
pub(crate) struct LocalState {
    pub period: String,
    pub resets_at: DateTime<Utc>,
    pub org_free: i64,
    pub user_free: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(id: i64, tokens: i64, now: DateTime<Utc>) -> Ask<'static> {
        Ask {
            id: ReservationId(id),
            org_id: OrgId(1),
            user_id: UserId(2),
            key_id: KeyId(3),
            tz: chrono_tz::UTC,
            org_limit: 1_000,
            user_limit: None,
            rates: [
                (LimitScope::Org, 1, RateLimits::NONE),
                (LimitScope::User, 2, RateLimits::NONE),
                (LimitScope::Key, 3, RateLimits::NONE),
            ],
            model: "m",
            tokens,
            now,
            expires_ms: now.timestamp_millis() + 1_000,
            leases_valid: true,
        }
    }

    fn now() -> DateTime<Utc> {
        "2026-12-04T12:00:00Z".parse().unwrap()
    }

    /// Grants `lease` tokens to the org meter, as a store would.
    fn lease(ledger: &mut Ledger, wants: &Wants, lease: i64) {
        let drained = ledger.drain(OrgId(1), wants, DrainMode::Asking);
        let states: Vec<_> = drained
            .entries
            .iter()
            .map(|e| LeaseState {
                limit: Some(1_000),
                used: 0,
                held: lease,
                lease,
                granted: e.want.min(lease),
            })
            .collect();
        ledger.apply(&drained, &states, &[], now().timestamp_millis());
    }

    fn granted(ledger: &mut Ledger, ask: &Ask<'_>) -> bool {
        matches!(ledger.try_reserve(ask, false), Attempt::Granted { .. })
    }

    #[test]
    fn an_empty_lease_asks_the_store_and_then_grants() {
        let mut ledger = Ledger::default();
        let Attempt::NeedLease(wants) = ledger.try_reserve(&ask(1, 100, now()), true) else {
            panic!("a new meter has no lease");
        };
        assert_eq!(
            wants.budgets.len(),
            1,
            "the user has no limit of its own: {wants:?}"
        );
        assert!(wants.budgets[0].1.need == 100 && wants.budgets[0].1.total >= 100);
        lease(&mut ledger, &wants, 150);
        assert!(granted(&mut ledger, &ask(1, 100, now())));
        assert!(!granted(&mut ledger, &ask(2, 51, now())));
        assert!(granted(&mut ledger, &ask(3, 50, now())));
    }

    #[test]
    fn a_failed_sync_puts_everything_back() {
        let mut ledger = Ledger::default();
        let Attempt::NeedLease(wants) = ledger.try_reserve(&ask(1, 100, now()), true) else {
            panic!("a new meter has no lease");
        };
        lease(&mut ledger, &wants, 100);
        assert!(granted(&mut ledger, &ask(1, 100, now())));
        ledger
            .settle(ReservationId(1), OrgId(1), 60, now(), chrono_tz::UTC)
            .unwrap();
        let drained = ledger.drain(OrgId(1), &Wants::default(), DrainMode::Trimming);
        assert_eq!(drained.events.len(), 1);
        let charged: i64 = drained.entries.iter().map(|e| e.charge).sum();
        assert_eq!(charged, 120, "60 each for the org and the user");
        // While the sync is out, the charged tokens are not free again.
        assert!(!granted(&mut ledger, &ask(2, 41, now())));
        ledger.restore(drained);
        assert_eq!(ledger.queued_events(), 1);
        let again = ledger.drain(OrgId(1), &Wants::default(), DrainMode::Trimming);
        let charged: i64 = again.entries.iter().map(|e| e.charge).sum();
        assert_eq!(charged, 120);
    }

    #[test]
    fn an_expired_reservation_frees_its_tokens_and_a_late_settle_charges_once() {
        let mut ledger = Ledger::default();
        let Attempt::NeedLease(wants) = ledger.try_reserve(&ask(1, 100, now()), true) else {
            panic!("a new meter has no lease");
        };
        lease(&mut ledger, &wants, 100);
        assert!(granted(&mut ledger, &ask(1, 100, now())));
        let later = now().timestamp_millis() + 1_000;
        assert_eq!(ledger.expire(OrgId(1), later, 1_000), 1);
        assert_eq!(ledger.open_reservations(), 0);
        assert!(granted(&mut ledger, &ask(2, 100, now())));
        let settled = ledger.settle(ReservationId(1), OrgId(1), 30, now(), chrono_tz::UTC);
        assert_eq!(settled.map(|s| s.charged), Ok(30));
        assert_eq!(
            ledger.settle(ReservationId(1), OrgId(1), 30, now(), chrono_tz::UTC),
            Err(NotOpen)
        );
    }

    #[test]
    fn a_give_back_in_flight_is_neither_reserved_nor_a_reason_to_refuse() {
        let mut ledger = Ledger::default();
        let Attempt::NeedLease(wants) = ledger.try_reserve(&ask(1, 100, now()), true) else {
            panic!("a new meter has no lease");
        };
        // This process holds the whole budget: the store has nothing left.
        lease(&mut ledger, &wants, 1_000);
        assert!(granted(&mut ledger, &ask(1, 100, now())));
        let drained = ledger.drain(OrgId(1), &Wants::default(), DrainMode::Trimming);
        assert_eq!(drained.entries[0].give_back, 800);
        // While the give-back is out, a request larger than the slice kept
        // asks the store again instead of being refused from memory.
        assert!(matches!(
            ledger.try_reserve(&ask(2, 200, now()), true),
            Attempt::NeedLease(_)
        ));
        let Attempt::Exhausted { exceeded, .. } = ledger.try_reserve(&ask(2, 200, now()), false)
        else {
            panic!("the slice kept is too small without a sync");
        };
        assert_eq!((exceeded.used, exceeded.reserved), (0, 100));
        // A failed sync puts the lease back, and with it the refusal.
        ledger.restore(drained);
        assert!(granted(&mut ledger, &ask(2, 200, now())));
        assert!(!matches!(
            ledger.try_reserve(&ask(3, 900, now()), true),
            Attempt::NeedLease(_)
        ));
    }

    #[test]
    fn a_changed_limit_renews_the_lease_before_granting() {
        let mut ledger = Ledger::default();
        let Attempt::NeedLease(wants) = ledger.try_reserve(&ask(1, 10, now()), true) else {
            panic!("a new meter has no lease");
        };
        lease(&mut ledger, &wants, 500);
        assert!(granted(&mut ledger, &ask(1, 10, now())));
        ledger.mark_stale(LimitScope::Org, 1);
        assert!(matches!(
            ledger.try_reserve(&ask(2, 10, now()), true),
            Attempt::NeedLease(_)
        ));
        let drained = ledger.drain(OrgId(1), &Wants::default(), DrainMode::Trimming);
        let give: i64 = drained.entries.iter().map(|e| e.give_back).sum();
        assert_eq!(
            give, 490,
            "everything not held by the open request goes back"
        );
    }
}
