//! The storage conformance suite: one async function per storage behaviour.
//!
//! Every store crate runs the whole list through [`conformance_suite!`],
//! each function against a fresh, empty store:
//!
//! ```text
//! ias_core::conformance_suite!(async { my_store::open_fresh().await });
//! ```
//!
//! A backend that needs a server yields a [`Fresh`] guard instead of a
//! store: it may skip the case when the server is absent, and it removes
//! the database it made once the case is over, passed or failed.
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
mod gitops;
mod pages;
mod passwords;
mod rates;
mod rbac;
mod seed;

pub use audit_log::{
    audit_entries_are_filtered, audit_entries_can_be_appended_alone,
    the_audit_chain_reads_oldest_first,
};
pub use gitops::{
    MemorySource, gitops_a_plan_names_users_a_lower_limit_blocks,
    gitops_a_role_change_is_one_field_change, gitops_a_suspended_org_is_not_applied,
    gitops_a_user_dropped_without_prune_is_released, gitops_an_apply_is_all_or_nothing,
    gitops_an_invalid_file_applies_nothing, gitops_an_unchanged_commit_changes_nothing,
    gitops_an_unreachable_remote_keeps_the_last_state, gitops_api_writes_to_owned_fields_conflict,
    gitops_apply_creates_the_declared_state, gitops_cannot_reach_past_an_org_admin,
    gitops_disabling_returns_fields_to_the_api, gitops_drift_is_reported_or_healed,
    gitops_emptying_the_users_is_refused, gitops_letter_case_is_no_change,
    gitops_mass_removal_is_refused, gitops_prune_spares_users_git_did_not_add,
    gitops_settings_changes_take_effect, gitops_two_reconcilers_never_apply_together,
};
pub use pages::{
    allowed_models_are_paged_by_name, audit_entries_are_paged_newest_first,
    bad_pages_are_invalid_input, daily_usage_is_paged_by_day_and_model,
    gitops_states_are_paged_by_org, keys_are_paged_newest_first, orgs_are_paged_by_id,
    removed_users_never_appear_in_pages, users_are_paged_by_id,
};
pub use passwords::{
    a_reset_replaces_the_password, a_weak_password_lists_every_broken_rule,
    no_secret_reaches_the_audit_log, only_system_admins_reset_passwords,
    password_hashes_are_stored_with_their_audit_entry, resetting_an_unknown_user_is_not_found,
};
pub use rates::{
    a_recall_reaches_leases_outside_the_call, corrections_return_credits_to_the_lease,
    governors_share_a_rate_limit_exactly, rate_grants_leave_the_window_after_a_minute,
    rate_leases_grant_at_most_what_is_left, stopped_holders_rate_leases_return_a_minute_late,
};
pub use rbac::{MATRIX, escalations_are_denied_and_audited, permission_matrix_holds};
pub use seed::{
    a_failed_seed_writes_nothing, a_running_governor_follows_a_seed,
    seeding_fills_an_empty_store_in_one_audited_write,
    seeding_refuses_a_store_with_data_unless_allowed,
};

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use crate::audit::{Actor, AuditFilter, GENESIS_HASH, Source, chain_hash};
use crate::budget::LimitScope;
use crate::domain::{KeyId, OrgId, Role, UserId};
use crate::error::Error;
use crate::lease::{LeaseEntry, LeaseState, LeaseSync, UsageEvent};
use crate::page::PageRequest;
use crate::rate::RateLimits;
use crate::rbac::builtin_grants;
use crate::snapshot::ChangeEntity;
use crate::{Admin, CreatedKey, Store};

