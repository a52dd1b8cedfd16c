//! Values typed on the command line, parsed from text so errors name the field.
//!
//! Numbers are taken as text rather than parsed by clap, so that `-5` or an
//! overflowing amount is reported as `invalid <field> `<value>`: …` with the
//! documented exit code, like every other invalid value.

use chrono::{DateTime, NaiveDate, Utc};
use ias_core::rate::MAX_RATE;
use ias_core::validate::parse_token_amount;
use ias_core::{AuditHead, Error, KeyId, Role};

use crate::error::CliResult;

/// Parses a token amount such as a budget or an estimate.
pub fn tokens(field: &'static str, text: &str) -> CliResult<i64> {
    Ok(parse_token_amount(field, text)?)
}

/// Parses a monthly limit: a token amount, or `none` for no limit of its own.
pub fn limit(field: &'static str, text: &str) -> CliResult<Option<i64>> {
    if text.trim().eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    tokens(field, text).map(Some)
}

/// Parses a per-minute rate limit: 1 to [`MAX_RATE`], or `none` to remove it.
pub fn rate(field: &'static str, text: &str) -> CliResult<Option<i64>> {
    let trimmed = text.trim();
    if trimmed.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    match trimmed.parse::<i64>() {
        Ok(n) if (1..=MAX_RATE).contains(&n) => Ok(Some(n)),
        _ => {
            let reason =
                "must be a whole number from 1 to 1000000000, or `none` to remove the limit";
            Err(Error::invalid(field, text, reason).into())
        }
    }
}

/// Parses a calendar day written `YYYY-MM-DD`.
pub fn day(field: &'static str, text: &str) -> CliResult<NaiveDate> {
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
        .map_err(|_| Error::invalid(field, text, "expected a date such as 2026-12-31").into())
}

/// Parses a role name: `member`, `org_admin` or `system_admin`.
pub fn role(text: &str) -> CliResult<Role> {
    Ok(text.trim().parse::<Role>()?)
}

/// Parses a key id, a positive whole number as shown by `key list`.
pub fn key_id(text: &str) -> CliResult<KeyId> {
    match text.trim().parse::<i64>() {
        Ok(id) if id > 0 => Ok(KeyId(id)),
        _ => Err(Error::invalid("key_id", text, "must be a positive whole number").into()),
    }
}

/// Parses a key lifetime such as `30d`, `12h`, `90m` or `3600s`.
pub fn lifetime(text: &str) -> CliResult<chrono::Duration> {
    Ok(ias_core::admin::parse_lifetime(text)?)
}

/// Parses a point in time: RFC 3339 (`2026-12-01T08:00:00Z`) or a date, read as midnight UTC.
pub fn since(text: &str) -> CliResult<DateTime<Utc>> {
    let trimmed = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(trimmed) {
        return Ok(at.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(trimmed, "%Y-%m-%d")
        .ok()
        .and_then(|day| day.and_hms_opt(0, 0, 0))
        .map(|midnight| midnight.and_utc())
        .ok_or_else(|| {
            let reason =
                "expected RFC 3339 such as `2026-12-01T08:00:00Z` or a date such as `2026-12-01`";
            Error::invalid("since", text, reason).into()
        })
}

/// Parses an audit anchor `ID:HASH`: a positive entry id and 64 lowercase hex digits.
pub fn anchor(text: &str) -> CliResult<AuditHead> {
    let reject = || {
        Error::invalid(
            "anchor",
            text,
            "expected `ID:HASH` as printed by `audit verify`",
        )
    };
    let (id, hash) = text.trim().split_once(':').ok_or_else(reject)?;
    let id: i64 = id.parse().ok().filter(|id| *id > 0).ok_or_else(reject)?;
    let is_hash = hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !is_hash {
        return Err(reject().into());
    }
    Ok(AuditHead {
        id,
        hash: hash.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_accept_none() {
        assert_eq!(limit("monthly_token_limit", "none").unwrap(), None);
        assert_eq!(limit("monthly_token_limit", "10").unwrap(), Some(10));
        let err = limit("monthly_token_limit", "-1").unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid monthly_token_limit `-1`: must not be negative"
        );
    }

    #[test]
    fn rates_are_positive_bounded_or_none() {
        assert_eq!(rate("rpm", "none").unwrap(), None);
        assert_eq!(rate("rpm", " 60 ").unwrap(), Some(60));
        assert_eq!(rate("tpm", "1000000000").unwrap(), Some(MAX_RATE));
        for bad in ["0", "-1", "1000000001", "99999999999999999999", "ten", ""] {
            let err = rate("tpm", bad).unwrap_err();
            assert!(
                err.to_string().starts_with(&format!("invalid tpm `{bad}`")),
                "{err}"
            );
        }
    }

    #[test]
    fn days_are_calendar_dates() {
        assert_eq!(day("from", "2026-02-28").unwrap().to_string(), "2026-02-28");
        for bad in ["2026-02-30", "yesterday", "2026/01/01"] {
            assert!(day("from", bad).unwrap_err().to_string().contains("from"));
        }
    }

    #[test]
    fn key_ids_are_positive() {
        assert_eq!(key_id("7").unwrap(), KeyId(7));
        for bad in ["0", "-1", "x", ""] {
            assert!(
                key_id(bad)
                    .unwrap_err()
                    .to_string()
                    .starts_with("invalid key_id")
            );
        }
    }

    #[test]
    fn since_takes_rfc3339_or_a_date() {
        let midnight = since("2026-12-01").unwrap();
        assert_eq!(midnight.to_rfc3339(), "2026-12-01T00:00:00+00:00");
        let berlin = since("2026-12-01T09:00:00+01:00").unwrap();
        assert_eq!(berlin.to_rfc3339(), "2026-12-01T08:00:00+00:00");
        let err = since("yesterday").unwrap_err().to_string();
        assert!(err.starts_with("invalid since `yesterday`"), "{err}");
    }

    #[test]
    fn anchors_are_an_id_and_a_hash() {
        let hash = "ab".repeat(32);
        assert_eq!(anchor(&format!("7:{hash}")).unwrap().id, 7);
        for bad in [
            "7",
            "0:ab",
            &format!("x:{hash}"),
            &format!("7:{}", "AB".repeat(32)),
        ] {
            assert!(anchor(bad).is_err(), "{bad}");
        }
    }
}
