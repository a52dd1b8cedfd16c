//! The Git transport against real repositories, over `file://` and over
//! git's smart HTTP protocol on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use ias_gitops::{
    AsyncFetcher, Credentials, Fetcher, GitError, GitSource, MAX_FILE_BYTES, transport_support,
};
use support::{GitHttpServer, Upstream, closed_port};

const FILE: &str = "ias.yaml";

fn fetcher() -> (tempfile::TempDir, Fetcher) {
    let dir = tempfile::tempdir().unwrap();
    let fetcher = Fetcher::new(dir.path().join("cache")).unwrap();
    (dir, fetcher)
}

fn source(url: &str, reference: &str) -> GitSource {
    GitSource::new(url, reference, FILE).unwrap()
}

#[test]
fn file_url_fetch_reads_the_file_at_the_branch_tip() {
    let upstream = Upstream::new();
    let commit = upstream.commit_and_push(FILE, b"org: alpha\n");
    let (_dir, fetcher) = fetcher();
    let src = source(&upstream.file_url(), "main");

    let file = fetcher.fetch_file(&src, &Credentials::None).unwrap();
    assert_eq!(file.content, b"org: alpha\n");
    assert_eq!(file.commit, commit);
    assert_eq!(
        fetcher.remote_head(&src, &Credentials::None).unwrap(),
        commit
    );
}

#[test]
fn smart_http_fetch_reads_the_file() {
    let upstream = Upstream::new();
    let commit = upstream.commit_and_push("orgs/alpha.yaml", b"org: alpha\n");
    let server = GitHttpServer::start(&upstream.project_root());
    let (_dir, fetcher) = fetcher();
    let src = GitSource::new(server.url(), "main", "orgs/alpha.yaml").unwrap();

    let file = fetcher.fetch_file(&src, &Credentials::None).unwrap();
    assert_eq!(file.content, b"org: alpha\n");
    assert_eq!(file.commit, commit);
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.starts_with("POST /org.git/git-upload-pack")),
        "{:?}",
        server.requests()
    );
}

#[test]
fn remote_head_downloads_nothing_and_follows_new_commits() {
    let upstream = Upstream::new();
    let first = upstream.commit_and_push(FILE, b"v: 1\n");
    let server = GitHttpServer::start(&upstream.project_root());
    let (_dir, fetcher) = fetcher();
    let src = source(&server.url(), "main");

    assert_eq!(
        fetcher.remote_head(&src, &Credentials::None).unwrap(),
        first
    );
    // Only the ref advertisement was asked for, and no cache repository was made.
    let requests = server.requests();
    assert!(
        requests.iter().all(|r| r.starts_with("GET ")),
        "{requests:?}"
    );
    assert_eq!(std::fs::read_dir(fetcher.cache_dir()).unwrap().count(), 0);

    let second = upstream.commit_and_push(FILE, b"v: 2\n");
    assert_ne!(first, second);
    assert_eq!(
        fetcher.remote_head(&src, &Credentials::None).unwrap(),
        second
    );
}

#[test]
fn a_force_pushed_branch_is_followed() {
    let upstream = Upstream::new();
    upstream.commit_and_push(FILE, b"v: 1\n");
    let pushed = upstream.commit_and_push(FILE, b"v: 2\n");
    let server = GitHttpServer::start(&upstream.project_root());
    let (_dir, fetcher) = fetcher();
    let src = source(&server.url(), "main");
    assert_eq!(
        fetcher.fetch_file(&src, &Credentials::None).unwrap().commit,
        pushed
    );

    let rewritten = upstream.amend_and_force_push(FILE, b"v: 2 rewritten\n");
    assert_eq!(
        fetcher.remote_head(&src, &Credentials::None).unwrap(),
        rewritten
    );
    let file = fetcher.fetch_file(&src, &Credentials::None).unwrap();
    assert_eq!(file.commit, rewritten);
    assert_eq!(file.content, b"v: 2 rewritten\n");
}

#[test]
fn an_annotated_tag_gives_the_commit_it_tags() {
    let upstream = Upstream::new();
    let tagged = upstream.commit_and_push(FILE, b"v: 1\n");
    upstream.tag_and_push("v1", &tagged);
    upstream.commit_and_push(FILE, b"v: 2\n");
    let server = GitHttpServer::start(&upstream.project_root());
    let (_dir, fetcher) = fetcher();

    for reference in ["v1", "refs/tags/v1"] {
        let src = source(&server.url(), reference);
        assert_eq!(
            fetcher.remote_head(&src, &Credentials::None).unwrap(),
            tagged
        );
        let file = fetcher.fetch_file(&src, &Credentials::None).unwrap();
        assert_eq!(file.commit, tagged);
        assert_eq!(file.content, b"v: 1\n");
    }
}

