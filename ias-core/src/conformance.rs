//! The storage conformance suite: one async function per storage behaviour.
//!
//! Every store crate runs the whole list through [`conformance_suite!`],
//! each function against a fresh, empty store:
//!
//! ```text
//! ias_core::conformance_suite!(async { my_store::open_fresh().await });
//! ```
//!
//! A bug found in one backend becomes a function here, so every backend is
//! checked against it. A failed check panics, like `assert!`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test support: a failed check panics like an assertion"
)]

mod audit_log;
mod passwords;
mod rbac;

pub use audit_log::{
    audit_entries_are_filtered, audit_entries_can_be_appended_alone,
    the_audit_chain_reads_oldest_first,
};
pub use passwords::{
    a_reset_replaces_the_password, a_weak_password_lists_every_broken_rule,
    no_secret_reaches_the_audit_log, only_system_admins_reset_passwords,
    password_hashes_are_stored_with_their_audit_entry, resetting_an_unknown_user_is_not_found,
};
pub use rbac::{MATRIX, escalations_are_denied_and_audited, permission_matrix_holds};

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use crate::audit::{Actor, GENESIS_HASH, Source, chain_hash};
use crate::budget::{LimitScope, ReserveOutcome, ReserveRequest};
use crate::domain::{KeyId, OrgId, ReservationId, Role, UserId};
use crate::error::Error;
use crate::rbac::builtin_grants;
use crate::{Admin, CreatedKey, Store};

/// Generates one `#[tokio::test]` per conformance function.
///
/// `$fresh` is an expression evaluating to a future of `Arc<dyn Store>`
/// (or a type that coerces to it) on a fresh, empty database.
#[macro_export]
macro_rules! conformance_suite {
    ($fresh:expr) => {
        $crate::conformance_suite!(@cases $fresh;
            fresh_schema_is_migrated_and_seeded,
            orgs_are_created_listed_and_unique,
            a_failed_write_leaves_no_trace,
            users_have_unique_normalised_emails,
            user_limits_can_be_set_and_cleared,
            keys_are_found_by_hash_with_their_context,
            revoking_is_recorded_once,
            allowing_models_is_idempotent,
            reservations_hold_and_settle_exactly,
            a_request_that_does_not_fit_changes_nothing,
            user_limit_applies_while_org_has_budget,
            overshoot_is_charged_in_full,
            settling_twice_is_refused,
            released_tokens_return_to_the_budget,
            expired_reservations_are_released,
            concurrent_reservations_never_overspend,
            audit_entries_form_a_hash_chain,
            usage_reports_by_user_and_model,
            governor_allows_reserves_and_settles,
            governor_check_reserves_nothing,
            governor_denies_bad_keys,
            governor_denies_models_and_exhausted_budgets,
            audit_entries_can_be_appended_alone,
            audit_entries_are_filtered,
            the_audit_chain_reads_oldest_first,
            permission_matrix_holds,
            escalations_are_denied_and_audited,
            password_hashes_are_stored_with_their_audit_entry,
            a_reset_replaces_the_password,
            a_weak_password_lists_every_broken_rule,
            resetting_an_unknown_user_is_not_found,
            only_system_admins_reset_passwords,
            no_secret_reaches_the_audit_log,
        );
    };
    (@cases $fresh:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let store: ::std::sync::Arc<dyn $crate::Store> = $fresh.await;
                $crate::conformance::$case(store).await;
            }
        )*
    };
}

const PERIOD: &str = "2026-12";

fn now() -> DateTime<Utc> {
    Utc::now()
}

fn admin(store: &Arc<dyn Store>) -> Admin {
    Admin::new(
        store.clone(),
        Actor::Operator {
            name: "conformance".into(),
        },
        Source::Library,
    )
}

/// One org `acme` (budget `budget`), one user `u@acme.io` (limit `limit`), one key.
struct Fixture {
    org: OrgId,
    user: UserId,
    key: KeyId,
}

