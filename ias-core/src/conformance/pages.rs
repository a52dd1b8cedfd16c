//! Keyset pagination: walking the pages of a list reads every item once, in
//! key order, and the last page says it is the last.

use std::future::Future;
use std::sync::Arc;

use super::gitops::{Setup, U, file, settings};
use super::{Fixture, admin, event, fixture, sync, want};
use crate::audit::{AuditFilter, Source};
use crate::budget::LimitScope;
use crate::domain::{Role, UserRef};
use crate::error::{Error, Result};
use crate::gitops::NewGitopsSettings;
use crate::page::{MAX_PAGE_LIMIT, Page, PageRequest};
use crate::{Actor, Admin, Store};

/// Every item of a list, read with pages of `limit`; checks each page's size
/// and that only the last one has no `next_after`.
async fn walk<T, F, Fut>(limit: u32, mut read: F) -> Vec<T>
where
    F: FnMut(PageRequest) -> Fut,
    Fut: Future<Output = Result<Page<T>>>,
{
    let mut request = PageRequest::first(limit);
    let mut items = Vec::new();
    for _ in 0..10_000 {
        let page = read(request.clone()).await.unwrap();
        assert!(page.items.len() <= limit as usize, "a page over its limit");
        let next = request.next(&page);
        items.extend(page.items);
        match next {
            Some(following) => request = following,
            None => return items,
        }
    }
    panic!("the pages never ended");
}

/// A full page read with the largest limit: the reference for a walk.
async fn everything<T>(read: impl Future<Output = Result<Page<T>>>) -> Vec<T> {
    let page = read.await.unwrap();
    assert!(page.is_last(), "fixtures fit one page of the largest limit");
    page.items
}

fn largest() -> PageRequest {
    PageRequest::first(MAX_PAGE_LIMIT)
}

fn is_invalid(result: Result<impl std::fmt::Debug>, field: &str) -> bool {
    matches!(result, Err(Error::InvalidInput { field: f, .. }) if f == field)
}

/// Organizations come a page at a time by id, each once; readers who may
/// see only some still walk to the end and see each of theirs once.
pub async fn orgs_are_paged_by_id(store: Arc<dyn Store>) {
    let admin = admin(&store);
    let slugs = [
        "org-g", "org-a", "org-e", "org-b", "org-f", "org-c", "org-d",
    ];
    for slug in slugs {
        admin.create_org(slug, 10, "UTC").await.unwrap();
    }
    for limit in [1, 2, 3, 7, 1000] {
        let orgs = walk(limit, |page| {
            let admin = admin.clone();
            async move { admin.list_orgs(&page).await }
        })
        .await;
        let walked: Vec<_> = orgs.iter().map(|o| o.slug.as_str()).collect();
        assert_eq!(walked, slugs, "pages of {limit}");
        assert!(orgs.windows(2).all(|w| w[0].id < w[1].id));
    }
    let exact = admin.list_orgs(&PageRequest::first(7)).await.unwrap();
    assert_eq!((exact.items.len(), exact.next_after), (7, None));
    let first = admin.list_orgs(&PageRequest::first(6)).await.unwrap();
    let rest = admin
        .list_orgs(&PageRequest::first(6).next(&first).unwrap())
        .await
        .unwrap();
    assert_eq!((rest.items.len(), rest.next_after), (1, None));
    let last_id = rest.items[0].id.to_string();
    let past = admin
        .list_orgs(&PageRequest::new(6, Some(last_id)))
        .await
        .unwrap();
    assert_eq!((past.items.len(), past.next_after), (0, None));

    let user = admin
        .create_user("org-e", "boss@org-e.io", Role::OrgAdmin, None)
        .await
        .unwrap();
    let boss = Admin::new(store.clone(), Actor::user(&user), Source::Api);
    let seen = walk(2, |page| {
        let boss = boss.clone();
        async move { boss.list_orgs(&page).await }
    })
    .await;
    let seen: Vec<_> = seen.iter().map(|o| o.slug.as_str()).collect();
    assert_eq!(seen, ["org-e"]);
}

/// A user's organization lists its users a page at a time by id, each once,
/// and never a user of another organization.
pub async fn users_are_paged_by_id(store: Arc<dyn Store>) {
    let admin = admin(&store);
    admin.create_org("acme", 10, "UTC").await.unwrap();
    admin.create_org("other", 10, "UTC").await.unwrap();
    let mut created = Vec::new();
    for (i, name) in ["zoe", "adam", "mia", "bo", "kim"].iter().enumerate() {
        let email = format!("{name}@acme.io");
        created.push(
            admin
                .create_user("acme", &email, Role::Member, None)
                .await
                .unwrap(),
        );
        let stranger = format!("s{i}@other.io");
        admin
            .create_user("other", &stranger, Role::Member, None)
            .await
            .unwrap();
    }
    for limit in [1, 2, 5, 6] {
        let users = walk(limit, |page| {
            let admin = admin.clone();
            async move { admin.list_users("acme", &page).await }
        })
        .await;
        assert_eq!(users, created, "pages of {limit}");
    }
    let reference = everything(admin.list_users("acme", &largest())).await;
    assert_eq!(reference, created);
}

