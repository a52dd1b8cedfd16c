//! The hot path: authorize a request, then settle what it really used.
//!
//! A [`Governor`] answers from memory. It loads every key (by hash), user
//! and organization policy when it opens, follows the store's change feed
//! to stay current (at once on the store's change notices, and every
//! [`GovernorConfig::refresh_interval`]), and keeps budgets and rate limits
//! exact with leases ([`crate::lease`]): it holds a slice of each budget
//! and rate limit it serves, grants requests from it under the
//! organization's lock, and reports usage and grants back to the store in
//! batches. A request goes to the store only when a lease runs short, so
//! steady traffic costs no store round trip at all.
//!
//! Usage is written behind: settled usage is charged in memory at once
//! and reaches the store within [`GovernorConfig::flush_interval`] (when
//! [`Governor::spawn_maintenance`] runs), on [`Governor::flush`], or on
//! [`Governor::shutdown`]. [`Durability::Strict`] makes every settle wait
//! until its usage is stored.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::budget::{self, BudgetState, Exceeded, LimitScope, Settlement};
use crate::cache::{KeyEntry, LimitChanged, OrgEntry, Tables, UserEntry};
use crate::clock::{Clock, SystemClock};
use crate::domain::{KeyId, OrgId, ReservationId, UserId};
use crate::error::{Error, Result};
use crate::key::{self, KeyHash};
use crate::lease::{LeaseSync, RateScope, Synced};
use crate::ledger::{Ask, Attempt, DrainMode, Drained, Ledger, RateRetry, Wants};
use crate::rate::{self, RateExceeded, RateKind, RateLimits};
use crate::snapshot::{Change, ChangeEntity};
use crate::store::Store;
use crate::{policy, validate};

/// How long an unsettled reservation is held by default.
pub const DEFAULT_RESERVATION_TTL: Duration = Duration::from_secs(15 * 60);

/// How many usage events one organization may queue by default before a
/// settle writes them itself ([`GovernorConfig::max_queued_events`]).
pub const MAX_QUEUED_EVENTS: usize = 100_000;

const PAGE: u32 = 50_000;
/// How many times one authorize may ask the store for more of a budget.
const MAX_LEASE_ROUNDS: u32 = 3;
/// The same, when the budget is not spent but concurrent requests keep taking the slices.
const MAX_CONTENDED_ROUNDS: u32 = 12;
const CHANGE_PAGE: u32 = 1_000;
/// How long a request waits at most for other governors to give back the
/// rate credits they hold unused (they do at their next write-behind).
const RECALL_WAIT: Duration = Duration::from_secs(2);
/// How often a waiting request asks the store again meanwhile.
const RECALL_POLL: Duration = Duration::from_millis(25);

/// When settled usage is written to the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Settle charges in memory and returns; usage is written in batches.
    /// A crash loses at most the usage settled since the last write.
    #[default]
    WriteBehind,
    /// Settle returns only once its usage is stored.
    Strict,
}

/// How a governor behaves; every field has a default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GovernorConfig {
    /// How long an unsettled reservation is held before it is released by itself.
    pub reservation_ttl: Duration,
    /// How long the store keeps this governor's leases without hearing from it.
    pub lease_ttl: Duration,
    /// How often maintenance writes usage and gives back unneeded leases.
    pub flush_interval: Duration,
    /// How often maintenance reads the change feed for writes made elsewhere,
    /// at the latest: it also reads it whenever the store gives notice of one.
    pub refresh_interval: Duration,
    /// When settled usage is written.
    pub durability: Durability,
    /// How many usage events one organization may hold in memory. A settle
    /// that finds the queue full writes it first; if the store cannot take
    /// it, the settle fails with nothing charged and may be retried.
    pub max_queued_events: usize,
}

impl Default for GovernorConfig {
    fn default() -> Self {
        GovernorConfig {
            reservation_ttl: DEFAULT_RESERVATION_TTL,
            lease_ttl: Duration::from_secs(30),
            flush_interval: Duration::from_millis(200),
            refresh_interval: Duration::from_millis(500),
            durability: Durability::WriteBehind,
            max_queued_events: MAX_QUEUED_EVENTS,
        }
    }
}

/// Counters about a governor, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GovernorStats {
    /// Keys in memory.
    pub keys: usize,
    /// Users in memory.
    pub users: usize,
    /// Organizations in memory.
    pub orgs: usize,
    /// Reservations neither settled nor released.
    pub open_reservations: usize,
    /// Usage events waiting to be written.
    pub queued_events: usize,
    /// Reservations released by themselves after their TTL, since start.
    pub expired_reservations: u64,
    /// Store syncs (lease changes and usage writes), since start.
    pub syncs: u64,
    /// Store syncs that failed (their work was kept and retried), since start.
    pub failed_syncs: u64,
}

/// Decides requests and records their usage.
///
/// ```no_run
/// # async fn demo(store: std::sync::Arc<dyn ias_core::Store>, key: &str) -> ias_core::Result<()> {
/// use ias_core::{Decision, Governor};
///
/// let governor = Governor::open(store).await?;
/// let maintenance = governor.spawn_maintenance();
/// match governor.authorize(key, "gpt-4o-mini", 1_000).await? {
///     Decision::Allowed(allowed) => {
///         // ... call the model, then charge what it really used:
///         if let Some(reservation) = &allowed.reservation {
///             governor.settle(reservation, 812).await?;
///         }
///     }
///     Decision::Denied(denied) => println!("{}", denied.message()),
/// }
/// maintenance.shutdown().await?; // writes what is left
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Governor {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    config: GovernorConfig,
    holder: String,
    tables: RwLock<Tables>,
    seq: tokio::sync::Mutex<i64>,
    /// Held while a sync runs, and by a request from its own sync until it
    /// has tried again, so no other sync gives back what it was just granted.
    sync_lock: Arc<tokio::sync::Mutex<()>>,
    /// The number of the last sync sent (see [`LeaseSync::seq`]).
    sync_seq: AtomicU64,
    /// A sync that failed in a way that leaves open whether the store
    /// applied it; sent again, under its number, before anything else.
    in_doubt: Mutex<Option<InDoubt>>,
    next_reservation: AtomicI64,
    /// Leases are used for grants only until then (Unix ms); see `sync`.
    leases_valid_until_ms: AtomicI64,
    expired: AtomicU64,
    syncs: AtomicU64,
    failed_syncs: AtomicU64,
}

/// Builds a [`Governor`] with other than default settings.
pub struct GovernorBuilder {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    config: GovernorConfig,
}