async fn fixture(store: &Arc<dyn Store>, budget: i64, limit: Option<i64>) -> Fixture {
    let admin = admin(store);
    let org = admin.create_org("acme", budget, "UTC").await.unwrap();
    let user = admin
        .create_user("acme", "u@acme.io", Role::Member, limit)
        .await
        .unwrap();
    let key = admin.create_key("u@acme.io", None).await.unwrap();
    Fixture {
        org: org.id,
        user: user.id,
        key: key.key.id,
    }
}

fn request(f: &Fixture, tokens: i64) -> ReserveRequest {
    ReserveRequest {
        org_id: f.org,
        user_id: f.user,
        key_id: f.key,
        model: "gpt-4o-mini".into(),
        period: PERIOD.into(),
        tokens,
        created_at: now(),
        expires_at: now() + Duration::minutes(15),
    }
}

async fn reserve_ok(store: &Arc<dyn Store>, req: &ReserveRequest) -> ReservationId {
    match store.reserve(req).await.unwrap() {
        ReserveOutcome::Reserved { id, .. } => id,
        ReserveOutcome::Exceeded(e) => panic!("expected a reservation, got {e:?}"),
    }
}

async fn audit_count(store: &Arc<dyn Store>) -> usize {
    store.list_audit(None, 10_000).await.unwrap().len()
}

/// A fresh store is at the newest schema version with the built-in grants seeded.
pub async fn fresh_schema_is_migrated_and_seeded(store: Arc<dyn Store>) {
    assert!(store.schema_version().await.unwrap() >= 1);
    let seeded: HashSet<_> = store.all_grants().await.unwrap().into_iter().collect();
    let expected: HashSet<_> = builtin_grants().into_iter().collect();
    assert_eq!(seeded, expected);
    assert!(store.list_orgs().await.unwrap().is_empty());
}

/// Orgs are created with their fields, listed by slug, and slugs are unique.
pub async fn orgs_are_created_listed_and_unique(store: Arc<dyn Store>) {
    let admin = admin(&store);
    let zeta = admin.create_org("zeta", 10, "Europe/Berlin").await.unwrap();
    admin.create_org("alpha", 20, "UTC").await.unwrap();
    assert_eq!(zeta.timezone, chrono_tz::Europe::Berlin);
    assert_eq!(zeta.monthly_token_budget, 10);
    let slugs: Vec<_> = store
        .list_orgs()
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.slug)
        .collect();
    assert_eq!(slugs, ["alpha", "zeta"]);
    let found = store.org_by_slug("zeta").await.unwrap().unwrap();
    assert_eq!(found, zeta);
    let entries = store.list_audit(Some(zeta.id), 10).await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].target_id, Some(zeta.id.0));
    assert!(matches!(
        admin.create_org("zeta", 1, "UTC").await,
        Err(Error::Conflict { .. })
    ));
}

/// A write that fails writes neither the change nor its audit entry.
pub async fn a_failed_write_leaves_no_trace(store: Arc<dyn Store>) {
    let admin = admin(&store);
    admin.create_org("acme", 10, "UTC").await.unwrap();
    admin
        .create_user("acme", "a@acme.io", Role::Member, None)
        .await
        .unwrap();
    let before = audit_count(&store).await;
    assert!(admin.create_org("acme", 99, "UTC").await.is_err());
    assert!(
        admin
            .create_user("acme", "A@ACME.io", Role::Member, None)
            .await
            .is_err()
    );
    assert_eq!(audit_count(&store).await, before);
    let org = store.org_by_slug("acme").await.unwrap().unwrap();
    assert_eq!(org.monthly_token_budget, 10);
    assert_eq!(store.list_users(org.id).await.unwrap().len(), 1);
}

