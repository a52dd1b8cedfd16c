//! The Layer, its options, and the service it wraps around a gateway.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, header};
use http_body::Body;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use ias_core::{Decision, DenyReason, Governor, Reservation};
use serde_json::{Map, Value};
use tower::{Layer, Service};
use tracing::{debug, error, warn};

use crate::api::Api;
use crate::body::{BoxError, GovernBody};
use crate::charge::Charge;
use crate::drain::{Drain, InFlight};
use crate::error::ApiError;
use crate::estimate::{self, Estimate};
use crate::models;
use crate::observe::{Decided, Observer, Outcome};
use crate::request::{Estimator, Inference};
use crate::route::{Routes, Target, UnknownPaths};
use crate::usage::Usage;

/// The largest request body read by default: 16 MiB, room for inline images.
pub const DEFAULT_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// The governed prefix by default.
pub const DEFAULT_PREFIX: &str = "/v1";

/// A tower [`Layer`] that governs OpenAI-compatible requests with a [`Governor`].
///
/// Cheap to clone; every clone shares one [`Drain`].
#[derive(Clone)]
pub struct GovernLayer {
    shared: Arc<Shared>,
}

/// The Layer's settings; see [`GovernLayer::builder`].
pub struct GovernLayerBuilder {
    governor: Governor,
    routes: Routes,
    body_limit: usize,
    estimator: Arc<Estimator>,
    observer: Option<Arc<dyn Observer>>,
}

/// What every request handled by a Layer shares.
pub(crate) struct Shared {
    pub governor: Governor,
    pub routes: Routes,
    pub body_limit: usize,
    pub estimator: Arc<Estimator>,
    pub observer: Option<Arc<dyn Observer>>,
    pub drain: Drain,
}

impl GovernLayer {
    /// A Layer with the default settings: the four OpenAI inference routes
    /// and `GET /v1/models` governed, other `/v1/` paths refused, bodies up
    /// to [`DEFAULT_BODY_LIMIT`], the [default estimate](crate::estimate).
    pub fn new(governor: Governor) -> Self {
        Self::builder(governor).build()
    }

    /// A builder for other settings.
    pub fn builder(governor: Governor) -> GovernLayerBuilder {
        GovernLayerBuilder {
            governor,
            routes: Routes::openai(DEFAULT_PREFIX),
            body_limit: DEFAULT_BODY_LIMIT,
            estimator: Arc::new(estimate::estimate),
            observer: None,
        }
    }

    /// The handle on the requests in flight, for a graceful shutdown.
    pub fn drain(&self) -> Drain {
        self.shared.drain.clone()
    }
}

impl std::fmt::Debug for GovernLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GovernLayer")
            .field("routes", &self.shared.routes)
            .field("body_limit", &self.shared.body_limit)
            .finish_non_exhaustive()
    }
}

impl GovernLayerBuilder {
    /// The path prefix under which every request is governed (default
    /// `/v1`); the inference routes and `{prefix}/models` move with it.
    /// Call it before [`GovernLayerBuilder::route`].
    pub fn prefix(mut self, prefix: &str) -> Self {
        let unknown = self.routes.unknown;
        self.routes = Routes::openai(prefix);
        self.routes.unknown = unknown;
        self
    }

    /// Governs `POST path` as `api` (in addition to the defaults, or
    /// replacing the API of a path already known).
    pub fn route(mut self, path: &str, api: Api) -> Self {
        self.routes.set(path, api);
        self
    }

    /// What to do with other paths under the prefix (default: refuse).
    pub fn unknown_paths(mut self, unknown: UnknownPaths) -> Self {
        self.routes.unknown = unknown;
        self
    }

    /// The largest request body read; a larger one is answered 413.
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Replaces the [default estimate](crate::estimate::estimate). It gets
    /// the API and the body's fields, already checked.
    pub fn estimator(
        mut self,
        estimator: impl Fn(Api, &Map<String, Value>) -> Estimate + Send + Sync + 'static,
    ) -> Self {
        self.estimator = Arc::new(estimator);
        self
    }

    /// Tells `observer` of every decision and charge (for metrics).
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The Layer.
    pub fn build(self) -> GovernLayer {
        GovernLayer {
            shared: Arc::new(Shared {
                governor: self.governor,
                routes: self.routes,
                body_limit: self.body_limit,
                estimator: self.estimator,
                observer: self.observer,
                drain: Drain::default(),
            }),
        }
    }
}

impl<S> Layer<S> for GovernLayer {
    type Service = Govern<S>;

