//! The committed OpenAPI document matches the routers, and every `/api/v1` route is documented.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn committed_openapi_document_is_current() {
    let generated = orchard_server::openapi::document_json();
    let path = repo_root().join("docs/openapi.json");
    if std::env::var_os("ORCHARD_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        let first_difference = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .map(|i| i + 1)
            .unwrap_or_else(|| committed.lines().count().min(generated.lines().count()) + 1);
        panic!(
            "docs/openapi.json is out of date with the API (first difference at line {first_difference}).\n\
             Regenerate it with:\n    ORCHARD_UPDATE_OPENAPI=1 cargo test -p orchard-server --test openapi\n\
             and commit the result."
        );
    }
}

/// Routes registered with a plain `.route(…)` (or a plain axum `Router` converted into the API router)
/// bypass the document. The API's source files (`src/api/`, and `src/auth/`, whose only plain routes are the
/// browser sign-in under `/auth/`) may only register routes through `routes!`.
#[test]
fn every_api_route_is_registered_through_the_document() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut undocumented = Vec::new();
    let mut files = 0;
    for folder in ["api", "auth"] {
        for entry in std::fs::read_dir(src.join(folder)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            files += 1;
            let name = format!("{folder}/{}", path.file_name().unwrap().to_string_lossy());
            let text = std::fs::read_to_string(&path).unwrap();
            // Unit tests at the end of a file may build routers of their own.
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            for (at, _) in code.match_indices(".route(") {
                let rest = &code[at..];
                let literal = rest.split('"').nth(1).unwrap_or("?");
                // `/auth/*` is the browser sign-in, outside `/api/v1`.
                if folder == "auth" && literal.starts_with("/auth/") {
                    continue;
                }
                undocumented.push(format!("{name}: .route(\"{literal}\", …)"));
            }
            for (at, _) in code.match_indices("OpenApiRouter::from(") {
                let call: String = code[at..].chars().take_while(|c| *c != ')').collect();
                undocumented.push(format!("{name}: {call})"));
            }
        }
    }
    assert!(files >= 10, "only {files} API source files found");
    assert!(
        undocumented.is_empty(),
        "routes registered without OpenAPI documentation (annotate the handler with #[utoipa::path(…)] and \
         register it with `.routes(routes!(handler))` on an OpenApiRouter):\n  {}",
        undocumented.join("\n  ")
    );
}

#[test]
fn every_operation_has_a_success_response_errors_and_bearer_security() {
    let doc: serde_json::Value =
        serde_json::from_str(&orchard_server::openapi::document_json()).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.contains_key("/api/v1/openapi.json"));
    assert!(paths.contains_key("/api/v1/devices/{id}/commands"));
    let mut operations = 0;
    assert!(paths.contains_key("/healthz") && paths.contains_key("/metrics"));
    for (path, item) in paths.iter().filter(|(p, _)| p.starts_with("/api/v1/")) {
        for (method, op) in item.as_object().unwrap() {
            operations += 1;
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{method} {path}: no success response"
            );
            for status in ["400", "401", "403", "404", "500"] {
                assert_eq!(
                    responses[status]["$ref"], "#/components/responses/Error",
                    "{method} {path} {status}"
                );
            }
            // Path parameters are declared.
            for segment in path.split('/').filter(|s| s.starts_with('{')) {
                let name = segment.trim_matches(|c| c == '{' || c == '}');
                let declared = op["parameters"]
                    .as_array()
                    .map(|ps| ps.iter().any(|p| p["name"] == name && p["in"] == "path"))
                    .unwrap_or(false);
                assert!(declared, "{method} {path}: path parameter {name}");
            }
        }
    }
    assert!(operations >= 40, "only {operations} operations documented");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(doc["security"][0]["bearer"], serde_json::json!([]));
    // The document itself needs no token.
    assert_eq!(
        doc["paths"]["/api/v1/openapi.json"]["get"]["security"],
        serde_json::json!([{}])
    );
}
