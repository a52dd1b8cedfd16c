//! Storage traits: what a backend must provide, and what it must guarantee.
//!
//! Every trait is object-safe, so hosts hold an `Arc<dyn Store>`. The
//! contracts below hold for every backend and are checked by the
//! conformance suite (`ias_core::conformance`, behind the `conformance`
//! feature), which every store crate runs in full.
//!
//! Common rules:
//! - A write that takes an [`AuditRecord`] applies the change and appends the
//!   record in one transaction: both happen or neither does. The store sets
//!   the entry's `target_id` to the id of the row the write created or changed.
//! - A write that fails leaves the store unchanged.
//! - Driver errors are converted into [`Error::Unavailable`] (connection and
//!   locking problems, worth a retry) or [`Error::Store`] (everything else).
//! - Unique violations become [`Error::Conflict`]; missing referenced rows
//!   become [`Error::NotFound`].
//! - A list reads one page by key: up to `limit` rows after the key `after`
//!   (or below `before`, for lists newest first), in key order, through an
//!   index, never by offset. Hosts read pages through [`crate::Admin`],
//!   which asks for one row more than the page to know whether another
//!   follows (see [`crate::page`]).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::audit::{AuditEntry, AuditFilter, AuditLink, AuditRecord};
use crate::budget::{BudgetState, LimitScope};
use crate::domain::{
    ApiKey, KeyId, NewApiKey, NewOrganization, NewUser, OrgId, Organization, User, UserId,
};
use crate::gitops::{GitopsApply, GitopsSettings, GitopsState, GitopsStatus, OrgView};
use crate::lease::{LeaseSync, Synced};
use crate::password::HashedPassword;
use crate::rate::RateLimits;
use crate::rbac::Grant;
use crate::seed::SeedStore;
use crate::snapshot::{Change, KeyRecord, OrgPolicy, UserPolicy};
use crate::usage::{DailyUsage, DayModel, UsageReport};

#[allow(unused_imports, reason = "linked from the module docs")]
use crate::error::Error;
use crate::error::Result;

/// Organizations and their allowed models.
#[async_trait]
pub trait OrgStore: Send + Sync {
    /// Creates an organization; [`Error::Conflict`] if the slug is taken.
    async fn create_org(&self, org: &NewOrganization, audit: &AuditRecord) -> Result<Organization>;

    /// The organization with this slug, if any.
    async fn org_by_slug(&self, slug: &str) -> Result<Option<Organization>>;

    /// Up to `limit` organizations with ids above `after`, by id.
    async fn list_orgs(&self, after: Option<OrgId>, limit: u32) -> Result<Vec<Organization>>;

    /// Sets an organization's monthly token budget and time zone, with the
    /// audit record, in one transaction; [`Error::NotFound`] if it does not
    /// exist. Governors learn of it through the change feed.
    async fn set_org_budget(
        &self,
        org: OrgId,
        monthly_token_budget: i64,
        timezone: chrono_tz::Tz,
        audit: &AuditRecord,
    ) -> Result<Organization>;

    /// Adds (`allowed`) or removes an allowed-model pattern, already normalised.
    ///
    /// Idempotent: returns `false` and writes nothing, not even the audit
    /// record, when the pattern is already in the wanted state.
    async fn set_model_allowed(
        &self,
        org: OrgId,
        pattern: &str,
        allowed: bool,
        audit: &AuditRecord,
    ) -> Result<bool>;

    /// Up to `limit` of the organization's allowed-model patterns that sort
    /// after `after`, sorted.
    async fn allowed_models(
        &self,
        org: OrgId,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>>;
}

/// Users.
#[async_trait]
pub trait UserStore: Send + Sync {
    /// Creates a user; [`Error::Conflict`] if the email is taken in any organization,
    /// [`Error::NotFound`] if the organization does not exist.
    async fn create_user(&self, user: &NewUser, audit: &AuditRecord) -> Result<User>;

    /// The user with this normalised email, if any.
    async fn user_by_email(&self, email: &str) -> Result<Option<User>>;

    /// The user with this id, if any.
    async fn user_by_id(&self, id: UserId) -> Result<Option<User>>;

