//! The reconciler against a token-protected smart HTTP remote with an
//! `env:` credentials setting. In a test binary of its own: setting a
//! variable is only sound while no other thread reads the environment
//! outside std's own lock.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;

use ias_core::gitops::reconcile::{ManifestSource, Reconciler, ReconcilerConfig};
use ias_core::gitops::{GitopsState, NewGitopsSettings, SyncStatus};
use ias_core::{Actor, Admin, Source, Store};
use ias_gitops::{GitManifestSource, check_settings};
use ias_store_sqlite::SqliteStore;
use support::{GitHttpServer, Upstream};

const VARIABLE: &str = "IAS_GITOPS_E2E_TOKEN";
const TOKEN: &str = "e2e-env-token-3c51d8";
const WRONG: &str = "e2e-env-wrong-a09e44";

#[expect(
    unsafe_code,
    reason = "`set_var` is unsafe; only this binary's one test runs, and nothing runs while it sets"
)]
fn set_token(value: &str) {
    // SAFETY: this binary runs one test, which calls this only between
    // syncs: no fetch, store call or server request is under way, so no
    // other thread reads the environment. The test server's threads read
    // it only through std (spawning `git http-backend`), under the lock
    // that `set_var` takes.
    unsafe { std::env::set_var(VARIABLE, value) };
}

fn file(bob_limit: i64) -> String {
    format!(
        "version: 1\norg: acme\nbudget:\n  monthly_tokens: 4000000\nallowed_models: [gpt-4o-mini]\n\
         users:\n  - email: alice@acme.io\n    role: org_admin\n  \
         - email: bob@acme.io\n    role: member\n    monthly_token_limit: {bob_limit}\n"
    )
}

#[test]
fn an_env_token_syncs_and_a_wrong_one_is_a_fetch_failure_without_the_token() {
    set_token(TOKEN);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let upstream = Upstream::new();
    let server = GitHttpServer::start_with_token(&upstream.project_root(), Some(TOKEN));
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = runtime
        .block_on(SqliteStore::open(dir.path().join("ias.db")))
        .unwrap();
    let admin = Admin::new(
        store.clone(),
        Actor::Operator { name: "ops".into() },
        Source::Library,
    );
    let mut settings = NewGitopsSettings::new(server.url());
    settings.credentials = Some(format!("env:{VARIABLE}"));
    check_settings(&settings).unwrap();
    let org = runtime.block_on(async {
        let org = admin.create_org("acme", 5_000_000, "UTC").await.unwrap();
        admin.gitops_enable("acme", settings).await.unwrap();
        org
    });
    // A new source per sync, as each `ias-admin gitops sync` has.
    let sync = || -> GitopsState {
        let source: Arc<dyn ManifestSource> =
            Arc::new(GitManifestSource::new(dir.path().join("cache")).unwrap());
        let reconciler = Reconciler::new(store.clone(), source, ReconcilerConfig::default());
        runtime.block_on(reconciler.sync_org(org.id)).unwrap()
    };

    let first = upstream.commit_and_push("ias.yaml", file(1_000).as_bytes());
    let state = sync();
    assert_eq!(
        state.status.status,
        SyncStatus::Synced,
        "{}",
        state.status.message
    );
    assert_eq!(
        state.status.last_applied_commit.as_deref(),
        Some(first.as_str())
    );

    set_token(WRONG);
    let second = upstream.commit_and_push("ias.yaml", file(2_000).as_bytes());
    let state = sync();
    assert_eq!(
        (state.status.status, state.status.reason.as_str()),
        (SyncStatus::Error, "fetch_failed")
    );
    let message = &state.status.message;
    assert!(message.contains("authentication"), "{message}");
    assert!(
        !message.contains(TOKEN) && !message.contains(WRONG),
        "{message}"
    );
    assert_eq!(
        state.status.last_applied_commit.as_deref(),
        Some(first.as_str())
    );
    let bob = runtime.block_on(admin.user("bob@acme.io")).unwrap();
    assert_eq!(bob.monthly_token_limit, Some(1_000));

    set_token(TOKEN);
    let state = sync();
    assert_eq!(
        state.status.status,
        SyncStatus::Synced,
        "{}",
        state.status.message
    );
    assert_eq!(
        state.status.last_applied_commit.as_deref(),
        Some(second.as_str())
    );

    let recorded = runtime.block_on(async {
        let audit = store.list_audit(None, 10_000).await.unwrap();
        let states = store.gitops_states(None, 1_000).await.unwrap();
        serde_json::to_string(&(audit, states)).unwrap()
    });
    assert!(
        recorded.contains("authentication"),
        "the failure was recorded"
    );
    assert!(!recorded.contains(TOKEN) && !recorded.contains(WRONG));
}
