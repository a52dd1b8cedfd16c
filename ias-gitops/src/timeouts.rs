//! libgit2's network timeouts, which are process-wide.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::error::GitError;

/// How long libgit2 waits on a remote before giving up.
///
/// libgit2 keeps these in process-wide settings, so they apply to every
/// Git operation of the process, whichever [`crate::Fetcher`] runs it. The
/// first fetch applies [`Timeouts::default`] unless [`set_timeouts`] was
/// called before. A zero duration means no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Longest wait for a TCP connection to the server.
    pub connect: Duration,
    /// Longest wait for the server to accept or send any data once connected;
    /// a transfer that keeps moving is never cut.
    pub io: Duration,
}

impl Default for Timeouts {
    /// 10 s to connect, 30 s of silence at most once connected.
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            io: Duration::from_secs(30),
        }
    }
}

/// The timeouts last given to libgit2, if any.
static APPLIED: Mutex<Option<Timeouts>> = Mutex::new(None);

/// Sets libgit2's connect and read/write timeouts for the whole process.
pub fn set_timeouts(timeouts: Timeouts) -> Result<(), GitError> {
    let mut applied = APPLIED.lock().unwrap_or_else(PoisonError::into_inner);
    apply(timeouts)?;
    *applied = Some(timeouts);
    Ok(())
}

/// The timeouts in force for this process's Git operations.
pub fn timeouts() -> Timeouts {
    let applied = APPLIED.lock().unwrap_or_else(PoisonError::into_inner);
    applied.unwrap_or_default()
}

/// Applies the default timeouts unless some were applied already.
pub(crate) fn ensure_applied() -> Result<(), GitError> {
    let mut applied = APPLIED.lock().unwrap_or_else(PoisonError::into_inner);
    if applied.is_none() {
        apply(Timeouts::default())?;
        *applied = Some(Timeouts::default());
    }
    Ok(())
}

fn millis(duration: Duration) -> i32 {
    i32::try_from(duration.as_millis()).unwrap_or(i32::MAX)
}

#[expect(
    unsafe_code,
    reason = "git2 exposes libgit2's timeout settings only as `unsafe fn`"
)]
fn apply(timeouts: Timeouts) -> Result<(), GitError> {
    // SAFETY: each setter writes one `int` that libgit2 reads, without
    // synchronization, when it opens a socket. Writes from this crate are
    // serialized by `APPLIED`, and the defaults are written before this
    // crate's first network operation. A later `set_timeouts` while another
    // thread is connecting can only give that connection the old or the new
    // value of an aligned `int`.
    unsafe {
        git2::opts::set_server_connect_timeout_in_milliseconds(millis(timeouts.connect))
            .map_err(GitError::git)?;
        git2::opts::set_server_timeout_in_milliseconds(millis(timeouts.io))
            .map_err(GitError::git)?;
    }
    Ok(())
}
