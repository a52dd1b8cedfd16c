//! How many tokens a request may use, estimated before it is sent upstream.
//!
//! The estimate is what the governor reserves; the upstream's real usage is
//! charged afterwards. The default rule, per [`Api`]:
//!
//! | API | prompt | completion allowance |
//! |---|---|---|
//! | chat completions | `messages` | `max_completion_tokens`, else `max_tokens`, else 1024; times `n` |
//! | completions | `prompt` (each prompt of a batch) | `max_tokens`, else 16; times `n` (or `best_of`, if larger) and the number of prompts |
//! | embeddings | `input` | none |
//! | responses | `instructions` and `input` | `max_output_tokens`, else 1024 |
//! | generic | `messages`, `input` and `prompt` | `max_completion_tokens`, `max_tokens` or `max_output_tokens`, else 1024; times `n` |
//!
//! Text counts as `ceil(characters / 4)` tokens; a message or input item
//! adds 4 (role and separators); an input given as token ids counts one
//! token per id. Images, audio, tool definitions and other non-text parts
//! are not counted: the reservation can be lower than the real usage for
//! such requests, and the real usage is charged all the same.
//!
//! A host can replace the rule with
//! [`GovernLayerBuilder::estimator`](crate::GovernLayerBuilder::estimator).

use serde_json::{Map, Value};

use crate::api::Api;

/// Tokens allowed for the reply when a chat or responses request sets no maximum.
pub const DEFAULT_COMPLETION_ALLOWANCE: i64 = 1024;

/// Tokens allowed per completion when a legacy completions request sets no
/// `max_tokens` (OpenAI's own default for that API).
pub const DEFAULT_LEGACY_COMPLETION_ALLOWANCE: i64 = 16;

/// Characters counted as one token.
pub const CHARS_PER_TOKEN: u64 = 4;

/// Tokens added for every message or input item (role and separators).
pub const TOKENS_PER_MESSAGE: i64 = 4;

/// The tokens a request is expected to use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Estimate {
    /// Tokens of the input.
    pub prompt: i64,
    /// The most the reply is expected to use.
    pub completion: i64,
}

impl Estimate {
    /// Prompt and completion together: what is reserved.
    pub fn total(&self) -> i64 {
        self.prompt.saturating_add(self.completion)
    }
}

/// The default estimate of a request body whose fields were checked.
pub fn estimate(api: Api, fields: &Map<String, Value>) -> Estimate {
    match api {
        Api::ChatCompletions => Estimate {
            prompt: messages_tokens(fields.get("messages")),
            completion: allowance(
                first_count(fields, &["max_completion_tokens", "max_tokens"]),
                DEFAULT_COMPLETION_ALLOWANCE,
                count(fields, "n"),
            ),
        },
        Api::Completions => legacy_completions(fields),
        Api::Embeddings => Estimate {
            prompt: input_tokens(fields.get("input")),
            completion: 0,
        },
        Api::Responses => Estimate {
            prompt: text_tokens(fields.get("instructions"))
                .saturating_add(input_tokens(fields.get("input"))),
            completion: allowance(
                count(fields, "max_output_tokens"),
                DEFAULT_COMPLETION_ALLOWANCE,
                None,
            ),
        },
        Api::Generic => Estimate {
            prompt: messages_tokens(fields.get("messages"))
                .saturating_add(input_tokens(fields.get("input")))
                .saturating_add(input_tokens(fields.get("prompt"))),
            completion: allowance(
                first_count(
                    fields,
                    &["max_completion_tokens", "max_tokens", "max_output_tokens"],
                ),
                DEFAULT_COMPLETION_ALLOWANCE,
                count(fields, "n"),
            ),
        },
    }
}