impl GovernorBuilder {
    /// Uses `clock` instead of the system clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Replaces every setting.
    pub fn config(mut self, config: GovernorConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets when settled usage is written.
    pub fn durability(mut self, durability: Durability) -> Self {
        self.config.durability = durability;
        self
    }

    /// Sets how long an unsettled reservation is held.
    pub fn reservation_ttl(mut self, ttl: Duration) -> Self {
        self.config.reservation_ttl = ttl;
        self
    }

    /// Loads every key, user and organization, and returns the governor.
    pub async fn open(self) -> Result<Governor> {
        let holder = format!("{:016x}", rand::random::<u64>());
        let inner = Inner {
            store: self.store,
            clock: self.clock,
            config: self.config,
            holder,
            tables: RwLock::new(Tables::default()),
            seq: tokio::sync::Mutex::new(0),
            sync_lock: Arc::new(tokio::sync::Mutex::new(())),
            sync_seq: AtomicU64::new(0),
            in_doubt: Mutex::new(None),
            next_reservation: AtomicI64::new(1),
            leases_valid_until_ms: AtomicI64::new(0),
            expired: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            failed_syncs: AtomicU64::new(0),
        };
        let governor = Governor {
            inner: Arc::new(inner),
        };
        {
            let mut seq = governor.inner.seq.lock().await;
            *seq = governor.load_tables().await?;
            governor.refresh_from(&mut seq, false).await?;
        }
        Ok(governor)
    }
}

/// A running maintenance task; see [`Governor::spawn_maintenance`].
pub struct Maintenance {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: [tokio::task::JoinHandle<()>; 2],
    governor: Governor,
}

impl Maintenance {
    /// Stops the tasks, writes all usage and gives back every unused lease.
    pub async fn shutdown(self) -> Result<()> {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        self.governor.shutdown().await
    }
}

impl Governor {
    /// A governor over `store` with default settings, loaded and ready.
    pub async fn open(store: Arc<dyn Store>) -> Result<Governor> {
        Governor::builder(store).open().await
    }

    /// A builder for other settings.
    pub fn builder(store: Arc<dyn Store>) -> GovernorBuilder {
        GovernorBuilder {
            store,
            clock: Arc::new(SystemClock),
            config: GovernorConfig::default(),
        }
    }

    /// The store this governor reads and writes.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The settings in use.
    pub fn config(&self) -> &GovernorConfig {
        &self.inner.config
    }

    /// Decides a request and, when it is allowed, reserves `estimated_tokens`.
    ///
    /// The reservation must later be passed to [`Governor::settle`] (or
    /// [`Governor::release`] if the request failed). `Err` means the
    /// decision could not be made (bad input, store unavailable), never that
    /// the request was denied.
    pub async fn authorize(
        &self,
        key: &str,
        model: &str,
        estimated_tokens: i64,
    ) -> Result<Decision> {
        self.decide(key, model, estimated_tokens, true).await
    }

    /// Decides a request like [`Governor::authorize`] without reserving anything.
    pub async fn check(&self, key: &str, model: &str, estimated_tokens: i64) -> Result<Decision> {
        self.decide(key, model, estimated_tokens, false).await
    }

    /// Why `key` would be refused before anything else is looked at
    /// (malformed or unknown, expired, revoked); `None` for a usable key.
    ///
    /// Lets a host refuse a bad key before it reads a request's body;
    /// [`Governor::authorize`] checks the key again.
    pub async fn check_key(&self, key: &str) -> Result<Option<DenyReason>> {
        Ok(self.usable_key(key).await?.err())
    }

    /// Who `key` belongs to, answered from memory; or why the key would be
    /// refused, as by [`Governor::check_key`]. An admin API uses it to tell
    /// who its caller is.
    pub async fn key_principal(&self, key: &str) -> Result<Result<Principal, DenyReason>> {
        Ok(self
            .usable_key(key)
            .await?
            .map(|mut found| found.principal()))
    }

    /// The models `key` may call, for a host that lists them (as `GET
    /// /v1/models` does), answered from memory; or why the key would be
    /// refused, as by [`Governor::check_key`].
    pub async fn key_models(&self, key: &str) -> Result<KeyModels> {
        let mut found = match self.usable_key(key).await? {
            Ok(found) => found,
            Err(reason) => return Ok(KeyModels::Refused(reason)),
        };
        Ok(KeyModels::Usable {
            principal: found.principal(),
            allowed_models: found.org.models.patterns().to_vec(),
        })
    }

    /// Charges the real usage of an allowed request and frees its reservation.
    ///
    /// `actual_tokens` is charged in full even when it exceeds the estimate;
    /// the next request then sees the budget as spent. A reservation that
    /// expired is still charged. [`Error::NotFound`] if it was already
    /// settled or released: nothing is charged twice. With
    /// [`Durability::Strict`], an error after the charge means the usage is
    /// charged and queued but not yet stored; it is written when the store
    /// answers again, so the reservation must not be settled again. When the
    /// queue is full ([`GovernorConfig::max_queued_events`]) and the store
    /// cannot take it, the settle fails before charging: retry it.
    pub async fn settle(
        &self,
        reservation: &Reservation,
        actual_tokens: i64,
    ) -> Result<Settlement> {
        let actual = validate::token_amount("actual_tokens", actual_tokens)?;
        let org = self.org_entry(reservation.org_id)?;
        let full = lock(&org.ledger).queued_events() >= self.inner.config.max_queued_events;
        if full {
            // The bound holds: write the queue before adding to it, or fail
            // with nothing charged (the reservation stays open for a retry).
            drop(
                self.sync_org(&org, Wants::default(), DrainMode::Asking)
                    .await?,
            );
        }
        let now = self.inner.clock.now();
        let settlement = lock(&org.ledger)
            .settle(reservation.id, org.org.id, actual, now, org.tz)
            .map_err(|_| Error::not_found("reservation", reservation.id.to_string()))?;
        if self.inner.config.durability == Durability::Strict {
            // The charge stands either way; an error says it is not stored
            // yet (it stays queued and is retried): do not settle again.
            drop(
                self.sync_org(&org, Wants::default(), DrainMode::Asking)
                    .await?,
            );
        }
        Ok(settlement)
    }

    /// Frees a reservation without charging, for a request that never reached the model.
    pub async fn release(&self, reservation: &Reservation) -> Result<()> {
        let org = self.org_entry(reservation.org_id)?;
        let now_ms = self.inner.clock.now().timestamp_millis();
        lock(&org.ledger)
            .release(reservation.id, org.org.id, now_ms)
            .map_err(|_| Error::not_found("reservation", reservation.id.to_string()))
    }

    /// Writes every charge and usage event now, and gives back unneeded lease.
    pub async fn flush(&self) -> Result<()> {
        self.sync_all(DrainMode::Trimming).await
    }

    /// Writes everything and gives back every unused lease; call before exit.
    pub async fn shutdown(&self) -> Result<()> {
        self.sync_all(DrainMode::Closing).await
    }

    /// One round of maintenance: expire, write behind, follow the change feed.
    pub async fn maintain(&self) -> Result<()> {
        self.expire_reservations();
        let synced = self.sync_all(DrainMode::Periodic).await;
        let refreshed = self.refresh().await.map(|_| ());
        synced.and(refreshed)
    }

