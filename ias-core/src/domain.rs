//! The governed entities: organizations, users, API keys.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// The store-assigned id of an organization.
    OrgId
);
id_type!(
    /// The store-assigned id of a user.
    UserId
);
id_type!(
    /// The store-assigned id of an API key; not secret.
    KeyId
);
id_type!(
    /// The store-assigned id of an open budget reservation.
    ReservationId
);

/// One of the three built-in roles.
///
/// Roles are stored by name and checked through the `role_permissions`
/// table, so a custom role is new rows, not new code in the stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Role {
    /// May do everything, in every organization.
    SystemAdmin,
    /// May administer its own organization.
    OrgAdmin,
    /// May manage its own keys and read its own usage.
    Member,
}

impl Role {
    /// Every built-in role.
    pub const ALL: [Role; 3] = [Role::SystemAdmin, Role::OrgAdmin, Role::Member];

    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::SystemAdmin => "system_admin",
            Role::OrgAdmin => "org_admin",
            Role::Member => "member",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| Error::invalid("role", s, "expected system_admin, org_admin or member"))
    }
}

/// Who owns a record's declarative fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ManagedBy {
    /// Changed through the API, the CLI or the library.
    Api,
    /// Declared in a Git repository and reconciled by ias-gitops.
    Gitops,
}

impl ManagedBy {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            ManagedBy::Api => "api",
            ManagedBy::Gitops => "gitops",
        }
    }
}

impl FromStr for ManagedBy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "api" => Ok(ManagedBy::Api),
            "gitops" => Ok(ManagedBy::Gitops),
            other => Err(Error::invalid(
                "managed_by",
                other,
                "expected api or gitops",
            )),
        }
    }
}

/// An organization: the unit that owns a monthly token budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Organization {
    /// Store-assigned id.
    pub id: OrgId,
    /// Unique, URL-safe name such as `team-alpha`.
    pub slug: String,
    /// Tokens the whole organization may spend per calendar month.
    pub monthly_token_budget: i64,
    /// The IANA time zone whose calendar months are the budget periods.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub timezone: Tz,
    /// Who owns the declarative fields.
    pub managed_by: ManagedBy,
    /// When the organization was created.
    pub created_at: DateTime<Utc>,
}

/// What is needed to create an [`Organization`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrganization {
    /// A slug already checked by [`crate::validate::slug`].
    pub slug: String,
    /// A budget already checked by [`crate::validate::token_amount`].
    pub monthly_token_budget: i64,
    /// The budget's time zone.
    pub timezone: Tz,
    /// When it is created.
    pub created_at: DateTime<Utc>,
}

/// A person (or service account) who belongs to one organization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct User {
    /// Store-assigned id.
    pub id: UserId,
    /// The organization the user belongs to.
    pub org_id: OrgId,
    /// Normalised (trimmed, lowercase) email; unique across all organizations.
    pub email: String,
    /// The user's role.
    pub role: Role,
    /// The user's own monthly token limit; `None` means only the org budget applies.
    pub monthly_token_limit: Option<i64>,
    /// Who owns the declarative fields.
    pub managed_by: ManagedBy,
    /// When the user was created.
    pub created_at: DateTime<Utc>,
    /// When GitOps ended the user's membership; its keys stop working then.
    /// The user, its keys and its usage stay for the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed_at: Option<DateTime<Utc>>,
}

/// A user named either by id or by email, as hosts receive it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserRef {
    /// The store-assigned id.
    Id(UserId),
    /// The email, in any letter case; normalised before the lookup.
    Email(String),
}

impl From<UserId> for UserRef {
    fn from(id: UserId) -> Self {
        UserRef::Id(id)
    }
}

impl From<&str> for UserRef {
    fn from(email: &str) -> Self {
        UserRef::Email(email.to_owned())
    }
}

impl From<String> for UserRef {
    fn from(email: String) -> Self {
        UserRef::Email(email)
    }
}

impl From<&String> for UserRef {
    fn from(email: &String) -> Self {
        UserRef::Email(email.clone())
    }
}

/// What is needed to create a [`User`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    /// The organization to add the user to.
    pub org_id: OrgId,
    /// An email already normalised by [`crate::validate::email`].
    pub email: String,
    /// The user's role.
    pub role: Role,
    /// The user's own monthly limit, if any.
    pub monthly_token_limit: Option<i64>,
    /// When the user is created.
    pub created_at: DateTime<Utc>,
}

/// The stored, non-secret half of an API key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiKey {
    /// Store-assigned id.
    pub id: KeyId,
    /// The key's owner.
    pub user_id: UserId,
    /// The owner's organization.
    pub org_id: OrgId,
    /// The first characters of the secret, enough to recognise it in a list.
    pub prefix: String,
    /// When the key was created.
    pub created_at: DateTime<Utc>,
    /// When the key stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// When the key was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    /// The key's state at `now`.
    pub fn status(&self, now: DateTime<Utc>) -> KeyStatus {
        if self.revoked_at.is_some() {
            KeyStatus::Revoked
        } else if self.expires_at.is_some_and(|at| at <= now) {
            KeyStatus::Expired
        } else {
            KeyStatus::Active
        }
    }
}

/// Whether an [`ApiKey`] can be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum KeyStatus {
    /// The key works.
    Active,
    /// The key's expiry time has passed.
    Expired,
    /// The key was revoked.
    Revoked,
}

impl KeyStatus {
    /// The stable machine-readable name: `active`, `expired` or `revoked`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Expired => "expired",
            KeyStatus::Revoked => "revoked",
        }
    }
}

/// What a store needs to create an [`ApiKey`]: never the secret itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    /// The key's owner.
    pub user_id: UserId,
    /// The owner's organization.
    pub org_id: OrgId,
    /// SHA-256 of the secret.
    pub hash: crate::key::KeyHash,
    /// The display prefix.
    pub prefix: String,
    /// When the key is created.
    pub created_at: DateTime<Utc>,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
}