/// Generates one `#[tokio::test]` per conformance function.
///
/// `$fresh` is an expression evaluating to a future of a [`Fresh`] value:
/// an `Arc` of a store on a fresh, empty database, or a guard that hands
/// one out. The value is dropped after the case, also when the case fails.
#[macro_export]
macro_rules! conformance_suite {
    ($fresh:expr) => {
        $crate::conformance_suite!(@cases $fresh;
            fresh_schema_is_migrated_and_seeded,
            orgs_are_created_listed_and_unique,
            a_failed_write_leaves_no_trace,
            users_have_unique_normalised_emails,
            user_limits_can_be_set_and_cleared,
            org_budgets_and_time_zones_can_be_changed,
            keys_are_loaded_for_the_cache_by_id,
            revoking_is_recorded_once,
            allowing_models_is_idempotent,
            leases_grant_at_most_what_is_left,
            charges_come_out_of_the_lease,
            user_leases_follow_the_user_limit,
            overshoot_is_charged_in_full,
            a_failed_sync_changes_nothing,
            a_retried_sync_counts_once,
            expired_leases_of_a_stopped_holder_are_taken_back,
            syncs_renew_leases_past_half_their_life,
            concurrent_lease_requests_never_overspend,
            rate_limits_are_set_and_cleared,
            every_cached_write_is_in_the_change_feed,
            audit_entries_form_a_hash_chain,
            usage_reports_by_user_model_and_day,
            governor_allows_reserves_and_settles,
            governor_check_reserves_nothing,
            governor_denies_bad_keys,
            governor_denies_models_and_exhausted_budgets,
            two_governors_never_overspend_together,
            rate_leases_grant_at_most_what_is_left,
            rate_grants_leave_the_window_after_a_minute,
            corrections_return_credits_to_the_lease,
            stopped_holders_rate_leases_return_a_minute_late,
            a_recall_reaches_leases_outside_the_call,
            governors_share_a_rate_limit_exactly,
            audit_entries_can_be_appended_alone,
            audit_entries_are_filtered,
            the_audit_chain_reads_oldest_first,
            seeding_fills_an_empty_store_in_one_audited_write,
            seeding_refuses_a_store_with_data_unless_allowed,
            a_failed_seed_writes_nothing,
            a_running_governor_follows_a_seed,
            orgs_are_paged_by_id,
            users_are_paged_by_id,
            removed_users_never_appear_in_pages,
            keys_are_paged_newest_first,
            audit_entries_are_paged_newest_first,
            allowed_models_are_paged_by_name,
            daily_usage_is_paged_by_day_and_model,
            gitops_states_are_paged_by_org,
            bad_pages_are_invalid_input,
            permission_matrix_holds,
            escalations_are_denied_and_audited,
            password_hashes_are_stored_with_their_audit_entry,
            a_reset_replaces_the_password,
            a_weak_password_lists_every_broken_rule,
            resetting_an_unknown_user_is_not_found,
            only_system_admins_reset_passwords,
            no_secret_reaches_the_audit_log,
            gitops_apply_creates_the_declared_state,
            gitops_an_unchanged_commit_changes_nothing,
            gitops_an_invalid_file_applies_nothing,
            gitops_an_unreachable_remote_keeps_the_last_state,
            gitops_emptying_the_users_is_refused,
            gitops_mass_removal_is_refused,
            gitops_prune_spares_users_git_did_not_add,
            gitops_a_role_change_is_one_field_change,
            gitops_letter_case_is_no_change,
            gitops_api_writes_to_owned_fields_conflict,
            gitops_drift_is_reported_or_healed,
            gitops_two_reconcilers_never_apply_together,
            gitops_a_suspended_org_is_not_applied,
            gitops_an_apply_is_all_or_nothing,
            gitops_disabling_returns_fields_to_the_api,
            gitops_a_plan_names_users_a_lower_limit_blocks,
            gitops_a_user_dropped_without_prune_is_released, gitops_cannot_reach_past_an_org_admin,
    gitops_settings_changes_take_effect,
        );
    };
    (@cases $fresh:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let fresh = $fresh.await;
                let Some(store) = $crate::conformance::Fresh::store(&fresh) else {
                    return;
                };
                $crate::conformance::$case(store).await;
                drop(fresh);
            }
        )*
    };
}