/// Emails are unique across organizations, whatever their letter case.
pub async fn users_have_unique_normalised_emails(store: Arc<dyn Store>) {
    let admin = admin(&store);
    admin.create_org("one", 10, "UTC").await.unwrap();
    admin.create_org("two", 10, "UTC").await.unwrap();
    let bob = admin
        .create_user("one", "Bob@Example.com", Role::OrgAdmin, None)
        .await
        .unwrap();
    assert_eq!(bob.email, "bob@example.com");
    assert_eq!(bob.role, Role::OrgAdmin);
    let dup = admin
        .create_user("two", "BOB@example.COM", Role::Member, None)
        .await;
    assert!(matches!(dup, Err(Error::Conflict { .. })), "{dup:?}");
    assert_eq!(
        store.user_by_email("bob@example.com").await.unwrap(),
        Some(bob)
    );
}

/// A user's own limit can be set and cleared (NULL: only the org budget applies).
pub async fn user_limits_can_be_set_and_cleared(store: Arc<dyn Store>) {
    let f = fixture(&store, 100, Some(50)).await;
    let admin = admin(&store);
    let user = admin.set_user_limit("u@acme.io", Some(70)).await.unwrap();
    assert_eq!(user.monthly_token_limit, Some(70));
    let user = admin.set_user_limit("u@acme.io", None).await.unwrap();
    assert_eq!(user.monthly_token_limit, None);
    let state = store.budget_state(f.org, f.user, PERIOD).await.unwrap();
    assert_eq!(state.user_limit, None);
}

/// The hot-path lookup finds a key by hash with its user, org and allowed models.
pub async fn keys_are_found_by_hash_with_their_context(store: Arc<dyn Store>) {
    let first = acme_with_key(&store, 100, None).await;
    let admin = admin(&store);
    let second = admin.create_key("u@acme.io", None).await.unwrap();
    let ctx = store
        .key_context(&first.secret.hash())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ctx.key, first.key);
    assert_eq!(ctx.user.email, "u@acme.io");
    assert_eq!(ctx.org.slug, "acme");
    assert_eq!(ctx.allowed_models, ["gpt-4o-mini"]);
    assert!(first.key.expires_at.is_some());
    let unknown = crate::KeySecret::generate();
    assert!(store.key_context(&unknown.hash()).await.unwrap().is_none());
    let ids: Vec<_> = admin
        .list_keys("u@acme.io")
        .await
        .unwrap()
        .iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(ids, [second.key.id, first.key.id]);
}

/// Org `acme` allowing `gpt-4o-mini`, member `u@acme.io`, and a key valid for one day.
async fn acme_with_key(store: &Arc<dyn Store>, budget: i64, limit: Option<i64>) -> CreatedKey {
    let admin = admin(store);
    admin.create_org("acme", budget, "UTC").await.unwrap();
    admin.allow_model("acme", "gpt-4o-mini").await.unwrap();
    admin
        .create_user("acme", "u@acme.io", Role::Member, limit)
        .await
        .unwrap();
    admin
        .create_key("u@acme.io", Some(Duration::days(1)))
        .await
        .unwrap()
}

/// A key is revoked once; a second revoke and an unknown key are errors.
pub async fn revoking_is_recorded_once(store: Arc<dyn Store>) {
    let f = fixture(&store, 100, None).await;
    let admin = admin(&store);
    let revoked = admin.revoke_key(f.key).await.unwrap();
    assert!(revoked.revoked_at.is_some());
    let entry = store.list_audit(None, 1).await.unwrap().remove(0);
    assert_eq!(entry.record.action, "key.revoke");
    assert_eq!(entry.record.target, format!("key:{}", revoked.prefix));
    assert_eq!(entry.target_id, Some(f.key.0));
    let before = audit_count(&store).await;
    assert!(matches!(
        admin.revoke_key(f.key).await,
        Err(Error::Conflict { .. })
    ));
    assert!(matches!(
        admin.revoke_key(KeyId(9_999)).await,
        Err(Error::NotFound { .. })
    ));
    let direct = store.revoke_key(f.key, now(), &sample_record()).await;
    assert!(matches!(direct, Err(Error::Conflict { .. })), "{direct:?}");
    assert_eq!(audit_count(&store).await, before);
}

