//! The admin API's OpenAPI document. Every `/api/v1` route is registered through utoipa-axum's
//! `OpenApiRouter` with `routes!` in `crate::api::routes`, so the router and the document come from the same
//! list; the document is built once at start-up, served at `GET /api/v1/openapi.json` and committed as
//! `docs/openapi.json` (a test regenerates it).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as OpenApiDoc, RefOr, Response as OaResponse};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::api::error::{ErrorBody, ErrorDetail};
use crate::state::AppState;

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
        .nest(crate::api::API_ROOT, crate::api::routes())
        .merge(crate::ops::routes())
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
