//! `ias-admin gitops`: every command against real repositories made with the `git` command
//! line, over `file://`, with what it prints and the exit code scripts rely on.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Db, Run, assert_one_line_error, fields, page_of, run_with_env};
use serde_json::Value;
use tempfile::TempDir;

const ORG: &str = "team-alpha";

/// Alice (org admin, limit 1000) and Bob (member, no limit of his own), budget 5000.
const GOOD: &str = "\
version: 1
org: team-alpha
budget:
  monthly_tokens: 5000
allowed_models: [gpt-4o-mini]
users:
  - email: alice@example.com
    role: org_admin
    monthly_token_limit: 1000
  - email: bob@example.com
    role: member
";

/// [`GOOD`] with a budget of 4000.
const LOWER_BUDGET: &str = "\
version: 1
org: team-alpha
budget:
  monthly_tokens: 4000
allowed_models: [gpt-4o-mini]
users:
  - email: alice@example.com
    role: org_admin
    monthly_token_limit: 1000
  - email: bob@example.com
    role: member
";

/// [`GOOD`] plus Carol.
const WITH_CAROL: &str = "\
version: 1
org: team-alpha
budget:
  monthly_tokens: 5000
allowed_models: [gpt-4o-mini]
users:
  - email: alice@example.com
    role: org_admin
    monthly_token_limit: 1000
  - email: bob@example.com
    role: member
  - email: carol@example.com
    role: member
";

/// Six errors, one per line 2, 4, 5, 9, 10 and 12.
const SIX_ERRORS: &str = "\
version: 1
org: Team
budget:
  monthly_tokens: \"5000\"
  currency: eur
allowed_models: [gpt-4o-mini]
users:
  - email: alice@example.com
    role: system_admin
  - email: ALICE@example.com
    role: member
    rate_limits: {tmp: 5}
";

/// A repository made with the `git` command line, committed to on `main`.
struct Repo {
    dir: TempDir,
}

impl Repo {
    fn new() -> Repo {
        let repo = Repo {
            dir: tempfile::tempdir().unwrap(),
        };
        git(repo.path(), &["init", "--quiet", "--initial-branch=main"]);
        repo
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn url(&self) -> String {
        format!("file://{}", self.path().display())
    }

    /// Commits `content` as `ias.yaml` and returns the commit id.
    fn commit(&self, content: &str) -> String {
        std::fs::write(self.path().join("ias.yaml"), content).unwrap();
        git(self.path(), &["add", "ias.yaml"]);
        git(
            self.path(),
            &["commit", "--quiet", "--allow-empty", "-m", "ias.yaml"],
        );
        git(self.path(), &["rev-parse", "HEAD"]).trim().to_owned()
    }
}

/// Runs `git -C DIR ARGS` with no user or system configuration; returns stdout.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Test Author")
        .env("GIT_AUTHOR_EMAIL", "author@example.com")
        .env("GIT_COMMITTER_NAME", "Test Author")
        .env("GIT_COMMITTER_EMAIL", "author@example.com")
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// A database with `team-alpha`, a repository, and a Git cache of their own.
struct Gitops {
    db: Db,
    repo: Repo,
    cache: TempDir,
}

impl Gitops {
    fn new() -> Gitops {
        let db = Db::new();
        db.create_org(ORG, 1000);
        Gitops {
            db,
            repo: Repo::new(),
            cache: tempfile::tempdir().unwrap(),
        }
    }

    /// `team-alpha` enabled on the repository holding [`GOOD`] and synced; returns the commit.
    fn synced() -> (Gitops, String) {
        let g = Gitops::new();
        let commit = g.repo.commit(GOOD);
        g.ok(&["gitops", "enable", "--org", ORG, "--repo", &g.repo.url()]);
        g.ok(&["gitops", "sync", "--org", ORG]);
        (g, commit)
    }

    fn cache_env(&self) -> [(&str, &str); 1] {
        [("IAS_GITOPS_CACHE_DIR", self.cache.path().to_str().unwrap())]
    }

    fn args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut full = vec!["--database-url", self.db.url.as_str()];
        full.extend_from_slice(args);
        full
    }

