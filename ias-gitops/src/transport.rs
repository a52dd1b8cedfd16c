//! Which transports this build of libgit2 supports.

/// The network transports compiled into libgit2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransportSupport {
    /// `https://` (and `http://` to loopback).
    pub https: bool,
    /// `ssh://` and scp-like URLs.
    pub ssh: bool,
}

/// Reports the transports of the linked libgit2, as `git2::Version` tells.
pub fn transport_support() -> TransportSupport {
    let version = git2::Version::get();
    TransportSupport {
        https: version.https(),
        ssh: version.ssh(),
    }
}
