//! The admin API's contract: keys shown once, errors, pages, GitOps
//! ownership, usage and the OpenAPI document.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::{COMMIT, World};
use ias_core::gitops::NewGitopsSettings;
use ias_core::{Decision, Role};
use serde_json::{Value, json};

#[tokio::test]
async fn a_new_key_is_shown_once_works_at_once_and_stops_when_revoked() {
    let w = World::new().await;
    let me = &w.acme_member;
    let path = format!("/api/v1/users/{}/keys", me.user.id);

    let created = w.post(me, &path, json!({"expires_in": "90d"})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.headers["cache-control"], "no-store");
    let secret = created.body["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with(created.body["key"]["prefix"].as_str().unwrap()));
    assert!(created.body["key"]["expires_at"].is_string());

    // The new secret authenticates; lists never show a secret.
    let mut holder = me.clone();
    holder.key = secret.clone();
    let me_again = w.get(&holder, "/api/v1/me").await;
    assert_eq!(me_again.status, StatusCode::OK);
    let listed = w.get(me, &path).await;
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 2);
    assert!(!listed.body.to_string().contains(&secret));

    let id = created.body["key"]["id"].as_i64().unwrap();
    let revoked = w.delete(me, &format!("/api/v1/keys/{id}")).await;
    assert_eq!(revoked.status, StatusCode::OK);
    assert!(revoked.body["revoked_at"].is_string());
    let refused = w.get(&holder, "/api/v1/me").await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.code(), "revoked_key");
    let twice = w.delete(me, &format!("/api/v1/keys/{id}")).await;
    twice.expect_error(StatusCode::CONFLICT, "conflict");

    let bad = w.post(me, &path, json!({"expires_in": "forever"})).await;
    bad.expect_error(StatusCode::BAD_REQUEST, "invalid_input");
    assert_eq!(bad.body["error"]["details"]["field"], "expires_in");
}

#[tokio::test]
async fn callers_without_a_usable_key_are_refused_with_401() {
    let w = World::new().await;
    let none = w.call(None, Method::GET, "/api/v1/orgs", None).await;
    none.expect_error(StatusCode::UNAUTHORIZED, "missing_api_key");
    assert_eq!(none.headers["www-authenticate"], "Bearer");

    for header in [
        "Bearer ias_notakey",
        "Basic cm9vdDpyb290",
        "Bearer",
        "ias_x",
    ] {
        let request = Request::get("/api/v1/orgs")
            .header("authorization", header)
            .body(Body::empty())
            .unwrap();
        let answer = w.send(request).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{header}");
        assert!(!answer.body.to_string().contains("cm9vdDpyb290"));
    }
}

#[tokio::test]
async fn errors_are_json_with_a_stable_code() {
    let w = World::new().await;
    let root = &w.root;

    let unknown = w.get(root, "/api/v1/nope").await;
    unknown.expect_error(StatusCode::NOT_FOUND, "not_found");
    let method = w.put(root, "/api/v1/orgs", json!({})).await;
    method.expect_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");

    let request = Request::post("/api/v1/orgs")
        .header("authorization", format!("Bearer {}", root.key))
        .header("content-type", "application/json")
        .body(Body::from("{\"slug\": "))
        .unwrap();
    let broken = w.send(request).await;
    broken.expect_error(StatusCode::BAD_REQUEST, "invalid_body");

    let extra = w
        .post(
            root,
            "/api/v1/orgs",
            json!({"slug": "x1", "monthly_token_budget": 1, "owner": "me"}),
        )
        .await;
    extra.expect_error(StatusCode::BAD_REQUEST, "invalid_body");
    assert!(
        extra.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("owner")
    );

    let slug = w
        .post(
            root,
            "/api/v1/orgs",
            json!({"slug": "Bad Slug", "monthly_token_budget": 1}),
        )
        .await;
    slug.expect_error(StatusCode::BAD_REQUEST, "invalid_input");
    assert_eq!(slug.body["error"]["details"]["field"], "slug");
    assert!(
        slug.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`Bad Slug`")
    );

    let clash = w
        .post(
            root,
            "/api/v1/orgs",
            json!({"slug": "acme", "monthly_token_budget": 1}),
        )
        .await;
    clash.expect_error(StatusCode::CONFLICT, "conflict");

    let missing = w.get(root, "/api/v1/orgs/nowhere").await;
    missing.expect_error(StatusCode::NOT_FOUND, "not_found");

    let path = w.get(root, "/api/v1/users/abc").await;
    path.expect_error(StatusCode::BAD_REQUEST, "invalid_path");
    let query = w.get(root, "/api/v1/orgs?limit=many").await;
    query.expect_error(StatusCode::BAD_REQUEST, "invalid_query");

    let patch = w
        .call(
            Some(root),
            Method::PATCH,
            &format!("/api/v1/users/{}", w.acme_member.user.id),
            Some(json!({})),
        )
        .await;
    patch.expect_error(StatusCode::BAD_REQUEST, "invalid_input");
    assert_eq!(
        patch.body["error"]["details"]["field"],
        "monthly_token_limit"
    );
}

