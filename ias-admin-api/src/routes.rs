//! The routes under `/api/v1`, their OpenAPI document, and the shared query types.

use std::sync::Arc;

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use ias_core::PageRequest;
use ias_core::page::DEFAULT_PAGE_LIMIT;
use serde::Deserialize;
use utoipa::openapi::{OpenApi as Document, RefOr};
use utoipa::{IntoParams, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ErrorBody, ErrorDetail};
use crate::state::AdminApi;

pub mod audit;
pub mod gitops;
pub mod keys;
pub mod limits;
pub mod models;
pub mod orgs;
pub mod usage;
pub mod users;

/// Where the API is mounted.
pub const PREFIX: &str = "/api/v1";

/// Which page of a list: up to `limit` items after the cursor `after`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Items per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// The `next_after` of the previous page; absent for the first page.
    pub after: Option<String>,
}

impl PageQuery {
    /// The page asked for; the limit is checked by the operation (400 `invalid_input`).
    pub fn request(self) -> PageRequest {
        page_request(self.limit, self.after)
    }
}

/// A page request from a query's `limit` and `after`.
pub(crate) fn page_request(limit: Option<u32>, after: Option<String>) -> PageRequest {
    PageRequest::new(limit.unwrap_or(DEFAULT_PAGE_LIMIT), after)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ias admin API",
        description = "Organizations, users, keys, allowed models, rate limits, usage, audit \
                       and GitOps of an ias deployment. Authenticate with an ias key as \
                       `Authorization: Bearer <key>`; what a caller may do follows its role.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    security(("bearer" = [])),
    tags(
        (name = "organizations", description = "Organizations and the caller"),
        (name = "users", description = "Users, their monthly limits and passwords"),
        (name = "keys", description = "API keys; a secret is shown once"),
        (name = "models", description = "An organization's allowed models"),
        (name = "limits", description = "Requests and tokens per minute"),
        (name = "usage", description = "Usage by organization, user, model and day; forecasts"),
        (name = "audit", description = "The append-only audit log"),
        (name = "gitops", description = "An organization declared in a Git repository"),
    ),
)]
struct ApiDoc;

/// What every operation shares: the bearer scheme and the error answers.
struct Conventions;

/// The error statuses any operation may answer, each with [`ErrorBody`].
const ERROR_STATUSES: [(&str, &str); 11] = [
    ("400", "bad input: `error.details.field` names the field"),
    ("401", "no key, or a key unknown, expired or revoked"),
    ("403", "the caller's role may not do this here"),
    ("404", "no such organization, user, key or endpoint"),
    ("405", "the path does not accept this method"),
    (
        "409",
        "a conflict; `gitops_managed` names the repository and commit",
    ),
    ("413", "the body is too large"),
    ("415", "the body is not `application/json`"),
    (
        "422",
        "a GitOps file with problems, each in `error.details.errors`",
    ),
    (
        "501",
        "the server runs without what this needs (`gitops_unavailable`)",
    ),
    (
        "503",
        "the store is unavailable; retry after `Retry-After` seconds",
    ),
];

impl utoipa::Modify for Conventions {
    fn modify(&self, doc: &mut Document) {
        use utoipa::openapi::ContentBuilder;
        use utoipa::openapi::ResponseBuilder;
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

        let components = doc.components.get_or_insert_with(Default::default);
        let bearer = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some("an ias API key"))
            .build();
        components.add_security_scheme("bearer", SecurityScheme::Http(bearer));
        let schema = utoipa::openapi::Ref::from_schema_name("ErrorBody");
        components.schemas.insert(
            "ErrorBody".to_owned(),
            <ErrorBody as utoipa::PartialSchema>::schema(),
        );
        components.schemas.insert(
            "ErrorDetail".to_owned(),
            <ErrorDetail as utoipa::PartialSchema>::schema(),
        );
        for (status, description) in ERROR_STATUSES {
            let response = ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(schema.clone())).build(),
                )
                .build();
            components
                .responses
                .insert(format!("Error{status}"), RefOr::T(response));
        }
        for item in doc.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                for (status, _) in ERROR_STATUSES {
                    let name = format!("Error{status}");
                    operation
                        .responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| {
                            RefOr::Ref(utoipa::openapi::Ref::from_response_name(name))
                        });
                }
            }
        }
    }
}

/// The admin API's routes under `/api/v1`, with `GET /api/v1/openapi.json`.
///
/// Merge it into a gateway's router; it needs no other layer and sets no
/// fallback. Unknown paths under `/api/v1` answer 404 and wrong methods
/// 405, both in the API's error shape.
pub fn router(api: AdminApi) -> Router {
    let (routes, document) = parts();
    let document = Arc::new(document);
    routes
        .route(
            &format!("{PREFIX}/openapi.json"),
            get(move || serve_document(document.clone())),
        )
        // Not a fallback, so the router merges into a gateway's that has one.
        .route(PREFIX, any(no_route))
        .route(&format!("{PREFIX}/{{*rest}}"), any(no_route))
        .method_not_allowed_fallback(wrong_method)
        .with_state(api)
}

/// The admin API's OpenAPI 3.1 document, as served at `/api/v1/openapi.json`.
pub fn openapi() -> Document {
    parts().1
}

/// The routes and their document, with what every operation shares.
fn parts() -> (axum::Router<AdminApi>, Document) {
    let (routes, mut document) = openapi_router().split_for_parts();
    utoipa::Modify::modify(&Conventions, &mut document);
    (routes, document)
}

fn openapi_router() -> OpenApiRouter<AdminApi> {
    let api = OpenApiRouter::<AdminApi>::new()
        .routes(routes!(orgs::me))
        .routes(routes!(orgs::list, orgs::create))
        .routes(routes!(orgs::get, orgs::update))
        .routes(routes!(users::list, users::create))
        .routes(routes!(users::get, users::update))
        .routes(routes!(users::reset_password))
        .routes(routes!(keys::list, keys::create))
        .routes(routes!(keys::revoke))
        .routes(routes!(models::list, models::allow, models::deny))
        .routes(routes!(limits::get, limits::set))
        .routes(routes!(usage::report))
        .routes(routes!(usage::daily))
        .routes(routes!(usage::forecast))
        .routes(routes!(audit::list))
        .routes(routes!(audit::verify))
        .routes(routes!(gitops::list))
        .routes(routes!(gitops::status, gitops::enable, gitops::disable))
        .routes(routes!(gitops::suspend))
        .routes(routes!(gitops::resume))
        .routes(routes!(gitops::sync))
        .routes(routes!(gitops::drift))
        .routes(routes!(gitops::plan));
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    OpenApiRouter::with_openapi(doc).nest(PREFIX, api)
}

async fn serve_document(document: Arc<Document>) -> Response {
    match serde_json::to_vec(&*document) {
        Ok(bytes) => {
            let mut response = bytes.into_response();
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        Err(err) => ApiError::from(ias_core::Error::Store {
            backend: "openapi",
            message: err.to_string(),
        })
        .into_response(),
    }
}

async fn no_route(uri: Uri) -> ApiError {
    ApiError::no_route(uri.path())
}

async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError::wrong_method(method.as_str(), uri.path())
}