/// What the setup expression of [`conformance_suite!`] yields.
///
/// A store is its own `Fresh`. A backend that needs a server yields a guard
/// that owns the database it made: the guard hands out the store, or
/// `None` to skip the case (having said why), and cleans up when dropped.
pub trait Fresh {
    /// The store to run the case on; `None` skips the case.
    fn store(&self) -> Option<Arc<dyn Store>>;
}

impl Fresh for Arc<dyn Store> {
    fn store(&self) -> Option<Arc<dyn Store>> {
        Some(self.clone())
    }
}

impl<T: Store + 'static> Fresh for Arc<T> {
    fn store(&self) -> Option<Arc<dyn Store>> {
        let store: Arc<dyn Store> = self.clone();
        Some(store)
    }
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

fn want(scope: LimitScope, id: i64, want: i64) -> LeaseEntry {
    LeaseEntry {
        scope,
        scope_id: id,
        period: PERIOD.into(),
        charge: 0,
        give_back: 0,
        want,
        need: want,
    }
}

/// A new sync number for every sync the suite makes.
fn next_seq() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn sync(holder: &str, entries: Vec<LeaseEntry>, events: Vec<UsageEvent>) -> LeaseSync {
    LeaseSync {
        holder: holder.into(),
        seq: next_seq(),
        now: now(),
        lease_expires_at: now() + Duration::seconds(30),
        entries,
        events,
        rates: Vec::new(),
    }
}

async fn one(store: &Arc<dyn Store>, holder: &str, entry: LeaseEntry) -> LeaseState {
    store
        .sync_leases(&sync(holder, vec![entry], vec![]))
        .await
        .unwrap()
        .budgets[0]
}

