//! The cache directory: one bare repository per remote URL, guarded by a
//! lock that holds across threads and processes.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use git2::{ErrorClass, ErrorCode, ObjectType, Oid, Repository};
use sha2::{Digest, Sha256};

use crate::error::{GitError, clean_message};

/// The largest file [`crate::Fetcher::fetch_file`] reads: 1 MiB.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// The name of a URL's cache repository and lock file, without extension:
/// the first 32 hex digits of the SHA-256 of the URL.
pub(crate) fn cache_name(url: &str) -> String {
    let digest = Sha256::digest(url.as_bytes());
    hex::encode(&digest[..16])
}

/// One in-process mutex per lock file, shared by every `Fetcher`.
fn process_lock(lock_path: &Path) -> Arc<Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>> = OnceLock::new();
    let locks = LOCKS.get_or_init(Mutex::default);
    let mut locks = locks.lock().unwrap_or_else(PoisonError::into_inner);
    locks.entry(lock_path.to_owned()).or_default().clone()
}

/// Runs `work` holding the URL's lock: first the in-process mutex, then an
/// exclusive lock on the lock file, which other processes respect.
pub(crate) fn with_lock<T>(
    lock_path: &Path,
    work: impl FnOnce() -> Result<T, GitError>,
) -> Result<T, GitError> {
    let mutex = process_lock(lock_path);
    let _in_process = mutex.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(dir) = lock_path.parent() {
        // The cache directory may have been deleted since the fetcher was made.
        std::fs::create_dir_all(dir)
            .map_err(|e| cache_io_error("cannot create cache directory", dir, &e))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_path)
        .map_err(|e| cache_io_error("cannot open lock file", lock_path, &e))?;
    file.lock()
        .map_err(|e| cache_io_error("cannot lock", lock_path, &e))?;
    let result = work();
    unlock(&file);
    result
}

fn unlock(file: &File) {
    // Closing the file releases the lock too; unlocking first only makes it prompt.
    if let Err(err) = file.unlock() {
        tracing::warn!(error = %err, "cannot unlock a git cache lock file");
    }
}

fn cache_io_error(what: &str, path: &Path, err: &std::io::Error) -> GitError {
    GitError::git(format!("{what} `{}`: {err}", path.display()))
}

/// Opens the bare cache repository at `path`, creating it if it is missing
/// and recreating it if it cannot be opened.
pub(crate) fn open_or_create(path: &Path) -> Result<Repository, GitError> {
    if path.exists() {
        match Repository::open_bare(path) {
            Ok(repo) if repo.is_bare() => return Ok(repo),
            Ok(_) => recreate_warning(path, "not a bare repository"),
            Err(err) => recreate_warning(path, err.message()),
        }
        remove(path)?;
    }
    Repository::init_bare(path).map_err(|e| {
        GitError::git(format!(
            "cannot create cache repository `{}`: {}",
            path.display(),
            e.message()
        ))
    })
}

/// Removes a damaged cache repository, then creates it again, empty.
pub(crate) fn recreate(path: &Path, reason: &str) -> Result<Repository, GitError> {
    recreate_warning(path, reason);
    remove(path)?;
    open_or_create(path)
}

fn recreate_warning(path: &Path, reason: &str) {
    tracing::warn!(
        cache = %path.display(),
        reason = %clean_message(reason),
        "git cache repository is damaged; recreating it"
    );
}

fn remove(path: &Path) -> Result<(), GitError> {
    let removed = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    removed.map_err(|e| cache_io_error("cannot remove damaged cache", path, &e))
}

/// The commit `oid` peels to, if the cache has it.
pub(crate) fn local_commit(repo: &Repository, oid: Oid) -> Option<Oid> {
    repo.find_object(oid, None)
        .and_then(|object| object.peel_to_commit())
        .ok()
        .map(|commit| commit.id())
}

/// The commit a local ref peels to.
pub(crate) fn ref_commit(repo: &Repository, name: &str) -> Result<Option<Oid>, git2::Error> {
    match repo.find_reference(name) {
        Ok(reference) => reference.peel_to_commit().map(|c| Some(c.id())),
        Err(err) if err.code() == ErrorCode::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

/// Why reading a file from the cache failed.
pub(crate) enum ReadFailure {
    /// The cache lacks objects it should have, or is otherwise damaged.
    Cache(String),
    /// The file is missing, not a file, or too large: final.
    File(GitError),
}

impl From<git2::Error> for ReadFailure {
    fn from(err: git2::Error) -> Self {
        ReadFailure::Cache(clean_message(err.message()))
    }
}

/// Reads `path` from the tree of `commit`, refusing anything but a regular
/// file of at most [`MAX_FILE_BYTES`].
pub(crate) fn read_file(
    repo: &Repository,
    commit: Oid,
    path: &str,
) -> Result<Vec<u8>, ReadFailure> {
    let tree = repo.find_commit(commit)?.tree()?;
    let commit = commit.to_string();
    let entry = match tree.get_path(Path::new(path)) {
        Ok(entry) => entry,
        Err(err) if err.code() == ErrorCode::NotFound && err.class() == ErrorClass::Tree => {
            return Err(ReadFailure::File(GitError::FileNotFound {
                path: path.to_owned(),
                commit,
            }));
        }
        Err(err) => return Err(err.into()),
    };
    let not_a_file = |kind| {
        ReadFailure::File(GitError::NotAFile {
            path: path.to_owned(),
            commit: commit.clone(),
            kind,
        })
    };
    match (entry.kind(), entry.filemode()) {
        (Some(ObjectType::Blob), 0o120000) => return Err(not_a_file("symbolic link")),
        (Some(ObjectType::Blob), _) => {}
        (Some(ObjectType::Tree), _) => return Err(not_a_file("directory")),
        (Some(ObjectType::Commit), _) => return Err(not_a_file("submodule")),
        _ => return Err(not_a_file("object of an unknown kind")),
    }
    let (size, _) = repo.odb()?.read_header(entry.id())?;
    let size = u64::try_from(size).unwrap_or(u64::MAX);
    if size > MAX_FILE_BYTES {
        return Err(ReadFailure::File(GitError::FileTooLarge {
            path: path.to_owned(),
            size,
            limit: MAX_FILE_BYTES,
        }));
    }
    Ok(repo.find_blob(entry.id())?.content().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_names_differ_per_url_and_are_stable() {
        let a = cache_name("https://example.com/a.git");
        assert_eq!(a.len(), 32);
        assert_eq!(a, cache_name("https://example.com/a.git"));
        assert_ne!(a, cache_name("https://example.com/b.git"));
    }
}