fn sample_record() -> crate::AuditRecord {
    crate::AuditRecord {
        at: now(),
        actor: "operator:conformance".into(),
        source: Source::Library,
        action: "test".into(),
        org_id: None,
        target: "test".into(),
        changes: serde_json::json!({}),
    }
}

/// Allowing or denying a model twice changes, and audits, only once.
pub async fn allowing_models_is_idempotent(store: Arc<dyn Store>) {
    let admin = admin(&store);
    let org = admin.create_org("acme", 100, "UTC").await.unwrap();
    assert!(
        admin
            .allow_model("acme", " GPT-4o-Mini ")
            .await
            .unwrap()
            .changed
    );
    let before = audit_count(&store).await;
    assert!(
        !admin
            .allow_model("acme", "gpt-4o-mini")
            .await
            .unwrap()
            .changed
    );
    assert_eq!(audit_count(&store).await, before);
    admin.allow_model("acme", "anthropic/*").await.unwrap();
    assert_eq!(
        store.allowed_models(org.id).await.unwrap(),
        ["anthropic/*", "gpt-4o-mini"]
    );
    assert!(
        admin
            .deny_model("acme", "gpt-4o-mini")
            .await
            .unwrap()
            .changed
    );
    assert!(
        !admin
            .deny_model("acme", "gpt-4o-mini")
            .await
            .unwrap()
            .changed
    );
    assert_eq!(store.allowed_models(org.id).await.unwrap(), ["anthropic/*"]);
}

/// Reserving holds tokens on both counters; settling moves them to used.
pub async fn reservations_hold_and_settle_exactly(store: Arc<dyn Store>) {
    let f = fixture(&store, 100, Some(80)).await;
    let id = reserve_ok(&store, &request(&f, 30)).await;
    let held = store.budget_state(f.org, f.user, PERIOD).await.unwrap();
    assert_eq!((held.org.used, held.org.reserved), (0, 30));
    assert_eq!((held.user.used, held.user.reserved), (0, 30));
    let settled = store.settle(id, 25, now()).await.unwrap();
    assert_eq!((settled.reserved, settled.charged), (30, 25));
    let after = store.budget_state(f.org, f.user, PERIOD).await.unwrap();
    assert_eq!((after.org.used, after.org.reserved), (25, 0));
    assert_eq!((after.user.used, after.user.reserved), (25, 0));
}

/// A request larger than what is left is refused whole and holds nothing.
pub async fn a_request_that_does_not_fit_changes_nothing(store: Arc<dyn Store>) {
    let f = fixture(&store, 100, None).await;
    reserve_ok(&store, &request(&f, 60)).await;
    let outcome = store.reserve(&request(&f, 41)).await.unwrap();
    let ReserveOutcome::Exceeded(exceeded) = outcome else {
        panic!("41 tokens do not fit in 40: {outcome:?}");
    };
    assert_eq!(exceeded.scope, LimitScope::Org);
    assert_eq!(
        (exceeded.limit, exceeded.used, exceeded.reserved),
        (100, 0, 60)
    );
    let state = store.budget_state(f.org, f.user, PERIOD).await.unwrap();
    assert_eq!(state.org.reserved, 60);
    reserve_ok(&store, &request(&f, 40)).await;
}

/// A user's own limit refuses while the org budget still has room.
pub async fn user_limit_applies_while_org_has_budget(store: Arc<dyn Store>) {
    let f = fixture(&store, 1_000, Some(50)).await;
    let id = reserve_ok(&store, &request(&f, 50)).await;
    store.settle(id, 50, now()).await.unwrap();
    let outcome = store.reserve(&request(&f, 1)).await.unwrap();
    let ReserveOutcome::Exceeded(exceeded) = outcome else {
        panic!("the user limit is spent: {outcome:?}");
    };
    assert_eq!(
        (exceeded.scope, exceeded.limit, exceeded.used),
        (LimitScope::User, 50, 50)
    );
}

