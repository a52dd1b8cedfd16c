//! Talking to a remote through libgit2: listing its refs, fetching into a
//! cache repository, and turning libgit2's errors into [`GitError`].

use std::cell::Cell;

use git2::{
    AutotagOption, Direction, ErrorClass, ErrorCode, FetchOptions, Oid, RemoteCallbacks,
    RemoteRedirect,
};

use crate::credentials::Resolved;
use crate::error::{GitError, clean_message};
use crate::source::{GitSource, Reference};
use crate::timeouts;

/// What the credentials callback did during one operation.
#[derive(Default)]
struct AuthState {
    /// Secrets offered so far.
    offered: Cell<u32>,
    /// Whether the callback refused to answer (nothing suitable, or a retry).
    refused: Cell<bool>,
}

fn callbacks<'a>(
    src: &'a GitSource,
    resolved: &'a Resolved,
    auth: &'a AuthState,
) -> RemoteCallbacks<'a> {
    let mut callbacks = RemoteCallbacks::new();
    callbacks.credentials(move |url, username_from_url, allowed| {
        // A server may redirect elsewhere: credentials go only to the
        // configured repository's own scheme, host and port.
        if !same_origin(url, src.url()) {
            auth.refused.set(true);
            return Err(git2::Error::from_str(
                "credentials are sent only to the configured repository's host",
            ));
        }
        let result = resolved.credential(username_from_url, allowed, auth.offered.get());
        match &result {
            Ok(_) if allowed != git2::CredentialType::USERNAME => {
                auth.offered.set(auth.offered.get() + 1);
            }
            Ok(_) => {}
            Err(_) => auth.refused.set(true),
        }
        result
    });
    callbacks
}

/// Whether `url` (what libgit2 asks credentials for) has the scheme, host and
/// port of `configured`; user names are ignored. URLs without `://` (the
/// scp-like `git@host:path`) are compared by the host before `:`.
fn same_origin(url: &str, configured: &str) -> bool {
    origin(url).is_some_and(|origin| Some(origin) == self::origin(configured))
}

/// `scheme://host[:port]`, lowercase, without the user, for URLs with a scheme;
/// `host` for scp-like ones.
fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
        None => {
            let (authority, _) = url.split_once(':')?;
            let host = authority.rsplit('@').next()?;
            return Some(host.to_ascii_lowercase());
        }
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit('@').next()?;
    Some(format!("{scheme}://{}", host.to_ascii_lowercase()))
}

/// A ref as the remote advertises it.
pub(crate) struct Advertised {
    name: String,
    oid: Oid,
}

/// Lists the remote's refs without downloading any object (`git ls-remote`).
pub(crate) fn list(src: &GitSource, resolved: &Resolved) -> Result<Vec<Advertised>, GitError> {
    timeouts::ensure_applied()?;
    let mut remote =
        git2::Remote::create_detached(src.url()).map_err(|e| GitError::InvalidUrl {
            url: src.url_redacted(),
            reason: clean_message(e.message()),
        })?;
    let auth = AuthState::default();
    let connection = remote
        .connect_auth(
            Direction::Fetch,
            Some(callbacks(src, resolved, &auth)),
            None,
        )
        .map_err(|e| network_error(src, resolved, &auth, &e))?;
    let heads = connection
        .list()
        .map_err(|e| network_error(src, resolved, &auth, &e))?;
    Ok(heads
        .iter()
        .map(|head| Advertised {
            name: head.name().to_owned(),
            oid: head.oid(),
        })
        .collect())
}

/// Picks the source's reference among the advertised refs: its full name
/// and the commit it points to (peeled, for an annotated tag).
///
/// A short name is looked up as a branch first, then as a tag.
pub(crate) fn pick(src: &GitSource, advertised: &[Advertised]) -> Result<(String, Oid), GitError> {
    let candidates = match src.reference() {
        Reference::Name(name) => vec![format!("refs/heads/{name}"), format!("refs/tags/{name}")],
        Reference::Full(name) => vec![name.clone()],
        Reference::Commit(id) => {
            let oid = Oid::from_str(id).map_err(GitError::git)?;
            return Ok((id.clone(), oid));
        }
    };
    let find = |name: &str| advertised.iter().find(|a| a.name == name).map(|a| a.oid);
    for name in candidates {
        if let Some(oid) = find(&name) {
            let peeled = find(&format!("{name}^{{}}")).unwrap_or(oid);
            return Ok((name, peeled));
        }
    }
    Err(ref_not_found(src))
}

