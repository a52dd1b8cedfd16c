//! How ias authenticates to a Git remote: a settings string that names where
//! a secret lives, never the secret itself.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::GitError;
use crate::source::Scheme;

/// The user name sent with an HTTPS token (HTTP basic auth, the token as password).
pub const TOKEN_USERNAME: &str = "x-access-token";

/// The environment variable holding the passphrase of an `ssh-key:` key, if it has one.
pub const SSH_PASSPHRASE_ENV: &str = "IAS_GIT_SSH_PASSPHRASE";

/// The SSH user name when the URL names none.
const DEFAULT_SSH_USER: &str = "git";

/// How to authenticate to a Git remote, parsed from a settings string.
///
/// | setting | meaning |
/// |---|---|
/// | `none` | no credentials (public repositories, `file://`) |
/// | `env:NAME` | an HTTPS token, read from environment variable `NAME` at each fetch |
/// | `token-file:PATH` | an HTTPS token, read from the file at each fetch, whitespace trimmed |
/// | `ssh-key:PATH` | an SSH private key file; a passphrase from `IAS_GIT_SSH_PASSPHRASE` |
/// | `ssh-agent` | the keys of the running SSH agent (`SSH_AUTH_SOCK`) |
///
/// Tokens are sent as HTTP basic auth with the user name `x-access-token`
/// and the token as the password, which GitHub, GitLab, Gitea and Bitbucket
/// accept for access tokens. Reading the secret at each fetch means a
/// rotated token or file is picked up without a restart. `Display` gives
/// back the setting string; neither it nor `Debug` ever holds a secret.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum Credentials {
    /// No credentials.
    #[default]
    None,
    /// An HTTPS token in the named environment variable.
    Env(String),
    /// An HTTPS token in the named file.
    TokenFile(PathBuf),
    /// An SSH private key file.
    SshKey(PathBuf),
    /// The SSH agent.
    SshAgent,
}

impl FromStr for Credentials {
    type Err = GitError;

    fn from_str(setting: &str) -> Result<Self, GitError> {
        let invalid = |shown: &str, reason: &str| GitError::Credentials {
            setting: shown.to_owned(),
            reason: reason.to_owned(),
        };
        match setting {
            "none" => return Ok(Credentials::None),
            "ssh-agent" => return Ok(Credentials::SshAgent),
            _ => {}
        }
        // The value is not repeated in errors: a token pasted here by mistake stays unseen.
        let Some((kind, value)) = setting.split_once(':') else {
            return Err(invalid(
                "?",
                "expected `none`, `env:NAME`, `token-file:PATH`, `ssh-key:PATH` or `ssh-agent`",
            ));
        };
        match kind {
            "env" if is_env_name(value) => Ok(Credentials::Env(value.to_owned())),
            "env" => Err(invalid(
                "env:…",
                "the variable name must be upper-case letters, digits and `_`, not starting with \
                 a digit (a token pasted here by mistake is not repeated)",
            )),
            "token-file" | "ssh-key" if value.is_empty() || value.contains('\0') => {
                Err(invalid(&format!("{kind}:…"), "expected a file path"))
            }
            "token-file" => Ok(Credentials::TokenFile(PathBuf::from(value))),
            "ssh-key" => Ok(Credentials::SshKey(PathBuf::from(value))),
            _ => Err(invalid(
                "?",
                "expected `none`, `env:NAME`, `token-file:PATH`, `ssh-key:PATH` or `ssh-agent`",
            )),
        }
    }
}

impl fmt::Display for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::None => f.write_str("none"),
            Credentials::Env(name) => write!(f, "env:{name}"),
            Credentials::TokenFile(path) => write!(f, "token-file:{}", path.display()),
            Credentials::SshKey(path) => write!(f, "ssh-key:{}", path.display()),
            Credentials::SshAgent => f.write_str("ssh-agent"),
        }
    }
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_uppercase() || c == '_')
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

