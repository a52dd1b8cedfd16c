//! Usage reports: the current budget period, and per local day and model.

use chrono::{DateTime, NaiveDate, Utc};
use ias_core::{Admin, Result, UserRef};
use pyo3::prelude::*;

use crate::governor::Governor;
use crate::page::{self, Paged};
use crate::runtime::{awaitable, block_on};

/// Usage of an organization (or one of its users) in the current period.
#[pyclass(frozen, get_all, module = "ias")]
pub struct UsageReport {
    /// The period, `YYYY-MM`.
    period: String,
    /// The organization's monthly budget.
    monthly_token_budget: i64,
    /// Tokens charged to the organization.
    used: i64,
    /// Tokens held by open reservations.
    reserved: i64,
    /// Tokens of the budget neither used nor reserved.
    remaining: i64,
    /// Per user, for the users the report covers: one page of them, by id.
    users: Vec<UserUsage>,
    /// Per model.
    models: Vec<ModelUsage>,
    /// Where the next page of users starts (give it as `after=`); `None` on the last.
    next_after: Option<String>,
}

/// One user's usage in a period.
#[pyclass(frozen, get_all, module = "ias")]
#[derive(Clone)]
pub struct UserUsage {
    /// The user's id.
    user_id: i64,
    /// The user's email.
    email: String,
    /// The user's own monthly limit, if any.
    monthly_token_limit: Option<i64>,
    /// Tokens charged.
    used: i64,
    /// Tokens held by open reservations.
    reserved: i64,
    /// Settled requests.
    requests: i64,
}

/// One model's usage in a period.
#[pyclass(frozen, get_all, module = "ias")]
#[derive(Clone)]
pub struct ModelUsage {
    /// The normalised model name.
    model: String,
    /// Tokens charged.
    tokens: i64,
    /// Settled requests.
    requests: i64,
}

/// Usage of one model on one local day of the organization.
#[pyclass(frozen, get_all, module = "ias")]
pub struct DailyUsage {
    /// The day, `YYYY-MM-DD`.
    day: String,
    /// The normalised model name.
    model: String,
    /// Tokens charged.
    tokens: i64,
    /// Settled requests.
    requests: i64,
}

/// A burn-rate forecast: the pace of the last 7 days, and when the limit runs out at it.
#[pyclass(frozen, get_all, module = "ias")]
pub struct Forecast {
    /// The period, `YYYY-MM`.
    period: String,
    /// The organization's budget, or the user's own limit; `None`: the user has none.
    limit: Option<i64>,
    /// Tokens charged in the period.
    used: i64,
    /// Tokens held by open reservations.
    reserved: i64,
    /// Tokens of the limit neither used nor reserved; `None` without a limit.
    remaining: Option<i64>,
    /// Where the pace is measured from.
    pace_since: DateTime<Utc>,
    /// Tokens charged per day since `pace_since`.
    tokens_per_day: i64,
    /// `used` plus the rest of the period at this pace.
    projected_tokens: i64,
    /// When the limit runs out at this pace; `None`: not before `resets_at`.
    exhausted_at: Option<DateTime<Utc>>,
    /// When the period ends.
    resets_at: DateTime<Utc>,
}

impl From<ias_core::usage::Forecast> for Forecast {
    fn from(f: ias_core::usage::Forecast) -> Self {
        Forecast {
            period: f.period,
            limit: f.limit,
            used: f.used,
            reserved: f.reserved,
            remaining: f.remaining,
            pace_since: f.pace_since,
            tokens_per_day: f.tokens_per_day,
            projected_tokens: f.projected_tokens,
            exhausted_at: f.exhausted_at,
            resets_at: f.resets_at,
        }
    }
}

#[pymethods]
impl Forecast {
    fn __repr__(&self) -> String {
        format!(
            "Forecast(period={:?}, limit={:?}, used={}, tokens_per_day={}, exhausted_at={:?})",
            self.period,
            self.limit,
            self.used,
            self.tokens_per_day,
            self.exhausted_at.map(|at| at.to_rfc3339())
        )
    }
}

async fn usage_forecast(admin: Admin, org: String, email: Option<String>) -> Result<Forecast> {
    Ok(admin
        .usage_forecast(&org, email.as_deref().map(UserRef::from))
        .await?
        .into())
}

impl From<ias_core::UsageReport> for UsageReport {
    fn from(report: ias_core::UsageReport) -> Self {
        let remaining = report.remaining();
        let users = report
            .users
            .into_iter()
            .map(|u| UserUsage {
                user_id: u.user_id.0,
                email: u.email,
                monthly_token_limit: u.monthly_token_limit,
                used: u.counter.used,
                reserved: u.counter.reserved,
                requests: u.requests,
            })
            .collect();
        let models = report
            .models
            .into_iter()
            .map(|m| ModelUsage {
                model: m.model,
                tokens: m.tokens,
                requests: m.requests,
            })
            .collect();
        UsageReport {
            period: report.period,
            monthly_token_budget: report.monthly_token_budget,
            used: report.org.used,
            reserved: report.org.reserved,
            remaining,
            users,
            models,
            next_after: report.next_after,
        }
    }
}

