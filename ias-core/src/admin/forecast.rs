//! Burn-rate forecasts of [`Admin`]: when a budget runs out at the current pace.

use super::Admin;
use crate::domain::UserRef;
use crate::error::Result;
use crate::page::MAX_PAGE_LIMIT;
use crate::period::MonthlyPeriod;
use crate::usage::{DailyUsage, DayModel, Forecast, pace_start};

impl Admin {
    /// When the organization's budget (or, with `user`, that user's own
    /// monthly limit) runs out at the pace of the last days; see [`Forecast`].
    ///
    /// Needs the same permission as [`Admin::usage`].
    pub async fn usage_forecast(&self, org_slug: &str, user: Option<UserRef>) -> Result<Forecast> {
        let (org, user) = self.usage_scope(org_slug, user).await?;
        let now = self.clock.now();
        let period = MonthlyPeriod::containing(now, org.timezone);
        let report = self
            .store
            .usage_report(org.id, user.as_ref().map(|u| u.id), &period.key, None, 1)
            .await?;
        let (limit, counter) = match &user {
            None => (Some(report.monthly_token_budget), report.org),
            Some(user) => {
                let counter = report
                    .users
                    .iter()
                    .find(|u| u.user_id == user.id)
                    .map(|u| u.counter)
                    .unwrap_or_default();
                (user.monthly_token_limit, counter)
            }
        };
        // The pace is not averaged over days before the scope existed.
        let began = user
            .as_ref()
            .map_or(org.created_at, |u| u.created_at.max(org.created_at));
        let since = pace_start(now, org.timezone, &period, began);
        let day = |at: chrono::DateTime<chrono::Utc>| {
            at.with_timezone(&org.timezone)
                .format("%Y-%m-%d")
                .to_string()
        };
        let (from, to) = (day(since), day(now));
        let user = user.map(|u| u.id);
        let mut daily = Vec::new();
        loop {
            let after = daily.last().map(|d: &DailyUsage| DayModel {
                day: d.day.clone(),
                model: d.model.clone(),
            });
            let page = self
                .store
                .daily_usage(org.id, user, &from, &to, after.as_ref(), MAX_PAGE_LIMIT)
                .await?;
            let last = page.len() < MAX_PAGE_LIMIT as usize;
            daily.extend(page);
            if last {
                break;
            }
        }
        Ok(Forecast::compute(
            now,
            org.timezone,
            &period,
            since,
            limit,
            counter,
            &daily,
        ))
    }
}
