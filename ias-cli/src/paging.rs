//! `--limit` and `--after`, which every list command takes, and how a page is shown.
//!
//! A list prints one page: as a table, with a line on stderr naming the
//! `--after` value of the next page when there is one, or with
//! `--output json` as `{"items": [...], "next_after": "..." | null}`.

use clap::Args;
use ias_core::page::{DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT};
use ias_core::{Error, Page, PageRequest};
use serde::Serialize;

use crate::error::CliResult;
use crate::output::Report;

/// Which page of a list to show.
#[derive(Debug, Args)]
pub struct PageArgs {
    /// How many items to show, from 1 to 1000
    #[arg(long, value_name = "N", default_value_t = DEFAULT_PAGE_LIMIT.to_string(),
          allow_hyphen_values = true)]
    limit: String,
    /// Show the items after this one: the value printed after the previous page
    #[arg(long, value_name = "CURSOR", allow_hyphen_values = true)]
    after: Option<String>,
}

impl PageArgs {
    /// The page asked for; [`Error::InvalidInput`] naming `limit` unless it is 1 to 1000.
    pub fn request(&self) -> CliResult<PageRequest> {
        let reason = format!("must be a whole number from 1 to {MAX_PAGE_LIMIT}");
        let limit = self
            .limit
            .trim()
            .parse::<u32>()
            .map_err(|_| Error::invalid("limit", &self.limit, &reason))?;
        let request = PageRequest::new(limit, self.after.clone());
        request.checked_limit()?;
        Ok(request)
    }

    /// Whether a cursor was given: this is not the first page.
    pub fn is_first(&self) -> bool {
        self.after.is_none()
    }
}

/// A page shown as `text`, or in JSON as `{"items": [...], "next_after": ...}`;
/// in text, a line on stderr names the `--after` of the next page.
pub fn report<T: Serialize>(text: String, page: &Page<T>) -> CliResult<Report> {
    let report = Report::new(text, page)?;
    Ok(match &page.next_after {
        Some(cursor) => report.with_notice(next_page_notice(cursor)),
        None => report,
    })
}

/// `next page: --after CURSOR`, the cursor quoted for a shell when it needs to be.
pub fn next_page_notice(cursor: &str) -> String {
    format!("next page: --after {}", shell_word(cursor))
}

/// `text` as one word of a POSIX shell: as it is when that is safe, else in single quotes.
fn shell_word(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@+,=".contains(c));
    if plain {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(limit: &str, after: Option<&str>) -> PageArgs {
        PageArgs {
            limit: limit.to_owned(),
            after: after.map(str::to_owned),
        }
    }

    #[test]
    fn limits_are_whole_numbers_up_to_a_thousand() {
        let page = args(" 7 ", Some("3")).request().unwrap();
        assert_eq!(page, PageRequest::new(7, Some("3".into())));
        for bad in ["0", "1001", "-1", "ten", "", "4294967296"] {
            let err = args(bad, None).request().unwrap_err().to_string();
            assert_eq!(
                err,
                format!("invalid limit `{bad}`: must be a whole number from 1 to 1000")
            );
        }
    }

    #[test]
    fn the_next_page_notice_quotes_what_a_shell_would_expand() {
        assert_eq!(next_page_notice("42"), "next page: --after 42");
        assert_eq!(
            next_page_notice("2026-12-03/gpt-4o-mini"),
            "next page: --after 2026-12-03/gpt-4o-mini"
        );
        assert_eq!(
            next_page_notice("openai/*"),
            "next page: --after 'openai/*'"
        );
        assert_eq!(next_page_notice("it's"), r"next page: --after 'it'\''s'");
    }
}
