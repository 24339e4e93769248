//! What an API handler takes: the caller, path ids, query strings and JSON bodies, each answering the API's
//! error shape when it does not fit (axum's own rejections are plain text).

use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequest, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use orchard_store::Page;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::error::ApiError;

pub use crate::auth::{Authenticated, Operator, Overseer, TokenAdmin};
pub use crate::state::AppState;
pub use axum::extract::State;

/// Path parameters, typed (`Id<DeviceId>`, `Id<(TenantId, EnrollmentLinkId)>`). A malformed id is answered like
/// a missing one, 404: it names nothing.
pub struct Id<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Id<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| Id(v))
            .map_err(|_| orchard_core::CoreError::NotFound.into())
    }
}

/// A query string; a malformed one answers 400 `invalid_request`.
pub struct QueryString<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryString<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| QueryString(v))
            .map_err(|e| ApiError::invalid(e.body_text()))
    }
}

/// A JSON body; a malformed one answers 400 `invalid_json`. As `Option<JsonBody<T>>`, no body at all is None.
pub struct JsonBody<T>(pub T);

fn invalid_json(e: axum::extract::rejection::JsonRejection) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", e.body_text())
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        <Json<T> as FromRequest<S>>::from_request(req, state)
            .await
            .map(|Json(v)| JsonBody(v))
            .map_err(invalid_json)
    }
}

impl<T: DeserializeOwned, S: Send + Sync> OptionalFromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, ApiError> {
        <Json<T> as OptionalFromRequest<S>>::from_request(req, state)
            .await
            .map(|v| v.map(|Json(v)| JsonBody(v)))
            .map_err(invalid_json)
    }
}

/// `limit` and `offset` of a list: 100 items unless asked, at most 1,000.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

impl PageQuery {
    pub fn page(&self) -> Page {
        Page {
            limit: self.limit.unwrap_or(100).clamp(1, 1000),
            offset: self.offset.unwrap_or(0).max(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_bounded() {
        let page = PageQuery::default().page();
        assert_eq!((page.limit, page.offset), (100, 0));
        let page = PageQuery {
            limit: Some(5000),
            offset: Some(-3),
        }
        .page();
        assert_eq!((page.limit, page.offset), (1000, 0));
        let page = PageQuery {
            limit: Some(0),
            offset: Some(7),
        }
        .page();
        assert_eq!((page.limit, page.offset), (1, 7));
    }
}
