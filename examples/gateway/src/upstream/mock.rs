//! The built-in upstream: deterministic answers on every route, no network.
//!
//! The reply is the first words of a fixed sentence, one completion token
//! per word, as many as the request's limit allows (`max_completion_tokens`,
//! `max_tokens` or `max_output_tokens`; at most [`REPLY_WORDS`]). The
//! prompt tokens reported are the gateway's own prompt estimate
//! ([`ias_tower::estimate`]), so a test can predict the usage exactly. One
//! choice is returned whatever `n` asks for.
//!
//! | route | answer |
//! |---|---|
//! | `POST chat/completions` | a `chat.completion`; with `"stream": true`, one chunk per word, then (when `stream_options.include_usage` is set) a last chunk with the usage, then `[DONE]` |
//! | `POST completions` | a `text_completion`, streamed the same way |
//! | `POST embeddings` | one 8-number embedding per input; usage of prompt tokens only |
//! | `POST responses` | a `response`; streamed as `response.created`, one `response.output_text.delta` per word, `response.completed` with the usage |
//! | `GET models` | [`MODELS`] |

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ias_tower::{Api, ApiError, estimate};
use serde_json::{Map, Value, json};

/// The words the mock answers with, one token each.
pub const REPLY_WORDS: [&str; 10] = [
    "This",
    "is",
    "a",
    "deterministic",
    "reply",
    "from",
    "the",
    "ias-gateway",
    "mock",
    "upstream.",
];

/// The models the mock lists on `GET models`.
pub const MODELS: [&str; 4] = ["gpt-4o-mini", "gpt-4o", "o4-mini", "text-embedding-3-small"];

/// Numbers in each embedding.
pub const EMBEDDING_SIZE: usize = 8;

/// Answers every OpenAI route without calling any model.
#[derive(Debug, Default)]
pub struct MockUpstream {
    answered: AtomicU64,
}

/// What one request asked for, as the mock reads it.
struct Asked {
    fields: Map<String, Value>,
    model: String,
    prompt_tokens: i64,
    words: Vec<&'static str>,
    stream: bool,
    id: u64,
}

impl MockUpstream {
    /// The answer to `method route` with a JSON `body`.
    pub fn answer(&self, method: &Method, route: &str, body: &[u8]) -> Response {
        let api = match (method.as_str(), route) {
            ("GET", "models") => return models(),
            ("POST", "chat/completions") => Api::ChatCompletions,
            ("POST", "completions") => Api::Completions,
            ("POST", "embeddings") => Api::Embeddings,
            ("POST", "responses") => Api::Responses,
            _ => return super::not_served(route),
        };
        let Ok(Value::Object(fields)) = serde_json::from_slice(body) else {
            let message = "the mock upstream takes a JSON object".to_owned();
            return ApiError::invalid_request("invalid_json", message, None).into_http();
        };
        let asked = self.read(api, fields);
        match (api, asked.stream) {
            (Api::ChatCompletions, false) => Json(chat(&asked)).into_response(),
            (Api::ChatCompletions, true) => event_stream(chat_stream(&asked)),
            (Api::Completions, false) => Json(completion(&asked)).into_response(),
            (Api::Completions, true) => event_stream(completion_stream(&asked)),
            (Api::Embeddings, _) => Json(embeddings(&asked)).into_response(),
            (Api::Responses, false) => Json(response(&asked, "completed")).into_response(),
            (Api::Responses, true) => event_stream(response_stream(&asked)),
            _ => super::not_served(route),
        }
    }

