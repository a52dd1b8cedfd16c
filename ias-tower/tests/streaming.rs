//! Streams through the Layer: passed on chunk by chunk, charged from their
//! usage, and never left with a reservation open, whoever stops first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{
    Chunks, Harness, MODEL, Seen, channel_stream, chat_answer, chat_chunk, event, next_frame, post,
    usage_chunk,
};
use http::StatusCode;
use ias_tower::BoxError;
use serde_json::{Value, json};
use tower::ServiceExt;

/// "hello": ceil(5 / 4) + 4 prompt tokens.
const PROMPT: i64 = 6;

fn chat_stream() -> Value {
    json!({
        "model": MODEL,
        "messages": [{ "role": "user", "content": "hello" }],
        "max_tokens": 50,
        "stream": true,
    })
}

/// A harness whose upstream answers with a stream the test feeds.
async fn streaming() -> (Harness, Chunks, String) {
    let (sender, response) = channel_stream();
    let h = Harness::new(move |_: &Seen| response.lock().unwrap().take().unwrap()).await;
    let key = h.org("team-a", 1_000).await;
    (h, sender, key)
}

fn text(frame: Option<Result<Bytes, BoxError>>) -> String {
    String::from_utf8(frame.unwrap().unwrap().to_vec()).unwrap()
}

#[tokio::test]
async fn a_stream_is_passed_on_chunk_by_chunk_and_charged_its_last_usage() {
    let (h, upstream, key) = streaming().await;
    let response = h
        .call(post("/v1/chat/completions", Some(&key), &chat_stream()))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();

    // Each chunk reaches the caller before the upstream sends the next.
    for word in ["Hello", " world"] {
        upstream.send(event(&chat_chunk(word))).unwrap();
        let got = text(next_frame(&mut body).await);
        assert_eq!(got, format!("data: {}\n\n", chat_chunk(word)));
        assert_eq!(h.governor.stats().open_reservations, 1);
    }
    upstream.send(event(&usage_chunk(PROMPT, 2))).unwrap();
    upstream
        .send(Ok(Bytes::from_static(b"data: [DONE]\n\n")))
        .unwrap();
    drop(upstream);
    assert!(text(next_frame(&mut body).await).contains("\"total_tokens\":8"));
    assert_eq!(text(next_frame(&mut body).await), "data: [DONE]\n\n");
    assert!(next_frame(&mut body).await.is_none());

    // Charged before the end reached the caller.
    assert_eq!(h.governor.stats().open_reservations, 0);
    assert_eq!(h.layer.drain().in_flight(), 0);
    let sent = h.last_seen().body;
    assert_eq!(sent["stream_options"], json!({ "include_usage": true }));
    assert_eq!(h.used("team-a").await, (PROMPT + 2, 0));
}

#[tokio::test]
async fn a_caller_who_hangs_up_mid_stream_is_charged_what_was_produced() {
    let (h, upstream, key) = streaming().await;
    let response = h
        .call(post("/v1/chat/completions", Some(&key), &chat_stream()))
        .await;
    let mut body = response.into_body();
    upstream.send(event(&chat_chunk("Hello world"))).unwrap();
    text(next_frame(&mut body).await);

    drop(body);

    h.no_open_reservation().await;
    assert!(upstream.is_closed(), "the upstream stream is dropped too");
    // The prompt, plus "Hello world" at 4 characters a token.
    assert_eq!(h.used("team-a").await, (PROMPT + 3, 0));
}

#[tokio::test]
async fn usage_seen_before_a_hang_up_is_what_is_charged() {
    let (h, upstream, key) = streaming().await;
    let response = h
        .call(post("/v1/chat/completions", Some(&key), &chat_stream()))
        .await;
    let mut body = response.into_body();
    upstream.send(event(&chat_chunk("Hello"))).unwrap();
    upstream.send(event(&usage_chunk(PROMPT, 40))).unwrap();
    text(next_frame(&mut body).await);
    text(next_frame(&mut body).await);

    drop(body);

    h.no_open_reservation().await;
    assert_eq!(h.used("team-a").await, (PROMPT + 40, 0));
}

#[tokio::test]
async fn a_stream_without_usage_is_charged_its_streamed_text() {
    let (h, upstream, key) = streaming().await;
    let response = h
        .call(post("/v1/chat/completions", Some(&key), &chat_stream()))
        .await;
    for word in ["abcd", "efgh", "ij"] {
        upstream.send(event(&chat_chunk(word))).unwrap();
    }
    drop(upstream);

    let reply = common::Reply::read(response).await;

    assert_eq!(reply.text.matches("data: ").count(), 3);
    assert_eq!(h.governor.stats().open_reservations, 0);
    assert_eq!(h.used("team-a").await, (PROMPT + 3, 0));
}

