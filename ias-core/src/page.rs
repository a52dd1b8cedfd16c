//! Keyset pagination: which page of a list to read, and the page that was read.
//!
//! Every list that grows with the data is read one page at a time. A
//! [`PageRequest`] says how many items to read (`limit`, 1 to
//! [`MAX_PAGE_LIMIT`], [`DEFAULT_PAGE_LIMIT`] when not given) and where to
//! start: after the item whose key is the cursor `after`, taken from the
//! previous [`Page::next_after`]. Stores read by key
//! (`WHERE key > after ORDER BY key LIMIT limit + 1`), never by offset, so
//! every page costs the same wherever it is, and rows written meanwhile
//! shift no other row from one page to the next.
//!
//! A cursor is a plain string:
//!
//! | list | cursor | order |
//! |---|---|---|
//! | organizations, users | id, such as `42` | by id |
//! | API keys | id | newest first: the next page has lower ids |
//! | audit entries | id | newest first: the next page has older entries |
//! | allowed models | the model name or pattern | by name |
//! | daily usage | `DAY/MODEL`, such as `2026-12-03/gpt-4o-mini` | by day, then model |
//! | GitOps states | organization id | by organization id |
//!
//! A page that is not the last says so with `next_after`; the last page
//! has `next_after = None`. Lists that leave out what the actor may not
//! read (organizations, GitOps states) can return a page with fewer items
//! than `limit`, even none, and still a `next_after`: walk on until it is
//! `None`.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Items per page when the caller does not say.
pub const DEFAULT_PAGE_LIMIT: u32 = 100;

/// The most items one page may hold.
pub const MAX_PAGE_LIMIT: u32 = 1000;

/// The longest cursor accepted, in bytes.
const MAX_CURSOR_LEN: usize = 512;

/// Which page of a list to read: up to `limit` items after the cursor `after`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRequest {
    /// The most items to return, from 1 to [`MAX_PAGE_LIMIT`].
    pub limit: u32,
    /// Start after the item with this key (a previous page's `next_after`);
    /// `None` for the first page.
    pub after: Option<String>,
}

impl Default for PageRequest {
    fn default() -> Self {
        PageRequest {
            limit: DEFAULT_PAGE_LIMIT,
            after: None,
        }
    }
}

impl PageRequest {
    /// A page of up to `limit` items after `after` (`None`: the first page).
    pub fn new(limit: u32, after: Option<String>) -> Self {
        PageRequest { limit, after }
    }

    /// The first page of up to `limit` items.
    pub fn first(limit: u32) -> Self {
        PageRequest::new(limit, None)
    }

    /// The page that follows `page`, of the same size; `None` after the last page.
    pub fn next<T>(&self, page: &Page<T>) -> Option<PageRequest> {
        page.next_after
            .clone()
            .map(|after| PageRequest::new(self.limit, Some(after)))
    }

    /// The limit, checked: [`Error::InvalidInput`] naming `limit` unless 1 to [`MAX_PAGE_LIMIT`].
    pub fn checked_limit(&self) -> Result<u32> {
        if (1..=MAX_PAGE_LIMIT).contains(&self.limit) {
            Ok(self.limit)
        } else {
            Err(Error::invalid(
                "limit",
                self.limit.to_string(),
                format!("must be a whole number from 1 to {MAX_PAGE_LIMIT}"),
            ))
        }
    }

    /// The cursor read as an id (a positive whole number); `None` for the first page.
    pub fn after_id(&self) -> Result<Option<i64>> {
        self.after
            .as_deref()
            .map(|text| match text.parse::<i64>() {
                Ok(id) if id > 0 && !text.starts_with('+') => Ok(id),
                _ => Err(bad_cursor(text, "expected an id, a positive whole number")),
            })
            .transpose()
    }

    /// The cursor as text (a name); `None` for the first page.
    ///
    /// [`Error::InvalidInput`] naming `after` when it is empty, too long or
    /// holds a control character.
    pub fn after_text(&self) -> Result<Option<&str>> {
        self.after.as_deref().map(checked_text).transpose()
    }

