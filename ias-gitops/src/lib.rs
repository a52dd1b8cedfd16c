//! GitOps hybrid mode for ias.
//!
//! An organization's declared state (users, roles, monthly limits, budget,
//! rate limits, allowed models) lives in a YAML file in a Git repository
//! and is reconciled every 30 seconds, while keys, usage and audit stay
//! API-managed. The schema already records which rows GitOps owns
//! (`managed_by`) and the sync state of each organization
//! (`gitops_sync_state`), and ias-core already refuses API writes to fields
//! owned by GitOps.
//!
//! This release holds the Git transport: [`GitSource`] (a validated URL,
//! reference and path), [`Credentials`] (where a token or key lives), and
//! [`Fetcher`] / [`AsyncFetcher`], which check the commit a reference
//! points to without downloading anything and read one file at a
//! reference through a local cache.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ias_gitops::GitError> {
//! use ias_gitops::{AsyncFetcher, Credentials, DEFAULT_FILE, Fetcher, GitSource};
//!
//! let url = "https://git.example.com/platform/ias-config.git";
//! let source = GitSource::new(url, "main", DEFAULT_FILE)?;
//! let creds: Credentials = "env:IAS_GIT_TOKEN".parse()?;
//! let fetcher = AsyncFetcher::new(Fetcher::new("/var/cache/ias/git")?);
//!
//! let head = fetcher.remote_head(&source, &creds).await?;
//! let file = fetcher.fetch_file(&source, &creds).await?;
//! assert_eq!(file.commit, head); // unless a push came in between
//! # Ok(()) }
//! ```

mod async_fetcher;
mod cache;
pub mod credentials;
pub mod error;
pub mod fetch;
mod manifest_source;
mod remote;
pub mod source;
mod timeouts;
mod transport;

pub use async_fetcher::AsyncFetcher;
pub use cache::MAX_FILE_BYTES;
pub use credentials::{Credentials, SSH_PASSPHRASE_ENV, TOKEN_USERNAME};
pub use error::{GitError, redact_url};
pub use fetch::{FetchedFile, Fetcher};
pub use manifest_source::{GitManifestSource, check_settings};
pub use source::{GitSource, Reference};
pub use timeouts::{Timeouts, set_timeouts, timeouts};
pub use transport::{TransportSupport, transport_support};

/// The file read from the repository when none is named.
pub const DEFAULT_FILE: &str = "ias.yaml";

/// How often an enabled organization is reconciled, in seconds.
pub const RECONCILE_INTERVAL_SECS: u64 = 30;