    fn layer(&self, inner: S) -> Govern<S> {
        Govern {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// A service governed by a [`GovernLayer`].
#[derive(Clone)]
pub struct Govern<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> std::fmt::Debug for Govern<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Govern").finish_non_exhaustive()
    }
}

/// The future of a governed call.
pub type GovernFuture<B, E> =
    Pin<Box<dyn Future<Output = Result<Response<GovernBody<B>>, E>> + Send>>;

impl<S, ReqB, ResB> Service<Request<ReqB>> for Govern<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqB: Body + From<Bytes> + Send + 'static,
    ReqB::Data: Send,
    ReqB::Error: Into<BoxError>,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    type Response = Response<GovernBody<ResB>>;
    type Error = S::Error;
    type Future = GovernFuture<ResB, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        let path = request.uri().path();
        let refusal = match shared.routes.target(request.method(), path) {
            Target::Outside => {
                let call = self.inner.call(request);
                return Box::pin(async move { Ok(call.await?.map(GovernBody::inner)) });
            }
            Target::Models => {
                let inner = take_ready(&mut self.inner);
                return Box::pin(models::list(shared, inner, request));
            }
            Target::Inference(api) => {
                let inner = take_ready(&mut self.inner);
                let in_flight = shared.drain.enter();
                let govern = govern(shared, inner, request, api, in_flight);
                return Box::pin(Detached::new(govern));
            }
            Target::WrongMethod => ApiError::method_not_allowed(request.method().as_str(), path),
            Target::Unknown => ApiError::not_found(path, &served(&shared.routes)),
            Target::Suspicious => ApiError::not_found(
                path,
                "paths with `.` or `..` segments or encoded `.`, `/` or `\\` are refused",
            ),
        };
        Box::pin(std::future::ready(Ok(refusal.into_http())))
    }
}

/// A future that, if dropped before it is done (the caller hung up), goes
/// on in a task of its own: deciding, calling the upstream and charging are
/// never cut short, so no reservation is left open. Its result is then
/// dropped, which for a stream charges what was produced.
struct Detached<F: Future + Send + 'static>
where
    F::Output: Send,
{
    future: Option<Pin<Box<F>>>,
}

impl<F: Future + Send + 'static> Detached<F>
where
    F::Output: Send,
{
    fn new(future: F) -> Self {
        Detached {
            future: Some(Box::pin(future)),
        }
    }
}

impl<F: Future + Send + 'static> Future for Detached<F>
where
    F::Output: Send,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let Some(future) = self.future.as_mut() else {
            // INVARIANT: polled again after it returned `Ready`, which a
            // caller of a future must not do; stay pending rather than panic.
            error!("a governed request was polled after it completed");
            return Poll::Pending;
        };
        let output = std::task::ready!(future.as_mut().poll(cx));
        self.future = None;
        Poll::Ready(output)
    }
}

impl<F: Future + Send + 'static> Drop for Detached<F>
where
    F::Output: Send,
{
    fn drop(&mut self) {
        let Some(future) = self.future.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(async move { drop(future.await) })),
            Err(_) => warn!(
                "a governed request was dropped outside a tokio runtime; \
                 its reservation expires by itself"
            ),
        }
    }
}

/// The inner service, ready (`poll_ready` was called on it), leaving a clone in its place.
fn take_ready<S: Clone>(inner: &mut S) -> S {
    let clone = inner.clone();
    std::mem::replace(inner, clone)
}

fn served(routes: &Routes) -> String {
    format!(
        "under `{prefix}` only the inference routes (such as `POST {prefix}/chat/completions`) \
         and `GET {prefix}/models` are served",
        prefix = routes.prefix()
    )
}

/// One governed inference request, from its key to its charge.
async fn govern<S, ReqB, ResB>(
    shared: Arc<Shared>,
    mut inner: S,
    request: Request<ReqB>,
    api: Api,
    in_flight: InFlight,
) -> Result<Response<GovernBody<ResB>>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ReqB: Body + From<Bytes>,
    ReqB::Error: Into<BoxError>,
    ResB: Body<Data = Bytes>,
    ResB::Error: Into<BoxError>,
{
    let (mut parts, body) = request.into_parts();
    let (charge, forwarded) = match decide(&shared, &parts.headers, body, api, in_flight).await {
        Ok(allowed) => allowed,
        Err(refusal) => return Ok(refusal.into_http()),
    };
    // The body goes on in one piece, of a new length.
    parts.headers.remove(header::TRANSFER_ENCODING);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(forwarded.len()));
    let request = Request::from_parts(parts, ReqB::from(forwarded));

    let response = tokio::select! {
        response = inner.call(request) => Some(response),
        () = shared.drain.cancelled() => None,
    };
    match response {
        Some(Ok(response)) => Ok(answer(&shared, response, charge).await),
        Some(Err(err)) => {
            charge.release().await;
            Err(err)
        }
        None => Ok(cut_off(charge).await),
    }
}

