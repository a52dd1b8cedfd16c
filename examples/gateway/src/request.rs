//! The parts of a chat completion request that the gateway reads.
//!
//! The body is forwarded upstream re-serialised from what was checked (so a
//! key given twice goes out once); the fields that decide governance are read: `model`, `messages`, `max_completion_tokens`,
//! `max_tokens`, `n` and `stream`.

use axum::body::Bytes;
use serde_json::{Map, Value};

use crate::errors::ApiError;
use crate::estimate;

/// A chat completion request, checked and estimated.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// The model as the caller wrote it.
    pub model: String,
    /// The estimated prompt tokens.
    pub prompt_tokens: i64,
    /// The reply's token limit per choice, if the caller set one.
    pub max_tokens: Option<i64>,
    /// The number of choices asked for.
    pub choices: i64,
    /// The body as received.
    pub body: Bytes,
}

impl ChatRequest {
    /// Parses and checks a request body; a 400 answer names what is wrong.
    pub fn parse(body: Bytes) -> Result<Self, ApiError> {
        let value: Value = serde_json::from_slice(&body).map_err(|err| {
            let message = format!("the request body is not valid JSON: {err}");
            ApiError::invalid_request("invalid_json", message, None)
        })?;
        let Value::Object(fields) = value else {
            let message = "the request body must be a JSON object".to_owned();
            return Err(ApiError::invalid_request("invalid_json", message, None));
        };
        reject_streaming(&fields)?;
        reject_case_variants(&fields)?;
        let request = ChatRequest {
            model: model(&fields)?,
            prompt_tokens: estimate::prompt_tokens(messages(&fields)?),
            max_tokens: max_tokens(&fields)?,
            choices: optional_count(&fields, "n", 1)?.unwrap_or(1),
            body,
        };
        // Forward exactly what was checked: re-serialising drops duplicate
        // keys, so an upstream that reads the first of two `model` keys
        // cannot run a model other than the one ias allowed.
        let body = serde_json::to_vec(&Value::Object(fields)).map_err(|err| {
            ApiError::invalid_request("invalid_json", format!("the request body: {err}"), None)
        })?;
        Ok(ChatRequest {
            body: Bytes::from(body),
            ..request
        })
    }

    /// The tokens the reply may use, by the rule in [`crate::estimate`].
    pub fn completion_allowance(&self) -> i64 {
        estimate::completion_allowance(self.max_tokens, self.choices)
    }

    /// The tokens reserved for the whole request: prompt plus completion allowance.
    pub fn estimated_tokens(&self) -> i64 {
        self.prompt_tokens
            .saturating_add(self.completion_allowance())
    }
}

fn model(fields: &Map<String, Value>) -> Result<String, ApiError> {
    match fields.get("model") {
        Some(Value::String(model)) if !model.trim().is_empty() => Ok(model.clone()),
        Some(Value::String(_)) => Err(invalid_value("model", "must not be empty")),
        None | Some(Value::Null) => Err(missing("model")),
        Some(_) => Err(invalid_type("model", "a string")),
    }
}

fn messages(fields: &Map<String, Value>) -> Result<&[Value], ApiError> {
    match fields.get("messages") {
        Some(Value::Array(messages)) => Ok(messages),
        None | Some(Value::Null) => Err(missing("messages")),
        Some(_) => Err(invalid_type("messages", "an array of messages")),
    }
}

fn max_tokens(fields: &Map<String, Value>) -> Result<Option<i64>, ApiError> {
    let newer = optional_count(fields, "max_completion_tokens", 0)?;
    let older = optional_count(fields, "max_tokens", 0)?;
    Ok(newer.or(older))
}

/// An optional whole-number field of at least `min`; `null` counts as absent.
fn optional_count(
    fields: &Map<String, Value>,
    name: &str,
    min: i64,
) -> Result<Option<i64>, ApiError> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => match value.as_i64() {
            Some(count) if count >= min => Ok(Some(count)),
            _ => Err(invalid_type(
                name,
                &format!("a whole number of at least {min}"),
            )),
        },
    }
}

fn reject_streaming(fields: &Map<String, Value>) -> Result<(), ApiError> {
    match fields.get("stream") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => Ok(()),
        Some(Value::Bool(true)) => {
            let message = "streaming (`\"stream\": true`) is not supported by this gateway yet; \
                           send the request without `stream`"
                .to_owned();
            Err(ApiError::invalid_request(
                "stream_not_supported",
                message,
                Some("stream"),
            ))
        }
        Some(_) => Err(invalid_type("stream", "a boolean")),
    }
}

/// Fields that decide a request; a key that differs from one only in letter
/// case is refused, since some upstreams match keys without regard to case.
const GOVERNED_FIELDS: [&str; 6] = [
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "stream",
];

fn reject_case_variants(fields: &Map<String, Value>) -> Result<(), ApiError> {
    for key in fields.keys() {
        let clash = GOVERNED_FIELDS
            .iter()
            .find(|field| key.eq_ignore_ascii_case(field) && key != *field);
        if let Some(field) = clash {
            let reason = format!("write `{field}` in lowercase");
            return Err(invalid_value(field, &reason));
        }
    }
    Ok(())
}

