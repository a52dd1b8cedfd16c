//! Usage reports for one budget period, and burn-rate forecasts.

use chrono::{DateTime, Duration, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::budget::Counter;
use crate::domain::UserId;
use crate::period::MonthlyPeriod;

/// Usage of one organization (or one of its users) in one period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

/// How long the pace of a [`Forecast`] looks back: the last 7 local days
/// (today included), or the period so far when it is shorter.
pub const PACE_DAYS: u32 = 7;

/// The shortest span a pace is measured over, so that the first minutes of
/// a period do not extrapolate a handful of requests into a flood.
const MIN_PACE_SPAN: Duration = Duration::hours(1);

/// A burn-rate forecast: how fast a budget (or a user's own limit) is being
/// spent, and whether it runs out before it resets at that pace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Forecast {
    /// The period key, `YYYY-MM`.
    pub period: String,
    /// The limit forecast against: the organization's budget, or the user's
    /// own monthly limit; `None` when the user has none (only the
    /// organization's budget applies).
    pub limit: Option<i64>,
    /// Tokens charged in the period.
    pub used: i64,
    /// Tokens held by reservations not yet settled.
    pub reserved: i64,
    /// Tokens of the limit neither used nor reserved; `None` without a limit.
    pub remaining: Option<i64>,
    /// Where the pace is measured from: local midnight [`PACE_DAYS`] - 1
    /// days before today, or the period's start if later.
    pub pace_since: DateTime<Utc>,
    /// Tokens charged per day since `pace_since`, rounded down.
    pub tokens_per_day: i64,
    /// `used` plus what the rest of the period adds at this pace.
    pub projected_tokens: i64,
    /// When the limit runs out at this pace: `now` when nothing is left,
    /// `None` when it does not run out before `resets_at` (or there is no limit).
    pub exhausted_at: Option<DateTime<Utc>>,
    /// When the period ends and the limit starts again.
    pub resets_at: DateTime<Utc>,
}

