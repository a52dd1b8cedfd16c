//! `GET /v1/models`: the models the caller's organization may call.
//!
//! The request (with a valid key) goes to the inner service; when it
//! answers a model list, the entries whose `id` the organization allows
//! are kept. When it cannot list models (an error, not a list), the
//! organization's allowed model names are listed as they are; its
//! patterns (`prefix/*`, `*`) cannot be listed without an upstream list.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body::Body;
use http_body_util::BodyExt;
use ias_core::{KeyModels, policy};
use serde_json::{Value, json};
use tower::Service;
use tracing::debug;

use crate::body::{BoxError, GovernBody};
use crate::error::ApiError;
use crate::layer::{Shared, keyed};
use crate::observe::Outcome;

/// Answers `GET {prefix}/models` for the caller's key.
pub(crate) async fn list<S, ReqB, ResB>(
    shared: Arc<Shared>,
    mut inner: S,
    request: Request<ReqB>,
) -> Result<Response<GovernBody<ResB>>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body<Data = Bytes>,
    ResB::Error: Into<BoxError>,
{
    let allowed = match allowed_models(&shared, request.headers()).await {
        Ok(allowed) => allowed,
        Err(refusal) => return Ok(refusal.into_http()),
    };
    let upstream = inner.call(request).await?;
    let listed = match upstream_list(upstream).await {
        Some(data) => filter(data, &allowed),
        None => named(&allowed),
    };
    let body = json!({ "object": "list", "data": listed });
    let mut response = Response::new(GovernBody::full(Bytes::from(body.to_string())));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

async fn allowed_models(
    shared: &Shared,
    headers: &http::HeaderMap,
) -> Result<Vec<String>, ApiError> {
    let governor = &shared.governor;
    let look = |key| async move {
        Ok(match governor.key_models(key).await? {
            KeyModels::Usable { allowed_models, .. } => Ok(allowed_models),
            KeyModels::Refused(reason) => Err(reason),
        })
    };
    let (_, allowed) = keyed(shared, headers, None, look).await?;
    shared.observe(None, Outcome::Allowed, None, None);
    Ok(allowed)
}

/// The `data` of the inner service's answer, if it is a successful model list.
async fn upstream_list<B>(response: Response<B>) -> Option<Vec<Value>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let status = response.status();
    if !status.is_success() {
        debug!(
            status = status.as_u16(),
            "the upstream lists no models; listing the allowed names"
        );
        return None;
    }
    let bytes = response.into_body().collect().await.ok()?.to_bytes();
    match serde_json::from_slice::<Value>(&bytes).ok()? {
        Value::Object(mut answer) => match answer.remove("data")? {
            Value::Array(data) => Some(data),
            _ => None,
        },
        _ => None,
    }
}

/// The entries of an upstream list whose model the organization allows.
fn filter(data: Vec<Value>, allowed: &[String]) -> Vec<Value> {
    data.into_iter()
        .filter(|entry| {
            let id = entry.get("id").and_then(Value::as_str);
            id.and_then(|id| policy::model_name(id).ok())
                .is_some_and(|model| policy::is_allowed(allowed, &model))
        })
        .collect()
}

/// The allowed model names (not patterns), as list entries.
fn named(allowed: &[String]) -> Vec<Value> {
    allowed
        .iter()
        .filter(|pattern| !pattern.ends_with('*'))
        .map(|model| json!({ "id": model, "object": "model", "created": 0, "owned_by": "ias" }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(listed: &[Value]) -> Vec<&str> {
        listed.iter().filter_map(|e| e["id"].as_str()).collect()
    }

    #[test]
    fn an_upstream_list_is_filtered_by_names_and_patterns() {
        let data: Vec<Value> = [
            "gpt-4o-mini",
            "GPT-4o",
            "anthropic/claude",
            "o3",
            "bad model",
        ]
        .iter()
        .map(|id| json!({ "id": id, "object": "model" }))
        .chain([json!({ "object": "model" })])
        .collect();
        let allowed = ["anthropic/*".to_owned(), "gpt-4o".to_owned()];
        assert_eq!(
            ids(&filter(data.clone(), &allowed)),
            ["GPT-4o", "anthropic/claude"]
        );
        assert_eq!(ids(&filter(data.clone(), &["*".to_owned()])).len(), 4);
        assert!(filter(data, &[]).is_empty());
    }

    #[test]
    fn without_a_list_only_names_are_listed() {
        let allowed = [
            "*".to_owned(),
            "anthropic/*".to_owned(),
            "gpt-4o-mini".to_owned(),
        ];
        let listed = named(&allowed);
        assert_eq!(ids(&listed), ["gpt-4o-mini"]);
        assert_eq!(listed[0]["object"], "model");
    }
}
