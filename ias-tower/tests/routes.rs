//! Every inference route through the Layer: allowed and charged, refused
//! with the right status, and nothing else under `/v1/` let through.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Harness, MODEL, Seen, chat_answer, get, json_answer};
use http::{StatusCode, header};
use ias_tower::{Api, Decided, Estimate, Observer, Outcome, UnknownPaths};
use serde_json::{Value, json};

/// One request per inference route, what the upstream reports, and what is charged.
struct Case {
    path: &'static str,
    body: Value,
    usage: Value,
    charged: i64,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            path: "/v1/chat/completions",
            body: json!({ "model": MODEL, "messages": [{ "role": "user", "content": "hello" }], "max_tokens": 10 }),
            usage: json!({ "prompt_tokens": 6, "completion_tokens": 9, "total_tokens": 15 }),
            charged: 15,
        },
        Case {
            path: "/v1/completions",
            body: json!({ "model": MODEL, "prompt": "hello", "max_tokens": 10 }),
            usage: json!({ "prompt_tokens": 2, "completion_tokens": 10, "total_tokens": 12 }),
            charged: 12,
        },
        Case {
            path: "/v1/embeddings",
            body: json!({ "model": MODEL, "input": ["hello", "world"] }),
            usage: json!({ "prompt_tokens": 4, "total_tokens": 4 }),
            charged: 4,
        },
        Case {
            path: "/v1/responses",
            body: json!({ "model": MODEL, "input": "hello", "max_output_tokens": 10 }),
            // No total: input and output tokens are added.
            usage: json!({ "input_tokens": 7, "output_tokens": 5 }),
            charged: 12,
        },
    ]
}

/// An upstream answering each route with its case's usage.
async fn harness() -> Harness {
    Harness::new(|seen: &Seen| {
        let case = cases()
            .into_iter()
            .find(|case| case.path == seen.path)
            .unwrap();
        json_answer(
            StatusCode::OK,
            json!({ "id": "x", "object": "answer", "usage": case.usage }),
        )
    })
    .await
}

#[tokio::test]
async fn every_inference_route_is_answered_and_charged_its_usage() {
    let h = harness().await;
    let key = h.org("team-a", 1_000).await;
    let mut total = 0;
    for case in cases() {
        let reply = h.post(case.path, Some(&key), &case.body).await;

        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{}: {}",
            case.path,
            reply.text
        );
        assert_eq!(reply.body["usage"], case.usage, "{}", case.path);
        let seen = h.last_seen();
        assert_eq!((seen.path.as_str(), &seen.body), (case.path, &case.body));
        total += case.charged;
    }
    assert_eq!(h.used("team-a").await, (total, 0));
}

#[tokio::test]
async fn a_model_the_org_may_not_call_is_403_on_every_route() {
    let h = harness().await;
    let key = h.org("team-a", 1_000).await;
    for mut case in cases() {
        case.body["model"] = json!("gpt-4o");

        let reply = h.post(case.path, Some(&key), &case.body).await;

        reply.expect_error(StatusCode::FORBIDDEN, "model_not_allowed");
        assert_eq!(reply.body["error"]["type"], "permission_error");
        assert_eq!(reply.body["error"]["param"], "model");
    }
    assert_eq!(h.upstream_calls(), 0);
    assert_eq!(h.used("team-a").await, (0, 0));
}

#[tokio::test]
async fn an_exhausted_org_budget_is_429_with_retry_after_on_every_route() {
    let h = Harness::new(|_: &Seen| chat_answer(100)).await;
    let key = h.org("team-a", 100).await;
    let first = cases().remove(0);
    let spent = h.post(first.path, Some(&key), &first.body).await;
    assert_eq!(spent.status, StatusCode::OK);

    for case in cases() {
        let reply = h.post(case.path, Some(&key), &case.body).await;

        reply.expect_error(StatusCode::TOO_MANY_REQUESTS, "org_budget_exhausted");
        assert_eq!(reply.body["error"]["type"], "insufficient_quota");
        let retry_after: i64 = reply.headers[header::RETRY_AFTER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=31 * 86_400).contains(&retry_after), "{retry_after}");
        assert_eq!(reply.headers["x-should-retry"], "false");
    }
    assert_eq!(h.upstream_calls(), 1);
    assert_eq!(h.used("team-a").await, (100, 0));
}

#[tokio::test]
async fn a_missing_or_unknown_key_is_401_on_every_route() {
    let h = harness().await;
    h.org("team-a", 1_000).await;
    let unknown = ias_core::KeySecret::generate();
    for case in cases() {
        h.post(case.path, None, &case.body)
            .await
            .expect_error(StatusCode::UNAUTHORIZED, "missing_api_key");
        for key in [unknown.expose(), "sk-not-an-ias-key"] {
            let reply = h.post(case.path, Some(key), &case.body).await;
            reply.expect_error(StatusCode::UNAUTHORIZED, "invalid_key");
            assert_eq!(reply.body["error"]["type"], "authentication_error");
        }
    }
    h.send(get("/v1/models", None))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "missing_api_key");
    h.send(get("/v1/models", Some(unknown.expose())))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_key");
    assert_eq!(h.upstream_calls(), 0);
}

