//! The OpenAI-compatible APIs the Layer knows how to govern.

use std::fmt;

/// An inference API: decides how a request's model, estimate and usage are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Api {
    /// `POST /v1/chat/completions`: `messages` in, `choices[].message` or
    /// `choices[].delta` out; usage in `usage` (in a stream, in the last
    /// chunk when `stream_options.include_usage` is set).
    ChatCompletions,
    /// `POST /v1/completions` (legacy): `prompt` in, `choices[].text` out.
    Completions,
    /// `POST /v1/embeddings`: `input` in; only prompt tokens are used.
    Embeddings,
    /// `POST /v1/responses`: `instructions` and `input` in; usage as
    /// `input_tokens`, `output_tokens` and `total_tokens`, in a stream on
    /// the `response.completed` event.
    Responses,
    /// Any other route carrying a `model` (see [`crate::UnknownPaths::Govern`]):
    /// text read from `messages`, `input` and `prompt`; usage from `usage`.
    Generic,
}

impl Api {
    /// Every API with its own route, and the path it has under `/v1`.
    pub const ROUTED: [(Api, &'static str); 4] = [
        (Api::ChatCompletions, "/chat/completions"),
        (Api::Completions, "/completions"),
        (Api::Embeddings, "/embeddings"),
        (Api::Responses, "/responses"),
    ];

    /// The stable name, such as `chat_completions`, for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Api::ChatCompletions => "chat_completions",
            Api::Completions => "completions",
            Api::Embeddings => "embeddings",
            Api::Responses => "responses",
            Api::Generic => "generic",
        }
    }

    /// The field that holds the input text and must be present, if any.
    pub(crate) fn required_input(self) -> Option<&'static str> {
        match self {
            Api::ChatCompletions => Some("messages"),
            Api::Completions => Some("prompt"),
            Api::Embeddings => Some("input"),
            Api::Responses | Api::Generic => None,
        }
    }

    /// Whether a stream of this API reports usage only when asked with
    /// `stream_options.include_usage`.
    pub(crate) fn asks_for_stream_usage(self) -> bool {
        matches!(self, Api::ChatCompletions | Api::Completions)
    }

    /// Whether the API can answer with a stream at all.
    pub(crate) fn streams(self) -> bool {
        !matches!(self, Api::Embeddings)
    }
}

impl fmt::Display for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