    /// Runs `ias-admin ARGS` on the database with `IAS_GITOPS_CACHE_DIR` set.
    fn run(&self, args: &[&str]) -> Run {
        run_with_env(
            self.db.dir.path(),
            &self.args(args),
            None,
            &self.cache_env(),
        )
    }

    fn ok(&self, args: &[&str]) -> Run {
        let run = self.run(args);
        assert_eq!(run.code, 0, "{args:?}: {run:?}");
        run
    }

    /// Runs `args` with `--output json`, expecting exit `code`; returns stdout as JSON.
    fn json(&self, args: &[&str], code: i32) -> Value {
        let mut full = args.to_vec();
        full.extend(["--output", "json"]);
        let run = self.run(&full);
        assert_eq!(run.code, code, "{args:?}: {run:?}");
        run.json()
    }

    fn org_budget(&self) -> i64 {
        let org = self.db.json(&["org", "show", "--org", ORG]);
        let org = org.get("org").unwrap_or(&org);
        org["monthly_token_budget"].as_i64().unwrap()
    }

    fn emails(&self) -> Vec<String> {
        let users = self.db.items(&["user", "list", "--org", ORG]);
        users
            .iter()
            .map(|u| u["email"].as_str().unwrap().to_owned())
            .collect()
    }

    /// The organization's state, from `gitops status --org`.
    fn status(&self) -> Value {
        let page = self.json(&["gitops", "status", "--org", ORG], 0);
        let (mut states, next) = page_of(&page, &["gitops", "status"]);
        assert_eq!((states.len(), next), (1, None), "{page}");
        states.remove(0)
    }
}

/// A file in a new temporary directory.
fn file(content: &str) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ias.yaml");
    std::fs::write(&path, content).unwrap();
    (dir, path)
}

fn short(commit: &str) -> &str {
    &commit[..12]
}

// --- validate ---------------------------------------------------------------

#[test]
fn validate_accepts_a_good_file_without_a_database() {
    let (dir, path) = file(GOOD);
    let path = path.to_str().unwrap();
    let run = common::run_in(dir.path(), &["gitops", "validate", path], None);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stdout.trim(),
        format!("{path}: valid; org `team-alpha`, 2 user(s), 1 allowed model pattern(s)")
    );
    assert!(run.stderr.is_empty(), "{run:?}");
    // Offline: no database file appears.
    assert!(!dir.path().join("ias.db").exists());

    let run = common::run_in(
        dir.path(),
        &["gitops", "validate", path, "--org", ORG],
        None,
    );
    assert_eq!(run.code, 0, "{run:?}");
    let json = common::run_in(
        dir.path(),
        &["gitops", "validate", path, "--output", "json"],
        None,
    );
    assert_eq!(json.code, 0, "{json:?}");
    let manifest = json.json();
    assert_eq!(manifest["org"], ORG);
    assert_eq!(manifest["users"].as_array().unwrap().len(), 2);
}

