//! An `env:` token, read from the environment at each fetch. In a test
//! binary of its own: setting a variable is only sound while no other
//! thread reads the environment outside std's own lock.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ias_gitops::{Credentials, Fetcher, GitError, GitSource};
use support::{GitHttpServer, Upstream};

const VARIABLE: &str = "IAS_GITOPS_TEST_TOKEN";

#[expect(
    unsafe_code,
    reason = "`set_var` is unsafe; only this binary's one test runs, and no fetch is under way"
)]
fn set_token(value: &str) {
    // SAFETY: this binary runs one test, and calls this only between its
    // fetches. The only other threads are the test server's, which read the
    // environment only through std (spawning `git http-backend`), under the
    // same lock that `set_var` takes; no libgit2 code is running.
    unsafe { std::env::set_var(VARIABLE, value) };
}

#[test]
fn an_env_token_authenticates_and_its_rotation_is_seen() {
    set_token("ias-env-token-90d1e3");
    let upstream = Upstream::new();
    let commit = upstream.commit_and_push("ias.yaml", b"v: 1\n");
    let server =
        GitHttpServer::start_with_token(&upstream.project_root(), Some("ias-env-token-90d1e3"));
    let dir = tempfile::tempdir().unwrap();
    let fetcher = Fetcher::new(dir.path()).unwrap();
    let src = GitSource::new(server.url(), "main", "ias.yaml").unwrap();
    let creds: Credentials = format!("env:{VARIABLE}").parse().unwrap();

    assert_eq!(fetcher.remote_head(&src, &creds).unwrap(), commit);
    let file = fetcher.fetch_file(&src, &creds).unwrap();
    assert_eq!((file.commit, file.content), (commit, b"v: 1\n".to_vec()));

    set_token("ias-rotated-wrong-5b7c");
    let err = fetcher.fetch_file(&src, &creds).unwrap_err();
    assert!(matches!(err, GitError::AuthFailed { .. }), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("ias-rotated-wrong-5b7c"));

    let unset: Credentials = "env:IAS_GITOPS_TEST_NEVER_SET".parse().unwrap();
    let err = fetcher.remote_head(&src, &unset).unwrap_err();
    assert!(matches!(err, GitError::Credentials { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("`IAS_GITOPS_TEST_NEVER_SET` is not set"),
        "{err}"
    );
}