    /// Runs maintenance in the background until [`Maintenance::shutdown`].
    ///
    /// Writes behind every `flush_interval`, and reads the change feed when
    /// the store gives notice of a change ([`CacheStore::wait_for_change`])
    /// and at the latest every `refresh_interval`. Must be called inside a
    /// tokio runtime.
    ///
    /// [`CacheStore::wait_for_change`]: crate::store::CacheStore::wait_for_change
    pub fn spawn_maintenance(&self) -> Maintenance {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let flush = tokio::spawn(self.clone().write_behind(stopped.clone()));
        let refresh = tokio::spawn(self.clone().follow_changes(stopped));
        Maintenance {
            stop,
            tasks: [flush, refresh],
            governor: self.clone(),
        }
    }

    async fn write_behind(self, mut stopped: tokio::sync::watch::Receiver<bool>) {
        let mut flush = tokio::time::interval(self.inner.config.flush_interval);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stopped.changed() => break,
                _ = flush.tick() => {}
            }
            self.expire_reservations();
            if let Err(err) = self.sync_all(DrainMode::Periodic).await {
                tracing::warn!(error = %err, "writing usage failed; will retry");
            }
        }
    }

    async fn follow_changes(self, mut stopped: tokio::sync::watch::Receiver<bool>) {
        let every = self.inner.config.refresh_interval;
        let mut seen = 0;
        let mut rounds: u32 = 0;
        loop {
            let notice = tokio::select! {
                _ = stopped.changed() => break,
                notice = self.inner.store.wait_for_change(seen, every) => notice,
            };
            let noticed = match notice {
                Ok(newest) => std::mem::replace(&mut seen, newest) != newest,
                Err(err) => {
                    tracing::warn!(error = %err, "waiting for change notices failed");
                    tokio::time::sleep(every).await;
                    false
                }
            };
            // Whether the feed went back (emptied, restored) costs one more
            // read: look every twentieth round.
            rounds = rounds.wrapping_add(1);
            let refreshed = {
                let mut seq = self.inner.seq.lock().await;
                self.refresh_from(&mut seq, rounds.is_multiple_of(20)).await
            };
            if let Err(err) = refreshed {
                tracing::warn!(error = %err, "reading the change feed failed; will retry");
            }
            if noticed {
                // A notice may also say that another governor waits for rate
                // credits: a sync reports this one's grants, hears of the
                // recall and gives back what it does not use.
                if let Err(err) = self.sync_all(DrainMode::Asking).await {
                    tracing::warn!(error = %err, "writing usage failed; will retry");
                }
            }
        }
    }

    /// Reads the change feed and reloads what changed elsewhere; returns how many changes.
    pub async fn refresh(&self) -> Result<usize> {
        let mut seq = self.inner.seq.lock().await;
        self.refresh_from(&mut seq, true).await
    }

    /// Reads the feed after `seq`; `check_reset` also notices a feed that went back.
    async fn refresh_from(&self, seq: &mut i64, check_reset: bool) -> Result<usize> {
        let mut applied = 0;
        loop {
            let changes = self.inner.store.changes_since(*seq, CHANGE_PAGE).await?;
            let Some(last) = changes.last().map(|c| c.seq) else {
                if check_reset && self.inner.store.change_seq().await? < *seq {
                    // The feed went back (emptied, or a backup restored): the
                    // changes since are unknown, so everything is reloaded.
                    tracing::warn!(
                        seen = *seq,
                        "the change feed went back; reloading everything"
                    );
                    *seq = self.load_tables().await?;
                    continue;
                }
                break;
            };
            self.reload(&changes).await?;
            applied += changes.len();
            *seq = last;
            if changes.len() < CHANGE_PAGE as usize {
                break;
            }
        }
        Ok(applied)
    }

    /// Counters about this governor.
    pub fn stats(&self) -> GovernorStats {
        let tables = read(&self.inner.tables);
        let mut stats = GovernorStats {
            keys: tables.keys.len(),
            users: tables.users.len(),
            orgs: tables.orgs.len(),
            expired_reservations: self.inner.expired.load(Ordering::Relaxed),
            syncs: self.inner.syncs.load(Ordering::Relaxed),
            failed_syncs: self.inner.failed_syncs.load(Ordering::Relaxed),
            ..GovernorStats::default()
        };
        for org in tables.orgs.values() {
            let ledger = lock(&org.ledger);
            stats.open_reservations += ledger.open_reservations();
            stats.queued_events += ledger.queued_events();
        }
        if let Some(doubt) = self
            .inner
            .in_doubt
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            stats.queued_events += doubt.sync.events.len();
        }
        stats
    }

    /// Loads every table afresh; returns the feed position it is current to.
    ///
    /// Writes made while loading are in the feed after that position.
    async fn load_tables(&self) -> Result<i64> {
        let store = &self.inner.store;
        let seq = store.change_seq().await?;
        let mut tables = Tables::default();
        for policy in store.org_policies().await? {
            let _ = tables.put_org(policy);
        }
        let mut after = None;
        loop {
            let page = store.user_policies(after, PAGE).await?;
            after = page.last().map(|p| p.user.id);
            let done = page.len() < PAGE as usize;
            page.into_iter().for_each(|p| {
                let _ = tables.put_user(p);
            });
            if done {
                break;
            }
        }
        let mut after = None;
        loop {
            let page = store.key_records(after, PAGE).await?;
            after = page.last().map(|k| k.id);
            let done = page.len() < PAGE as usize;
            tables.keys.reserve(page.len());
            page.into_iter().for_each(|k| {
                let _ = tables.put_key(k);
            });
            if done {
                break;
            }
        }
        {
            let mut current = write(&self.inner.tables);
            tables.adopt_ledgers(&current);
            *current = tables;
        }
        Ok(seq)
    }

    async fn reload(&self, changes: &[Change]) -> Result<()> {
        let mut wanted: Vec<(ChangeEntity, i64)> =
            changes.iter().map(|c| (c.entity, c.id)).collect();
        wanted.sort_by_key(|(e, id)| (e.as_str(), *id));
        wanted.dedup();
        let store = &self.inner.store;
        for (entity, id) in wanted {
            let changed = match entity {
                ChangeEntity::Org => match store.org_policy(OrgId(id)).await? {
                    Some(policy) => write(&self.inner.tables).put_org(policy),
                    None => Vec::new(),
                },
                ChangeEntity::User => match store.user_policy(UserId(id)).await? {
                    Some(policy) => write(&self.inner.tables).put_user(policy),
                    None => Vec::new(),
                },
                ChangeEntity::Key => match store.key_record(KeyId(id)).await? {
                    Some(record) => write(&self.inner.tables)
                        .put_key(record)
                        .into_iter()
                        .collect(),
                    None => Vec::new(),
                },
            };
            for changed in changed {
                self.mark_stale(changed);
            }
        }
        Ok(())
    }

    fn mark_stale(&self, changed: LimitChanged) {
        let (org, scope, id, rates) = match changed {
            LimitChanged::Org(org) => (org, LimitScope::Org, org.0, false),
            LimitChanged::User(org, user) => (org, LimitScope::User, user.0, false),
            LimitChanged::Rates(org, scope, id) => (org, scope, id, true),
        };
        if let Some(entry) = read(&self.inner.tables).orgs.get(&org) {
            let mut ledger = lock(&entry.ledger);
            if rates {
                ledger.mark_rates_stale(scope, id);
            } else {
                ledger.mark_stale(scope, id);
            }
        }
    }

    fn org_entry(&self, id: OrgId) -> Result<Arc<OrgEntry>> {
        read(&self.inner.tables)
            .orgs
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::not_found("organization", id.to_string()))
    }

    fn lookup(&self, hash: &KeyHash) -> Option<Found> {
        let tables = read(&self.inner.tables);
        let key = *tables.keys.get(hash)?;
        let user: &UserEntry = tables.users.get(&key.user_id)?;
        let org = Arc::clone(tables.orgs.get(&user.org_id)?);
        let key_limits = if key.has_rate_limits {
            tables
                .key_rate_limits
                .get(&key.id)
                .copied()
                .unwrap_or_default()
        } else {
            RateLimits::NONE
        };
        Some(Found {
            key,
            email: user.email.to_string(),
            user_limit: user.limit,
            user_rates: user.rate_limits,
            user_removed: user.removed,
            org,
            key_limits,
        })
    }

    /// The key's entries if it is usable now, or why it is refused (unknown,
    /// expired, revoked) before anything else is looked at.
    async fn usable_key(&self, key: &str) -> Result<Result<Found, DenyReason>> {
        let Some(found) = self.find_key(key).await? else {
            return Ok(Err(DenyReason::InvalidKey));
        };
        Ok(match found.key_problem(self.inner.clock.now()) {
            Some(reason) => Err(reason),
            None => Ok(found),
        })
    }

    /// The cached key `key` with its user and org; `None` if malformed or unknown.
    async fn find_key(&self, key: &str) -> Result<Option<Found>> {
        if !key::is_well_formed(key) {
            return Ok(None);
        }
        self.find(&KeyHash::of(key)).await
    }

    /// Looks a key up; an unknown key first reloads recent changes.
    ///
    /// At most one reload runs at a time: a miss while one is running waits
    /// for it instead of starting another, so a flood of unknown keys costs
    /// the store one small query at a time.
    async fn find(&self, hash: &KeyHash) -> Result<Option<Found>> {
        if let Some(found) = self.lookup(hash) {
            return Ok(Some(found));
        }
        let waited = match self.inner.seq.try_lock() {
            Ok(mut seq) => {
                self.refresh_from(&mut seq, false).await?;
                false
            }
            Err(_) => {
                drop(self.inner.seq.lock().await);
                true
            }
        };
        match self.lookup(hash) {
            // The reload waited for may have read the feed just before this
            // key was written: read it once more.
            None if waited => {
                let mut seq = self.inner.seq.lock().await;
                self.refresh_from(&mut seq, false).await?;
                drop(seq);
                Ok(self.lookup(hash))
            }
            found => Ok(found),
        }
    }

    async fn decide(
        &self,
        key: &str,
        model: &str,
        estimated: i64,
        reserve: bool,
    ) -> Result<Decision> {
        let now = self.inner.clock.now();
        // The key is checked first: a caller without a valid key learns
        // nothing else, not even whether its model name would be accepted.
        let Some(mut found) = self.find_key(key).await? else {
            let request = Request::unchecked(model, estimated);
            return Ok(Decision::Denied(request.deny(
                DenyReason::InvalidKey,
                None,
                None,
            )));
        };
        let requested = validate::token_amount("estimated_tokens", estimated)?;
        let request = Request {
            model: policy::model_name(model)?,
            requested,
        };
        let principal = found.principal();
        if let Some(reason) = found.key_problem(now) {
            return Ok(Decision::Denied(request.deny(
                reason,
                Some(principal),
                None,
            )));
        }
        if !found.org.models.allows(&request.model) {
            let reason = DenyReason::ModelNotAllowed;
            return Ok(Decision::Denied(request.deny(
                reason,
                Some(principal),
                None,
            )));
        }
        if reserve {
            self.reserve(&found, request, principal, now).await
        } else {
            self.dry_run(&found, request, principal, now).await
        }
    }

    async fn reserve(
        &self,
        found: &Found,
        request: Request,
        principal: Principal,
        now: DateTime<Utc>,
    ) -> Result<Decision> {
        let ttl = chrono::Duration::from_std(self.inner.config.reservation_ttl)
            .unwrap_or(chrono::Duration::MAX);
        let expires_at = now
            .checked_add_signed(ttl)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let id = ReservationId(self.inner.next_reservation.fetch_add(1, Ordering::Relaxed));
        let mut ask = found.ask(id, &request, now, expires_at.timestamp_millis());
        let mut leases = 0;
        let mut max_rounds = MAX_LEASE_ROUNDS;
        let mut recall_until = None;
        let mut held: Option<Held> = None;
        loop {
            // Concurrent requests may use up a fresh slice before this one
            // gets to it; ask the store again, a bounded number of times.
            let may_lease = leases < max_rounds;
            // A governor cut off from the store past half its lease TTL
            // stops granting from its leases: another may have taken them.
            ask.leases_valid = ask.now.timestamp_millis()
                < self.inner.leases_valid_until_ms.load(Ordering::Relaxed);
            let attempt = lock(&found.org.ledger).try_reserve(&ask, may_lease);
            drop(held.take());
            match attempt {
                Attempt::NeedLease(wants) => {
                    held = Some(self.sync_org(&found.org, wants, DrainMode::Asking).await?);
                    leases += 1;
                }
                Attempt::Granted {
                    period,
                    resets_at,
                    state,
                } => {
                    let reservation = Reservation {
                        id,
                        org_id: found.org.org.id,
                        user_id: principal.user_id,
                        key_id: found.key.id,
                        model: request.model.clone(),
                        period: period.clone(),
                        tokens: request.requested,
                        expires_at,
                    };
                    return Ok(Decision::Allowed(request.allow(
                        principal,
                        Some(reservation),
                        state,
                        period,
                        resets_at,
                    )));
                }
                Attempt::RateLimited {
                    scope,
                    exceeded,
                    retry,
                } => {
                    if retry == RateRetry::Contended && max_rounds < MAX_CONTENDED_ROUNDS {
                        max_rounds = MAX_CONTENDED_ROUNDS;
                        continue;
                    }
                    if retry == RateRetry::Recall && self.wait_for_recall(&mut recall_until).await {
                        // Ask again, as of now: grants are recorded at the time they are made.
                        ask.now = self.inner.clock.now();
                        leases = 0;
                        max_rounds = MAX_LEASE_ROUNDS;
                        continue;
                    }
                    let denied = request.rate_limited(scope, exceeded, principal, ask.now);
                    return Ok(Decision::Denied(denied));
                }
                Attempt::Exhausted {
                    exceeded,
                    period,
                    resets_at,
                } => {
                    if exceeded.left() >= request.requested.max(1)
                        && max_rounds < MAX_CONTENDED_ROUNDS
                    {
                        // Not spent: other requests of this process took the
                        // fresh slices first. Ask again rather than refuse.
                        max_rounds = MAX_CONTENDED_ROUNDS;
                        continue;
                    }
                    if leases > 0 {
                        // What this request leased and could not use goes
                        // back at once, so other governors are not refused.
                        let give_back =
                            self.sync_org(&found.org, Wants::default(), DrainMode::Trimming);
                        if let Err(err) = give_back.await {
                            tracing::warn!(error = %err, "could not give back an unused lease");
                        }
                    }
                    let denied = request.exhausted(exceeded, principal, period, resets_at, now);
                    return Ok(Decision::Denied(denied));
                }
            }
        }
    }

    /// Waits a little for other governors to give back rate credits they
    /// hold unused; `false` once the request has waited long enough.
    async fn wait_for_recall(&self, until: &mut Option<tokio::time::Instant>) -> bool {
        let longest = RECALL_WAIT.max(self.inner.config.flush_interval * 3);
        let deadline = *until.get_or_insert_with(|| tokio::time::Instant::now() + longest);
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(RECALL_POLL).await;
        true
    }

    async fn dry_run(
        &self,
        found: &Found,
        request: Request,
        principal: Principal,
        now: DateTime<Utc>,
    ) -> Result<Decision> {
        let ask = found.ask(ReservationId(0), &request, now, now.timestamp_millis());
        let (local, shorts, probe) = {
            let mut ledger = lock(&found.org.ledger);
            let (shorts, probe) = ledger.rate_probe(&ask);
            let local = ledger.local_state(found.org.org.id, principal.user_id, now, found.org.tz);
            (local, shorts, probe)
        };
        if !probe.is_empty() {
            // Rate windows live in the store: ask it, granting nothing.
            let wants = Wants {
                budgets: Vec::new(),
                rates: probe,
            };
            drop(self.sync_org(&found.org, wants, DrainMode::Asking).await?);
        }
        let verdict = lock(&found.org.ledger).rate_verdict(&shorts, now.timestamp_millis());
        if let Some((scope, exceeded)) = verdict {
            let denied = request.rate_limited(scope, exceeded, principal, now);
            return Ok(Decision::Denied(denied));
        }
        let mut state = self
            .inner
            .store
            .budget_state(found.org.org.id, principal.user_id, &local.period)
            .await?;
        // What this governor holds but has not promised is still available.
        state.org.reserved = (state.org.reserved - local.org_free.max(0)).max(0);
        state.user.reserved = (state.user.reserved - local.user_free.max(0)).max(0);
        Ok(match budget::first_exceeded(&state, request.requested) {
            Some(exceeded) => Decision::Denied(request.exhausted(
                exceeded,
                principal,
                local.period,
                local.resets_at,
                now,
            )),
            None => Decision::Allowed(request.allow(
                principal,
                None,
                state,
                local.period,
                local.resets_at,
            )),
        })
    }

    fn expire_reservations(&self) {
        let now_ms = self.inner.clock.now().timestamp_millis();
        let ttl_ms =
            i64::try_from(self.inner.config.reservation_ttl.as_millis()).unwrap_or(i64::MAX);
        let orgs: Vec<Arc<OrgEntry>> = read(&self.inner.tables).orgs.values().cloned().collect();
        for org in orgs {
            let released = lock(&org.ledger).expire(org.org.id, now_ms, ttl_ms);
            if released > 0 {
                self.inner.expired.fetch_add(released, Ordering::Relaxed);
                tracing::warn!(
                    org = %org.slug,
                    released,
                    "released reservations that were neither settled nor released in time"
                );
            }
        }
    }

    /// Syncs one organization's ledger with the store, asking for `wants`;
    /// the answer holds the sync lock, for the caller to use what it got first.
    ///
    /// Runs as its own task: a caller that is dropped half-way (a client
    /// hanging up during `authorize`) cannot leave drained usage unwritten
    /// or a granted lease unrecorded.
    async fn sync_org(&self, org: &Arc<OrgEntry>, wants: Wants, mode: DrainMode) -> Result<Held> {
        let (governor, org) = (self.clone(), Arc::clone(org));
        detached(async move { governor.sync_org_now(&org, wants, mode).await }).await
    }

    async fn sync_all(&self, mode: DrainMode) -> Result<()> {
        let governor = self.clone();
        detached(async move { governor.sync_all_now(mode).await }).await
    }

    /// Recalled credits are left to the next periodic sync: what this one
    /// was granted is for the request that asked, which tries again first.
    async fn sync_org_now(
        &self,
        org: &Arc<OrgEntry>,
        wants: Wants,
        mode: DrainMode,
    ) -> Result<Held> {
        let guard = Arc::clone(&self.inner.sync_lock).lock_owned().await;
        self.settle_doubt().await?;
        let drained = lock(&org.ledger).drain(org.org.id, &wants, mode);
        self.sync(vec![(Arc::clone(org), drained)]).await?;
        Ok(guard)
    }

    async fn sync_all_now(&self, mode: DrainMode) -> Result<()> {
        let _guard = self.inner.sync_lock.lock().await;
        let recalled = self.settle_doubt().await?;
        let orgs: Vec<Arc<OrgEntry>> = read(&self.inner.tables).orgs.values().cloned().collect();
        let drained = orgs
            .into_iter()
            .map(|org| {
                let drained = lock(&org.ledger).drain(org.org.id, &Wants::default(), mode);
                (org, drained)
            })
            .filter(|(_, d)| !(d.entries.is_empty() && d.events.is_empty() && d.rates.is_empty()))
            .collect::<Vec<_>>();
        let orgs: Vec<Arc<OrgEntry>> = drained.iter().map(|(org, _)| Arc::clone(org)).collect();
        // An empty sync still renews this holder's leases.
        match self.sync(drained).await {
            Ok(again) if again || recalled => self.give_back_recalled().await,
            Ok(_) => Ok(()),
            Err(err) if !err.is_retryable() && orgs.len() > 1 => self.sync_each(orgs, err).await,
            Err(err) => Err(err),
        }
    }

    /// Gives back at once the rate credits the store recalled, so that the
    /// governor waiting for them does not wait for this one's next round.
    async fn give_back_recalled(&self) -> Result<()> {
        let orgs: Vec<Arc<OrgEntry>> = read(&self.inner.tables)
            .orgs
            .values()
            .filter(|org| lock(&org.ledger).owes_credits())
            .cloned()
            .collect();
        if orgs.is_empty() {
            return Ok(());
        }
        let drained = orgs
            .into_iter()
            .map(|org| {
                // Asking: recalled credits go back; other slices are kept.
                let drained =
                    lock(&org.ledger).drain(org.org.id, &Wants::default(), DrainMode::Asking);
                (org, drained)
            })
            .collect();
        self.sync(drained).await.map(|_| ())
    }

    /// Syncs organizations one by one after a combined sync failed for a
    /// reason other than the store being unreachable, so that one
    /// organization's bad data does not hold up the usage of the others.
    async fn sync_each(&self, orgs: Vec<Arc<OrgEntry>>, combined: Error) -> Result<()> {
        tracing::warn!(error = %combined, "a combined usage write failed; writing per organization");
        let mut first_error = None;
        for org in orgs {
            let drained =
                lock(&org.ledger).drain(org.org.id, &Wants::default(), DrainMode::Trimming);
            if let Err(err) = self.sync(vec![(Arc::clone(&org), drained)]).await {
                if err.is_retryable() {
                    // The store is away (or this sync is in doubt): the
                    // others wait for the next round.
                    return Err(err);
                }
                tracing::error!(org = %org.slug, error = %err, "could not write usage");
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Sends again, under its number, a sync whose outcome is in doubt.
    ///
    /// Runs under the sync lock before anything new is drained, so at most
    /// one sync's work is ever out of the ledgers. `Ok(true)` when the
    /// store recalled rate credits.
    async fn settle_doubt(&self) -> Result<bool> {
        let doubt = self
            .inner
            .in_doubt
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match doubt {
            Some(InDoubt { parts, sync }) => self.send(parts, sync).await,
            None => Ok(false),
        }
    }

    /// Hands drained work to the store.
    ///
    /// `Ok(true)` when the store recalled rate credits this governor may
    /// hold unused. On failure the work is put back into the ledgers, or,
    /// when the store may have applied it, kept to be sent again as is.
    async fn sync(&self, parts: Vec<(Arc<OrgEntry>, Drained)>) -> Result<bool> {
        let mut sync = LeaseSync {
            holder: self.inner.holder.clone(),
            seq: self.inner.sync_seq.fetch_add(1, Ordering::Relaxed) + 1,
            now: self.inner.clock.now(),
            lease_expires_at: self.inner.clock.now(),
            entries: Vec::new(),
            events: Vec::new(),
            rates: Vec::new(),
        };
        let mut parts = parts;
        for (_, drained) in &mut parts {
            sync.entries.extend(drained.entries.iter().cloned());
            sync.rates.extend(drained.rates.iter().cloned());
            sync.events.append(&mut drained.events);
        }
        self.send(parts, sync).await
    }

    /// Sends one sync, stamped with the current time, and applies its answer.
    async fn send(
        &self,
        parts: Vec<(Arc<OrgEntry>, Drained)>,
        mut sync: LeaseSync,
    ) -> Result<bool> {
        let now = self.inner.clock.now();
        let lease_ttl = chrono::Duration::from_std(self.inner.config.lease_ttl)
            .unwrap_or(chrono::Duration::seconds(30));
        sync.now = now;
        sync.lease_expires_at = now + lease_ttl;
        self.inner.syncs.fetch_add(1, Ordering::Relaxed);
        match self.inner.store.sync_leases(&sync).await {
            Ok(synced) => {
                // INVARIANT: after a sync, every lease of this holder expires
                // after `now + lease_ttl / 2` (those due were renewed to
                // `now + lease_ttl`): grant from them only until then.
                let fence = now + lease_ttl / 2;
                self.inner
                    .leases_valid_until_ms
                    .fetch_max(fence.timestamp_millis(), Ordering::Relaxed);
                Ok(self.take_answer(&parts, &synced, now.timestamp_millis()))
            }
            Err(err) => {
                self.inner.failed_syncs.fetch_add(1, Ordering::Relaxed);
                if err.is_retryable() {
                    // The connection may have broken after the store applied
                    // it: send it again, under its number, before anything new.
                    let doubt = InDoubt { parts, sync };
                    *self
                        .inner
                        .in_doubt
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = Some(doubt);
                } else {
                    self.restore(parts, sync.events);
                }
                Err(err)
            }
        }
    }

    /// Puts drained work back into the ledgers it came from; nothing is lost.
    fn restore(
        &self,
        parts: Vec<(Arc<OrgEntry>, Drained)>,
        mut events: Vec<crate::lease::UsageEvent>,
    ) {
        for (org, mut drained) in parts {
            let (mine, rest) = events.into_iter().partition(|e| e.org_id == org.org.id);
            drained.events.extend::<Vec<_>>(mine);
            events = rest;
            lock(&org.ledger).restore(drained);
        }
    }

    /// Hands each ledger its part of the store's answer; whether credits were recalled.
    fn take_answer(
        &self,
        parts: &[(Arc<OrgEntry>, Drained)],
        synced: &Synced,
        now_ms: i64,
    ) -> bool {
        let (mut budgets, mut rates) = (synced.budgets.as_slice(), synced.rates.as_slice());
        for (org, drained) in parts {
            let (mine, rest) = budgets.split_at(drained.entries.len().min(budgets.len()));
            budgets = rest;
            let (my_rates, rest) = rates.split_at(drained.rates.len().min(rates.len()));
            rates = rest;
            lock(&org.ledger).apply(drained, mine, my_rates, now_ms);
        }
        if !synced.recalled.is_empty() {
            self.recall(&synced.recalled);
        }
        !synced.recalled.is_empty() || synced.rates.iter().any(|r| r.recall)
    }

    /// Marks recalled rate leases in every ledger that holds one.
    fn recall(&self, recalled: &[RateScope]) {
        let orgs: Vec<Arc<OrgEntry>> = read(&self.inner.tables).orgs.values().cloned().collect();
        for org in orgs {
            lock(&org.ledger).recall(recalled);
        }
    }
}

/// A key found in the cache, with its user and organization.
struct Found {
    key: KeyEntry,
    /// The user's email, copied under the tables lock.
    email: String,
    user_limit: Option<i64>,
    user_rates: RateLimits,
    /// GitOps ended the user's membership: its keys count as revoked.
    user_removed: bool,
    org: Arc<OrgEntry>,
    key_limits: RateLimits,
}

impl Found {
    /// Who the key belongs to; takes the email, copied once at lookup.
    fn principal(&mut self) -> Principal {
        Principal {
            org_id: self.org.org.id,
            org_slug: self.org.slug.to_string(),
            user_id: self.key.user_id,
            email: std::mem::take(&mut self.email),
            key_id: self.key.id,
        }
    }

    fn key_problem(&self, now: DateTime<Utc>) -> Option<DenyReason> {
        if self.key.revoked || self.user_removed {
            Some(DenyReason::RevokedKey)
        } else if self.key.expires_ms <= now.timestamp_millis() {
            Some(DenyReason::ExpiredKey)
        } else {
            None
        }
    }

    fn ask<'a>(
        &self,
        id: ReservationId,
        request: &'a Request,
        now: DateTime<Utc>,
        expires_ms: i64,
    ) -> Ask<'a> {
        Ask {
            id,
            org_id: self.org.org.id,
            user_id: self.key.user_id,
            key_id: self.key.id,
            tz: self.org.tz,
            org_limit: self.org.org.monthly_token_budget,
            user_limit: self.user_limit,
            rates: [
                (LimitScope::Org, self.org.org.id.0, self.org.rate_limits),
                (LimitScope::User, self.key.user_id.0, self.user_rates),
                (LimitScope::Key, self.key.id.0, self.key_limits),
            ],
            model: &request.model,
            tokens: request.requested,
            now,
            expires_ms,
            leases_valid: true,
        }
    }
}

