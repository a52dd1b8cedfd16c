//! Checks and normalisation for every value a user can type.
//!
//! Each function returns the normalised value or an [`Error::InvalidInput`]
//! naming the field and the value, so hosts report the same message.

use chrono_tz::Tz;

use crate::error::{Error, Result};

/// The largest token amount ias accepts anywhere (10^15).
///
/// Far above any real budget, and small enough that sums of many such
/// amounts never overflow an `i64`.
pub const MAX_TOKENS: i64 = 1_000_000_000_000_000;

/// Longest accepted organization slug.
pub const MAX_SLUG_LEN: usize = 63;

/// Longest accepted email address (RFC 5321 path limit).
pub const MAX_EMAIL_LEN: usize = 254;

/// Checks an organization slug: 1 to 63 of `a-z`, `0-9` and `-`, not at either end.
pub fn slug(value: &str) -> Result<String> {
    let reason = if value.is_empty() {
        Some("must not be empty")
    } else if value.len() > MAX_SLUG_LEN {
        Some("must be at most 63 characters")
    } else if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        Some("may contain only lowercase letters, digits and `-`")
    } else if value.starts_with('-') || value.ends_with('-') {
        Some("must not start or end with `-`")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::invalid("slug", value, reason)),
        None => Ok(value.to_owned()),
    }
}

/// Normalises an email (trim, lowercase) and checks its shape.
pub fn email(value: &str) -> Result<String> {
    let normalised = value.trim().to_lowercase();
    let reject = |reason: &str| Err(Error::invalid("email", value, reason));
    if normalised.is_empty() {
        return reject("must not be empty");
    }
    if normalised.len() > MAX_EMAIL_LEN {
        return reject("must be at most 254 characters");
    }
    if normalised
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return reject("must not contain spaces or control characters");
    }
    if normalised.chars().any(crate::error::is_invisible_format) {
        return reject("must not contain invisible or direction-changing characters");
    }
    let Some((local, domain)) = normalised.split_once('@') else {
        return reject("must contain `@`");
    };
    if local.is_empty() || domain.contains('@') {
        return reject("must have one `@` with a name before it");
    }
    if !domain.contains('.') || domain.starts_with('.') || domain.ends_with('.') {
        return reject("must have a domain such as `example.com` after `@`");
    }
    Ok(normalised)
}

/// Checks an audit action name such as `key.create`: 1 to 64 of `a-z`, `0-9`, `.` and `_`.
pub fn audit_action(value: &str) -> Result<String> {
    let trimmed = value.trim();
    let well_formed = (1..=64).contains(&trimmed.len())
        && trimmed
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_');
    if well_formed {
        Ok(trimmed.to_owned())
    } else {
        Err(Error::invalid(
            "action",
            value,
            "expected 1 to 64 of lowercase letters, digits, `.` and `_`, such as `key.create`",
        ))
    }
}

/// Parses an IANA time zone name such as `Europe/Berlin`.
pub fn timezone(value: &str) -> Result<Tz> {
    value
        .trim()
        .parse::<Tz>()
        .map_err(|_| Error::invalid("timezone", value, "not an IANA time zone name"))
}

/// Checks a token amount (budget, limit, estimate): 0 to [`MAX_TOKENS`].
pub fn token_amount(field: &'static str, value: i64) -> Result<i64> {
    match amount_problem(value) {
        Some(reason) => Err(Error::invalid(field, value.to_string(), reason)),
        None => Ok(value),
    }
}

/// Parses a token amount written as text, reporting overflow by field and value.
pub fn parse_token_amount(field: &'static str, value: &str) -> Result<i64> {
    let trimmed = value.trim().replace('_', "");
    let digits = trimmed.strip_prefix('-').unwrap_or(&trimmed);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::invalid(
            field,
            value,
            "must be a whole number of tokens",
        ));
    }
    let reason = match trimmed.parse::<i64>() {
        Ok(parsed) => match amount_problem(parsed) {
            None => return Ok(parsed),
            Some(reason) => reason,
        },
        // Only digits with an optional sign, so the number is out of range.
        Err(_) if trimmed.starts_with('-') => NEGATIVE,
        Err(_) => TOO_LARGE,
    };
    Err(Error::invalid(field, value, reason))
}

const NEGATIVE: &str = "must not be negative";
const TOO_LARGE: &str = "must be at most 1000000000000000";

fn amount_problem(value: i64) -> Option<&'static str> {
    if value < 0 {
        Some(NEGATIVE)
    } else if value > MAX_TOKENS {
        Some(TOO_LARGE)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert_eq!(slug("team-alpha").unwrap(), "team-alpha");
        for bad in ["", "Team", "-a", "a-", "a_b", "a b", &"a".repeat(64)] {
            assert!(slug(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn emails_are_normalised() {
        assert_eq!(email("  Bob@Example.COM ").unwrap(), "bob@example.com");
        for bad in [
            "",
            "bob",
            "@example.com",
            "bob@",
            "bob@example",
            "a b@c.d",
            "a@b@c.d",
            "bob\u{200b}@example.com",
            "bob\u{202e}@example.com",
        ] {
            let err = email(bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid email"), "{err}");
        }
    }

    #[test]
    fn audit_actions() {
        assert_eq!(
            audit_action(" key.create.denied ").unwrap(),
            "key.create.denied"
        );
        for bad in [
            "",
            "Key.Create",
            "key create",
            "key-create",
            &"a".repeat(65),
        ] {
            assert!(audit_action(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn timezones() {
        assert_eq!(
            timezone("Europe/Berlin").unwrap(),
            chrono_tz::Europe::Berlin
        );
        assert!(timezone("Mars/Olympus").is_err());
    }

    #[test]
    fn token_amounts_name_field_and_value() {
        assert_eq!(parse_token_amount("budget", "1_000").unwrap(), 1000);
        let negative = parse_token_amount("budget", "-5").unwrap_err().to_string();
        assert_eq!(negative, "invalid budget `-5`: must not be negative");
        let huge = parse_token_amount("budget", "99999999999999999999").unwrap_err();
        assert!(huge.to_string().contains("at most"), "{huge}");
        let too_big = parse_token_amount("budget", "2000000000000000").unwrap_err();
        assert!(too_big.to_string().contains("at most"), "{too_big}");
        assert!(parse_token_amount("budget", "ten").is_err());
        let bare = parse_token_amount("budget", "-").unwrap_err().to_string();
        assert!(bare.contains("whole number"), "{bare}");
        let very_negative = parse_token_amount("budget", "-99999999999999999999").unwrap_err();
        assert!(
            very_negative.to_string().contains("negative"),
            "{very_negative}"
        );
    }
}
