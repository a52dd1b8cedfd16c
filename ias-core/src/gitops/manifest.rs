//! The GitOps file (`ias.yaml`): its types. The strict parser lands separately.

use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::domain::Role;
use crate::rate::RateLimits;

/// An organization as declared in its Git repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The file format's version.
    pub version: u32,
    /// The organization's slug.
    pub org: String,
    /// The monthly budget.
    pub budget: DeclaredBudget,
    /// The organization's rate limits.
    pub rate_limits: RateLimits,
    /// Allowed model patterns, normalised and sorted.
    pub allowed_models: Vec<String>,
    /// The users, sorted by email.
    pub users: Vec<DeclaredUser>,
}

/// The declared monthly budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclaredBudget {
    /// Tokens per calendar month.
    pub monthly_tokens: i64,
    /// The time zone of the calendar months.
    pub timezone: Tz,
}

/// A declared user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclaredUser {
    /// Normalised email.
    pub email: String,
    /// `org_admin` or `member`.
    pub role: Role,
    /// The user's own monthly limit; `None`: only the org budget applies.
    pub monthly_token_limit: Option<i64>,
    /// The user's rate limits.
    pub rate_limits: RateLimits,
}

/// One problem in a file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The field path, such as `users[1].role`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Every problem found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestErrors(pub Vec<ManifestError>);

impl ManifestErrors {
    /// Every error on one line, separated by `; `.
    pub fn one_line(&self) -> String {
        self.0
            .iter()
            .map(|e| format!("{}:{}: {}: {}", e.line, e.column, e.path, e.message))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Parses a file (placeholder until the parser lands).
pub fn parse_bytes(_bytes: &[u8], _expected_org: Option<&str>) -> Result<Manifest, ManifestErrors> {
    Err(ManifestErrors(Vec::new()))
}