#[tokio::test]
async fn every_list_pages_with_limit_and_after() {
    let w = World::new().await;
    let root = &w.root;
    for n in 0..5 {
        let org = w
            .post(
                root,
                "/api/v1/orgs",
                json!({"slug": format!("team-{n}"), "monthly_token_budget": 100}),
            )
            .await;
        assert_eq!(org.status, StatusCode::CREATED);
    }
    let mut seen = Vec::new();
    let mut path = "/api/v1/orgs?limit=2".to_owned();
    loop {
        let page = w.get(root, &path).await;
        assert_eq!(page.status, StatusCode::OK, "{:?}", page.body);
        let items = page.body["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|o| o["slug"].as_str().unwrap().to_owned()));
        match page.body["next_after"].as_str() {
            Some(after) => path = format!("/api/v1/orgs?limit=2&after={after}"),
            None => break,
        }
    }
    assert_eq!(
        seen,
        [
            "acme", "globex", "team-0", "team-1", "team-2", "team-3", "team-4"
        ]
    );

    for bad in ["limit=0", "limit=1001", "after=-3"] {
        let answer = w.get(root, &format!("/api/v1/orgs?{bad}")).await;
        answer.expect_error(StatusCode::BAD_REQUEST, "invalid_input");
    }

    // Users, keys, models, audit and GitOps states page the same way.
    for path in [
        "/api/v1/orgs/acme/users?limit=1".to_owned(),
        format!("/api/v1/users/{}/keys?limit=1", root.user.id),
        "/api/v1/orgs/acme/models?limit=1".to_owned(),
        "/api/v1/audit?limit=1".to_owned(),
        "/api/v1/gitops?limit=1".to_owned(),
        "/api/v1/orgs/acme/usage/daily?limit=1".to_owned(),
    ] {
        let page = w.get(root, &path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {:?}", page.body);
        assert!(page.body["items"].as_array().unwrap().len() <= 1, "{path}");
        assert!(page.body.get("next_after").is_some(), "{path}");
    }
    let users = w.get(root, "/api/v1/orgs/acme/users?limit=1").await;
    assert!(users.body["next_after"].is_string());
}

const FILE: &str = "version: 1
org: acme
budget:
  monthly_tokens: 2000000
allowed_models: [gpt-4o]
users:
  - email: ada@acme.example
    role: org_admin
  - email: max@acme.example
    role: member
    monthly_token_limit: 50000
";

#[tokio::test]
async fn a_write_to_a_git_owned_field_answers_409_naming_repo_and_commit() {
    let w = World::new().await;
    *w.source.content.lock().unwrap() = (FILE.to_owned(), COMMIT.to_owned());
    let repo = "https://git.example/acme/ias.git";

    let enabled = w
        .put(
            &w.acme_admin,
            "/api/v1/orgs/acme/gitops",
            json!({"repo_url": repo, "prune": false}),
        )
        .await;
    assert_eq!(enabled.status, StatusCode::OK, "{:?}", enabled.body);
    assert_eq!(enabled.body["settings"]["repo_url"], repo);
    assert_eq!(enabled.body["status"]["reason"], "never_synced");

    // Plan before the sync: what the file at the ref would change.
    let plan = w
        .post(&w.acme_admin, "/api/v1/orgs/acme/gitops/plan", json!({}))
        .await;
    assert_eq!(plan.status, StatusCode::OK, "{:?}", plan.body);
    assert_eq!(plan.body["commit"], COMMIT);
    let changes = plan.body["plan"]["changes"].as_array().unwrap();
    assert!(
        changes
            .iter()
            .any(|c| c["field"] == "monthly_token_limit" && c["after"] == 50000),
        "{changes:?}"
    );

    let synced = w
        .post(&w.acme_admin, "/api/v1/orgs/acme/gitops/sync", json!(null))
        .await;
    assert_eq!(synced.status, StatusCode::OK, "{:?}", synced.body);
    assert_eq!(
        synced.body["status"]["status"], "synced",
        "{:?}",
        synced.body
    );
    assert_eq!(synced.body["status"]["last_applied_commit"], COMMIT);

    let member = w.acme_member.user.id;
    let refused = w
        .patch(
            &w.acme_admin,
            &format!("/api/v1/users/{member}"),
            json!({"monthly_token_limit": 9}),
        )
        .await;
    refused.expect_error(StatusCode::CONFLICT, "gitops_managed");
    assert_eq!(refused.body["error"]["details"]["repo_url"], repo);
    assert_eq!(refused.body["error"]["details"]["commit"], COMMIT);
    let message = refused.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(repo) && message.contains(&COMMIT[..12]),
        "{message}"
    );

    for (method, path, body) in [
        (
            Method::POST,
            "/api/v1/orgs/acme/models",
            json!({"model": "o3"}),
        ),
        (
            Method::PUT,
            "/api/v1/orgs/acme/rate-limits",
            json!({"rpm": 5}),
        ),
        (
            Method::POST,
            "/api/v1/orgs/acme/users",
            json!({"email": "new@acme.example", "role": "member"}),
        ),
    ] {
        let answer = w.call(Some(&w.acme_admin), method, path, Some(body)).await;
        answer.expect_error(StatusCode::CONFLICT, "gitops_managed");
    }
    // Keys stay API-managed.
    let key = w
        .post(
            &w.acme_admin,
            &format!("/api/v1/users/{member}/keys"),
            json!({}),
        )
        .await;
    assert_eq!(key.status, StatusCode::CREATED);

    // A system admin may force it (break-glass); the sync state shows the drift.
    let forced = Request::patch(format!("/api/v1/users/{member}"))
        .header("authorization", format!("Bearer {}", w.root.key))
        .header("content-type", "application/json")
        .header("ias-break-glass", "true")
        .body(Body::from(r#"{"monthly_token_limit": 9}"#))
        .unwrap();
    let forced = w.send(forced).await;
    assert_eq!(forced.status, StatusCode::OK, "{:?}", forced.body);
    let drift = w.get(&w.acme_admin, "/api/v1/orgs/acme/gitops/drift").await;
    assert_eq!(drift.status, StatusCode::OK);
    let drift = drift.body["changes"].as_array().unwrap();
    assert!(
        drift
            .iter()
            .any(|c| c["target"] == "user:max@acme.example" && c["before"] == 9),
        "{drift:?}"
    );

    // A file sent in the request is planned without fetching; a bad one is a 422 naming its line.
    let sent = w
        .post(
            &w.acme_admin,
            "/api/v1/orgs/acme/gitops/plan",
            json!({"manifest": FILE.replace("50000", "60000")}),
        )
        .await;
    assert_eq!(sent.status, StatusCode::OK, "{:?}", sent.body);
    assert!(sent.body["commit"].is_null());
    let bad = w
        .post(
            &w.acme_admin,
            "/api/v1/orgs/acme/gitops/plan",
            json!({"manifest": "version: 1\norg: acme\nbudget: lots\n"}),
        )
        .await;
    bad.expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_manifest");
    let errors = bad.body["error"]["details"]["errors"].as_array().unwrap();
    let budget = errors.iter().find(|e| e["path"] == "budget").unwrap();
    assert_eq!(
        (budget["line"].as_i64(), budget["column"].as_i64()),
        (Some(3), Some(9))
    );

    let disabled = w.delete(&w.acme_admin, "/api/v1/orgs/acme/gitops").await;
    assert_eq!(disabled.body, json!({"changed": true}));
    let free = w
        .patch(
            &w.acme_admin,
            &format!("/api/v1/users/{member}"),
            json!({"monthly_token_limit": 10}),
        )
        .await;
    assert_eq!(free.status, StatusCode::OK, "{:?}", free.body);
}

#[tokio::test]
async fn gitops_enable_accepts_only_allowed_repositories() {
    let w = World::with(|api| api.allow_repos(["https://git.example/acme/".to_owned()])).await;
    let enable = |repo: &'static str| {
        let w = &w;
        async move {
            w.put(
                &w.root,
                "/api/v1/orgs/acme/gitops",
                json!({"repo_url": repo}),
            )
            .await
        }
    };
    assert_eq!(
        enable("https://git.example/acme/orgs.git").await.status,
        StatusCode::OK
    );
    for outside in [
        "https://git.example/acme-evil/orgs.git",
        "https://git.example/acme/../other/orgs.git",
        "https://git.example/acme/%2e%2e/other/orgs.git",
        "http://169.254.169.254/latest/",
    ] {
        let answer = enable(outside).await;
        answer.expect_error(StatusCode::BAD_REQUEST, "invalid_input");
        assert_eq!(answer.body["error"]["details"]["field"], "repo_url");
    }
    let state = w.operator.gitops_status("acme").await.unwrap();
    assert_eq!(state.settings.repo_url, "https://git.example/acme/orgs.git");

    // A caller without the permission is refused first, and learns no prefix.
    let member = w
        .put(
            &w.acme_member,
            "/api/v1/orgs/acme/gitops",
            json!({"repo_url": "https://elsewhere.example/x.git"}),
        )
        .await;
    member.expect_error(StatusCode::FORBIDDEN, "permission_denied");
    assert!(!member.body.to_string().contains("git.example/acme/"));
    // The transport's refusals name the body's field.
    let userinfo = enable("https://user:pw@git.example/acme/x.git").await;
    userinfo.expect_error(StatusCode::BAD_REQUEST, "invalid_input");
    assert_eq!(userinfo.body["error"]["details"]["field"], "repo_url");
    assert!(
        !userinfo.body.to_string().contains("pw@"),
        "{:?}",
        userinfo.body
    );
}

#[tokio::test]
async fn usage_is_reported_by_org_user_model_and_day_with_a_forecast() {
    let w = World::new().await;
    for _ in 0..3 {
        let decision = w
            .governor
            .authorize(&w.acme_member.key, "gpt-4o", 100)
            .await
            .unwrap();
        let Decision::Allowed(allowed) = decision else {
            panic!("denied: {decision:?}")
        };
        w.governor
            .settle(allowed.reservation.as_ref().unwrap(), 1_000)
            .await
            .unwrap();
    }
    w.governor.flush().await.unwrap();

    let report = w.get(&w.acme_admin, "/api/v1/orgs/acme/usage").await;
    assert_eq!(report.status, StatusCode::OK, "{:?}", report.body);
    assert_eq!(report.body["org"]["used"], 3_000);
    assert_eq!(
        report.body["models"],
        json!([{"model": "gpt-4o", "tokens": 3000, "requests": 3}])
    );
    let max = report.body["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == "max@acme.example")
        .cloned()
        .unwrap();
    assert_eq!(max["requests"], 3);

    let daily = w
        .get(
            &w.acme_member,
            &format!(
                "/api/v1/orgs/acme/usage/daily?user_id={}",
                w.acme_member.user.id
            ),
        )
        .await;
    assert_eq!(daily.status, StatusCode::OK, "{:?}", daily.body);
    assert_eq!(daily.body["items"][0]["tokens"], 3000);

    let forecast = w
        .get(&w.acme_admin, "/api/v1/orgs/acme/usage/forecast")
        .await;
    assert_eq!(forecast.status, StatusCode::OK, "{:?}", forecast.body);
    assert_eq!(forecast.body["limit"], 1_000_000);
    assert_eq!(forecast.body["used"], 3_000);
    assert!(forecast.body["tokens_per_day"].as_i64().unwrap() > 0);

    // A user of another organization is not a filter of this one.
    let other = w
        .get(
            &w.root,
            &format!(
                "/api/v1/orgs/acme/usage?user_id={}",
                w.globex_member.user.id
            ),
        )
        .await;
    other.expect_error(StatusCode::BAD_REQUEST, "invalid_input");
    assert_eq!(other.body["error"]["details"]["field"], "user_id");
    assert!(!other.body.to_string().contains("gus@globex.example"));
}

#[tokio::test]
async fn refusals_name_no_user_or_key_of_another_organization() {
    let w = World::new().await;
    let member = &w.acme_member;
    let gus = w.globex_member.user.id;
    let keys = w.get(&w.root, &format!("/api/v1/users/{gus}/keys")).await;
    let key = keys.body["items"][0]["id"].as_i64().unwrap();
    let prefix = keys.body["items"][0]["prefix"].as_str().unwrap().to_owned();
    for (method, path) in [
        (Method::GET, format!("/api/v1/users/{gus}")),
        (Method::GET, format!("/api/v1/users/{gus}/keys")),
        (Method::DELETE, format!("/api/v1/keys/{key}")),
    ] {
        let answer = w.call(Some(member), method, &path, None).await;
        answer.expect_error(StatusCode::FORBIDDEN, "permission_denied");
        let text = answer.body.to_string();
        assert!(
            !text.contains("gus@") && !text.contains(&prefix),
            "{path}: {text}"
        );
    }
    // The audit log, for those who may read it, still says what was tried on whom.
    let tried = w.audit(None, "user.read.denied").await;
    assert_eq!(tried[0].record.target, "user:gus@globex.example");
}

#[tokio::test]
async fn a_body_must_be_a_json_object() {
    let w = World::new().await;
    let path = format!("/api/v1/users/{}/keys", w.acme_member.user.id);
    for body in [json!(["1d"]), json!("1d"), json!(null), json!(7)] {
        let answer = w.post(&w.acme_member, &path, body.clone()).await;
        answer.expect_error(StatusCode::BAD_REQUEST, "invalid_body");
    }
    let orgs = w
        .post(&w.root, "/api/v1/orgs", json!(["zeta", 5, null]))
        .await;
    orgs.expect_error(StatusCode::BAD_REQUEST, "invalid_body");
    let keys = w.get(&w.acme_member, &path).await;
    assert_eq!(keys.body["items"].as_array().unwrap().len(), 1);

    // A plan's body too: `{}` plans the file at the ref; text is not JSON.
    let request = Request::post("/api/v1/orgs/acme/gitops/plan")
        .header("authorization", format!("Bearer {}", w.root.key))
        .header("content-type", "text/plain")
        .body(Body::from("version: 1"))
        .unwrap();
    w.send(request)
        .await
        .expect_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    let big = json!({"manifest": "x".repeat(3 << 20)});
    w.post(&w.root, "/api/v1/orgs/acme/gitops/plan", big)
        .await
        .expect_error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
}

#[tokio::test]
async fn the_openapi_document_describes_every_route_as_served() {
    let w = World::new().await;
    let doc = w
        .call(None, Method::GET, "/api/v1/openapi.json", None)
        .await;
    assert_eq!(doc.status, StatusCode::OK);
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3.1"));
    assert_eq!(doc.body["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        doc.body,
        serde_json::to_value(ias_admin_api::openapi()).unwrap()
    );

    let paths = doc.body["paths"].as_object().unwrap();
    let expected = [
        ("get", "/api/v1/me"),
        ("post", "/api/v1/orgs"),
        ("get", "/api/v1/orgs/{org}/users"),
        ("patch", "/api/v1/users/{id}"),
        ("post", "/api/v1/users/{id}/reset-password"),
        ("post", "/api/v1/users/{id}/keys"),
        ("delete", "/api/v1/keys/{id}"),
        ("delete", "/api/v1/orgs/{org}/models"),
        ("put", "/api/v1/orgs/{org}/rate-limits"),
        ("get", "/api/v1/orgs/{org}/usage/forecast"),
        ("get", "/api/v1/audit/verify"),
        ("put", "/api/v1/orgs/{org}/gitops"),
        ("post", "/api/v1/orgs/{org}/gitops/plan"),
    ];
    for (method, path) in expected {
        assert!(paths[path].get(method).is_some(), "{method} {path}");
    }
    let mut operations = 0;
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            operations += 1;
            for status in ["400", "401", "403", "404", "503"] {
                assert!(
                    operation["responses"].get(status).is_some(),
                    "{method} {path} {status}"
                );
            }
            // Each documented operation is served: an unauthenticated call gets 401, not 404/405.
            let concrete = path.replace("{org}", "acme").replace("{id}", "1");
            let method: Method = method.to_uppercase().parse().unwrap();
            let answer = w.call(None, method.clone(), &concrete, None).await;
            assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{method} {path}");
        }
    }
    assert_eq!(operations, 32);
    assert_eq!(
        doc.body["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let created: &Value = &paths["/api/v1/users/{id}/keys"]["post"]["responses"]["201"];
    assert!(created.is_object());
}

#[tokio::test]
async fn a_role_changed_in_the_store_applies_to_the_next_call() {
    let w = World::new().await;
    let denied = w.get(&w.acme_member, "/api/v1/orgs/acme/users").await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    // GitOps (or any other writer) promotes the member; its key is the same.
    let mut settings = NewGitopsSettings::new("https://git.example/acme/ias.git");
    settings.prune = false;
    *w.source.content.lock().unwrap() = (
        FILE.replace("role: member", "role: org_admin"),
        COMMIT.to_owned(),
    );
    w.operator.gitops_enable("acme", settings).await.unwrap();
    let synced = w
        .post(&w.root, "/api/v1/orgs/acme/gitops/sync", json!(null))
        .await;
    assert_eq!(
        synced.body["status"]["status"], "synced",
        "{:?}",
        synced.body
    );
    let user = w
        .get(&w.root, &format!("/api/v1/users/{}", w.acme_member.user.id))
        .await;
    assert_eq!(user.body["role"], Role::OrgAdmin.as_str());
    let allowed = w.get(&w.acme_member, "/api/v1/orgs/acme/users").await;
    assert_eq!(allowed.status, StatusCode::OK);
}

#[tokio::test]
async fn gitops_enable_and_sync_answer_501_without_a_reconciler() {
    let mut w = World::new().await;
    w.app = ias_admin_api::router(ias_admin_api::AdminApi::new(w.governor.clone()));
    let body = json!({"repo_url": "https://git.example/acme/ias.git"});
    let enable = w.put(&w.root, "/api/v1/orgs/acme/gitops", body).await;
    enable.expect_error(StatusCode::NOT_IMPLEMENTED, "gitops_unavailable");
    assert!(enable.headers.get("retry-after").is_none());
    let sync = w
        .post(&w.root, "/api/v1/orgs/acme/gitops/sync", json!(null))
        .await;
    sync.expect_error(StatusCode::NOT_IMPLEMENTED, "gitops_unavailable");
}

#[tokio::test]
async fn a_typo_in_a_body_is_refused_not_taken_as_absent() {
    let w = World::new().await;
    let set = w
        .put(
            &w.root,
            "/api/v1/orgs/acme/rate-limits",
            json!({"rpm": 100, "tpm": 5000}),
        )
        .await;
    assert_eq!(set.status, StatusCode::OK);
    let typo = w
        .put(
            &w.acme_admin,
            "/api/v1/orgs/acme/rate-limits",
            json!({"rmp": 50}),
        )
        .await;
    typo.expect_error(StatusCode::BAD_REQUEST, "invalid_body");
    assert!(
        typo.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rmp")
    );
    let limits = w.get(&w.root, "/api/v1/orgs/acme/rate-limits").await;
    assert_eq!(limits.body, json!({"rpm": 100, "tpm": 5000}));
}

#[tokio::test]
async fn only_a_system_admin_disables_gitops_that_reaches_the_host() {
    let w = World::new().await;
    let body = json!({"repo_url": "file:///srv/git/acme.git"});
    let enabled = w.put(&w.root, "/api/v1/orgs/acme/gitops", body).await;
    assert_eq!(enabled.status, StatusCode::OK, "{:?}", enabled.body);
    let refused = w.delete(&w.acme_admin, "/api/v1/orgs/acme/gitops").await;
    refused.expect_error(StatusCode::FORBIDDEN, "permission_denied");
    // Nor may it point the organization elsewhere first, then disable it.
    let elsewhere = json!({"repo_url": "https://git.example/acme/ias.git"});
    let repointed = w
        .put(&w.acme_admin, "/api/v1/orgs/acme/gitops", elsewhere)
        .await;
    repointed.expect_error(StatusCode::FORBIDDEN, "permission_denied");
    let state = w.operator.gitops_status("acme").await.unwrap();
    assert_eq!(state.settings.repo_url, "file:///srv/git/acme.git");
    let disabled = w.delete(&w.root, "/api/v1/orgs/acme/gitops").await;
    assert_eq!(disabled.body, json!({"changed": true}));
}

#[tokio::test]
async fn an_org_budget_changes_at_once_and_is_git_owned_in_gitops_mode() {
    let w = World::new().await;
    let patch = |who: &common::Person, body: serde_json::Value| {
        let who = who.clone();
        let w = &w;
        async move { w.patch(&who, "/api/v1/orgs/acme", body).await }
    };
    patch(&w.acme_member, json!({"monthly_token_budget": 10}))
        .await
        .expect_error(StatusCode::FORBIDDEN, "permission_denied");
    patch(&w.globex_admin, json!({"monthly_token_budget": 10}))
        .await
        .expect_error(StatusCode::FORBIDDEN, "permission_denied");
    patch(&w.acme_admin, json!({}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_input");
    patch(&w.acme_admin, json!({"timezone": "Mars/Olympus"}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_input");

    // A lower budget refuses the next request, with no reload to wait for.
    let allowed = w
        .governor
        .check(&w.acme_member.key, "gpt-4o", 500)
        .await
        .unwrap();
    assert!(allowed.is_allowed(), "{allowed:?}");
    let changed = patch(
        &w.acme_admin,
        json!({"monthly_token_budget": 100, "timezone": "Europe/Paris"}),
    )
    .await;
    assert_eq!(changed.status, StatusCode::OK, "{:?}", changed.body);
    assert_eq!(changed.body["monthly_token_budget"], 100);
    assert_eq!(changed.body["timezone"], "Europe/Paris");
    let refused = w
        .governor
        .check(&w.acme_member.key, "gpt-4o", 500)
        .await
        .unwrap();
    assert!(!refused.is_allowed(), "{refused:?}");

    // In GitOps mode the budget is the file's.
    *w.source.content.lock().unwrap() = (FILE.to_owned(), COMMIT.to_owned());
    w.operator
        .gitops_enable(
            "acme",
            NewGitopsSettings::new("https://git.example/acme/ias.git"),
        )
        .await
        .unwrap();
    let synced = w
        .post(&w.root, "/api/v1/orgs/acme/gitops/sync", json!(null))
        .await;
    assert_eq!(
        synced.body["status"]["status"], "synced",
        "{:?}",
        synced.body
    );
    let owned = patch(&w.acme_admin, json!({"monthly_token_budget": 5})).await;
    owned.expect_error(StatusCode::CONFLICT, "gitops_managed");
    assert_eq!(owned.body["error"]["details"]["commit"], COMMIT);
}
