//! Seeding: bulk writes in one audited transaction that governors and reports see.

use std::sync::Arc;

use chrono::Duration;

use crate::audit::{AuditEntry, AuditLink};
use crate::error::Error;
use crate::governor::{Decision, DenyReason, Governor};
use crate::period::MonthlyPeriod;
use crate::seed::{Generator, SeedBatch, SeedPlan, SeedProgress, SeedWrite, Seeded};
use crate::{NewUser, OrgId, Role, Store};

/// Three organizations of four users with two keys each, from seed `987654321`.
fn small_plan() -> SeedPlan {
    SeedPlan::new(3, 4, 2)
        .unwrap()
        .with_seed(987_654_321)
        .with_as_of(super::now() - Duration::hours(1))
}

fn quiet() -> SeedProgress {
    Arc::new(|_| {})
}

async fn seed(store: &Arc<dyn Store>, allow_existing: bool) -> crate::Result<Seeded> {
    super::admin(store)
        .seed(small_plan(), allow_existing, quiet())
        .await
}

/// The stored audit entries, oldest first.
async fn audit_entries(store: &Arc<dyn Store>) -> Vec<AuditEntry> {
    let chain = store.audit_chain(0, 100).await.unwrap();
    chain
        .into_iter()
        .map(|link| match link {
            AuditLink::Entry(entry) => entry,
            AuditLink::Unreadable { id, reason } => panic!("entry {id} unreadable: {reason}"),
        })
        .collect()
}

/// The actions of the stored audit entries, oldest first.
async fn audit_actions(store: &Arc<dyn Store>) -> Vec<String> {
    let entries = audit_entries(store).await;
    entries.into_iter().map(|e| e.record.action).collect()
}

/// Checks every sample key is allowed and every retired key refused.
async fn check_keys(governor: &Governor, seeded: &Seeded) {
    assert!(!seeded.harvest.sample.is_empty());
    for key in &seeded.harvest.sample {
        let decision = governor
            .check(key.secret.expose(), key.model, 100)
            .await
            .unwrap();
        assert!(decision.is_allowed(), "{key:?}: {decision:?}");
    }
    for key in &seeded.harvest.retired {
        let decision = governor
            .check(key.secret.expose(), key.model, 100)
            .await
            .unwrap();
        let Decision::Denied(denied) = decision else {
            panic!("retired key allowed: {key:?}");
        };
        assert!(
            matches!(
                denied.reason,
                DenyReason::ExpiredKey | DenyReason::RevokedKey
            ),
            "{denied:?}"
        );
    }
}

/// A seed writes every row of the plan and one audit entry, in one write
/// that governors, reports and later writes see as if made one by one.
pub async fn seeding_fills_an_empty_store_in_one_audited_write(store: Arc<dyn Store>) {
    let seeded = seed(&store, false).await.unwrap();
    let counts = seeded.counts;
    assert_eq!(
        (counts.organizations, counts.users, counts.api_keys),
        (3, 12, 24)
    );
    assert!(counts.org_allowed_models >= 3 && counts.usage_events > 0);
    assert!(counts.usage_daily > 0 && counts.usage_counters > 0);
    let census = store.seed_census().await.unwrap();
    assert_eq!(
        (census.organizations, census.users, census.api_keys),
        (3, 12, 24)
    );
    assert!(seeded.prefix.is_empty());

    let keys = store.key_records(None, 1_000).await.unwrap();
    let ids: Vec<i64> = keys.iter().map(|k| k.id.0).collect();
    assert_eq!(ids, (1..=24).collect::<Vec<_>>());
    let tally = seeded.harvest.keys;
    let revoked = keys.iter().filter(|k| k.revoked_at.is_some()).count() as u64;
    assert_eq!(
        (tally.live + tally.expired + tally.revoked, tally.revoked),
        (24, revoked)
    );

    assert_eq!(audit_actions(&store).await, ["seed.run"]);
    let entry = audit_entries(&store).await.remove(0);
    assert_eq!((entry.target_id, entry.record.org_id), (None, None));
    assert_eq!(entry.record.changes["organizations"], 3);
    assert!(!entry.record.changes.to_string().contains("987654321"));
    let verified = super::admin(&store).verify_audit(None).await.unwrap();
    assert!(
        verified.is_intact() && verified.checked == 1,
        "{verified:?}"
    );

    let governor = Governor::open(store.clone()).await.unwrap();
    let stats = governor.stats();
    assert_eq!((stats.orgs, stats.users, stats.keys), (3, 12, 24));
    check_keys(&governor, &seeded).await;
    governor.shutdown().await.unwrap();

    let first = &seeded.harvest.sample[0];
    let org = store.org_by_slug(&first.org).await.unwrap().unwrap();
    let period = MonthlyPeriod::containing(super::now(), org.timezone);
    let report = store
        .usage_report(org.id, None, &period.key, None, 1_000)
        .await
        .unwrap();
    let by_users: i64 = report.users.iter().map(|u| u.counter.used).sum();
    let by_models: i64 = report.models.iter().map(|m| m.tokens).sum();
    assert_eq!((report.org.used, by_models), (by_users, by_users));
    assert!(report.org.used < report.monthly_token_budget);

    // Ids go on above the seeded ones.
    let next = super::admin(&store)
        .create_org("after-the-seed", 10, "UTC")
        .await
        .unwrap();
    assert_eq!(next.id, OrgId(4));
}

