//! Runs the real `ias-admin` binary against a temporary SQLite database.

#![allow(dead_code, reason = "each test binary uses part of the kit")]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use ias_core::{Decision, Governor};
use ias_store_sqlite::SqliteStore;
use serde_json::{Value, json};
use tempfile::TempDir;

/// What one run of `ias-admin` produced.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Stdout parsed as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|err| panic!("stdout is not JSON ({err}): {}", self.stdout))
    }
}

/// Runs `ias-admin` in `dir` with `args`, feeding `stdin` if given.
pub fn run_in(dir: &Path, args: &[&str], stdin: Option<&str>) -> Run {
    run_with_env(dir, args, stdin, &[])
}

/// Like [`run_in`], with the environment variables `env` set.
pub fn run_with_env(dir: &Path, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ias-admin"))
        .args(args)
        .current_dir(dir)
        .env_remove("IAS_DATABASE_URL")
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ias-admin starts");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        // A command refused before it reads its input may already have exited.
        if let Err(err) = pipe.write_all(input.as_bytes()) {
            assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe, "stdin: {err}");
        }
    }
    let out = child.wait_with_output().expect("ias-admin finishes");
    Run {
        code: out.status.code().expect("ias-admin exits with a code"),
        stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
    }
}

/// A temporary database and a way to run commands on it.
pub struct Db {
    pub dir: TempDir,
    pub url: String,
}

impl Db {
    /// A fresh database file in a new temporary directory.
    pub fn new() -> Db {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("ias.db").display());
        Db { dir, url }
    }

    /// Creates an organization with a monthly budget.
    pub fn create_org(&self, slug: &str, budget: i64) {
        let budget = budget.to_string();
        self.ok(&[
            "org",
            "create",
            "--slug",
            slug,
            "--monthly-token-budget",
            &budget,
        ]);
    }

    /// Creates a user without a limit of its own.
    pub fn create_user(&self, org: &str, email: &str, role: &str) {
        self.ok(&[
            "user", "create", "--org", org, "--email", email, "--role", role,
        ]);
    }

    /// A database with `team-alpha` (budget 1000), `bob@example.com` (limit 500),
    /// `gpt-4o-mini` allowed, and one key for bob, whose secret is returned.
    pub fn with_team() -> (Db, String) {
        Db::new().team()
    }

    /// This database with `team-alpha` and the rest of [`Db::with_team`].
    pub fn team(self) -> (Db, String) {
        let db = self;
        db.ok(&[
            "org",
            "create",
            "--slug",
            "team-alpha",
            "--monthly-token-budget",
            "1000",
        ]);
        db.ok(&[
            "user",
            "create",
            "--org",
            "team-alpha",
            "--email",
            "bob@example.com",
            "--role",
            "member",
            "--monthly-token-limit",
            "500",
        ]);
        db.ok(&[
            "model",
            "allow",
            "--org",
            "team-alpha",
            "--model",
            "gpt-4o-mini",
        ]);
        let key = db.json(&["key", "create", "--email", "bob@example.com"]);
        let secret = key["secret"].as_str().expect("secret").to_owned();
        (db, secret)
    }

    /// Runs `args` against this database.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_stdin(args, None)
    }

    /// Runs `args` against this database, feeding `stdin` if given.
    pub fn run_stdin(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let mut full = vec!["--database-url", self.url.as_str()];
        full.extend_from_slice(args);
        run_in(self.dir.path(), &full, stdin)
    }

    /// Runs `args` with every log line (`RUST_LOG=trace`) sent to stderr.
    pub fn run_logged(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let mut full = vec!["--database-url", self.url.as_str()];
        full.extend_from_slice(args);
        run_with_env(self.dir.path(), &full, stdin, &[("RUST_LOG", "trace")])
    }

    /// The database file.
    pub fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("ias.db")
    }

    /// Runs `args`, which must succeed.
    pub fn ok(&self, args: &[&str]) -> Run {
        let run = self.run(args);
        assert_eq!(run.code, 0, "{args:?} failed: {run:?}");
        run
    }

    /// Runs `args` with `--output json`, which must succeed, and parses stdout.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut full = args.to_vec();
        full.extend(["--output", "json"]);
        self.ok(&full).json()
    }

    /// Runs a list command with `--output json`: one page, which must be
    /// `{"items": [...], "next_after": "..." | null}`, as its items and cursor.
    pub fn page(&self, args: &[&str]) -> (Vec<Value>, Option<String>) {
        page_of(&self.json(args), args)
    }

    /// The items of the first page of a list command.
    pub fn items(&self, args: &[&str]) -> Vec<Value> {
        self.page(args).0
    }

    /// Every item of a list command, read with pages of `limit`, each page
    /// asked for with the `--after` the previous one named.
    pub fn all_pages(&self, args: &[&str], limit: u32) -> Vec<Value> {
        let limit = limit.to_string();
        let mut items = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..10_000 {
            let mut full = args.to_vec();
            full.extend(["--limit", &limit]);
            if let Some(cursor) = &after {
                full.extend(["--after", cursor]);
            }
            let (page, next) = self.page(&full);
            assert!(
                page.len() <= limit.parse().unwrap(),
                "{full:?}: over the limit"
            );
            items.extend(page);
            match next {
                Some(cursor) => after = Some(cursor),
                None => return items,
            }
        }
        panic!("{args:?}: the pages never ended");
    }

    /// Authorizes with `key` on stdin; returns the run and the decision.
    pub fn authorize(&self, key: &str, model: &str, tokens: &str) -> (Run, Value) {
        let args = [&authorize_args(model, tokens)[..], &["--output", "json"]].concat();
        let run = self.run_stdin(&args, Some(&format!("{key}\n")));
        let decision = run.json();
        (run, decision)
    }

    /// Authorizes and settles one request of `tokens` through the library, as a
    /// gateway would, then shuts the governor down so the usage is stored.
    pub fn spend(&self, secret: &str, model: &str, tokens: i64) {
        let path = self.dir.path().join("ias.db");
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let store = SqliteStore::open(&path).await.unwrap();
            let governor = Governor::open(store).await.unwrap();
            let decision = governor.authorize(secret, model, tokens).await.unwrap();
            let Decision::Allowed(allowed) = decision else {
                panic!("not allowed: {decision:?}");
            };
            let reservation = allowed.reservation.unwrap();
            governor.settle(&reservation, tokens).await.unwrap();
            governor.shutdown().await.unwrap();
        });
    }

    /// Everything the CLI can read: orgs, their users, models and keys, and the audit log.
    pub fn snapshot(&self) -> Value {
        let orgs = self.all_pages(&["org", "list"], 1000);
        let mut per_org = Vec::new();
        for org in &orgs {
            let slug = org["slug"].as_str().expect("slug");
            per_org.push(self.org_snapshot(slug));
        }
        let audit = self.all_pages(&["audit", "list"], 1000);
        json!({ "orgs": orgs, "per_org": per_org, "audit": audit })
    }

    fn org_snapshot(&self, slug: &str) -> Value {
        let users = self.all_pages(&["user", "list", "--org", slug], 1000);
        let mut keys = Vec::new();
        for user in &users {
            let email = user["email"].as_str().expect("email");
            keys.push(self.all_pages(&["key", "list", "--email", email], 1000));
        }
        let models = self.all_pages(&["model", "list", "--org", slug], 1000);
        json!({ "users": users, "keys": keys, "models": models })
    }

    /// Runs a command that must be refused with `code`, one line on stderr
    /// containing every needle, nothing on stdout, and no change to the data.
    pub fn refused(&self, args: &[&str], stdin: Option<&str>, code: i32, needles: &[&str]) -> Run {
        let before = self.snapshot();
        let run = self.run_stdin(args, stdin);
        assert_one_line_error(&run, code, needles, args);
        assert_eq!(self.snapshot(), before, "{args:?} changed the data");
        run
    }
}