impl Forecast {
    /// The forecast at `now` for a counter against `limit` in `period`, from
    /// the scope's usage per local day of the organization's zone `tz`
    /// since `pace_since` (see [`pace_start`]).
    pub fn compute(
        now: DateTime<Utc>,
        tz: Tz,
        period: &MonthlyPeriod,
        pace_since: DateTime<Utc>,
        limit: Option<i64>,
        counter: Counter,
        daily: &[DailyUsage],
    ) -> Forecast {
        let first_day = pace_since.with_timezone(&tz).format("%Y-%m-%d").to_string();
        let paced: i64 = daily
            .iter()
            .filter(|d| d.day >= first_day)
            .map(|d| d.tokens)
            .fold(0, i64::saturating_add);
        let span = (now - pace_since).max(MIN_PACE_SPAN);
        let per_ms = paced as f64 / span.num_milliseconds() as f64;
        let left_ms = (period.resets_at - now).num_milliseconds().max(0) as f64;
        let remaining = limit.map(|limit| counter.left_of(limit));
        Forecast {
            period: period.key.clone(),
            limit,
            used: counter.used,
            reserved: counter.reserved,
            remaining,
            pace_since,
            tokens_per_day: (per_ms * DAY_MS) as i64,
            projected_tokens: counter.used.saturating_add((per_ms * left_ms) as i64),
            exhausted_at: remaining.and_then(|left| exhausted_at(now, period, left, per_ms)),
            resets_at: period.resets_at,
        }
    }
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

const DAY_MS: f64 = 86_400_000.0;

/// Where a forecast at `now` measures the pace from: local midnight
/// [`PACE_DAYS`] - 1 days before today in `tz`, or the period's start, or
/// when the scope (the organization, or the user) `began`, whichever is
/// latest: the pace is not averaged over time before the scope existed.
pub fn pace_start(
    now: DateTime<Utc>,
    tz: Tz,
    period: &MonthlyPeriod,
    began: DateTime<Utc>,
) -> DateTime<Utc> {
    let today = now.with_timezone(&tz).date_naive();
    let first = today - chrono::Days::new(u64::from(PACE_DAYS - 1));
    let midnight = tz
        .from_local_datetime(&first.and_time(NaiveTime::MIN))
        .earliest()
        .map_or(period.starts_at, |t| t.with_timezone(&Utc));
    midnight.max(period.starts_at).max(began)
}

/// When `left` tokens are gone at `per_ms`, if before the period resets.
fn exhausted_at(
    now: DateTime<Utc>,
    period: &MonthlyPeriod,
    left: i64,
    per_ms: f64,
) -> Option<DateTime<Utc>> {
    if left == 0 {
        return Some(now);
    }
    if per_ms <= 0.0 {
        return None;
    }
    let ms = (left as f64 / per_ms).ceil();
    let at = now + Duration::milliseconds(ms.min(i64::MAX as f64 / 2.0) as i64);
    (at < period.resets_at).then_some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    fn day(day: &str, tokens: i64) -> DailyUsage {
        DailyUsage {
            day: day.into(),
            model: "gpt-4o-mini".into(),
            tokens,
            requests: 1,
        }
    }

    fn forecast(now: &str, limit: Option<i64>, used: i64, daily: &[DailyUsage]) -> Forecast {
        let now = at(now);
        let period = MonthlyPeriod::containing(now, chrono_tz::UTC);
        let counter = Counter { used, reserved: 0 };
        let since = pace_start(now, chrono_tz::UTC, &period, period.starts_at);
        Forecast::compute(now, chrono_tz::UTC, &period, since, limit, counter, daily)
    }

    #[test]
    fn a_new_scope_is_paced_from_its_creation() {
        // Created at 10:00 on the 20th; 1,000 tokens by 12:00: 12,000 a day, not 1,000 / 6 days.
        let now = at("2026-06-20T12:00:00Z");
        let period = MonthlyPeriod::containing(now, chrono_tz::UTC);
        let counter = Counter {
            used: 1_000,
            reserved: 0,
        };
        let daily = [DailyUsage {
            day: "2026-06-20".into(),
            model: "m".into(),
            tokens: 1_000,
            requests: 4,
        }];
        let began = at("2026-06-20T10:00:00Z");
        let since = pace_start(now, chrono_tz::UTC, &period, began);
        let f = Forecast::compute(now, chrono_tz::UTC, &period, since, None, counter, &daily);
        assert_eq!(f.pace_since, began);
        assert_eq!(f.tokens_per_day, 12_000);
    }

    #[test]
    fn the_pace_is_the_last_seven_days() {
        // 15 June noon: the window starts at 9 June 00:00, 6.5 days ago.
        let daily = [day("2026-06-01", 1_000_000), day("2026-06-09", 650_000)];
        let f = forecast("2026-06-15T12:00:00Z", Some(2_000_000), 1_650_000, &daily);
        assert_eq!(f.pace_since, at("2026-06-09T00:00:00Z"));
        assert_eq!(f.tokens_per_day, 100_000);
        // 350,000 left at 100,000 a day: 3.5 days.
        assert_eq!(f.exhausted_at, Some(at("2026-06-19T00:00:00Z")));
        assert_eq!(f.projected_tokens, 1_650_000 + 1_550_000);
        assert_eq!(f.remaining, Some(350_000));
        assert_eq!(f.resets_at, at("2026-07-01T00:00:00Z"));
    }

    #[test]
    fn early_in_a_period_the_pace_starts_with_it() {
        let f = forecast(
            "2026-06-03T00:00:00Z",
            Some(10_000_000),
            200_000,
            &[day("2026-06-01", 200_000)],
        );
        assert_eq!(f.pace_since, at("2026-06-01T00:00:00Z"));
        assert_eq!(f.tokens_per_day, 100_000);
        assert_eq!(f.exhausted_at, None, "9.8M left, 28 days at 100k a day");
        assert_eq!(f.projected_tokens, 200_000 + 2_800_000);
    }

    #[test]
    fn a_spent_limit_is_exhausted_now_and_no_limit_never() {
        let spent = forecast("2026-06-10T00:00:00Z", Some(1_000), 1_000, &[]);
        assert_eq!(spent.exhausted_at, Some(at("2026-06-10T00:00:00Z")));
        let unlimited = forecast(
            "2026-06-10T00:00:00Z",
            None,
            5_000,
            &[day("2026-06-09", 5_000)],
        );
        assert_eq!((unlimited.remaining, unlimited.exhausted_at), (None, None));
        let idle = forecast("2026-06-10T00:00:00Z", Some(1_000), 10, &[]);
        assert_eq!((idle.tokens_per_day, idle.exhausted_at), (0, None));
    }

    #[test]
    fn the_first_minutes_of_a_period_count_as_an_hour() {
        let f = forecast(
            "2026-06-01T00:06:00Z",
            Some(1_000_000),
            1_000,
            &[day("2026-06-01", 1_000)],
        );
        assert_eq!(f.tokens_per_day, 24_000);
    }

    #[test]
    fn the_window_follows_the_zone() {
        // 15 June 02:00 UTC is 15 June 11:00 in Tokyo; the window starts 9 June 00:00 JST.
        let now = at("2026-06-15T02:00:00Z");
        let tz: Tz = "Asia/Tokyo".parse().unwrap();
        let period = MonthlyPeriod::containing(now, tz);
        let counter = Counter {
            used: 0,
            reserved: 0,
        };
        let since = pace_start(now, tz, &period, period.starts_at);
        let f = Forecast::compute(now, tz, &period, since, Some(1), counter, &[]);
        assert_eq!(f.pace_since, at("2026-06-08T15:00:00Z"));
    }

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