/// Usage above the estimate is charged in full, and the next request is refused.
pub async fn overshoot_is_charged_in_full(store: Arc<dyn Store>) {
    let f = fixture(&store, 100, None).await;
    let id = reserve_ok(&store, &request(&f, 10)).await;
    store.settle(id, 120, now()).await.unwrap();
    let state = store.budget_state(f.org, f.user, PERIOD).await.unwrap();
    assert_eq!((state.org.used, state.org.reserved), (120, 0));
    assert!(matches!(
        store.reserve(&request(&f, 1)).await.unwrap(),
        ReserveOutcome::Exceeded(_)
    ));
}

/// A reservation is settled at most once: nothing is charged twice.
pub async fn settling_twice_is_refused(store: Arc<dyn Store>) {
    let f = fixture(&store, 100, None).await;
    let id = reserve_ok(&store, &request(&f, 10)).await;
    store.settle(id, 10, now()).await.unwrap();
    assert!(matches!(
        store.settle(id, 10, now()).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        store.release(id).await,
        Err(Error::NotFound { .. })
    ));
    let state = store.budget_state(f.org, f.user, PERIOD).await.unwrap();
    assert_eq!(state.org.used, 10);
}

/// Releasing returns the held tokens without charging anything.
pub async fn released_tokens_return_to_the_budget(store: Arc<dyn Store>) {
    let f = fixture(&store, 100, None).await;
    let id = reserve_ok(&store, &request(&f, 100)).await;
    store.release(id).await.unwrap();
    let state = store.budget_state(f.org, f.user, PERIOD).await.unwrap();
    assert_eq!((state.org.used, state.org.reserved), (0, 0));
    let report = store.usage_report(f.org, None, PERIOD).await.unwrap();
    assert!(report.models.is_empty());
}

/// Reservations past their expiry are released when the org next reserves.
pub async fn expired_reservations_are_released(store: Arc<dyn Store>) {
    let f = fixture(&store, 100, None).await;
    let mut stale = request(&f, 100);
    stale.created_at = now() - Duration::hours(1);
    stale.expires_at = now() - Duration::minutes(1);
    let id = reserve_ok(&store, &stale).await;
    reserve_ok(&store, &request(&f, 100)).await;
    assert!(matches!(
        store.settle(id, 1, now()).await,
        Err(Error::NotFound { .. })
    ));
    let state = store.budget_state(f.org, f.user, PERIOD).await.unwrap();
    assert_eq!((state.org.used, state.org.reserved), (0, 100));
}

/// Many concurrent reservations never hold more than the budget.
pub async fn concurrent_reservations_never_overspend(store: Arc<dyn Store>) {
    let f = fixture(&store, 205, None).await;
    let req = request(&f, 10);
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let (store, req) = (store.clone(), req.clone());
            tokio::spawn(async move { store.reserve(&req).await.unwrap() })
        })
        .collect();
    let mut granted = 0;
    for task in tasks {
        if matches!(task.await.unwrap(), ReserveOutcome::Reserved { .. }) {
            granted += 1;
        }
    }
    assert_eq!(granted, 20);
    let state = store.budget_state(f.org, f.user, PERIOD).await.unwrap();
    assert_eq!(state.org.reserved, 200);
}

/// Each audit entry stores the previous entry's hash and a hash of itself.
pub async fn audit_entries_form_a_hash_chain(store: Arc<dyn Store>) {
    fixture(&store, 100, None).await;
    let mut entries = store.list_audit(None, 100).await.unwrap();
    entries.reverse();
    assert_eq!(entries.len(), 3);
    let mut prev = GENESIS_HASH.to_owned();
    for entry in &entries {
        assert_eq!(entry.prev_hash, prev);
        let again = chain_hash(entry.id, &entry.record, entry.target_id, &entry.prev_hash);
        assert_eq!(entry.hash, again);
        prev = entry.hash.clone();
    }
    let actions: Vec<_> = entries.iter().map(|e| e.record.action.as_str()).collect();
    assert_eq!(actions, ["org.create", "user.create", "key.create"]);
}