    /// How many rows a store reads for this page: one more than the limit,
    /// which tells whether another page follows.
    pub(crate) fn fetch(&self) -> Result<u32> {
        Ok(self.checked_limit()? + 1)
    }
}

/// A cursor given as text: not empty, not too long, no control character.
pub(crate) fn checked_text(text: &str) -> Result<&str> {
    if text.is_empty() {
        return Err(bad_cursor(text, "must not be empty"));
    }
    if text.len() > MAX_CURSOR_LEN {
        return Err(bad_cursor(text, "is too long to be a cursor"));
    }
    if text.chars().any(char::is_control) {
        return Err(bad_cursor(text, "must not contain control characters"));
    }
    Ok(text)
}

/// An [`Error::InvalidInput`] naming `after`.
pub(crate) fn bad_cursor(text: &str, reason: &str) -> Error {
    Error::invalid("after", text, reason)
}

/// One page of a list, and where the next one starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Page<T> {
    /// The items, in the list's order.
    pub items: Vec<T>,
    /// The cursor of the next page (pass it as [`PageRequest::after`]);
    /// `None` on the last page.
    pub next_after: Option<String>,
}

impl<T> Page<T> {
    /// The page of `rows`, read with one row more than `limit`: that extra
    /// row only says another page follows, whose cursor is the key of the
    /// last row kept, as `key` spells it.
    pub fn from_rows(mut rows: Vec<T>, limit: u32, key: impl Fn(&T) -> String) -> Page<T> {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next_after = if more { rows.last().map(key) } else { None };
        Page {
            items: rows,
            next_after,
        }
    }

    /// The same page with each item converted by `f`.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next_after: self.next_after,
        }
    }

    /// The same page keeping only the items `keep` accepts; the cursor is
    /// unchanged, so the next page starts where this one ended.
    pub fn retain(mut self, keep: impl FnMut(&T) -> bool) -> Page<T> {
        self.items.retain(keep);
        self
    }

    /// Whether this is the last page.
    pub fn is_last(&self) -> bool {
        self.next_after.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked() {
        assert_eq!(PageRequest::default().checked_limit().unwrap(), 100);
        assert_eq!(PageRequest::first(1000).checked_limit().unwrap(), 1000);
        for bad in [0, 1001, u32::MAX] {
            let err = PageRequest::first(bad).checked_limit().unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("invalid limit `{bad}`: must be a whole number from 1 to 1000")
            );
        }
    }

    #[test]
    fn id_cursors_are_positive_whole_numbers() {
        let page = |after: &str| PageRequest::new(10, Some(after.to_owned()));
        assert_eq!(PageRequest::default().after_id().unwrap(), None);
        assert_eq!(page("42").after_id().unwrap(), Some(42));
        for bad in ["0", "-1", "+3", " 4", "x", "", "99999999999999999999"] {
            let err = page(bad).after_id().unwrap_err().to_string();
            assert!(err.starts_with("invalid after `"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn text_cursors_are_short_printable_and_not_empty() {
        let page = |after: &str| PageRequest::new(10, Some(after.to_owned()));
        assert_eq!(page("gpt-4o").after_text().unwrap(), Some("gpt-4o"));
        for bad in [String::new(), "a\nb".to_owned(), "x".repeat(513)] {
            let err = page(&bad).after_text().unwrap_err().to_string();
            assert!(err.starts_with("invalid after `"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn one_extra_row_says_another_page_follows() {
        let last = Page::from_rows(vec![1, 2, 3], 3, i32::to_string);
        assert_eq!(last.items, [1, 2, 3]);
        assert_eq!(last.next_after, None);
        let more = Page::from_rows(vec![1, 2, 3, 4], 3, i32::to_string);
        assert_eq!(more.items, [1, 2, 3]);
        assert_eq!(more.next_after.as_deref(), Some("3"));
        let request = PageRequest::first(3);
        assert_eq!(
            request.next(&more),
            Some(PageRequest::new(3, Some("3".into())))
        );
        assert_eq!(request.next(&last), None);
        let odd = more.retain(|n| n % 2 == 1).map(|n| n * 10);
        assert_eq!(odd.items, [10, 30]);
        assert!(!odd.is_last());
    }
}