/// Users GitOps removed from the organization are on no page.
pub async fn removed_users_never_appear_in_pages(store: Arc<dyn Store>) {
    let mut new = settings();
    new.prune = true;
    new.max_removal_percent = 100;
    let s = Setup::new(store.clone(), new).await;
    let emails: Vec<String> = (0..6).map(|i| format!("m{i}@acme.io")).collect();
    let mut users: Vec<U<'_>> = emails
        .iter()
        .map(|e| (e.as_str(), "member", None))
        .collect();
    users[0].1 = "org_admin";
    let state = s
        .commit_and_sync(&file(1_000, &["gpt-4o-mini"], &users))
        .await;
    assert_eq!(state.status.reason, "synced", "{}", state.status.message);
    let kept: Vec<U<'_>> = [&users[..1], &users[2..4], &users[5..]].concat();
    let state = s
        .commit_and_sync(&file(1_000, &["gpt-4o-mini"], &kept))
        .await;
    assert_eq!(state.status.reason, "synced", "{}", state.status.message);
    for gone in ["m1@acme.io", "m4@acme.io"] {
        let removed = s.admin.user(gone).await.unwrap();
        assert!(removed.removed_at.is_some(), "{gone} was removed");
    }
    for limit in [1, 2, 3] {
        let listed = walk(limit, |page| {
            let admin = s.admin.clone();
            async move { admin.list_users("acme", &page).await }
        })
        .await;
        let listed: Vec<_> = listed.iter().map(|u| u.email.as_str()).collect();
        assert_eq!(
            listed,
            ["m0@acme.io", "m2@acme.io", "m3@acme.io", "m5@acme.io"],
            "pages of {limit}"
        );
    }
    let org = s.admin.org("acme").await.unwrap();
    let stored = store.list_users(org.id, None, 100).await.unwrap();
    assert!(stored.iter().all(|u| u.removed_at.is_none()));
}

/// A user's keys come newest first, a page at a time, each once.
pub async fn keys_are_paged_newest_first(store: Arc<dyn Store>) {
    let f = fixture(&store, 100, None).await;
    let admin = admin(&store);
    admin
        .create_user("acme", "v@acme.io", Role::Member, None)
        .await
        .unwrap();
    let mut ids = vec![f.key];
    for _ in 0..5 {
        ids.push(admin.create_key("u@acme.io", None).await.unwrap().key.id);
        admin.create_key("v@acme.io", None).await.unwrap();
    }
    ids.reverse();
    for limit in [1, 2, 3, 6, 7] {
        let keys = walk(limit, |page| {
            let admin = admin.clone();
            async move { admin.list_keys("u@acme.io", &page).await }
        })
        .await;
        let walked: Vec<_> = keys.iter().map(|k| k.id).collect();
        assert_eq!(walked, ids, "pages of {limit}");
        assert!(keys.iter().all(|k| k.user_id == f.user));
    }
}

/// Audit entries come newest first, a page at a time: each page holds
/// older entries than the one before, and filters hold on every page.
pub async fn audit_entries_are_paged_newest_first(store: Arc<dyn Store>) {
    let admin = admin(&store);
    admin.create_org("one", 10, "UTC").await.unwrap();
    admin.create_org("two", 10, "UTC").await.unwrap();
    for i in 0..7 {
        admin.allow_model("one", &format!("m{i}")).await.unwrap();
        if i % 2 == 0 {
            admin.allow_model("two", &format!("m{i}")).await.unwrap();
        }
    }
    let filters = [
        (None, AuditFilter::default()),
        (Some("one"), AuditFilter::default()),
        (
            None,
            AuditFilter {
                action: Some("model.allow".into()),
                ..AuditFilter::default()
            },
        ),
    ];
    for (org, filter) in &filters {
        let reference = everything(admin.audit_log(*org, filter, &largest())).await;
        assert!(reference.windows(2).all(|w| w[0].id > w[1].id));
        for limit in [1, 2, 3] {
            let walked = walk(limit, |page| {
                let (admin, filter) = (admin.clone(), filter.clone());
                async move { admin.audit_log(*org, &filter, &page).await }
            })
            .await;
            assert_eq!(walked, reference, "{org:?} {filter:?}, pages of {limit}");
        }
    }
    let of_one = everything(admin.audit_log(Some("one"), &filters[1].1, &largest())).await;
    assert_eq!(of_one.len(), 8);
}

/// Allowed models come by name, a page at a time, each once.
pub async fn allowed_models_are_paged_by_name(store: Arc<dyn Store>) {
    let admin = admin(&store);
    admin.create_org("acme", 10, "UTC").await.unwrap();
    admin.create_org("other", 10, "UTC").await.unwrap();
    for model in ["gpt-4o", "openai/*", "claude-3", "anthropic/*", "mistral"] {
        admin.allow_model("acme", model).await.unwrap();
    }
    admin.allow_model("other", "llama").await.unwrap();
    let sorted = ["anthropic/*", "claude-3", "gpt-4o", "mistral", "openai/*"];
    for limit in [1, 2, 4, 5] {
        let models = walk(limit, |page| {
            let admin = admin.clone();
            async move { admin.list_models("acme", &page).await }
        })
        .await;
        assert_eq!(models, sorted, "pages of {limit}");
    }
}

