//! Monthly budget periods: calendar months in the organization's time zone.
//!
//! There is no reset job: the period a request falls in follows from the
//! time and the zone, and counters are kept per period.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// The calendar month that contains an instant, in one time zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonthlyPeriod {
    /// The period's key, `YYYY-MM`, as stored with counters.
    pub key: String,
    /// The first instant of the month in the zone.
    pub starts_at: DateTime<Utc>,
    /// The first instant of the next month in the zone: when budgets reset.
    pub resets_at: DateTime<Utc>,
}

impl MonthlyPeriod {
    /// The period that contains `now` in `tz`.
    pub fn containing(now: DateTime<Utc>, tz: Tz) -> Self {
        let local = now.with_timezone(&tz).date_naive();
        let first = first_of_month(local.year(), local.month());
        let next = if local.month() == 12 {
            first_of_month(local.year() + 1, 1)
        } else {
            first_of_month(local.year(), local.month() + 1)
        };
        MonthlyPeriod {
            key: format!("{:04}-{:02}", local.year(), local.month()),
            starts_at: start_of_day(tz, first),
            resets_at: start_of_day(tz, next),
        }
    }
}

fn first_of_month(year: i32, month: u32) -> NaiveDate {
    // INVARIANT: callers pass a month in 1..=12 of a year chrono can hold.
    NaiveDate::from_ymd_opt(year, month, 1).unwrap_or(NaiveDate::MIN)
}

/// The first instant of `date` in `tz`, also on days that start with a DST gap.
pub(crate) fn start_of_day(tz: Tz, date: NaiveDate) -> DateTime<Utc> {
    let midnight = date.and_hms_opt(0, 0, 0).unwrap_or_default();
    // A gap at midnight (clocks jump from 00:00 to 01:00) moves the start
    // to the first minute that exists.
    (0..=180)
        .filter_map(|minutes| {
            let local = midnight + chrono::Duration::minutes(minutes);
            tz.from_local_datetime(&local).earliest()
        })
        .next()
        .map(|dt| dt.with_timezone(&Utc))
        .unwrap_or_else(|| midnight.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn month_follows_the_org_zone_not_utc() {
        // 23:30 UTC on 31 January is already 1 February in Berlin.
        let p = MonthlyPeriod::containing(utc("2026-01-31T23:30:00Z"), chrono_tz::Europe::Berlin);
        assert_eq!(p.key, "2026-02");
        assert_eq!(p.starts_at, utc("2026-01-31T23:00:00Z"));
        assert_eq!(p.resets_at, utc("2026-02-28T23:00:00Z"));
    }

    #[test]
    fn december_rolls_into_next_year() {
        let p = MonthlyPeriod::containing(utc("2026-12-15T12:00:00Z"), chrono_tz::UTC);
        assert_eq!(p.key, "2026-12");
        assert_eq!(p.resets_at, utc("2027-01-01T00:00:00Z"));
    }

    #[test]
    fn zone_far_behind_utc() {
        // Still 31 March in Honolulu (UTC-10) at 05:00 UTC on 1 April.
        let p =
            MonthlyPeriod::containing(utc("2026-04-01T05:00:00Z"), chrono_tz::Pacific::Honolulu);
        assert_eq!(p.key, "2026-03");
        assert_eq!(p.resets_at, utc("2026-04-01T10:00:00Z"));
    }

    #[test]
    fn month_starting_in_a_dst_gap() {
        // Chile moved clocks from 00:00 to 01:00 on 2023-09-03; not a month
        // start, so use a synthetic check: the start of any day is well-defined.
        let day = NaiveDate::from_ymd_opt(2023, 9, 3).unwrap();
        let start = start_of_day(chrono_tz::America::Santiago, day);
        assert_eq!(start, utc("2023-09-03T04:00:00Z"));
    }
}
