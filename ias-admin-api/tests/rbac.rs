//! The RBAC matrix's key cases over HTTP: a member, an org admin of another
//! organization, a system admin; and password resets.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod common;

use axum::http::{Method, StatusCode};
use common::{Person, World};
use serde_json::json;

/// `who` calling `method path` gets `status`.
async fn expect(
    world: &World,
    who: &Person,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
    status: StatusCode,
) {
    let answer = world.call(Some(who), method.clone(), path, body).await;
    assert_eq!(
        answer.status, status,
        "{} {method} {path}: {:?}",
        who.user.email, answer.body
    );
    if status == StatusCode::FORBIDDEN {
        assert_eq!(answer.code(), "permission_denied", "{path}");
    }
}

#[tokio::test]
async fn a_member_manages_its_own_keys_and_reads_its_own_usage_only() {
    let w = World::new().await;
    let me = &w.acme_member;
    let id = me.user.id;
    let peer = w.acme_admin.user.id;

    let answer = w.get(me, "/api/v1/me").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["email"], "max@acme.example");
    assert_eq!(answer.body["role"], "member");

    let allowed = [
        (
            Method::GET,
            format!("/api/v1/users/{id}/keys"),
            None,
            StatusCode::OK,
        ),
        (
            Method::POST,
            format!("/api/v1/users/{id}/keys"),
            Some(json!({})),
            StatusCode::CREATED,
        ),
        (
            Method::GET,
            format!("/api/v1/orgs/acme/usage?user_id={id}"),
            None,
            StatusCode::OK,
        ),
        (
            Method::GET,
            format!("/api/v1/orgs/acme/usage/forecast?user_id={id}"),
            None,
            StatusCode::OK,
        ),
        (
            Method::GET,
            format!("/api/v1/orgs/acme/usage/daily?user_id={id}"),
            None,
            StatusCode::OK,
        ),
    ];
    for (method, path, body, status) in allowed {
        expect(&w, me, method, &path, body, status).await;
    }

    let denied = [
        (
            Method::POST,
            "/api/v1/orgs".to_owned(),
            Some(json!({"slug": "mine", "monthly_token_budget": 5})),
        ),
        (Method::GET, "/api/v1/orgs/acme/users".to_owned(), None),
        (
            Method::POST,
            "/api/v1/orgs/acme/users".to_owned(),
            Some(json!({"email": "new@acme.example", "role": "member"})),
        ),
        (Method::GET, format!("/api/v1/users/{peer}/keys"), None),
        (
            Method::POST,
            format!("/api/v1/users/{peer}/keys"),
            Some(json!({})),
        ),
        (
            Method::PATCH,
            format!("/api/v1/users/{id}"),
            Some(json!({"monthly_token_limit": 9})),
        ),
        (Method::GET, "/api/v1/orgs/acme/usage".to_owned(), None),
        (
            Method::POST,
            "/api/v1/orgs/acme/models".to_owned(),
            Some(json!({"model": "o3"})),
        ),
        (
            Method::PUT,
            "/api/v1/orgs/acme/rate-limits".to_owned(),
            Some(json!({"rpm": 1})),
        ),
        (Method::GET, "/api/v1/audit?org=acme".to_owned(), None),
        (Method::GET, "/api/v1/audit/verify".to_owned(), None),
        (
            Method::POST,
            format!("/api/v1/users/{id}/reset-password"),
            Some(json!({"new_password": "Correct-Horse-7-Battery"})),
        ),
        (
            Method::PUT,
            "/api/v1/orgs/acme/gitops".to_owned(),
            Some(json!({"repo_url": "https://git.example/acme.git"})),
        ),
    ];
    for (method, path, body) in denied {
        expect(&w, me, method, &path, body, StatusCode::FORBIDDEN).await;
    }

    // Its own key, created above, is revoked by itself; a peer's is not.
    let keys = w.get(me, &format!("/api/v1/users/{id}/keys")).await;
    let own = keys.body["items"][0]["id"].as_i64().unwrap();
    let peer_key = w
        .get(&w.acme_admin, &format!("/api/v1/users/{peer}/keys"))
        .await;
    let peer_key = peer_key.body["items"][0]["id"].as_i64().unwrap();
    expect(
        &w,
        me,
        Method::DELETE,
        &format!("/api/v1/keys/{peer_key}"),
        None,
        StatusCode::FORBIDDEN,
    )
    .await;
    expect(
        &w,
        me,
        Method::DELETE,
        &format!("/api/v1/keys/{own}"),
        None,
        StatusCode::OK,
    )
    .await;
}

