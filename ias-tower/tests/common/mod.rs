//! A governed service over a scripted upstream, on an in-memory SQLite store.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test support, shared by several test binaries"
)]

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, header};
use http_body::Frame;
use http_body_util::BodyExt;
use ias_core::{Actor, Admin, Governor, Role, Source, Store};
use ias_store_sqlite::SqliteStore;
use ias_tower::{BoxError, GovernBody, GovernLayer, GovernLayerBuilder};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tower::util::BoxCloneService;
use tower::{Layer, ServiceExt};

pub const MODEL: &str = "gpt-4o-mini";

/// What the scripted upstream was sent: path and JSON body (`null` when empty).
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub body: Value,
}

type Handler = Arc<dyn Fn(&Seen) -> Response<Body> + Send + Sync>;

pub type Governed = BoxCloneService<Request<Body>, Response<GovernBody<Body>>, Infallible>;

pub struct Harness {
    pub admin: Admin,
    pub governor: Governor,
    pub layer: GovernLayer,
    pub service: Governed,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Harness {
    /// A Layer with default settings over an upstream answering with `handler`.
    pub async fn new(handler: impl Fn(&Seen) -> Response<Body> + Send + Sync + 'static) -> Self {
        Self::with(handler, |builder| builder).await
    }

    /// The same, with the Layer's builder adjusted by `settings`.
    pub async fn with(
        handler: impl Fn(&Seen) -> Response<Body> + Send + Sync + 'static,
        settings: impl FnOnce(GovernLayerBuilder) -> GovernLayerBuilder,
    ) -> Self {
        let store: Arc<dyn Store> = SqliteStore::open_in_memory().await.unwrap();
        let admin = Admin::new(store.clone(), Actor::local_operator(), Source::Library);
        let governor = Governor::open(store).await.unwrap();
        let admin = admin.with_governor(governor.clone());
        let layer = settings(GovernLayer::builder(governor.clone())).build();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let upstream = scripted(Arc::new(handler), seen.clone());
        let service = BoxCloneService::new(layer.layer(upstream));
        Harness {
            admin,
            governor,
            layer,
            service,
            seen,
        }
    }

    /// Creates an org allowing [`MODEL`] with one user, and returns the user's key.
    pub async fn org(&self, slug: &str, budget: i64) -> String {
        self.admin.create_org(slug, budget, "UTC").await.unwrap();
        self.admin.allow_model(slug, MODEL).await.unwrap();
        let email = format!("first@{slug}.example.com");
        self.admin
            .create_user(slug, &email, Role::Member, None)
            .await
            .unwrap();
        let created = self.admin.create_key(&email, None).await.unwrap();
        created.secret.expose().to_owned()
    }

    /// The org's used and reserved tokens in the store, once the governor
    /// has written its usage and given back what no open request holds.
    pub async fn used(&self, slug: &str) -> (i64, i64) {
        self.governor.shutdown().await.unwrap();
        let report = self
            .admin
            .usage(slug, None, &ias_core::PageRequest::default())
            .await
            .unwrap();
        (report.org.used, report.org.reserved)
    }

    /// Waits until the governor holds no open reservation; panics after 5 s.
    pub async fn no_open_reservation(&self) {
        for _ in 0..500 {
            if self.governor.stats().open_reservations == 0 && self.layer.drain().in_flight() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "still open: {} reservations, {} requests in flight",
            self.governor.stats().open_reservations,
            self.layer.drain().in_flight()
        );
    }

    /// How many requests reached the upstream.
    pub fn upstream_calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// The last request the upstream got.
    pub fn last_seen(&self) -> Seen {
        self.seen.lock().unwrap().last().cloned().unwrap()
    }

    pub async fn call(&self, request: Request<Body>) -> Response<GovernBody<Body>> {
        self.service.clone().oneshot(request).await.unwrap()
    }

    pub async fn send(&self, request: Request<Body>) -> Reply {
        Reply::read(self.call(request).await).await
    }

    pub async fn post(&self, path: &str, key: Option<&str>, body: &Value) -> Reply {
        self.send(post(path, key, body)).await
    }
}

/// `POST path` with a JSON body and, if given, a bearer key.
pub fn post(path: &str, key: Option<&str>, body: &Value) -> Request<Body> {
    let mut request = Request::post(path).header(header::CONTENT_TYPE, "application/json");
    if let Some(key) = key {
        request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
    }
    request.body(Body::from(body.to_string())).unwrap()
}

/// `GET path` with a bearer key.
pub fn get(path: &str, key: Option<&str>) -> Request<Body> {
    let mut request = Request::get(path);
    if let Some(key) = key {
        request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
    }
    request.body(Body::empty()).unwrap()
}

fn scripted(
    handler: Handler,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> impl tower::Service<
    Request<Body>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send,
> + Clone
+ Send
+ Sync
+ 'static {
    tower::service_fn(move |request: Request<Body>| {
        let handler = handler.clone();
        let seen = seen.clone();
        async move {
            let path = request.uri().path().to_owned();
            let bytes = axum::body::to_bytes(request.into_body(), usize::MAX)
                .await
                .unwrap();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            // A test makes the upstream slow with `x_delay_ms` in the body.
            if let Some(ms) = body.get("x_delay_ms").and_then(Value::as_u64) {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            let request = Seen { path, body };
            let response = handler(&request);
            seen.lock().unwrap().push(request);
            Ok::<_, Infallible>(response)
        }
    })
}

/// A whole answer: status, headers and JSON body (`null` when not JSON).
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub async fn read(response: Response<GovernBody<Body>>) -> Reply {
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }

    #[track_caller]
    pub fn expect_error(&self, status: StatusCode, code: &str) {
        assert_eq!((self.status, self.code()), (status, code), "{}", self.text);
        for field in ["message", "type"] {
            assert!(self.body["error"][field].is_string(), "{}", self.text);
        }
    }
}

/// A JSON answer with `status`.
pub fn json_answer(status: StatusCode, body: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// A chat completion answer charging `total` tokens.
pub fn chat_answer(total: i64) -> Response<Body> {
    json_answer(
        StatusCode::OK,
        json!({
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": "hi" } }],
            "usage": { "prompt_tokens": 1, "completion_tokens": total - 1, "total_tokens": total },
        }),
    )
}

/// A body whose frames the test sends one at a time.
pub struct ChannelBody {
    frames: mpsc::UnboundedReceiver<Result<Bytes, BoxError>>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.frames
            .poll_recv(cx)
            .map(|frame| frame.map(|f| f.map(Frame::data)))
    }
}

/// Where a test sends a stream's chunks.
pub type Chunks = mpsc::UnboundedSender<Result<Bytes, BoxError>>;

/// A response handed to the first request that takes it.
pub type Once = Arc<Mutex<Option<Response<Body>>>>;

/// An event stream whose chunks the test sends through the returned sender.
pub fn channel_stream() -> (Chunks, Once) {
    let (sender, frames) = mpsc::unbounded_channel();
    let response = Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::new(ChannelBody { frames }))
        .unwrap();
    (sender, Arc::new(Mutex::new(Some(response))))
}

/// One `data:` event.
pub fn event(data: &Value) -> Result<Bytes, BoxError> {
    Ok(Bytes::from(format!("data: {data}\n\n")))
}

/// A chat stream chunk carrying `text`.
pub fn chat_chunk(text: &str) -> Value {
    json!({
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "choices": [{ "index": 0, "delta": { "content": text }, "finish_reason": null }],
        "usage": null,
    })
}

/// The last chat stream chunk: no choices, the usage.
pub fn usage_chunk(prompt: i64, completion: i64) -> Value {
    json!({
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "choices": [],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    })
}

/// The next frame of a body, waiting at most 5 s.
pub async fn next_frame(body: &mut GovernBody<Body>) -> Option<Result<Bytes, BoxError>> {
    let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("no frame within 5 s")?;
    Some(frame.map(|f| f.into_data().unwrap_or_default()))
}
