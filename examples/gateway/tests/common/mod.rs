//! A gateway router in-process against an in-memory SQLite store, and
//! upstreams on loopback for the tests to script.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test support, shared by several test binaries"
)]

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use axum::routing::post;
use ias_core::{Actor, Admin, Governor, PageRequest, Role, Source, Store};
use ias_gateway::app::{AppState, router};
use ias_gateway::upstream::{HttpUpstream, MockUpstream, Upstream};
use ias_store_sqlite::SqliteStore;
use serde_json::{Value, json};
use tower::ServiceExt;

pub const MODEL: &str = "gpt-4o-mini";

/// "hello": ceil(5 / 4) + 4 prompt tokens, plus `max_tokens` 10.
pub const ESTIMATE: i64 = 16;

/// What the mock charges for [`chat`]: 6 prompt tokens and 10 reply words.
pub const MOCK_TOTAL: i64 = 16;

pub struct Gateway {
    pub app: Router,
    pub state: AppState,
    pub admin: Admin,
    pub governor: Governor,
}

impl Gateway {
    pub async fn new(upstream: Upstream) -> Self {
        let store: Arc<dyn Store> = SqliteStore::open_in_memory().await.unwrap();
        let admin = Admin::new(store.clone(), Actor::local_operator(), Source::Library);
        let governor = Governor::open(store).await.unwrap();
        let admin = admin.with_governor(governor.clone());
        let state = AppState::new(governor.clone(), upstream);
        let app = router(state.clone());
        Gateway {
            app,
            state,
            admin,
            governor,
        }
    }

    pub async fn mock() -> Self {
        Self::new(Upstream::Mock(MockUpstream::default())).await
    }

    /// Creates an org allowing [`MODEL`] with one user, and returns the user's key.
    pub async fn org(&self, slug: &str, budget: i64, user_limit: Option<i64>) -> String {
        self.admin.create_org(slug, budget, "UTC").await.unwrap();
        self.admin.allow_model(slug, MODEL).await.unwrap();
        self.user(slug, &format!("first@{slug}.example.com"), user_limit)
            .await
    }

    pub async fn user(&self, slug: &str, email: &str, limit: Option<i64>) -> String {
        self.admin
            .create_user(slug, email, Role::Member, limit)
            .await
            .unwrap();
        let created = self.admin.create_key(email, None).await.unwrap();
        created.secret.expose().to_owned()
    }

    /// The org's used and reserved tokens in the store, once the governor
    /// has written its usage and given back what no open request holds.
    pub async fn used(&self, slug: &str) -> (i64, i64) {
        self.governor.shutdown().await.unwrap();
        let report = self
            .admin
            .usage(slug, None, &PageRequest::default())
            .await
            .unwrap();
        (report.org.used, report.org.reserved)
    }

    /// Waits until no reservation is open and no governed request is in flight.
    pub async fn no_open_reservation(&self) {
        for _ in 0..500 {
            let open = self.governor.stats().open_reservations;
            if open == 0 && self.state.drain().in_flight() == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("reservations still open: {:?}", self.governor.stats());
    }

    pub async fn call(&self, request: Request<Body>) -> axum::response::Response {
        self.app.clone().oneshot(request).await.unwrap()
    }

    pub async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.call(request).await;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    /// `POST path` with a JSON body and, if given, a bearer key.
    pub async fn post_to(&self, path: &str, key: Option<&str>, body: &Value) -> Reply {
        self.send(post_request(path, key, body)).await
    }

    /// `GET path` with, if given, a bearer key.
    pub async fn get(&self, path: &str, key: Option<&str>) -> Reply {
        let mut request = Request::get(path);
        if let Some(key) = key {
            request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
        }
        self.send(request.body(Body::empty()).unwrap()).await
    }

    pub async fn post(&self, key: Option<&str>, body: String) -> Reply {
        let mut request =
            Request::post("/v1/chat/completions").header(header::CONTENT_TYPE, "application/json");
        if let Some(key) = key {
            request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
        }
        self.send(request.body(Body::from(body)).unwrap()).await
    }

    pub async fn chat(&self, key: &str, model: &str) -> Reply {
        self.post(Some(key), chat(model).to_string()).await
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }

    #[track_caller]
    pub fn expect_error(&self, status: StatusCode, code: &str) {
        assert_eq!((self.status, self.code()), (status, code), "{}", self.text);
        for field in ["message", "type"] {
            assert!(self.body["error"][field].is_string(), "{}", self.body);
        }
    }
}

pub fn chat(model: &str) -> Value {
    json!({
        "model": model,
        "messages": [{ "role": "user", "content": "hello" }],
        "max_tokens": 10,
    })
}

/// An upstream on 127.0.0.1 that answers every chat completion with `status` and `body`.
pub async fn fake_upstream(status: StatusCode, body: Value) -> Upstream {
    let app = Router::new().route(
        "/v1/chat/completions",
        post(move || async move { (status, axum::Json(body)) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let base = format!("http://{addr}/v1");
    Upstream::Http(HttpUpstream::new(&base, None).unwrap())
}

/// `POST path` with a JSON body and, if given, a bearer key.
pub fn post_request(path: &str, key: Option<&str>, body: &Value) -> Request<Body> {
    let mut request = Request::post(path).header(header::CONTENT_TYPE, "application/json");
    if let Some(key) = key {
        request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
    }
    request.body(Body::from(body.to_string())).unwrap()
}

/// An upstream on 127.0.0.1 whose `POST /v1/chat/completions` answers
/// with an event stream the test writes through the returned sender (one
/// stream per request), and which records each request body.
pub async fn streaming_upstream() -> (
    Upstream,
    tokio::sync::mpsc::UnboundedSender<tokio::sync::mpsc::UnboundedReceiver<String>>,
    Arc<std::sync::Mutex<Vec<Value>>>,
) {
    use std::sync::Mutex;
    use tokio::sync::mpsc;

    let (streams, waiting) = mpsc::unbounded_channel::<mpsc::UnboundedReceiver<String>>();
    let waiting = Arc::new(tokio::sync::Mutex::new(waiting));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorded = seen.clone();
    let app = Router::new().route(
        "/v1/chat/completions",
        post(move |body: String| {
            let waiting = waiting.clone();
            let recorded = recorded.clone();
            async move {
                recorded
                    .lock()
                    .unwrap()
                    .push(serde_json::from_str::<Value>(&body).unwrap());
                let chunks = waiting.lock().await.recv().await.unwrap();
                let frames = futures_util::stream::unfold(chunks, |mut chunks| async move {
                    let chunk = chunks.recv().await?;
                    Some((Ok::<_, std::convert::Infallible>(chunk), chunks))
                });
                axum::response::Response::builder()
                    .header(header::CONTENT_TYPE, "text/event-stream")
                    .body(Body::from_stream(frames))
                    .unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let base = format!("http://{addr}/v1");
    (
        Upstream::Http(HttpUpstream::new(&base, None).unwrap()),
        streams,
        seen,
    )
}
