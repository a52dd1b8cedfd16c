//! Every inference route of the gateway, streams, the model list and the
//! operations endpoints, in-process against an in-memory SQLite store.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use axum::http::{StatusCode, header};
use common::{Gateway, MODEL, post_request, streaming_upstream};
use http_body_util::BodyExt;
use ias_core::gitops::NewGitopsSettings;
use serde_json::{Value, json};

/// One request per route, and the total the mock charges for it.
fn requests() -> Vec<(&'static str, Value, i64)> {
    vec![
        // 6 prompt tokens ("hello" + 4), 10 reply words.
        (
            "/v1/chat/completions",
            json!({ "model": MODEL, "messages": [{ "role": "user", "content": "hello" }], "max_tokens": 10 }),
            16,
        ),
        // 2 prompt tokens, 10 reply words.
        (
            "/v1/completions",
            json!({ "model": MODEL, "prompt": "hello", "max_tokens": 10 }),
            12,
        ),
        // 2 + 2 prompt tokens, nothing else.
        (
            "/v1/embeddings",
            json!({ "model": MODEL, "input": ["hello", "world"] }),
            4,
        ),
        // 2 input tokens, 10 output words.
        (
            "/v1/responses",
            json!({ "model": MODEL, "input": "hello", "max_output_tokens": 10 }),
            12,
        ),
    ]
}

fn streamed(mut body: Value) -> Value {
    body["stream"] = json!(true);
    body
}

/// The `data:` events of a stream, parsed (`[DONE]` left out).
fn events(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .map(|data| serde_json::from_str(data).unwrap())
        .collect()
}

#[tokio::test]
async fn every_route_is_answered_by_the_mock_and_charged() {
    let gateway = Gateway::mock().await;
    let key = gateway.org("team-a", 1_000, None).await;
    let mut total = 0;
    for (path, body, charged) in requests() {
        let reply = gateway.post_to(path, Some(&key), &body).await;

        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text);
        assert_eq!(reply.body["usage"]["total_tokens"], charged, "{path}");
        total += charged;
    }
    assert_eq!(gateway.used("team-a").await, (total, 0));
}

#[tokio::test]
async fn streams_from_the_mock_end_with_their_usage_and_are_charged_it() {
    let gateway = Gateway::mock().await;
    let key = gateway.org("team-a", 1_000, None).await;
    let mut total = 0;
    for (path, body, charged) in requests() {
        if path == "/v1/embeddings" {
            continue;
        }
        let reply = gateway.post_to(path, Some(&key), &streamed(body)).await;

        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text);
        assert_eq!(reply.headers[header::CONTENT_TYPE], "text/event-stream");
        let last = events(&reply.text).pop().unwrap();
        let usage = last.get("response").map_or(&last["usage"], |r| &r["usage"]);
        assert_eq!(usage["total_tokens"], charged, "{path}: {}", reply.text);
        total += charged;
    }
    assert_eq!(gateway.governor.stats().open_reservations, 0);
    assert_eq!(gateway.used("team-a").await, (total, 0));
}

#[tokio::test]
async fn a_model_the_org_may_not_call_is_403_on_every_route() {
    let gateway = Gateway::mock().await;
    let key = gateway.org("team-a", 1_000, None).await;
    for (path, mut body, _) in requests() {
        body["model"] = json!("gpt-4o");

        let reply = gateway.post_to(path, Some(&key), &body).await;

        reply.expect_error(StatusCode::FORBIDDEN, "model_not_allowed");
    }
    assert_eq!(gateway.used("team-a").await, (0, 0));
}

#[tokio::test]
async fn an_exhausted_budget_is_429_with_retry_after_on_every_route() {
    let gateway = Gateway::mock().await;
    let key = gateway.org("team-a", 16, None).await;
    let (path, body, _) = requests().remove(0);
    assert_eq!(
        gateway.post_to(path, Some(&key), &body).await.status,
        StatusCode::OK
    );

    for (path, body, _) in requests() {
        for body in [body.clone(), streamed(body)] {
            let reply = gateway.post_to(path, Some(&key), &body).await;
            if body["stream"] == true && path == "/v1/embeddings" {
                reply.expect_error(StatusCode::BAD_REQUEST, "invalid_value");
                continue;
            }

            reply.expect_error(StatusCode::TOO_MANY_REQUESTS, "org_budget_exhausted");
            let retry_after: i64 = reply.headers[header::RETRY_AFTER]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(retry_after >= 1, "{path}");
        }
    }
    assert_eq!(gateway.used("team-a").await, (16, 0));
}

#[tokio::test]
async fn a_missing_or_invalid_key_is_401_on_every_route() {
    let gateway = Gateway::mock().await;
    gateway.org("team-a", 1_000, None).await;
    for (path, body, _) in requests() {
        gateway
            .post_to(path, None, &body)
            .await
            .expect_error(StatusCode::UNAUTHORIZED, "missing_api_key");
        gateway
            .post_to(path, Some("sk-not-an-ias-key"), &body)
            .await
            .expect_error(StatusCode::UNAUTHORIZED, "invalid_key");
    }
    gateway
        .get("/v1/models", None)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "missing_api_key");
}