/// Usage reports sum settled usage per user and per model.
pub async fn usage_reports_by_user_and_model(store: Arc<dyn Store>) {
    let f = fixture(&store, 1_000, None).await;
    let admin = admin(&store);
    let other = admin
        .create_user("acme", "v@acme.io", Role::Member, Some(500))
        .await
        .unwrap();
    let mut req = request(&f, 10);
    let id = reserve_ok(&store, &req).await;
    store.settle(id, 7, now()).await.unwrap();
    req.model = "claude".into();
    let id = reserve_ok(&store, &req).await;
    store.settle(id, 5, now()).await.unwrap();
    reserve_ok(&store, &req).await;

    let report = store.usage_report(f.org, None, PERIOD).await.unwrap();
    assert_eq!((report.org.used, report.org.reserved), (12, 10));
    assert_eq!(
        (report.monthly_token_budget, report.remaining()),
        (1_000, 978)
    );
    let emails: Vec<_> = report.users.iter().map(|u| u.email.as_str()).collect();
    assert_eq!(emails, ["u@acme.io", "v@acme.io"]);
    assert_eq!(
        (report.users[0].counter.used, report.users[0].requests),
        (12, 2)
    );
    assert_eq!(report.users[1].monthly_token_limit, Some(500));
    let models: Vec<_> = report
        .models
        .iter()
        .map(|m| (m.model.as_str(), m.tokens))
        .collect();
    assert_eq!(models, [("claude", 5), ("gpt-4o-mini", 7)]);

    let only_other = store
        .usage_report(f.org, Some(other.id), PERIOD)
        .await
        .unwrap();
    assert_eq!(only_other.users.len(), 1);
    assert!(only_other.models.is_empty());
}

async fn governed(
    store: &Arc<dyn Store>,
    budget: i64,
    limit: Option<i64>,
) -> (crate::Governor, String, Arc<crate::ManualClock>) {
    let key = acme_with_key(store, budget, limit).await;
    let clock = Arc::new(crate::ManualClock::new(now()));
    let governor = crate::Governor::new(store.clone()).with_clock(clock.clone());
    (governor, key.secret.expose().to_owned(), clock)
}

/// Whether a decision that must have been made allows the request.
fn allowed(decision: crate::Result<crate::Decision>) -> bool {
    decision.unwrap().is_allowed()
}

fn denied(decision: crate::Decision) -> crate::Denied {
    match decision {
        crate::Decision::Denied(d) => d,
        crate::Decision::Allowed(a) => panic!("expected a denial, got {a:?}"),
    }
}

/// An allowed request reserves its estimate and settles its real usage.
pub async fn governor_allows_reserves_and_settles(store: Arc<dyn Store>) {
    let (governor, key, _) = governed(&store, 1_000, None).await;
    let decision = governor.authorize(&key, " GPT-4o-mini", 100).await.unwrap();
    let crate::Decision::Allowed(allowed) = decision else {
        panic!("expected an allowed request: {decision:?}");
    };
    assert_eq!(allowed.model, "gpt-4o-mini");
    assert_eq!(allowed.budget.org.reserved, 100);
    assert_eq!(allowed.budget.user.reserved, 100);
    let reservation = allowed.reservation.unwrap();
    governor.settle(&reservation, 80).await.unwrap();
    let state = store
        .budget_state(reservation.org_id, reservation.user_id, &reservation.period)
        .await
        .unwrap();
    assert_eq!((state.org.used, state.org.reserved), (80, 0));
    assert!(governor.settle(&reservation, 80).await.is_err());
}