fn legacy_completions(fields: &Map<String, Value>) -> Estimate {
    let prompts = match fields.get("prompt") {
        // A batch of prompts: strings, or lists of token ids.
        Some(Value::Array(items)) if items.iter().all(|i| i.is_string() || i.is_array()) => {
            items.len().max(1)
        }
        _ => 1,
    };
    let choices = count(fields, "n")
        .unwrap_or(1)
        .max(count(fields, "best_of").unwrap_or(1));
    let per_prompt = allowance(
        count(fields, "max_tokens"),
        DEFAULT_LEGACY_COMPLETION_ALLOWANCE,
        Some(choices),
    );
    Estimate {
        prompt: input_tokens(fields.get("prompt")),
        completion: per_prompt.saturating_mul(to_i64(prompts as u64)),
    }
}

/// Tokens of a string: `ceil(characters / 4)`; anything else counts 0.
pub fn text_tokens(value: Option<&Value>) -> i64 {
    match value {
        Some(Value::String(text)) => chars_to_tokens(count_chars(text)),
        _ => 0,
    }
}

/// Tokens of characters of text: `ceil(characters / 4)`.
pub fn chars_to_tokens(chars: u64) -> i64 {
    to_i64(chars.div_ceil(CHARS_PER_TOKEN))
}

/// Tokens of a `messages` array: the text of each message plus 4 per message.
pub fn messages_tokens(value: Option<&Value>) -> i64 {
    let Some(Value::Array(messages)) = value else {
        return 0;
    };
    let chars: u64 = messages.iter().map(message_chars).sum();
    let overhead = TOKENS_PER_MESSAGE.saturating_mul(to_i64(messages.len() as u64));
    chars_to_tokens(chars).saturating_add(overhead)
}

/// Tokens of an `input` or `prompt`: a string, strings, token ids, lists of
/// token ids, or input items (messages).
pub fn input_tokens(value: Option<&Value>) -> i64 {
    match value {
        Some(Value::String(_)) => text_tokens(value),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::Number(_) => 1,
                Value::Array(ids) => to_i64(ids.len() as u64),
                Value::Object(_) => {
                    chars_to_tokens(message_chars(item)).saturating_add(TOKENS_PER_MESSAGE)
                }
                _ => text_tokens(Some(item)),
            })
            .fold(0_i64, i64::saturating_add),
        _ => 0,
    }
}

/// The reply's allowance: `max` (or `default`) for each of `choices`.
pub fn allowance(max: Option<i64>, default: i64, choices: Option<i64>) -> i64 {
    max.unwrap_or(default)
        .saturating_mul(choices.unwrap_or(1).max(1))
}

fn count(fields: &Map<String, Value>, name: &str) -> Option<i64> {
    fields.get(name).and_then(Value::as_i64)
}

fn first_count(fields: &Map<String, Value>, names: &[&str]) -> Option<i64> {
    names.iter().find_map(|name| count(fields, name))
}

/// Characters of a message or input item: a string `content` (or `text`),
/// or the `text` of each content part.
fn message_chars(message: &Value) -> u64 {
    let content = message.get("content").or_else(|| message.get("text"));
    match content {
        Some(Value::String(text)) => count_chars(text),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .map(count_chars)
            .sum(),
        _ => 0,
    }
}