#[tokio::test]
async fn the_model_list_has_only_the_allowed_models() {
    let gateway = Gateway::mock().await;
    let key = gateway.org("team-a", 1_000, None).await;

    let reply = gateway.get("/v1/models", Some(&key)).await;

    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["object"], "list");
    let ids: Vec<&str> = reply.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [MODEL]);
}

#[tokio::test]
async fn an_upstream_stream_is_passed_on_chunk_by_chunk() {
    let (upstream, streams, seen) = streaming_upstream().await;
    let gateway = Gateway::new(upstream).await;
    let key = gateway.org("team-a", 1_000, None).await;
    let (chunks, stream) = tokio::sync::mpsc::unbounded_channel();
    streams.send(stream).unwrap();
    let (path, body, _) = requests().remove(0);

    let response = gateway
        .call(post_request(path, Some(&key), &streamed(body)))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    for word in ["Hello", " world"] {
        let chunk = chunk(json!({ "choices": [{ "index": 0, "delta": { "content": word } }] }));
        chunks.send(chunk.clone()).unwrap();
        // The caller has this chunk before the upstream sends the next one.
        assert_eq!(next(&mut body).await.unwrap(), chunk);
    }
    let usage = json!({ "choices": [], "usage": { "prompt_tokens": 6, "completion_tokens": 2, "total_tokens": 8 } });
    chunks.send(chunk(usage)).unwrap();
    chunks.send("data: [DONE]\n\n".to_owned()).unwrap();
    drop(chunks);
    while next(&mut body).await.is_some() {}

    assert_eq!(
        seen.lock().unwrap()[0]["stream_options"]["include_usage"],
        true
    );
    assert_eq!(gateway.governor.stats().open_reservations, 0);
    assert_eq!(gateway.used("team-a").await, (8, 0));
}

#[tokio::test]
async fn a_caller_who_hangs_up_mid_stream_is_charged_what_was_produced() {
    let (upstream, streams, _) = streaming_upstream().await;
    let gateway = Gateway::new(upstream).await;
    let key = gateway.org("team-a", 1_000, None).await;
    let (chunks, stream) = tokio::sync::mpsc::unbounded_channel();
    streams.send(stream).unwrap();
    let (path, body, _) = requests().remove(0);
    let response = gateway
        .call(post_request(path, Some(&key), &streamed(body)))
        .await;
    let mut body = response.into_body();
    let first = json!({ "choices": [{ "index": 0, "delta": { "content": "Hello world" } }] });
    chunks.send(chunk(first)).unwrap();
    next(&mut body).await.unwrap();

    drop(body);

    gateway.no_open_reservation().await;
    let metrics = gateway.get("/metrics", None).await;
    assert!(
        metrics.text.contains("\nias_gateway_open_reservations 0\n"),
        "{}",
        metrics.text
    );
    // 6 prompt tokens, and "Hello world" at 4 characters a token.
    assert_eq!(gateway.used("team-a").await, (6 + 3, 0));
}

#[tokio::test]
async fn metrics_name_every_series() {
    let gateway = Gateway::mock().await;
    let key = gateway.org("team-a", 1_000, None).await;
    let settings = NewGitopsSettings::new("http://127.0.0.1:9/team-a.git");
    gateway
        .admin
        .gitops_enable("team-a", settings)
        .await
        .unwrap();
    let (path, body, _) = requests().remove(0);
    gateway.post_to(path, Some(&key), &body).await;
    let mut denied = body.clone();
    denied["model"] = json!("gpt-4o");
    gateway.post_to(path, Some(&key), &denied).await;
    gateway.post_to(path, None, &body).await;

    let reply = gateway.get("/metrics", None).await;

    assert_eq!(reply.status, StatusCode::OK);
    let content_type = reply.headers[header::CONTENT_TYPE].to_str().unwrap();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = reply.text;
    for line in [
        r#"ias_gateway_decisions_total{route="chat_completions",outcome="allowed",reason=""} 1"#,
        r#"ias_gateway_decisions_total{route="chat_completions",outcome="denied",reason="model_not_allowed"} 1"#,
        r#"ias_gateway_decisions_total{route="chat_completions",outcome="denied",reason="missing_api_key"} 1"#,
        "ias_gateway_authorize_duration_seconds_count 2",
        r#"ias_gateway_tokens_charged_total{route="chat_completions"} 16"#,
        "ias_gateway_open_reservations 0",
        "ias_gateway_requests_in_flight 0",
        r#"ias_gateway_gitops_sync_status{org="team-a",status="out_of_sync"} 1"#,
        r#"ias_gateway_gitops_sync_status{org="team-a",status="synced"} 0"#,
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
    }
    assert!(!text.contains(&key));
}

#[tokio::test]
async fn healthz_and_readyz_answer_while_the_store_does() {
    let gateway = Gateway::mock().await;
    let health = gateway.get("/healthz", None).await;
    assert_eq!(
        (health.status, health.body),
        (StatusCode::OK, json!({ "status": "ok" }))
    );
    let ready = gateway.get("/readyz", None).await;
    assert_eq!(
        (ready.status, ready.body),
        (StatusCode::OK, json!({ "status": "ready" }))
    );
}

fn chunk(data: Value) -> String {
    format!("data: {data}\n\n")
}

/// The next data frame of a body, as text; `None` at its end. Fails after 5 s.
async fn next(body: &mut axum::body::Body) -> Option<String> {
    let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("no frame within 5 s")?
        .unwrap();
    Some(String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap())
}
