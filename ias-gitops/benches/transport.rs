//! Latency of the Git transport on loopback: the cheap check, a fetch that
//! finds nothing new, a fetch of a new commit, a first fetch into an empty
//! cache, and the failure on a closed port. Prints one line per case.
//!
//! The remote is `git http-backend` behind the test support's small HTTP
//! server (one CGI process per request), so the figures are an upper bound
//! for the client's own cost.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use ias_gitops::{Credentials, Fetcher, GitSource};
use support::{GitHttpServer, Upstream, closed_port};

fn main() {
    let upstream = Upstream::new();
    upstream.commit_and_push("ias.yaml", &yaml(0));
    let server = GitHttpServer::start(&upstream.project_root());
    let http = GitSource::new(server.url(), "main", "ias.yaml").unwrap();
    let file = GitSource::new(upstream.file_url(), "main", "ias.yaml").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let fetcher = Fetcher::new(dir.path().join("warm")).unwrap();
    let none = Credentials::None;
    fetcher.fetch_file(&http, &none).unwrap();
    fetcher.fetch_file(&file, &none).unwrap();

    println!("case                                   runs   median      p90");
    report("remote_head, smart http", 50, || {
        fetcher.remote_head(&http, &none).unwrap();
    });
    report("remote_head, file://", 50, || {
        fetcher.remote_head(&file, &none).unwrap();
    });
    report("fetch_file unchanged, smart http", 50, || {
        fetcher.fetch_file(&http, &none).unwrap();
    });
    let mut version = 0;
    report_with_setup(
        "fetch_file of a new commit, smart http",
        20,
        || {
            version += 1;
            upstream.commit_and_push("ias.yaml", &yaml(version));
        },
        || {
            fetcher.fetch_file(&http, &none).unwrap();
        },
    );
    let mut run = 0;
    report("fetch_file into an empty cache, http", 10, || {
        run += 1;
        let cold = Fetcher::new(dir.path().join(format!("cold{run}"))).unwrap();
        cold.fetch_file(&http, &none).unwrap();
    });
    let closed = GitSource::new(
        format!("http://127.0.0.1:{}/org.git", closed_port()),
        "main",
        "ias.yaml",
    )
    .unwrap();
    report("remote_head, closed port (fails)", 20, || {
        fetcher.remote_head(&closed, &none).unwrap_err();
    });
}

/// A declared-state file of about 2 KiB.
fn yaml(version: u32) -> Vec<u8> {
    let mut text = format!("version: {version}\nusers:\n");
    for i in 0..40 {
        text.push_str(&format!(
            "  - email: user{i}@example.com\n    role: member\n"
        ));
    }
    text.into_bytes()
}

fn report(name: &str, runs: usize, mut work: impl FnMut()) {
    report_with_setup(name, runs, || {}, &mut work);
}

fn report_with_setup(name: &str, runs: usize, mut setup: impl FnMut(), mut work: impl FnMut()) {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            setup();
            let started = Instant::now();
            work();
            started.elapsed()
        })
        .collect();
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    println!(
        "{name:<38} {runs:>4} {:>8.2} ms {:>8.2} ms",
        at(0.5).as_secs_f64() * 1000.0,
        at(0.9).as_secs_f64() * 1000.0
    );
}
