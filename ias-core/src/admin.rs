//! Admin operations: every change to orgs, users, keys and models.
//!
//! Each operation validates its input, finds what it acts on, runs one
//! permission check of its actor against that target ([`rbac::check`]),
//! and hands the store the change together with its audit record, so a
//! change is never applied half-way nor without its audit entry. A denied
//! attempt changes nothing and is audited as `<action>.denied`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::audit::{
    self, Actor, AuditEntry, AuditFilter, AuditHead, AuditRecord, AuditVerification, ChainVerifier,
    Source,
};
use crate::budget::LimitScope;
use crate::clock::{Clock, SystemClock};
use crate::domain::{
    ApiKey, KeyId, NewApiKey, NewOrganization, NewUser, OrgId, Organization, Role, User, UserId,
    UserRef,
};
use crate::error::{Error, Result};
use crate::governor::Governor;
use crate::key::KeySecret;
use crate::page::{Page, PageRequest};
use crate::period::MonthlyPeriod;
use crate::rate::RateLimits;
use crate::rbac::{self, Access, Grant, GrantCache, Permission, Target};
use crate::store::Store;
use crate::usage::{DailyUsage, DayModel, UsageReport};
use crate::{password, policy, validate};

mod forecast;
mod gitops;
mod seed;

pub(crate) use gitops::PlannedApply;

/// The longest key lifetime accepted: 10 years.
pub const MAX_KEY_LIFETIME: chrono::Duration = chrono::Duration::days(3650);

/// What the audit log shows in place of a password or its hash.
pub const REDACTED: &str = "[redacted]";

/// Audit entries read at a time while verifying the chain.
const AUDIT_PAGE: u32 = 1_000;

/// Admin operations performed by one actor from one source.
#[derive(Clone)]
pub struct Admin {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    grants: Arc<GrantCache>,
    actor: Actor,
    source: Source,
    governor: Option<Governor>,
    break_glass: bool,
}

/// Whose rate limits, inside one organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitTarget {
    /// The organization itself.
    Org,
    /// A user of the organization, by id or email.
    User(UserRef),
    /// A key of one of the organization's users.
    Key(KeyId),
}

/// A key just created: the only time its secret is available.
#[derive(Debug, Clone)]
pub struct CreatedKey {
    /// The stored key.
    pub key: ApiKey,
    /// The secret, to be shown once and never stored.
    pub secret: KeySecret,
}

/// A change in an organization's allowed models.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelChange {
    /// The normalised pattern.
    pub model: String,
    /// Whether the list changed (`false`: it was already so).
    pub changed: bool,
}

impl Admin {
    /// Admin operations on `store` by `actor`, recorded as coming from `source`.
    pub fn new(store: Arc<dyn Store>, actor: Actor, source: Source) -> Self {
        Admin {
            store,
            clock: Arc::new(SystemClock),
            grants: Arc::new(GrantCache::default()),
            actor,
            source,
            governor: None,
            break_glass: false,
        }
    }

    /// Lets a system admin change fields owned by GitOps (break-glass).
    ///
    /// Each such change is audited and recorded as drift in the
    /// organization's sync state; with the `heal` drift policy the next
    /// reconcile puts the declared value back. Others are still refused.
    pub fn with_break_glass(mut self) -> Self {
        self.break_glass = true;
        self
    }

    /// Keeps `governor`'s cache current: after each change made here, it
    /// reloads what changed before the call returns.
    pub fn with_governor(mut self, governor: Governor) -> Self {
        self.governor = Some(governor);
        self
    }

    /// Uses `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Reads role grants through `cache`, shared with other `Admin`s of the process.
    pub fn with_grant_cache(mut self, cache: Arc<GrantCache>) -> Self {
        self.grants = cache;
        self
    }

