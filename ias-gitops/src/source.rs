//! Where an organization's declared state lives: a repository URL, a
//! reference and a file path, validated before any network traffic.

use std::fmt;

use crate::error::{GitError, escape_controls, redact_url};

/// A file in a Git repository at a reference, validated.
///
/// Built by [`GitSource::new`], so a `GitSource` always holds an accepted
/// URL (without credentials), a valid reference and a relative path.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct GitSource {
    url: String,
    reference: Reference,
    path: String,
}

/// What a [`GitSource`]'s reference names.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Reference {
    /// A short name such as `main` or `v1.2`: a branch, else a tag of that name.
    Name(String),
    /// A full ref name such as `refs/heads/main` or `refs/tags/v1`.
    Full(String),
    /// A full 40-hex commit id (lowercase): the source is pinned to it.
    Commit(String),
}

impl Reference {
    /// The reference as written (a commit id in lowercase).
    pub fn as_str(&self) -> &str {
        match self {
            Reference::Name(s) | Reference::Full(s) | Reference::Commit(s) => s,
        }
    }
}

impl GitSource {
    /// Validates a repository URL, a reference and a path inside the repository.
    ///
    /// Accepted URLs: `https://…`, `ssh://[user@]host[:port]/path`, scp-like
    /// `[user@]host:path`, `file://…`, and `http://…` to a loopback host
    /// only. A URL holding a password, or any userinfo in an HTTP(S) URL, is
    /// refused with [`GitError::CredentialsInUrl`], which never repeats the
    /// secret. The reference is a branch or tag name, a full ref name, or a
    /// full 40-hex commit id; the path is relative, without `..`.
    pub fn new(
        url: impl Into<String>,
        reference: impl Into<String>,
        path: impl Into<String>,
    ) -> Result<GitSource, GitError> {
        let url = url.into();
        check_url(&url)?;
        Ok(GitSource {
            url,
            reference: parse_reference(&reference.into())?,
            path: normalize_path(&path.into())?,
        })
    }

    /// The repository URL, as given (it holds no credentials).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The reference.
    pub fn reference(&self) -> &Reference {
        &self.reference
    }

    /// The path of the file inside the repository, `/`-separated, without `.` parts.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The commit id the source is pinned to, if its reference is one.
    pub fn pinned_commit(&self) -> Option<&str> {
        match &self.reference {
            Reference::Commit(id) => Some(id),
            _ => None,
        }
    }

    /// Which kind of transport the URL uses.
    pub(crate) fn scheme(&self) -> Scheme {
        scheme_of(&self.url)
    }

    /// The URL as safe to print: userinfo (an SSH user name) becomes `***`.
    pub(crate) fn url_redacted(&self) -> String {
        redact_url(&self.url)
    }
}

impl fmt::Debug for GitSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitSource")
            .field("url", &redact_url(&self.url))
            .field("reference", &self.reference)
            .field("path", &self.path)
            .finish()
    }
}

/// The transport a URL selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scheme {
    /// `https://`, or `http://` to a loopback host.
    Http,
    /// `ssh://` or scp-like.
    Ssh,
    /// `file://`.
    File,
}

fn scheme_of(url: &str) -> Scheme {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") {
        Scheme::Http
    } else if lower.starts_with("file://") {
        Scheme::File
    } else {
        Scheme::Ssh
    }
}

fn check_url(url: &str) -> Result<(), GitError> {
    let invalid = |reason: &str| GitError::InvalidUrl {
        url: redact_url(url),
        reason: reason.to_owned(),
    };
    if url.is_empty() {
        return Err(invalid("the url is empty"));
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(invalid(
            "the url contains whitespace or a control character",
        ));
    }
    match url.split_once("://") {
        Some((scheme, rest)) => check_scheme_url(url, &scheme.to_ascii_lowercase(), rest),
        None => check_scp_url(url),
    }
}