#[test]
fn a_pinned_commit_is_found_and_needs_no_network_for_its_head() {
    let upstream = Upstream::new();
    let pinned = upstream.commit_and_push(FILE, b"v: 1\n");
    upstream.commit_and_push(FILE, b"v: 2\n");
    let server = GitHttpServer::start(&upstream.project_root());
    let (_dir, fetcher) = fetcher();

    let src = source(&server.url(), &pinned.to_uppercase());
    let file = fetcher.fetch_file(&src, &Credentials::None).unwrap();
    assert_eq!(file.commit, pinned);
    assert_eq!(file.content, b"v: 1\n");

    // Now in the cache: read again without the server.
    drop(server);
    assert_eq!(
        fetcher.fetch_file(&src, &Credentials::None).unwrap().commit,
        pinned
    );
    let offline = source(
        &format!("http://127.0.0.1:{}/org.git", closed_port()),
        &pinned,
    );
    assert_eq!(
        fetcher.remote_head(&offline, &Credentials::None).unwrap(),
        pinned
    );
}

#[test]
fn a_missing_reference_is_ref_not_found() {
    let upstream = Upstream::new();
    upstream.commit_and_push(FILE, b"v: 1\n");
    let (_dir, fetcher) = fetcher();

    for reference in ["release", "refs/heads/release", &"ab".repeat(20)] {
        let src = source(&upstream.file_url(), reference);
        let err = fetcher.fetch_file(&src, &Credentials::None).unwrap_err();
        assert!(
            matches!(err, GitError::RefNotFound { .. }),
            "{reference}: {err:?}"
        );
        assert!(err.to_string().contains(&format!("`{reference}`")), "{err}");
    }
    let err = fetcher
        .remote_head(&source(&upstream.file_url(), "release"), &Credentials::None)
        .unwrap_err();
    assert!(matches!(err, GitError::RefNotFound { .. }), "{err:?}");
    let core = ias_core::Error::from(err);
    assert_eq!(core.kind(), "not_found");
}