    /// Up to `limit` of the organization's users with ids above `after`, by id.
    ///
    /// Users that GitOps removed from the organization (`removed_at` set)
    /// are never listed.
    async fn list_users(&self, org: OrgId, after: Option<UserId>, limit: u32) -> Result<Vec<User>>;

    /// Sets a user's own monthly limit (`None`: only the org budget applies).
    async fn set_user_limit(
        &self,
        user: UserId,
        limit: Option<i64>,
        audit: &AuditRecord,
    ) -> Result<User>;

    /// The user's password hash; `None` when it has none or the user does not exist.
    async fn password_hash(&self, user: UserId) -> Result<Option<HashedPassword>>;

    /// Replaces the user's password hash; [`Error::NotFound`] if the user does not exist.
    async fn set_password_hash(
        &self,
        user: UserId,
        hash: &HashedPassword,
        audit: &AuditRecord,
    ) -> Result<()>;
}

/// API keys. Stores keep only the hash and the display prefix of a secret.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Stores a new key; [`Error::Conflict`] if the hash already exists.
    async fn create_key(&self, key: &NewApiKey, audit: &AuditRecord) -> Result<ApiKey>;

    /// The key with this id, if any.
    async fn key_by_id(&self, id: KeyId) -> Result<Option<ApiKey>>;

    /// Up to `limit` of the user's keys with ids below `before`, newest first.
    async fn list_keys(
        &self,
        user: UserId,
        before: Option<KeyId>,
        limit: u32,
    ) -> Result<Vec<ApiKey>>;

    /// Marks a key revoked at `at`; [`Error::Conflict`] if it already is.
    async fn revoke_key(&self, id: KeyId, at: DateTime<Utc>, audit: &AuditRecord)
    -> Result<ApiKey>;
}

/// Usage counters, budget leases and usage reports.
#[async_trait]
pub trait UsageStore: Send + Sync {
    /// Applies one governor's charges, give-backs and lease requests, atomically.
    ///
    /// A sync whose `seq` is not above the highest this holder's syncs
    /// had is a retry: it writes nothing but the lease renewals (see
    /// [`LeaseSync::seq`]) and answers the current state.
    ///
    /// In one transaction that no concurrent call on the same scopes can
    /// interleave with (also from other processes), for each budget entry
    /// in order: take back the leases of other holders on the entry's
    /// scope and period that expired before `sync.now` (only when the
    /// entry wants tokens), read the scope's limit (the organization's
    /// budget or the user's own limit, `None` when the user has none), its
    /// counters and this holder's lease, apply [`crate::lease::apply`],
    /// and write the result. Then, for each rate entry in order, apply the
    /// [rate lease rule](crate::lease#rate-leases) under the limit stored
    /// for its scope and kind. Then renew to `sync.lease_expires_at` each
    /// budget and rate lease of the holder that expires by the midpoint of
    /// `sync.now` and `sync.lease_expires_at` (so that every lease of the
    /// holder outlives that midpoint), append `sync.events` and add
    /// each to its daily roll-up, and list the holder's other rate leases
    /// on scopes under demand. Answers one state per entry, in order.
    /// [`Error::NotFound`] if a budget scope's organization or user does
    /// not exist; then nothing is written.
    async fn sync_leases(&self, sync: &LeaseSync) -> Result<Synced>;

    /// The limits and counters for a user and its organization in `period`.
    ///
    /// `reserved` is what leases hold, by every holder.
    async fn budget_state(&self, org: OrgId, user: UserId, period: &str) -> Result<BudgetState>;

    /// Usage of an organization in `period`, for all its users or one;
    /// `users` holds up to `limit` of them with ids above `after`, by id,
    /// and `next_after` is left `None`.
    async fn usage_report(
        &self,
        org: OrgId,
        user: Option<UserId>,
        period: &str,
        after: Option<UserId>,
        limit: u32,
    ) -> Result<UsageReport>;

