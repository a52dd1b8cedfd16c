//! The governor's in-memory tables: keys by hash, users, organizations.
//!
//! Loaded once from a [`CacheStore`](crate::store::CacheStore) and kept
//! current through its change feed. Each organization carries its
//! [`Ledger`], which outlives reloads of the organization's policy.

use std::sync::{Arc, Mutex};

use chrono_tz::Tz;
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use crate::budget::LimitScope;
use crate::domain::{KeyId, OrgId, Organization, UserId};
use crate::key::KeyHash;
use crate::ledger::Ledger;
use crate::rate::RateLimits;
use crate::snapshot::{KeyRecord, OrgPolicy, UserPolicy};

/// Keys by hash: an open-addressing table whose 64-byte slots hold the
/// hash and the entry together, so a lookup usually touches one cache line.
///
/// Slots are found from the digest's first eight bytes: the digest is
/// SHA-256 output, so they are uniform, and only keys created by admins are
/// ever inserted, so callers cannot choose them. Keys are never removed
/// (a revoked key stays, marked), so linear probing needs no tombstones.
/// The table is kept at most half full.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyTable {
    slots: Vec<Slot>,
    len: usize,
}

#[derive(Debug, Clone, Copy, Default)]
#[repr(align(64))]
struct Slot {
    hash: [u8; 32],
    /// Key id 0 (never given by a store) marks an empty slot.
    entry: KeyEntry,
}

impl Default for KeyEntry {
    /// The empty-slot marker: key id 0.
    fn default() -> Self {
        KeyEntry {
            id: KeyId(0),
            user_id: UserId(0),
            expires_ms: 0,
            revoked: false,
            has_rate_limits: false,
        }
    }
}

impl Slot {
    fn is_empty(&self) -> bool {
        self.entry.id.0 == 0
    }
}

impl KeyTable {
    /// The number of keys.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Makes room for `more` keys without growing again.
    pub fn reserve(&mut self, more: usize) {
        let wanted = (self.len + more).saturating_mul(2).next_power_of_two();
        if wanted > self.slots.len() {
            self.rebuild(wanted);
        }
    }

    /// The entry of the key with this hash, if any.
    pub fn get(&self, hash: &KeyHash) -> Option<&KeyEntry> {
        let mask = self.slots.len().checked_sub(1)?;
        let mut at = start(hash) & mask;
        loop {
            let slot = self.slots.get(at)?;
            if slot.is_empty() {
                return None;
            }
            if slot.hash == hash.0 {
                return Some(&slot.entry);
            }
            at = (at + 1) & mask;
        }
    }

    /// Inserts or replaces the entry of the key with this hash.
    pub fn insert(&mut self, hash: KeyHash, entry: KeyEntry) {
        if (self.len + 1) * 2 > self.slots.len() {
            self.rebuild((self.slots.len() * 2).max(16));
        }
        let mask = self.slots.len() - 1;
        let mut at = start(&hash) & mask;
        // INVARIANT: the table is at most half full, so an empty slot exists.
        while let Some(slot) = self.slots.get_mut(at) {
            if slot.is_empty() {
                *slot = Slot {
                    hash: hash.0,
                    entry,
                };
                self.len += 1;
                return;
            }
            if slot.hash == hash.0 {
                slot.entry = entry;
                return;
            }
            at = (at + 1) & mask;
        }
    }

    fn rebuild(&mut self, size: usize) {
        let old = std::mem::replace(&mut self.slots, vec![Slot::default(); size]);
        self.len = 0;
        for slot in old.into_iter().filter(|slot| !slot.is_empty()) {
            self.insert(KeyHash(slot.hash), slot.entry);
        }
    }
}

fn start(hash: &KeyHash) -> usize {
    let mut word = [0u8; 8];
    word.copy_from_slice(&hash.0[..8]);
    // Truncation on 32-bit targets only drops high bits of a uniform value.
    u64::from_le_bytes(word) as usize
}

/// A cached key: 32 bytes beside its 32-byte hash in a [`KeyTable`] slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyEntry {
    pub id: KeyId,
    pub user_id: UserId,
    /// Expiry in Unix milliseconds; `i64::MAX` for never.
    pub expires_ms: i64,
    pub revoked: bool,
    pub has_rate_limits: bool,
}

/// A cached user.
#[derive(Debug, Clone)]
pub(crate) struct UserEntry {
    pub org_id: OrgId,
    pub email: Arc<str>,
    pub limit: Option<i64>,
    pub rate_limits: RateLimits,
    /// GitOps ended the user's membership: its keys no longer work.
    pub removed: bool,
}