    fn read(&self, api: Api, fields: Map<String, Value>) -> Asked {
        let default = match api {
            Api::Completions => estimate::DEFAULT_LEGACY_COMPLETION_ALLOWANCE,
            _ => estimate::DEFAULT_COMPLETION_ALLOWANCE,
        };
        let limit = ["max_completion_tokens", "max_tokens", "max_output_tokens"]
            .iter()
            .find_map(|name| fields.get(*name).and_then(Value::as_i64))
            .unwrap_or(default);
        let words = REPLY_WORDS
            .iter()
            .copied()
            .take(usize::try_from(limit).unwrap_or(0))
            .collect();
        Asked {
            model: fields
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            prompt_tokens: estimate::estimate(api, &fields).prompt,
            words,
            stream: fields.get("stream").and_then(Value::as_bool) == Some(true),
            id: self.answered.fetch_add(1, Ordering::Relaxed) + 1,
            fields,
        }
    }
}

impl Asked {
    fn completion_tokens(&self) -> i64 {
        i64::try_from(self.words.len()).unwrap_or(i64::MAX)
    }

    fn text(&self) -> String {
        self.words.join(" ")
    }

    /// The words as streamed: each after the first with its leading space.
    fn pieces(&self) -> impl Iterator<Item = String> + '_ {
        self.words.iter().enumerate().map(|(i, word)| match i {
            0 => (*word).to_owned(),
            _ => format!(" {word}"),
        })
    }

    fn finish_reason(&self) -> &'static str {
        if self.words.len() < REPLY_WORDS.len() {
            "length"
        } else {
            "stop"
        }
    }

    fn usage(&self) -> Value {
        let completion = self.completion_tokens();
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens.saturating_add(completion),
        })
    }

    fn wants_stream_usage(&self) -> bool {
        let options = self.fields.get("stream_options");
        options
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            == Some(true)
    }

    fn created(&self) -> i64 {
        chrono::Utc::now().timestamp()
    }
}

fn chat(asked: &Asked) -> Value {
    json!({
        "id": format!("chatcmpl-mock-{}", asked.id),
        "object": "chat.completion",
        "created": asked.created(),
        "model": asked.model,
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": asked.text() },
            "finish_reason": asked.finish_reason(),
        }],
        "usage": asked.usage(),
    })
}

fn chat_stream(asked: &Asked) -> Vec<String> {
    let chunk = |delta: Value, finish: Option<&str>| {
        let mut chunk = json!({
            "id": format!("chatcmpl-mock-{}", asked.id),
            "object": "chat.completion.chunk",
            "created": asked.created(),
            "model": asked.model,
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
        });
        if asked.wants_stream_usage() {
            chunk["usage"] = Value::Null;
        }
        data(&chunk)
    };
    let mut events = vec![chunk(json!({ "role": "assistant", "content": "" }), None)];
    events.extend(
        asked
            .pieces()
            .map(|piece| chunk(json!({ "content": piece }), None)),
    );
    events.push(chunk(json!({}), Some(asked.finish_reason())));
    if asked.wants_stream_usage() {
        events.push(data(&json!({
            "id": format!("chatcmpl-mock-{}", asked.id),
            "object": "chat.completion.chunk",
            "created": asked.created(),
            "model": asked.model,
            "choices": [],
            "usage": asked.usage(),
        })));
    }
    events.push("data: [DONE]\n\n".to_owned());
    events
}

fn completion(asked: &Asked) -> Value {
    json!({
        "id": format!("cmpl-mock-{}", asked.id),
        "object": "text_completion",
        "created": asked.created(),
        "model": asked.model,
        "choices": [{
            "index": 0,
            "text": asked.text(),
            "logprobs": null,
            "finish_reason": asked.finish_reason(),
        }],
        "usage": asked.usage(),
    })
}

fn completion_stream(asked: &Asked) -> Vec<String> {
    let chunk = |text: String, finish: Option<&str>, usage: Value| {
        data(&json!({
            "id": format!("cmpl-mock-{}", asked.id),
            "object": "text_completion",
            "created": asked.created(),
            "model": asked.model,
            "choices": [{ "index": 0, "text": text, "logprobs": null, "finish_reason": finish }],
            "usage": usage,
        }))
    };
    let mut events: Vec<String> = asked
        .pieces()
        .map(|piece| chunk(piece, None, Value::Null))
        .collect();
    events.push(chunk(
        String::new(),
        Some(asked.finish_reason()),
        Value::Null,
    ));
    if asked.wants_stream_usage() {
        events.push(data(&json!({
            "id": format!("cmpl-mock-{}", asked.id),
            "object": "text_completion",
            "created": asked.created(),
            "model": asked.model,
            "choices": [],
            "usage": asked.usage(),
        })));
    }
    events.push("data: [DONE]\n\n".to_owned());
    events
}

