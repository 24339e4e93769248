//! The admin API's OpenAPI document. Every `/api/v1` route is registered through utoipa-axum's
//! `OpenApiRouter` with `routes!`, so the router and the document come from the same list; the document is
//! served at `GET /api/v1/openapi.json` and committed as `docs/openapi.json` (a test regenerates it).

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as OpenApiDoc, RefOr, Response as OaResponse};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use crate::AppState;

/// The error body every 4xx/5xx of the API carries.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable code, e.g. `not_found`, `invalid_request`, `forbidden`.
    pub code: String,
    /// For people; may change between versions.
    pub message: String,
    /// The request id (also in the `x-request-id` response header) to quote to the operators.
    pub request_id: String,
}

/// The statuses every operation may answer with the error body: bad input, no or bad credential, not
/// allowed, not found (including another tenant's ids), conflict, and a server fault.
const ERROR_STATUSES: &[(&str, &str)] = &[
    (
        "400",
        "Invalid request: malformed JSON, a bad field or parameter, or a missing confirmation",
    ),
    ("401", "No valid bearer token"),
    ("403", "The caller's role does not allow this"),
    ("404", "Not found (or not visible to the caller)"),
    ("409", "Conflict with the current state"),
    ("500", "Server fault; quote the request id"),
];

pub const BEARER_SCHEME: &str = "bearer";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Orchard admin API",
        description = "Orchard's admin API: tenants, tokens, devices and commands, zero-touch enrollment, \
                       audit log and usage report. Authenticate with `Authorization: Bearer <token>` \
                       (`orchard token create`). Errors answer `{\"error\": {\"code\", \"message\", \
                       \"request_id\"}}`.",
        license(name = "AGPL-3.0-or-later"),
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&SecurityAndErrors),
    security(("bearer" = [])),
)]
struct ApiDoc;

/// Adds the bearer scheme, the shared `Error` response, and references it from every operation for the
/// statuses it does not describe itself.
struct SecurityAndErrors;

impl Modify for SecurityAndErrors {
    fn modify(&self, doc: &mut OpenApiDoc) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER_SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An Orchard API token (`orc_…`)"))
                    .build(),
            ),
        );
        components.responses.insert(
            "Error".to_string(),
            RefOr::T(
                utoipa::openapi::ResponseBuilder::new()
                    .description("An error with a stable code and the request id")
                    .content(
                        "application/json",
                        utoipa::openapi::ContentBuilder::new()
                            .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                            .build(),
                    )
                    .build(),
            ),
        );
    }
}

/// Adds the shared error responses to every API operation (after the paths are merged in).
fn add_error_responses(doc: &mut OpenApiDoc) {
    for (path, item) in doc.paths.paths.iter_mut() {
        if !path.starts_with("/api/v1/") {
            continue;
        }
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            for (status, description) in ERROR_STATUSES {
                op.responses
                    .responses
                    .entry((*status).to_string())
                    .or_insert_with(|| {
                        let mut r: RefOr<OaResponse> =
                            RefOr::Ref(utoipa::openapi::Ref::from_response_name("Error"));
                        if let RefOr::Ref(ref mut reference) = r {
                            reference.description = (*description).to_string();
                        }
                        r
                    });
            }
        }
    }
}

/// The whole document: `/api/v1` (and `/healthz`, `/metrics`) from the same routers the server runs.
pub fn document() -> OpenApiDoc {
    let (_, mut doc) = OpenApiRouter::<AppState>::with_openapi(ApiDoc::openapi())
        .nest("/api/v1", crate::api::routes())
        .merge(crate::operations_routes())
        .split_for_parts();
    add_error_responses(&mut doc);
    doc
}

/// The document as served and committed: pretty JSON with a final newline.
pub fn document_json() -> String {
    let mut s = doc_to_string(&document());
    s.push('\n');
    s
}

fn doc_to_string(doc: &OpenApiDoc) -> String {
    // Serialising plain data structures cannot fail; an empty document would still be valid JSON.
    serde_json::to_string_pretty(doc).unwrap_or_else(|_| "{}".to_string())
}

/// `GET /api/v1/openapi.json`: this document (no authentication; it carries no data).
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    security(()),
    responses((status = 200, description = "This OpenAPI document", content_type = "application/json", body = Object))
)]
pub(crate) async fn serve_openapi() -> Response {
    static DOC: OnceLock<String> = OnceLock::new();
    let body = DOC.get_or_init(document_json).clone();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

// Shapes of answers the handlers build inline; for the document only.

/// A list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Items<T: ToSchema> {
    pub items: Vec<T>,
}

/// A page of a longer list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Paged<T: ToSchema> {
    pub items: Vec<T>,
    /// Matching items in all pages.
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

/// A list with the number of all matching items.
#[derive(Debug, Serialize, ToSchema)]
pub struct Counted<T: ToSchema> {
    pub items: Vec<T>,
    pub total: i64,
}

/// A tenant as created and listed.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantSummary {
    pub id: String,
    pub name: String,
    pub code: String,
    pub created_at: String,
}

/// How many channels (device and users) of the device were asked to check in.
#[derive(Debug, Serialize, ToSchema)]
pub struct PushQueued {
    pub channels: u64,
}

/// No push certificate uploaded yet.
#[derive(Debug, Serialize, ToSchema)]
pub struct NoPushCertificate {
    pub topic: String,
    pub development_topic: bool,
    pub message: String,
}

/// The push certificate's state, or what is missing.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum PushCertificateAnswer {
    Uploaded(orchard_core::push::PushCertificateStatus),
    Missing(NoPushCertificate),
}

/// Apple refused or could not be asked to clear the Activation Lock: the error and what was tried.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActivationLockNotCleared {
    pub error: ErrorDetail,
    pub outcome: orchard_core::device::activation_lock::ClearOutcome,
}