/// The sync lock, held by a request that just synced until it has tried again.
type Held = tokio::sync::OwnedMutexGuard<()>;

/// A sync sent whose outcome is unknown, with the ledgers' parts of it.
struct InDoubt {
    parts: Vec<(Arc<OrgEntry>, Drained)>,
    sync: LeaseSync,
}

/// Runs `work` to completion on its own task, even if the caller stops waiting.
async fn detached<T, F>(work: F) -> Result<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T>> + Send + 'static,
{
    tokio::spawn(work).await.map_err(|e| Error::Store {
        backend: "governor",
        message: format!("a store sync task failed: {e}"),
    })?
}

fn lock(ledger: &Mutex<Ledger>) -> MutexGuard<'_, Ledger> {
    ledger.lock().unwrap_or_else(|e| e.into_inner())
}

fn read(tables: &RwLock<Tables>) -> std::sync::RwLockReadGuard<'_, Tables> {
    tables.read().unwrap_or_else(|e| e.into_inner())
}

fn write(tables: &RwLock<Tables>) -> std::sync::RwLockWriteGuard<'_, Tables> {
    tables.write().unwrap_or_else(|e| e.into_inner())
}

struct Request {
    model: String,
    requested: i64,
}

impl Request {
    /// The request as given, for a denial made before its fields are checked.
    fn unchecked(model: &str, estimated: i64) -> Self {
        Request {
            model: crate::error::printable(model.trim()),
            requested: estimated,
        }
    }

