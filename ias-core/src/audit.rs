//! The append-only audit log: who changed what, from where, and when.
//!
//! Every admin write carries an [`AuditRecord`] that the store appends in the
//! same transaction as the change, so a change without its entry (or an entry
//! without its change) cannot exist. An attempt denied for lack of a
//! permission is appended too, as a [`denial`]. No storage trait can change
//! or delete an entry. Entries are hash-chained: each stores the previous
//! entry's hash and its own, computed by [`chain_hash`], and [`verify`]
//! walks the chain to find the first entry changed or removed.
//!
//! An entry never holds a key secret, a password, or a hash of either.

pub mod verify;

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::{OrgId, Role, UserId};
use crate::rbac::Permission;

pub use verify::{AuditHead, AuditLink, AuditVerification, BreakKind, ChainBreak, ChainVerifier};

/// What the action of an entry recording a denied attempt ends with.
pub const DENIED_SUFFIX: &str = ".denied";

/// The hash that stands before the first entry of the chain.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Where an admin action came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Source {
    /// The `ias-admin` command line.
    Cli,
    /// The HTTP admin API.
    Api,
    /// The GitOps reconciler.
    Gitops,
    /// A program calling the library directly.
    Library,
}

impl Source {
    /// Every source.
    pub const ALL: [Source; 4] = [Source::Cli, Source::Api, Source::Gitops, Source::Library];

    /// The source stored as `name`, if any.
    pub fn parse(name: &str) -> Option<Self> {
        Source::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Cli => "cli",
            Source::Api => "api",
            Source::Gitops => "gitops",
            Source::Library => "library",
        }
    }
}

/// Who performs an admin operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Actor {
    /// Someone with direct access to the database, such as the CLI's user.
    ///
    /// Whoever can open the database file or URL can change it without ias,
    /// so permission checks do not bind the operator; its actions are still
    /// audited under `name` (for the CLI, the operating-system user).
    Operator {
        /// Recorded as `operator:<name>`.
        name: String,
    },
    /// An ias user, checked against its role's permissions.
    User {
        /// The user's id.
        id: UserId,
        /// The user's email, recorded in the audit log.
        email: String,
        /// The user's role.
        role: Role,
        /// The user's organization.
        org_id: OrgId,
    },
}

impl Actor {
    /// The operator of the command line.
    ///
    /// Named by `IAS_OPERATOR` when set (for automation that acts on behalf
    /// of someone), else by the operating-system user (`USER`, `LOGNAME`,
    /// `USERNAME`), else by the process's `uid:<n>`, else `unknown`.
    pub fn local_operator() -> Self {
        let name = ["IAS_OPERATOR", "USER", "LOGNAME", "USERNAME"]
            .iter()
            .find_map(|var| std::env::var(var).ok().filter(|v| !v.trim().is_empty()))
            .map(|v| crate::error::printable(v.trim()))
            .or_else(process_uid)
            .unwrap_or_else(|| "unknown".to_owned());
        Actor::Operator { name }
    }

    /// An actor for an ias user.
    pub fn user(user: &crate::domain::User) -> Self {
        Actor::User {
            id: user.id,
            email: user.email.clone(),
            role: user.role,
            org_id: user.org_id,
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Operator { name } => write!(f, "operator:{name}"),
            Actor::User { email, .. } => write!(f, "user:{email}"),
        }
    }
}

/// `uid:<n>` of this process where the system tells it (Linux), for operators without `USER`.
fn process_uid() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    let uid = line.split_whitespace().nth(1)?;
    Some(format!("uid:{uid}"))
}

/// An audit entry about to be written, without its id and hashes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditRecord {
    /// When the action happened.
    pub at: DateTime<Utc>,
    /// Who acted, as `operator:<name>` or `user:<email>`.
    pub actor: String,
    /// Where the action came from.
    pub source: Source,
    /// What was done, such as `org.create`.
    pub action: String,
    /// The organization concerned, if any.
    pub org_id: Option<OrgId>,
    /// What was acted on, such as `org:team-alpha` or `user:bob@example.com`.
    pub target: String,
    /// The changed fields as `{"field": {"before": .., "after": ..}}`; never a secret.
    pub changes: serde_json::Value,
}

/// A stored audit entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    /// Position in the chain, from 1.
    pub id: i64,
    /// What was recorded.
    #[serde(flatten)]
    pub record: AuditRecord,
    /// The id of the row created by the action, when it created one.
    pub target_id: Option<i64>,
    /// The previous entry's hash ([`GENESIS_HASH`] for the first).
    pub prev_hash: String,
    /// This entry's hash.
    pub hash: String,
}