#[test]
fn a_missing_file_or_a_directory_is_refused() {
    let upstream = Upstream::new();
    let commit = upstream.commit_and_push("orgs/alpha.yaml", b"org: alpha\n");
    let (_dir, fetcher) = fetcher();

    let src = GitSource::new(upstream.file_url(), "main", "orgs/beta.yaml").unwrap();
    match fetcher.fetch_file(&src, &Credentials::None).unwrap_err() {
        GitError::FileNotFound { path, commit: at } => {
            assert_eq!(path, "orgs/beta.yaml");
            assert_eq!(at, commit);
        }
        other => panic!("expected FileNotFound, got {other:?}"),
    }

    let src = GitSource::new(upstream.file_url(), "main", "orgs").unwrap();
    let err = fetcher.fetch_file(&src, &Credentials::None).unwrap_err();
    assert!(
        matches!(
            err,
            GitError::NotAFile {
                kind: "directory",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn a_file_over_one_mib_is_refused() {
    let upstream = Upstream::new();
    let size = MAX_FILE_BYTES as usize + 1;
    upstream.commit_and_push(FILE, &vec![b'x'; size]);
    let (_dir, fetcher) = fetcher();
    let src = source(&upstream.file_url(), "main");

    let err = fetcher.fetch_file(&src, &Credentials::None).unwrap_err();
    assert!(
        matches!(&err, GitError::FileTooLarge { path, size: s, .. }
            if path == FILE && *s == size as u64),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains(FILE) && message.contains(&size.to_string()),
        "{message}"
    );

    // Exactly the limit is fine.
    upstream.commit_and_push(FILE, &vec![b'y'; MAX_FILE_BYTES as usize]);
    let file = fetcher.fetch_file(&src, &Credentials::None).unwrap();
    assert_eq!(file.content.len() as u64, MAX_FILE_BYTES);
}

#[test]
fn an_unreachable_remote_fails_fast() {
    let (_dir, fetcher) = fetcher();
    let src = source(
        &format!("http://127.0.0.1:{}/org.git", closed_port()),
        "main",
    );

    let started = Instant::now();
    let head = fetcher.remote_head(&src, &Credentials::None).unwrap_err();
    let fetch = fetcher.fetch_file(&src, &Credentials::None).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    for err in [head, fetch] {
        assert!(matches!(err, GitError::Unreachable { .. }), "{err:?}");
        assert!(err.is_retryable());
        assert!(ias_core::Error::from(err).is_retryable());
    }
}

#[test]
fn a_missing_file_url_repository_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let (_cache, fetcher) = fetcher();
    let url = format!("file://{}", dir.path().join("nothing.git").display());
    let err = fetcher
        .fetch_file(&source(&url, "main"), &Credentials::None)
        .unwrap_err();
    assert!(matches!(err, GitError::Unreachable { .. }), "{err:?}");
}

#[test]
fn credentials_in_the_url_are_refused_without_showing_them() {
    let secret = "glpat-S3CR3T-T0K3N";
    for url in [
        format!("https://{secret}@git.example.com/org.git"),
        format!("https://oauth2:{secret}@git.example.com/org.git"),
        format!("ssh://git:{secret}@git.example.com/org.git"),
    ] {
        let err = GitSource::new(url, "main", FILE).unwrap_err();
        assert!(matches!(err, GitError::CredentialsInUrl { .. }), "{err:?}");
        assert!(!err.to_string().contains(secret));
        assert!(!format!("{err:?}").contains(secret));
        assert!(!ias_core::Error::from(err).to_string().contains(secret));
    }
}

#[test]
fn a_token_file_authenticates_and_a_wrong_token_is_auth_failed() {
    let token = "ias-test-token-4f1c9a";
    let upstream = Upstream::new();
    let commit = upstream.commit_and_push(FILE, b"v: 1\n");
    let server = GitHttpServer::start_with_token(&upstream.project_root(), Some(token));
    let (dir, fetcher) = fetcher();
    let src = source(&server.url(), "main");

    let token_path = dir.path().join("token");
    std::fs::write(&token_path, format!("{token}\n")).unwrap();
    let creds: Credentials = format!("token-file:{}", token_path.display())
        .parse()
        .unwrap();
    assert_eq!(fetcher.remote_head(&src, &creds).unwrap(), commit);
    assert_eq!(fetcher.fetch_file(&src, &creds).unwrap().content, b"v: 1\n");

    // The file is read at each fetch: a rotated, wrong token is used at once.
    let wrong = "ias-wrong-token-77e2b0";
    std::fs::write(&token_path, wrong).unwrap();
    for err in [
        fetcher.remote_head(&src, &creds).unwrap_err(),
        fetcher.fetch_file(&src, &creds).unwrap_err(),
    ] {
        assert!(matches!(err, GitError::AuthFailed { .. }), "{err:?}");
        for text in [
            err.to_string(),
            format!("{err:?}"),
            ias_core::Error::from(err).to_string(),
        ] {
            assert!(!text.contains(wrong) && !text.contains(token), "{text}");
        }
    }

    let err = fetcher.remote_head(&src, &Credentials::None).unwrap_err();
    assert!(matches!(err, GitError::AuthFailed { .. }), "{err:?}");
}

/// A server on its own port that answers every request with a redirect to
/// the same path on `target` (another origin, as a hostile host would).
fn redirecting_to(target: &GitHttpServer) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let target = target.port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 4096];
            let read = stream.read(&mut request).unwrap_or(0);
            let text = String::from_utf8_lossy(&request[..read]);
            let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
            let answer = format!(
                "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{target}{path}\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    format!("http://127.0.0.1:{port}/{}", support::REPO_NAME)
}

#[test]
fn a_redirect_elsewhere_gets_no_credentials_and_no_objects() {
    let token = "ias-test-token-redirected";
    let upstream = Upstream::new();
    upstream.commit_and_push(FILE, b"v: 1\n");
    // The repository lives elsewhere, behind the token; the configured URL only redirects there.
    let elsewhere = GitHttpServer::start_with_token(&upstream.project_root(), Some(token));
    let redirector = redirecting_to(&elsewhere);
    let (dir, fetcher) = fetcher();
    let token_path = dir.path().join("token");
    std::fs::write(&token_path, token).unwrap();
    let creds: Credentials = format!("token-file:{}", token_path.display())
        .parse()
        .unwrap();
    let src = source(&redirector, "main");

    let head = fetcher.remote_head(&src, &creds);
    assert!(head.is_err(), "the token reached the other host: {head:?}");
    let file = fetcher.fetch_file(&src, &creds);
    assert!(file.is_err(), "objects came from the other host: {file:?}");
    // Nothing at the other host was fetched past the refusal of credentials.
    assert!(
        elsewhere
            .requests()
            .iter()
            .all(|r| !r.contains("git-upload-pack") || r.starts_with("GET")),
        "{:?}",
        elsewhere.requests()
    );
}

#[test]
fn a_missing_token_file_names_the_file_and_touches_no_network() {
    let upstream = Upstream::new();
    upstream.commit_and_push(FILE, b"v: 1\n");
    let server = GitHttpServer::start(&upstream.project_root());
    let (dir, fetcher) = fetcher();
    let missing = dir.path().join("no-such-token");
    let creds: Credentials = format!("token-file:{}", missing.display()).parse().unwrap();

    let err = fetcher
        .fetch_file(&source(&server.url(), "main"), &creds)
        .unwrap_err();
    assert!(matches!(err, GitError::Credentials { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
    assert!(server.requests().is_empty());
}

#[test]
fn libgit2_reports_https_and_ssh() {
    let support = transport_support();
    assert!(support.https, "{support:?}");
    assert!(support.ssh, "{support:?}");
}

#[test]
fn concurrent_fetches_of_one_url_both_succeed() {
    let upstream = Upstream::new();
    let commit = upstream.commit_and_push(FILE, b"v: 1\n");
    let server = GitHttpServer::start(&upstream.project_root());
    let dir = tempfile::tempdir().unwrap();
    let src = source(&server.url(), "main");
    let barrier = Arc::new(Barrier::new(8));

    // Separate fetchers over one cache directory, as separate processes would be.
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let fetcher = Fetcher::new(dir.path()).unwrap();
            let (src, barrier) = (src.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                fetcher.fetch_file(&src, &Credentials::None)
            })
        })
        .collect();
    for handle in handles {
        let file = handle.join().unwrap().unwrap();
        assert_eq!(file.commit, commit);
        assert_eq!(file.content, b"v: 1\n");
    }
}

/// Set in the child processes of `processes_sharing_a_cache_all_succeed`:
/// a file whose creation starts the fetches, the cache directory, then the
/// URLs to fetch, one a line.
const CHILD_ENV: &str = "IAS_GITOPS_TEST_CHILD_FETCH";

#[test]
fn processes_sharing_a_cache_all_succeed() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        let lines: Vec<&str> = spec.lines().collect();
        fetch_all_when_told(Path::new(lines[0]), Path::new(lines[1]), &lines[2..]);
        return;
    }
    let upstream = Upstream::new();
    upstream.commit_and_push(FILE, b"v: 1\n");
    let names: Vec<String> = (0..6).map(|i| format!("copy{i}.git")).collect();
    for name in &names {
        upstream.publish_copy(name);
    }
    let server = GitHttpServer::start(&upstream.project_root());
    let dir = tempfile::tempdir().unwrap();
    let (go, cache) = (dir.path().join("go"), dir.path().join("cache"));
    let urls: Vec<String> = names.iter().map(|name| server.url_of(name)).collect();
    let spec = format!("{}\n{}\n{}", go.display(), cache.display(), urls.join("\n"));

    // This test binary again, running only this test, as a child fetcher.
    let children: Vec<_> = (0..4)
        .map(|_| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "processes_sharing_a_cache_all_succeed",
                    "--quiet",
                ])
                .env(CHILD_ENV, &spec)
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    // Lets the children reach their wait, so that the fetches start together.
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&go, b"").unwrap();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    fetch_all_when_told(&go, &cache, &urls);
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
}

