//! The parts of an inference request body that decide governance.
//!
//! The body is forwarded upstream re-serialised from what was checked, so a
//! key given twice goes out once: an upstream that reads the first of two
//! `model` keys cannot run a model other than the one ias allowed. The
//! fields read are `model`, the input (`messages`, `prompt`, `input`,
//! `instructions`), the reply limits (`max_completion_tokens`,
//! `max_tokens`, `max_output_tokens`, `n`, `best_of`), `stream` and
//! `stream_options`.

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::api::Api;
use crate::error::ApiError;
use crate::estimate::Estimate;

/// Turns a checked request body into its estimate.
pub type Estimator = dyn Fn(Api, &Map<String, Value>) -> Estimate + Send + Sync;

/// An inference request, checked and estimated.
#[derive(Debug, Clone)]
pub struct Inference {
    /// Which API it calls.
    pub api: Api,
    /// The model as the caller wrote it.
    pub model: String,
    /// Whether the caller asked for a stream.
    pub stream: bool,
    /// The tokens it is expected to use.
    pub estimate: Estimate,
    /// The body to forward: what was checked, with
    /// `stream_options.include_usage` set for a stream that needs it.
    pub body: Bytes,
}

/// Fields that decide a request; a key that differs from one only in letter
/// case is refused, since some upstreams match keys without regard to case.
const GOVERNED_FIELDS: [&str; 12] = [
    "model",
    "messages",
    "prompt",
    "input",
    "instructions",
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "n",
    "best_of",
    "stream",
    "stream_options",
];

