//! Seeding: a generated, reproducible dataset at the scale ias is built for.
//!
//! A [`SeedPlan`] says how many organizations, users per organization and
//! keys per user to make, and how many days of usage history. The
//! [`Generator`] turns it into rows, one [`SeedBatch`] of whole
//! organizations at a time:
//!
//! - organizations with a monthly token budget, one to five allowed models
//!   from a fixed list of real model names, and rate limits on some;
//! - users: one or two org admins per organization, the rest members;
//!   about one in five with a monthly limit of its own, one in ten with
//!   rate limits; no passwords;
//! - keys in the format of [`KeySecret`], stored as the real key creation
//!   stores them (hash and display prefix); most live, some expired, some
//!   revoked;
//! - usage: per user and model, requests on the days of the history, as the
//!   governor records them (usage events, daily roll-ups, monthly
//!   counters), below every budget and limit, so live keys are allowed.
//!
//! The store writes the batches through [`SeedStore`], in one transaction
//! with one audit entry that summarises the seed. The generator knows no
//! database: rows name each other by their number within the seed (the
//! `n`-th organization, user or key), and the store gives each kind of row a
//! block of fresh ids ([`SeedIds`]).
//!
//! The same seed, sizes and [`SeedPlan::as_of`] give the same data with the
//! same build of ias: slugs, emails, limits, key secrets, usage.
//!
//! ```no_run
//! # async fn demo(admin: ias_core::Admin) -> ias_core::Result<()> {
//! use std::sync::Arc;
//! use ias_core::SeedPlan;
//!
//! let plan = SeedPlan::new(1_000, 100, 10)?.with_seed(42);
//! let seeded = admin.seed(plan, false, Arc::new(|_| {})).await?;
//! assert_eq!(seeded.counts.api_keys, 1_000_000);
//! for key in &seeded.harvest.sample {
//!     // A live key for a load test: its secret, its organization, a model it may call.
//!     let _ = (key.secret.expose(), &key.org, key.model);
//! }
//! # Ok(()) }
//! ```
//!
//! # Test data only
//!
//! Key secrets come from ChaCha20 keyed by the seed: whoever knows the seed
//! can recompute every secret. Seed only databases that hold test data, and
//! treat the seed like a key. Without a seed the generator is keyed from
//! the operating system's generator, and the data is not reproducible.

mod generate;
mod names;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::audit::AuditRecord;
use crate::budget::LimitScope;
use crate::domain::{KeyId, OrgId, Role, UserId};
use crate::error::{Error, Result};
use crate::key::{KeyHash, KeySecret};
use crate::rate::RateLimits;

pub use generate::Generator;

/// The most organizations one seed makes.
pub const MAX_ORGS: u64 = 100_000;

/// The most users per organization.
pub const MAX_USERS_PER_ORG: u64 = 100_000;

/// The most keys per user.
pub const MAX_KEYS_PER_USER: u64 = 1_000;

/// The most users one seed makes in all.
pub const MAX_USERS: u64 = 1_000_000;

/// The most keys one seed makes in all.
pub const MAX_KEYS: u64 = 10_000_000;

/// The longest usage history, in days.
pub const MAX_DAYS_OF_USAGE: u64 = 366;

/// The most live keys kept in the sample handed back for load tests.
pub const SAMPLE_KEYS: usize = 10_000;

/// Revoked keys, and expired keys, handed back for checking refusals.
pub const RETIRED_KEYS: usize = 8;

/// What to generate; checked when made.
#[derive(Clone)]
pub struct SeedPlan {
    orgs: u64,
    users_per_org: u64,
    keys_per_user: u64,
    days_of_usage: u64,
    seed: Option<u64>,
    as_of: Option<DateTime<Utc>>,
    prefix: String,
}

