//! The governor's in-memory tables: keys by hash, users, organizations.
//!
//! Loaded once from a [`CacheStore`](crate::store::CacheStore) and kept
//! current through its change feed. Each organization carries its
//! [`Ledger`], which outlives reloads of the organization's policy.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};

use chrono_tz::Tz;

use crate::domain::{KeyId, OrgId, Organization, UserId};
use crate::key::KeyHash;
use crate::ledger::Ledger;
use crate::rate::RateLimits;
use crate::snapshot::{KeyRecord, OrgPolicy, UserPolicy};

/// Hashes a [`KeyHash`] by taking eight of its bytes.
///
/// The bytes are already SHA-256 output, so they are uniform; only keys
/// created by admins are ever inserted, so callers cannot choose them.
#[derive(Default)]
pub(crate) struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut word = [0u8; 8];
        let n = bytes.len().min(8);
        word[..n].copy_from_slice(&bytes[bytes.len() - n..]);
        self.0 = u64::from_le_bytes(word);
    }
}

type DigestMap<V> = HashMap<KeyHash, V, BuildHasherDefault<DigestHasher>>;

/// A cached key: 32 bytes beside its 32-byte hash.
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
}

/// Allowed models, split for fast matching.
#[derive(Debug, Clone, Default)]
pub(crate) struct ModelSet {
    all: bool,
    exact: HashSet<String>,
    /// `prefix/` strings of `prefix/*` patterns.
    prefixes: Vec<String>,
}

impl ModelSet {
    fn new(patterns: &[String]) -> Self {
        let mut set = ModelSet::default();
        for pattern in patterns {
            if pattern == "*" {
                set.all = true;
            } else if let Some(prefix) = pattern.strip_suffix('*') {
                set.prefixes.push(prefix.to_owned());
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
                .any(|p| model.len() > p.len() && model.starts_with(p.as_str()))
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
    pub keys: DigestMap<KeyEntry>,
    pub key_rate_limits: HashMap<KeyId, RateLimits>,
    pub users: HashMap<UserId, UserEntry>,
    pub orgs: HashMap<OrgId, Arc<OrgEntry>>,
}

/// What changed in a reload that the ledgers must hear about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LimitChanged {
    Org(OrgId),
    User(OrgId, UserId),
}

impl Tables {
    /// Puts an organization's policy in place, keeping its ledger.
    pub fn put_org(&mut self, policy: OrgPolicy) -> Option<LimitChanged> {
        let id = policy.org.id;
        let old = self.orgs.get(&id);
        let changed = old
            .filter(|o| o.org.monthly_token_budget != policy.org.monthly_token_budget)
            .map(|_| LimitChanged::Org(id));
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

    /// Puts a user in place.
    pub fn put_user(&mut self, policy: UserPolicy) -> Option<LimitChanged> {
        let user = policy.user;
        let changed = self
            .users
            .get(&user.id)
            .filter(|u| u.limit != user.monthly_token_limit)
            .map(|_| LimitChanged::User(user.org_id, user.id));
        self.users.insert(
            user.id,
            UserEntry {
                org_id: user.org_id,
                email: Arc::from(user.email.as_str()),
                limit: user.monthly_token_limit,
                rate_limits: policy.rate_limits,
            },
        );
        changed
    }

    /// Puts a key in place.
    pub fn put_key(&mut self, record: KeyRecord) {
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

    #[test]
    fn the_digest_hasher_is_stable_and_spreads() {
        let a = KeyHash::of("ias_a");
        let b = KeyHash::of("ias_b");
        let mut map: DigestMap<u8> = DigestMap::default();
        map.insert(a, 1);
        map.insert(b, 2);
        assert_eq!(map.get(&a), Some(&1));
        assert_eq!(map.get(&b), Some(&2));
    }
}