    /// Creates an organization.
    pub async fn create_org(
        &self,
        slug: &str,
        budget: i64,
        timezone: &str,
    ) -> Result<Organization> {
        let new = NewOrganization {
            slug: validate::slug(slug)?,
            monthly_token_budget: validate::token_amount("monthly_token_budget", budget)?,
            timezone: validate::timezone(timezone)?,
            created_at: self.clock.now(),
        };
        let changes = serde_json::json!({
            "slug": { "before": null, "after": new.slug },
            "monthly_token_budget": { "before": null, "after": new.monthly_token_budget },
            "timezone": { "before": null, "after": new.timezone.name() },
        });
        let record = self.record("org.create", None, format!("org:{}", new.slug), changes);
        self.require(Permission::OrgCreate, Target::global(), &record)
            .await?;
        let created = self.store.create_org(&new, &record).await;
        self.applied(&record, created).await
    }

    /// The organization with this slug.
    pub async fn org(&self, slug: &str) -> Result<Organization> {
        let org = self.find_org(slug).await?;
        let attempt = self.attempt("org.read", Some(org.id), org_label(&org));
        self.require(Permission::OrgRead, Target::org(org.id), &attempt)
            .await?;
        Ok(org)
    }

    /// A page of the organizations the actor may read, by id; the others are
    /// left out, not refused, so a page may hold fewer than `page.limit`.
    pub async fn list_orgs(&self, page: &PageRequest) -> Result<Page<Organization>> {
        let fetch = page.fetch()?;
        let after = page.after_id()?.map(OrgId);
        let orgs = self.store.list_orgs(after, fetch).await?;
        let grants = self.grants().await?;
        let orgs = Page::from_rows(orgs, page.limit, |org| org.id.to_string());
        Ok(orgs.retain(|org| {
            rbac::is_permitted(
                &self.actor,
                &grants,
                Permission::OrgRead,
                Target::org(org.id),
            )
        }))
    }

    /// Changes an organization's monthly token budget, its time zone, or
    /// both; `None` keeps a field as it is. Needs `org.update` on it.
    ///
    /// Both fields are Git-owned while the organization is in GitOps mode.
    /// A new budget applies to the current period at once (a lower one can
    /// refuse the next request); a new time zone moves the period's bounds.
    pub async fn set_org_budget(
        &self,
        org_slug: &str,
        budget: Option<i64>,
        timezone: Option<&str>,
    ) -> Result<Organization> {
        let budget = budget
            .map(|b| validate::token_amount("monthly_token_budget", b))
            .transpose()?;
        let timezone = timezone.map(validate::timezone).transpose()?;
        if budget.is_none() && timezone.is_none() {
            return Err(Error::invalid(
                "monthly_token_budget",
                "(missing)",
                "give a new budget, a new time zone, or both",
            ));
        }
        let org = self.find_org(org_slug).await?;
        let new_budget = budget.unwrap_or(org.monthly_token_budget);
        let new_timezone = timezone.unwrap_or(org.timezone);
        let changes = audit::changes([
            (
                "monthly_token_budget",
                org.monthly_token_budget.into(),
                new_budget.into(),
            ),
            (
                "timezone",
                org.timezone.name().into(),
                new_timezone.name().into(),
            ),
        ]);
        let mut record = self.record("org.update", Some(org.id), org_label(&org), changes);
        self.require(Permission::OrgUpdate, Target::org(org.id), &record)
            .await?;
        let forced = self
            .ensure_not_git_owned(org.id, org.managed_by, "organization", &org.slug)
            .await?;
        gitops::mark_break_glass(&mut record, forced.as_ref());
        let updated = self
            .store
            .set_org_budget(org.id, new_budget, new_timezone, &record)
            .await;
        let updated = self.applied(&record, updated).await?;
        let what = format!("the budget of `{}`", org.slug);
        self.note_break_glass(forced, &what).await;
        Ok(updated)
    }