impl std::fmt::Debug for SeedPlan {
    /// Leaves the seed out: it is the key of every seeded secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeedPlan")
            .field("orgs", &self.orgs)
            .field("users_per_org", &self.users_per_org)
            .field("keys_per_user", &self.keys_per_user)
            .field("days_of_usage", &self.days_of_usage)
            .field("seeded", &self.seed.is_some())
            .field("as_of", &self.as_of)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl SeedPlan {
    /// A plan for `orgs` organizations of `users_per_org` users with
    /// `keys_per_user` keys each, with 30 days of usage.
    ///
    /// [`Error::InvalidInput`] names the size that is zero, negative or too
    /// large ([`MAX_ORGS`], [`MAX_USERS_PER_ORG`], [`MAX_KEYS_PER_USER`],
    /// and [`MAX_USERS`] and [`MAX_KEYS`] in all).
    pub fn new(orgs: i64, users_per_org: i64, keys_per_user: i64) -> Result<Self> {
        let orgs = count("orgs", orgs, MAX_ORGS)?;
        let users_per_org = count("users_per_org", users_per_org, MAX_USERS_PER_ORG)?;
        let keys_per_user = count("keys_per_user", keys_per_user, MAX_KEYS_PER_USER)?;
        let users = orgs * users_per_org;
        if users > MAX_USERS {
            let reason = format!(
                "{orgs} organizations of {users_per_org} users make {users} users; \
                 at most {MAX_USERS} in all"
            );
            return Err(Error::invalid(
                "users_per_org",
                users_per_org.to_string(),
                reason,
            ));
        }
        let keys = users * keys_per_user;
        if keys > MAX_KEYS {
            let reason = format!(
                "{users} users of {keys_per_user} keys make {keys} keys; at most {MAX_KEYS} in all"
            );
            return Err(Error::invalid(
                "keys_per_user",
                keys_per_user.to_string(),
                reason,
            ));
        }
        Ok(SeedPlan {
            orgs,
            users_per_org,
            keys_per_user,
            days_of_usage: 30,
            seed: None,
            as_of: None,
            prefix: String::new(),
        })
    }

    /// Generates `days` days of usage history (0: none), up to [`MAX_DAYS_OF_USAGE`].
    pub fn with_days_of_usage(mut self, days: i64) -> Result<Self> {
        self.days_of_usage = match u64::try_from(days) {
            Ok(days) if days <= MAX_DAYS_OF_USAGE => days,
            _ => {
                let reason = format!("must be a whole number from 0 to {MAX_DAYS_OF_USAGE}");
                return Err(Error::invalid("days_of_usage", days.to_string(), reason));
            }
        };
        Ok(self)
    }

    /// Derives everything from `seed`, so that the data can be made again.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Ends the history at `at` instead of when the seed runs.
    ///
    /// Every time in the data is placed relative to this instant, so the
    /// same seed and the same `as_of` give the same rows, timestamps too.
    pub fn with_as_of(mut self, at: DateTime<Utc>) -> Self {
        self.as_of = Some(at);
        self
    }

    /// Starts every slug with `prefix` (emails follow, as their domain is the slug).
    pub(crate) fn with_prefix(mut self, prefix: String) -> Self {
        self.prefix = prefix;
        self
    }

    /// Organizations to make.
    pub fn orgs(&self) -> u64 {
        self.orgs
    }

    /// Users per organization.
    pub fn users_per_org(&self) -> u64 {
        self.users_per_org
    }

    /// Keys per user.
    pub fn keys_per_user(&self) -> u64 {
        self.keys_per_user
    }

    /// Users in all.
    pub fn users(&self) -> u64 {
        self.orgs * self.users_per_org
    }

    /// Keys in all.
    pub fn keys(&self) -> u64 {
        self.users() * self.keys_per_user
    }

    /// Days of usage history.
    pub fn days_of_usage(&self) -> u64 {
        self.days_of_usage
    }

    /// Whether a seed was given (the data can be made again).
    pub fn is_reproducible(&self) -> bool {
        self.seed.is_some()
    }

    /// The end of the history, if set.
    pub fn as_of(&self) -> Option<DateTime<Utc>> {
        self.as_of
    }

    /// What every slug starts with; empty unless seeding beside other data.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

fn count(field: &'static str, value: i64, max: u64) -> Result<u64> {
    match u64::try_from(value) {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(Error::invalid(
            field,
            value.to_string(),
            format!("must be a whole number from 1 to {max}"),
        )),
    }
}

/// The first id of each kind of row the store reserved for a seed.
///
/// Row `n` of a kind gets `first + n`. The store picks ids that no row has
/// or ever had, so the ids of a seed are a contiguous block per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedIds {
    /// The id of organization 0.
    pub org: i64,
    /// The id of user 0.
    pub user: i64,
    /// The id of key 0.
    pub key: i64,
}

impl SeedIds {
    /// The id of organization `n`.
    pub fn org(&self, n: u64) -> OrgId {
        OrgId(offset(self.org, n))
    }