#[test]
fn validate_lists_every_error_with_file_line_column_and_path() {
    let (dir, path) = file(SIX_ERRORS);
    let path = path.to_str().unwrap();
    let run = common::run_in(dir.path(), &["gitops", "validate", path], None);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(
        lines[0],
        format!("error: {path} has 6 error(s); nothing was applied")
    );
    let expected = [
        ("2:6: org: ", "`Team`"),
        ("4:19: budget.monthly_tokens: ", "quoted"),
        ("5:3: budget.currency: ", "unknown key `currency`"),
        ("9:11: users[0].role: ", "`system_admin`"),
        (
            "10:12: users[1].email: ",
            "duplicate user `alice@example.com`",
        ),
        ("12:19: users[1].rate_limits.tmp: ", "did you mean `tpm`?"),
    ];
    assert_eq!(lines.len(), 1 + expected.len(), "{run:?}");
    for (line, (position, words)) in lines[1..].iter().zip(expected) {
        let prefix = format!("{path}:{position}");
        assert!(line.starts_with(&prefix), "{line:?} vs {prefix:?}");
        assert!(line.contains(words), "{line:?} lacks {words:?}");
    }

    let run = common::run_in(
        dir.path(),
        &["gitops", "validate", path, "--output", "json"],
        None,
    );
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
    let body: Value = serde_json::from_str(&run.stderr).unwrap();
    let error = &body["error"];
    assert_eq!(error["kind"], "invalid_input");
    assert_eq!(error["file"], path);
    let errors = error["errors"].as_array().unwrap();
    let found: Vec<(u64, u64, &str)> = errors
        .iter()
        .map(|e| {
            let message = e["message"].as_str().unwrap();
            assert!(!message.is_empty());
            (
                e["line"].as_u64().unwrap(),
                e["column"].as_u64().unwrap(),
                e["path"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            (2, 6, "org"),
            (4, 19, "budget.monthly_tokens"),
            (5, 3, "budget.currency"),
            (9, 11, "users[0].role"),
            (10, 12, "users[1].email"),
            (12, 19, "users[1].rate_limits.tmp"),
        ]
    );
}

#[test]
fn validate_prints_an_error_about_the_whole_file_without_an_empty_path() {
    let (dir, path) = file("# only a comment\n");
    let path = path.to_str().unwrap();
    let run = common::run_in(dir.path(), &["gitops", "validate", path], None);
    assert_eq!(run.code, 2, "{run:?}");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{run:?}");
    let prefix = format!("{path}:1:1: ");
    assert!(lines[1].starts_with(&prefix), "{run:?}");
    assert!(
        !lines[1].contains(": : "),
        "an empty path is printed: {run:?}"
    );
}

#[test]
fn validate_checks_the_org_when_asked() {
    let (dir, path) = file(GOOD);
    let path = path.to_str().unwrap();
    let run = common::run_in(
        dir.path(),
        &["gitops", "validate", path, "--org", "team-beta"],
        None,
    );
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{run:?}");
    assert!(
        lines[1].starts_with(&format!("{path}:2:6: org: ")),
        "{run:?}"
    );
    assert!(lines[1].contains("`team-alpha`"), "{run:?}");
    assert!(lines[1].contains("`team-beta`"), "{run:?}");
}

#[test]
fn validate_of_a_missing_file_fails_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let run = common::run_in(dir.path(), &["gitops", "validate", "nope.yaml"], None);
    assert_one_line_error(&run, 1, &["`nope.yaml`"], &["validate"]);
}

// --- enable -----------------------------------------------------------------

#[test]
fn enable_refuses_bad_values_and_writes_nothing() {
    let g = Gitops::new();
    let url = g.repo.url();
    let enable = ["gitops", "enable", "--org", ORG, "--repo", url.as_str()];
    let cases: [(&[&str], &[&str]); 4] = [
        (&["--max-removal", "150%"], &["max_removal", "`150%`"]),
        (&["--drift", "fix"], &["drift", "`fix`", "report or heal"]),
        (&["--ref", "a..b"], &["`a..b`"]),
        (&["--credentials", "password:x"], &["credentials"]),
    ];
    for (extra, needles) in cases {
        let args = [&enable[..], extra].concat();
        g.db.refused(&args, None, 2, needles);
    }
    let run = g.run(&["gitops", "status", "--org", ORG]);
    assert_one_line_error(&run, 1, &["not found"], &["status"]);
}

#[test]
fn enable_refuses_a_url_with_credentials_without_repeating_them() {
    let g = Gitops::new();
    for output in ["text", "json"] {
        let args = [
            "gitops",
            "enable",
            "--org",
            ORG,
            "--repo",
            "https://user:s3cret@git.example.com/x.git",
            "--output",
            output,
        ];
        let run = g.db.run(&args);
        assert_eq!(run.code, 2, "{run:?}");
        assert!(run.stdout.is_empty(), "{run:?}");
        assert!(!run.stderr.contains("s3cret"), "{run:?}");
        assert!(run.stderr.contains("***"), "{run:?}");
    }
    let audit = g.db.json(&["audit", "list"]);
    assert!(!audit.to_string().contains("s3cret"));
    assert!(!audit.to_string().contains("gitops.enable"));
}

#[test]
fn enable_prints_the_settings_and_takes_the_org_over() {
    let g = Gitops::new();
    let url = g.repo.url();
    let run = g.ok(&[
        "gitops",
        "enable",
        "--org",
        ORG,
        "--repo",
        &url,
        "--prune",
        "--drift",
        "heal",
        "--max-removal",
        "50%",
    ]);
    assert!(run.stdout.starts_with(&format!(
        "GitOps enabled for `team-alpha`: {url} at `main`, file `ias.yaml`; prune on, drift \
         heal, removal guard 50%"
    )));
    let state = g.json(&["gitops", "status", "--org", ORG], 1);
    let state = &state["items"][0];
    let settings = &state["settings"];
    assert_eq!(settings["repo_url"], url.as_str());
    assert_eq!(settings["prune"], true);
    assert_eq!(settings["drift"], "heal");
    assert_eq!(settings["max_removal_percent"], 50);
    assert_eq!(state["status"]["reason"], "never_synced");
}

// --- plan -------------------------------------------------------------------

#[test]
fn plan_exits_2_for_changes_and_0_for_none() {
    let g = Gitops::new();
    let first = g.repo.commit(GOOD);
    g.ok(&["gitops", "enable", "--org", ORG, "--repo", &g.repo.url()]);

    let run = g.run(&["gitops", "plan", "--org", ORG]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.is_empty(), "{run:?}");
    assert!(
        run.stdout
            .lines()
            .any(|l| l == "~ org:team-alpha budget.monthly_tokens: 1000 -> 5000"),
        "{run:?}"
    );
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("+ user:alice@example.com ")),
        "{run:?}"
    );
    let plan = g.json(&["gitops", "plan", "--org", ORG], 2);
    assert_eq!(plan["org"], ORG);
    assert_eq!(plan["commit"], first.as_str());
    assert!(plan["refused"].is_null());
    let changes = plan["changes"].as_array().unwrap();
    assert!(changes.iter().any(|c| c["op"] == "change"
        && c["target"] == "org:team-alpha"
        && c["field"] == "budget.monthly_tokens"
        && c["before"] == 1000
        && c["after"] == 5000));
    // Planning writes nothing.
    assert_eq!(g.org_budget(), 1000);

    g.ok(&["gitops", "sync", "--org", ORG]);
    let run = g.run(&["gitops", "plan", "--org", ORG]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stdout.trim(),
        "no changes: `team-alpha` already matches the file"
    );
    let plan = g.json(&["gitops", "plan", "--org", ORG], 0);
    assert_eq!(plan["changes"], Value::Array(Vec::new()));

    let second = g.repo.commit(LOWER_BUDGET);
    let run = g.run(&["gitops", "plan", "--org", ORG]);
    assert_eq!(run.code, 2, "{run:?}");
    assert_eq!(
        run.stdout.trim(),
        "~ org:team-alpha budget.monthly_tokens: 5000 -> 4000"
    );
    assert_eq!(
        g.json(&["gitops", "plan", "--org", ORG], 2)["commit"],
        second.as_str()
    );
}