impl Credentials {
    /// Reads the secret now (for one fetch) and checks that it suits the URL's transport.
    pub(crate) fn resolve(&self, scheme: Scheme) -> Result<Resolved, GitError> {
        let error = |reason: String| GitError::Credentials {
            setting: self.to_string(),
            reason,
        };
        let wants_ssh = matches!(self, Credentials::SshKey(_) | Credentials::SshAgent);
        let wants_token = matches!(self, Credentials::Env(_) | Credentials::TokenFile(_));
        if (wants_ssh && scheme == Scheme::Http) || (wants_token && scheme == Scheme::Ssh) {
            let kind = if wants_ssh { "ssh" } else { "https" };
            return Err(error(format!(
                "these credentials are for {kind} urls, not for this one"
            )));
        }
        match self {
            Credentials::None => Ok(Resolved::None),
            Credentials::Env(name) => read_env(name).map(Resolved::Token).map_err(error),
            Credentials::TokenFile(path) => {
                read_token_file(path).map(Resolved::Token).map_err(error)
            }
            Credentials::SshKey(path) => {
                std::fs::metadata(path).map_err(|e| {
                    error(format!("cannot read key file `{}`: {e}", path.display()))
                })?;
                let passphrase = std::env::var(SSH_PASSPHRASE_ENV)
                    .ok()
                    .filter(|p| !p.is_empty())
                    .map(Secret);
                Ok(Resolved::SshKey {
                    path: path.clone(),
                    passphrase,
                })
            }
            Credentials::SshAgent => Ok(Resolved::SshAgent),
        }
    }
}

fn read_env(name: &str) -> Result<Secret, String> {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => Ok(Secret(value.trim().to_owned())),
        Ok(_) => Err(format!("environment variable `{name}` is empty")),
        Err(std::env::VarError::NotPresent) => {
            Err(format!("environment variable `{name}` is not set"))
        }
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(format!("environment variable `{name}` is not valid UTF-8"))
        }
    }
}

/// The largest token file read; a token is a few hundred bytes at most.
const MAX_TOKEN_FILE_BYTES: u64 = 16 * 1024;

fn read_token_file(path: &Path) -> Result<Secret, String> {
    // A FIFO or a device (`/dev/zero`) would block or never end: only a
    // small regular file is read. The io error names only the failure
    // (never the content), so it may be shown.
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot read token file `{}`: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!(
            "token file `{}` is not a regular file",
            path.display()
        ));
    }
    if meta.len() > MAX_TOKEN_FILE_BYTES {
        return Err(format!(
            "token file `{}` holds {} bytes, more than a token's {MAX_TOKEN_FILE_BYTES}",
            path.display(),
            meta.len()
        ));
    }
    let content = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read token file `{}`: {e}", path.display()))?;
    let token = content.trim();
    if token.is_empty() {
        return Err(format!("token file `{}` is empty", path.display()));
    }
    Ok(Secret(token.to_owned()))
}

/// A secret read for one fetch: `Debug` never shows it.
#[derive(Clone)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Credentials with their secret read, for one fetch.
#[derive(Debug)]
pub(crate) enum Resolved {
    None,
    Token(Secret),
    SshKey {
        path: PathBuf,
        passphrase: Option<Secret>,
    },
    SshAgent,
}

impl Resolved {
    /// The secret a message must never contain, if there is one.
    pub(crate) fn secrets(&self) -> Vec<&str> {
        match self {
            Resolved::Token(token) => vec![token.expose()],
            Resolved::SshKey {
                passphrase: Some(p),
                ..
            } => vec![p.expose()],
            _ => Vec::new(),
        }
    }

