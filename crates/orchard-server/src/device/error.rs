//! How the device surface answers an error: never 401 by accident (an Apple device removes its MDM profile on
//! 401), Apple's documented 403 for an unknown device, and no internals in a 5xx body.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use orchard_core::{CoreError, DeviceRejection};

/// An error on the device surface, already mapped to its answer.
#[derive(Debug)]
pub struct DeviceError(pub CoreError);

impl From<CoreError> for DeviceError {
    fn from(e: CoreError) -> Self {
        DeviceError(e)
    }
}

const UNRECOGNIZED_DEVICE_BODY: &str = r#"{"code":"com.apple.unrecognized.device","description":"this device is not enrolled with this server"}"#;

impl IntoResponse for DeviceError {
    fn into_response(self) -> Response {
        let (status, body): (StatusCode, String) = match &self.0 {
            CoreError::Device(r) => {
                tracing::warn!(reason = %r.reason(), "device request rejected");
                match r {
                    DeviceRejection::UnrecognizedDevice => {
                        return (
                            StatusCode::FORBIDDEN,
                            [(header::CONTENT_TYPE, "application/json")],
                            UNRECOGNIZED_DEVICE_BODY,
                        )
                            .into_response();
                    }
                    DeviceRejection::MalformedBody(_)
                    | DeviceRejection::BadSignature(_)
                    | DeviceRejection::WrongTopic
                    | DeviceRejection::Unsupported(_) => (StatusCode::BAD_REQUEST, r.reason()),
                    DeviceRejection::UntrustedIdentity(_) | DeviceRejection::IdentityMismatch => {
                        (StatusCode::FORBIDDEN, r.reason())
                    }
                }
            }
            CoreError::NotFound => (StatusCode::NOT_FOUND, "not found".into()),
            CoreError::Gone(m) => (StatusCode::GONE, m.clone()),
            CoreError::Invalid(m) => {
                tracing::warn!(reason = %m, "device request invalid");
                (StatusCode::BAD_REQUEST, m.clone())
            }
            // A device never authenticates with a bearer token; these cannot come from the device surface,
            // but if one did it must not become a 401.
            CoreError::Unauthenticated | CoreError::Forbidden(_) => {
                (StatusCode::FORBIDDEN, "forbidden".into())
            }
            CoreError::Conflict(m) => (StatusCode::CONFLICT, m.clone()),
            CoreError::ConfirmationRequired(m) => (StatusCode::BAD_REQUEST, m.clone()),
            other => {
                tracing::error!(error = %other, "device request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
            }
        };
        (status, [(header::CONTENT_TYPE, "text/plain")], body).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of(e: CoreError) -> StatusCode {
        DeviceError(e).into_response().status()
    }

    #[test]
    fn no_device_error_is_ever_401() {
        let all = vec![
            CoreError::Device(DeviceRejection::MalformedBody("x".into())),
            CoreError::Device(DeviceRejection::BadSignature("x".into())),
            CoreError::Device(DeviceRejection::UntrustedIdentity("x".into())),
            CoreError::Device(DeviceRejection::IdentityMismatch),
            CoreError::Device(DeviceRejection::WrongTopic),
            CoreError::Device(DeviceRejection::UnrecognizedDevice),
            CoreError::Device(DeviceRejection::Unsupported("x".into())),
            CoreError::NotFound,
            CoreError::Gone("x".into()),
            CoreError::Invalid("x".into()),
            CoreError::Conflict("x".into()),
            CoreError::ConfirmationRequired("x".into()),
            CoreError::Unauthenticated,
            CoreError::Forbidden("x".into()),
            CoreError::Internal("secret detail".into()),
        ];
        for e in all {
            assert_ne!(status_of(e), StatusCode::UNAUTHORIZED);
        }
    }

    #[test]
    fn rejections_map_to_documented_statuses() {
        assert_eq!(
            status_of(CoreError::Device(DeviceRejection::UnrecognizedDevice)),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            status_of(CoreError::Device(DeviceRejection::MalformedBody(
                "x".into()
            ))),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status_of(CoreError::Device(DeviceRejection::IdentityMismatch)),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            status_of(CoreError::Internal("x".into())),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
