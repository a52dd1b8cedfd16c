//! What a governor loads into memory, and the change feed that keeps it current.
//!
//! The governor serves the hot path from memory. It loads every
//! organization, user and key once, then follows the store's change feed:
//! each write to a governed row appends a [`Change`] (in the same
//! transaction), and the governor reloads the rows named by the changes
//! after the last one it saw.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{KeyId, OrgId, Organization, User, UserId};
use crate::key::KeyHash;
use crate::rate::RateLimits;

/// An organization with everything the hot path checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgPolicy {
    /// The organization.
    pub org: Organization,
    /// Its allowed-model patterns, normalised.
    pub allowed_models: Vec<String>,
    /// Its own rate limits.
    pub rate_limits: RateLimits,
}

/// A user with everything the hot path checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPolicy {
    /// The user.
    pub user: User,
    /// The user's own rate limits.
    pub rate_limits: RateLimits,
}

/// A key as the hot path needs it: never the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// The key's id.
    pub id: KeyId,
    /// Its owner.
    pub user_id: UserId,
    /// The owner's organization.
    pub org_id: OrgId,
    /// SHA-256 of the secret.
    pub hash: KeyHash,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
    /// The key's own rate limits.
    pub rate_limits: RateLimits,
}

/// Which kind of row a [`Change`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeEntity {
    /// An organization, its allowed models or its rate limits.
    Org,
    /// A user or its rate limits.
    User,
    /// A key or its rate limits.
    Key,
}

impl ChangeEntity {
    /// The name stored in the change feed.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeEntity::Org => "org",
            ChangeEntity::User => "user",
            ChangeEntity::Key => "key",
        }
    }

    /// The entity stored under `name`, if any.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "org" => Some(ChangeEntity::Org),
            "user" => Some(ChangeEntity::User),
            "key" => Some(ChangeEntity::Key),
            _ => None,
        }
    }
}

/// One entry of the change feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Its position in the feed; strictly increasing.
    pub seq: i64,
    /// The kind of row changed.
    pub entity: ChangeEntity,
    /// The row's id.
    pub id: i64,
}