/// A page printed with `--output json`: its items and the cursor of the next page.
pub fn page_of(page: &Value, args: &[&str]) -> (Vec<Value>, Option<String>) {
    let fields = page
        .as_object()
        .unwrap_or_else(|| panic!("{args:?}: not a page: {page}"));
    let keys: Vec<&str> = fields.keys().map(String::as_str).collect();
    assert_eq!(keys, ["items", "next_after"], "{args:?}: {page}");
    let items = page["items"].as_array().expect("items is an array").clone();
    let next = match &page["next_after"] {
        Value::Null => None,
        Value::String(cursor) => Some(cursor.clone()),
        other => panic!("{args:?}: next_after is {other}"),
    };
    (items, next)
}

/// The `label: value` lines of text output, by label.
pub fn fields(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(label, value)| (label.trim().to_owned(), value.trim().to_owned()))
        .collect()
}

/// `authorize --key - --model MODEL --tokens TOKENS`: the key is read from stdin.
pub fn authorize_args<'a>(model: &'a str, tokens: &'a str) -> [&'a str; 7] {
    [
        "authorize",
        "--key",
        "-",
        "--model",
        model,
        "--tokens",
        tokens,
    ]
}

/// Checks a refusal: exit `code`, nothing on stdout, one `error:` line holding every needle.
pub fn assert_one_line_error(run: &Run, code: i32, needles: &[&str], args: &[&str]) {
    assert_eq!(run.code, code, "{args:?}: {run:?}");
    assert!(run.stdout.is_empty(), "{args:?} printed data: {run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {run:?}");
    assert!(run.stderr.starts_with("error: "), "{args:?}: {run:?}");
    for needle in needles {
        assert!(
            run.stderr.contains(needle),
            "{args:?}: {needle:?} missing: {run:?}"
        );
    }
}
