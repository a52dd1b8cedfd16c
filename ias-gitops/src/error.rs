//! The error of the Git transport, and the one place where libgit2 errors
//! become it.

use std::fmt;

/// What went wrong while validating a source or talking to a Git remote.
///
/// Messages are one lowercase line. A URL in a message never carries
/// userinfo (it is replaced by `***`), and no message holds a token, a
/// password or a passphrase.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GitError {
    /// The repository URL is not one ias accepts.
    #[error("invalid git url `{url}`: {reason}")]
    InvalidUrl {
        /// The URL, with any userinfo replaced by `***`.
        url: String,
        /// Why it was rejected.
        reason: String,
    },

    /// The repository URL carries a user name with a password, or an HTTP(S)
    /// user name or token; secrets belong in a [`crate::Credentials`] setting.
    #[error(
        "git url `{url_redacted}` carries credentials: remove them from the url and \
         name them in a credentials setting such as `env:NAME`"
    )]
    CredentialsInUrl {
        /// The URL with its userinfo replaced by `***`.
        url_redacted: String,
    },

    /// The reference is not a branch, tag, full ref name or full commit id.
    #[error("invalid git reference `{reference}`: {reason}")]
    InvalidReference {
        /// The rejected reference, with control characters escaped.
        reference: String,
        /// Why it was rejected.
        reason: String,
    },

    /// The file path is not a relative path inside the repository.
    #[error("invalid path `{path}` in the git repository: {reason}")]
    InvalidPath {
        /// The rejected path, with control characters escaped.
        path: String,
        /// Why it was rejected.
        reason: String,
    },

    /// A credentials setting could not be parsed or its secret could not be read.
    #[error("git credentials `{setting}`: {reason}")]
    Credentials {
        /// The setting, such as `env:GIT_TOKEN`: it names where the secret
        /// lives, never the secret; `?` when the setting itself was not understood.
        setting: String,
        /// What is wrong, naming the variable or file, never its content.
        reason: String,
    },

    /// The remote could not be reached, or the connection failed or timed out.
    #[error("cannot reach git remote `{url}`: {reason}")]
    Unreachable {
        /// The remote's URL, with any userinfo replaced by `***`.
        url: String,
        /// What failed.
        reason: String,
    },

    /// The remote refused the credentials, or asked for some and none were set.
    #[error("authentication to git remote `{url}` failed: {reason}")]
    AuthFailed {
        /// The remote's URL, with any userinfo replaced by `***`.
        url: String,
        /// What the remote or the credentials callback said.
        reason: String,
    },

    /// The remote has no such branch, tag or ref, or no such commit.
    #[error("git reference `{reference}` not found in `{url}`")]
    RefNotFound {
        /// The remote's URL, with any userinfo replaced by `***`.
        url: String,
        /// The reference that was looked up.
        reference: String,
    },

    /// The commit's tree has nothing at the path.
    #[error("file `{path}` not found at commit `{commit}`")]
    FileNotFound {
        /// The path inside the repository.
        path: String,
        /// The commit whose tree was read.
        commit: String,
    },

    /// The path names a directory, a symbolic link or a submodule.
    #[error("`{path}` at commit `{commit}` is a {kind}, not a regular file")]
    NotAFile {
        /// The path inside the repository.
        path: String,
        /// The commit whose tree was read.
        commit: String,
        /// What the path is, such as `directory`.
        kind: &'static str,
    },

    /// The file is larger than [`crate::MAX_FILE_BYTES`].
    #[error("file `{path}` is {size} bytes, over the limit of {limit} bytes")]
    FileTooLarge {
        /// The path inside the repository.
        path: String,
        /// The file's size in bytes.
        size: u64,
        /// The limit in bytes.
        limit: u64,
    },

    /// Anything else: the local cache, libgit2 itself, a background task.
    #[error("git error: {reason}")]
    Git {
        /// What failed.
        reason: String,
    },
}

impl GitError {
    /// Whether trying again later may succeed (the remote was down, or a
    /// rotated credential may be read on the next attempt).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            GitError::Unreachable { .. } | GitError::AuthFailed { .. }
        )
    }

    /// Builds [`GitError::Git`] from any message, made safe to print.
    pub(crate) fn git(reason: impl fmt::Display) -> Self {
        GitError::Git {
            reason: clean_message(&reason.to_string()),
        }
    }
}

/// The backend name used in [`ias_core::Error`].
const BACKEND: &str = "git";