fn embeddings(asked: &Asked) -> Value {
    let inputs: Vec<Value> = match asked.fields.get("input") {
        Some(Value::Array(items)) if items.iter().all(|i| !i.is_number()) => items.clone(),
        Some(input) => vec![input.clone()],
        None => Vec::new(),
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            json!({ "object": "embedding", "index": index, "embedding": embedding(input) })
        })
        .collect();
    json!({
        "object": "list",
        "data": data,
        "model": asked.model,
        "usage": { "prompt_tokens": asked.prompt_tokens, "total_tokens": asked.prompt_tokens },
    })
}

/// A fixed vector that depends only on the input's length.
fn embedding(input: &Value) -> Vec<f64> {
    let size = match input {
        Value::String(text) => text.chars().count(),
        Value::Array(ids) => ids.len(),
        _ => 0,
    };
    (0..EMBEDDING_SIZE)
        .map(|d| ((size + d) % 7) as f64 / 7.0)
        .collect()
}

fn response(asked: &Asked, status: &str) -> Value {
    let done = status == "completed";
    let output = match done {
        true => json!([{
            "id": format!("msg-mock-{}", asked.id),
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{ "type": "output_text", "text": asked.text(), "annotations": [] }],
        }]),
        false => json!([]),
    };
    let usage = match done {
        true => json!({
            "input_tokens": asked.prompt_tokens,
            "input_tokens_details": { "cached_tokens": 0 },
            "output_tokens": asked.completion_tokens(),
            "output_tokens_details": { "reasoning_tokens": 0 },
            "total_tokens": asked.prompt_tokens.saturating_add(asked.completion_tokens()),
        }),
        false => Value::Null,
    };
    json!({
        "id": format!("resp-mock-{}", asked.id),
        "object": "response",
        "created_at": asked.created(),
        "model": asked.model,
        "status": status,
        "output": output,
        "parallel_tool_calls": true,
        "tool_choice": "auto",
        "tools": [],
        "usage": usage,
    })
}

fn response_stream(asked: &Asked) -> Vec<String> {
    let mut sequence = 0;
    let mut event = |kind: &str, mut body: Value| {
        body["type"] = json!(kind);
        body["sequence_number"] = json!(sequence);
        sequence += 1;
        format!("event: {kind}\n{}", data(&body))
    };
    let mut events = vec![event(
        "response.created",
        json!({ "response": response(asked, "in_progress") }),
    )];
    let item = format!("msg-mock-{}", asked.id);
    for piece in asked.pieces() {
        events.push(event(
            "response.output_text.delta",
            json!({ "item_id": item, "output_index": 0, "content_index": 0, "delta": piece }),
        ));
    }
    events.push(event(
        "response.completed",
        json!({ "response": response(asked, "completed") }),
    ));
    events
}

fn models() -> Response {
    let data: Vec<Value> = MODELS
        .iter()
        .map(|id| json!({ "id": id, "object": "model", "created": 0, "owned_by": "ias-mock" }))
        .collect();
    Json(json!({ "object": "list", "data": data })).into_response()
}

fn data(value: &Value) -> String {
    format!("data: {value}\n\n")
}

