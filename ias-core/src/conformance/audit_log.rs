//! The audit log: appending without a change, filtering, reading the chain in order.

use std::sync::Arc;

use chrono::Duration;

use super::rbac::World;
use crate::audit::{AuditFilter, AuditHead, AuditLink, GENESIS_HASH, chain_hash};
use crate::domain::Role;
use crate::page::PageRequest;
use crate::{ManualClock, Store};

/// An entry appended without a change continues the chain like any other.
pub async fn audit_entries_can_be_appended_alone(store: Arc<dyn Store>) {
    let admin = super::admin(&store);
    admin.create_org("acme", 10, "UTC").await.unwrap();
    let first = store.list_audit(None, 1).await.unwrap().remove(0);
    let record = super::sample_record();
    let appended = store.append_audit(&record).await.unwrap();
    assert_eq!(appended.id, first.id + 1);
    assert_eq!(appended.prev_hash, first.hash);
    assert_eq!(appended.target_id, None);
    let again = chain_hash(appended.id, &record, None, &first.hash);
    assert_eq!(appended.hash, again);
    assert_eq!(store.list_audit(None, 1).await.unwrap()[0], appended);
}

/// Entries are filtered by organization, time and exact action, newest first.
pub async fn audit_entries_are_filtered(store: Arc<dyn Store>) {
    let start = super::now() - Duration::days(2);
    let clock = Arc::new(ManualClock::new(start));
    let admin = super::admin(&store).with_clock(clock.clone());
    let one = admin.create_org("one", 10, "UTC").await.unwrap();
    admin.create_org("two", 10, "UTC").await.unwrap();
    clock.advance(Duration::days(1));
    admin.allow_model("one", "a").await.unwrap();
    admin.allow_model("two", "b").await.unwrap();
    admin.allow_model("one", "c").await.unwrap();

    let search = |org, since, action: Option<&str>, limit| {
        let filter = AuditFilter {
            since,
            action: action.map(str::to_owned),
        };
        let store = store.clone();
        async move {
            let found = store.search_audit(org, &filter, None, limit).await;
            found.unwrap()
        }
    };
    let actions = |entries: Vec<crate::AuditEntry>| -> Vec<String> {
        entries
            .into_iter()
            .map(|e| e.record.target + " " + &e.record.action)
            .collect()
    };
    let of_one = search(Some(one.id), None, None, 10).await;
    assert_eq!(
        actions(of_one),
        [
            "org:one model.allow",
            "org:one model.allow",
            "org:one org.create"
        ]
    );
    let recent = search(None, Some(start + Duration::hours(1)), None, 10).await;
    assert_eq!(recent.len(), 3);
    let creations = search(None, None, Some("org.create"), 10).await;
    assert_eq!(
        actions(creations),
        ["org:two org.create", "org:one org.create"]
    );
    let newest = search(Some(one.id), Some(start), Some("model.allow"), 1).await;
    assert_eq!(newest[0].record.changes["allowed_models"]["after"], "c");
    assert!(search(None, None, Some("key.create"), 10).await.is_empty());
}

/// The chain is read oldest first, page by page, and verifies as intact.
pub async fn the_audit_chain_reads_oldest_first(store: Arc<dyn Store>) {
    let world = World::new(store.clone()).await;
    let member = world.actor(Role::Member).await;
    assert!(
        member
            .list_users("home", &PageRequest::default())
            .await
            .is_err()
    );
    let total = world.last_audit_id().await;
    let mut ids = Vec::new();
    let mut prev = GENESIS_HASH.to_owned();
    let mut after = 0;
    loop {
        let page = store.audit_chain(after, 3).await.unwrap();
        let Some(last) = page.last() else { break };
        assert!(page.len() <= 3);
        after = last.id();
        for link in page {
            let AuditLink::Entry(entry) = link else {
                panic!("an untouched row is unreadable: {link:?}");
            };
            assert_eq!(entry.prev_hash, prev);
            prev = entry.hash.clone();
            ids.push(entry.id);
        }
    }
    assert_eq!(ids, (1..=total).collect::<Vec<_>>());

    let verified = world.operator.verify_audit(None).await.unwrap();
    assert!(verified.is_intact(), "{verified:?}");
    assert_eq!(verified.checked, total as u64);
    let head = verified.head.unwrap();
    assert_eq!((head.id, head.hash.as_str()), (total, prev.as_str()));
    let anchor = AuditHead {
        id: total + 1,
        hash: prev,
    };
    let ahead = world.operator.verify_audit(Some(anchor)).await.unwrap();
    assert_eq!(ahead.broken.unwrap().id, total + 1);
}