impl From<GitError> for ias_core::Error {
    fn from(err: GitError) -> Self {
        use ias_core::Error;
        let message = err.to_string();
        match err {
            GitError::InvalidUrl { url, reason } => Error::invalid("git url", url, reason),
            GitError::CredentialsInUrl { url_redacted } => Error::invalid(
                "git url",
                url_redacted,
                "credentials in the url are refused; name them in a credentials setting",
            ),
            GitError::InvalidReference { reference, reason } => {
                Error::invalid("git reference", reference, reason)
            }
            GitError::InvalidPath { path, reason } => Error::invalid("git path", path, reason),
            GitError::Credentials { setting, reason } => {
                Error::invalid("git credentials", setting, reason)
            }
            GitError::FileTooLarge { path, size, limit } => Error::invalid(
                "git file",
                path,
                format!("{size} bytes, over the limit of {limit} bytes"),
            ),
            GitError::NotAFile { path, commit, kind } => Error::invalid(
                "git file",
                path,
                format!("a {kind} at commit `{commit}`, not a regular file"),
            ),
            GitError::Unreachable { .. } | GitError::AuthFailed { .. } => Error::Unavailable {
                backend: BACKEND,
                message,
            },
            GitError::RefNotFound { reference, .. } => Error::not_found("git reference", reference),
            GitError::FileNotFound { path, .. } => Error::not_found("git file", path),
            GitError::Git { .. } => Error::Store {
                backend: BACKEND,
                message,
            },
        }
    }
}

/// `url` with any userinfo replaced by `***`, and control characters escaped.
///
/// Works on `scheme://userinfo@host/…` and on the scp-like `userinfo@host:path`.
pub fn redact_url(url: &str) -> String {
    let url = escape_controls(url);
    if let Some((scheme, rest)) = url.split_once("://") {
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        return match authority.rfind('@') {
            Some(at) => format!("{scheme}://***{}{tail}", &authority[at..]),
            None => url.clone(),
        };
    }
    match crate::source::scp_userinfo_end(&url) {
        Some(at) => format!("***{}", &url[at..]),
        None => url,
    }
}

/// A libgit2 (or any) message made safe to print on one line: userinfo in
/// every `scheme://` URL it contains is replaced by `***`, control
/// characters become spaces, and a final period goes.
pub(crate) fn clean_message(message: &str) -> String {
    let one_line: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let redacted = redact_urls_in(one_line.trim());
    redacted.trim_end_matches('.').to_owned()
}

/// Replaces the userinfo of every `scheme://userinfo@host` in free text.
fn redact_urls_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (before, after) = rest.split_at(i + 3);
        out.push_str(before);
        let authority_end = after
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace() || c == '\'')
            .unwrap_or(after.len());
        let authority = &after[..authority_end];
        match authority.rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &after[authority_end..];
    }
    out.push_str(rest);
    out
}

/// Escapes control characters so that `value` prints on one line.
pub(crate) fn escape_controls(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_redacted_in_urls() {
        assert_eq!(
            redact_url("https://u:pw@example.com/org.git"),
            "https://***@example.com/org.git"
        );
        assert_eq!(redact_url("https://tok@h/a@b"), "https://***@h/a@b");
        assert_eq!(
            redact_url("git:pw@example.com:org/repo"),
            "***@example.com:org/repo"
        );
        assert_eq!(redact_url("https://example.com/x"), "https://example.com/x");
    }

    #[test]
    fn messages_lose_userinfo_newlines_and_final_period() {
        let cleaned = clean_message("failed to reach https://me:s3cret@h/x.git\nbad.");
        assert_eq!(cleaned, "failed to reach https://***@h/x.git bad");
        assert!(!cleaned.contains("s3cret"));
    }

    #[test]
    fn core_error_kinds() {
        let unreachable = GitError::Unreachable {
            url: "https://h/x".into(),
            reason: "timed out".into(),
        };
        let core: ias_core::Error = unreachable.into();
        assert!(core.is_retryable());

        let missing = GitError::FileNotFound {
            path: "ias.yaml".into(),
            commit: "abc".into(),
        };
        assert_eq!(ias_core::Error::from(missing).kind(), "not_found");

        let bad = GitError::CredentialsInUrl {
            url_redacted: "https://***@h/x".into(),
        };
        let core = ias_core::Error::from(bad);
        assert!(core.is_invalid_input());
        assert!(core.to_string().contains("git url"));
    }
}