fn missing(name: &str) -> ApiError {
    let message = format!("missing required parameter `{name}`");
    ApiError::invalid_request("missing_required_parameter", message, Some(name))
}

fn invalid_type(name: &str, expected: &str) -> ApiError {
    let message = format!("invalid type for `{name}`: expected {expected}");
    ApiError::invalid_request("invalid_type", message, Some(name))
}

fn invalid_value(name: &str, reason: &str) -> ApiError {
    let message = format!("invalid value for `{name}`: {reason}");
    ApiError::invalid_request("invalid_value", message, Some(name))
}

#[cfg(test)]
mod governed_body_tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn duplicate_keys_are_forwarded_as_the_one_that_was_checked() {
        let body = r#"{"model":"gpt-4o","messages":[],"model":"gpt-4o-mini"}"#;
        let request = ChatRequest::parse(Bytes::from(body)).unwrap();
        assert_eq!(request.model, "gpt-4o-mini");
        let forwarded: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(forwarded["model"], "gpt-4o-mini");
        assert_eq!(
            String::from_utf8_lossy(&request.body)
                .matches("model")
                .count(),
            1
        );
    }

    #[test]
    fn case_variants_of_governed_fields_are_refused() {
        for body in [
            r#"{"model":"gpt-4o-mini","MODEL":"gpt-4o","messages":[]}"#,
            r#"{"model":"m","messages":[],"Max_Tokens":1}"#,
        ] {
            assert!(ChatRequest::parse(Bytes::from(body)).is_err(), "{body}");
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use serde_json::json;

    use super::*;

    fn parse(value: Value) -> Result<ChatRequest, ApiError> {
        ChatRequest::parse(Bytes::from(value.to_string()))
    }

    fn code(result: Result<ChatRequest, ApiError>) -> &'static str {
        let error = result.unwrap_err();
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        error.code()
    }

    #[test]
    fn a_plain_request_is_estimated() {
        let body = json!({
            "model": "gpt-4o-mini",
            "messages": [{ "role": "user", "content": "Hello, world" }],
            "max_tokens": 100,
        });
        let request = parse(body).unwrap();
        assert_eq!(request.model, "gpt-4o-mini");
        assert_eq!(request.prompt_tokens, 3 + estimate::TOKENS_PER_MESSAGE);
        assert_eq!(request.estimated_tokens(), 107);
    }

    #[test]
    fn max_completion_tokens_wins_and_the_default_applies_otherwise() {
        let both =
            json!({ "model": "m", "messages": [], "max_tokens": 9, "max_completion_tokens": 5 });
        assert_eq!(parse(both).unwrap().completion_allowance(), 5);
        let neither = json!({ "model": "m", "messages": [] });
        assert_eq!(
            parse(neither).unwrap().completion_allowance(),
            estimate::DEFAULT_COMPLETION_ALLOWANCE
        );
        let choices = json!({ "model": "m", "messages": [], "max_tokens": 10, "n": 3 });
        assert_eq!(parse(choices).unwrap().estimated_tokens(), 30);
    }

    #[test]
    fn every_field_is_forwarded() {
        let raw = Bytes::from_static(br#"{"model":"m","messages":[],"extra":{"a":1}}"#);
        let forwarded = ChatRequest::parse(raw.clone()).unwrap().body;
        let sent: Value = serde_json::from_slice(&forwarded).unwrap();
        assert_eq!(sent, serde_json::from_slice::<Value>(&raw).unwrap());
    }

    #[test]
    fn malformed_requests_are_refused_with_a_code() {
        assert_eq!(
            code(ChatRequest::parse(Bytes::from_static(b"{nope"))),
            "invalid_json"
        );
        assert_eq!(code(parse(json!([1, 2]))), "invalid_json");
        assert_eq!(
            code(parse(json!({ "messages": [] }))),
            "missing_required_parameter"
        );
        assert_eq!(
            code(parse(json!({ "model": 4, "messages": [] }))),
            "invalid_type"
        );
        assert_eq!(
            code(parse(json!({ "model": " ", "messages": [] }))),
            "invalid_value"
        );
        assert_eq!(
            code(parse(json!({ "model": "m" }))),
            "missing_required_parameter"
        );
        let negative = json!({ "model": "m", "messages": [], "max_tokens": -1 });
        assert_eq!(code(parse(negative)), "invalid_type");
        let fraction = json!({ "model": "m", "messages": [], "max_tokens": 1.5 });
        assert_eq!(code(parse(fraction)), "invalid_type");
        let no_choices = json!({ "model": "m", "messages": [], "n": 0 });
        assert_eq!(code(parse(no_choices)), "invalid_type");
    }

    #[test]
    fn streaming_is_refused_clearly() {
        let stream = json!({ "model": "m", "messages": [], "stream": true });
        let error = parse(stream).unwrap_err();
        assert_eq!(error.code(), "stream_not_supported");
        assert_eq!(error.body()["error"]["param"], "stream");
        let not_stream = json!({ "model": "m", "messages": [], "stream": false });
        assert!(parse(not_stream).is_ok());
    }
}
