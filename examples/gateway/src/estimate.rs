//! How many tokens a request may use, estimated before it is sent upstream.
//!
//! The estimate is what the governor reserves; the upstream's real usage is
//! charged afterwards. The rule:
//!
//! - **prompt**: the characters of every message's text (a string `content`,
//!   or the `text` of each content part) divided by 4, rounded up, plus 4
//!   tokens per message for the role and separators;
//! - **completion**: `max_completion_tokens`, else `max_tokens`, else
//!   [`DEFAULT_COMPLETION_ALLOWANCE`], times `n` (the number of choices, 1
//!   when absent).
//!
//! Images, audio, tool definitions and other non-text parts are not counted:
//! the reservation can be lower than the real usage for such requests, and
//! the real usage is charged all the same.

use serde_json::Value;

/// Tokens allowed for the reply when the request sets no maximum.
pub const DEFAULT_COMPLETION_ALLOWANCE: i64 = 1024;

/// Characters counted as one prompt token.
pub const CHARS_PER_TOKEN: u64 = 4;

/// Tokens added for every message (role and separators).
pub const TOKENS_PER_MESSAGE: i64 = 4;

/// The estimated prompt tokens of a `messages` array.
pub fn prompt_tokens(messages: &[Value]) -> i64 {
    let chars: u64 = messages.iter().map(message_chars).sum();
    let text = to_i64(chars.div_ceil(CHARS_PER_TOKEN));
    let overhead = TOKENS_PER_MESSAGE.saturating_mul(to_i64(messages.len() as u64));
    text.saturating_add(overhead)
}

/// The tokens the reply may use: `max_tokens` (or the default) for each of `n` choices.
pub fn completion_allowance(max_tokens: Option<i64>, choices: i64) -> i64 {
    max_tokens
        .unwrap_or(DEFAULT_COMPLETION_ALLOWANCE)
        .saturating_mul(choices.max(1))
}

fn message_chars(message: &Value) -> u64 {
    match message.get("content") {
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

    fn messages(value: Value) -> Vec<Value> {
        value.as_array().cloned().unwrap()
    }

    #[test]
    fn characters_are_divided_by_four_and_rounded_up() {
        let one = messages(json!([{ "role": "user", "content": "abcd" }]));
        assert_eq!(prompt_tokens(&one), 1 + TOKENS_PER_MESSAGE);
        let five = messages(json!([{ "role": "user", "content": "abcde" }]));
        assert_eq!(prompt_tokens(&five), 2 + TOKENS_PER_MESSAGE);
    }

    #[test]
    fn every_message_adds_its_overhead() {
        let two = messages(json!([
            { "role": "system", "content": "" },
            { "role": "user", "content": "hi" },
        ]));
        assert_eq!(prompt_tokens(&two), 1 + 2 * TOKENS_PER_MESSAGE);
        assert_eq!(prompt_tokens(&[]), 0);
    }

    #[test]
    fn characters_not_bytes_are_counted() {
        let text = messages(json!([{ "role": "user", "content": "ééééé" }]));
        assert_eq!(prompt_tokens(&text), 2 + TOKENS_PER_MESSAGE);
    }

    #[test]
    fn text_parts_count_and_other_parts_do_not() {
        let parts = messages(json!([{ "role": "user", "content": [
            { "type": "text", "text": "abcdefgh" },
            { "type": "image_url", "image_url": { "url": "data:," } },
            { "type": "text", "text": "ijkl" },
        ]}]));
        assert_eq!(prompt_tokens(&parts), 3 + TOKENS_PER_MESSAGE);
        let no_content = messages(json!([{ "role": "assistant", "tool_calls": [] }]));
        assert_eq!(prompt_tokens(&no_content), TOKENS_PER_MESSAGE);
    }

    #[test]
    fn completion_allowance_defaults_and_multiplies_by_choices() {
        assert_eq!(completion_allowance(None, 1), DEFAULT_COMPLETION_ALLOWANCE);
        assert_eq!(completion_allowance(Some(50), 1), 50);
        assert_eq!(completion_allowance(Some(50), 3), 150);
        assert_eq!(completion_allowance(Some(0), 1), 0);
        assert_eq!(completion_allowance(Some(i64::MAX), 2), i64::MAX);
    }
}
