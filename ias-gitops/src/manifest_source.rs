//! The reconciler's source of files: [`GitManifestSource`], over [`AsyncFetcher`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ias_core::gitops::reconcile::{FetchedFile, ManifestSource};
use ias_core::gitops::{GitopsSettings, NewGitopsSettings};

use crate::async_fetcher::AsyncFetcher;
use crate::credentials::Credentials;
use crate::fetch::Fetcher;
use crate::source::GitSource;

/// How long a remote head answer serves other organizations on the same
/// repository and ref: one cycle over many organizations that share a
/// repository asks the remote once.
const HEAD_REUSE: Duration = Duration::from_secs(5);

/// A repository URL, a reference and a credentials setting.
type HeadKey = (String, String, String);

/// Files from Git repositories, through a local cache of bare repositories.
pub struct GitManifestSource {
    fetcher: AsyncFetcher,
    /// Recent remote heads, with when they were asked.
    heads: Mutex<HashMap<HeadKey, (Instant, String)>>,
}

impl GitManifestSource {
    /// A source caching repositories under `cache_dir`.
    pub fn new(cache_dir: impl Into<PathBuf>) -> ias_core::Result<Self> {
        Ok(GitManifestSource {
            fetcher: AsyncFetcher::new(Fetcher::new(cache_dir)?),
            heads: Mutex::new(HashMap::new()),
        })
    }

    /// `IAS_GITOPS_CACHE_DIR`, else `$XDG_CACHE_HOME/ias/git`, else
    /// `$HOME/.cache/ias/git`, else `ias-git-cache` in the temporary directory.
    pub fn default_cache_dir() -> PathBuf {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        if let Some(dir) = var("IAS_GITOPS_CACHE_DIR") {
            return PathBuf::from(dir);
        }
        if let Some(dir) = var("XDG_CACHE_HOME") {
            return PathBuf::from(dir).join("ias").join("git");
        }
        match var("HOME") {
            Some(home) => PathBuf::from(home).join(".cache").join("ias").join("git"),
            None => std::env::temp_dir().join("ias-git-cache"),
        }
    }

    fn reused_head(&self, key: &HeadKey) -> Option<String> {
        let heads = self.heads.lock().ok()?;
        let (at, head) = heads.get(key)?;
        (at.elapsed() < HEAD_REUSE).then(|| head.clone())
    }

    /// Asks the remote for the settings' head, and remembers it for a moment.
    async fn ask_head(&self, settings: &GitopsSettings) -> ias_core::Result<String> {
        let (source, credentials) = parts(settings)?;
        let head = self.fetcher.remote_head(&source, &credentials).await?;
        self.remember_head(head_key(settings), &head);
        Ok(head)
    }

    fn remember_head(&self, key: HeadKey, head: &str) {
        if let Ok(mut heads) = self.heads.lock() {
            heads.retain(|_, (at, _)| at.elapsed() < HEAD_REUSE);
            heads.insert(key, (Instant::now(), head.to_owned()));
        }
    }
}

/// What a remembered head is filed under.
fn head_key(settings: &GitopsSettings) -> HeadKey {
    (
        settings.repo_url.clone(),
        settings.git_ref.clone(),
        settings.credentials.clone().unwrap_or_default(),
    )
}

/// The transport's view of an organization's settings.
fn parts(settings: &GitopsSettings) -> ias_core::Result<(GitSource, Credentials)> {
    let source = GitSource::new(&settings.repo_url, &settings.git_ref, &settings.path)?;
    let credentials = match &settings.credentials {
        Some(text) => text.parse::<Credentials>()?,
        None => Credentials::None,
    };
    Ok((source, credentials))
}

/// Checks new settings as the transport will read them: URL (never with
/// credentials), reference, path and credentials setting. Nothing is fetched.
pub fn check_settings(settings: &NewGitopsSettings) -> ias_core::Result<()> {
    GitSource::new(&settings.repo_url, &settings.git_ref, &settings.path)?;
    if let Some(text) = &settings.credentials {
        text.parse::<Credentials>()?;
    }
    Ok(())
}

#[async_trait]
impl ManifestSource for GitManifestSource {
    async fn head(&self, settings: &GitopsSettings) -> ias_core::Result<String> {
        match self.reused_head(&head_key(settings)) {
            Some(head) => Ok(head),
            None => self.ask_head(settings).await,
        }
    }

    async fn fresh_head(&self, settings: &GitopsSettings) -> ias_core::Result<String> {
        self.ask_head(settings).await
    }

    async fn fetch(&self, settings: &GitopsSettings) -> ias_core::Result<FetchedFile> {
        let (source, credentials) = parts(settings)?;
        let file = self.fetcher.fetch_file(&source, &credentials).await?;
        Ok(FetchedFile {
            commit: file.commit,
            content: file.content,
        })
    }

    fn check(&self, settings: &NewGitopsSettings) -> ias_core::Result<()> {
        check_settings(settings)
    }
}