    /// Usage per local day and model, for days `from..=to` (`YYYY-MM-DD`),
    /// by day then model: up to `limit` rows after `after` (a day and a model).
    async fn daily_usage(
        &self,
        org: OrgId,
        user: Option<UserId>,
        from: &str,
        to: &str,
        after: Option<&DayModel>,
        limit: u32,
    ) -> Result<Vec<DailyUsage>>;
}

/// Rate limits per organization, user and key.
#[async_trait]
pub trait RateLimitStore: Send + Sync {
    /// Sets one scope's rate limits (`RateLimits::NONE` removes them).
    ///
    /// Idempotent: returns `false` and writes nothing, not even the audit
    /// record, when the limits are already so. [`Error::NotFound`] if the
    /// scope's row does not exist.
    async fn set_rate_limits(
        &self,
        scope: LimitScope,
        id: i64,
        limits: RateLimits,
        audit: &AuditRecord,
    ) -> Result<bool>;

    /// One scope's rate limits; `RateLimits::NONE` when none are set.
    async fn rate_limits(&self, scope: LimitScope, id: i64) -> Result<RateLimits>;
}

/// What a governor loads into memory, and the change feed.
#[async_trait]
pub trait CacheStore: Send + Sync {
    /// The position of the newest change; 0 when there is none.
    async fn change_seq(&self) -> Result<i64>;

    /// Up to `limit` changes after position `after`, oldest first.
    ///
    /// Every write to an organization, a user, a key, an allowed model or
    /// a rate limit appends a change in the same transaction.
    async fn changes_since(&self, after: i64, limit: u32) -> Result<Vec<Change>>;

    /// Every organization with its policy, by id.
    async fn org_policies(&self) -> Result<Vec<OrgPolicy>>;

    /// Up to `limit` users with ids above `after`, by id.
    async fn user_policies(&self, after: Option<UserId>, limit: u32) -> Result<Vec<UserPolicy>>;

    /// Up to `limit` keys with ids above `after`, by id.
    async fn key_records(&self, after: Option<KeyId>, limit: u32) -> Result<Vec<KeyRecord>>;

    /// One organization's policy, if it exists.
    async fn org_policy(&self, id: OrgId) -> Result<Option<OrgPolicy>>;

    /// One user's policy, if it exists.
    async fn user_policy(&self, id: UserId) -> Result<Option<UserPolicy>>;

    /// One key, if it exists.
    async fn key_record(&self, id: KeyId) -> Result<Option<KeyRecord>>;

    /// Waits until the store has word of a change after notice `seen`, or `timeout`.
    ///
    /// Answers the number of the newest notice: above `seen` when one came
    /// (read the feed now), `seen` when the wait timed out. Notices only
    /// shorten the wait: a store that cannot push them (the default, which
    /// just sleeps) or that lost some while disconnected is still read
    /// every `timeout`. A store that may have missed notices (after a
    /// reconnection, say) answers a new number, so callers read the feed.
    async fn wait_for_change(&self, seen: u64, timeout: Duration) -> Result<u64> {
        tokio::time::sleep(timeout).await;
        Ok(seen)
    }
}

/// The audit log: entries are only ever appended; no method changes or deletes one.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends an entry that records no change (a denied attempt) and returns it as stored.
    ///
    /// The entry continues the chain like every other: its id is the
    /// previous entry's plus one and it stores the previous entry's hash.
    /// Its `target_id` is `None`.
    async fn append_audit(&self, audit: &AuditRecord) -> Result<AuditEntry>;

    /// Up to `limit` entries matching `filter` with ids below `before`,
    /// newest first, of one organization or of all.
    async fn search_audit(
        &self,
        org: Option<OrgId>,
        filter: &AuditFilter,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>>;

    /// Up to `limit` entries with an id above `after`, oldest first, for verifying the chain.
    ///
    /// Reads rows as they are stored, without trusting them: a row whose
    /// fields cannot be read back comes as [`AuditLink::Unreadable`], not as
    /// an error, so verification can name it.
    async fn audit_chain(&self, after: i64, limit: u32) -> Result<Vec<AuditLink>>;

    /// The newest `limit` entries, newest first, of one organization or of all.
    async fn list_audit(&self, org: Option<OrgId>, limit: u32) -> Result<Vec<AuditEntry>> {
        self.search_audit(org, &AuditFilter::default(), None, limit)
            .await
    }
}