fn check_scheme_url(url: &str, scheme: &str, rest: &str) -> Result<(), GitError> {
    let invalid = |reason: &str| GitError::InvalidUrl {
        url: redact_url(url),
        reason: reason.to_owned(),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let (userinfo, host_port) = match authority.rfind('@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    };
    let credentials_in_url = || GitError::CredentialsInUrl {
        url_redacted: redact_url(url),
    };
    match scheme {
        "https" | "http" => {
            if userinfo.is_some() {
                return Err(credentials_in_url());
            }
            check_host_port(host_port).map_err(invalid)?;
            if scheme == "http" && !is_loopback(host_port) {
                return Err(invalid(
                    "plain http is accepted only to a loopback host; use https",
                ));
            }
        }
        "ssh" => {
            if userinfo.is_some_and(|user| user.contains(':')) {
                return Err(credentials_in_url());
            }
            check_host_port(host_port).map_err(invalid)?;
        }
        "file" => {
            if userinfo.is_some() || (!host_port.is_empty() && host_port != "localhost") {
                return Err(invalid("a file url names a local path: `file:///path`"));
            }
        }
        _ => {
            return Err(invalid(
                "expected an `https://`, `ssh://`, `user@host:path` or `file://` url",
            ));
        }
    }
    if path.trim_matches('/').is_empty() {
        return Err(invalid("the url names no repository path"));
    }
    Ok(())
}

/// Checks the scp-like form `[user@]host:path`.
fn check_scp_url(url: &str) -> Result<(), GitError> {
    let invalid = |reason: &str| GitError::InvalidUrl {
        url: redact_url(url),
        reason: reason.to_owned(),
    };
    let host_path = match scp_userinfo_end(url) {
        Some(at) => {
            let userinfo = &url[..at];
            if userinfo.contains(':') {
                return Err(GitError::CredentialsInUrl {
                    url_redacted: redact_url(url),
                });
            }
            if userinfo.is_empty() {
                return Err(invalid("the url names an empty user before `@`"));
            }
            &url[at + 1..]
        }
        None => url,
    };
    let Some((host, path)) = host_path.split_once(':') else {
        return Err(invalid(
            "expected an `https://`, `ssh://`, `user@host:path` or `file://` url",
        ));
    };
    if host.is_empty() || host.contains('/') {
        return Err(invalid(
            "expected an `https://`, `ssh://`, `user@host:path` or `file://` url",
        ));
    }
    if path.trim_matches('/').is_empty() {
        return Err(invalid("the url names no repository path"));
    }
    Ok(())
}

/// Where the userinfo of a scp-like URL ends: the last `@` with a `:` after it.
///
/// Taking the last such `@` keeps a password holding `@` or `/` inside the
/// userinfo, so that it is refused and redacted whole.
pub(crate) fn scp_userinfo_end(url: &str) -> Option<usize> {
    url.rmatch_indices('@')
        .map(|(i, _)| i)
        .find(|&i| url[i..].contains(':'))
}

/// Checks `host`, `host:port`, `[v6]` or `[v6]:port`.
fn check_host_port(host_port: &str) -> Result<(), &'static str> {
    let (host, port) = match host_port.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']').ok_or("unclosed `[` in the host")?;
            match after {
                "" => (host, None),
                _ => (host, Some(after.strip_prefix(':').ok_or("junk after `]`")?)),
            }
        }
        None => match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        },
    };
    if host.is_empty() {
        return Err("the url names no host");
    }
    if port.is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) {
        return Err("the port is not a number");
    }
    Ok(())
}

/// Whether `host_port` (`host`, `host:port`, `[v6]` or `[v6]:port`) is a loopback host.
fn is_loopback(host_port: &str) -> bool {
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map_or(v6, |(host, _)| host),
        None => host_port
            .split_once(':')
            .map_or(host_port, |(host, _)| host),
    };
    matches!(
        host.to_ascii_lowercase().as_str(),
        "127.0.0.1" | "::1" | "localhost"
    )
}

fn parse_reference(reference: &str) -> Result<Reference, GitError> {
    let invalid = |reason: &str| GitError::InvalidReference {
        reference: escape_controls(reference),
        reason: reason.to_owned(),
    };
    if reference.is_empty() {
        return Err(invalid("the reference is empty"));
    }
    if reference.len() == 40 && reference.chars().all(|c| c.is_ascii_hexdigit()) {
        return Ok(Reference::Commit(reference.to_ascii_lowercase()));
    }
    if reference.starts_with('-') {
        return Err(invalid("a reference may not start with `-`"));
    }
    // Checked first: git2's name check cannot take a NUL.
    if reference.chars().any(char::is_control) {
        return Err(invalid("the reference contains a control character"));
    }
    if let Some(rest) = reference.strip_prefix("refs/") {
        if rest.is_empty() || !git2::Reference::is_valid_name(reference) {
            return Err(invalid("not a valid git ref name"));
        }
        return Ok(Reference::Full(reference.to_owned()));
    }
    if !git2::Reference::is_valid_name(&format!("refs/heads/{reference}")) {
        return Err(invalid("not a valid git branch or tag name"));
    }
    Ok(Reference::Name(reference.to_owned()))
}

