//! A remote that accepts the connection and then stays silent fails with
//! `Unreachable` once the read timeout passes. In a test binary of its
//! own: libgit2's timeouts are process-wide.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::time::{Duration, Instant};

use ias_gitops::{Credentials, Fetcher, GitError, GitSource, Timeouts, set_timeouts, timeouts};

#[test]
fn a_silent_remote_times_out() {
    let short = Timeouts {
        connect: Duration::from_secs(2),
        io: Duration::from_secs(2),
    };
    assert_eq!(timeouts(), Timeouts::default());
    set_timeouts(short).unwrap();
    assert_eq!(timeouts(), short);

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts and holds every connection without answering.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });

    let dir = tempfile::tempdir().unwrap();
    let fetcher = Fetcher::new(dir.path()).unwrap();
    let src = GitSource::new(
        format!("http://127.0.0.1:{port}/org.git"),
        "main",
        "ias.yaml",
    )
    .unwrap();
    let started = Instant::now();
    let err = fetcher.remote_head(&src, &Credentials::None).unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(err, GitError::Unreachable { .. }), "{err:?}");
    // Well under a minute, and not before the 2 s timeout.
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(20),
        "{elapsed:?}"
    );
}