    /// One answer to libgit2's credentials callback. `attempt` counts the
    /// secrets already offered for this operation: a second request means the
    /// first was refused, and it is not offered again.
    pub(crate) fn credential(
        &self,
        username_from_url: Option<&str>,
        allowed: git2::CredentialType,
        attempt: u32,
    ) -> Result<git2::Cred, git2::Error> {
        use git2::CredentialType as Kind;
        let user = username_from_url.unwrap_or(DEFAULT_SSH_USER);
        if allowed.contains(Kind::USERNAME)
            && matches!(self, Resolved::SshKey { .. } | Resolved::SshAgent)
        {
            return git2::Cred::username(user);
        }
        if attempt > 0 {
            return Err(auth_error("the remote refused the credentials"));
        }
        match self {
            Resolved::Token(token) if allowed.contains(Kind::USER_PASS_PLAINTEXT) => {
                git2::Cred::userpass_plaintext(TOKEN_USERNAME, token.expose())
            }
            Resolved::SshKey { path, passphrase } if allowed.contains(Kind::SSH_KEY) => {
                git2::Cred::ssh_key(user, None, path, passphrase.as_ref().map(Secret::expose))
            }
            Resolved::SshAgent if allowed.contains(Kind::SSH_KEY) => {
                git2::Cred::ssh_key_from_agent(user)
            }
            Resolved::None => Err(auth_error(
                "the remote asks for credentials and none are set",
            )),
            _ => Err(auth_error(
                "the remote asks for a kind of credentials other than the ones set",
            )),
        }
    }
}

/// A libgit2 error that the fetcher maps to [`GitError::AuthFailed`].
pub(crate) fn auth_error(message: &str) -> git2::Error {
    git2::Error::new(git2::ErrorCode::Auth, git2::ErrorClass::Callback, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip() {
        for setting in [
            "none",
            "env:IAS_GIT_TOKEN",
            "token-file:/run/secrets/git-token",
            "ssh-key:/etc/ias/deploy_key",
            "ssh-agent",
        ] {
            let parsed: Credentials = setting.parse().unwrap();
            assert_eq!(parsed.to_string(), setting);
        }
    }

    #[test]
    fn bad_settings_do_not_repeat_the_value() {
        for setting in [
            "ghp_SECRETVALUE",
            "bearer:ghp_SECRETVALUE",
            "env:ghp-SECRETVALUE",
            "",
        ] {
            let err = setting.parse::<Credentials>().unwrap_err();
            assert!(matches!(err, GitError::Credentials { .. }));
            assert!(!err.to_string().contains("SECRETVALUE"), "{err}");
            assert!(!format!("{err:?}").contains("SECRETVALUE"), "{err:?}");
        }
    }

    #[test]
    fn missing_variable_and_file_are_named() {
        let creds: Credentials = "env:IAS_GITOPS_TEST_UNSET_VARIABLE".parse().unwrap();
        let err = creds.resolve(Scheme::Http).unwrap_err();
        assert!(
            err.to_string()
                .contains("`IAS_GITOPS_TEST_UNSET_VARIABLE` is not set"),
            "{err}"
        );

        let creds: Credentials = "token-file:/nonexistent/ias/token".parse().unwrap();
        let err = creds.resolve(Scheme::Http).unwrap_err();
        assert!(
            err.to_string().contains("`/nonexistent/ias/token`"),
            "{err}"
        );
    }

    #[test]
    fn token_file_is_trimmed_and_hidden_in_debug() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "  SECRETVALUE\n").unwrap();
        let creds = Credentials::TokenFile(path);
        let resolved = creds.resolve(Scheme::Http).unwrap();
        assert_eq!(resolved.secrets(), vec!["SECRETVALUE"]);
        assert!(!format!("{resolved:?}").contains("SECRETVALUE"));
    }

    #[test]
    fn credentials_must_suit_the_transport() {
        let err = Credentials::SshAgent.resolve(Scheme::Http).unwrap_err();
        assert!(err.to_string().contains("for ssh urls"), "{err}");
        let err = Credentials::Env("X".into())
            .resolve(Scheme::Ssh)
            .unwrap_err();
        assert!(err.to_string().contains("for https urls"), "{err}");
    }
}