/// Checks the key, reads and checks the body, and reserves its tokens: the
/// reservation and the body to forward, or the refusal to answer.
async fn decide<B>(
    shared: &Shared,
    headers: &HeaderMap,
    body: B,
    api: Api,
    in_flight: InFlight,
) -> Result<(Charge, Bytes), ApiError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    // The key is checked before the body is read, so a caller without a
    // usable key cannot make the gateway read and parse a large body.
    let key = checked_key(shared, headers, Some(api)).await?;
    let bytes = read_body(body, shared.body_limit).await?;
    let inference = Inference::parse(api, &bytes, shared.estimator.as_ref())?;
    if shared.drain.is_cancelled() {
        let message = "the gateway is shutting down; try again".to_owned();
        return Err(ApiError::unavailable("shutting_down", message));
    }
    let reservation = authorize(shared, key, &inference).await?;
    let charge = Charge {
        governor: shared.governor.clone(),
        reservation,
        api,
        estimate: inference.estimate,
        observer: shared.observer.clone(),
        _in_flight: in_flight,
    };
    Ok((charge, inference.body))
}

/// The caller's key, if the governor knows it and it is usable.
pub(crate) async fn checked_key<'h>(
    shared: &Shared,
    headers: &'h HeaderMap,
    api: Option<Api>,
) -> Result<&'h str, ApiError> {
    let governor = &shared.governor;
    let look = |key| async move { Ok(governor.check_key(key).await?.map_or(Ok(()), Err)) };
    let (key, ()) = keyed(shared, headers, api, look).await?;
    Ok(key)
}

/// The caller's bearer key and what `look` found for it; or, observed, the
/// refusal to answer: no key, a key `look` refuses, or a failed lookup.
pub(crate) async fn keyed<'h, T, F>(
    shared: &Shared,
    headers: &'h HeaderMap,
    api: Option<Api>,
    look: impl FnOnce(&'h str) -> F,
) -> Result<(&'h str, T), ApiError>
where
    F: Future<Output = ias_core::Result<Result<T, DenyReason>>>,
{
    let Some(key) = bearer_key(headers) else {
        shared.observe(api, Outcome::Denied, Some("missing_api_key"), None);
        return Err(ApiError::missing_key());
    };
    match look(key).await {
        Ok(Ok(found)) => Ok((key, found)),
        Ok(Err(reason)) => {
            shared.observe(api, Outcome::Denied, Some(reason.as_str()), None);
            Err(ApiError::key_refused(reason))
        }
        Err(err) => Err(shared.failed(api, &err, None)),
    }
}

/// The key from `Authorization: Bearer <key>`, if the header has that shape.
pub fn bearer_key(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.trim().split_once(' ')?;
    let key = key.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !key.is_empty()).then_some(key)
}

async fn read_body<B>(body: B, limit: usize) -> Result<Bytes, ApiError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let too_large = || {
        let message = format!("the request body is larger than {limit} bytes");
        ApiError::invalid_request("invalid_body", message, None)
            .with_status(http::StatusCode::PAYLOAD_TOO_LARGE)
    };
    if body.size_hint().lower() > limit as u64 {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<LengthLimitError>() => Err(too_large()),
        Err(err) => {
            let message = format!("the request body could not be read: {err}");
            Err(ApiError::invalid_request("invalid_body", message, None))
        }
    }
}

/// Decides the request; the reservation of an allowed one.
async fn authorize(
    shared: &Shared,
    key: &str,
    inference: &Inference,
) -> Result<Reservation, ApiError> {
    let api = Some(inference.api);
    let started = Instant::now();
    let decision = shared
        .governor
        .authorize(key, &inference.model, inference.estimate.total())
        .await;
    let took = Some(started.elapsed());
    match decision {
        Ok(Decision::Allowed(allowed)) => {
            shared.observe(api, Outcome::Allowed, None, took);
            allowed.reservation.ok_or_else(|| {
                // INVARIANT: `Governor::authorize` reserves for every allowed request.
                error!("the governor allowed a request without reserving tokens");
                ApiError::internal("missing_reservation")
            })
        }
        Ok(Decision::Denied(denied)) => {
            let key_id = denied.principal.as_ref().map(|p| p.key_id.0);
            debug!(reason = denied.reason.as_str(), key_id, "request denied");
            shared.observe(api, Outcome::Denied, Some(denied.reason.as_str()), took);
            Err(ApiError::denied(&denied))
        }
        Err(err) => Err(shared.failed(api, &err, took)),
    }
}