/// Waits until `go` exists, then reads the file from each URL in turn.
fn fetch_all_when_told(go: &Path, cache: &Path, urls: &[&str]) {
    let fetcher = Fetcher::new(cache).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !go.exists() {
        assert!(Instant::now() < deadline, "never told to start");
        std::thread::sleep(Duration::from_millis(1));
    }
    for url in urls {
        let file = fetcher
            .fetch_file(&source(url, "main"), &Credentials::None)
            .unwrap();
        assert_eq!(file.content, b"v: 1\n");
    }
}

#[test]
fn a_cache_with_deleted_objects_is_recreated() {
    let upstream = Upstream::new();
    let commit = upstream.commit_and_push(FILE, b"v: 1\n");
    let (_dir, fetcher) = fetcher();
    let src = source(&upstream.file_url(), "main");
    fetcher.fetch_file(&src, &Credentials::None).unwrap();

    let objects = fetcher.cache_repo_path(src.url()).join("objects");
    std::fs::remove_dir_all(&objects).unwrap();
    std::fs::create_dir(&objects).unwrap();
    let file = fetcher.fetch_file(&src, &Credentials::None).unwrap();
    assert_eq!(
        (file.commit.as_str(), file.content.as_slice()),
        (commit.as_str(), &b"v: 1\n"[..])
    );

    // A blob lost while its commit and tree stay is caught on reading.
    let next = upstream.commit_and_push(FILE, b"v: 2\n");
    fetcher.fetch_file(&src, &Credentials::None).unwrap();
    let cache = git2::Repository::open_bare(fetcher.cache_repo_path(src.url())).unwrap();
    let blob = cache
        .revparse_single(&format!("{next}:{FILE}"))
        .unwrap()
        .id();
    drop(cache);
    remove_object_everywhere(&fetcher.cache_repo_path(src.url()), &next, blob);
    let file = fetcher.fetch_file(&src, &Credentials::None).unwrap();
    assert_eq!(file.content, b"v: 2\n");
}

