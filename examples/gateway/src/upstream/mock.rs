//! The built-in upstream: deterministic chat completions, no network.
//!
//! The reply is the first words of a fixed sentence, one completion token
//! per word, as many as `max_completion_tokens` / `max_tokens` allow (at
//! most [`REPLY_WORDS`]). `prompt_tokens` is the gateway's own prompt
//! estimate, so a test can predict the usage exactly. One choice is
//! returned whatever `n` asks for.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;
use axum::http::{HeaderValue, StatusCode};
use serde_json::json;

use super::UpstreamReply;
use crate::estimate;
use crate::request::ChatRequest;

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

/// Answers chat completions without calling any model.
#[derive(Debug, Default)]
pub struct MockUpstream {
    answered: AtomicU64,
}

impl MockUpstream {
    /// A chat completion for `request`.
    pub fn chat(&self, request: &ChatRequest) -> UpstreamReply {
        let number = self.answered.fetch_add(1, Ordering::Relaxed) + 1;
        let limit = request
            .max_tokens
            .unwrap_or(estimate::DEFAULT_COMPLETION_ALLOWANCE);
        let words: Vec<&str> = REPLY_WORDS
            .iter()
            .copied()
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .collect();
        let completion_tokens = i64::try_from(words.len()).unwrap_or(i64::MAX);
        let finish_reason = if words.len() < REPLY_WORDS.len() {
            "length"
        } else {
            "stop"
        };
        let body = json!({
            "id": format!("chatcmpl-mock-{number}"),
            "object": "chat.completion",
            "created": chrono::Utc::now().timestamp(),
            "model": request.model,
            "choices": [{
                "index": 0,
                "message": { "role": "assistant", "content": words.join(" ") },
                "finish_reason": finish_reason,
            }],
            "usage": {
                "prompt_tokens": request.prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": request.prompt_tokens.saturating_add(completion_tokens),
            },
        });
        UpstreamReply {
            status: StatusCode::OK,
            content_type: Some(HeaderValue::from_static("application/json")),
            body: Bytes::from(body.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn request(max_tokens: Option<i64>) -> ChatRequest {
        let mut body =
            json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "hello" }] });
        if let Some(max) = max_tokens {
            body["max_tokens"] = json!(max);
        }
        ChatRequest::parse(Bytes::from(body.to_string())).unwrap()
    }

    fn answer(max_tokens: Option<i64>) -> Value {
        let reply = MockUpstream::default().chat(&request(max_tokens));
        serde_json::from_slice(&reply.body).unwrap()
    }

    #[test]
    fn usage_is_deterministic_and_within_max_tokens() {
        let full = answer(None);
        assert_eq!(full["object"], "chat.completion");
        assert_eq!(
            full["usage"]["prompt_tokens"],
            2 + estimate::TOKENS_PER_MESSAGE
        );
        assert_eq!(full["usage"]["completion_tokens"], 10);
        assert_eq!(full["usage"]["total_tokens"], 16);
        assert_eq!(full["choices"][0]["finish_reason"], "stop");

        let short = answer(Some(3));
        assert_eq!(short["usage"]["completion_tokens"], 3);
        assert_eq!(short["choices"][0]["message"]["content"], "This is a");
        assert_eq!(short["choices"][0]["finish_reason"], "length");
        assert_eq!(answer(Some(0))["usage"]["completion_tokens"], 0);
    }

    #[test]
    fn every_answer_has_its_own_id() {
        let mock = MockUpstream::default();
        let first = mock.chat(&request(None));
        let second = mock.chat(&request(None));
        assert_ne!(first.body, second.body);
    }
}