/// Passes the upstream's answer on and charges for it.
async fn answer<B>(
    shared: &Shared,
    response: Response<B>,
    charge: Charge,
) -> Response<GovernBody<B>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let (parts, body) = response.into_parts();
    if !parts.status.is_success() {
        charge.release().await;
        return Response::from_parts(parts, GovernBody::inner(body));
    }
    if is_event_stream(&parts.headers) {
        let cancelled = Box::pin(shared.drain.cancelled());
        return Response::from_parts(parts, GovernBody::metered(body, charge, cancelled));
    }
    let collected: Option<Result<Bytes, BoxError>> = tokio::select! {
        collected = body.collect() => Some(collected.map(|c| c.to_bytes()).map_err(Into::into)),
        () = shared.drain.cancelled() => None,
    };
    let Some(collected) = collected else {
        return cut_off(charge).await;
    };
    let bytes = match collected {
        Ok(bytes) => bytes,
        Err(err) => {
            warn!(error = %err, "the upstream answer could not be read");
            charge.release().await;
            let message = "the upstream answer could not be read".to_owned();
            return ApiError::bad_gateway("upstream_unreachable", message).into_http();
        }
    };
    let tokens = Usage::of_answer(&bytes)
        .and_then(|usage| usage.total())
        .unwrap_or_else(|| {
            let estimate = charge.estimate.total();
            warn!(
                reservation = charge.reservation.id.0,
                api = charge.api.as_str(),
                estimate,
                "the upstream answer has no usage; charging the estimate"
            );
            estimate
        });
    charge.settle(tokens).await;
    Response::from_parts(parts, GovernBody::full(bytes))
}

/// The answer to a request still waiting for the upstream when the host
/// cancelled: the prompt is charged, since the upstream had it.
async fn cut_off<B>(charge: Charge) -> Response<GovernBody<B>> {
    let tokens = charge.estimate.prompt;
    charge.settle(tokens).await;
    let message = "the gateway is shutting down; try again".to_owned();
    ApiError::unavailable("shutting_down", message).into_http()
}

fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .trim_start()
                .get(..17)
                .is_some_and(|kind| kind.eq_ignore_ascii_case("text/event-stream"))
        })
}

impl Shared {
    pub(crate) fn observe(
        &self,
        api: Option<Api>,
        outcome: Outcome,
        reason: Option<&'static str>,
        authorize_time: Option<std::time::Duration>,
    ) {
        if let Some(observer) = &self.observer {
            observer.decided(&Decided {
                api,
                outcome,
                reason,
                authorize_time,
            });
        }
    }

    /// Logs a governor error and turns it into the caller's answer.
    pub(crate) fn failed(
        &self,
        api: Option<Api>,
        err: &ias_core::Error,
        took: Option<std::time::Duration>,
    ) -> ApiError {
        if err.is_invalid_input() {
            debug!(error = %err, "request refused as invalid");
        } else if err.is_retryable() {
            warn!(error = %err, "the store is unavailable");
        } else {
            error!(error = %err, "the governor failed");
        }
        let answer = ApiError::governor(err);
        self.observe(api, Outcome::Failed, Some(answer.code()), took);
        answer
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn with_authorization(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn bearer_keys_are_read_from_the_header() {
        assert_eq!(
            bearer_key(&with_authorization("Bearer ias_abc")),
            Some("ias_abc")
        );
        assert_eq!(
            bearer_key(&with_authorization("bearer  ias_abc ")),
            Some("ias_abc")
        );
    }

    #[test]
    fn other_headers_carry_no_key() {
        assert_eq!(bearer_key(&HeaderMap::new()), None);
        assert_eq!(bearer_key(&with_authorization("Basic dXNlcjpwYXNz")), None);
        assert_eq!(bearer_key(&with_authorization("Bearer")), None);
        assert_eq!(bearer_key(&with_authorization("Bearer   ")), None);
        assert_eq!(bearer_key(&with_authorization("ias_abc")), None);
    }

    #[test]
    fn event_streams_are_told_by_their_content_type() {
        let headers = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            headers
        };
        assert!(is_event_stream(&headers("text/event-stream")));
        assert!(is_event_stream(&headers(
            "Text/Event-Stream; charset=utf-8"
        )));
        assert!(!is_event_stream(&headers("application/json")));
        assert!(!is_event_stream(&HeaderMap::new()));
    }
}