    fn deny(
        &self,
        reason: DenyReason,
        principal: Option<Principal>,
        limit: Option<LimitDetail>,
    ) -> Denied {
        Denied {
            reason,
            principal,
            model: self.model.clone(),
            requested: self.requested,
            limit,
        }
    }

    fn exhausted(
        &self,
        exceeded: Exceeded,
        principal: Principal,
        period: String,
        resets_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Denied {
        let reason = match exceeded.scope {
            LimitScope::User => DenyReason::UserLimitExhausted,
            _ => DenyReason::OrgBudgetExhausted,
        };
        // A request larger than the whole limit will never fit.
        let retry_after_secs = (self.requested.max(1) <= exceeded.limit)
            .then(|| rate::retry_after_secs((resets_at - now).num_milliseconds()));
        let detail = LimitDetail {
            scope: exceeded.scope,
            kind: LimitKind::MonthlyTokens,
            limit: exceeded.limit,
            used: exceeded.used,
            reserved: exceeded.reserved,
            period: Some(period),
            resets_at,
            retry_after_secs,
        };
        self.deny(reason, Some(principal), Some(detail))
    }

    fn rate_limited(
        &self,
        scope: LimitScope,
        exceeded: RateExceeded,
        principal: Principal,
        now: DateTime<Utc>,
    ) -> Denied {
        let kind = match exceeded.kind {
            RateKind::Requests => LimitKind::RequestsPerMinute,
            RateKind::Tokens => LimitKind::TokensPerMinute,
        };
        let wait_ms = exceeded.retry_after_ms.unwrap_or(rate::WINDOW_MS);
        let detail = LimitDetail {
            scope,
            kind,
            limit: exceeded.limit,
            used: exceeded.current,
            reserved: 0,
            period: None,
            resets_at: now + chrono::Duration::milliseconds(wait_ms.max(0)),
            retry_after_secs: exceeded.retry_after_ms.map(rate::retry_after_secs),
        };
        self.deny(DenyReason::RateLimited, Some(principal), Some(detail))
    }

    fn allow(
        self,
        principal: Principal,
        reservation: Option<Reservation>,
        state: BudgetState,
        period: String,
        resets_at: DateTime<Utc>,
    ) -> Allowed {
        Allowed {
            principal,
            model: self.model,
            requested: self.requested,
            reservation,
            period,
            resets_at,
            budget: state,
        }
    }
}

/// The answer to "may this request go ahead?".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// The request may go ahead.
    Allowed(Allowed),
    /// The request must be refused.
    Denied(Denied),
}