#[tokio::test]
async fn an_org_admin_of_another_org_is_refused_everything_there() {
    let w = World::new().await;
    let outsider = &w.globex_admin;
    let member = w.acme_member.user.id;
    let key = w
        .get(&w.root, &format!("/api/v1/users/{member}/keys"))
        .await;
    let key = key.body["items"][0]["id"].as_i64().unwrap();

    let denied = [
        (Method::GET, "/api/v1/orgs/acme".to_owned(), None),
        (Method::GET, "/api/v1/orgs/acme/users".to_owned(), None),
        (
            Method::POST,
            "/api/v1/orgs/acme/users".to_owned(),
            Some(json!({"email": "spy@globex.example", "role": "org_admin"})),
        ),
        (Method::GET, format!("/api/v1/users/{member}"), None),
        (
            Method::PATCH,
            format!("/api/v1/users/{member}"),
            Some(json!({"monthly_token_limit": 1})),
        ),
        (Method::GET, format!("/api/v1/users/{member}/keys"), None),
        (
            Method::POST,
            format!("/api/v1/users/{member}/keys"),
            Some(json!({})),
        ),
        (Method::DELETE, format!("/api/v1/keys/{key}"), None),
        (Method::GET, "/api/v1/orgs/acme/models".to_owned(), None),
        (
            Method::POST,
            "/api/v1/orgs/acme/models".to_owned(),
            Some(json!({"model": "o3"})),
        ),
        (
            Method::DELETE,
            "/api/v1/orgs/acme/models?model=gpt-4o".to_owned(),
            None,
        ),
        (
            Method::GET,
            "/api/v1/orgs/acme/rate-limits".to_owned(),
            None,
        ),
        (
            Method::PUT,
            "/api/v1/orgs/acme/rate-limits".to_owned(),
            Some(json!({"rpm": 1})),
        ),
        (Method::GET, "/api/v1/orgs/acme/usage".to_owned(), None),
        (
            Method::GET,
            "/api/v1/orgs/acme/usage/forecast".to_owned(),
            None,
        ),
        (Method::GET, "/api/v1/audit?org=acme".to_owned(), None),
        (
            Method::PUT,
            "/api/v1/orgs/acme/gitops".to_owned(),
            Some(json!({"repo_url": "https://git.example/acme.git"})),
        ),
        (
            Method::POST,
            format!("/api/v1/users/{member}/reset-password"),
            Some(json!({"new_password": "Correct-Horse-7-Battery"})),
        ),
    ];
    for (method, path, body) in denied {
        expect(&w, outsider, method, &path, body, StatusCode::FORBIDDEN).await;
    }

    // Its own organization is its to run.
    expect(
        &w,
        outsider,
        Method::GET,
        "/api/v1/orgs/globex/users",
        None,
        StatusCode::OK,
    )
    .await;
    let created = w
        .post(
            outsider,
            "/api/v1/orgs/globex/users",
            json!({"email": "new@globex.example", "role": "member", "monthly_token_limit": 5000}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.body["monthly_token_limit"], 5000);

    // The organization list leaves out what it may not read.
    let orgs = w.get(outsider, "/api/v1/orgs").await;
    let slugs: Vec<&str> = orgs.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, ["globex"]);

    // Each refusal is in the audit log, with who tried.
    let denied = w.audit(Some("acme"), "user.create.denied").await;
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].record.actor, "user:gia@globex.example");
    assert_eq!(denied[0].record.source, ias_core::Source::Api);
}