#[tokio::test]
async fn a_revoked_key_is_401() {
    let h = harness().await;
    let key = h.org("team-a", 1_000).await;
    let keys = h
        .admin
        .list_keys(
            "first@team-a.example.com",
            &ias_core::PageRequest::default(),
        )
        .await
        .unwrap();
    h.admin.revoke_key(keys.items[0].id).await.unwrap();
    let case = cases().remove(0);

    h.post(case.path, Some(&key), &case.body)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "revoked_key");
}

/// The key is checked before the body is read: an unknown key with a body
/// over the limit is a 401, not a 413.
#[tokio::test]
async fn bodies_over_the_limit_are_413_but_only_for_a_known_key() {
    let h = Harness::with(|_: &Seen| chat_answer(1), |b| b.body_limit(1_000)).await;
    let key = h.org("team-a", 1_000).await;
    let huge =
        json!({ "model": MODEL, "messages": [{ "role": "user", "content": "a".repeat(2_000) }] });

    h.post("/v1/chat/completions", Some(&key), &huge)
        .await
        .expect_error(StatusCode::PAYLOAD_TOO_LARGE, "invalid_body");
    let unknown = ias_core::KeySecret::generate();
    h.post("/v1/chat/completions", Some(unknown.expose()), &huge)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_key");
    assert_eq!(h.upstream_calls(), 0);
}

#[tokio::test]
async fn bad_bodies_are_400_and_reach_nobody() {
    let h = harness().await;
    let key = h.org("team-a", 1_000).await;
    let no_input = json!({ "model": MODEL });
    for (path, code) in [
        ("/v1/chat/completions", "missing_required_parameter"),
        ("/v1/completions", "missing_required_parameter"),
        ("/v1/embeddings", "missing_required_parameter"),
    ] {
        let reply = h.post(path, Some(&key), &no_input).await;
        reply.expect_error(StatusCode::BAD_REQUEST, code);
    }
    let embeddings_stream = json!({ "model": MODEL, "input": "x", "stream": true });
    h.post("/v1/embeddings", Some(&key), &embeddings_stream)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_value");
    assert_eq!(h.upstream_calls(), 0);
    assert_eq!(h.used("team-a").await, (0, 0));
}

#[tokio::test]
async fn an_upstream_error_is_passed_on_and_the_reservation_released() {
    let h = Harness::new(|_: &Seen| {
        json_answer(
            StatusCode::BAD_REQUEST,
            json!({ "error": { "message": "bad temperature", "code": "invalid_value" } }),
        )
    })
    .await;
    let key = h.org("team-a", 1_000).await;
    for case in cases() {
        let reply = h.post(case.path, Some(&key), &case.body).await;

        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(reply.body["error"]["message"], "bad temperature");
    }
    assert_eq!(h.governor.stats().open_reservations, 0);
    assert_eq!(h.used("team-a").await, (0, 0));
}

#[tokio::test]
async fn an_answer_without_usage_is_charged_the_estimate() {
    let h = Harness::new(|_: &Seen| json_answer(StatusCode::OK, json!({ "choices": [] }))).await;
    let key = h.org("team-a", 1_000).await;
    let case = cases().remove(0);

    assert_eq!(
        h.post(case.path, Some(&key), &case.body).await.status,
        StatusCode::OK
    );

    // "hello": ceil(5 / 4) + 4 prompt tokens, plus max_tokens 10.
    assert_eq!(h.used("team-a").await, (16, 0));
}

#[tokio::test]
async fn a_custom_estimate_is_what_is_reserved() {
    let h = Harness::with(
        |_: &Seen| json_answer(StatusCode::OK, json!({ "choices": [] })),
        |builder| {
            builder.estimator(|_, _| Estimate {
                prompt: 30,
                completion: 3,
            })
        },
    )
    .await;
    let key = h.org("team-a", 1_000).await;
    let case = cases().remove(0);

    assert_eq!(
        h.post(case.path, Some(&key), &case.body).await.status,
        StatusCode::OK
    );
    assert_eq!(h.used("team-a").await, (33, 0));
}

#[tokio::test]
async fn other_paths_under_v1_are_refused_and_never_forwarded() {
    let h = harness().await;
    let key = h.org("team-a", 1_000).await;
    let body = json!({ "model": MODEL, "input": "hello" });
    for path in [
        "/v1/audio/speech",
        "/v1/files",
        "/v1/models/gpt-4o-mini",
        "/v1",
    ] {
        h.post(path, Some(&key), &body)
            .await
            .expect_error(StatusCode::NOT_FOUND, "not_found");
    }
    h.post(
        "/v1/chat/completions/../../v1/embeddings",
        Some(&key),
        &body,
    )
    .await
    .expect_error(StatusCode::NOT_FOUND, "not_found");
    h.send(get("/v1/chat/completions", Some(&key)))
        .await
        .expect_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    assert_eq!(h.upstream_calls(), 0);
}

