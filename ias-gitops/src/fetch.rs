//! The blocking fetcher: the cheap remote check and reading one file at a
//! reference, through a local cache.

use std::fmt;
use std::path::{Path, PathBuf};

use git2::{Oid, Repository};

use crate::cache::{self, ReadFailure};
use crate::credentials::{Credentials, Resolved};
use crate::error::{GitError, clean_message};
use crate::remote::{self, FetchFailure};
use crate::source::GitSource;

/// The refspecs fetched to look for a pinned commit that the cache lacks.
const ALL_BRANCHES_AND_TAGS: [&str; 2] = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"];

/// A file read from a repository, and the commit it was read at.
#[derive(Clone, PartialEq, Eq)]
pub struct FetchedFile {
    /// The full 40-hex id of the commit.
    pub commit: String,
    /// The file's bytes, at most [`crate::MAX_FILE_BYTES`].
    pub content: Vec<u8>,
}

impl fmt::Debug for FetchedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FetchedFile")
            .field("commit", &self.commit)
            .field("content_len", &self.content.len())
            .finish()
    }
}

/// Reads files from Git remotes, keeping one bare cache repository per URL.
///
/// Every call blocks (network and disk): from async code use
/// [`crate::AsyncFetcher`]. Each URL's cache repository is created on
/// first use under the cache directory, named by a hash of the URL, and
/// guarded by a lock that holds across threads and processes, so several
/// fetchers may share one cache directory. A damaged cache repository is
/// removed and fetched again.
#[derive(Clone, Debug)]
pub struct Fetcher {
    cache_dir: PathBuf,
}

/// What `fetch_file` wants from the remote.
enum Wanted {
    /// A ref, by full name, and the commit the remote advertised for it.
    Ref { name: String, advertised: Oid },
    /// A pinned commit.
    Commit(Oid),
}

impl Fetcher {
    /// A fetcher keeping its cache repositories in `cache_dir`, created if missing.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Result<Fetcher, GitError> {
        let cache_dir = cache_dir.into();
        std::fs::create_dir_all(&cache_dir).map_err(|e| {
            GitError::git(format!(
                "cannot create cache directory `{}`: {e}",
                cache_dir.display()
            ))
        })?;
        Ok(Fetcher { cache_dir })
    }

    /// The cache directory.
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// Where the cache repository of `url` lives (it may not exist yet).
    pub fn cache_repo_path(&self, url: &str) -> PathBuf {
        self.cache_dir
            .join(format!("{}.git", cache::cache_name(url)))
    }

    fn lock_path(&self, url: &str) -> PathBuf {
        self.cache_dir
            .join(format!("{}.lock", cache::cache_name(url)))
    }

    /// The commit the source's reference points to on the remote, as 40 hex
    /// digits: the cheap check, which lists the remote's refs and downloads
    /// no object (`git ls-remote`). An annotated tag gives the commit it tags.
    ///
    /// A pinned commit is returned as it is, without any network traffic.
    pub fn remote_head(&self, src: &GitSource, creds: &Credentials) -> Result<String, GitError> {
        if let Some(id) = src.pinned_commit() {
            return Ok(id.to_owned());
        }
        let resolved = creds.resolve(src.scheme())?;
        let advertised = remote::list(src, &resolved)?;
        let (_, oid) = remote::pick(src, &advertised)?;
        Ok(oid.to_string())
    }

    /// Reads the source's file at its reference.
    ///
    /// A branch or tag is resolved on the remote first; when the cache
    /// already has that commit nothing is downloaded, else just that ref is
    /// fetched, replacing the local copy even when the remote was force-pushed.
    /// A pinned commit is read from the cache if it is there, else every
    /// branch and tag of the remote is fetched to find it. Files over
    /// [`crate::MAX_FILE_BYTES`] are refused.
    pub fn fetch_file(
        &self,
        src: &GitSource,
        creds: &Credentials,
    ) -> Result<FetchedFile, GitError> {
        let resolved = creds.resolve(src.scheme())?;
        let wanted = match src.pinned_commit() {
            Some(id) => Wanted::Commit(Oid::from_str(id).map_err(GitError::git)?),
            None => {
                let advertised = remote::list(src, &resolved)?;
                let (name, advertised) = remote::pick(src, &advertised)?;
                Wanted::Ref { name, advertised }
            }
        };
        let repo_path = self.cache_repo_path(src.url());
        cache::with_lock(&self.lock_path(src.url()), || {
            let repo = cache::open_or_create(&repo_path)?;
            match read_at(&repo, src, &resolved, &wanted) {
                Err(Attempt::DamagedCache(reason)) => {
                    let repo = cache::recreate(&repo_path, &reason)?;
                    read_at(&repo, src, &resolved, &wanted).map_err(Attempt::into_final)
                }
                result => result.map_err(Attempt::into_final),
            }
        })
    }
}

/// Why one attempt at reading through the cache failed.
enum Attempt {
    /// The cache repository looks damaged.
    DamagedCache(String),
    /// Final.
    Failed(GitError),
}

impl Attempt {
    fn into_final(self) -> GitError {
        match self {
            Attempt::DamagedCache(reason) => GitError::Git {
                reason: format!("the cache repository is damaged: {reason}"),
            },
            Attempt::Failed(err) => err,
        }
    }
}

impl From<FetchFailure> for Attempt {
    fn from(failure: FetchFailure) -> Self {
        match failure {
            FetchFailure::Cache(reason) => Attempt::DamagedCache(reason),
            FetchFailure::Other(err) => Attempt::Failed(err),
        }
    }
}

impl From<ReadFailure> for Attempt {
    fn from(failure: ReadFailure) -> Self {
        match failure {
            ReadFailure::Cache(reason) => Attempt::DamagedCache(reason),
            ReadFailure::File(err) => Attempt::Failed(err),
        }
    }
}

/// Brings the wanted commit into the cache if needed, and reads the file there.
fn read_at(
    repo: &Repository,
    src: &GitSource,
    resolved: &Resolved,
    wanted: &Wanted,
) -> Result<FetchedFile, Attempt> {
    let commit = match wanted {
        Wanted::Ref { name, advertised } => fetch_ref(repo, src, resolved, name, *advertised)?,
        Wanted::Commit(oid) => fetch_commit(repo, src, resolved, *oid)?,
    };
    let content = cache::read_file(repo, commit, src.path())?;
    Ok(FetchedFile {
        commit: commit.to_string(),
        content,
    })
}

fn fetch_ref(
    repo: &Repository,
    src: &GitSource,
    resolved: &Resolved,
    name: &str,
    advertised: Oid,
) -> Result<Oid, Attempt> {
    if let Some(commit) = cache::local_commit(repo, advertised) {
        return Ok(commit);
    }
    let refspec = format!("+{name}:{name}");
    remote::fetch(repo, src, resolved, &[refspec.as_str()])?;
    match cache::ref_commit(repo, name) {
        Ok(Some(commit)) => Ok(commit),
        // The ref went away between listing and fetching.
        Ok(None) => Err(Attempt::Failed(remote::ref_not_found(src))),
        Err(err) => Err(Attempt::DamagedCache(clean_message(err.message()))),
    }
}

fn fetch_commit(
    repo: &Repository,
    src: &GitSource,
    resolved: &Resolved,
    oid: Oid,
) -> Result<Oid, Attempt> {
    if let Some(commit) = cache::local_commit(repo, oid) {
        return Ok(commit);
    }
    remote::fetch(repo, src, resolved, &ALL_BRANCHES_AND_TAGS)?;
    cache::local_commit(repo, oid).ok_or_else(|| Attempt::Failed(remote::ref_not_found(src)))
}