fn count_chars(text: &str) -> u64 {
    text.chars().count() as u64
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn of(api: Api, body: Value) -> Estimate {
        estimate(api, body.as_object().unwrap())
    }

    #[test]
    fn characters_are_divided_by_four_and_rounded_up() {
        let one = json!([{ "role": "user", "content": "abcd" }]);
        assert_eq!(messages_tokens(Some(&one)), 1 + TOKENS_PER_MESSAGE);
        let five = json!([{ "role": "user", "content": "abcde" }]);
        assert_eq!(messages_tokens(Some(&five)), 2 + TOKENS_PER_MESSAGE);
    }

    #[test]
    fn every_message_adds_its_overhead() {
        let two = json!([
            { "role": "system", "content": "" },
            { "role": "user", "content": "hi" },
        ]);
        assert_eq!(messages_tokens(Some(&two)), 1 + 2 * TOKENS_PER_MESSAGE);
        assert_eq!(messages_tokens(Some(&json!([]))), 0);
    }

    #[test]
    fn characters_not_bytes_are_counted() {
        let text = json!([{ "role": "user", "content": "ééééé" }]);
        assert_eq!(messages_tokens(Some(&text)), 2 + TOKENS_PER_MESSAGE);
    }

    #[test]
    fn text_parts_count_and_other_parts_do_not() {
        let parts = json!([{ "role": "user", "content": [
            { "type": "text", "text": "abcdefgh" },
            { "type": "image_url", "image_url": { "url": "data:," } },
            { "type": "text", "text": "ijkl" },
        ]}]);
        assert_eq!(messages_tokens(Some(&parts)), 3 + TOKENS_PER_MESSAGE);
        let no_content = json!([{ "role": "assistant", "tool_calls": [] }]);
        assert_eq!(messages_tokens(Some(&no_content)), TOKENS_PER_MESSAGE);
    }

    #[test]
    fn chat_allowance_defaults_and_multiplies_by_choices() {
        let chat = |extra: Value| {
            let mut body = json!({ "model": "m", "messages": [] });
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            of(Api::ChatCompletions, body).completion
        };
        assert_eq!(chat(json!({})), DEFAULT_COMPLETION_ALLOWANCE);
        assert_eq!(chat(json!({ "max_tokens": 50 })), 50);
        assert_eq!(
            chat(json!({ "max_tokens": 9, "max_completion_tokens": 5 })),
            5
        );
        assert_eq!(chat(json!({ "max_tokens": 50, "n": 3 })), 150);
        assert_eq!(chat(json!({ "max_tokens": 0 })), 0);
        assert_eq!(chat(json!({ "max_tokens": i64::MAX, "n": 2 })), i64::MAX);
    }

    #[test]
    fn legacy_completions_count_every_prompt_and_choice() {
        let one = of(
            Api::Completions,
            json!({ "model": "m", "prompt": "abcdefgh" }),
        );
        assert_eq!(
            one,
            Estimate {
                prompt: 2,
                completion: DEFAULT_LEGACY_COMPLETION_ALLOWANCE
            }
        );
        let batch = of(
            Api::Completions,
            json!({ "model": "m", "prompt": ["abcd", "efgh"], "max_tokens": 10, "n": 2, "best_of": 3 }),
        );
        assert_eq!(
            batch,
            Estimate {
                prompt: 2,
                completion: 60
            }
        );
        let ids = of(
            Api::Completions,
            json!({ "model": "m", "prompt": [1, 2, 3], "max_tokens": 5 }),
        );
        assert_eq!(
            ids,
            Estimate {
                prompt: 3,
                completion: 5
            }
        );
    }

    #[test]
    fn embeddings_have_only_prompt_tokens() {
        let text = of(Api::Embeddings, json!({ "model": "m", "input": "abcde" }));
        assert_eq!(
            text,
            Estimate {
                prompt: 2,
                completion: 0
            }
        );
        let mixed = of(
            Api::Embeddings,
            json!({ "model": "m", "input": [[1, 2], [3, 4, 5]] }),
        );
        assert_eq!(mixed.total(), 5);
    }

    #[test]
    fn responses_count_instructions_input_items_and_max_output_tokens() {
        let body = json!({
            "model": "m",
            "instructions": "abcd",
            "input": [
                { "role": "user", "content": "abcdefgh" },
                { "role": "user", "content": [{ "type": "input_text", "text": "abcd" }] },
            ],
            "max_output_tokens": 30,
        });
        assert_eq!(
            of(Api::Responses, body),
            Estimate {
                prompt: 1 + (2 + 4) + (1 + 4),
                completion: 30
            }
        );
        let plain = of(Api::Responses, json!({ "model": "m", "input": "hello" }));
        assert_eq!(
            plain,
            Estimate {
                prompt: 2,
                completion: DEFAULT_COMPLETION_ALLOWANCE
            }
        );
    }

    #[test]
    fn generic_requests_read_every_kind_of_input() {
        let body = json!({
            "model": "m",
            "messages": [{ "role": "user", "content": "abcd" }],
            "input": "abcd",
            "prompt": "abcd",
            "max_output_tokens": 7,
        });
        assert_eq!(
            of(Api::Generic, body),
            Estimate {
                prompt: 1 + 4 + 1 + 1,
                completion: 7
            }
        );
    }
}
