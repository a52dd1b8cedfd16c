//! Which requests the Layer governs, by path.
//!
//! Paths are compared after normalising: empty segments (`//`, a trailing
//! `/`) are dropped and letter case is ignored, so `/V1//chat/completions/`
//! is governed as `/v1/chat/completions` whatever the inner service makes
//! of it. A path with a `.` or `..` segment, or an encoded `.`, `/` or `\`
//! (`%2e`, `%2f`, `%5c`), is refused outright: it could mean a governed
//! path to a service that decodes it.

use http::Method;

use crate::api::Api;

/// What the Layer does with a path under the governed prefix that is
/// neither an inference route nor the model list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UnknownPaths {
    /// Answer 404 `not_found`; nothing reaches the inner service. The default.
    #[default]
    Refuse,
    /// Govern a `POST` whose JSON body has a `model` like any inference
    /// request ([`Api::Generic`]); refuse anything else with 404.
    Govern,
}

/// The paths the Layer governs.
#[derive(Debug, Clone)]
pub(crate) struct Routes {
    /// The governed prefix, normalised, such as `/v1`.
    prefix: String,
    /// Inference paths, normalised, with their API.
    inference: Vec<(String, Api)>,
    pub unknown: UnknownPaths,
}

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// An inference request to govern.
    Inference(Api),
    /// `GET {prefix}/models`.
    Models,
    /// A governed path called with the wrong method.
    WrongMethod,
    /// A path under the prefix that is not governed: refused.
    Unknown,
    /// A path that could hide another: refused.
    Suspicious,
    /// Outside the prefix: passed to the inner service untouched.
    Outside,
}

impl Routes {
    /// The OpenAI routes under `prefix`.
    pub fn openai(prefix: &str) -> Self {
        let prefix = normalise(prefix).unwrap_or_default();
        let inference = Api::ROUTED
            .iter()
            .map(|(api, path)| (format!("{prefix}{path}"), *api))
            .collect();
        Routes {
            prefix,
            inference,
            unknown: UnknownPaths::Refuse,
        }
    }

    /// Governs `path` as `api`, replacing any route on the same path.
    pub fn set(&mut self, path: &str, api: Api) {
        let path = normalise(path).unwrap_or_default();
        self.inference.retain(|(known, _)| *known != path);
        self.inference.push((path, api));
    }

    /// The normalised prefix, for messages.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Where a request with this method and path goes.
    pub fn target(&self, method: &Method, path: &str) -> Target {
        let Some(path) = normalise(path) else {
            return Target::Suspicious;
        };
        if let Some((_, api)) = self.inference.iter().find(|(known, _)| *known == path) {
            return match *method == Method::POST {
                true => Target::Inference(*api),
                false => Target::WrongMethod,
            };
        }
        if !self.is_under_prefix(&path) {
            return Target::Outside;
        }
        if path.strip_prefix(&self.prefix) == Some("/models") {
            return match *method == Method::GET {
                true => Target::Models,
                false => Target::WrongMethod,
            };
        }
        match (self.unknown, *method == Method::POST) {
            (UnknownPaths::Govern, true) => Target::Inference(Api::Generic),
            _ => Target::Unknown,
        }
    }

    fn is_under_prefix(&self, path: &str) -> bool {
        match path.strip_prefix(&self.prefix) {
            Some(rest) => rest.is_empty() || rest.starts_with('/') || self.prefix.is_empty(),
            None => false,
        }
    }
}

/// `/`-joined non-empty segments, lowercase; `None` for a suspicious path.
fn normalise(path: &str) -> Option<String> {
    let lower = path.to_ascii_lowercase();
    if ["%2e", "%2f", "%5c", "\\"]
        .iter()
        .any(|bad| lower.contains(bad))
    {
        return None;
    }
    let mut normal = String::with_capacity(lower.len());
    for segment in lower.split('/').filter(|s| !s.is_empty()) {
        if segment == "." || segment == ".." {
            return None;
        }
        normal.push('/');
        normal.push_str(segment);
    }
    Some(normal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> Routes {
        Routes::openai("/v1")
    }

    #[test]
    fn the_four_inference_routes_are_governed_for_post_only() {
        let routes = routes();
        for (api, path) in Api::ROUTED {
            let path = format!("/v1{path}");
            assert_eq!(routes.target(&Method::POST, &path), Target::Inference(api));
            assert_eq!(routes.target(&Method::GET, &path), Target::WrongMethod);
        }
        assert_eq!(routes.target(&Method::GET, "/v1/models"), Target::Models);
        assert_eq!(
            routes.target(&Method::POST, "/v1/models"),
            Target::WrongMethod
        );
    }

    #[test]
    fn spelling_variants_are_governed_the_same() {
        let routes = routes();
        for path in [
            "/V1/Chat/Completions",
            "//v1//chat/completions",
            "/v1/chat/completions/",
        ] {
            assert_eq!(
                routes.target(&Method::POST, path),
                Target::Inference(Api::ChatCompletions),
                "{path}"
            );
        }
    }

    #[test]
    fn paths_that_could_hide_another_are_refused() {
        let routes = routes();
        for path in [
            "/v1/files/../chat/completions",
            "/v1/./chat/completions",
            "/v1/chat%2Fcompletions",
            "/healthz/..%2fv1/chat/completions",
            "/v1\\chat\\completions",
            "/x/%2E%2E/v1/chat/completions",
        ] {
            assert_eq!(
                routes.target(&Method::POST, path),
                Target::Suspicious,
                "{path}"
            );
        }
    }

    #[test]
    fn unknown_paths_are_refused_or_governed_generically() {
        let mut routes = routes();
        for path in ["/v1/files", "/v1", "/v1/models/gpt-4o", "/v1/audio/speech"] {
            assert_eq!(
                routes.target(&Method::POST, path),
                Target::Unknown,
                "{path}"
            );
        }
        routes.unknown = UnknownPaths::Govern;
        assert_eq!(
            routes.target(&Method::POST, "/v1/audio/speech"),
            Target::Inference(Api::Generic)
        );
        assert_eq!(routes.target(&Method::GET, "/v1/files"), Target::Unknown);
    }

    #[test]
    fn paths_outside_the_prefix_pass() {
        let routes = routes();
        for path in [
            "/healthz",
            "/metrics",
            "/v10/chat/completions",
            "/",
            "/api/v1/orgs",
        ] {
            assert_eq!(routes.target(&Method::GET, path), Target::Outside, "{path}");
        }
    }

    #[test]
    fn routes_can_be_added_and_moved() {
        let mut routes = Routes::openai("/openai/v1/");
        routes.set("/openai/v1/chat", Api::ChatCompletions);
        assert_eq!(
            routes.target(&Method::POST, "/openai/v1/chat"),
            Target::Inference(Api::ChatCompletions)
        );
        assert_eq!(
            routes.target(&Method::POST, "/openai/v1/embeddings"),
            Target::Inference(Api::Embeddings)
        );
        assert_eq!(
            routes.target(&Method::POST, "/v1/embeddings"),
            Target::Outside
        );
        assert_eq!(routes.prefix(), "/openai/v1");
    }
}