impl Decision {
    /// Whether the request may go ahead.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed(_))
    }

    /// The reservation of an allowed, reserved request.
    pub fn reservation(&self) -> Option<&Reservation> {
        match self {
            Decision::Allowed(allowed) => allowed.reservation.as_ref(),
            Decision::Denied(_) => None,
        }
    }
}

/// What a key may call; see [`Governor::key_models`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyModels {
    /// The key is usable.
    Usable {
        /// Whose key it is.
        principal: Principal,
        /// Its organization's allowed-model entries, normalised and sorted:
        /// model names, `prefix/*` patterns, or `*` for every model. Check a
        /// name against them with [`crate::policy::is_allowed`].
        allowed_models: Vec<String>,
    },
    /// The key would be refused: `invalid_key`, `expired_key` or `revoked_key`.
    Refused(DenyReason),
}

/// An allowed request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allowed {
    /// Whose key it was.
    pub principal: Principal,
    /// The normalised model name.
    pub model: String,
    /// Tokens estimated for the request.
    pub requested: i64,
    /// The tokens held for it; `None` for a dry-run [`Governor::check`].
    pub reservation: Option<Reservation>,
    /// The budget period key, `YYYY-MM`.
    pub period: String,
    /// When the period ends and the budget and limit reset.
    pub resets_at: DateTime<Utc>,
    /// Limits and counters (after the reservation, when one was made).
    pub budget: BudgetState,
}