/// Daily usage comes by day then model, a page at a time, each row once,
/// for the organization and for one user.
pub async fn daily_usage_is_paged_by_day_and_model(store: Arc<dyn Store>) {
    let f = fixture(&store, 1_000_000, None).await;
    let admin = admin(&store);
    let other = admin
        .create_user("acme", "v@acme.io", Role::Member, None)
        .await
        .unwrap();
    let v = Fixture {
        user: other.id,
        key: admin.create_key("v@acme.io", None).await.unwrap().key.id,
        ..f
    };
    let mut events = Vec::new();
    for day in ["2026-12-01", "2026-12-02", "2026-12-04"] {
        for model in ["claude", "openai/gpt-4o", "gpt-4o-mini"] {
            events.push(event(&f, model, day, 5));
        }
        events.push(event(&v, "mistral", day, 1));
    }
    let charge = want(LimitScope::Org, f.org.0, 0);
    store
        .sync_leases(&sync("a", vec![charge], events))
        .await
        .unwrap();
    let (from, to) = (Some("2026-12-01"), Some("2026-12-31"));
    for (email, rows) in [(None, 12), (Some("u@acme.io"), 9), (Some("v@acme.io"), 3)] {
        let reference =
            everything(admin.daily_usage("acme", email.map(UserRef::from), from, to, &largest()))
                .await;
        assert_eq!(reference.len(), rows, "{email:?}");
        let keys: Vec<_> = reference.iter().map(|d| (&d.day, &d.model)).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
        for limit in [1, 2, 4, 5] {
            let walked = walk(limit, |page| {
                let admin = admin.clone();
                async move {
                    let email = email.map(UserRef::from);
                    admin.daily_usage("acme", email, from, to, &page).await
                }
            })
            .await;
            assert_eq!(walked, reference, "{email:?}, pages of {limit}");
        }
    }
    let one_day = (Some("2026-12-02"), Some("2026-12-02"));
    let page = admin
        .daily_usage("acme", None, one_day.0, one_day.1, &PageRequest::first(3))
        .await
        .unwrap();
    assert_eq!(page.next_after.as_deref(), Some("2026-12-02/mistral"));
    let direct = store
        .daily_usage(f.org, Some(other.id), "2026-12-02", "2026-12-31", None, 10)
        .await
        .unwrap();
    assert_eq!(direct.len(), 2);
}

/// GitOps states come by organization id, a page at a time, each once.
pub async fn gitops_states_are_paged_by_org(store: Arc<dyn Store>) {
    let admin = admin(&store);
    let mut enabled = Vec::new();
    for slug in ["e", "d", "c", "b", "a"] {
        let org = admin.create_org(slug, 10, "UTC").await.unwrap();
        let repo = format!("https://git.example.com/{slug}.git");
        admin
            .gitops_enable(slug, NewGitopsSettings::new(&repo))
            .await
            .unwrap();
        enabled.push(org.id);
    }
    admin.create_org("not-managed", 10, "UTC").await.unwrap();
    for limit in [1, 2, 5] {
        let states = walk(limit, |page| {
            let admin = admin.clone();
            async move { admin.gitops_statuses(&page).await }
        })
        .await;
        let orgs: Vec<_> = states.iter().map(|s| s.settings.org_id).collect();
        assert_eq!(orgs, enabled, "pages of {limit}");
    }
}

/// A limit of 0 or above the largest, or a cursor of the wrong shape, is
/// refused as invalid input naming `limit` or `after`.
pub async fn bad_pages_are_invalid_input(store: Arc<dyn Store>) {
    fixture(&store, 100, None).await;
    let admin = admin(&store);
    for limit in [0, MAX_PAGE_LIMIT + 1] {
        let page = PageRequest::first(limit);
        assert!(is_invalid(admin.list_orgs(&page).await, "limit"));
        assert!(is_invalid(admin.list_users("acme", &page).await, "limit"));
        assert!(is_invalid(admin.list_models("acme", &page).await, "limit"));
    }
    let after = |cursor: &str| PageRequest::new(10, Some(cursor.to_owned()));
    for cursor in ["x", "0", "-3", "1.5", ""] {
        assert!(is_invalid(admin.list_orgs(&after(cursor)).await, "after"));
        let keys = admin.list_keys("u@acme.io", &after(cursor)).await;
        assert!(is_invalid(keys, "after"), "{cursor:?}");
        let (filter, page) = (AuditFilter::default(), after(cursor));
        let audit = admin.audit_log(None, &filter, &page).await;
        assert!(is_invalid(audit, "after"), "{cursor:?}");
    }
    for cursor in ["2026-12-01", "yesterday/gpt-4o", "2026-12-01/", ""] {
        let page = after(cursor);
        let daily = admin.daily_usage("acme", None, None, None, &page).await;
        assert!(is_invalid(daily, "after"), "{cursor:?}");
    }
    let empty = admin.list_models("acme", &after("")).await;
    assert!(is_invalid(empty, "after"));
}