fn event(f: &Fixture, model: &str, day: &str, tokens: i64) -> UsageEvent {
    UsageEvent {
        org_id: f.org,
        user_id: f.user,
        key_id: f.key,
        model: model.into(),
        period: PERIOD.into(),
        day: day.into(),
        reserved: tokens,
        tokens,
        at: now(),
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
    assert!(store.list_orgs(None, 10).await.unwrap().is_empty());
}

/// Orgs are created with their fields, listed by id, and slugs are unique.
pub async fn orgs_are_created_listed_and_unique(store: Arc<dyn Store>) {
    let admin = admin(&store);
    let zeta = admin.create_org("zeta", 10, "Europe/Berlin").await.unwrap();
    admin.create_org("alpha", 20, "UTC").await.unwrap();
    assert_eq!(zeta.timezone, chrono_tz::Europe::Berlin);
    assert_eq!(zeta.monthly_token_budget, 10);
    let slugs: Vec<_> = store
        .list_orgs(None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.slug)
        .collect();
    assert_eq!(slugs, ["zeta", "alpha"]);
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
    assert_eq!(store.list_users(org.id, None, 10).await.unwrap().len(), 1);
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

/// An organization's budget and time zone change, audited, and its counters
/// see the new budget at once.
pub async fn org_budgets_and_time_zones_can_be_changed(store: Arc<dyn Store>) {
    let f = fixture(&store, 100, None).await;
    let admin = admin(&store);
    let org = admin.set_org_budget("acme", Some(250), None).await.unwrap();
    assert_eq!(org.monthly_token_budget, 250);
    let state = store.budget_state(f.org, f.user, PERIOD).await.unwrap();
    assert_eq!(state.org_limit, 250);
    let org = admin
        .set_org_budget("acme", None, Some("Asia/Tokyo"))
        .await
        .unwrap();
    assert_eq!(
        (org.monthly_token_budget, org.timezone.name()),
        (250, "Asia/Tokyo")
    );
    let stored = store.org_by_slug("acme").await.unwrap().unwrap();
    assert_eq!(stored, org);

    let err = admin
        .set_org_budget("acme", Some(-1), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidInput {
                field: "monthly_token_budget",
                ..
            }
        ),
        "{err:?}"
    );
    let err = admin.set_org_budget("acme", None, None).await.unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err:?}");
    let err = admin
        .set_org_budget("nope", Some(5), None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");

    let filter = AuditFilter {
        action: Some("org.update".into()),
        ..AuditFilter::default()
    };
    let entries = store
        .search_audit(Some(f.org), &filter, None, 10)
        .await
        .unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(
        entries[1].record.changes,
        serde_json::json!({"monthly_token_budget": {"before": 100, "after": 250}})
    );
}

/// The cache loads keys by id, with their hash and their own rate limits.
pub async fn keys_are_loaded_for_the_cache_by_id(store: Arc<dyn Store>) {
    let first = acme_with_key(&store, 100, None).await;
    let admin = admin(&store);
    let second = admin.create_key("u@acme.io", None).await.unwrap();
    let records = store.key_records(None, 10).await.unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].id, first.key.id);
    assert_eq!(records[0].hash, first.secret.hash());
    assert_eq!(records[0].expires_at, first.key.expires_at);
    let page = store.key_records(Some(first.key.id), 10).await.unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].hash, second.secret.hash());
    assert!(
        store
            .key_records(Some(second.key.id), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let limits = RateLimits {
        rpm: Some(5),
        tpm: None,
    };
    admin
        .set_rate_limits(
            "acme",
            crate::admin::LimitTarget::Key(second.key.id),
            limits,
        )
        .await
        .unwrap();
    let record = store.key_record(second.key.id).await.unwrap().unwrap();
    assert_eq!(record.rate_limits, limits);
    assert!(store.key_record(KeyId(9_999)).await.unwrap().is_none());
    let ids: Vec<_> = admin
        .list_keys("u@acme.io", &PageRequest::default())
        .await
        .unwrap()
        .items
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
        store.allowed_models(org.id, None, 10).await.unwrap(),
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
    assert_eq!(
        store.allowed_models(org.id, None, 10).await.unwrap(),
        ["anthropic/*"]
    );
}

/// A lease grants at most what is left of the limit, across holders.
pub async fn leases_grant_at_most_what_is_left(store: Arc<dyn Store>) {
    let f = fixture(&store, 100, None).await;
    let a = one(&store, "a", want(LimitScope::Org, f.org.0, 60)).await;
    assert_eq!(
        (a.granted, a.lease, a.held, a.limit),
        (60, 60, 60, Some(100))
    );
    let b = one(&store, "b", want(LimitScope::Org, f.org.0, 60)).await;
    assert_eq!((b.granted, b.lease, b.held), (40, 40, 100));
    let c = one(&store, "c", want(LimitScope::Org, f.org.0, 1)).await;
    assert_eq!(c.granted, 0);
    let state = store.budget_state(f.org, f.user, PERIOD).await.unwrap();
    assert_eq!((state.org.used, state.org.reserved), (0, 100));
}

/// Charges come out of the holder's lease; give-backs return tokens to everyone.
pub async fn charges_come_out_of_the_lease(store: Arc<dyn Store>) {
    let f = fixture(&store, 100, None).await;
    one(&store, "a", want(LimitScope::Org, f.org.0, 60)).await;
    let mut entry = want(LimitScope::Org, f.org.0, 0);
    entry.charge = 25;
    let s = one(&store, "a", entry.clone()).await;
    assert_eq!((s.used, s.held, s.lease), (25, 35, 35));
    entry.charge = 0;
    entry.give_back = 35;
    let s = one(&store, "a", entry).await;
    assert_eq!((s.used, s.held, s.lease), (25, 0, 0));
    let b = one(&store, "b", want(LimitScope::Org, f.org.0, 100)).await;
    assert_eq!(b.granted, 75);
}

/// A user's lease is bounded by its own limit; without one, only the org budget applies.
pub async fn user_leases_follow_the_user_limit(store: Arc<dyn Store>) {
    let f = fixture(&store, 1_000, Some(50)).await;
    let s = one(&store, "a", want(LimitScope::User, f.user.0, 80)).await;
    assert_eq!((s.granted, s.limit), (50, Some(50)));
    admin(&store)
        .set_user_limit("u@acme.io", None)
        .await
        .unwrap();
    let s = one(&store, "a", want(LimitScope::User, f.user.0, 80)).await;
    assert_eq!((s.granted, s.limit), (80, None));
    let missing = store
        .sync_leases(&sync("a", vec![want(LimitScope::User, 9_999, 1)], vec![]))
        .await;
    assert!(
        matches!(missing, Err(Error::NotFound { .. })),
        "{missing:?}"
    );
}

/// Usage above the lease is charged in full, and nothing more is granted.
pub async fn overshoot_is_charged_in_full(store: Arc<dyn Store>) {
    let f = fixture(&store, 100, None).await;
    one(&store, "a", want(LimitScope::Org, f.org.0, 10)).await;
    let mut entry = want(LimitScope::Org, f.org.0, 0);
    entry.charge = 120;
    let s = one(&store, "a", entry).await;
    assert_eq!((s.used, s.held, s.lease), (120, 0, 0));
    assert_eq!(
        one(&store, "b", want(LimitScope::Org, f.org.0, 1))
            .await
            .granted,
        0
    );
}

/// A sync with one bad entry writes nothing at all, not even its good entries or events.
pub async fn a_failed_sync_changes_nothing(store: Arc<dyn Store>) {
    let f = fixture(&store, 100, None).await;
    let mut good = want(LimitScope::Org, f.org.0, 50);
    good.charge = 10;
    let bad = want(LimitScope::Org, 9_999, 1);
    let events = vec![event(&f, "gpt-4o-mini", "2026-12-01", 10)];
    let failed = store.sync_leases(&sync("a", vec![good, bad], events)).await;
    assert!(failed.is_err());
    let state = store.budget_state(f.org, f.user, PERIOD).await.unwrap();
    assert_eq!((state.org.used, state.org.reserved), (0, 0));
    let report = store
        .usage_report(f.org, None, PERIOD, None, 1000)
        .await
        .unwrap();
    assert!(report.models.is_empty());
}

/// A sync retried under the number of one the store applied (its answer
/// was lost) writes nothing again and answers the current state; the
/// holder's next number applies as usual.
pub async fn a_retried_sync_counts_once(store: Arc<dyn Store>) {
    let f = fixture(&store, 1_000, None).await;
    admin(&store)
        .set_rate_limits("acme", crate::LimitTarget::Org, RateLimits::tokens(1_000))
        .await
        .unwrap();
    let mut entry = want(LimitScope::Org, f.org.0, 100);
    entry.charge = 10;
    let rate = crate::lease::RateEntry {
        rate: crate::lease::RateScope {
            scope: LimitScope::Org,
            scope_id: f.org.0,
            kind: crate::rate::RateKind::Tokens,
        },
        charges: vec![crate::lease::RateCharge {
            at_ms: now().timestamp_millis(),
            amount: 5,
        }],
        give_back: 0,
        want: 50,
        need: 50,
    };
    let events = vec![event(&f, "gpt-4o-mini", "2026-12-01", 10)];
    let mut first = sync("a", vec![entry], events);
    first.rates = vec![rate];
    let applied = store.sync_leases(&first).await.unwrap();
    assert_eq!(
        (applied.budgets[0].used, applied.budgets[0].lease),
        (10, 100)
    );
    assert_eq!((applied.rates[0].used, applied.rates[0].lease), (5, 50));
    let retried = store.sync_leases(&first).await.unwrap();
    let b = retried.budgets[0];
    assert_eq!((b.used, b.held, b.lease, b.granted), (10, 100, 100, 0));
    let r = retried.rates[0];
    assert_eq!((r.used, r.held, r.lease, r.granted), (5, 50, 50, 0));
    let report = store
        .usage_report(f.org, None, PERIOD, None, 1000)
        .await
        .unwrap();
    assert_eq!(report.org.used, 10);
    assert_eq!(report.models.iter().map(|m| m.requests).sum::<i64>(), 1);
    let mut next = first.clone();
    next.seq = next_seq();
    let again = store.sync_leases(&next).await.unwrap();
    assert_eq!((again.budgets[0].used, again.rates[0].used), (20, 10));
}

/// Leases of a holder that stopped renewing are taken back once expired.
pub async fn expired_leases_of_a_stopped_holder_are_taken_back(store: Arc<dyn Store>) {
    let f = fixture(&store, 100, None).await;
    let mut stale = sync("dead", vec![want(LimitScope::Org, f.org.0, 100)], vec![]);
    stale.lease_expires_at = now() - Duration::seconds(1);
    store.sync_leases(&stale).await.unwrap();
    let live = one(&store, "live", want(LimitScope::Org, f.org.0, 100)).await;
    assert_eq!((live.granted, live.held), (100, 100));
    // A live holder's lease is never taken.
    let other = one(&store, "other", want(LimitScope::Org, f.org.0, 1)).await;
    assert_eq!(other.granted, 0);
}

/// A sync renews only its holder's leases past half their life; after it,
/// every lease of the holder outlives the midpoint of its time and new expiry.
pub async fn syncs_renew_leases_past_half_their_life(store: Arc<dyn Store>) {
    let f = fixture(&store, 100, None).await;
    let start = now();
    let at = |holder: &str, secs: i64, entries: Vec<LeaseEntry>| {
        let mut sync = sync(holder, entries, vec![]);
        sync.now = start + Duration::seconds(secs);
        sync.lease_expires_at = sync.now + Duration::seconds(30);
        sync
    };
    let granted = |sync: LeaseSync| {
        let store = Arc::clone(&store);
        async move { store.sync_leases(&sync).await.unwrap().budgets[0].granted }
    };
    for holder in ["early", "late"] {
        let entry = want(LimitScope::Org, f.org.0, 40);
        assert_eq!(granted(at(holder, 0, vec![entry])).await, 40);
    }
    // At 10 s a lease expiring at 30 s is not due (due by 25 s); at 20 s it is (by 35 s).
    store.sync_leases(&at("early", 10, vec![])).await.unwrap();
    store.sync_leases(&at("late", 20, vec![])).await.unwrap();

    // At 31 s the unrenewed lease has expired and is taken back; the renewed one holds.
    let entry = want(LimitScope::Org, f.org.0, 60);
    assert_eq!(granted(at("taker", 31, vec![entry])).await, 60);
    let entry = want(LimitScope::Org, f.org.0, 1);
    assert_eq!(granted(at("last", 31, vec![entry])).await, 0);
}

/// Many holders asking at once never hold more than the budget between them.
pub async fn concurrent_lease_requests_never_overspend(store: Arc<dyn Store>) {
    let f = fixture(&store, 205, None).await;
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let store = store.clone();
            let entry = want(LimitScope::Org, f.org.0, 10);
            tokio::spawn(async move { one(&store, &format!("h{i}"), entry).await.granted })
        })
        .collect();
    let mut granted = 0;
    for task in tasks {
        granted += task.await.unwrap();
    }
    assert_eq!(granted, 205);
    let state = store.budget_state(f.org, f.user, PERIOD).await.unwrap();
    assert_eq!(state.org.reserved, 205);
}