/// A refused request, with everything needed to explain it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Denied {
    /// Why.
    pub reason: DenyReason,
    /// Whose key it was; `None` when the key is unknown.
    pub principal: Option<Principal>,
    /// The normalised model name.
    pub model: String,
    /// Tokens estimated for the request.
    pub requested: i64,
    /// The limit that refused it, for budget and limit denials.
    pub limit: Option<LimitDetail>,
}

impl Denied {
    /// Whole seconds until a retry may succeed, for limit denials that can.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.limit.as_ref().and_then(|l| l.retry_after_secs)
    }

    /// A one-line explanation fit for the caller; never contains the key.
    pub fn message(&self) -> String {
        match (&self.reason, &self.limit) {
            (DenyReason::ModelNotAllowed, _) => {
                let org = self.principal.as_ref().map_or("", |p| p.org_slug.as_str());
                format!(
                    "model `{}` is not allowed for organization `{org}`",
                    self.model
                )
            }
            (_, Some(limit)) => limit.describe(self.principal.as_ref(), self.requested),
            (reason, None) => reason.description().to_owned(),
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyReason {
    /// The key is malformed or unknown.
    InvalidKey,
    /// The key's expiry time has passed.
    ExpiredKey,
    /// The key was revoked.
    RevokedKey,
    /// The organization may not call this model.
    ModelNotAllowed,
    /// The organization's monthly budget cannot cover the request.
    OrgBudgetExhausted,
    /// The user's own monthly limit cannot cover the request.
    UserLimitExhausted,
    /// A requests- or tokens-per-minute limit (of the org, user or key) is reached.
    RateLimited,
}

impl DenyCategory {
    /// The HTTP status a host answers: 401, 403 or 429.
    pub fn http_status(self) -> u16 {
        match self {
            DenyCategory::Unauthenticated => 401,
            DenyCategory::Forbidden => 403,
            DenyCategory::LimitExceeded => 429,
        }
    }

    /// The stable machine-readable name, such as `limit_exceeded`.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyCategory::Unauthenticated => "unauthenticated",
            DenyCategory::Forbidden => "forbidden",
            DenyCategory::LimitExceeded => "limit_exceeded",
        }
    }
}