/// Allowed models, split for fast matching.
#[derive(Debug, Clone, Default)]
pub(crate) struct ModelSet {
    all: bool,
    exact: HashSet<String>,
    /// The `prefix/*` patterns.
    prefixes: Vec<String>,
    /// Every entry as the policy wrote it, sorted, for listing.
    patterns: Arc<[String]>,
}

impl ModelSet {
    fn new(patterns: &[String]) -> Self {
        let mut sorted = patterns.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let mut set = ModelSet {
            patterns: Arc::from(sorted),
            ..ModelSet::default()
        };
        for pattern in patterns {
            if pattern == "*" {
                set.all = true;
            } else if pattern.ends_with('*') {
                set.prefixes.push(pattern.clone());
            } else {
                set.exact.insert(pattern.clone());
            }
        }
        set
    }

    /// Whether a normalised model name is allowed; agrees with [`crate::policy::is_allowed`].
    pub fn allows(&self, model: &str) -> bool {
        self.all
            || self.exact.contains(model)
            || self
                .prefixes
                .iter()
                .any(|pattern| crate::policy::matches(pattern, model))
    }

    /// The allowed-model entries (names, `prefix/*`, `*`), sorted.
    pub fn patterns(&self) -> &Arc<[String]> {
        &self.patterns
    }
}

/// A cached organization with its ledger.
#[derive(Debug)]
pub(crate) struct OrgEntry {
    pub org: Organization,
    pub slug: Arc<str>,
    pub tz: Tz,
    pub models: ModelSet,
    pub rate_limits: RateLimits,
    pub ledger: Arc<Mutex<Ledger>>,
}

/// Every table the hot path reads.
#[derive(Debug, Default)]
pub(crate) struct Tables {
    pub keys: KeyTable,
    pub key_rate_limits: HashMap<KeyId, RateLimits>,
    pub users: HashMap<UserId, UserEntry>,
    pub orgs: HashMap<OrgId, Arc<OrgEntry>>,
}

/// What changed in a reload that the ledgers must hear about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LimitChanged {
    /// The organization's budget.
    Org(OrgId),
    /// A user's own monthly limit.
    User(OrgId, UserId),
    /// The rate limits of a scope (the organization, a user or a key).
    Rates(OrgId, LimitScope, i64),
}

impl Tables {
    /// Puts an organization's policy in place, keeping its ledger.
    pub fn put_org(&mut self, policy: OrgPolicy) -> Vec<LimitChanged> {
        let id = policy.org.id;
        let old = self.orgs.get(&id);
        let mut changed = Vec::new();
        if let Some(old) = old {
            if old.org.monthly_token_budget != policy.org.monthly_token_budget {
                changed.push(LimitChanged::Org(id));
            }
            if old.rate_limits != policy.rate_limits {
                changed.push(LimitChanged::Rates(id, LimitScope::Org, id.0));
            }
        }
        let ledger = old.map_or_else(Arc::default, |o| Arc::clone(&o.ledger));
        let entry = OrgEntry {
            slug: Arc::from(policy.org.slug.as_str()),
            tz: policy.org.timezone,
            models: ModelSet::new(&policy.allowed_models),
            rate_limits: policy.rate_limits,
            ledger,
            org: policy.org,
        };
        self.orgs.insert(id, Arc::new(entry));
        changed
    }

    /// Gives each organization of these new tables the ledger it had in `old`,
    /// so a full reload keeps open reservations, leases and queued usage.
    pub fn adopt_ledgers(&mut self, old: &Tables) {
        for (id, entry) in self.orgs.iter_mut() {
            let Some(previous) = old.orgs.get(id) else {
                continue;
            };
            *entry = Arc::new(OrgEntry {
                org: entry.org.clone(),
                slug: Arc::clone(&entry.slug),
                tz: entry.tz,
                models: entry.models.clone(),
                rate_limits: entry.rate_limits,
                ledger: Arc::clone(&previous.ledger),
            });
        }
    }