    /// Creates a user in an organization.
    pub async fn create_user(
        &self,
        org_slug: &str,
        email: &str,
        role: Role,
        monthly_token_limit: Option<i64>,
    ) -> Result<User> {
        let email = validate::email(email)?;
        let limit = optional_limit(monthly_token_limit)?;
        let org = self.find_org(org_slug).await?;
        let new = NewUser {
            org_id: org.id,
            email,
            role,
            monthly_token_limit: limit,
            created_at: self.clock.now(),
        };
        let changes = serde_json::json!({
            "email": { "before": null, "after": new.email },
            "role": { "before": null, "after": role.as_str() },
            "monthly_token_limit": { "before": null, "after": limit },
        });
        let label = format!("user:{}", new.email);
        let mut record = self.record("user.create", Some(org.id), label, changes);
        let target = Target::new_user(org.id, role);
        self.require(Permission::UserCreate, target, &record)
            .await?;
        let forced = self
            .ensure_not_git_owned(org.id, org.managed_by, "organization", &org.slug)
            .await?;
        gitops::mark_break_glass(&mut record, forced.as_ref());
        let created = self.store.create_user(&new, &record).await;
        let created = self.applied(&record, created).await?;
        self.note_break_glass(forced, &format!("user `{}`", created.email))
            .await;
        Ok(created)
    }

    /// The user with this email.
    pub async fn user(&self, user: impl Into<UserRef>) -> Result<User> {
        let user = self.find_user_ref(user.into()).await?;
        let attempt = self.attempt("user.read", Some(user.org_id), user_label(&user));
        self.require(Permission::UserRead, Target::user(&user), &attempt)
            .await?;
        Ok(user)
    }

    /// A page of the users of an organization, by id (users GitOps removed are left out).
    pub async fn list_users(&self, org_slug: &str, page: &PageRequest) -> Result<Page<User>> {
        let fetch = page.fetch()?;
        let after = page.after_id()?.map(UserId);
        let org = self.find_org(org_slug).await?;
        let attempt = self.attempt("user.list", Some(org.id), org_label(&org));
        self.require(Permission::UserRead, Target::org(org.id), &attempt)
            .await?;
        let users = self.store.list_users(org.id, after, fetch).await?;
        Ok(Page::from_rows(users, page.limit, |user| {
            user.id.to_string()
        }))
    }

    /// Sets a user's own monthly token limit; `None` leaves only the org budget.
    pub async fn set_user_limit(
        &self,
        user: impl Into<UserRef>,
        limit: Option<i64>,
    ) -> Result<User> {
        let limit = optional_limit(limit)?;
        let user = self.find_user_ref(user.into()).await?;
        let changes = audit::change("monthly_token_limit", user.monthly_token_limit, limit);
        let mut record = self.record(
            "user.set_limit",
            Some(user.org_id),
            user_label(&user),
            changes,
        );
        self.require(Permission::UserUpdate, Target::user(&user), &record)
            .await?;
        let forced = self
            .ensure_not_git_owned(user.org_id, user.managed_by, "user", &user.email)
            .await?;
        gitops::mark_break_glass(&mut record, forced.as_ref());
        let changed = self.store.set_user_limit(user.id, limit, &record).await;
        let changed = self.applied(&record, changed).await?;
        let what = format!("the monthly limit of `{}`", user.email);
        self.note_break_glass(forced, &what).await;
        Ok(changed)
    }

    /// Sets a user's password, replacing any it had; allowed to system admins only.
    ///
    /// `user` is an id or an email. The password must follow every rule of
    /// [`crate::password`]; [`Error::WeakPassword`] lists each one it breaks,
    /// and nothing changes. Only an argon2id hash is stored; the audit entry
    /// says that the password changed, never what it is or its hash.
    pub async fn reset_password(
        &self,
        user: impl Into<UserRef>,
        new_password: &str,
    ) -> Result<User> {
        let user = self.find_user_ref(user.into()).await?;
        let had_password = self.store.password_hash(user.id).await?.is_some();
        let changes = audit::change("password", had_password.then_some(REDACTED), REDACTED);
        let label = user_label(&user);
        let record = self.record("user.reset_password", Some(user.org_id), label, changes);
        self.require(Permission::UserResetPassword, Target::user(&user), &record)
            .await?;
        password::validate(new_password, &user.email)?;
        let hashed = password::hash_off_thread(new_password).await?;
        let stored = self
            .store
            .set_password_hash(user.id, &hashed, &record)
            .await;
        self.applied(&record, stored).await?;
        Ok(user)
    }