impl DenyReason {
    /// The stable machine-readable name, such as `org_budget_exhausted`.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::InvalidKey => "invalid_key",
            DenyReason::ExpiredKey => "expired_key",
            DenyReason::RevokedKey => "revoked_key",
            DenyReason::ModelNotAllowed => "model_not_allowed",
            DenyReason::OrgBudgetExhausted => "org_budget_exhausted",
            DenyReason::UserLimitExhausted => "user_limit_exhausted",
            DenyReason::RateLimited => "rate_limited",
        }
    }

    /// What kind of refusal this is, for hosts that map it to a status code.
    pub fn category(self) -> DenyCategory {
        match self {
            DenyReason::InvalidKey | DenyReason::ExpiredKey | DenyReason::RevokedKey => {
                DenyCategory::Unauthenticated
            }
            DenyReason::ModelNotAllowed => DenyCategory::Forbidden,
            DenyReason::OrgBudgetExhausted
            | DenyReason::UserLimitExhausted
            | DenyReason::RateLimited => DenyCategory::LimitExceeded,
        }
    }

    fn description(self) -> &'static str {
        match self {
            DenyReason::InvalidKey => "invalid API key",
            DenyReason::ExpiredKey => "API key has expired",
            DenyReason::RevokedKey => "API key has been revoked",
            DenyReason::ModelNotAllowed => "model is not allowed",
            DenyReason::OrgBudgetExhausted => "organization monthly budget exhausted",
            DenyReason::UserLimitExhausted => "user monthly limit exhausted",
            DenyReason::RateLimited => "rate limit reached",
        }
    }
}

/// The broad kind of a refusal. HTTP hosts usually answer 401, 403 and 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyCategory {
    /// The caller is not who a valid key says (HTTP 401).
    Unauthenticated,
    /// The caller may never do this (HTTP 403).
    Forbidden,
    /// The caller may do this again later (HTTP 429).
    LimitExceeded,
}

/// What kind of limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    /// Tokens per calendar month (the org budget or a user's own limit).
    MonthlyTokens,
    /// Requests in any 60 seconds.
    RequestsPerMinute,
    /// Tokens in any 60 seconds.
    TokensPerMinute,
}

impl LimitKind {
    /// The stable machine-readable name, such as `requests_per_minute`.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::MonthlyTokens => "monthly_tokens",
            LimitKind::RequestsPerMinute => "requests_per_minute",
            LimitKind::TokensPerMinute => "tokens_per_minute",
        }
    }
}

/// The limit that refused a request, with the numbers that decided it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitDetail {
    /// Whose limit: the organization's, the user's or the key's.
    pub scope: LimitScope,
    /// Which kind of limit.
    pub kind: LimitKind,
    /// Its size, in tokens or requests.
    pub limit: i64,
    /// Tokens used in the period, or requests or tokens in the last 60 seconds.
    pub used: i64,
    /// Tokens held by open reservations (monthly limits only).
    pub reserved: i64,
    /// The period key, `YYYY-MM`, for monthly limits.
    pub period: Option<String>,
    /// When the limit resets (monthly) or the request would fit (per minute).
    pub resets_at: DateTime<Utc>,
    /// Whole seconds until the request may be retried, at least 1; `None`
    /// when it can never fit (it asks for more than the limit itself).
    pub retry_after_secs: Option<u64>,
}

impl LimitDetail {
    /// Tokens or requests left under the limit; never negative.
    pub fn left(&self) -> i64 {
        crate::budget::Counter {
            used: self.used,
            reserved: self.reserved,
        }
        .left_of(self.limit)
    }

    fn describe(&self, principal: Option<&Principal>, requested: i64) -> String {
        let whose = match (self.scope, principal) {
            (LimitScope::Org, Some(p)) => format!("organization `{}`", p.org_slug),
            (LimitScope::User, Some(p)) => format!("user `{}`", p.email),
            (LimitScope::Key, Some(p)) => format!("key {}", p.key_id),
            (_, None) => "caller".to_owned(),
        };
        let retry = match self.retry_after_secs {
            Some(secs) => format!("retry in {secs} s"),
            None => "it can never fit; lower the request's token estimate, such as max_tokens"
                .to_owned(),
        };
        match self.kind {
            LimitKind::MonthlyTokens => self.describe_monthly(&whose, requested),
            LimitKind::RequestsPerMinute => format!(
                "{whose} rate limit reached: {} of {} requests per minute used; {retry}",
                self.used, self.limit
            ),
            LimitKind::TokensPerMinute => format!(
                "{whose} rate limit reached: {} of {} tokens per minute used, {requested} \
                 requested; {retry}",
                self.used, self.limit
            ),
        }
    }

    fn describe_monthly(&self, whose: &str, requested: i64) -> String {
        let what = match self.scope {
            LimitScope::Org => "monthly budget",
            _ => "monthly limit",
        };
        let resets = self
            .resets_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let state = format!(
            "{} used, {} reserved of {}; resets at {resets}",
            self.used, self.reserved, self.limit
        );
        match self.left() {
            0 => format!("{whose} {what} exhausted: {state}"),
            left => format!(
                "{whose} {what} has {left} tokens left, {requested} requested (lower the \
                 request's token estimate, such as max_tokens): {state}"
            ),
        }
    }
}

/// Who a key belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// The organization's id.
    pub org_id: OrgId,
    /// The organization's slug.
    pub org_slug: String,
    /// The user's id.
    pub user_id: UserId,
    /// The user's email.
    pub email: String,
    /// The key's id.
    pub key_id: KeyId,
}

/// Tokens held for an allowed request until it is settled or released.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// Its id, unique within the governor that made it.
    pub id: ReservationId,
    /// The organization charged.
    pub org_id: OrgId,
    /// The user charged.
    pub user_id: UserId,
    /// The key presented.
    pub key_id: KeyId,
    /// The normalised model name.
    pub model: String,
    /// The budget period the tokens count in.
    pub period: String,
    /// Tokens held.
    pub tokens: i64,
    /// When it is released by itself if still open.
    pub expires_at: DateTime<Utc>,
}
