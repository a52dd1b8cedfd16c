//! The fetcher for async code: every Git operation on tokio's blocking pool.

use std::sync::Arc;

use crate::credentials::Credentials;
use crate::error::GitError;
use crate::fetch::{FetchedFile, Fetcher};
use crate::source::GitSource;

/// A [`Fetcher`] whose calls run on tokio's blocking pool, never on a
/// runtime worker thread. Cloning is cheap and shares the fetcher.
#[derive(Clone, Debug)]
pub struct AsyncFetcher {
    inner: Arc<Fetcher>,
}

impl AsyncFetcher {
    /// Wraps a fetcher.
    pub fn new(fetcher: Fetcher) -> AsyncFetcher {
        AsyncFetcher {
            inner: Arc::new(fetcher),
        }
    }

    /// The wrapped blocking fetcher.
    pub fn blocking(&self) -> &Fetcher {
        &self.inner
    }

    /// [`Fetcher::remote_head`], on the blocking pool.
    pub async fn remote_head(
        &self,
        src: &GitSource,
        creds: &Credentials,
    ) -> Result<String, GitError> {
        self.run(src, creds, |fetcher, src, creds| {
            fetcher.remote_head(src, creds)
        })
        .await
    }

    /// [`Fetcher::fetch_file`], on the blocking pool.
    pub async fn fetch_file(
        &self,
        src: &GitSource,
        creds: &Credentials,
    ) -> Result<FetchedFile, GitError> {
        self.run(src, creds, |fetcher, src, creds| {
            fetcher.fetch_file(src, creds)
        })
        .await
    }

    async fn run<T, F>(&self, src: &GitSource, creds: &Credentials, work: F) -> Result<T, GitError>
    where
        T: Send + 'static,
        F: FnOnce(&Fetcher, &GitSource, &Credentials) -> Result<T, GitError> + Send + 'static,
    {
        let fetcher = Arc::clone(&self.inner);
        let (src, creds) = (src.clone(), creds.clone());
        tokio::task::spawn_blocking(move || work(&fetcher, &src, &creds))
            .await
            .map_err(|e| GitError::git(format!("the git task did not finish: {e}")))?
    }
}