    /// The id of user `n`.
    pub fn user(&self, n: u64) -> UserId {
        UserId(offset(self.user, n))
    }

    /// The id of key `n`.
    pub fn key(&self, n: u64) -> KeyId {
        KeyId(offset(self.key, n))
    }

    /// The id of a rate limit's scope row.
    pub fn scope(&self, scope: LimitScope, n: u64) -> i64 {
        match scope {
            LimitScope::Org => self.org(n).0,
            LimitScope::User => self.user(n).0,
            LimitScope::Key => self.key(n).0,
        }
    }
}

fn offset(first: i64, n: u64) -> i64 {
    // INVARIANT: a plan holds at most MAX_KEYS rows of a kind, far below i64::MAX.
    first.saturating_add(i64::try_from(n).unwrap_or(i64::MAX))
}

/// An organization to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedOrg {
    /// Its number in the seed.
    pub n: u64,
    /// Its slug, unique.
    pub slug: String,
    /// Its monthly token budget.
    pub monthly_token_budget: i64,
    /// The zone of its budget months.
    pub timezone: Tz,
    /// When it was created (and last updated).
    pub created_at: DateTime<Utc>,
}

/// An allowed model of an organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedModel {
    /// The organization's number.
    pub org: u64,
    /// A normalised model name.
    pub model: &'static str,
    /// When it was allowed.
    pub created_at: DateTime<Utc>,
}

/// The rate limits of an organization or a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedRateLimit {
    /// Whose: [`LimitScope::Org`] or [`LimitScope::User`].
    pub scope: LimitScope,
    /// The organization's or user's number.
    pub n: u64,
    /// The limits, at least one of them set.
    pub limits: RateLimits,
    /// When they were set.
    pub updated_at: DateTime<Utc>,
}

/// A user to create; it has no password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedUser {
    /// Its number in the seed.
    pub n: u64,
    /// Its organization's number.
    pub org: u64,
    /// A normalised email, unique.
    pub email: String,
    /// Its role.
    pub role: Role,
    /// Its own monthly limit, if any.
    pub monthly_token_limit: Option<i64>,
    /// When it was created (and last updated).
    pub created_at: DateTime<Utc>,
}

/// A key to store: its hash and display prefix, never the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedKey {
    /// Its number in the seed.
    pub n: u64,
    /// Its owner's number.
    pub user: u64,
    /// Its owner's organization's number.
    pub org: u64,
    /// SHA-256 of the secret.
    pub hash: KeyHash,
    /// The display prefix of the secret.
    pub prefix: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it stops (or stopped) working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// One settled request, as a usage event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedEvent {
    /// The organization's number.
    pub org: u64,
    /// The user's number.
    pub user: u64,
    /// The number of the key presented.
    pub key: u64,
    /// The model called.
    pub model: &'static str,
    /// The budget period, `YYYY-MM` in the organization's zone.
    pub period: String,
    /// Tokens reserved for the request.
    pub reserved: i64,
    /// Tokens used.
    pub tokens: i64,
    /// When it was settled.
    pub at: DateTime<Utc>,
}

/// One user's usage of one model on one local day: the sum of its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedDaily {
    /// The organization's number.
    pub org: u64,
    /// The user's number.
    pub user: u64,
    /// The day, `YYYY-MM-DD` in the organization's zone.
    pub day: String,
    /// The model.
    pub model: &'static str,
    /// Tokens used that day.
    pub tokens: i64,
    /// Requests that day.
    pub requests: i64,
}

/// Tokens used by an organization or a user in one budget period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedCounter {
    /// [`LimitScope::Org`] or [`LimitScope::User`].
    pub scope: LimitScope,
    /// The organization's or user's number.
    pub n: u64,
    /// The period, `YYYY-MM`.
    pub period: String,
    /// The tokens of the scope's events in the period.
    pub used: i64,
}

