//! Admin operations: every change to orgs, users, keys and models.
//!
//! Each operation validates its input, checks the actor's permission, and
//! hands the store the change together with its audit record, so a change
//! is never applied half-way nor without its audit entry.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::audit::{self, Actor, AuditEntry, AuditRecord, Source};
use crate::budget::LimitScope;
use crate::clock::{Clock, SystemClock};
use crate::domain::{
    ApiKey, KeyId, ManagedBy, NewApiKey, NewOrganization, NewUser, OrgId, Organization, Role, User,
};
use crate::error::{Error, Result};
use crate::governor::Governor;
use crate::key::KeySecret;
use crate::period::MonthlyPeriod;
use crate::rate::RateLimits;
use crate::rbac::{self, Permission, Target};
use crate::store::Store;
use crate::usage::DailyUsage;
use crate::usage::UsageReport;
use crate::{policy, validate};

/// The longest key lifetime accepted: 10 years.
pub const MAX_KEY_LIFETIME: chrono::Duration = chrono::Duration::days(3650);

/// Admin operations performed by one actor from one source.
#[derive(Clone)]
pub struct Admin {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    actor: Actor,
    source: Source,
    governor: Option<Governor>,
}

/// Whose rate limits, inside one organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitTarget {
    /// The organization itself.
    Org,
    /// A user of the organization, by email.
    User(String),
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
            actor,
            source,
            governor: None,
        }
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
        self.require(
            Permission::OrgCreate,
            Target {
                org_id: None,
                user_id: None,
            },
        )
        .await?;
        let changes = serde_json::json!({
            "slug": { "before": null, "after": new.slug },
            "monthly_token_budget": { "before": null, "after": new.monthly_token_budget },
            "timezone": { "before": null, "after": new.timezone.name() },
        });
        let record = self.record("org.create", None, format!("org:{}", new.slug), changes);
        self.wrote(self.store.create_org(&new, &record).await).await
    }

    /// The organization with this slug.
    pub async fn org(&self, slug: &str) -> Result<Organization> {
        let org = self.find_org(slug).await?;
        self.require(Permission::OrgRead, org_target(&org)).await?;
        Ok(org)
    }

    /// Every organization the actor may read.
    pub async fn list_orgs(&self) -> Result<Vec<Organization>> {
        let orgs = self.store.list_orgs().await?;
        let grants = self.grants().await?;
        Ok(orgs
            .into_iter()
            .filter(|org| {
                rbac::is_permitted(&self.actor, &grants, Permission::OrgRead, org_target(org))
            })
            .collect())
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
        self.require(Permission::UserCreate, org_target(&org))
            .await?;
        if role == Role::SystemAdmin {
            self.require(Permission::RoleGrantSystemAdmin, org_target(&org))
                .await?;
        }
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
        let record = self.record(
            "user.create",
            Some(org.id),
            format!("user:{}", new.email),
            changes,
        );
        self.wrote(self.store.create_user(&new, &record).await)
            .await
    }

    /// The user with this email.
    pub async fn user(&self, email: &str) -> Result<User> {
        let user = self.find_user(email).await?;
        self.require(Permission::UserRead, user_target(&user))
            .await?;
        Ok(user)
    }

    /// The users of an organization.
    pub async fn list_users(&self, org_slug: &str) -> Result<Vec<User>> {
        let org = self.find_org(org_slug).await?;
        self.require(Permission::UserRead, org_target(&org)).await?;
        self.store.list_users(org.id).await
    }

    /// Sets a user's own monthly token limit; `None` leaves only the org budget.
    pub async fn set_user_limit(&self, email: &str, limit: Option<i64>) -> Result<User> {
        let limit = optional_limit(limit)?;
        let user = self.find_user(email).await?;
        self.require(Permission::UserUpdate, user_target(&user))
            .await?;
        self.ensure_api_managed(user.managed_by, "user", &user.email)?;
        let changes = audit::change("monthly_token_limit", user.monthly_token_limit, limit);
        let record = self.record(
            "user.set_limit",
            Some(user.org_id),
            format!("user:{}", user.email),
            changes,
        );
        self.wrote(self.store.set_user_limit(user.id, limit, &record).await)
            .await
    }

    /// Creates an API key for a user; the secret is in the result and nowhere else.
    pub async fn create_key(
        &self,
        email: &str,
        expires_in: Option<chrono::Duration>,
    ) -> Result<CreatedKey> {
        let now = self.clock.now();
        let expires_at = key_expiry(now, expires_in)?;
        let user = self.find_user(email).await?;
        self.require(Permission::KeyCreate, user_target(&user))
            .await?;
        let secret = KeySecret::generate();
        let new = NewApiKey {
            user_id: user.id,
            org_id: user.org_id,
            hash: secret.hash(),
            prefix: secret.display_prefix(),
            created_at: now,
            expires_at,
        };
        let changes = serde_json::json!({
            "owner": { "before": null, "after": user.email },
            "prefix": { "before": null, "after": new.prefix },
            "expires_at": { "before": null, "after": expires_at },
        });
        let target = format!("key:{}", new.prefix);
        let record = self.record("key.create", Some(user.org_id), target, changes);
        let key = self
            .wrote(self.store.create_key(&new, &record).await)
            .await?;
        Ok(CreatedKey { key, secret })
    }

    /// A user's keys (never their secrets).
    pub async fn list_keys(&self, email: &str) -> Result<Vec<ApiKey>> {
        let user = self.find_user(email).await?;
        self.require(Permission::KeyRead, user_target(&user))
            .await?;
        self.store.list_keys(user.id).await
    }

    /// Revokes a key; it is refused from then on.
    pub async fn revoke_key(&self, id: KeyId) -> Result<ApiKey> {
        let key = self
            .store
            .key_by_id(id)
            .await?
            .ok_or_else(|| Error::not_found("key", id.to_string()))?;
        let target = Target {
            org_id: Some(key.org_id),
            user_id: Some(key.user_id),
        };
        self.require(Permission::KeyRevoke, target).await?;
        if key.revoked_at.is_some() {
            return Err(Error::conflict("key", id.to_string(), "is already revoked"));
        }
        let now = self.clock.now();
        let changes = audit::change("revoked_at", None::<DateTime<Utc>>, now);
        let record = self.record(
            "key.revoke",
            Some(key.org_id),
            format!("key:{}", key.prefix),
            changes,
        );
        self.wrote(self.store.revoke_key(id, now, &record).await)
            .await
    }

    /// Allows a model name or pattern for an organization.
    pub async fn allow_model(&self, org_slug: &str, model: &str) -> Result<ModelChange> {
        self.set_model(org_slug, model, true).await
    }

    /// Removes a model name or pattern from an organization's allowed list.
    pub async fn deny_model(&self, org_slug: &str, model: &str) -> Result<ModelChange> {
        self.set_model(org_slug, model, false).await
    }

    /// An organization's allowed model patterns.
    pub async fn list_models(&self, org_slug: &str) -> Result<Vec<String>> {
        let org = self.find_org(org_slug).await?;
        self.require(Permission::ModelRead, org_target(&org))
            .await?;
        self.store.allowed_models(org.id).await
    }

    /// Usage of an organization, or of one of its users, in the current period.
    pub async fn usage(&self, org_slug: &str, email: Option<&str>) -> Result<UsageReport> {
        let org = self.find_org(org_slug).await?;
        let user = match email {
            Some(email) => Some(self.find_user(email).await?),
            None => None,
        };
        if let Some(user) = user.as_ref().filter(|u| u.org_id != org.id) {
            let reason = format!("does not belong to organization `{}`", org.slug);
            return Err(Error::invalid("email", &user.email, reason));
        }
        let target = Target {
            org_id: Some(org.id),
            user_id: user.as_ref().map(|u| u.id),
        };
        self.require(Permission::UsageRead, target).await?;
        let period = MonthlyPeriod::containing(self.clock.now(), org.timezone);
        self.store
            .usage_report(org.id, user.map(|u| u.id), &period.key)
            .await
    }

    /// The newest audit entries of an organization, or of all.
    pub async fn audit_log(&self, org_slug: Option<&str>, limit: u32) -> Result<Vec<AuditEntry>> {
        let org = match org_slug {
            Some(slug) => Some(self.find_org(slug).await?),
            None => None,
        };
        let target = Target {
            org_id: org.as_ref().map(|o| o.id),
            user_id: None,
        };
        self.require(Permission::AuditRead, target).await?;
        self.store.list_audit(org.map(|o| o.id), limit).await
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
        self.require(Permission::LimitsManage, rbac_target).await?;
        if scope != LimitScope::Key {
            self.ensure_api_managed(org.managed_by, "organization", &org.slug)?;
        }
        let before = self.store.rate_limits(scope, id).await?;
        let changes = serde_json::json!({
            "rpm": { "before": before.rpm, "after": limits.rpm },
            "tpm": { "before": before.tpm, "after": limits.tpm },
        });
        let record = self.record("limits.set", Some(org.id), name, changes);
        self.wrote(self.store.set_rate_limits(scope, id, limits, &record).await)
            .await
    }

    /// The rate limits set on an org, a user or a key.
    pub async fn rate_limits(&self, org_slug: &str, target: LimitTarget) -> Result<RateLimits> {
        let org = self.find_org(org_slug).await?;
        let (scope, id, rbac_target, _) = self.limit_scope(&org, &target).await?;
        self.require(Permission::OrgRead, rbac_target).await?;
        self.store.rate_limits(scope, id).await
    }

    /// Usage per local day and model, for the current month so far (or `from..=to`).
    pub async fn daily_usage(
        &self,
        org_slug: &str,
        email: Option<&str>,
        from: Option<&str>,
        to: Option<&str>,
    ) -> Result<Vec<DailyUsage>> {
        let org = self.find_org(org_slug).await?;
        let user = match email {
            Some(email) => Some(self.find_user(email).await?).filter(|u| u.org_id == org.id),
            None => None,
        };
        if let (Some(email), None) = (email, &user) {
            return Err(Error::not_found(
                "user",
                format!("{email} in organization {}", org.slug),
            ));
        }
        let target = user.as_ref().map_or_else(|| org_target(&org), user_target);
        self.require(Permission::UsageRead, target).await?;
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
        self.store
            .daily_usage(org.id, user.map(|u| u.id), &from, &to)
            .await
    }

    async fn set_model(&self, org_slug: &str, model: &str, allowed: bool) -> Result<ModelChange> {
        let pattern = policy::model_pattern(model)?;
        let org = self.find_org(org_slug).await?;
        self.require(Permission::ModelManage, org_target(&org))
            .await?;
        self.ensure_api_managed(org.managed_by, "organization", &org.slug)?;
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
        let record = self.record(action, Some(org.id), format!("org:{}", org.slug), change);
        let changed = self
            .wrote(
                self.store
                    .set_model_allowed(org.id, &pattern, allowed, &record)
                    .await,
            )
            .await?;
        Ok(ModelChange {
            model: pattern,
            changed,
        })
    }

    /// Lets the attached governor reload what a successful write changed.
    async fn wrote<T>(&self, result: Result<T>) -> Result<T> {
        if let (Ok(_), Some(governor)) = (&result, &self.governor)
            && let Err(err) = governor.refresh().await
        {
            // The write stands; the governor's periodic refresh catches up.
            tracing::warn!(error = %err, "could not reload the governor after a change");
        }
        result
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
                org_target(org),
                format!("org:{}", org.slug),
            )),
            LimitTarget::User(email) => {
                let user = self.find_user(email).await?;
                if user.org_id != org.id {
                    return Err(Error::not_found(
                        "user",
                        format!("{} in organization {}", user.email, org.slug),
                    ));
                }
                Ok((
                    LimitScope::User,
                    user.id.0,
                    user_target(&user),
                    format!("user:{}", user.email),
                ))
            }
            LimitTarget::Key(id) => {
                let key = self
                    .store
                    .key_by_id(*id)
                    .await?
                    .filter(|k| k.org_id == org.id)
                    .ok_or_else(|| {
                        Error::not_found("key", format!("{id} in organization {}", org.slug))
                    })?;
                let target = Target {
                    org_id: Some(key.org_id),
                    user_id: Some(key.user_id),
                };
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

    async fn grants(&self) -> Result<Vec<rbac::Grant>> {
        match &self.actor {
            Actor::Operator { .. } => Ok(Vec::new()),
            Actor::User { role, .. } => self.store.role_grants(role.as_str()).await,
        }
    }

    async fn require(&self, permission: Permission, target: Target) -> Result<()> {
        let grants = self.grants().await?;
        if rbac::is_permitted(&self.actor, &grants, permission, target) {
            return Ok(());
        }
        let target = match (target.org_id, target.user_id) {
            (_, Some(user)) => format!("user {user}"),
            (Some(org), None) => format!("organization {org}"),
            (None, None) => "ias".to_owned(),
        };
        Err(Error::PermissionDenied {
            actor: self.actor.to_string(),
            permission: permission.to_string(),
            target,
        })
    }

    fn ensure_api_managed(
        &self,
        managed_by: ManagedBy,
        entity: &'static str,
        key: &str,
    ) -> Result<()> {
        if managed_by == ManagedBy::Gitops && self.source != Source::Gitops {
            return Err(Error::conflict(
                entity,
                key,
                "is managed by GitOps; change it in its Git repository",
            ));
        }
        Ok(())
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
}

fn org_target(org: &Organization) -> Target {
    Target {
        org_id: Some(org.id),
        user_id: None,
    }
}

fn user_target(user: &User) -> Target {
    Target {
        org_id: Some(user.org_id),
        user_id: Some(user.id),
    }
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
    let split = trimmed.len().checked_sub(1).ok_or_else(reject)?;
    let (digits, unit) = trimmed.split_at(split);
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
        ] {
            let err = parse_lifetime(bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid expires_in"), "{bad:?}: {err}");
        }
    }
}
