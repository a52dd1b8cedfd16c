//! Exit codes that scripts can rely on.

use std::process::ExitCode;

/// How `ias-admin` ended, as its process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The command succeeded; for `authorize`, the request would be allowed.
    Success = 0,
    /// The operation failed: not found, conflict, database unavailable; a broken audit chain.
    Failure = 1,
    /// The command line or one of its values was invalid; nothing was written.
    Usage = 2,
    /// `authorize` only: the request would be denied.
    Denied = 3,
}

/// The exit codes, as listed at the end of `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success (authorize: the request would be allowed)
  1  the operation failed: not found, conflict, database unavailable;
     audit verify: the audit log's hash chain is broken
  2  usage error: bad command line or invalid value; nothing was written
  3  authorize: the request would be denied";

/// The exit codes of `ias-admin gitops`, where 2 also means "there are changes".
pub const GITOPS_EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success; status: every organization shown is synced; plan, drift: nothing to change
  1  the operation failed (for plan and drift: any error); status, sync: not synced
  2  plan, drift: there are changes; other commands: bad command line or invalid value";

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}