impl AuditEntry {
    /// The entry that follows `last` (the newest entry's id and hash, `None`
    /// for an empty log) to record `record`, hashed into the chain.
    ///
    /// Its time is cut to the millisecond, which is what stores keep and
    /// what the hash covers. `None` when ids have run out.
    pub fn next(
        last: Option<(i64, String)>,
        record: &AuditRecord,
        target_id: Option<i64>,
    ) -> Option<AuditEntry> {
        let (id, prev_hash) = match last {
            Some((id, hash)) => (id.checked_add(1)?, hash),
            None => (1, GENESIS_HASH.to_owned()),
        };
        let mut record = record.clone();
        record.at = DateTime::from_timestamp_millis(record.at.timestamp_millis())?;
        let hash = chain_hash(id, &record, target_id, &prev_hash);
        Some(AuditEntry {
            id,
            record,
            target_id,
            prev_hash,
            hash,
        })
    }
}

/// The hash of an entry, over its id, its fields and the previous hash.
pub fn chain_hash(
    id: i64,
    record: &AuditRecord,
    target_id: Option<i64>,
    prev_hash: &str,
) -> String {
    let canonical = serde_json::json!([
        id,
        record.at.timestamp_millis(),
        record.actor,
        record.source.as_str(),
        record.action,
        record.org_id.map(|o| o.0),
        record.target,
        target_id,
        record.changes,
        prev_hash,
    ]);
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

/// The entry recording that `attempt` was refused for lack of `missing`.
///
/// Its action is the attempt's with [`DENIED_SUFFIX`] (`key.create.denied`);
/// its changes are `{"permission": <missing>, "attempted": <the attempt's changes>}`.
pub fn denial(attempt: &AuditRecord, missing: Permission) -> AuditRecord {
    AuditRecord {
        action: format!("{}{DENIED_SUFFIX}", attempt.action),
        changes: serde_json::json!({
            "permission": missing.as_str(),
            "attempted": attempt.changes,
        }),
        ..attempt.clone()
    }
}

/// Which audit entries to list (newest first, a page at a time: see [`crate::page`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only entries at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only entries with exactly this action, such as `key.create` or `key.create.denied`.
    pub action: Option<String>,
}

/// `{"field": {"before": before, "after": after}}` for one changed field.
pub fn change(field: &str, before: impl Serialize, after: impl Serialize) -> serde_json::Value {
    serde_json::json!({ field: { "before": before, "after": after } })
}

/// The `changes` of an update of several fields, each given as `(field,
/// before, after)`: only the fields whose value changed, in the shape of
/// [`change`].
pub fn changes<'a>(
    fields: impl IntoIterator<Item = (&'a str, serde_json::Value, serde_json::Value)>,
) -> serde_json::Value {
    let changed = fields
        .into_iter()
        .filter(|(_, before, after)| before != after)
        .map(|(field, before, after)| {
            let change = serde_json::json!({ "before": before, "after": after });
            (field.to_owned(), change)
        })
        .collect();
    serde_json::Value::Object(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_keep_only_the_fields_that_changed() {
        use serde_json::json;
        let changes = changes([
            ("rpm", json!(10), json!(20)),
            ("tpm", json!(null), json!(null)),
        ]);
        assert_eq!(changes, json!({ "rpm": { "before": 10, "after": 20 } }));
    }

    fn record() -> AuditRecord {
        AuditRecord {
            at: "2026-12-01T00:00:00Z".parse().unwrap(),
            actor: "operator:root".into(),
            source: Source::Cli,
            action: "org.create".into(),
            org_id: Some(OrgId(1)),
            target: "org:team-alpha".into(),
            changes: change("monthly_token_budget", None::<i64>, 5),
        }
    }

    #[test]
    fn the_next_entry_follows_the_last_and_stops_at_the_end_of_ids() {
        let first = AuditEntry::next(None, &record(), Some(7)).unwrap();
        assert_eq!((first.id, first.prev_hash.as_str()), (1, GENESIS_HASH));
        assert_eq!(
            first.hash,
            chain_hash(1, &first.record, Some(7), GENESIS_HASH)
        );
        let second = AuditEntry::next(Some((1, first.hash.clone())), &record(), None).unwrap();
        assert_eq!((second.id, second.prev_hash), (2, first.hash));
        assert!(AuditEntry::next(Some((i64::MAX, "h".into())), &record(), None).is_none());
        assert_eq!(Source::parse("gitops"), Some(Source::Gitops));
        assert_eq!(Source::parse("web"), None);
    }

    #[test]
    fn hash_depends_on_every_field_and_the_chain() {
        let base = chain_hash(1, &record(), Some(1), GENESIS_HASH);
        assert_eq!(base, chain_hash(1, &record(), Some(1), GENESIS_HASH));
        let mut changed = record();
        changed.changes = change("monthly_token_budget", None::<i64>, 6);
        assert_ne!(base, chain_hash(1, &changed, Some(1), GENESIS_HASH));
        assert_ne!(base, chain_hash(2, &record(), Some(1), GENESIS_HASH));
        assert_ne!(base, chain_hash(1, &record(), Some(1), &base));
    }
}