/// Rate limits are stored per scope, idempotently, audited, and removed with none.
pub async fn rate_limits_are_set_and_cleared(store: Arc<dyn Store>) {
    let f = fixture(&store, 100, None).await;
    let limits = RateLimits {
        rpm: Some(60),
        tpm: Some(10_000),
    };
    let audit = crate::audit::AuditRecord {
        at: now(),
        actor: "operator:conformance".into(),
        source: Source::Library,
        action: "limits.set".into(),
        org_id: Some(f.org),
        target: "user:u@acme.io".into(),
        changes: serde_json::json!({}),
    };
    let before = audit_count(&store).await;
    assert!(
        store
            .set_rate_limits(LimitScope::User, f.user.0, limits, &audit)
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_rate_limits(LimitScope::User, f.user.0, limits, &audit)
            .await
            .unwrap()
    );
    assert_eq!(audit_count(&store).await, before + 1);
    assert_eq!(
        store.rate_limits(LimitScope::User, f.user.0).await.unwrap(),
        limits
    );
    assert_eq!(
        store.rate_limits(LimitScope::Org, f.org.0).await.unwrap(),
        RateLimits::NONE
    );
    store
        .set_rate_limits(LimitScope::User, f.user.0, RateLimits::NONE, &audit)
        .await
        .unwrap();
    assert_eq!(
        store.rate_limits(LimitScope::User, f.user.0).await.unwrap(),
        RateLimits::NONE
    );
    let missing = store
        .set_rate_limits(LimitScope::Key, 9_999, limits, &audit)
        .await;
    assert!(matches!(missing, Err(Error::NotFound { .. })));
}

