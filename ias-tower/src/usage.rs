//! Reading the tokens an answer used: from a JSON answer, or from the
//! events of a stream.
//!
//! Usage is `usage` at the top of an answer or stream chunk (chat
//! completions, completions, embeddings) or `response.usage` in a
//! responses API stream event (`response.completed`). Of its fields,
//! `total_tokens` is charged; without it, `prompt_tokens +
//! completion_tokens` or `input_tokens + output_tokens`.

use serde_json::Value;

/// The one field of a JSON answer that is read.
#[derive(serde::Deserialize)]
struct Answer {
    #[serde(default)]
    usage: Option<Value>,
}

/// The token counts of an answer, as the upstream reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// `total_tokens`.
    pub total_tokens: Option<i64>,
    /// `prompt_tokens` or `input_tokens`.
    pub prompt_tokens: Option<i64>,
    /// `completion_tokens` or `output_tokens`.
    pub completion_tokens: Option<i64>,
}

impl Usage {
    /// The usage object of an answer or stream event, if it has one.
    pub fn of_event(event: &Value) -> Option<Usage> {
        let usage = match event.get("usage") {
            Some(usage @ Value::Object(_)) => usage,
            _ => event.get("response")?.get("usage")?,
        };
        Usage::from_object(usage)
    }

    /// The usage of a whole JSON answer body; `None` if it is not JSON or has none.
    pub fn of_answer(body: &[u8]) -> Option<Usage> {
        // Only `usage` is kept; the rest of the answer is skipped unread.
        let answer: Answer = serde_json::from_slice(body).ok()?;
        Usage::from_object(&answer.usage?)
    }

    fn from_object(usage: &Value) -> Option<Usage> {
        if !usage.is_object() {
            return None;
        }
        let field = |names: &[&str]| {
            names
                .iter()
                .find_map(|name| usage.get(*name).and_then(Value::as_i64))
                .filter(|tokens| *tokens >= 0)
        };
        let found = Usage {
            total_tokens: field(&["total_tokens"]),
            prompt_tokens: field(&["prompt_tokens", "input_tokens"]),
            completion_tokens: field(&["completion_tokens", "output_tokens"]),
        };
        (found != Usage::default()).then_some(found)
    }

    /// The tokens to charge: `total_tokens`, else the sum of the parts there are.
    pub fn total(&self) -> Option<i64> {
        self.total_tokens
            .or_else(|| match (self.prompt_tokens, self.completion_tokens) {
                (None, None) => None,
                (prompt, completion) => {
                    Some(prompt.unwrap_or(0).saturating_add(completion.unwrap_or(0)))
                }
            })
    }
}

/// Characters of generated text in one stream event: chat deltas (content,
/// reasoning, refusal, tool call arguments), completion text, and the
/// `delta` of responses API `*.delta` events.
pub fn streamed_chars(event: &Value) -> u64 {
    let mut chars = 0;
    if let Some(Value::Array(choices)) = event.get("choices") {
        for choice in choices {
            chars += str_chars(choice.get("text"));
            if let Some(delta) = choice.get("delta") {
                chars += delta_chars(delta);
            }
        }
    }
    let is_delta = event
        .get("type")
        .and_then(Value::as_str)
        .is_some_and(|kind| kind.ends_with(".delta"));
    if is_delta {
        chars += str_chars(event.get("delta"));
    }
    chars
}

fn delta_chars(delta: &Value) -> u64 {
    let mut chars = ["content", "reasoning_content", "reasoning", "refusal"]
        .iter()
        .map(|field| str_chars(delta.get(*field)))
        .sum();
    if let Some(Value::Array(calls)) = delta.get("tool_calls") {
        for call in calls {
            let arguments = call.get("function").and_then(|f| f.get("arguments"));
            chars += str_chars(arguments);
        }
    }
    chars
}

fn str_chars(value: Option<&Value>) -> u64 {
    value
        .and_then(Value::as_str)
        .map_or(0, |text| text.chars().count() as u64)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn total_tokens_is_read_from_usage() {
        let usage = |body: &str| Usage::of_answer(body.as_bytes()).and_then(|u| u.total());
        assert_eq!(usage(r#"{"usage":{"total_tokens":42}}"#), Some(42));
        assert_eq!(usage(r#"{"choices":[]}"#), None);
        assert_eq!(usage(r#"{"usage":null}"#), None);
        assert_eq!(usage(r#"{"usage":{"total_tokens":-3}}"#), None);
        assert_eq!(usage("not json"), None);
        assert_eq!(
            usage(r#"{"usage":{"prompt_tokens":5,"completion_tokens":7}}"#),
            Some(12)
        );
        assert_eq!(usage(r#"{"usage":{"prompt_tokens":5}}"#), Some(5));
    }

    #[test]
    fn responses_usage_is_read_from_input_and_output_tokens() {
        let answer = json!({ "usage": { "input_tokens": 10, "output_tokens": 3 } });
        assert_eq!(Usage::of_event(&answer).unwrap().total(), Some(13));
        let completed = json!({
            "type": "response.completed",
            "response": { "usage": { "input_tokens": 10, "output_tokens": 3, "total_tokens": 13 } },
        });
        assert_eq!(Usage::of_event(&completed).unwrap().total(), Some(13));
        let created = json!({ "type": "response.created", "response": { "usage": null } });
        assert_eq!(Usage::of_event(&created), None);
    }

    #[test]
    fn streamed_text_is_counted_in_every_shape() {
        let chat = json!({ "choices": [{ "delta": { "content": "héllo" } }, { "delta": {} }] });
        assert_eq!(streamed_chars(&chat), 5);
        let tool = json!({ "choices": [{ "delta": { "tool_calls": [
            { "function": { "arguments": "{\"a\":" } },
        ] } }] });
        assert_eq!(streamed_chars(&tool), 5);
        let legacy = json!({ "choices": [{ "text": "abc" }] });
        assert_eq!(streamed_chars(&legacy), 3);
        let responses = json!({ "type": "response.output_text.delta", "delta": "abcd" });
        assert_eq!(streamed_chars(&responses), 4);
        let other = json!({ "type": "response.created", "delta": "ignored" });
        assert_eq!(streamed_chars(&other), 0);
    }
}
