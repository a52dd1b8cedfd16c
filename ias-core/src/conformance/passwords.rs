//! Password hashes: stored with their audit entry, replaced by a reset, never shown.

use std::sync::Arc;

use super::rbac::{STRONG_PASSWORD, World};
use crate::domain::{Role, UserId};
use crate::error::Error;
use crate::password::{self, HashedPassword, Rule};
use crate::{Store, verify_password};

const OTHER_PASSWORD: &str = "Quiet-Harbor-Mosaic-17";

/// Users are found by id; a password hash is stored with its audit entry, or not at all.
pub async fn password_hashes_are_stored_with_their_audit_entry(store: Arc<dyn Store>) {
    let world = World::new(store.clone()).await;
    let user = world.user("peer@home.io").await;
    assert_eq!(store.user_by_id(user.id).await.unwrap(), Some(user.clone()));
    assert_eq!(store.user_by_id(UserId(9_999)).await.unwrap(), None);
    assert!(store.password_hash(user.id).await.unwrap().is_none());

    let hashed = HashedPassword::from_phc("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into());
    let record = super::sample_record();
    store
        .set_password_hash(user.id, &hashed, &record)
        .await
        .unwrap();
    assert_eq!(
        store.password_hash(user.id).await.unwrap(),
        Some(hashed.clone())
    );
    let entry = store.list_audit(None, 1).await.unwrap().remove(0);
    assert_eq!(entry.target_id, Some(user.id.0));

    let before = world.last_audit_id().await;
    let missing = store
        .set_password_hash(UserId(9_999), &hashed, &record)
        .await;
    assert!(
        matches!(missing, Err(Error::NotFound { .. })),
        "{missing:?}"
    );
    assert_eq!(world.last_audit_id().await, before);
    assert_eq!(store.password_hash(UserId(9_999)).await.unwrap(), None);
}

/// A reset stores an argon2id hash; the new password verifies and the old one no longer does.
pub async fn a_reset_replaces_the_password(store: Arc<dyn Store>) {
    let world = World::new(store.clone()).await;
    let system_admin = world.actor(Role::SystemAdmin).await;
    let peer = world.user("peer@home.io").await;
    assert!(
        !verify_password(&*store, peer.id, STRONG_PASSWORD)
            .await
            .unwrap()
    );

    world
        .operator
        .reset_password("peer@home.io", STRONG_PASSWORD)
        .await
        .unwrap();
    let stored = store.password_hash(peer.id).await.unwrap().unwrap();
    assert!(
        stored
            .as_phc()
            .starts_with("$argon2id$v=19$m=19456,t=2,p=1$")
    );
    assert!(
        verify_password(&*store, "Peer@Home.io", STRONG_PASSWORD)
            .await
            .unwrap()
    );

    system_admin
        .reset_password(peer.id, OTHER_PASSWORD)
        .await
        .unwrap();
    assert!(
        verify_password(&*store, peer.id, OTHER_PASSWORD)
            .await
            .unwrap()
    );
    assert!(
        !verify_password(&*store, peer.id, STRONG_PASSWORD)
            .await
            .unwrap()
    );
    assert!(
        !verify_password(&*store, "nobody@home.io", OTHER_PASSWORD)
            .await
            .unwrap()
    );

    let entry = store.list_audit(None, 1).await.unwrap().remove(0);
    assert_eq!(entry.record.action, "user.reset_password");
    assert_eq!(entry.record.actor, "user:system-admin@home.io");
    assert_eq!(entry.record.target, "user:peer@home.io");
    assert_eq!(
        entry.record.changes["password"]["before"],
        crate::admin::REDACTED
    );
}

/// A weak password is refused with every rule it breaks, and nothing changes.
pub async fn a_weak_password_lists_every_broken_rule(store: Arc<dyn Store>) {
    let world = World::new(store.clone()).await;
    world
        .operator
        .create_user("home", "qwerty@home.io", Role::Member, None)
        .await
        .unwrap();
    world
        .operator
        .reset_password("qwerty@home.io", STRONG_PASSWORD)
        .await
        .unwrap();
    let user = world.user("qwerty@home.io").await;
    let stored = store.password_hash(user.id).await.unwrap();
    let before = world.last_audit_id().await;

    let short = world.operator.reset_password(user.id, "qwerty").await;
    let all_short = [
        Rule::TooShort,
        Rule::TooFewKinds,
        Rule::ContainsEmailName,
        Rule::Common,
    ];
    assert_weak(short, &all_short, "qwerty");
    let long = format!("myqwerty{}", "z".repeat(password::MAX_CHARS));
    let too_long = world.operator.reset_password(user.id, &long).await;
    assert_weak(
        too_long,
        &[Rule::TooLong, Rule::TooFewKinds, Rule::ContainsEmailName],
        &long,
    );
    let common = world.operator.reset_password(user.id, "Password123!").await;
    assert_weak(common, &[Rule::Common], "Password123!");

    assert_eq!(world.last_audit_id().await, before);
    assert_eq!(store.password_hash(user.id).await.unwrap(), stored);
    assert!(
        verify_password(&*store, user.id, STRONG_PASSWORD)
            .await
            .unwrap()
    );
}

fn assert_weak<T: std::fmt::Debug>(result: crate::Result<T>, rules: &[Rule], password: &str) {
    let err = result.unwrap_err();
    let message = err.to_string();
    match err {
        Error::WeakPassword { broken } => assert_eq!(broken, rules),
        other => panic!("expected a weak password error, got {other:?}"),
    }
    for rule in rules {
        assert!(message.contains(rule.message()), "{message}");
    }
    assert!(
        !message.contains(password),
        "the password is in the error: {message}"
    );
}

/// Resetting the password of an unknown user is `NotFound` and writes nothing.
pub async fn resetting_an_unknown_user_is_not_found(store: Arc<dyn Store>) {
    let world = World::new(store).await;
    let before = world.last_audit_id().await;
    let by_email = world
        .operator
        .reset_password("nobody@home.io", STRONG_PASSWORD)
        .await;
    assert!(
        matches!(by_email, Err(Error::NotFound { entity: "user", .. })),
        "{by_email:?}"
    );
    let by_id = world
        .operator
        .reset_password(UserId(9_999), STRONG_PASSWORD)
        .await;
    assert!(
        matches!(by_id, Err(Error::NotFound { entity: "user", .. })),
        "{by_id:?}"
    );
    assert_eq!(world.last_audit_id().await, before);
}

/// Only system admins reset passwords; others are denied, audited, and change nothing.
pub async fn only_system_admins_reset_passwords(store: Arc<dyn Store>) {
    let world = World::new(store.clone()).await;
    let peer = world.user("peer@home.io").await;
    for role in [Role::OrgAdmin, Role::Member] {
        let actor = world.actor(role).await;
        let before = world.last_audit_id().await;
        let denied = actor.reset_password("peer@home.io", STRONG_PASSWORD).await;
        assert!(
            matches!(denied, Err(Error::PermissionDenied { .. })),
            "{denied:?}"
        );
        let appended = world.audit_since(before).await;
        assert_eq!(appended.len(), 1, "{appended:?}");
        assert_eq!(appended[0].record.action, "user.reset_password.denied");
        assert_eq!(
            appended[0].record.changes["permission"],
            "user.reset_password"
        );
        assert!(appended[0].record.actor.ends_with("@home.io"));
    }
    assert!(store.password_hash(peer.id).await.unwrap().is_none());
}

/// No audit entry holds a key secret, a password, or a hash of either.
pub async fn no_secret_reaches_the_audit_log(store: Arc<dyn Store>) {
    let world = World::new(store.clone()).await;
    let key = world
        .operator
        .create_key("peer@home.io", None)
        .await
        .unwrap();
    world
        .operator
        .reset_password("peer@home.io", STRONG_PASSWORD)
        .await
        .unwrap();
    world
        .operator
        .reset_password("peer@home.io", OTHER_PASSWORD)
        .await
        .unwrap();
    let weak = world.operator.reset_password("peer@home.io", "weak").await;
    assert!(!weak.unwrap_err().to_string().contains("weak`"));
    let member = world.actor(Role::Member).await;
    let denied = member.reset_password("peer@home.io", STRONG_PASSWORD).await;
    let denial = denied.unwrap_err().to_string();
    assert!(!denial.contains(STRONG_PASSWORD), "{denial}");

    let peer = world.user("peer@home.io").await;
    let phc = store.password_hash(peer.id).await.unwrap().unwrap();
    let phc_hash = phc.as_phc().rsplit('$').next().unwrap().to_owned();
    let secrets = [
        key.secret.expose().to_owned(),
        key.secret.hash().to_hex(),
        STRONG_PASSWORD.to_owned(),
        OTHER_PASSWORD.to_owned(),
        phc.as_phc().to_owned(),
        phc_hash,
    ];
    for entry in world.audit_since(0).await {
        let text = serde_json::to_string(&entry).unwrap();
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "secret in audit entry: {text}"
            );
        }
    }
}
