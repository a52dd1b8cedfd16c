//! Per-organization GitOps settings.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::domain::OrgId;
use crate::error::{Error, Result};

/// The reconcile interval when none is configured.
pub const DEFAULT_INTERVAL_SECS: u64 = 30;

/// The share of an organization's users one apply may remove when none is set.
pub const DEFAULT_MAX_REMOVAL_PERCENT: u8 = 25;

/// The file read from the repository when none is set.
pub const DEFAULT_PATH: &str = "ias.yaml";

/// The reference followed when none is set.
pub const DEFAULT_REF: &str = "main";

/// What the reconciler does about out-of-band changes to Git-owned fields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum DriftPolicy {
    /// Report them in the sync state and the audit log; change nothing.
    #[default]
    Report,
    /// Put the declared values back on the next cycle.
    Heal,
}

impl DriftPolicy {
    /// The name stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            DriftPolicy::Report => "report",
            DriftPolicy::Heal => "heal",
        }
    }
}

impl fmt::Display for DriftPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DriftPolicy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "report" => Ok(DriftPolicy::Report),
            "heal" => Ok(DriftPolicy::Heal),
            other => Err(Error::invalid("drift", other, "expected report or heal")),
        }
    }
}

/// Where an organization's file lives and how it is applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GitopsSettings {
    /// The organization.
    pub org_id: OrgId,
    /// The organization's slug, which the file's `org` must name.
    pub org_slug: String,
    /// The repository URL; never carries credentials.
    pub repo_url: String,
    /// A branch, a tag or a full 40-hex commit id.
    pub git_ref: String,
    /// The file's path inside the repository.
    pub path: String,
    /// Where the transport finds credentials (`env:NAME`, `token-file:PATH`, …); never a secret.
    pub credentials: Option<String>,
    /// Whether users Git added and the file no longer lists lose their membership.
    pub prune: bool,
    /// What to do about drift.
    pub drift: DriftPolicy,
    /// The largest share of users (percent) one apply may remove.
    pub max_removal_percent: u8,
    /// Whether an apply may leave the organization with no user or no org admin.
    pub allow_empty: bool,
    /// Fetched and reported on, never applied.
    pub suspended: bool,
}

/// What `enable` takes: the settings, with the organization named by slug.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewGitopsSettings {
    /// The repository URL, already checked by the transport.
    pub repo_url: String,
    /// A branch, a tag or a full 40-hex commit id.
    pub git_ref: String,
    /// The file's path inside the repository.
    pub path: String,
    /// Where the transport finds credentials; never a secret.
    pub credentials: Option<String>,
    /// See [`GitopsSettings::prune`].
    pub prune: bool,
    /// See [`GitopsSettings::drift`].
    pub drift: DriftPolicy,
    /// See [`GitopsSettings::max_removal_percent`].
    pub max_removal_percent: u8,
    /// See [`GitopsSettings::allow_empty`].
    pub allow_empty: bool,
}

impl NewGitopsSettings {
    /// Settings for `repo_url` with every default.
    pub fn new(repo_url: impl Into<String>) -> Self {
        NewGitopsSettings {
            repo_url: repo_url.into(),
            git_ref: DEFAULT_REF.to_owned(),
            path: DEFAULT_PATH.to_owned(),
            credentials: None,
            prune: false,
            drift: DriftPolicy::Report,
            max_removal_percent: DEFAULT_MAX_REMOVAL_PERCENT,
            allow_empty: false,
        }
    }
}

/// Parses a removal guard such as `25%` or `25` (percent of the organization's users).
pub fn parse_max_removal(value: &str) -> Result<u8> {
    let digits = value.trim().trim_end_matches('%').trim();
    match digits.parse::<u8>() {
        Ok(n) if n <= 100 => Ok(n),
        _ => Err(Error::invalid(
            "max_removal",
            value,
            "expected a percentage from 0% to 100%",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removal_guard_takes_percentages_up_to_100() {
        assert_eq!(parse_max_removal("25%").ok(), Some(25));
        assert_eq!(parse_max_removal(" 0 ").ok(), Some(0));
        assert_eq!(parse_max_removal("100%").ok(), Some(100));
        for bad in ["101%", "-1", "a%", "", "25.5%"] {
            let err = parse_max_removal(bad).err().map(|e| e.to_string());
            assert!(err.is_some_and(|e| e.contains("max_removal")), "{bad}");
        }
    }

    #[test]
    fn drift_policy_names_round_trip() {
        for policy in [DriftPolicy::Report, DriftPolicy::Heal] {
            assert_eq!(policy.as_str().parse::<DriftPolicy>().ok(), Some(policy));
        }
        assert!("fix".parse::<DriftPolicy>().is_err());
    }
}
