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

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::audit::{AuditEntry, AuditFilter, AuditLink, AuditRecord};
use crate::budget::{BudgetState, ReserveOutcome, ReserveRequest, Settlement};
use crate::domain::{
    ApiKey, KeyContext, KeyId, NewApiKey, NewOrganization, NewUser, OrgId, Organization,
    ReservationId, User, UserId,
};
use crate::key::KeyHash;
use crate::password::HashedPassword;
use crate::rbac::Grant;
use crate::usage::UsageReport;

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

    /// Every organization, ordered by slug.
    async fn list_orgs(&self) -> Result<Vec<Organization>>;

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

    /// The organization's allowed-model patterns, sorted.
    async fn allowed_models(&self, org: OrgId) -> Result<Vec<String>>;
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

    /// The organization's users, ordered by email.
    async fn list_users(&self, org: OrgId) -> Result<Vec<User>>;

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

    /// The user's keys, newest first.
    async fn list_keys(&self, user: UserId) -> Result<Vec<ApiKey>>;

    /// Marks a key revoked at `at`; [`Error::Conflict`] if it already is.
    async fn revoke_key(&self, id: KeyId, at: DateTime<Utc>, audit: &AuditRecord)
    -> Result<ApiKey>;

    /// Everything the hot path needs about the key with this hash, in one read.
    ///
    /// Returns revoked and expired keys too: the governor tells them apart
    /// from unknown ones.
    async fn key_context(&self, hash: &KeyHash) -> Result<Option<KeyContext>>;
}

/// Budget reservations and usage counters.
#[async_trait]
pub trait UsageStore: Send + Sync {
    /// Holds `request.tokens` against the org budget and the user's limit, atomically.
    ///
    /// In one transaction that no concurrent `reserve` on the same org or
    /// user can interleave with (also from other processes): read the
    /// current limits from the organization and user rows and the counters
    /// of `request.period`, apply [`crate::budget::first_exceeded`], and
    /// either add the tokens to both counters' `reserved` and store the
    /// reservation, or change nothing.
    async fn reserve(&self, request: &ReserveRequest) -> Result<ReserveOutcome>;

    /// Charges `actual` tokens for a reservation and removes it, atomically.
    ///
    /// Moves the reservation's tokens out of `reserved`, adds `actual` to
    /// `used` of the reservation's period (even when `actual` exceeds what
    /// was held), and records one usage event. [`Error::NotFound`] if the
    /// reservation does not exist (already settled or released): nothing
    /// is charged twice.
    async fn settle(&self, id: ReservationId, actual: i64, at: DateTime<Utc>)
    -> Result<Settlement>;

    /// Returns a reservation's tokens without charging; [`Error::NotFound`] if unknown.
    async fn release(&self, id: ReservationId) -> Result<()>;

    /// The limits and counters for a user and its organization in `period`.
    async fn budget_state(&self, org: OrgId, user: UserId, period: &str) -> Result<BudgetState>;

    /// Usage of an organization in `period`, for all its users or one.
    async fn usage_report(
        &self,
        org: OrgId,
        user: Option<UserId>,
        period: &str,
    ) -> Result<UsageReport>;
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

    /// The newest entries matching `filter`, newest first, of one organization or of all.
    async fn search_audit(
        &self,
        org: Option<OrgId>,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditEntry>>;

    /// Up to `limit` entries with an id above `after`, oldest first, for verifying the chain.
    ///
    /// Reads rows as they are stored, without trusting them: a row whose
    /// fields cannot be read back comes as [`AuditLink::Unreadable`], not as
    /// an error, so verification can name it.
    async fn audit_chain(&self, after: i64, limit: u32) -> Result<Vec<AuditLink>>;

    /// The newest `limit` entries, newest first, of one organization or of all.
    async fn list_audit(&self, org: Option<OrgId>, limit: u32) -> Result<Vec<AuditEntry>> {
        let filter = AuditFilter {
            limit,
            ..AuditFilter::default()
        };
        self.search_audit(org, &filter).await
    }
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
pub trait Store: OrgStore + UserStore + KeyStore + UsageStore + AuditStore + SchemaStore {}

impl<T> Store for T where T: OrgStore + UserStore + KeyStore + UsageStore + AuditStore + SchemaStore {}