#[pymethods]
impl UsageReport {
    fn __repr__(&self) -> String {
        format!(
            "UsageReport(period={:?}, used={}, reserved={}, remaining={})",
            self.period, self.used, self.reserved, self.remaining
        )
    }
}

#[pymethods]
impl UserUsage {
    fn __repr__(&self) -> String {
        format!(
            "UserUsage(email={:?}, used={}, requests={})",
            self.email, self.used, self.requests
        )
    }
}

#[pymethods]
impl ModelUsage {
    fn __repr__(&self) -> String {
        format!(
            "ModelUsage(model={:?}, tokens={}, requests={})",
            self.model, self.tokens, self.requests
        )
    }
}

#[pymethods]
impl DailyUsage {
    fn __repr__(&self) -> String {
        format!(
            "DailyUsage(day={:?}, model={:?}, tokens={}, requests={})",
            self.day, self.model, self.tokens, self.requests
        )
    }
}

/// A day given as a `date` or as `YYYY-MM-DD` text.
#[derive(FromPyObject)]
enum Day {
    Date(NaiveDate),
    Text(String),
}

impl Day {
    fn into_text(self) -> String {
        match self {
            Day::Date(date) => date.format("%Y-%m-%d").to_string(),
            Day::Text(text) => text,
        }
    }
}

/// Which page: `limit=` and `after=`.
type PageArgs = (i64, Option<String>);

async fn usage(
    admin: Admin,
    org: String,
    email: Option<String>,
    (limit, after): PageArgs,
) -> Result<UsageReport> {
    let page = page::request(limit, after)?;
    Ok(admin
        .usage(&org, email.as_deref().map(UserRef::from), &page)
        .await?
        .into())
}

async fn daily_usage(
    admin: Admin,
    org: String,
    email: Option<String>,
    (start, end): (Option<String>, Option<String>),
    (limit, after): PageArgs,
) -> Result<Paged<DailyUsage>> {
    let page = page::request(limit, after)?;
    let (start, end) = (start.as_deref(), end.as_deref());
    let days = admin
        .daily_usage(&org, email.as_deref().map(UserRef::from), start, end, &page)
        .await?;
    Ok(Paged::of(days, |d| DailyUsage {
        day: d.day,
        model: d.model,
        tokens: d.tokens,
        requests: d.requests,
    }))
}

#[pymethods]
impl Governor {
    /// Usage of an organization, or of one of its users, in the current
    /// period, with one page of its users (by id).
    #[pyo3(signature = (org, email = None, *, limit = 100, after = None))]
    fn usage(
        &self,
        py: Python<'_>,
        org: String,
        email: Option<String>,
        limit: i64,
        after: Option<String>,
    ) -> PyResult<UsageReport> {
        block_on(py, usage(self.admin()?, org, email, (limit, after)))
    }

    /// When the organization's budget (or, with `email`, the user's own limit)
    /// runs out at the pace of the last 7 days.
    #[pyo3(signature = (org, email = None))]
    fn usage_forecast(
        &self,
        py: Python<'_>,
        org: String,
        email: Option<String>,
    ) -> PyResult<Forecast> {
        block_on(py, usage_forecast(self.admin()?, org, email))
    }

    /// `usage_forecast` as an awaitable.
    #[pyo3(signature = (org, email = None))]
    fn usage_forecast_async<'py>(
        &self,
        py: Python<'py>,
        org: String,
        email: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, usage_forecast(self.admin()?, org, email))
    }

    /// `usage` as an awaitable.
    #[pyo3(signature = (org, email = None, *, limit = 100, after = None))]
    fn usage_async<'py>(
        &self,
        py: Python<'py>,
        org: String,
        email: Option<String>,
        limit: i64,
        after: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, usage(self.admin()?, org, email, (limit, after)))
    }

    /// A page of usage per local day and model, by day then model, from
    /// `start` to `end` (default: this month so far).
    #[pyo3(signature = (org, email = None, *, start = None, end = None, limit = 100, after = None))]
    #[expect(
        clippy::too_many_arguments,
        reason = "the Python signature's keyword arguments"
    )]
    fn daily_usage(
        &self,
        py: Python<'_>,
        org: String,
        email: Option<String>,
        start: Option<Day>,
        end: Option<Day>,
        limit: i64,
        after: Option<String>,
    ) -> PyResult<Paged<DailyUsage>> {
        let days = (start.map(Day::into_text), end.map(Day::into_text));
        let work = daily_usage(self.admin()?, org, email, days, (limit, after));
        block_on(py, work)
    }

    /// `daily_usage` as an awaitable.
    #[pyo3(signature = (org, email = None, *, start = None, end = None, limit = 100, after = None))]
    #[expect(
        clippy::too_many_arguments,
        reason = "the Python signature's keyword arguments"
    )]
    fn daily_usage_async<'py>(
        &self,
        py: Python<'py>,
        org: String,
        email: Option<String>,
        start: Option<Day>,
        end: Option<Day>,
        limit: i64,
        after: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let days = (start.map(Day::into_text), end.map(Day::into_text));
        awaitable(
            py,
            daily_usage(self.admin()?, org, email, days, (limit, after)),
        )
    }
}
