//! Drives the gateway's router in-process against an in-memory SQLite store.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use axum::routing::post;
use common::{ESTIMATE, Gateway, MOCK_TOTAL, MODEL, chat, fake_upstream};
use ias_core::PageRequest;
use ias_gateway::upstream::{HttpUpstream, Upstream};
use serde_json::{Value, json};
use tower::ServiceExt;

#[tokio::test]
async fn an_allowed_request_is_answered_and_its_usage_charged() {
    let gateway = Gateway::mock().await;
    let key = gateway.org("team-a", 1_000, None).await;

    let reply = gateway.chat(&key, MODEL).await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["object"], "chat.completion");
    assert_eq!(reply.body["usage"]["total_tokens"], MOCK_TOTAL);
    assert_eq!(gateway.used("team-a").await, (MOCK_TOTAL, 0));
}

#[tokio::test]
async fn a_missing_or_malformed_authorization_header_is_401() {
    let gateway = Gateway::mock().await;
    gateway
        .post(None, chat(MODEL).to_string())
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "missing_api_key");

    let basic = Request::post("/v1/chat/completions")
        .header(header::AUTHORIZATION, "Basic dXNlcjpwYXNz")
        .body(Body::from(chat(MODEL).to_string()))
        .unwrap();
    gateway
        .send(basic)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "missing_api_key");
}

#[tokio::test]
async fn unknown_and_malformed_keys_are_401() {
    let gateway = Gateway::mock().await;
    gateway.org("team-a", 1_000, None).await;
    let unknown = format!("ias_{}", "A".repeat(40));
    for key in [unknown.as_str(), "sk-not-an-ias-key"] {
        let reply = gateway.chat(key, MODEL).await;
        reply.expect_error(StatusCode::UNAUTHORIZED, "invalid_key");
        assert_eq!(reply.body["error"]["type"], "authentication_error");
    }
}

#[tokio::test]
async fn a_revoked_key_is_401() {
    let gateway = Gateway::mock().await;
    let key = gateway.org("team-a", 1_000, None).await;
    let keys = gateway
        .admin
        .list_keys("first@team-a.example.com", &PageRequest::default())
        .await
        .unwrap();
    gateway.admin.revoke_key(keys.items[0].id).await.unwrap();

    gateway
        .chat(&key, MODEL)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "revoked_key");
}

#[tokio::test]
async fn a_model_the_org_may_not_call_is_403() {
    let gateway = Gateway::mock().await;
    let key = gateway.org("team-a", 1_000, None).await;

    let reply = gateway.chat(&key, "gpt-4o").await;

    reply.expect_error(StatusCode::FORBIDDEN, "model_not_allowed");
    assert_eq!(reply.body["error"]["type"], "permission_error");
    assert_eq!(reply.body["error"]["param"], "model");
    assert_eq!(gateway.used("team-a").await, (0, 0));
}

#[tokio::test]
async fn an_exhausted_org_budget_is_429_with_retry_after() {
    let gateway = Gateway::mock().await;
    let key = gateway.org("team-a", 2 * MOCK_TOTAL, None).await;
    for _ in 0..2 {
        assert_eq!(gateway.chat(&key, MODEL).await.status, StatusCode::OK);
    }

    let reply = gateway.chat(&key, MODEL).await;

    reply.expect_error(StatusCode::TOO_MANY_REQUESTS, "org_budget_exhausted");
    let retry_after: i64 = reply.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=31 * 86_400).contains(&retry_after), "{retry_after}");
    assert_eq!(reply.headers["x-should-retry"], "false");
    assert_eq!(gateway.used("team-a").await, (2 * MOCK_TOTAL, 0));
}

#[tokio::test]
async fn a_user_limit_is_429_while_others_in_the_org_go_on() {
    let gateway = Gateway::mock().await;
    let limited = gateway.org("team-a", 1_000, Some(ESTIMATE)).await;
    let free = gateway
        .user("team-a", "second@team-a.example.com", None)
        .await;
    assert_eq!(gateway.chat(&limited, MODEL).await.status, StatusCode::OK);

    gateway
        .chat(&limited, MODEL)
        .await
        .expect_error(StatusCode::TOO_MANY_REQUESTS, "user_limit_exhausted");
    assert_eq!(gateway.chat(&free, MODEL).await.status, StatusCode::OK);
}

#[tokio::test]
async fn bad_json_and_a_missing_model_are_400() {
    let gateway = Gateway::mock().await;
    let key = gateway.org("team-a", 1_000, None).await;

    gateway
        .post(Some(&key), "{not json".to_owned())
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_json");
    let no_model = json!({ "messages": [] }).to_string();
    let reply = gateway.post(Some(&key), no_model).await;
    reply.expect_error(StatusCode::BAD_REQUEST, "missing_required_parameter");
    assert_eq!(reply.body["error"]["type"], "invalid_request_error");
    assert_eq!(reply.body["error"]["param"], "model");
}

#[tokio::test]
async fn an_unreachable_upstream_is_502_and_the_reservation_released() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", closed.local_addr().unwrap());
    drop(closed);
    let upstream = Upstream::Http(HttpUpstream::new(&base, None).unwrap());
    let gateway = Gateway::new(upstream).await;
    let key = gateway.org("team-a", 1_000, None).await;

    let reply = gateway.chat(&key, MODEL).await;

    reply.expect_error(StatusCode::BAD_GATEWAY, "upstream_unreachable");
    assert_eq!(gateway.used("team-a").await, (0, 0));
}

