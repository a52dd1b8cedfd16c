//! Database URLs, as given on command lines and in environment variables.

use std::fmt;
use std::path::PathBuf;

use crate::error::{Error, Result};

/// A parsed database URL: which store to open, and where.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `sqlite://PATH` (relative) or `sqlite:///PATH` (absolute).
    Sqlite {
        /// The database file; created on first use.
        path: PathBuf,
    },
    /// `sqlite::memory:`: a private in-memory database, gone when closed.
    SqliteMemory,
    /// `postgres://…` or `postgresql://…`.
    Postgres {
        /// The URL as given (it may hold a password; see `Debug`).
        url: String,
    },
}

impl DatabaseUrl {
    /// Parses a URL, rejecting anything ias cannot open.
    pub fn parse(url: &str) -> Result<Self> {
        let reject = |reason: &str| Error::DatabaseUrl {
            url: redact(url),
            reason: reason.to_owned(),
        };
        if url == "sqlite::memory:" {
            return Ok(DatabaseUrl::SqliteMemory);
        }
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(reject("no file path after `sqlite://`"));
            }
            if path == ":memory:" || path.starts_with("file:") {
                return Err(reject("for an in-memory database write `sqlite::memory:`"));
            }
            if path.contains('?') {
                return Err(reject("query parameters are not supported"));
            }
            if path.chars().any(char::is_control) {
                return Err(reject("the path contains a control character"));
            }
            return Ok(DatabaseUrl::Sqlite {
                path: PathBuf::from(path),
            });
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(DatabaseUrl::Postgres {
                url: url.to_owned(),
            });
        }
        Err(reject(
            "expected `sqlite://PATH`, `sqlite::memory:` or `postgres://…`",
        ))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::Sqlite { path } => write!(f, "Sqlite({})", path.display()),
            DatabaseUrl::SqliteMemory => f.write_str("SqliteMemory"),
            DatabaseUrl::Postgres { url } => write!(f, "Postgres({})", redact(url)),
        }
    }
}

/// `url` with any password replaced by `***`, safe to print.
///
/// A password is what follows a second `:` before the last `@`, whatever
/// the slashes after the scheme (`postgres://u:pw@h`, `postgres:/u:pw@h`,
/// `sqlite://u:pw@/path`); `password=` query parameters are hidden too.
pub fn redact(url: &str) -> String {
    let printable = redact_query(&crate::error::printable(url));
    let Some(at) = printable.rfind('@') else {
        return printable;
    };
    let (before, after) = printable.split_at(at);
    let scheme_end = before.find(':').map_or(0, |i| i + 1);
    match before.get(scheme_end..).and_then(|rest| rest.rfind(':')) {
        Some(i) => format!("{}:***{after}", &before[..scheme_end + i]),
        None => printable,
    }
}

/// Replaces the value of any `password=` query parameter with `***`.
fn redact_query(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let params: Vec<String> = query
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((name, _)) if name.eq_ignore_ascii_case("password") => format!("{name}=***"),
            _ => param.to_owned(),
        })
        .collect();
    format!("{base}?{}", params.join("&"))
}

/// A repository URL without what could be a secret: its user info, query
/// and fragment (a Git URL's credentials may sit in any of them), safe to
/// print. [`redact`] keeps a user name and the query's harmless fields, for
/// database URLs.
pub fn without_secrets(url: &str) -> String {
    let url = url.split(['?', '#']).next().unwrap_or("");
    let printable = crate::error::printable(url);
    match printable.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority
                .rsplit_once('@')
                .map_or(authority, |(_, host)| host);
            let hidden = if host.len() < authority.len() {
                "***@"
            } else {
                ""
            };
            format!("{scheme}://{hidden}{host}{path}")
        }
        None => printable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_urls_are_printed_without_user_info_query_or_fragment() {
        assert_eq!(
            without_secrets("https://bot:s3cret@git.example/org/repo.git?token=t#x"),
            "https://***@git.example/org/repo.git"
        );
        assert_eq!(
            without_secrets("https://git.example/org/repo.git"),
            "https://git.example/org/repo.git"
        );
    }

    #[test]
    fn sqlite_paths() {
        assert_eq!(
            DatabaseUrl::parse("sqlite://./ias.db").unwrap(),
            DatabaseUrl::Sqlite {
                path: "./ias.db".into()
            }
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite:///var/lib/ias.db").unwrap(),
            DatabaseUrl::Sqlite {
                path: "/var/lib/ias.db".into()
            }
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite::memory:").unwrap(),
            DatabaseUrl::SqliteMemory
        );
    }

    #[test]
    fn bad_urls_never_show_the_password() {
        let err = DatabaseUrl::parse("mysql://ias:hunter2@db/ias")
            .unwrap_err()
            .to_string();
        assert!(err.contains("mysql://ias:***@db/ias"), "{err}");
        assert!(!err.contains("hunter2"));
        assert!(DatabaseUrl::parse("sqlite://").is_err());
        assert!(DatabaseUrl::parse("sqlite://:memory:").is_err());
        assert!(DatabaseUrl::parse("sqlite://file::memory:").is_err());
        assert!(DatabaseUrl::parse("").is_err());
        let shown = format!(
            "{:?}",
            DatabaseUrl::parse("postgres://u:secret@h/d").unwrap()
        );
        assert!(!shown.contains("secret"));
        for (url, shown) in [
            ("postgres:/u:s3cr3t@h/d", "postgres:/u:***@h/d"),
            ("sqlite://u:s3cr3t@/tmp/x.db", "sqlite://u:***@/tmp/x.db"),
            ("postgres://h/d", "postgres://h/d"),
        ] {
            assert_eq!(redact(url), shown);
        }
        let query = redact("postgres://h/d?user=u&password=hunter2&sslmode=require");
        assert_eq!(query, "postgres://h/d?user=u&password=***&sslmode=require");
    }
}