/// The rows of whole organizations, in an order foreign keys allow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeedBatch {
    /// Organizations.
    pub orgs: Vec<SeedOrg>,
    /// Their allowed models.
    pub models: Vec<SeedModel>,
    /// Rate limits of organizations and users.
    pub rate_limits: Vec<SeedRateLimit>,
    /// Users.
    pub users: Vec<SeedUser>,
    /// Keys.
    pub keys: Vec<SeedKey>,
    /// Usage events.
    pub events: Vec<SeedEvent>,
    /// Daily roll-ups of the events.
    pub daily: Vec<SeedDaily>,
    /// Monthly counters of the events.
    pub counters: Vec<SeedCounter>,
}

/// Rows written, per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SeedCounts {
    /// `organizations`.
    pub organizations: u64,
    /// `org_allowed_models`.
    pub org_allowed_models: u64,
    /// `rate_limits`.
    pub rate_limits: u64,
    /// `users`.
    pub users: u64,
    /// `api_keys`.
    pub api_keys: u64,
    /// `usage_events`.
    pub usage_events: u64,
    /// `usage_daily`.
    pub usage_daily: u64,
    /// `usage_counters`.
    pub usage_counters: u64,
}

impl SeedCounts {
    /// Adds the rows of `batch`.
    pub fn add(&mut self, batch: &SeedBatch) {
        let len = |n: usize| n as u64;
        self.organizations += len(batch.orgs.len());
        self.org_allowed_models += len(batch.models.len());
        self.rate_limits += len(batch.rate_limits.len());
        self.users += len(batch.users.len());
        self.api_keys += len(batch.keys.len());
        self.usage_events += len(batch.events.len());
        self.usage_daily += len(batch.daily.len());
        self.usage_counters += len(batch.counters.len());
    }

    /// Every table with its rows, in the order written.
    pub fn tables(&self) -> [(&'static str, u64); 8] {
        [
            ("organizations", self.organizations),
            ("org_allowed_models", self.org_allowed_models),
            ("rate_limits", self.rate_limits),
            ("users", self.users),
            ("api_keys", self.api_keys),
            ("usage_events", self.usage_events),
            ("usage_daily", self.usage_daily),
            ("usage_counters", self.usage_counters),
        ]
    }
}

/// What a store already holds, as far as seeding cares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeedCensus {
    /// Organizations.
    pub organizations: u64,
    /// Users.
    pub users: u64,
    /// API keys.
    pub api_keys: u64,
    /// The slug of the oldest organization, if any.
    pub first_org: Option<String>,
}

impl SeedCensus {
    /// Whether the store holds no organization, user or key.
    pub fn is_empty(&self) -> bool {
        self.organizations == 0 && self.users == 0 && self.api_keys == 0
    }

    /// The error refusing to seed a store that holds this.
    pub fn refusal(&self) -> Error {
        let reason = format!(
            "already exists, with {} in the database; seed writes only into an empty \
             database unless told to add alongside (allow-existing)",
            things(&[
                (self.organizations, "organization", "organizations"),
                (self.users, "user", "users"),
                (self.api_keys, "key", "keys"),
            ])
        );
        let slug = self.first_org.clone().unwrap_or_default();
        Error::conflict("organization", slug, reason)
    }
}

/// `3 organizations, 1 user and 0 keys`.
fn things(counts: &[(u64, &str, &str)]) -> String {
    let parts: Vec<String> = counts
        .iter()
        .map(|(n, one, many)| format!("{n} {}", if *n == 1 { one } else { many }))
        .collect();
    match parts.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => parts.concat(),
    }
}

/// Reports the rows written so far, after each batch.
pub type SeedProgress = Arc<dyn Fn(&SeedCounts) + Send + Sync>;

/// Everything a store needs to write a seed.
pub struct SeedWrite {
    /// Refuse with [`SeedCensus::refusal`] unless the store holds no
    /// organization, user or key (checked inside the transaction).
    pub require_empty: bool,
    /// The rows, batch by batch; read until exhausted.
    pub batches: Box<dyn Iterator<Item = SeedBatch> + Send>,
    /// The one audit entry of the seed.
    pub audit: AuditRecord,
    /// Told the running totals after each batch.
    pub progress: SeedProgress,
}

impl std::fmt::Debug for SeedWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeedWrite")
            .field("require_empty", &self.require_empty)
            .field("audit", &self.audit)
            .finish_non_exhaustive()
    }
}

/// Bulk writes for seeding: the store side of [`Generator`].
#[async_trait]
pub trait SeedStore: Send + Sync {
    /// How many organizations, users and keys the store holds.
    async fn seed_census(&self) -> Result<SeedCensus>;

