//! The admin API over an in-memory SQLite store, called in process.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test support, shared by several test binaries"
)]

use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use ias_admin_api::AdminApi;
use ias_core::gitops::{FetchedFile, GitopsSettings, ManifestSource, Reconciler, ReconcilerConfig};
use ias_core::{
    Actor, Admin, AuditEntry, AuditFilter, Governor, PageRequest, Role, Source, Store, User,
};
use ias_store_sqlite::SqliteStore;
use serde_json::Value;
use tower::ServiceExt;

/// An answer: status, headers and JSON body (`null` when empty).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    /// The error code of an error answer.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    /// Asserts an error answer with this status and code.
    #[track_caller]
    pub fn expect_error(&self, status: StatusCode, code: &str) {
        assert_eq!(
            (self.status, self.code()),
            (status, code),
            "{:?}",
            self.body
        );
    }
}

/// A GitOps file source that serves one file at one commit, as a repository would.
pub struct OneFile {
    pub content: std::sync::Mutex<(String, String)>,
}

#[async_trait]
impl ManifestSource for OneFile {
    async fn head(&self, _: &GitopsSettings) -> ias_core::Result<String> {
        Ok(self.content.lock().unwrap().1.clone())
    }

    async fn fetch(&self, _: &GitopsSettings) -> ias_core::Result<FetchedFile> {
        let (text, commit) = self.content.lock().unwrap().clone();
        Ok(FetchedFile {
            commit,
            content: text.into_bytes(),
        })
    }
}

/// Two organizations, `acme` and `globex`, each with an org admin and a
/// member, plus a system admin in `acme`; every user has a key.
pub struct World {
    pub store: Arc<dyn Store>,
    pub governor: Governor,
    pub operator: Admin,
    pub app: Router,
    pub source: Arc<OneFile>,
    pub root: Person,
    pub acme_admin: Person,
    pub acme_member: Person,
    pub globex_admin: Person,
    pub globex_member: Person,
}

/// A user and its key.
#[derive(Debug, Clone)]
pub struct Person {
    pub user: User,
    pub key: String,
}

pub const COMMIT: &str = "4f2a9c1e8b7d6a5f4e3d2c1b0a9f8e7d6c5b4a39";

impl World {
    pub async fn new() -> World {
        Self::with(|api| api).await
    }

    pub async fn with(configure: impl FnOnce(AdminApi) -> AdminApi) -> World {
        let store: Arc<dyn Store> = SqliteStore::open_in_memory().await.unwrap();
        let operator = Admin::new(store.clone(), Actor::local_operator(), Source::Library);
        operator.create_org("acme", 1_000_000, "UTC").await.unwrap();
        operator
            .create_org("globex", 1_000_000, "UTC")
            .await
            .unwrap();
        operator.allow_model("acme", "gpt-4o").await.unwrap();
        let governor = Governor::open(store.clone()).await.unwrap();
        let operator = operator.with_governor(governor.clone());
        let person = |org: &'static str, email: &'static str, role: Role| {
            let operator = operator.clone();
            async move {
                let user = operator.create_user(org, email, role, None).await.unwrap();
                let key = operator.create_key(email, None).await.unwrap();
                Person {
                    user,
                    key: key.secret.expose().to_owned(),
                }
            }
        };
        let root = person("acme", "root@acme.example", Role::SystemAdmin).await;
        let acme_admin = person("acme", "ada@acme.example", Role::OrgAdmin).await;
        let acme_member = person("acme", "max@acme.example", Role::Member).await;
        let globex_admin = person("globex", "gia@globex.example", Role::OrgAdmin).await;
        let globex_member = person("globex", "gus@globex.example", Role::Member).await;
        let source = Arc::new(OneFile {
            content: std::sync::Mutex::new((String::new(), COMMIT.to_owned())),
        });
        let reconciler =
            Reconciler::new(store.clone(), source.clone(), ReconcilerConfig::default())
                .with_governor(governor.clone());
        let api = configure(AdminApi::new(governor.clone()).with_gitops(reconciler));
        World {
            store,
            governor,
            operator,
            app: ias_admin_api::router(api),
            source,
            root,
            acme_admin,
            acme_member,
            globex_admin,
            globex_member,
        }
    }

    /// Calls the API as `who` (`None`: no key).
    pub async fn call(
        &self,
        who: Option<&Person>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(person) = who {
            request = request.header("authorization", format!("Bearer {}", person.key));
        }
        let request = match body {
            Some(body) => request
                .header("content-type", "application/json")
                .body(Body::from(body.to_string())),
            None => request.body(Body::empty()),
        };
        self.send(request.unwrap()).await
    }

    /// Sends a request as built.
    pub async fn send(&self, request: Request<Body>) -> Answer {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|err| {
                panic!("not JSON ({err}): {}", String::from_utf8_lossy(&bytes))
            })
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    /// The audit entries with `action`, of one organization or of all, newest first.
    pub async fn audit(&self, org: Option<&str>, action: &str) -> Vec<AuditEntry> {
        let filter = AuditFilter {
            action: Some(action.to_owned()),
            ..AuditFilter::default()
        };
        let page = self
            .operator
            .audit_log(org, &filter, &PageRequest::default())
            .await
            .unwrap();
        page.items
    }

    pub async fn get(&self, who: &Person, path: &str) -> Answer {
        self.call(Some(who), Method::GET, path, None).await
    }

    pub async fn post(&self, who: &Person, path: &str, body: Value) -> Answer {
        self.call(Some(who), Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, who: &Person, path: &str, body: Value) -> Answer {
        self.call(Some(who), Method::PUT, path, Some(body)).await
    }

    pub async fn patch(&self, who: &Person, path: &str, body: Value) -> Answer {
        self.call(Some(who), Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, who: &Person, path: &str) -> Answer {
        self.call(Some(who), Method::DELETE, path, None).await
    }
}