/// Every write the governor caches appears in the change feed, in order.
pub async fn every_cached_write_is_in_the_change_feed(store: Arc<dyn Store>) {
    let start = store.change_seq().await.unwrap();
    let key = acme_with_key(&store, 100, None).await;
    admin(&store).revoke_key(key.key.id).await.unwrap();
    let changes = store.changes_since(start, 100).await.unwrap();
    let seen: Vec<_> = changes.iter().map(|c| (c.entity, c.id)).collect();
    let org = key.key.org_id.0;
    for expected in [
        (ChangeEntity::Org, org),
        (ChangeEntity::User, key.key.user_id.0),
        (ChangeEntity::Key, key.key.id.0),
    ] {
        assert!(
            seen.contains(&expected),
            "{expected:?} missing from {seen:?}"
        );
    }
    assert!(changes.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(
        store.change_seq().await.unwrap(),
        changes.last().unwrap().seq
    );
    let last = changes.last().unwrap().seq;
    assert!(store.changes_since(last, 100).await.unwrap().is_empty());
    let page = store.changes_since(start, 2).await.unwrap();
    assert_eq!(page.len(), 2);
    let policy = store.org_policy(key.key.org_id).await.unwrap().unwrap();
    assert_eq!(policy.allowed_models, ["gpt-4o-mini"]);
    let user = store.user_policy(key.key.user_id).await.unwrap().unwrap();
    assert_eq!(user.user.email, "u@acme.io");
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

/// Usage events are recorded with their charges and rolled up per user, model and day.
pub async fn usage_reports_by_user_model_and_day(store: Arc<dyn Store>) {
    let f = fixture(&store, 1_000, None).await;
    let admin = admin(&store);
    let other = admin
        .create_user("acme", "v@acme.io", Role::Member, Some(500))
        .await
        .unwrap();
    let mut org = want(LimitScope::Org, f.org.0, 0);
    org.charge = 12;
    let mut user = want(LimitScope::User, f.user.0, 0);
    user.charge = 12;
    let events = vec![
        event(&f, "gpt-4o-mini", "2026-12-01", 7),
        event(&f, "claude", "2026-12-02", 3),
        event(&f, "claude", "2026-12-02", 2),
    ];
    store
        .sync_leases(&sync("a", vec![org, user], events))
        .await
        .unwrap();

    let report = store
        .usage_report(f.org, None, PERIOD, None, 1000)
        .await
        .unwrap();
    assert_eq!((report.org.used, report.org.reserved), (12, 0));
    assert_eq!(
        (report.monthly_token_budget, report.remaining()),
        (1_000, 988)
    );
    let emails: Vec<_> = report.users.iter().map(|u| u.email.as_str()).collect();
    assert_eq!(emails, ["u@acme.io", "v@acme.io"]);
    assert_eq!(
        (report.users[0].counter.used, report.users[0].requests),
        (12, 3)
    );
    assert_eq!(report.users[1].monthly_token_limit, Some(500));
    let models: Vec<_> = report
        .models
        .iter()
        .map(|m| (m.model.as_str(), m.tokens, m.requests))
        .collect();
    assert_eq!(models, [("claude", 5, 2), ("gpt-4o-mini", 7, 1)]);

    let days = store
        .daily_usage(f.org, None, "2026-12-01", "2026-12-31", None, 100)
        .await
        .unwrap();
    let days: Vec<_> = days
        .iter()
        .map(|d| (d.day.as_str(), d.model.as_str(), d.tokens, d.requests))
        .collect();
    assert_eq!(
        days,
        [
            ("2026-12-01", "gpt-4o-mini", 7, 1),
            ("2026-12-02", "claude", 5, 2)
        ]
    );
    let first_day = store
        .daily_usage(f.org, None, "2026-12-01", "2026-12-01", None, 100)
        .await
        .unwrap();
    assert_eq!(first_day.len(), 1);
    let only_other = store
        .usage_report(f.org, Some(other.id), PERIOD, None, 1000)
        .await
        .unwrap();
    assert_eq!(only_other.users.len(), 1);
    assert!(only_other.models.is_empty());
    assert!(
        store
            .daily_usage(f.org, Some(other.id), "2026-12-01", "2026-12-31", None, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn governed(
    store: &Arc<dyn Store>,
    budget: i64,
    limit: Option<i64>,
) -> (crate::Governor, String, Arc<crate::ManualClock>) {
    let key = acme_with_key(store, budget, limit).await;
    let clock = Arc::new(crate::ManualClock::new(now()));
    let governor = crate::Governor::builder(store.clone())
        .clock(clock.clone())
        .open()
        .await
        .unwrap();
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
    governor.flush().await.unwrap();
    let state = store
        .budget_state(reservation.org_id, reservation.user_id, &reservation.period)
        .await
        .unwrap();
    assert_eq!(state.org.used, 80);
    governor.shutdown().await.unwrap();
    let state = store
        .budget_state(reservation.org_id, reservation.user_id, &reservation.period)
        .await
        .unwrap();
    assert_eq!((state.org.used, state.org.reserved), (80, 0));
    assert!(governor.settle(&reservation, 80).await.is_err());
    let report = store
        .usage_report(reservation.org_id, None, &reservation.period, None, 1000)
        .await
        .unwrap();
    assert_eq!(
        (report.models[0].tokens, report.models[0].requests),
        (80, 1)
    );
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
    governor.refresh().await.unwrap();
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
    governor.refresh().await.unwrap();
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

/// Two governors on one store (two replicas, or a gateway and a CLI) share
/// the budget through leases and never grant more than it between them.
pub async fn two_governors_never_overspend_together(store: Arc<dyn Store>) {
    let (a, key, _) = governed(&store, 1_000, None).await;
    let b = crate::Governor::open(store.clone()).await.unwrap();
    let mut granted = 0;
    let mut reservations = Vec::new();
    for i in 0..60 {
        let governor = if i % 2 == 0 { &a } else { &b };
        let decision = governor.authorize(&key, "gpt-4o-mini", 30).await.unwrap();
        if let Some(r) = decision.reservation() {
            granted += 30;
            reservations.push((i % 2, r.clone()));
        }
    }
    assert!(granted <= 1_000, "granted {granted}");
    // Leases that one governor holds but does not use are given back, so
    // the other can still use the last tokens.
    for (which, r) in &reservations {
        let governor = if *which == 0 { &a } else { &b };
        governor.settle(r, 30).await.unwrap();
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    let period = &reservations[0].1.period;
    let state = store
        .budget_state(reservations[0].1.org_id, reservations[0].1.user_id, period)
        .await
        .unwrap();
    assert_eq!((state.org.used, state.org.reserved), (granted, 0));
    assert!(state.org.used <= 1_000);
}