/// A `text/event-stream` answer whose body sends each event as its own frame.
fn event_stream(events: Vec<String>) -> Response {
    let frames = events
        .into_iter()
        .map(|e| Ok::<_, Infallible>(Bytes::from(e)));
    let mut response = Response::new(Body::from_stream(futures_util::stream::iter(frames)));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    response
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    async fn call(route: &str, body: Value) -> (StatusCode, String) {
        let mock = MockUpstream::default();
        let response = mock.answer(&Method::POST, route, body.to_string().as_bytes());
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    fn chat_body(max_tokens: Option<i64>) -> Value {
        let mut body =
            json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "hello" }] });
        if let Some(max) = max_tokens {
            body["max_tokens"] = json!(max);
        }
        body
    }

    async fn answer(max_tokens: Option<i64>) -> Value {
        let (_, text) = call("chat/completions", chat_body(max_tokens)).await;
        serde_json::from_str(&text).unwrap()
    }

    #[tokio::test]
    async fn usage_is_deterministic_and_within_max_tokens() {
        let full = answer(None).await;
        assert_eq!(full["object"], "chat.completion");
        assert_eq!(full["usage"]["prompt_tokens"], 6);
        assert_eq!(full["usage"]["completion_tokens"], 10);
        assert_eq!(full["usage"]["total_tokens"], 16);
        assert_eq!(full["choices"][0]["finish_reason"], "stop");

        let short = answer(Some(3)).await;
        assert_eq!(short["usage"]["completion_tokens"], 3);
        assert_eq!(short["choices"][0]["message"]["content"], "This is a");
        assert_eq!(short["choices"][0]["finish_reason"], "length");
        assert_eq!(answer(Some(0)).await["usage"]["completion_tokens"], 0);
    }

    #[tokio::test]
    async fn a_chat_stream_sends_usage_last_only_when_asked() {
        let mut body = chat_body(Some(3));
        body["stream"] = json!(true);
        let (_, plain) = call("chat/completions", body.clone()).await;
        assert!(!plain.contains("total_tokens"), "{plain}");
        assert!(plain.ends_with("data: [DONE]\n\n"));

        body["stream_options"] = json!({ "include_usage": true });
        let (status, text) = call("chat/completions", body).await;
        assert_eq!(status, StatusCode::OK);
        let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
        // Role, three words, finish, usage, done.
        assert_eq!(events.len(), 7, "{text}");
        let usage: Value = serde_json::from_str(events[5].trim_start_matches("data: ")).unwrap();
        assert_eq!(usage["usage"]["total_tokens"], 9);
        assert_eq!(usage["choices"], json!([]));
    }

    #[tokio::test]
    async fn every_route_reports_its_usage() {
        let (_, text) = call("completions", json!({ "model": "m", "prompt": "hello" })).await;
        let completion: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(completion["usage"]["total_tokens"], 2 + 10);

        let input = json!({ "model": "m", "input": ["hello", "hi"] });
        let (_, text) = call("embeddings", input).await;
        let embeddings: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(embeddings["data"].as_array().unwrap().len(), 2);
        assert_eq!(
            embeddings["data"][0]["embedding"].as_array().unwrap().len(),
            EMBEDDING_SIZE
        );
        assert_eq!(
            embeddings["usage"],
            json!({ "prompt_tokens": 3, "total_tokens": 3 })
        );

        let input = json!({ "model": "m", "input": "hello", "max_output_tokens": 2 });
        let (_, text) = call("responses", input.clone()).await;
        let response: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(response["output"][0]["content"][0]["text"], "This is");
        assert_eq!(response["usage"]["total_tokens"], 4);

        let mut streamed = input;
        streamed["stream"] = json!(true);
        let (_, text) = call("responses", streamed).await;
        assert!(text.starts_with("event: response.created\n"), "{text}");
        assert!(text.contains("\"total_tokens\":4"), "{text}");
    }

    #[test]
    fn other_routes_are_404() {
        let mock = MockUpstream::default();
        let response = mock.answer(&Method::POST, "audio/speech", b"{}");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let models = mock.answer(&Method::GET, "models", b"");
        assert_eq!(models.status(), StatusCode::OK);
    }
}