fn normalize_path(path: &str) -> Result<String, GitError> {
    let invalid = |reason: &str| GitError::InvalidPath {
        path: escape_controls(path),
        reason: reason.to_owned(),
    };
    if path.contains('\0') {
        return Err(invalid("the path contains a NUL character"));
    }
    if path.starts_with('/') {
        return Err(invalid("the path must be relative to the repository root"));
    }
    if path.ends_with('/') {
        return Err(invalid("the path names a directory"));
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(invalid("the path may not contain `..`")),
            part => parts.push(part),
        }
    }
    if parts.is_empty() {
        return Err(invalid("the path is empty"));
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url_ok(url: &str) -> bool {
        GitSource::new(url, "main", "ias.yaml").is_ok()
    }

    #[test]
    fn accepted_urls() {
        assert!(url_ok("https://example.com/org/config.git"));
        assert!(url_ok("ssh://git@example.com:2222/org/config.git"));
        assert!(url_ok("ssh://example.com/org/config.git"));
        assert!(url_ok("git@example.com:org/config.git"));
        assert!(url_ok("file:///srv/git/config.git"));
        assert!(url_ok("http://127.0.0.1:8080/config.git"));
        assert!(url_ok("http://[::1]:8080/config.git"));
        assert!(url_ok("http://localhost/config.git"));
    }

    #[test]
    fn refused_urls() {
        for url in [
            "",
            "http://example.com/config.git",
            "http://127.0.0.2/config.git",
            "git://example.com/config.git",
            "/srv/git/config.git",
            "ftp://example.com/config.git",
            "https:///config.git",
            "https://example.com",
            "git@example.com:",
            "https://example.com/a b.git",
            "file://otherhost/srv/config.git",
        ] {
            let err = GitSource::new(url, "main", "ias.yaml").unwrap_err();
            assert!(matches!(err, GitError::InvalidUrl { .. }), "{url}: {err:?}");
        }
    }

    #[test]
    fn plain_http_to_a_remote_host_says_to_use_https() {
        let err = GitSource::new("http://example.com/c.git", "main", "ias.yaml").unwrap_err();
        assert!(err.to_string().contains("use https"), "{err}");
    }

    #[test]
    fn credentials_in_urls_are_refused_without_repeating_them() {
        for (url, secret) in [
            (
                "https://ghp_SECRETTOKEN@example.com/c.git",
                "ghp_SECRETTOKEN",
            ),
            ("https://user:SECRETPASS@example.com/c.git", "SECRETPASS"),
            ("http://user:SECRETPASS@127.0.0.1/c.git", "SECRETPASS"),
            ("ssh://git:SECRETPASS@example.com/c.git", "SECRETPASS"),
            ("git:SECRETPASS@example.com:org/c.git", "SECRETPASS"),
        ] {
            let err = GitSource::new(url, "main", "ias.yaml").unwrap_err();
            assert!(matches!(err, GitError::CredentialsInUrl { .. }), "{err:?}");
            assert!(!err.to_string().contains(secret), "{err}");
            assert!(!format!("{err:?}").contains(secret), "{err:?}");
            let core = ias_core::Error::from(err);
            assert!(!core.to_string().contains(secret), "{core}");
        }
    }

    #[test]
    fn references() {
        let source = |r: &str| GitSource::new("https://h/c.git", r, "ias.yaml");
        assert_eq!(
            source("main").unwrap().reference(),
            &Reference::Name("main".into())
        );
        assert_eq!(
            source("refs/tags/v1").unwrap().reference(),
            &Reference::Full("refs/tags/v1".into())
        );
        let id = "0123456789ABCDEF0123456789abcdef01234567";
        assert_eq!(
            source(id).unwrap().pinned_commit(),
            Some("0123456789abcdef0123456789abcdef01234567")
        );
        for bad in [
            "",
            "a..b",
            "-x",
            "main.lock",
            "a b",
            "refs/",
            "x~1",
            "x^{}",
            "a\0b",
        ] {
            assert!(
                matches!(source(bad), Err(GitError::InvalidReference { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn paths() {
        let path =
            |p: &str| GitSource::new("https://h/c.git", "main", p).map(|s| s.path().to_owned());
        assert_eq!(path("ias.yaml").unwrap(), "ias.yaml");
        assert_eq!(path("./org/ias.yaml").unwrap(), "org/ias.yaml");
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "a/", "a\0b", "."] {
            assert!(
                matches!(path(bad), Err(GitError::InvalidPath { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn debug_shows_no_userinfo() {
        let source = GitSource::new("git@example.com:org/c.git", "main", "ias.yaml").unwrap();
        assert!(!format!("{source:?}").contains("git@"));
    }
}
