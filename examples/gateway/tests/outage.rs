//! The gateway on PostgreSQL through a loopback proxy that the test cuts
//! off and brings back: 503 with `Retry-After` while the database is away
//! (never 401), `/readyz` 503 meanwhile, answers again after, and no
//! charged usage lost.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../../ias-store-postgres/tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::TestDb;
use common::proxy::Proxy;
use ias_core::{Actor, Admin, Governor, GovernorConfig, PageRequest, Role, Source};
use ias_gateway::app::{AppState, router};
use ias_gateway::upstream::{MockUpstream, Upstream};
use ias_store_postgres::PostgresStore;
use serde_json::{Value, json};
use tower::ServiceExt;

/// Status, `Retry-After` and total tokens of one chat completion.
async fn chat(app: &axum::Router, key: &str) -> (StatusCode, Option<String>, i64) {
    let body = json!({
        "model": "gpt-4o-mini",
        "messages": [{ "role": "user", "content": "hello" }],
        "max_tokens": 10,
    });
    let request = Request::post("/v1/chat/completions")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let tokens = body["usage"]["total_tokens"].as_i64().unwrap_or(0);
    (status, retry_after, tokens)
}

/// The status of `GET /readyz`.
async fn ready(app: &axum::Router) -> StatusCode {
    let request = Request::get("/readyz").body(Body::empty()).unwrap();
    app.clone().oneshot(request).await.unwrap().status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_503_with_retry_after_and_loses_no_usage() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let direct = PostgresStore::open(db.url()).await.unwrap();
    let admin = Admin::new(direct, Actor::local_operator(), Source::Library);
    admin.create_org("acme", 10_000_000, "UTC").await.unwrap();
    admin.allow_model("acme", "gpt-4o-mini").await.unwrap();
    admin
        .create_user("acme", "a@b.io", Role::Member, None)
        .await
        .unwrap();
    let key = admin.create_key("a@b.io", None).await.unwrap();
    let key = key.secret.expose().to_owned();

    let proxy = Proxy::start(db.url()).await;
    let store = PostgresStore::open(&proxy.url(db.url())).await.unwrap();
    let config = GovernorConfig {
        lease_ttl: Duration::from_secs(2),
        flush_interval: Duration::from_millis(100),
        ..GovernorConfig::default()
    };
    let governor = Governor::builder(store)
        .config(config)
        .open()
        .await
        .unwrap();
    let maintenance = governor.spawn_maintenance();
    let app = router(AppState::new(
        governor,
        Upstream::Mock(MockUpstream::default()),
    ));

    let mut charged = 0;
    for _ in 0..10 {
        let (status, _, tokens) = chat(&app, &key).await;
        assert_eq!(status, StatusCode::OK);
        charged += tokens;
    }

    assert_eq!(ready(&app).await, StatusCode::OK);
    proxy.cut();
    assert_eq!(ready(&app).await, StatusCode::SERVICE_UNAVAILABLE);
    let cut = Instant::now();
    let mut unavailable = 0;
    while cut.elapsed() < Duration::from_millis(2_500) {
        let (status, retry_after, tokens) = chat(&app, &key).await;
        match status {
            // Served from the leases it still holds.
            StatusCode::OK => charged += tokens,
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(retry_after.as_deref(), Some("1"));
                unavailable += 1;
            }
            other => panic!("answered {other} while the database was away"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(unavailable > 0, "never answered 503");

    proxy.restore().await;
    let restored = Instant::now();
    let mut passed = 0;
    while passed < 10 {
        let (status, _, tokens) = chat(&app, &key).await;
        match status {
            StatusCode::OK => {
                charged += tokens;
                passed += 1;
            }
            StatusCode::SERVICE_UNAVAILABLE => {}
            other => panic!("answered {other} after the database came back"),
        }
        assert!(
            restored.elapsed() < Duration::from_secs(15),
            "no recovery within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(ready(&app).await, StatusCode::OK);
    maintenance.shutdown().await.unwrap();
    let report = admin
        .usage("acme", None, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!((report.org.used, report.org.reserved), (charged, 0));
}