/// A dry-run check decides like authorize and holds nothing.
pub async fn governor_check_reserves_nothing(store: Arc<dyn Store>) {
    let (governor, key, _) = governed(&store, 100, None).await;
    for _ in 0..3 {
        assert!(allowed(governor.check(&key, "gpt-4o-mini", 100).await));
    }
    let decision = governor.check(&key, "gpt-4o-mini", 101).await.unwrap();
    assert_eq!(
        denied(decision).reason,
        crate::DenyReason::OrgBudgetExhausted
    );
    assert!(allowed(governor.authorize(&key, "gpt-4o-mini", 100).await));
}

/// Malformed, unknown, expired and revoked keys are told apart.
pub async fn governor_denies_bad_keys(store: Arc<dyn Store>) {
    use crate::DenyReason::*;
    let (governor, key, clock) = governed(&store, 100, None).await;
    let malformed = governor
        .authorize("sk-not-ias", "gpt-4o-mini", 1)
        .await
        .unwrap();
    assert_eq!(denied(malformed).reason, InvalidKey);
    let unknown = crate::KeySecret::generate();
    let decision = governor
        .authorize(unknown.expose(), "gpt-4o-mini", 1)
        .await
        .unwrap();
    let unknown_denial = denied(decision);
    assert_eq!(
        (unknown_denial.reason, unknown_denial.principal),
        (InvalidKey, None)
    );

    clock.advance(Duration::days(1));
    let expired = denied(governor.authorize(&key, "gpt-4o-mini", 1).await.unwrap());
    assert_eq!(expired.reason, ExpiredKey);
    clock.advance(-Duration::seconds(1));
    assert!(allowed(governor.authorize(&key, "gpt-4o-mini", 1).await));

    let key_id = expired.principal.unwrap().key_id;
    admin(&store).revoke_key(key_id).await.unwrap();
    let revoked = denied(governor.authorize(&key, "gpt-4o-mini", 1).await.unwrap());
    assert_eq!(revoked.reason, RevokedKey);
    assert!(!revoked.message().contains(&key));
    let hash = crate::KeyHash::of(&key).to_hex();
    for entry in store.list_audit(None, 100).await.unwrap() {
        let text = serde_json::to_string(&entry).unwrap();
        assert!(
            !text.contains(&key) && !text.contains(&hash),
            "secret in audit: {text}"
        );
    }
}

/// A model outside the allowed list, a spent org budget and a spent user limit are refused.
pub async fn governor_denies_models_and_exhausted_budgets(store: Arc<dyn Store>) {
    use crate::DenyReason::*;
    let (governor, key, _) = governed(&store, 100, Some(60)).await;
    let model = denied(governor.authorize(&key, "gpt-4o", 1).await.unwrap());
    assert_eq!(model.reason, ModelNotAllowed);
    assert_eq!(model.reason.category(), crate::DenyCategory::Forbidden);

    let user = denied(governor.authorize(&key, "gpt-4o-mini", 61).await.unwrap());
    assert_eq!(user.reason, UserLimitExhausted);
    let limit = user.limit.unwrap();
    assert_eq!(
        (limit.scope, limit.limit, limit.used),
        (LimitScope::User, 60, 0)
    );
    assert!(limit.resets_at > now());

    admin(&store)
        .set_user_limit("u@acme.io", None)
        .await
        .unwrap();
    let org = denied(governor.authorize(&key, "gpt-4o-mini", 101).await.unwrap());
    assert_eq!(org.reason, OrgBudgetExhausted);
    assert_eq!(org.reason.category(), crate::DenyCategory::LimitExceeded);
    let message = org.message();
    assert!(
        message.contains("organization `acme` monthly budget has 100 tokens left, 101 requested"),
        "{message}"
    );
    assert!(allowed(governor.authorize(&key, "gpt-4o-mini", 100).await));
    let spent = denied(governor.authorize(&key, "gpt-4o-mini", 1).await.unwrap());
    let message = spent.message();
    assert!(
        message
            .contains("organization `acme` monthly budget exhausted: 0 used, 100 reserved of 100"),
        "{message}"
    );
}
