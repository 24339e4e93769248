//! How the device surface answers an error: never 401 by accident (an Apple device removes its MDM profile on
//! 401), Apple's documented 403 for an unknown device, and no internals in any body: each status has one fixed
//! body, and the cause is logged.

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

/// The body of every answer with `status`: fixed words, the same for every cause, so an unauthenticated
/// caller learns nothing about our internals (OpenSSL reasons, certificate subjects, which check failed).
/// The cause goes to the log, with the request id.
fn uniform_body(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad request",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not found",
        StatusCode::GONE => "gone",
        StatusCode::CONFLICT => "conflict",
        _ => "internal error",
    }
}

impl IntoResponse for DeviceError {
    fn into_response(self) -> Response {
        let status = match &self.0 {
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
                    | DeviceRejection::Unsupported(_) => StatusCode::BAD_REQUEST,
                    DeviceRejection::UntrustedIdentity(_) | DeviceRejection::IdentityMismatch => {
                        StatusCode::FORBIDDEN
                    }
                }
            }
            CoreError::NotFound => StatusCode::NOT_FOUND,
            CoreError::Gone(m) => {
                tracing::info!(reason = %m, "device request for something no longer usable");
                StatusCode::GONE
            }
            CoreError::Invalid(m) | CoreError::ConfirmationRequired(m) => {
                tracing::warn!(reason = %m, "device request invalid");
                StatusCode::BAD_REQUEST
            }
            // A device never authenticates with a bearer token; these cannot come from the device surface,
            // but if one did it must not become a 401.
            CoreError::Unauthenticated | CoreError::Forbidden(_) => {
                tracing::warn!(error = %self.0, "device request refused");
                StatusCode::FORBIDDEN
            }
            CoreError::Conflict(m) => {
                tracing::warn!(reason = %m, "device request conflicts");
                StatusCode::CONFLICT
            }
            other => {
                tracing::error!(error = %other, "device request failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        (
            status,
            [(header::CONTENT_TYPE, "text/plain")],
            uniform_body(status),
        )
            .into_response()
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
    fn bodies_carry_no_internals() {
        let secret = "CN=victim subject, error:0480006C:PEM routines";
        for e in [
            CoreError::Device(DeviceRejection::BadSignature(secret.into())),
            CoreError::Device(DeviceRejection::UntrustedIdentity(secret.into())),
            CoreError::Device(DeviceRejection::MalformedBody(secret.into())),
            CoreError::Invalid(secret.into()),
            CoreError::Gone(secret.into()),
            CoreError::Conflict(secret.into()),
            CoreError::Internal(secret.into()),
        ] {
            let response = DeviceError(e).into_response();
            let status = response.status();
            let body =
                futures::executor::block_on(axum::body::to_bytes(response.into_body(), 1024))
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
            assert_eq!(body, uniform_body(status));
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