#[tokio::test]
async fn an_upstream_stream_that_fails_is_charged_what_it_produced() {
    let (h, upstream, key) = streaming().await;
    let response = h
        .call(post("/v1/chat/completions", Some(&key), &chat_stream()))
        .await;
    let mut body = response.into_body();
    upstream.send(event(&chat_chunk("abcdefgh"))).unwrap();
    text(next_frame(&mut body).await);

    upstream.send(Err("connection reset".into())).unwrap();

    let failed = next_frame(&mut body).await.unwrap();
    assert!(failed.unwrap_err().to_string().contains("connection reset"));
    assert_eq!(h.governor.stats().open_reservations, 0);
    assert_eq!(h.used("team-a").await, (PROMPT + 2, 0));
}

#[tokio::test]
async fn a_responses_stream_is_charged_from_its_completed_event() {
    let (h, upstream, key) = streaming().await;
    let request =
        json!({ "model": MODEL, "input": "hello", "max_output_tokens": 50, "stream": true });
    let response = h.call(post("/v1/responses", Some(&key), &request)).await;
    let events = [
        json!({ "type": "response.created", "response": { "id": "r1", "usage": null } }),
        json!({ "type": "response.output_text.delta", "delta": "Hi there" }),
        json!({ "type": "response.completed", "response": {
            "id": "r1",
            "usage": { "input_tokens": 9, "output_tokens": 2, "total_tokens": 11 },
        } }),
    ];
    for data in &events {
        let kind = data["type"].as_str().unwrap();
        let frame = format!("event: {kind}\ndata: {data}\n\n");
        upstream.send(Ok(Bytes::from(frame))).unwrap();
    }
    drop(upstream);

    let reply = common::Reply::read(response).await;

    assert_eq!(reply.text.matches("event: ").count(), 3);
    let sent = h.last_seen().body;
    assert!(sent.get("stream_options").is_none(), "{sent}");
    assert_eq!(h.used("team-a").await, (11, 0));
}

#[tokio::test]
async fn a_caller_who_hangs_up_before_the_answer_leaves_nothing_reserved() {
    let h = Harness::new(|_: &Seen| chat_answer(77)).await;
    let key = h.org("team-a", 1_000).await;
    let mut slow = chat_stream();
    slow["stream"] = json!(false);
    slow["x_delay_ms"] = json!(300);
    let call = h
        .service
        .clone()
        .oneshot(post("/v1/chat/completions", Some(&key), &slow));

    let hung_up = tokio::time::timeout(Duration::from_millis(50), call).await;
    assert!(hung_up.is_err(), "the request should still be running");

    h.no_open_reservation().await;
    assert_eq!(h.used("team-a").await, (77, 0));
}

#[tokio::test]
async fn cancelling_cuts_off_open_streams_and_charges_them() {
    let (h, upstream, key) = streaming().await;
    let response = h
        .call(post("/v1/chat/completions", Some(&key), &chat_stream()))
        .await;
    let mut body = response.into_body();
    upstream.send(event(&chat_chunk("abcd"))).unwrap();
    text(next_frame(&mut body).await);
    let drain = h.layer.drain();
    assert_eq!(drain.in_flight(), 1);
    assert!(!drain.wait_idle_for(Duration::from_millis(20)).await);

    drain.cancel();

    let cut = next_frame(&mut body).await.unwrap();
    assert!(cut.unwrap_err().to_string().contains("shutting down"));
    assert!(drain.wait_idle_for(Duration::from_secs(5)).await);
    assert_eq!(h.governor.stats().open_reservations, 0);
    assert_eq!(h.used("team-a").await, (PROMPT + 1, 0));
}

#[tokio::test]
async fn cancelling_answers_a_request_still_waiting_for_the_upstream() {
    let h = Harness::new(|_: &Seen| chat_answer(77)).await;
    let key = h.org("team-a", 1_000).await;
    let mut slow = chat_stream();
    slow["x_delay_ms"] = json!(2_000);
    let waiting = tokio::spawn(h.service.clone().oneshot(post(
        "/v1/chat/completions",
        Some(&key),
        &slow,
    )));
    while h.governor.stats().open_reservations == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    h.layer.drain().cancel();

    let reply = common::Reply::read(waiting.await.unwrap().unwrap()).await;
    reply.expect_error(StatusCode::SERVICE_UNAVAILABLE, "shutting_down");
    assert!(h.layer.drain().wait_idle_for(Duration::from_secs(5)).await);
    // The upstream had the prompt: it is charged.
    assert_eq!(h.used("team-a").await, (PROMPT, 0));
}

#[tokio::test]
async fn a_request_after_the_cut_off_reserves_nothing() {
    let h = Harness::new(|_: &Seen| chat_answer(77)).await;
    let key = h.org("team-a", 1_000).await;
    h.layer.drain().cancel();

    let mut plain = chat_stream();
    plain["stream"] = json!(false);
    let reply = h.post("/v1/chat/completions", Some(&key), &plain).await;

    reply.expect_error(StatusCode::SERVICE_UNAVAILABLE, "shutting_down");
    assert_eq!(h.upstream_calls(), 0);
    assert_eq!(h.used("team-a").await, (0, 0));
}
