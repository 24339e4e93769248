//! What an API handler answers: JSON lists in the API's shapes, `201 Created`, CSV exports, and the note a
//! handler leaves for the audit trail.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use orchard_core::reporting::audit_actions::AuditNote;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ApiError;

/// What a handler answers: a response, or the API's error.
pub type Reply<T = Response> = Result<T, ApiError>;

/// A list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Items<T> {
    pub items: Vec<T>,
}

impl<T> Items<T> {
    pub fn of(items: impl IntoIterator<Item = T>) -> Json<Self> {
        Json(Items {
            items: items.into_iter().collect(),
        })
    }
}

/// A page of a longer list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Paged<T> {
    pub items: Vec<T>,
    /// Matching items in all pages.
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

/// A list with the number of all matching items.
#[derive(Debug, Serialize, ToSchema)]
pub struct Counted<T> {
    pub items: Vec<T>,
    pub total: i64,
}

/// `201 Created` with the new object as JSON.
pub struct Created<T>(pub T);

impl<T: Serialize> IntoResponse for Created<T> {
    fn into_response(self) -> Response {
        (StatusCode::CREATED, Json(self.0)).into_response()
    }
}

/// The response with a note for the audit trail attached (it reads the response extensions).
pub fn noted(note: AuditNote, response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
    response.extensions_mut().insert(note);
    response
}

/// How a report is answered: JSON for screens and scripts, CSV for spreadsheets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    Json,
    Csv,
}

impl ReportFormat {
    /// The `format` parameter, or `default` without one.
    pub fn parse(format: Option<&str>, default: ReportFormat) -> Result<Self, ApiError> {
        match format {
            None => Ok(default),
            Some("json") => Ok(ReportFormat::Json),
            Some("csv") => Ok(ReportFormat::Csv),
            Some(other) => Err(ApiError::invalid(format!(
                "format {other:?} is not json or csv"
            ))),
        }
    }
}

/// A CSV file to download.
pub fn csv_response(filename: &str, csv: String) -> Response {
    (
        [
            (
                http::header::CONTENT_TYPE,
                "text/csv; charset=utf-8".to_string(),
            ),
            (
                http::header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        csv,
    )
        .into_response()
}
