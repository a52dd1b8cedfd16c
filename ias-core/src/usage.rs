//! Usage reports for one budget period.

use serde::{Deserialize, Serialize};

use crate::budget::Counter;
use crate::domain::UserId;

/// Usage of one organization (or one of its users) in one period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageReport {
    /// The period key, `YYYY-MM`.
    pub period: String,
    /// The organization's monthly budget.
    pub monthly_token_budget: i64,
    /// The organization's counter.
    pub org: Counter,
    /// Per user, for the users the report covers, by email.
    pub users: Vec<UserUsage>,
    /// Per model, from the recorded usage events.
    pub models: Vec<ModelUsage>,
}

impl UsageReport {
    /// Tokens of the organization's budget neither used nor reserved.
    pub fn remaining(&self) -> i64 {
        self.org.left_of(self.monthly_token_budget)
    }
}

/// One user's usage in a period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserUsage {
    /// The user's id.
    pub user_id: UserId,
    /// The user's email.
    pub email: String,
    /// The user's own monthly limit, if any.
    pub monthly_token_limit: Option<i64>,
    /// The user's counter.
    pub counter: Counter,
    /// Settled requests in the period.
    pub requests: i64,
}

/// One model's usage in a period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelUsage {
    /// The normalised model name.
    pub model: String,
    /// Tokens charged.
    pub tokens: i64,
    /// Settled requests.
    pub requests: i64,
}

/// Usage of one model on one local day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DailyUsage {
    /// The organization's local day, `YYYY-MM-DD`.
    pub day: String,
    /// The normalised model name.
    pub model: String,
    /// Tokens charged.
    pub tokens: i64,
    /// Settled requests.
    pub requests: i64,
}