/// Rewrites the cache so that it keeps every object but `blob`: packs are
/// unpacked into loose objects first, then the blob's file is deleted.
fn remove_object_everywhere(repo_path: &std::path::Path, commit: &str, blob: git2::Oid) {
    let repo = git2::Repository::open_bare(repo_path).unwrap();
    let odb = repo.odb().unwrap();
    let mut ids = Vec::new();
    odb.foreach(|id| {
        ids.push(*id);
        true
    })
    .unwrap();
    let objects: Vec<_> = ids
        .iter()
        .map(|id| {
            let object = odb.read(*id).unwrap();
            (object.kind(), object.data().to_vec())
        })
        .collect();
    drop(odb);
    drop(repo);
    let pack_dir = repo_path.join("objects").join("pack");
    if pack_dir.exists() {
        std::fs::remove_dir_all(&pack_dir).unwrap();
    }
    let repo = git2::Repository::open_bare(repo_path).unwrap();
    let odb = repo.odb().unwrap();
    for (kind, data) in &objects {
        odb.write(*kind, data).unwrap();
    }
    let hex = blob.to_string();
    std::fs::remove_file(repo_path.join("objects").join(&hex[..2]).join(&hex[2..])).unwrap();
    assert!(
        repo.find_commit(git2::Oid::from_str(commit).unwrap())
            .is_ok()
    );
}

#[test]
fn a_deleted_cache_directory_is_made_again() {
    let upstream = Upstream::new();
    let commit = upstream.commit_and_push(FILE, b"v: 1\n");
    let (_dir, fetcher) = fetcher();
    let src = source(&upstream.file_url(), "main");
    fetcher.fetch_file(&src, &Credentials::None).unwrap();

    std::fs::remove_dir_all(fetcher.cache_dir()).unwrap();
    assert_eq!(
        fetcher.fetch_file(&src, &Credentials::None).unwrap().commit,
        commit
    );
}

#[test]
fn a_cache_path_taken_by_a_file_is_recreated() {
    let upstream = Upstream::new();
    let commit = upstream.commit_and_push(FILE, b"v: 1\n");
    let (_dir, fetcher) = fetcher();
    let src = source(&upstream.file_url(), "main");
    std::fs::write(fetcher.cache_repo_path(src.url()), b"not a repository").unwrap();

    assert_eq!(
        fetcher.fetch_file(&src, &Credentials::None).unwrap().commit,
        commit
    );
}

#[test]
fn the_async_fetcher_reads_files() {
    let upstream = Upstream::new();
    let commit = upstream.commit_and_push(FILE, b"v: 1\n");
    let server = GitHttpServer::start(&upstream.project_root());
    let (_dir, fetcher) = fetcher();
    let fetcher = AsyncFetcher::new(fetcher);
    let src = source(&server.url(), "main");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (head, file) = tokio::join!(
            fetcher.remote_head(&src, &Credentials::None),
            fetcher.fetch_file(&src, &Credentials::None)
        );
        assert_eq!(head.unwrap(), commit);
        assert_eq!(file.unwrap().content, b"v: 1\n");
    });
}

#[test]
fn the_async_fetcher_leaves_the_runtime_thread_free_while_waiting() {
    // A server that accepts the connection and then says nothing.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let src = source(
        &format!(
            "http://127.0.0.1:{}/org.git",
            listener.local_addr().unwrap().port()
        ),
        "main",
    );
    let (_dir, fetcher) = fetcher();
    let fetcher = AsyncFetcher::new(fetcher);

    // One thread for the whole runtime: a blocking call on it would stall everything.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let task = tokio::spawn(async move { fetcher.remote_head(&src, &Credentials::None).await });
        let (silent, _) = tokio::task::spawn_blocking(move || listener.accept().unwrap())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!task.is_finished());

        drop(silent);
        let err = task.await.unwrap().unwrap_err();
        assert!(matches!(err, GitError::Unreachable { .. }), "{err:?}");
    });
}
