//! The one public error type of ias.

/// A shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in ias.
///
/// A denied request is *not* an error: [`crate::Governor::authorize`] returns a
/// [`crate::Decision`]. `Error` is kept for bad input and for failures.
/// Messages are one lowercase line and name the offending field and value in
/// backticks; they never contain a key secret or a password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An input value was rejected before anything was written.
    #[error("invalid {field} `{value}`: {reason}")]
    InvalidInput {
        /// The field or argument that was rejected, such as `email`.
        field: &'static str,
        /// The rejected value, shortened and with control characters escaped.
        value: String,
        /// Why it was rejected.
        reason: String,
    },

    /// A GitOps file was rejected; `errors` lists every problem in it.
    #[error("invalid GitOps file: {}", manifest_summary(.errors))]
    InvalidManifest {
        /// Every problem, each with its line, column and field path.
        errors: crate::gitops::manifest::ManifestErrors,
    },

    /// The named entity does not exist.
    #[error("{entity} `{key}` not found")]
    NotFound {
        /// The kind of entity, such as `organization`.
        entity: &'static str,
        /// The name or id that was looked up.
        key: String,
    },

    /// The change conflicts with what is already stored.
    #[error("{entity} `{key}` {reason}")]
    Conflict {
        /// The kind of entity, such as `user`.
        entity: &'static str,
        /// The name or id that conflicts.
        key: String,
        /// What conflicts, such as `already exists`.
        reason: String,
    },

    /// The change touches a field that an organization's GitOps file owns.
    #[error(
        "{entity} `{key}` is managed by GitOps from {repo_url} at {}; change it there (a system \
         admin may force the change with break-glass)",
        .commit.as_deref().map_or("(not yet applied)", crate::gitops::state::short_commit)
    )]
    GitopsOwned {
        /// The kind of entity, such as `user`.
        entity: &'static str,
        /// The name of what was to change.
        key: String,
        /// The repository that owns it.
        repo_url: String,
        /// The commit last applied from it; `None` before the first apply.
        commit: Option<String>,
    },

    /// The actor may not perform the operation.
    #[error("permission denied: {actor} may not {permission} on {target}")]
    PermissionDenied {
        /// Who tried.
        actor: String,
        /// The permission that was missing.
        permission: String,
        /// What the operation targeted.
        target: String,
    },

    /// A new password breaks complexity rules; the password itself is never shown.
    #[error("weak password: {}", join_rules(.broken))]
    WeakPassword {
        /// Every rule the password breaks, in the order of [`crate::password::check`].
        broken: Vec<crate::password::Rule>,
    },

    /// Hashing or checking a password failed for a reason other than a wrong password.
    #[error("password hashing failed: {reason}")]
    PasswordHashing {
        /// What failed; never the password or its hash.
        reason: String,
    },

    /// A database URL could not be understood or opened.
    #[error("invalid database url `{url}`: {reason}")]
    DatabaseUrl {
        /// The URL with any password removed.
        url: String,
        /// Why it was rejected.
        reason: String,
    },

    /// The operation is not supported by this build or backend, such as
    /// opening a database that a newer ias has migrated.
    #[error("unsupported: {0}")]
    Unsupported(String),

    /// The store could not be reached; retrying later may succeed.
    #[error("{backend} store unavailable: {message}")]
    Unavailable {
        /// The backend, such as `sqlite`.
        backend: &'static str,
        /// What failed.
        message: String,
    },

    /// The store failed in a way retrying will not fix.
    #[error("{backend} store error: {message}")]
    Store {
        /// The backend, such as `sqlite`.
        backend: &'static str,
        /// What failed.
        message: String,
    },
}

impl Error {
    /// Builds an [`Error::InvalidInput`], making the value safe to print.
    pub fn invalid(field: &'static str, value: impl AsRef<str>, reason: impl Into<String>) -> Self {
        Error::InvalidInput {
            field,
            value: printable(value.as_ref()),
            reason: reason.into(),
        }
    }

    /// Builds an [`Error::NotFound`].
    pub fn not_found(entity: &'static str, key: impl Into<String>) -> Self {
        Error::NotFound {
            entity,
            key: key.into(),
        }
    }

    /// Builds an [`Error::Conflict`].
    pub fn conflict(
        entity: &'static str,
        key: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Error::Conflict {
            entity,
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// The stable machine-readable name of the error's kind, such as
    /// `not_found`: what `ias-admin --output json` and the Python exceptions report.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidInput { .. } | Error::InvalidManifest { .. } => "invalid_input",
            Error::NotFound { .. } => "not_found",
            Error::Conflict { .. } | Error::GitopsOwned { .. } => "conflict",
            Error::PermissionDenied { .. } => "permission_denied",
            Error::WeakPassword { .. } => "weak_password",
            Error::PasswordHashing { .. } => "password_hashing",
            Error::DatabaseUrl { .. } => "database_url",
            Error::Unsupported(_) => "unsupported",
            Error::Unavailable { .. } => "unavailable",
            Error::Store { .. } => "store",
        }
    }

    /// Whether retrying the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }

    /// Whether the error was caused by the caller's input rather than a failure.
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            Error::InvalidInput { .. }
                | Error::InvalidManifest { .. }
                | Error::DatabaseUrl { .. }
                | Error::WeakPassword { .. }
        )
    }
}

/// `N error(s)`, then the first one in the file.
fn manifest_summary(errors: &crate::gitops::manifest::ManifestErrors) -> String {
    let count = match errors.len() {
        1 => "1 error".to_owned(),
        n => format!("{n} errors"),
    };
    match errors.first() {
        Some(first) => format!("{count}; the first: {first}"),
        None => count,
    }
}

fn join_rules(rules: &[crate::password::Rule]) -> String {
    let messages: Vec<&str> = rules.iter().map(|rule| rule.message()).collect();
    messages.join("; ")
}

/// Whether `c` is invisible formatting that can disguise text: zero-width
/// characters, bidirectional controls, the byte-order mark.
pub(crate) fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{00ad}'
            | '\u{061c}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206f}'
            | '\u{feff}'
    )
}

/// Escapes control and invisible formatting characters and shortens `value`
/// so that it prints on one line, as it is: how ias quotes a value in a message.
pub fn printable(value: &str) -> String {
    const MAX_CHARS: usize = 80;
    let mut out = String::new();
    for (i, c) in value.chars().enumerate() {
        if i == MAX_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() || is_invisible_format(c) {
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
    fn kinds_are_stable_names() {
        assert_eq!(Error::not_found("user", "a@b.io").kind(), "not_found");
        assert_eq!(Error::invalid("model", "x", "bad").kind(), "invalid_input");
        assert_eq!(Error::Unsupported("x".into()).kind(), "unsupported");
    }

    #[test]
    fn bidi_and_zero_width_characters_are_escaped() {
        assert_eq!(printable("gpt\u{202e}txt"), "gpt\\u{202e}txt");
        assert_eq!(printable("a\u{200b}b"), "a\\u{200b}b");
        assert_eq!(printable("café"), "café");
    }

    #[test]
    fn invalid_input_names_field_and_escaped_value() {
        let err = Error::invalid("model", "gpt\n4", "contains a control character");
        assert_eq!(
            err.to_string(),
            "invalid model `gpt\\n4`: contains a control character"
        );
    }

    #[test]
    fn long_values_are_shortened() {
        let err = Error::invalid("slug", "a".repeat(500), "too long");
        assert!(err.to_string().len() < 120);
    }
}