    /// Creates an API key for a user; the secret is in the result and nowhere else.
    pub async fn create_key(
        &self,
        user: impl Into<UserRef>,
        expires_in: Option<chrono::Duration>,
    ) -> Result<CreatedKey> {
        let now = self.clock.now();
        let expires_at = key_expiry(now, expires_in)?;
        let user = self.find_user_ref(user.into()).await?;
        let changes = key_changes(&user, None, expires_at);
        let attempt = self.record("key.create", Some(user.org_id), user_label(&user), changes);
        self.require(Permission::KeyCreate, Target::user(&user), &attempt)
            .await?;
        if user.removed_at.is_some() {
            return Err(Error::conflict(
                "user",
                &user.email,
                "was removed from its organization by GitOps; its keys no longer work",
            ));
        }
        let secret = KeySecret::generate();
        let new = NewApiKey {
            user_id: user.id,
            org_id: user.org_id,
            hash: secret.hash(),
            prefix: secret.display_prefix(),
            created_at: now,
            expires_at,
        };
        let changes = key_changes(&user, Some(&new.prefix), expires_at);
        let target = format!("key:{}", new.prefix);
        let record = self.record("key.create", Some(user.org_id), target, changes);
        let created = self.store.create_key(&new, &record).await;
        let key = self.applied(&record, created).await?;
        Ok(CreatedKey { key, secret })
    }

    /// A page of a user's keys (never their secrets), newest first.
    pub async fn list_keys(
        &self,
        user: impl Into<UserRef>,
        page: &PageRequest,
    ) -> Result<Page<ApiKey>> {
        let fetch = page.fetch()?;
        let before = page.after_id()?.map(KeyId);
        let user = self.find_user_ref(user.into()).await?;
        let attempt = self.attempt("key.list", Some(user.org_id), user_label(&user));
        self.require(Permission::KeyRead, Target::user(&user), &attempt)
            .await?;
        let keys = self.store.list_keys(user.id, before, fetch).await?;
        Ok(Page::from_rows(keys, page.limit, |key| key.id.to_string()))
    }

    /// Revokes a key; it is refused from then on.
    pub async fn revoke_key(&self, id: KeyId) -> Result<ApiKey> {
        let key = self
            .store
            .key_by_id(id)
            .await?
            .ok_or_else(|| Error::not_found("key", id.to_string()))?;
        let owner = self.find_user_ref(UserRef::Id(key.user_id)).await?;
        let now = self.clock.now();
        let changes = audit::change("revoked_at", None::<DateTime<Utc>>, now);
        let label = format!("key:{}", key.prefix);
        let record = self.record("key.revoke", Some(key.org_id), label, changes);
        self.require(Permission::KeyRevoke, Target::user(&owner), &record)
            .await?;
        if key.revoked_at.is_some() {
            return Err(Error::conflict("key", id.to_string(), "is already revoked"));
        }
        let revoked = self.store.revoke_key(id, now, &record).await;
        self.applied(&record, revoked).await
    }

    /// Allows a model name or pattern for an organization.
    pub async fn allow_model(&self, org_slug: &str, model: &str) -> Result<ModelChange> {
        self.set_model(org_slug, model, true).await
    }

    /// Removes a model name or pattern from an organization's allowed list.
    pub async fn deny_model(&self, org_slug: &str, model: &str) -> Result<ModelChange> {
        self.set_model(org_slug, model, false).await
    }

    /// A page of an organization's allowed model patterns, sorted.
    pub async fn list_models(&self, org_slug: &str, page: &PageRequest) -> Result<Page<String>> {
        let fetch = page.fetch()?;
        let after = page.after_text()?;
        let org = self.find_org(org_slug).await?;
        let attempt = self.attempt("model.list", Some(org.id), org_label(&org));
        self.require(Permission::ModelRead, Target::org(org.id), &attempt)
            .await?;
        let models = self.store.allowed_models(org.id, after, fetch).await?;
        Ok(Page::from_rows(models, page.limit, String::clone))
    }