#[tokio::test]
async fn a_system_admin_may_do_everything_everywhere() {
    let w = World::new().await;
    let root = &w.root;
    let member = w.globex_member.user.id;

    let org = w
        .post(
            root,
            "/api/v1/orgs",
            json!({"slug": "initech", "monthly_token_budget": 42, "timezone": "Asia/Tokyo"}),
        )
        .await;
    assert_eq!(org.status, StatusCode::CREATED, "{:?}", org.body);
    assert_eq!(org.body["timezone"], "Asia/Tokyo");
    let orgs = w.get(root, "/api/v1/orgs").await;
    assert_eq!(orgs.body["items"].as_array().unwrap().len(), 3);

    for (method, path, body, status) in [
        (
            Method::GET,
            "/api/v1/orgs/globex/users".to_owned(),
            None,
            StatusCode::OK,
        ),
        (
            Method::PATCH,
            format!("/api/v1/users/{member}"),
            Some(json!({"monthly_token_limit": 777})),
            StatusCode::OK,
        ),
        (
            Method::POST,
            format!("/api/v1/users/{member}/keys"),
            Some(json!({"expires_in": "1d"})),
            StatusCode::CREATED,
        ),
        (
            Method::POST,
            "/api/v1/orgs/globex/models".to_owned(),
            Some(json!({"model": "anthropic/*"})),
            StatusCode::OK,
        ),
        (
            Method::PUT,
            "/api/v1/orgs/globex/rate-limits".to_owned(),
            Some(json!({"rpm": 60})),
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/api/v1/orgs/globex/usage".to_owned(),
            None,
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/api/v1/audit".to_owned(),
            None,
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/api/v1/audit/verify".to_owned(),
            None,
            StatusCode::OK,
        ),
        (
            Method::POST,
            format!("/api/v1/users/{member}/reset-password"),
            Some(json!({"new_password": "Correct-Horse-7-Battery"})),
            StatusCode::OK,
        ),
    ] {
        expect(&w, root, method, &path, body, status).await;
    }
    // A pattern with `/` is removed by naming it in the query.
    let removed = w
        .delete(root, "/api/v1/orgs/globex/models?model=anthropic%2F%2A")
        .await;
    assert_eq!(
        removed.body,
        json!({"model": "anthropic/*", "changed": true})
    );
    let again = w
        .delete(root, "/api/v1/orgs/globex/models?model=anthropic%2F%2A")
        .await;
    assert_eq!(
        again.body,
        json!({"model": "anthropic/*", "changed": false})
    );
    let user = w.get(root, &format!("/api/v1/users/{member}")).await;
    assert_eq!(user.body["monthly_token_limit"], 777);
    let verified = w.get(root, "/api/v1/audit/verify").await;
    assert!(verified.body["broken"].is_null(), "{:?}", verified.body);
    assert!(verified.body["checked"].as_u64().unwrap() > 10);
}

#[tokio::test]
async fn reset_password_over_http_stores_a_hash_and_audits_no_secret() {
    let w = World::new().await;
    let target = &w.acme_member.user;
    let path = format!("/api/v1/users/{}/reset-password", target.id);
    let password = "Tangerine-Kite-93-Harbor";

    // Org admins and members may not, even in their own organization.
    for who in [&w.acme_admin, &w.acme_member] {
        expect(
            &w,
            who,
            Method::POST,
            &path,
            Some(json!({"new_password": password})),
            StatusCode::FORBIDDEN,
        )
        .await;
    }
    assert!(w.store.password_hash(target.id).await.unwrap().is_none());

    // A weak password is refused with every rule it breaks, and nothing changes.
    let weak = w.post(&w.root, &path, json!({"new_password": "max"})).await;
    assert_eq!(weak.status, StatusCode::BAD_REQUEST);
    assert_eq!(weak.code(), "weak_password");
    let broken = weak.body["error"]["details"]["broken"].as_array().unwrap();
    assert!(broken.contains(&json!("too_short")), "{broken:?}");
    assert!(!weak.body.to_string().contains("\"max\""));
    assert!(w.store.password_hash(target.id).await.unwrap().is_none());

    let reset = w
        .post(&w.root, &path, json!({"new_password": password}))
        .await;
    assert_eq!(reset.status, StatusCode::OK, "{:?}", reset.body);
    assert_eq!(reset.body["email"], "max@acme.example");
    assert!(!reset.body.to_string().contains(password));

    let hash = w.store.password_hash(target.id).await.unwrap().unwrap();
    assert!(ias_core::password::verify(password, &hash).unwrap());
    assert!(!ias_core::password::verify("Tangerine-Kite-93-Harbo", &hash).unwrap());

    let entries = w.audit(None, "user.reset_password").await;
    assert_eq!(entries.len(), 1);
    let entry = serde_json::to_string(&entries[0]).unwrap();
    assert!(entry.contains("user:root@acme.example"), "{entry}");
    assert!(
        !entry.contains(password) && !entry.contains(hash.as_phc()),
        "{entry}"
    );

    // An unknown user is a 404, not a 500.
    let missing = w
        .post(
            &w.root,
            "/api/v1/users/999999/reset-password",
            json!({"new_password": password}),
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}