/// A store that holds data is refused, naming what it holds, unless
/// allowed; then the seed adds alongside under slugs of its own.
pub async fn seeding_refuses_a_store_with_data_unless_allowed(store: Arc<dyn Store>) {
    let first = seed(&store, false).await.unwrap();
    let census = store.seed_census().await.unwrap();
    let refused = seed(&store, false).await.unwrap_err();
    let Error::Conflict { entity, key, .. } = &refused else {
        panic!("expected a conflict: {refused:?}");
    };
    let oldest = census.first_org.as_deref().unwrap();
    assert_eq!((*entity, key.as_str()), ("organization", oldest));
    assert!(
        refused
            .to_string()
            .contains("3 organizations, 12 users and 24 keys"),
        "{refused}"
    );
    // The store checks again in its transaction, in case data came meanwhile.
    let generator = Generator::new(small_plan());
    let write = SeedWrite {
        require_empty: true,
        batches: Box::new(generator),
        audit: super::sample_record(),
        progress: quiet(),
    };
    let again = store.write_seed(write).await.unwrap_err();
    assert_eq!(again.to_string(), refused.to_string());
    assert_eq!(store.seed_census().await.unwrap(), census);
    assert_eq!(audit_actions(&store).await, ["seed.run"]);

    let second = seed(&store, true).await.unwrap();
    assert!(!second.prefix.is_empty());
    let counts = (
        second.counts.organizations,
        second.counts.users,
        second.counts.api_keys,
    );
    assert_eq!(counts, (3, 12, 24));
    let census = store.seed_census().await.unwrap();
    assert_eq!(
        (census.organizations, census.users, census.api_keys),
        (6, 24, 48)
    );
    for key in &second.harvest.sample {
        assert!(key.org.starts_with(&second.prefix), "{key:?}");
    }
    assert_eq!(audit_actions(&store).await, ["seed.run", "seed.run"]);
    let verified = super::admin(&store).verify_audit(None).await.unwrap();
    assert!(
        verified.is_intact() && verified.checked == 2,
        "{verified:?}"
    );
    let governor = Governor::open(store.clone()).await.unwrap();
    check_keys(&governor, &first).await;
    check_keys(&governor, &second).await;
    governor.shutdown().await.unwrap();
}

/// A seed that fails part-way (a row without its referenced row, a slug
/// taken twice) leaves no row, no change and no audit entry behind.
pub async fn a_failed_seed_writes_nothing(store: Arc<dyn Store>) {
    let plan = SeedPlan::new(2, 2, 1).unwrap().with_seed(1);
    let batch: SeedBatch = Generator::new(plan).next().unwrap();
    let mut dangling = batch.clone();
    dangling.keys[0].user = 99;
    let mut twice = batch.clone();
    twice.orgs[1].slug = twice.orgs[0].slug.clone();
    for (bad, conflict) in [(dangling, false), (twice, true)] {
        let write = SeedWrite {
            require_empty: true,
            batches: Box::new(vec![bad].into_iter()),
            audit: super::sample_record(),
            progress: quiet(),
        };
        let err = store.write_seed(write).await.unwrap_err();
        if conflict {
            assert!(
                matches!(&err, Error::Conflict { entity: "organization", key, .. } if *key == batch.orgs[0].slug),
                "{err:?}"
            );
        }
        assert!(store.seed_census().await.unwrap().is_empty(), "{err}");
        assert_eq!(store.change_seq().await.unwrap(), 0, "{err}");
        assert!(audit_actions(&store).await.is_empty(), "{err}");
    }
    // Whatever a seed sets aside while it writes is back once it is done:
    // references are checked, and writes reach the change feed.
    let slug = batch.orgs[0].slug.clone();
    let write = SeedWrite {
        require_empty: true,
        batches: Box::new(vec![batch].into_iter()),
        audit: super::sample_record(),
        progress: quiet(),
    };
    store.write_seed(write).await.unwrap();
    let orphan = NewUser {
        org_id: OrgId(999),
        email: "orphan@example.com".into(),
        role: Role::Member,
        monthly_token_limit: None,
        created_at: super::now(),
    };
    let err = store
        .create_user(&orphan, &super::sample_record())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    let seq = store.change_seq().await.unwrap();
    super::admin(&store)
        .allow_model(&slug, "x-model")
        .await
        .unwrap();
    assert!(store.change_seq().await.unwrap() > seq);
}

/// A governor that was running while the seed wrote reads every seeded
/// organization, user and key from the change feed.
pub async fn a_running_governor_follows_a_seed(store: Arc<dyn Store>) {
    let governor = Governor::open(store.clone()).await.unwrap();
    assert_eq!(governor.stats().keys, 0);
    let seeded = seed(&store, false).await.unwrap();
    let changes = governor.refresh().await.unwrap();
    assert!(changes >= 3 + 12 + 24, "{changes}");
    let stats = governor.stats();
    assert_eq!((stats.orgs, stats.users, stats.keys), (3, 12, 24));
    check_keys(&governor, &seeded).await;
    governor.shutdown().await.unwrap();
}