    /// Puts a user in place.
    pub fn put_user(&mut self, policy: UserPolicy) -> Vec<LimitChanged> {
        let user = policy.user;
        let mut changed = Vec::new();
        if let Some(old) = self.users.get(&user.id) {
            if old.limit != user.monthly_token_limit {
                changed.push(LimitChanged::User(user.org_id, user.id));
            }
            if old.rate_limits != policy.rate_limits {
                changed.push(LimitChanged::Rates(
                    user.org_id,
                    LimitScope::User,
                    user.id.0,
                ));
            }
        }
        self.users.insert(
            user.id,
            UserEntry {
                org_id: user.org_id,
                email: Arc::from(user.email.as_str()),
                limit: user.monthly_token_limit,
                rate_limits: policy.rate_limits,
                removed: user.removed_at.is_some(),
            },
        );
        changed
    }

    /// Puts a key in place; says so when its rate limits changed.
    pub fn put_key(&mut self, record: KeyRecord) -> Option<LimitChanged> {
        if record.id.0 <= 0 {
            // Stores number keys from 1; id 0 marks an empty slot.
            tracing::warn!(key = record.id.0, "ignored a key with an id below 1");
            return None;
        }
        let old = self
            .key_rate_limits
            .get(&record.id)
            .copied()
            .unwrap_or_default();
        let changed = (old != record.rate_limits).then_some(LimitChanged::Rates(
            record.org_id,
            LimitScope::Key,
            record.id.0,
        ));
        let has_rate_limits = !record.rate_limits.is_none();
        if has_rate_limits {
            self.key_rate_limits.insert(record.id, record.rate_limits);
        } else {
            self.key_rate_limits.remove(&record.id);
        }
        self.keys.insert(
            record.hash,
            KeyEntry {
                id: record.id,
                user_id: record.user_id,
                expires_ms: record
                    .expires_at
                    .map_or(i64::MAX, |at| at.timestamp_millis()),
                revoked: record.revoked_at.is_some(),
                has_rate_limits,
            },
        );
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy;

    #[test]
    fn model_sets_agree_with_the_policy() {
        let patterns: Vec<String> = ["gpt-4o-mini", "anthropic/*"]
            .iter()
            .map(|p| policy::model_pattern(p).unwrap())
            .collect();
        let set = ModelSet::new(&patterns);
        for model in [
            "gpt-4o-mini",
            "gpt-4o",
            "anthropic/claude",
            "anthropic/",
            "anthropic",
            "anthropic-x/claude",
        ] {
            assert_eq!(
                set.allows(model),
                policy::is_allowed(&patterns, model),
                "{model}"
            );
        }
        assert!(ModelSet::new(&["*".to_owned()]).allows("x"));
        assert!(!ModelSet::default().allows("x"));
    }

    fn entry(id: i64) -> KeyEntry {
        KeyEntry {
            id: KeyId(id),
            user_id: UserId(1),
            expires_ms: i64::MAX,
            revoked: false,
            has_rate_limits: false,
        }
    }

    #[test]
    fn the_key_table_finds_replaces_and_grows() {
        let mut table = KeyTable::default();
        assert!(table.get(&KeyHash::of("ias_none")).is_none());
        let hashes: Vec<KeyHash> = (0..1_000)
            .map(|i| KeyHash::of(&format!("ias_{i}")))
            .collect();
        for (i, hash) in hashes.iter().enumerate() {
            table.insert(*hash, entry(i as i64 + 1));
        }
        assert_eq!(table.len(), 1_000);
        for (i, hash) in hashes.iter().enumerate() {
            assert_eq!(table.get(hash).map(|e| e.id), Some(KeyId(i as i64 + 1)));
        }
        let mut revoked = entry(1);
        revoked.revoked = true;
        table.insert(hashes[0], revoked);
        assert_eq!(table.len(), 1_000);
        assert!(table.get(&hashes[0]).is_some_and(|e| e.revoked));
        assert!(table.get(&KeyHash::of("ias_unknown")).is_none());
    }

    #[test]
    fn a_slot_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Slot>(), 64);
    }

    #[test]
    fn colliding_start_slots_probe_on() {
        let mut table = KeyTable::default();
        table.reserve(4);
        // Same first eight bytes, different digests: one start slot.
        let mut a = [7u8; 32];
        let mut b = [7u8; 32];
        a[31] = 1;
        b[31] = 2;
        table.insert(KeyHash(a), entry(1));
        table.insert(KeyHash(b), entry(2));
        assert_eq!(table.get(&KeyHash(a)).map(|e| e.id), Some(KeyId(1)));
        assert_eq!(table.get(&KeyHash(b)).map(|e| e.id), Some(KeyId(2)));
        assert!(table.get(&KeyHash([7u8; 32])).is_none());
    }
}
