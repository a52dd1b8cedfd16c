//! Each organization's sync state, and what an apply hands the store.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::audit::AuditRecord;
use crate::domain::OrgId;
use crate::error::{Error, Result};
use crate::gitops::manifest::Manifest;
use crate::gitops::plan::{ApplyOp, FieldChange};
use crate::gitops::settings::GitopsSettings;

/// Where an organization stands against its repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum SyncStatus {
    /// The store holds what the file at the remote head declares, and no drift.
    Synced,
    /// Not yet applied (a new commit, or never synced), or drift was found.
    OutOfSync,
    /// The last attempt failed: fetch, file, guard or apply. Never healthy.
    Error,
    /// Fetched and reported on, never applied.
    Suspended,
}

impl SyncStatus {
    /// The name stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncStatus::Synced => "synced",
            SyncStatus::OutOfSync => "out_of_sync",
            SyncStatus::Error => "error",
            SyncStatus::Suspended => "suspended",
        }
    }
}

impl fmt::Display for SyncStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SyncStatus {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "synced" => Ok(SyncStatus::Synced),
            "out_of_sync" => Ok(SyncStatus::OutOfSync),
            "error" => Ok(SyncStatus::Error),
            "suspended" => Ok(SyncStatus::Suspended),
            other => Err(Error::invalid(
                "status",
                other,
                "expected synced, out_of_sync, error or suspended",
            )),
        }
    }
}

/// The status part of the sync state: written by the reconciler after each attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GitopsStatus {
    /// Where the organization stands.
    pub status: SyncStatus,
    /// A stable, machine-readable reason (`never_synced`, `fetch_failed`, `invalid_file`, …).
    pub reason: String,
    /// One line for people.
    pub message: String,
    /// The commit the ref pointed at when last fetched.
    pub last_fetched_commit: Option<String>,
    /// The commit of the last apply attempt.
    pub last_attempted_commit: Option<String>,
    /// The commit whose file the store holds.
    pub last_applied_commit: Option<String>,
    /// When the reconciler last looked at the organization.
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// When an attempt last ended synced.
    pub last_success_at: Option<DateTime<Utc>>,
    /// Failed attempts in a row; 0 after a success.
    pub consecutive_failures: u32,
    /// Before this, a failing organization is not tried again.
    pub next_retry_at: Option<DateTime<Utc>>,
    /// Drift found so far (each detection of a new drift counts once).
    pub drift_count: u64,
    /// The drift found at the last check, field by field.
    pub drift: Vec<FieldChange>,
}

impl GitopsStatus {
    /// The status of an organization just enabled.
    pub fn never_synced() -> Self {
        GitopsStatus {
            status: SyncStatus::OutOfSync,
            reason: "never_synced".to_owned(),
            message: "waiting for the first sync".to_owned(),
            last_fetched_commit: None,
            last_attempted_commit: None,
            last_applied_commit: None,
            last_attempt_at: None,
            last_success_at: None,
            consecutive_failures: 0,
            next_retry_at: None,
            drift_count: 0,
            drift: Vec::new(),
        }
    }
}

/// What Git applied last: the file, its commit and the users Git added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Inventory {
    /// The commit applied.
    pub commit: String,
    /// The file as applied.
    pub manifest: Manifest,
    /// Users whose membership Git created (normalised emails, sorted); only
    /// these may be pruned.
    pub added_users: Vec<String>,
}

/// One organization's GitOps settings, status and inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GitopsState {
    /// Where the file is and how it is applied.
    pub settings: GitopsSettings,
    /// Where the organization stands.
    pub status: GitopsStatus,
    /// What Git applied last; `None` before the first apply.
    pub inventory: Option<Inventory>,
    /// When GitOps was enabled.
    pub enabled_at: DateTime<Utc>,
}

impl GitopsState {
    /// `repo@commit`, for conflict messages (`(not yet applied)` before the first apply).
    pub fn source_label(&self) -> String {
        let commit = self
            .status
            .last_applied_commit
            .as_deref()
            .map_or("(not yet applied)", short_commit);
        format!("{} at {commit}", self.settings.repo_url)
    }
}

/// The first 12 characters of a commit id.
pub fn short_commit(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// One apply, handed to the store to run in one transaction.
#[derive(Debug, Clone)]
pub struct GitopsApply {
    /// The organization.
    pub org_id: OrgId,
    /// The changes, in order.
    pub ops: Vec<ApplyOp>,
    /// Their audit records.
    pub audit: Vec<AuditRecord>,
    /// The new inventory.
    pub inventory: Inventory,
    /// The status to store with it.
    pub status: GitopsStatus,
    /// When the apply happens.
    pub at: DateTime<Utc>,
    /// The reconcile lease the apply runs under; the store refuses the
    /// apply if another holder has taken the lease since.
    pub holder: String,
}