#[test]
fn plan_of_a_local_file_has_no_commit() {
    let (g, _) = Gitops::synced();
    let (_dir, path) = file(LOWER_BUDGET);
    let path = path.to_str().unwrap();
    let plan = g.json(&["gitops", "plan", "--org", ORG, "--file", path], 2);
    assert!(plan["commit"].is_null());
    assert_eq!(plan["changes"].as_array().unwrap().len(), 1);
}

#[test]
fn plan_names_who_a_lowered_limit_blocks_at_once() {
    let (g, _) = Gitops::synced();
    let key =
        g.db.json(&["key", "create", "--email", "alice@example.com"]);
    g.db.spend(key["secret"].as_str().unwrap(), "gpt-4o-mini", 800);
    g.repo
        .commit(&GOOD.replace("monthly_token_limit: 1000", "monthly_token_limit: 500"));
    let run = g.run(&["gitops", "plan", "--org", ORG]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stdout.contains(
            "blocked at once: user:alice@example.com has used 800 tokens this month, over its \
             new limit of 500"
        ),
        "{run:?}"
    );
}

#[test]
fn plan_exits_1_for_every_error_never_2() {
    let g = Gitops::new();
    g.repo.commit(GOOD);

    // Not enabled, an unknown org, and an invalid slug (an invalid value elsewhere is 2).
    let run = g.run(&["gitops", "plan", "--org", ORG]);
    assert_one_line_error(&run, 1, &["not found"], &["plan"]);
    let run = g.run(&["gitops", "plan", "--org", "nope"]);
    assert_one_line_error(&run, 1, &["`nope`", "not found"], &["plan"]);
    let run = g.run(&["gitops", "plan", "--org", "Not_A_Slug"]);
    assert_one_line_error(&run, 1, &["`Not_A_Slug`"], &["plan"]);

    // An unreachable repository.
    let gone = g.repo.path().join("gone");
    let url = format!("file://{}", gone.display());
    g.ok(&["gitops", "enable", "--org", ORG, "--repo", &url]);
    let run = g.run(&["gitops", "plan", "--org", ORG]);
    assert_one_line_error(&run, 1, &[], &["plan"]);
    let run = g.run(&["gitops", "plan", "--org", ORG, "--output", "json"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
    let body: Value = serde_json::from_str(&run.stderr).unwrap();
    assert!(body["error"]["kind"].is_string(), "{run:?}");

    // A file with errors, at the ref or given locally.
    g.ok(&["gitops", "enable", "--org", ORG, "--repo", &g.repo.url()]);
    g.repo.commit(SIX_ERRORS);
    let (_dir, path) = file(SIX_ERRORS);
    let path = path.to_str().unwrap();
    for (args, name) in [
        (&["gitops", "plan", "--org", ORG][..], "ias.yaml"),
        (&["gitops", "plan", "--org", ORG, "--file", path], path),
    ] {
        let run = g.run(args);
        assert_eq!(run.code, 1, "{args:?}: {run:?}");
        assert!(run.stdout.is_empty(), "{args:?}: {run:?}");
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(
            lines[0],
            format!("error: {name} has 6 error(s); nothing was applied")
        );
        assert_eq!(lines.len(), 7, "every error is listed: {run:?}");
        assert!(
            lines[1].starts_with(&format!("{name}:2:6: org: ")),
            "{run:?}"
        );
        assert!(lines[6].starts_with(&format!("{name}:12:19: ")), "{run:?}");

        let json = [args, &["--output", "json"]].concat();
        let run = g.run(&json);
        assert_eq!(run.code, 1, "{json:?}: {run:?}");
        let body: Value = serde_json::from_str(&run.stderr).unwrap();
        assert_eq!(body["error"]["errors"].as_array().unwrap().len(), 6);
    }
    let run = g.run(&["gitops", "plan", "--org", ORG, "--file", "missing.yaml"]);
    assert_one_line_error(&run, 1, &["`missing.yaml`"], &["plan --file"]);
}

// --- sync -------------------------------------------------------------------

#[test]
fn sync_applies_the_file_and_prints_the_state() {
    let g = Gitops::new();
    let commit = g.repo.commit(GOOD);
    g.ok(&["gitops", "enable", "--org", ORG, "--repo", &g.repo.url()]);
    let run = g.ok(&["gitops", "sync", "--org", ORG]);
    let shown = fields(&run.stdout);
    assert_eq!(shown["org"], ORG);
    assert_eq!(shown["status"], "synced (synced)");
    assert_eq!(shown["applied"], short(&commit));
    assert_eq!(shown["failures"], "0");
    assert_eq!(g.org_budget(), 5000);
    assert_eq!(g.emails(), ["alice@example.com", "bob@example.com"]);

    let state = g.json(&["gitops", "sync", "--org", ORG], 0);
    assert_eq!(state["status"]["status"], "synced");
    assert_eq!(state["status"]["last_applied_commit"], commit.as_str());
    assert_eq!(state["inventory"]["commit"], commit.as_str());

    // The apply is audited as coming from GitOps.
    let entries = g.db.items(&["audit", "list", "--action", "gitops.apply"]);
    assert!(!entries.is_empty());
    assert!(entries.iter().all(|e| e["source"] == "gitops"));
}

#[test]
fn sync_of_a_bad_file_exits_1_prints_the_error_status_and_applies_nothing() {
    let (g, good) = Gitops::synced();
    let bad = g.repo.commit(SIX_ERRORS);
    let run = g.run(&["gitops", "sync", "--org", ORG]);
    assert_eq!(run.code, 1, "{run:?}");
    let shown = fields(&run.stdout);
    assert_eq!(shown["status"], "error (invalid_file)");
    assert_eq!(shown["applied"], short(&good));
    assert_eq!(shown["attempted"], short(&bad));
    assert_eq!(shown["failures"], "1");
    assert!(shown["message"].contains("ias.yaml: 2:6: org: "), "{run:?}");
    assert!(
        shown["message"].contains("users[1].rate_limits.tmp"),
        "{run:?}"
    );
    assert_eq!(g.org_budget(), 5000);
    assert_eq!(g.emails(), ["alice@example.com", "bob@example.com"]);

    let state = g.json(&["gitops", "sync", "--org", ORG], 1);
    assert_eq!(state["status"]["status"], "error");
    assert_eq!(state["status"]["consecutive_failures"], 2);
}

#[test]
fn sync_of_an_org_without_gitops_fails() {
    let g = Gitops::new();
    let run = g.run(&["gitops", "sync", "--org", ORG]);
    assert_one_line_error(&run, 1, &["not found"], &["sync"]);
}

// --- status -----------------------------------------------------------------

#[test]
fn status_exits_0_only_when_every_org_shown_is_synced() {
    let (g, commit) = Gitops::synced();
    let run = g.ok(&["gitops", "status", "--org", ORG]);
    assert_eq!(fields(&run.stdout)["status"], "synced (synced)");

    // A second organization, enabled but not synced yet.
    let beta = Repo::new();
    beta.commit(
        &GOOD
            .replace("team-alpha", "team-beta")
            .replace("example.com", "beta.test"),
    );
    g.db.create_org("team-beta", 1000);
    g.ok(&[
        "gitops",
        "enable",
        "--org",
        "team-beta",
        "--repo",
        &beta.url(),
    ]);

    let run = g.run(&["gitops", "status"]);
    assert_eq!(run.code, 1, "{run:?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{run:?}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        ["ORG", "STATUS", "REASON", "APPLIED", "DRIFT", "MESSAGE"]
    );
    assert!(
        lines[1].starts_with("team-alpha  synced       synced        "),
        "{run:?}"
    );
    assert!(lines[1].contains(short(&commit)), "{run:?}");
    assert!(
        lines[2].starts_with("team-beta   out_of_sync  never_synced  -"),
        "{run:?}"
    );
    // One organization shown, synced: 0, whatever the others.
    g.ok(&["gitops", "status", "--org", ORG]);
    let run = g.run(&["gitops", "status", "--org", "team-beta"]);
    assert_eq!(run.code, 1, "{run:?}");

    let states = g.json(&["gitops", "status"], 1);
    let slugs: Vec<&str> = states["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["settings"]["org_slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, [ORG, "team-beta"]);

    // A page at a time: the first page names where the second starts.
    let first = g.run(&["gitops", "status", "--limit", "1"]);
    assert_eq!(first.stdout.lines().count(), 2, "{first:?}");
    assert!(first.stdout.contains("team-alpha"), "{first:?}");
    let alpha = &states["items"][0]["settings"]["org_id"];
    assert_eq!(first.stderr, format!("next page: --after {alpha}\n"));
    let after = alpha.to_string();
    let second = g.json(&["gitops", "status", "--limit", "1", "--after", &after], 1);
    assert_eq!(second["items"][0]["settings"]["org_slug"], "team-beta");
    assert_eq!(second["next_after"], Value::Null);

    g.ok(&["gitops", "sync", "--org", "team-beta"]);
    g.ok(&["gitops", "status"]);
}

#[test]
fn status_with_no_org_enabled_exits_1() {
    let g = Gitops::new();
    let run = g.run(&["gitops", "status"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.stdout.trim(), "GitOps is enabled for no organization");
    let none = serde_json::json!({"items": [], "next_after": null});
    assert_eq!(g.json(&["gitops", "status"], 1), none);
}

#[test]
fn status_shows_an_error_as_an_error() {
    let (g, _) = Gitops::synced();
    std::fs::remove_dir_all(g.repo.path().join(".git")).unwrap();
    let run = g.run(&["gitops", "sync", "--org", ORG]);
    assert_eq!(run.code, 1, "{run:?}");
    let run = g.run(&["gitops", "status", "--org", ORG]);
    assert_eq!(run.code, 1, "{run:?}");
    let shown = fields(&run.stdout);
    assert_eq!(shown["status"], "error (fetch_failed)");
    assert_ne!(shown["next retry"], "-");
    // The last good state stays.
    assert_eq!(g.emails(), ["alice@example.com", "bob@example.com"]);
}

// --- field ownership, break-glass and drift -----------------------------------

#[test]
fn a_write_to_a_git_owned_field_is_a_conflict_naming_the_repo_and_commit() {
    let (g, commit) = Gitops::synced();
    let url = g.repo.url();
    let writes: [&[&str]; 3] = [
        &[
            "user",
            "set-limit",
            "--email",
            "bob@example.com",
            "--monthly-token-limit",
            "7",
        ],
        &["model", "allow", "--org", ORG, "--model", "gpt-4o"],
        &["limits", "set", "--org", ORG, "--rpm", "10"],
    ];
    for args in writes {
        let run =
            g.db.refused(args, None, 1, &[&url, short(&commit), "break-glass"]);
        assert!(!run.stderr.contains(&commit), "the full commit: {run:?}");
    }
    let run = g.ok(&["gitops", "drift", "--org", ORG]);
    assert!(run.stdout.starts_with("no drift"), "{run:?}");
}

#[test]
fn drift_shows_a_break_glass_change_and_exits_2() {
    let (g, _) = Gitops::synced();
    let run = g.run(&["gitops", "drift", "--org", ORG]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stdout.trim(),
        "no drift: `team-alpha` matches the file last applied"
    );
    assert_eq!(
        g.json(&["gitops", "drift", "--org", ORG], 0),
        Value::Array(Vec::new())
    );

    g.ok(&[
        "--break-glass",
        "user",
        "set-limit",
        "--email",
        "bob@example.com",
        "--monthly-token-limit",
        "7",
    ]);
    let run = g.run(&["gitops", "drift", "--org", ORG]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.is_empty(), "{run:?}");
    assert_eq!(
        run.stdout.trim(),
        "~ user:bob@example.com monthly_token_limit: 7 -> null"
    );
    let drift = g.json(&["gitops", "drift", "--org", ORG], 2);
    let changes = drift.as_array().unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0]["target"], "user:bob@example.com");
    assert_eq!(changes[0]["field"], "monthly_token_limit");
    assert_eq!(changes[0]["before"], 7);

    // The forced write shows in the status at once, and is audited.
    let run = g.run(&["gitops", "status", "--org", ORG]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(fields(&run.stdout)["status"], "out_of_sync (break_glass)");
    let audit = g.db.items(&["audit", "list", "--action", "user.set_limit"]);
    assert_eq!(audit.len(), 1);

    // Errors are 1 here too.
    let run = g.run(&["gitops", "drift", "--org", "Not_A_Slug"]);
    assert_one_line_error(&run, 1, &["`Not_A_Slug`"], &["drift"]);
}

#[test]
fn break_glass_on_an_org_without_gitops_changes_nothing_special() {
    let g = Gitops::new();
    g.db.create_user(ORG, "bob@example.com", "member");
    g.ok(&[
        "--break-glass",
        "user",
        "set-limit",
        "--email",
        "bob@example.com",
        "--monthly-token-limit",
        "7",
    ]);
    let run = g.run(&["gitops", "drift", "--org", ORG]);
    assert_one_line_error(&run, 1, &["not found"], &["drift"]);
}

// --- suspend, resume, disable -------------------------------------------------

#[test]
fn a_suspended_org_is_reported_on_and_not_applied_until_resumed() {
    let (g, _) = Gitops::synced();
    let run = g.ok(&["gitops", "suspend", "--org", ORG]);
    assert_eq!(run.stdout.trim(), "GitOps suspended for `team-alpha`");
    let run = g.ok(&["gitops", "suspend", "--org", ORG]);
    assert_eq!(
        run.stdout.trim(),
        "GitOps was already suspended for `team-alpha`; nothing changed"
    );
    let json = g.json(&["gitops", "suspend", "--org", ORG], 0);
    assert_eq!(json["changed"], false);

    let next = g.repo.commit(LOWER_BUDGET);
    let run = g.run(&["gitops", "sync", "--org", ORG]);
    assert_eq!(run.code, 1, "{run:?}");
    let shown = fields(&run.stdout);
    assert_eq!(shown["status"], "suspended (suspended)");
    assert_eq!(
        shown["message"],
        format!(
            "suspended: 1 change(s) from {} wait to be applied",
            short(&next)
        )
    );
    assert_eq!(g.org_budget(), 5000);
    let run = g.run(&["gitops", "status"]);
    assert_eq!(run.code, 1, "{run:?}");

    let run = g.ok(&["gitops", "resume", "--org", ORG]);
    assert_eq!(run.stdout.trim(), "GitOps resumed for `team-alpha`");
    let run = g.ok(&["gitops", "sync", "--org", ORG]);
    assert_eq!(fields(&run.stdout)["applied"], short(&next));
    assert_eq!(g.org_budget(), 4000);

    let actions: Vec<String> =
        g.db.items(&["audit", "list", "--org", ORG])
            .iter()
            .map(|e| e["action"].as_str().unwrap().to_owned())
            .collect();
    assert!(actions.contains(&"gitops.suspend".to_owned()));
    assert!(actions.contains(&"gitops.resume".to_owned()));
}

#[test]
fn disable_hands_the_fields_back_to_the_api() {
    let (g, _) = Gitops::synced();
    let run = g.ok(&["gitops", "disable", "--org", ORG]);
    assert_eq!(
        run.stdout.trim(),
        "GitOps disabled for `team-alpha`; its fields are managed through the API again"
    );
    g.ok(&[
        "user",
        "set-limit",
        "--email",
        "bob@example.com",
        "--monthly-token-limit",
        "7",
    ]);
    let run = g.run(&["gitops", "status", "--org", ORG]);
    assert_one_line_error(&run, 1, &["not found"], &["status"]);
    let run = g.run(&["gitops", "plan", "--org", ORG]);
    assert_one_line_error(&run, 1, &["not found"], &["plan"]);

    let run = g.ok(&["gitops", "disable", "--org", ORG]);
    assert_eq!(
        run.stdout.trim(),
        "GitOps was not enabled for `team-alpha`; nothing changed"
    );
    let json = g.json(&["gitops", "disable", "--org", ORG], 0);
    assert_eq!(json, serde_json::json!({ "org": ORG, "changed": false }));
    let run = g.run(&["gitops", "disable", "--org", "nope"]);
    assert_one_line_error(&run, 1, &["`nope`"], &["disable"]);
}

// --- run --------------------------------------------------------------------

#[test]
fn run_applies_a_new_commit_within_seconds_and_stops_on_sigterm() {
    let (g, _) = Gitops::synced();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ias-admin"))
        .args(g.args(&["gitops", "run", "--interval", "1"]))
        .current_dir(g.db.dir.path())
        .env_remove("IAS_DATABASE_URL")
        .env_remove("RUST_LOG")
        .envs(g.cache_env())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let next = g.repo.commit(WITH_CAROL);
    let started = Instant::now();
    while !g.emails().contains(&"carol@example.com".to_owned()) {
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("not applied after 30 s: {:?}", child.wait_with_output());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(g.status()["status"]["last_applied_commit"], next.as_str());

    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let stopped = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if stopped.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            panic!("still running 15 s after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(status.code(), Some(0), "{stdout} {stderr}");
    assert_eq!(stdout.trim(), "stopped");
    assert!(
        stderr.contains("reconciling every 1 s; Ctrl-C or SIGTERM stops"),
        "{stderr}"
    );
}

#[test]
fn run_refuses_an_interval_of_0() {
    let g = Gitops::new();
    let run = g.run(&["gitops", "run", "--interval", "0"]);
    assert_one_line_error(&run, 2, &["interval", "`0`"], &["run"]);
}

// --- help -------------------------------------------------------------------

/// Exit 2 means "changes" for `plan` and `drift`: each command's own help must say so,
/// not only `ias-admin gitops --help`.
#[test]
fn each_gitops_command_lists_the_gitops_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let commands = [
        "enable", "disable", "suspend", "resume", "sync", "status", "drift", "plan", "validate",
        "run",
    ];
    for command in commands {
        let run = common::run_in(dir.path(), &["gitops", command, "--help"], None);
        assert_eq!(run.code, 0, "{command}: {run:?}");
        assert!(
            run.stdout
                .contains("2  plan, drift: there are changes; other commands:"),
            "{command}: {run:?}"
        );
    }
}