#[tokio::test]
async fn spelling_variants_of_a_route_are_governed_too() {
    let h = harness().await;
    let key = h.org("team-a", 1_000).await;
    let mut case = cases().remove(0);
    case.body["model"] = json!("gpt-4o");
    for path in ["/V1/Chat/Completions", "//v1/chat//completions/"] {
        h.post(path, Some(&key), &case.body)
            .await
            .expect_error(StatusCode::FORBIDDEN, "model_not_allowed");
    }
    assert_eq!(h.upstream_calls(), 0);
}

#[tokio::test]
async fn unknown_paths_can_be_governed_when_they_name_a_model() {
    let h = Harness::with(
        |_: &Seen| json_answer(StatusCode::OK, json!({ "usage": { "total_tokens": 21 } })),
        |builder| builder.unknown_paths(UnknownPaths::Govern),
    )
    .await;
    let key = h.org("team-a", 10_000).await;

    let allowed = json!({ "model": MODEL, "input": "say hi" });
    assert_eq!(
        h.post("/v1/audio/speech", Some(&key), &allowed)
            .await
            .status,
        StatusCode::OK
    );
    let other_model = json!({ "model": "tts-1", "input": "say hi" });
    h.post("/v1/audio/speech", Some(&key), &other_model)
        .await
        .expect_error(StatusCode::FORBIDDEN, "model_not_allowed");
    h.post("/v1/files", Some(&key), &json!({ "purpose": "batch" }))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "missing_required_parameter");
    h.send(get("/v1/files", Some(&key)))
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");

    assert_eq!(h.upstream_calls(), 1);
    assert_eq!(h.used("team-a").await, (21, 0));
}

#[tokio::test]
async fn paths_outside_the_prefix_pass_untouched() {
    let h =
        Harness::new(|seen: &Seen| json_answer(StatusCode::OK, json!({ "path": seen.path }))).await;

    let reply = h.send(get("/healthz", None)).await;

    assert_eq!(
        (reply.status, &reply.body),
        (StatusCode::OK, &json!({ "path": "/healthz" }))
    );
}

#[tokio::test]
async fn the_model_list_keeps_only_the_allowed_models() {
    let h = Harness::new(|_: &Seen| {
        let data: Vec<Value> = ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]
            .iter()
            .map(|id| json!({ "id": id, "object": "model", "created": 1, "owned_by": "mock" }))
            .collect();
        json_answer(StatusCode::OK, json!({ "object": "list", "data": data }))
    })
    .await;
    let key = h.org("team-a", 1_000).await;

    let reply = h.send(get("/v1/models", Some(&key))).await;

    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["object"], "list");
    assert_eq!(
        reply.body["data"],
        json!([{ "id": "gpt-4o-mini", "object": "model", "created": 1, "owned_by": "mock" }])
    );
    h.admin.allow_model("team-a", "*").await.unwrap();
    let all = h.send(get("/v1/models", Some(&key))).await;
    assert_eq!(all.body["data"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn without_an_upstream_list_the_allowed_names_are_listed() {
    let h = Harness::new(|_: &Seen| json_answer(StatusCode::NOT_FOUND, json!({}))).await;
    let key = h.org("team-a", 1_000).await;
    h.admin.allow_model("team-a", "anthropic/*").await.unwrap();

    let reply = h.send(get("/v1/models", Some(&key))).await;

    assert_eq!(reply.status, StatusCode::OK);
    let ids: Vec<&str> = reply.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [MODEL]);
}

/// Counts decisions by outcome and reason, and the authorize timings.
#[derive(Default)]
struct Counting {
    decided: Mutex<Vec<(Outcome, Option<&'static str>, bool)>>,
    charged: Mutex<Vec<(Api, i64)>>,
}

impl Observer for Counting {
    fn decided(&self, decided: &Decided) {
        let timed = decided
            .authorize_time
            .is_some_and(|t| t < Duration::from_secs(5));
        self.decided
            .lock()
            .unwrap()
            .push((decided.outcome, decided.reason, timed));
    }

    fn charged(&self, api: Api, tokens: i64) {
        self.charged.lock().unwrap().push((api, tokens));
    }
}

#[tokio::test]
async fn the_observer_hears_every_decision_and_charge() {
    let counting = Arc::new(Counting::default());
    let observer = counting.clone();
    let h = Harness::with(|_: &Seen| chat_answer(15), move |b| b.observer(observer)).await;
    let key = h.org("team-a", 1_000).await;
    let case = cases().remove(0);
    let mut denied = case.body.clone();
    denied["model"] = json!("gpt-4o");

    h.post(case.path, Some(&key), &case.body).await;
    h.post(case.path, Some(&key), &denied).await;
    h.post(case.path, None, &case.body).await;

    assert_eq!(
        *counting.decided.lock().unwrap(),
        [
            (Outcome::Allowed, None, true),
            (Outcome::Denied, Some("model_not_allowed"), true),
            (Outcome::Denied, Some("missing_api_key"), false),
        ]
    );
    assert_eq!(
        *counting.charged.lock().unwrap(),
        [(Api::ChatCompletions, 15)]
    );
}