    /// Writes every batch of `write` and its audit entry, all in one transaction.
    ///
    /// In that transaction, and with other admin writes kept out: refuses
    /// with [`SeedCensus::refusal`] when `require_empty` and the store holds
    /// an organization, a user or a key; reserves [`SeedIds`] (ids above
    /// any that was ever given, so never reused); writes each batch's rows
    /// as they are (a user's `n` becomes `ids.user(n)`, and so on), in
    /// the order of [`SeedBatch`]'s fields; appends to the change feed one
    /// change per organization, user and key written, so that governors
    /// already running load them; appends `write.audit` with no target id.
    /// After each batch it calls `write.progress` with the totals so far.
    /// Answers the totals. On any error nothing is written; a slug or email
    /// already taken is [`Error::Conflict`].
    async fn write_seed(&self, write: SeedWrite) -> Result<SeedCounts>;
}

/// A live key of the sample handed back for load tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleKey {
    /// The secret.
    pub secret: KeySecret,
    /// The slug of the key's organization.
    pub org: String,
    /// A model the organization allows.
    pub model: &'static str,
}

/// How many keys of each state the generator made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct KeyTally {
    /// Neither revoked nor expired at the end of the history.
    pub live: u64,
    /// Expired before the end of the history.
    pub expired: u64,
    /// Revoked.
    pub revoked: u64,
}

/// What the generator hands back once every batch has been read.
#[derive(Debug, Clone, Default)]
pub struct Harvest {
    /// Keys by state.
    pub keys: KeyTally,
    /// Up to [`SAMPLE_KEYS`] keys that never expire and are not revoked,
    /// drawn evenly from all of them, in the order they were made.
    pub sample: Vec<SampleKey>,
    /// The first [`RETIRED_KEYS`] revoked and the first [`RETIRED_KEYS`]
    /// expired keys, for checking that they are refused.
    pub retired: Vec<SampleKey>,
}

/// Where a [`Generator`] leaves its [`Harvest`]; shared with the caller.
pub type HarvestHandle = Arc<Mutex<Harvest>>;

/// A seed written: what [`crate::Admin::seed`] answers.
#[derive(Debug, Clone)]
pub struct Seeded {
    /// Rows written, per table.
    pub counts: SeedCounts,
    /// Keys by state, and the sample of live keys.
    pub harvest: Harvest,
    /// What every slug starts with; empty when the database was empty.
    pub prefix: String,
    /// The end of the history.
    pub as_of: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_checked_by_name() {
        for (args, field) in [
            ((0, 1, 1), "orgs"),
            ((-1, 1, 1), "orgs"),
            ((100_001, 1, 1), "orgs"),
            ((1, 0, 1), "users_per_org"),
            ((1, 1, 0), "keys_per_user"),
            ((1, 1, 1_001), "keys_per_user"),
            ((100_000, 11, 1), "users_per_org"),
            ((10_000, 100, 11), "keys_per_user"),
        ] {
            let err = SeedPlan::new(args.0, args.1, args.2)
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!("invalid {field} `")),
                "{args:?}: {err}"
            );
        }
        let plan = SeedPlan::new(1000, 100, 10).unwrap();
        assert_eq!((plan.users(), plan.keys()), (100_000, 1_000_000));
        assert!(plan.clone().with_days_of_usage(367).is_err());
        assert!(plan.clone().with_days_of_usage(-1).is_err());
        assert_eq!(plan.with_days_of_usage(0).unwrap().days_of_usage(), 0);
    }

    #[test]
    fn the_refusal_names_what_it_found() {
        let census = SeedCensus {
            organizations: 2,
            users: 1,
            api_keys: 0,
            first_org: Some("team-alpha".into()),
        };
        let err = census.refusal().to_string();
        assert!(
            err.starts_with(
                "organization `team-alpha` already exists, with 2 organizations, 1 user and 0 keys"
            ),
            "{err}"
        );
        assert!(!census.is_empty());
        assert!(SeedCensus::default().is_empty());
    }

    #[test]
    fn the_debug_form_hides_the_seed() {
        let plan = SeedPlan::new(1, 1, 1).unwrap().with_seed(987_654_321);
        assert!(!format!("{plan:?}").contains("987654321"));
    }
}