#[tokio::test]
async fn an_upstream_error_is_502_and_the_reservation_released() {
    let failing = json!({ "error": { "message": "boom" } });
    let upstream = fake_upstream(StatusCode::INTERNAL_SERVER_ERROR, failing).await;
    let gateway = Gateway::new(upstream).await;
    let key = gateway.org("team-a", 1_000, None).await;

    let reply = gateway.chat(&key, MODEL).await;

    reply.expect_error(StatusCode::BAD_GATEWAY, "upstream_error");
    assert_eq!(gateway.used("team-a").await, (0, 0));
}

#[tokio::test]
async fn the_upstream_answer_and_usage_are_passed_on() {
    let answer = json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [],
        "usage": { "prompt_tokens": 100, "completion_tokens": 23, "total_tokens": 123 },
    });
    let gateway = Gateway::new(fake_upstream(StatusCode::OK, answer.clone()).await).await;
    let key = gateway.org("team-a", 1_000, None).await;

    let reply = gateway.chat(&key, MODEL).await;

    assert_eq!((reply.status, &reply.body), (StatusCode::OK, &answer));
    assert_eq!(gateway.used("team-a").await, (123, 0));
}

#[tokio::test]
async fn an_answer_without_usage_is_charged_the_estimate() {
    let answer = json!({ "id": "chatcmpl-1", "object": "chat.completion", "choices": [] });
    let gateway = Gateway::new(fake_upstream(StatusCode::OK, answer).await).await;
    let key = gateway.org("team-a", 1_000, None).await;

    assert_eq!(gateway.chat(&key, MODEL).await.status, StatusCode::OK);
    assert_eq!(gateway.used("team-a").await, (ESTIMATE, 0));
}

#[tokio::test]
async fn healthz_is_ok_and_unknown_paths_are_404_in_openai_shape() {
    let gateway = Gateway::mock().await;
    let health = gateway
        .send(Request::get("/healthz").body(Body::empty()).unwrap())
        .await;
    assert_eq!(
        (health.status, health.body),
        (StatusCode::OK, json!({ "status": "ok" }))
    );

    let unknown = Request::get("/v2/chat/completions")
        .body(Body::empty())
        .unwrap();
    gateway
        .send(unknown)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    let files = Request::get("/v1/files").body(Body::empty()).unwrap();
    gateway
        .send(files)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    let wrong_method = Request::get("/v1/chat/completions")
        .body(Body::empty())
        .unwrap();
    gateway
        .send(wrong_method)
        .await
        .expect_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
}

#[tokio::test]
async fn the_upstream_gets_its_own_key_and_every_field() {
    let echo = Router::new().route(
        "/v1/chat/completions",
        post(|headers: HeaderMap, body: String| async move {
            let authorization = headers[header::AUTHORIZATION].to_str().unwrap().to_owned();
            axum::Json(json!({ "authorization": authorization, "body": body }))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, echo).await });
    let upstream = HttpUpstream::new(&base, Some("sk-upstream".to_owned())).unwrap();
    let gateway = Gateway::new(Upstream::Http(upstream)).await;
    let key = gateway.org("team-a", 1_000, None).await;
    let sent = r#"{"model": "gpt-4o-mini", "messages": [], "max_tokens": 10, "x": [1, 2]}"#;

    let reply = gateway.post(Some(&key), sent.to_owned()).await;

    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["authorization"], "Bearer sk-upstream");
    let forwarded: Value = serde_json::from_str(reply.body["body"].as_str().unwrap()).unwrap();
    assert_eq!(forwarded, serde_json::from_str::<Value>(sent).unwrap());
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_in_openai_shape() {
    let gateway = Gateway::mock().await;
    let key = gateway.org("team-a", 1_000, None).await;
    let huge = format!(
        r#"{{"model": "{MODEL}", "messages": [{{"role": "user", "content": "{}"}}]}}"#,
        "a".repeat(ias_gateway::app::MAX_BODY_BYTES)
    );

    gateway
        .post(Some(&key), huge)
        .await
        .expect_error(StatusCode::PAYLOAD_TOO_LARGE, "invalid_body");
    assert_eq!(gateway.used("team-a").await, (0, 0));
}

/// The key is checked before the body is read: an unknown key with a body
/// over the limit is a 401, not a 413, and its body is never parsed.
#[tokio::test]
async fn an_unknown_key_is_refused_before_its_body_is_read() {
    let gateway = Gateway::mock().await;
    gateway.org("team-a", 1_000, None).await;
    let unknown = ias_core::KeySecret::generate();
    let huge = "x".repeat(ias_gateway::app::MAX_BODY_BYTES + 1);

    gateway
        .post(Some(unknown.expose()), huge)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_key");
}

#[tokio::test]
async fn a_caller_who_hangs_up_is_still_charged_and_leaves_nothing_reserved() {
    let slow = Router::new().route(
        "/v1/chat/completions",
        post(|| async {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            axum::Json(json!({ "choices": [], "usage": { "total_tokens": 77 } }))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, slow).await });
    let gateway = Gateway::new(Upstream::Http(HttpUpstream::new(&base, None).unwrap())).await;
    let key = gateway.org("team-a", 1_000, None).await;
    let request = Request::post("/v1/chat/completions")
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .body(Body::from(chat(MODEL).to_string()))
        .unwrap();

    let hung_up = tokio::time::timeout(
        std::time::Duration::from_millis(50),
        gateway.app.clone().oneshot(request),
    )
    .await;
    assert!(hung_up.is_err(), "the request should still be running");

    for _ in 0..100 {
        if gateway.used("team-a").await == (77, 0) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("usage after hang-up: {:?}", gateway.used("team-a").await);
}