    /// Usage of an organization, or of one of its users, in the current
    /// period, with one page of its users (by id).
    pub async fn usage(
        &self,
        org_slug: &str,
        user: Option<UserRef>,
        page: &PageRequest,
    ) -> Result<UsageReport> {
        let fetch = page.fetch()?;
        let after = page.after_id()?.map(UserId);
        let (org, user) = self.usage_scope(org_slug, user).await?;
        let period = MonthlyPeriod::containing(self.clock.now(), org.timezone);
        let user = user.map(|u| u.id);
        let mut report = self
            .store
            .usage_report(org.id, user, &period.key, after, fetch)
            .await?;
        let users = std::mem::take(&mut report.users);
        let users = Page::from_rows(users, page.limit, |u| u.user_id.to_string());
        report.users = users.items;
        report.next_after = users.next_after;
        Ok(report)
    }

    /// A page of the audit entries matching `filter`, newest first, of one
    /// organization or of all; the next page holds older entries.
    pub async fn audit_log(
        &self,
        org_slug: Option<&str>,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<AuditEntry>> {
        let fetch = page.fetch()?;
        let before = page.after_id()?;
        let filter = AuditFilter {
            action: filter
                .action
                .as_deref()
                .map(validate::audit_action)
                .transpose()?,
            ..filter.clone()
        };
        let org = match org_slug {
            Some(slug) => Some(self.find_org(slug).await?),
            None => None,
        };
        let (target, label) = match &org {
            Some(org) => (Target::org(org.id), org_label(org)),
            None => (Target::global(), "audit".to_owned()),
        };
        let attempt = self.attempt("audit.list", org.as_ref().map(|o| o.id), label);
        self.require(Permission::AuditRead, target, &attempt)
            .await?;
        let entries = self
            .store
            .search_audit(org.map(|o| o.id), &filter, before, fetch)
            .await?;
        Ok(Page::from_rows(entries, page.limit, |entry| {
            entry.id.to_string()
        }))
    }

    /// Walks the whole audit chain and names the first entry changed or removed.
    ///
    /// Reads every organization's entries, so it needs `audit.read` with a
    /// global scope. With `anchor` (an id and hash reported by an earlier
    /// verification), that entry must still be in the log, unchanged: this
    /// catches removed newest entries and a chain rewritten after it. A
    /// broken chain is a value ([`AuditVerification::broken`]), not an error.
    pub async fn verify_audit(&self, anchor: Option<AuditHead>) -> Result<AuditVerification> {
        let attempt = self.attempt("audit.verify", None, "audit".to_owned());
        self.require(Permission::AuditRead, Target::global(), &attempt)
            .await?;
        let mut verifier = ChainVerifier::new(anchor);
        // From the lowest id there could be: a row slipped in below 1 is caught too.
        let mut after = i64::MIN;
        loop {
            let page = self.store.audit_chain(after, AUDIT_PAGE).await?;
            let Some(last) = page.last() else {
                return Ok(verifier.finish(None));
            };
            after = last.id();
            if let Some(broken) = page.iter().find_map(|link| verifier.push(link).err()) {
                return Ok(verifier.finish(Some(broken)));
            }
        }
    }

    /// Sets the requests- and tokens-per-minute limits of an org, a user or a key.
    ///
    /// `limits` replaces what was set; a `None` field removes that limit.
    /// Returns whether anything changed.
    pub async fn set_rate_limits(
        &self,
        org_slug: &str,
        target: LimitTarget,
        limits: RateLimits,
    ) -> Result<bool> {
        let limits = limits.validated()?;
        let org = self.find_org(org_slug).await?;
        let (scope, id, rbac_target, name) = self.limit_scope(&org, &target).await?;
        let before = self.store.rate_limits(scope, id).await?;
        let changes = audit::changes([
            ("rpm", before.rpm.into(), limits.rpm.into()),
            ("tpm", before.tpm.into(), limits.tpm.into()),
        ]);
        let mut record = self.record("limits.set", Some(org.id), name, changes);
        self.require(Permission::LimitsManage, rbac_target, &record)
            .await?;
        let forced = match scope {
            LimitScope::Key => None,
            _ => {
                self.ensure_not_git_owned(org.id, org.managed_by, "organization", &org.slug)
                    .await?
            }
        };
        gitops::mark_break_glass(&mut record, forced.as_ref());
        let changed = self.store.set_rate_limits(scope, id, limits, &record).await;
        let changed = self.applied(&record, changed).await?;
        self.note_break_glass(forced, "rate limits").await;
        Ok(changed)
    }

    /// The rate limits set on an org, a user or a key.
    pub async fn rate_limits(&self, org_slug: &str, target: LimitTarget) -> Result<RateLimits> {
        let org = self.find_org(org_slug).await?;
        let (scope, id, rbac_target, name) = self.limit_scope(&org, &target).await?;
        let attempt = self.attempt("limits.read", Some(org.id), name);
        self.require(Permission::OrgRead, rbac_target, &attempt)
            .await?;
        self.store.rate_limits(scope, id).await
    }

    /// A page of usage per local day and model, by day then model, for the
    /// current month so far (or `from..=to`).
    pub async fn daily_usage(
        &self,
        org_slug: &str,
        user: Option<UserRef>,
        from: Option<&str>,
        to: Option<&str>,
        page: &PageRequest,
    ) -> Result<Page<DailyUsage>> {
        let fetch = page.fetch()?;
        let after = page.after.as_deref().map(DayModel::parse).transpose()?;
        let (org, user) = self.usage_scope(org_slug, user).await?;
        let now = self.clock.now();
        let period = MonthlyPeriod::containing(now, org.timezone);
        let first = period
            .starts_at
            .with_timezone(&org.timezone)
            .format("%Y-%m-%d")
            .to_string();
        let today = now
            .with_timezone(&org.timezone)
            .format("%Y-%m-%d")
            .to_string();
        let from = day_arg("from", from)?.unwrap_or(first);
        let to = day_arg("to", to)?.unwrap_or(today);
        let user = user.map(|u| u.id);
        let rows = self
            .store
            .daily_usage(org.id, user, &from, &to, after.as_ref(), fetch)
            .await?;
        Ok(Page::from_rows(rows, page.limit, DailyUsage::cursor))
    }

    async fn set_model(&self, org_slug: &str, model: &str, allowed: bool) -> Result<ModelChange> {
        let pattern = policy::model_pattern(model)?;
        let org = self.find_org(org_slug).await?;
        let (action, change) = if allowed {
            (
                "model.allow",
                audit::change("allowed_models", None::<String>, &pattern),
            )
        } else {
            (
                "model.deny",
                audit::change("allowed_models", &pattern, None::<String>),
            )
        };
        let mut record = self.record(action, Some(org.id), org_label(&org), change);
        self.require(Permission::ModelManage, Target::org(org.id), &record)
            .await?;
        let forced = self
            .ensure_not_git_owned(org.id, org.managed_by, "organization", &org.slug)
            .await?;
        gitops::mark_break_glass(&mut record, forced.as_ref());
        let result = self
            .store
            .set_model_allowed(org.id, &pattern, allowed, &record)
            .await;
        let changed = self.applied(&record, result).await?;
        self.note_break_glass(forced, &format!("allowed model `{pattern}`"))
            .await;
        Ok(ModelChange {
            model: pattern,
            changed,
        })
    }

    /// The organization and (optionally) one of its users whose usage the actor may read.
    async fn usage_scope(
        &self,
        org_slug: &str,
        user: Option<UserRef>,
    ) -> Result<(Organization, Option<User>)> {
        let org = self.find_org(org_slug).await?;
        let user = match user {
            Some(given) => Some(self.find_user_in(&org, given).await?),
            None => None,
        };
        let (target, label) = match &user {
            Some(user) => (Target::user(user), user_label(user)),
            None => (Target::org(org.id), org_label(&org)),
        };
        let attempt = self.attempt("usage.read", Some(org.id), label);
        self.require(Permission::UsageRead, target, &attempt)
            .await?;
        Ok((org, user))
    }

    /// The user `given` names, if it belongs to `org`; an error naming the
    /// field it was given by otherwise.
    async fn find_user_in(&self, org: &Organization, given: UserRef) -> Result<User> {
        let user = self.find_user_ref(given.clone()).await?;
        if user.org_id == org.id {
            return Ok(user);
        }
        let reason = format!("does not belong to organization `{}`", org.slug);
        Err(match given {
            UserRef::Email(email) => Error::invalid("email", email, reason),
            UserRef::Id(id) => Error::invalid("user_id", id.to_string(), reason),
        })
    }

    /// Lets the attached governor reload what a change touched.
    async fn refresh_governor(&self) {
        if let Some(governor) = &self.governor
            && let Err(err) = governor.refresh().await
        {
            // The write stands; the governor's periodic refresh catches up.
            tracing::warn!(error = %err, "could not reload the governor after a change");
        }
    }

    async fn limit_scope(
        &self,
        org: &Organization,
        target: &LimitTarget,
    ) -> Result<(LimitScope, i64, Target, String)> {
        match target {
            LimitTarget::Org => Ok((
                LimitScope::Org,
                org.id.0,
                Target::org(org.id),
                org_label(org),
            )),
            LimitTarget::User(given) => {
                let user = self.find_user_in(org, given.clone()).await?;
                Ok((
                    LimitScope::User,
                    user.id.0,
                    Target::user(&user),
                    user_label(&user),
                ))
            }
            LimitTarget::Key(id) => {
                let key = self
                    .store
                    .key_by_id(*id)
                    .await?
                    .filter(|k| k.org_id == org.id)
                    // A key of another organization is not found, as if it did not exist.
                    .ok_or_else(|| Error::not_found("key", id.to_string()))?;
                let owner = self
                    .store
                    .user_by_id(key.user_id)
                    .await?
                    .ok_or_else(|| Error::not_found("user", key.user_id.to_string()))?;
                let target = Target::user(&owner);
                Ok((LimitScope::Key, id.0, target, format!("key:{}", key.prefix)))
            }
        }
    }

    async fn find_org(&self, slug: &str) -> Result<Organization> {
        let slug = validate::slug(slug)?;
        self.store
            .org_by_slug(&slug)
            .await?
            .ok_or_else(|| Error::not_found("organization", slug))
    }

    async fn find_user(&self, email: &str) -> Result<User> {
        let email = validate::email(email)?;
        self.store
            .user_by_email(&email)
            .await?
            .ok_or_else(|| Error::not_found("user", email))
    }

    async fn find_user_ref(&self, user: UserRef) -> Result<User> {
        match user {
            UserRef::Email(email) => self.find_user(&email).await,
            UserRef::Id(id) => self
                .store
                .user_by_id(id)
                .await?
                .ok_or_else(|| Error::not_found("user", id.to_string())),
        }
    }

    async fn grants(&self) -> Result<Arc<[Grant]>> {
        match &self.actor {
            Actor::Operator { .. } => Ok(Arc::from(Vec::new())),
            Actor::User { role, .. } => self.grants.grants(&*self.store, role.as_str()).await,
        }
    }

    /// The one permission check of an operation; a denial is audited, then returned.
    async fn require(
        &self,
        permission: Permission,
        target: Target,
        attempt: &AuditRecord,
    ) -> Result<()> {
        let grants = self.grants().await?;
        match rbac::check(&self.actor, &grants, permission, target) {
            Access::Allowed => Ok(()),
            Access::Denied { missing } => Err(self.denied(missing, attempt).await),
        }
    }

    /// Logs a change the store applied (with its audit entry); passes `result` on.
    ///
    /// An attached governor then reloads what the change touched.
    async fn applied<T>(&self, record: &AuditRecord, result: Result<T>) -> Result<T> {
        if result.is_ok() {
            tracing::info!(
                actor = %record.actor,
                source = record.source.as_str(),
                action = %record.action,
                target = %record.target,
                "admin change applied"
            );
            self.refresh_governor().await;
        }
        result
    }

    async fn denied(&self, missing: Permission, attempt: &AuditRecord) -> Error {
        tracing::warn!(
            actor = %self.actor,
            action = %attempt.action,
            target = %attempt.target,
            permission = %missing,
            "permission denied"
        );
        let record = audit::denial(attempt, missing);
        if let Err(err) = self.store.append_audit(&record).await {
            tracing::error!(error = %err, action = %record.action, "could not audit a denied attempt");
        }
        Error::PermissionDenied {
            actor: self.actor.to_string(),
            permission: missing.to_string(),
            target: attempt.target.clone(),
        }
    }

    fn record(
        &self,
        action: &str,
        org_id: Option<OrgId>,
        target: String,
        changes: serde_json::Value,
    ) -> AuditRecord {
        AuditRecord {
            at: self.clock.now(),
            actor: self.actor.to_string(),
            source: self.source,
            action: action.to_owned(),
            org_id,
            target,
            changes,
        }
    }

    /// The record of a read, audited only if it is denied.
    fn attempt(&self, action: &str, org_id: Option<OrgId>, target: String) -> AuditRecord {
        self.record(action, org_id, target, serde_json::json!({}))
    }
}

/// A user named as `given` is not of `org`: the error names it as given
/// (never by an email the caller did not send).
fn org_label(org: &Organization) -> String {
    format!("org:{}", org.slug)
}

fn user_label(user: &User) -> String {
    format!("user:{}", user.email)
}

fn key_changes(
    owner: &User,
    prefix: Option<&str>,
    expires_at: Option<DateTime<Utc>>,
) -> serde_json::Value {
    serde_json::json!({
        "owner": { "before": null, "after": owner.email },
        "prefix": { "before": null, "after": prefix },
        "expires_at": { "before": null, "after": expires_at },
    })
}

fn day_arg(field: &'static str, value: Option<&str>) -> Result<Option<String>> {
    value
        .map(|v| {
            chrono::NaiveDate::parse_from_str(v.trim(), "%Y-%m-%d")
                .map(|d| d.format("%Y-%m-%d").to_string())
                .map_err(|_| Error::invalid(field, v, "expected a date such as 2026-12-31"))
        })
        .transpose()
}

fn optional_limit(limit: Option<i64>) -> Result<Option<i64>> {
    limit
        .map(|l| validate::token_amount("monthly_token_limit", l))
        .transpose()
}

fn key_expiry(
    now: DateTime<Utc>,
    expires_in: Option<chrono::Duration>,
) -> Result<Option<DateTime<Utc>>> {
    let Some(lifetime) = expires_in else {
        return Ok(None);
    };
    if lifetime <= chrono::Duration::zero() || lifetime > MAX_KEY_LIFETIME {
        return Err(Error::invalid(
            "expires_in",
            format!("{}s", lifetime.num_seconds()),
            "must be more than 0 and at most 3650 days",
        ));
    }
    Ok(Some(now + lifetime))
}

/// Parses a key lifetime such as `30d`, `12h`, `90m` or `3600s`.
pub fn parse_lifetime(value: &str) -> Result<chrono::Duration> {
    let trimmed = value.trim();
    let reject = || {
        Error::invalid(
            "expires_in",
            value,
            "expected a number followed by s, m, h or d, such as `30d`",
        )
    };
    let unit_at = trimmed.char_indices().last().map(|(i, _)| i);
    let (digits, unit) = trimmed.split_at(unit_at.ok_or_else(reject)?);
    let n: i64 = digits.parse().map_err(|_| reject())?;
    let seconds_per_unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(reject()),
    };
    let seconds = n
        .checked_mul(seconds_per_unit)
        .filter(|s| *s > 0)
        .ok_or_else(|| {
            Error::invalid(
                "expires_in",
                value,
                "must be more than 0 and at most 3650 days",
            )
        })?;
    if seconds > MAX_KEY_LIFETIME.num_seconds() {
        return Err(Error::invalid(
            "expires_in",
            value,
            "must be more than 0 and at most 3650 days",
        ));
    }
    Ok(chrono::Duration::seconds(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes() {
        assert_eq!(parse_lifetime("30d").unwrap(), chrono::Duration::days(30));
        assert_eq!(
            parse_lifetime("90m").unwrap(),
            chrono::Duration::minutes(90)
        );
        for bad in [
            "",
            "d",
            "30",
            "30y",
            "-1d",
            "0s",
            "99999d",
            "9999999999999999999d",
            "1€",
            "é",
        ] {
            let err = parse_lifetime(bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid expires_in"), "{bad:?}: {err}");
        }
    }
}