/// GitOps settings, sync state, reconcile leases and applies.
#[async_trait]
pub trait GitopsStore: Send + Sync {
    /// Enables GitOps for `settings.org_id`, or replaces the settings of an
    /// organization where it is enabled (keeping its status and inventory).
    ///
    /// In one transaction with `audit`: marks the organization Git-managed.
    /// [`Error::NotFound`] if the organization does not exist.
    async fn gitops_enable(
        &self,
        settings: &GitopsSettings,
        at: DateTime<Utc>,
        audit: &AuditRecord,
    ) -> Result<GitopsState>;

    /// Disables GitOps: deletes the organization's sync state and marks it
    /// and its users API-managed again. Returns `false`, writing nothing,
    /// when it was not enabled.
    async fn gitops_disable(&self, org: OrgId, audit: &AuditRecord) -> Result<bool>;

    /// Suspends (fetch and report, never apply) or resumes an organization.
    /// Returns `false`, writing nothing, when it already was so;
    /// [`Error::NotFound`] when GitOps is not enabled for it.
    async fn gitops_set_suspended(
        &self,
        org: OrgId,
        suspended: bool,
        audit: &AuditRecord,
    ) -> Result<bool>;

    /// The organization's GitOps state; `None` when GitOps is not enabled.
    async fn gitops_state(&self, org: OrgId) -> Result<Option<GitopsState>>;

    /// Up to `limit` states of organizations with GitOps enabled whose ids
    /// are above `after`, by organization id.
    async fn gitops_states(&self, after: Option<OrgId>, limit: u32) -> Result<Vec<GitopsState>>;

    /// Stores the status after an attempt, with `audit` when one is given.
    ///
    /// Leaves `last_applied_commit` and the inventory alone: only
    /// [`GitopsStore::gitops_apply`] writes them. Does nothing when GitOps
    /// was disabled meanwhile.
    async fn gitops_save_status(
        &self,
        org: OrgId,
        status: &GitopsStatus,
        audit: Option<&AuditRecord>,
    ) -> Result<()>;

    /// Takes or renews the organization's reconcile lease for `holder` until
    /// `until`; `false` when another holder's lease runs past `now`.
    async fn gitops_try_lease(
        &self,
        org: OrgId,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool>;

    /// Gives the lease back if `holder` holds it.
    async fn gitops_release_lease(&self, org: OrgId, holder: &str) -> Result<()>;

    /// What the store holds of the fields Git owns, with each user's
    /// usage and the organization's in `period` (`YYYY-MM`).
    async fn gitops_view(&self, org: OrgId, period: &str) -> Result<OrgView>;

    /// Applies a plan in one transaction: every operation in order, every
    /// audit record, then the inventory and the status.
    ///
    /// Touches no usage counter, key or audit entry other than appending.
    /// [`Error::Conflict`] (nothing written) when `apply.holder` no longer
    /// holds the organization's lease or GitOps was disabled, or when an
    /// added user's email belongs to another organization.
    async fn gitops_apply(&self, apply: &GitopsApply) -> Result<()>;
}

/// Roles, permissions and the schema.
#[async_trait]
pub trait SchemaStore: Send + Sync {
    /// The `role_permissions` rows of a role.
    async fn role_grants(&self, role: &str) -> Result<Vec<Grant>>;

    /// Every row of `role_permissions`.
    async fn all_grants(&self) -> Result<Vec<Grant>>;

    /// The highest applied migration version.
    async fn schema_version(&self) -> Result<i64>;
}

/// A complete backend: every storage trait.
pub trait Store:
    OrgStore
    + UserStore
    + KeyStore
    + UsageStore
    + RateLimitStore
    + CacheStore
    + AuditStore
    + SchemaStore
    + GitopsStore
    + SeedStore
{
}

impl<T> Store for T where
    T: OrgStore
        + UserStore
        + KeyStore
        + UsageStore
        + RateLimitStore
        + CacheStore
        + AuditStore
        + SchemaStore
        + GitopsStore
        + SeedStore
{
}
