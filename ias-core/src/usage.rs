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
    /// Per user, for the users the report covers: one page of them, by id.
    pub users: Vec<UserUsage>,
    /// Per model, from the recorded usage events.
    pub models: Vec<ModelUsage>,
    /// The cursor of the next page of `users` (a user id); `None` on the last page.
    pub next_after: Option<String>,
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

impl DailyUsage {
    /// This row's key in the list, as a cursor: `DAY/MODEL`, such as `2026-12-03/gpt-4o-mini`.
    pub fn cursor(&self) -> String {
        format!("{}/{}", self.day, self.model)
    }
}

/// A day and a model: where a page of daily usage starts (after this row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayModel {
    /// The day, `YYYY-MM-DD`.
    pub day: String,
    /// The model name.
    pub model: String,
}

impl DayModel {
    /// Reads a cursor written by [`DailyUsage::cursor`]: `DAY/MODEL`.
    ///
    /// [`crate::Error::InvalidInput`] naming `after` when it is not a date,
    /// a `/` and a model name.
    pub fn parse(cursor: &str) -> crate::Result<DayModel> {
        let reason = "expected `DAY/MODEL` such as `2026-12-03/gpt-4o-mini`";
        let text = crate::page::checked_text(cursor)?;
        let (day, model) = text
            .split_once('/')
            .ok_or_else(|| crate::page::bad_cursor(cursor, reason))?;
        let parsed = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").ok();
        match parsed {
            Some(date) if !model.is_empty() && date.format("%Y-%m-%d").to_string() == day => {
                Ok(DayModel {
                    day: day.to_owned(),
                    model: model.to_owned(),
                })
            }
            _ => Err(crate::page::bad_cursor(cursor, reason)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daily_cursors_name_a_day_and_a_model() {
        let row = DailyUsage {
            day: "2026-12-03".into(),
            model: "openai/gpt-4o".into(),
            tokens: 1,
            requests: 1,
        };
        let key = DayModel::parse(&row.cursor()).unwrap();
        assert_eq!(
            (key.day.as_str(), key.model.as_str()),
            ("2026-12-03", "openai/gpt-4o")
        );
        for bad in [
            "2026-12-03",
            "2026-12-03/",
            "2026-13-01/x",
            "2026-1-3/x",
            "/x",
            "",
        ] {
            let err = DayModel::parse(bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid after `"), "{bad:?}: {err}");
        }
    }
}