pub(crate) fn ref_not_found(src: &GitSource) -> GitError {
    GitError::RefNotFound {
        url: src.url_redacted(),
        reference: src.reference().as_str().to_owned(),
    }
}

/// Why a fetch into the cache failed.
pub(crate) enum FetchFailure {
    /// The cache repository itself looks damaged: recreate it and try again.
    Cache(String),
    /// Anything else, final.
    Other(GitError),
}

/// Fetches `refspecs` from the source's remote into `repo`, force-updating
/// local refs, without tags beyond those named.
pub(crate) fn fetch(
    repo: &git2::Repository,
    src: &GitSource,
    resolved: &Resolved,
    refspecs: &[&str],
) -> Result<(), FetchFailure> {
    timeouts::ensure_applied().map_err(FetchFailure::Other)?;
    let mut remote = repo
        .remote_anonymous(src.url())
        .map_err(|e| FetchFailure::Cache(clean_message(e.message())))?;
    let auth = AuthState::default();
    let mut options = FetchOptions::new();
    options
        .remote_callbacks(callbacks(src, resolved, &auth))
        // Objects come from the configured repository only, never from where it redirects.
        .follow_redirects(RemoteRedirect::None)
        .download_tags(AutotagOption::None)
        .update_fetchhead(false);
    remote
        .fetch(refspecs, Some(&mut options), None)
        .map_err(|e| {
            if is_cache_error(&e) && !auth.refused.get() {
                FetchFailure::Cache(clean_message(e.message()))
            } else {
                FetchFailure::Other(network_error(src, resolved, &auth, &e))
            }
        })
}

/// Whether a libgit2 error comes from the local object database or refs
/// rather than from the network or the remote.
pub(crate) fn is_cache_error(err: &git2::Error) -> bool {
    matches!(
        err.class(),
        ErrorClass::Odb
            | ErrorClass::Object
            | ErrorClass::Reference
            | ErrorClass::Zlib
            | ErrorClass::Index
            | ErrorClass::Tree
    )
}

/// Maps an error of a network operation: an authentication failure, or an
/// unreachable remote. No secret of `resolved` survives in the message.
fn network_error(
    src: &GitSource,
    resolved: &Resolved,
    auth: &AuthState,
    err: &git2::Error,
) -> GitError {
    let mut reason = clean_message(err.message());
    for secret in resolved.secrets() {
        reason = reason.replace(secret, "***");
    }
    if auth.refused.get() || err.code() == ErrorCode::Auth {
        GitError::AuthFailed {
            url: src.url_redacted(),
            reason,
        }
    } else {
        GitError::Unreachable {
            url: src.url_redacted(),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_compare_scheme_host_and_port_without_the_user() {
        let configured = "https://git.example.com/acme/ias.git";
        assert!(same_origin(
            "https://git.example.com/acme/ias.git/info/refs",
            configured
        ));
        assert!(same_origin("https://bot@GIT.example.com/other", configured));
        assert!(!same_origin(
            "https://git.example.com:8443/acme/ias.git",
            configured
        ));
        assert!(!same_origin(
            "http://git.example.com/acme/ias.git",
            configured
        ));
        assert!(!same_origin(
            "https://evil.example/acme/ias.git",
            configured
        ));
        assert!(!same_origin(
            "https://git.example.com.evil.example/x",
            configured
        ));
        assert!(same_origin(
            "git@git.example.com:acme/ias.git",
            "git@git.example.com:other.git"
        ));
        assert!(!same_origin(
            "git@evil.example:acme/ias.git",
            "git@git.example.com:acme.git"
        ));
    }
}