impl Inference {
    /// Parses and checks a request body; a 400 answer names what is wrong.
    pub fn parse(api: Api, body: &[u8], estimator: &Estimator) -> Result<Self, ApiError> {
        let value: Value = serde_json::from_slice(body).map_err(|err| {
            let message = format!("the request body is not valid JSON: {err}");
            ApiError::invalid_request("invalid_json", message, None)
        })?;
        let Value::Object(mut fields) = value else {
            let message = "the request body must be a JSON object".to_owned();
            return Err(ApiError::invalid_request("invalid_json", message, None));
        };
        reject_case_variants(&fields)?;
        let model = model(&fields)?;
        check_input(api, &fields)?;
        check_counts(&fields)?;
        let stream = stream(api, &fields)?;
        if stream && api.asks_for_stream_usage() {
            ask_for_stream_usage(&mut fields)?;
        }
        let estimate = estimator(api, &fields);
        let body = serde_json::to_vec(&Value::Object(fields)).map_err(|err| {
            ApiError::invalid_request("invalid_json", format!("the request body: {err}"), None)
        })?;
        Ok(Inference {
            api,
            model,
            stream,
            estimate,
            body: Bytes::from(body),
        })
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

fn check_input(api: Api, fields: &Map<String, Value>) -> Result<(), ApiError> {
    if let Some(name) = api.required_input() {
        match fields.get(name) {
            None | Some(Value::Null) => return Err(missing(name)),
            Some(Value::Array(_)) => {}
            Some(Value::String(_)) if name != "messages" => {}
            Some(_) if name == "messages" => {
                return Err(invalid_type(name, "an array of messages"));
            }
            Some(_) => return Err(invalid_type(name, "a string or an array")),
        }
    }
    for name in ["input", "prompt"] {
        if let Some(value) = fields.get(name)
            && !matches!(value, Value::Null | Value::String(_) | Value::Array(_))
        {
            return Err(invalid_type(name, "a string or an array"));
        }
    }
    match fields.get("instructions") {
        None | Some(Value::Null) | Some(Value::String(_)) => Ok(()),
        Some(_) => Err(invalid_type("instructions", "a string")),
    }
}

fn check_counts(fields: &Map<String, Value>) -> Result<(), ApiError> {
    for name in ["max_tokens", "max_completion_tokens", "max_output_tokens"] {
        optional_count(fields, name, 0)?;
    }
    for name in ["n", "best_of"] {
        optional_count(fields, name, 1)?;
    }
    Ok(())
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

fn stream(api: Api, fields: &Map<String, Value>) -> Result<bool, ApiError> {
    match fields.get("stream") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => Ok(false),
        Some(Value::Bool(true)) if api.streams() => Ok(true),
        Some(Value::Bool(true)) => Err(invalid_value(
            "stream",
            &format!("the {api} API does not stream"),
        )),
        Some(_) => Err(invalid_type("stream", "a boolean")),
    }
}

/// Sets `stream_options.include_usage`, keeping the caller's other options,
/// so that the stream's last chunk reports the real usage.
fn ask_for_stream_usage(fields: &mut Map<String, Value>) -> Result<(), ApiError> {
    let options = fields
        .entry("stream_options")
        .or_insert_with(|| Value::Object(Map::new()));
    if options.is_null() {
        *options = Value::Object(Map::new());
    }
    let Value::Object(options) = options else {
        return Err(invalid_type("stream_options", "an object"));
    };
    options.insert("include_usage".to_owned(), Value::Bool(true));
    Ok(())
}

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
mod tests {
    use http::StatusCode;
    use serde_json::json;

    use super::*;
    use crate::estimate;

    fn parse_as(api: Api, value: Value) -> Result<Inference, ApiError> {
        Inference::parse(api, value.to_string().as_bytes(), &estimate::estimate)
    }

    fn parse(value: Value) -> Result<Inference, ApiError> {
        parse_as(Api::ChatCompletions, value)
    }

    fn forwarded(inference: &Inference) -> Value {
        serde_json::from_slice(&inference.body).unwrap()
    }

    #[track_caller]
    fn code(result: Result<Inference, ApiError>) -> &'static str {
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
        assert!(!request.stream);
        assert_eq!(request.estimate.prompt, 3 + estimate::TOKENS_PER_MESSAGE);
        assert_eq!(request.estimate.total(), 107);
    }

    #[test]
    fn duplicate_keys_are_forwarded_as_the_one_that_was_checked() {
        let body = br#"{"model":"gpt-4o","messages":[],"model":"gpt-4o-mini"}"#;
        let request = Inference::parse(Api::ChatCompletions, body, &estimate::estimate).unwrap();
        assert_eq!(request.model, "gpt-4o-mini");
        assert_eq!(forwarded(&request)["model"], "gpt-4o-mini");
        let text = String::from_utf8_lossy(&request.body);
        assert_eq!(text.matches("model").count(), 1);
    }

    #[test]
    fn case_variants_of_governed_fields_are_refused() {
        for body in [
            json!({ "model": "gpt-4o-mini", "MODEL": "gpt-4o", "messages": [] }),
            json!({ "model": "m", "messages": [], "Max_Tokens": 1 }),
            json!({ "model": "m", "messages": [], "Stream_Options": {} }),
        ] {
            assert_eq!(code(parse(body.clone())), "invalid_value", "{body}");
        }
    }

    #[test]
    fn every_field_is_forwarded() {
        let raw = json!({ "model": "m", "messages": [], "extra": { "a": 1 } });
        let request = parse(raw.clone()).unwrap();
        assert_eq!(forwarded(&request), raw);
    }

    #[test]
    fn malformed_requests_are_refused_with_a_code() {
        let bad_json = Inference::parse(Api::ChatCompletions, b"{nope", &estimate::estimate);
        assert_eq!(code(bad_json), "invalid_json");
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
        assert_eq!(
            code(parse(json!({ "model": "m", "messages": "hi" }))),
            "invalid_type"
        );
        for (field, value) in [
            ("max_tokens", json!(-1)),
            ("max_tokens", json!(1.5)),
            ("max_output_tokens", json!("10")),
            ("n", json!(0)),
            ("best_of", json!(0)),
            ("stream", json!("yes")),
        ] {
            let mut body = json!({ "model": "m", "messages": [] });
            body[field] = value;
            let error = parse(body).unwrap_err();
            assert_eq!(error.code(), "invalid_type", "{field}");
            assert_eq!(error.body()["error"]["param"], field);
        }
    }

    #[test]
    fn each_api_requires_its_input() {
        assert_eq!(
            code(parse_as(Api::Embeddings, json!({ "model": "m" }))),
            "missing_required_parameter"
        );
        assert_eq!(
            code(parse_as(
                Api::Completions,
                json!({ "model": "m", "prompt": 3 })
            )),
            "invalid_type"
        );
        assert!(parse_as(Api::Embeddings, json!({ "model": "m", "input": "x" })).is_ok());
        assert!(parse_as(Api::Completions, json!({ "model": "m", "prompt": ["a"] })).is_ok());
        assert!(parse_as(Api::Responses, json!({ "model": "m" })).is_ok());
        assert_eq!(
            code(parse_as(
                Api::Responses,
                json!({ "model": "m", "instructions": 1 })
            )),
            "invalid_type"
        );
    }

    #[test]
    fn a_chat_stream_asks_for_usage_and_keeps_other_options() {
        let body = json!({
            "model": "m",
            "messages": [],
            "stream": true,
            "stream_options": { "include_obfuscation": false },
        });
        let request = parse(body).unwrap();
        assert!(request.stream);
        assert_eq!(
            forwarded(&request)["stream_options"],
            json!({ "include_obfuscation": false, "include_usage": true })
        );
        let told_not_to = json!({
            "model": "m",
            "messages": [],
            "stream": true,
            "stream_options": { "include_usage": false },
        });
        let request = parse(told_not_to).unwrap();
        assert_eq!(forwarded(&request)["stream_options"]["include_usage"], true);
        let legacy = parse_as(
            Api::Completions,
            json!({ "model": "m", "prompt": "x", "stream": true, "stream_options": null }),
        )
        .unwrap();
        assert_eq!(
            forwarded(&legacy)["stream_options"],
            json!({ "include_usage": true })
        );
    }

    #[test]
    fn streams_are_changed_only_where_needed() {
        let plain = parse(json!({ "model": "m", "messages": [], "stream": false })).unwrap();
        assert!(forwarded(&plain).get("stream_options").is_none());
        let responses = parse_as(
            Api::Responses,
            json!({ "model": "m", "input": "x", "stream": true }),
        )
        .unwrap();
        assert!(responses.stream);
        assert!(forwarded(&responses).get("stream_options").is_none());
        assert_eq!(
            code(parse(
                json!({ "model": "m", "messages": [], "stream": true, "stream_options": 1 })
            )),
            "invalid_type"
        );
        assert_eq!(
            code(parse_as(
                Api::Embeddings,
                json!({ "model": "m", "input": "x", "stream": true })
            )),
            "invalid_value"
        );
    }
}
