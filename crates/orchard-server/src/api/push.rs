//! `/push-certificate`: the MDM push certificate (operators): its state, uploading it, and a CSR for it.

use axum::response::{IntoResponse, Response};
use axum::Json;
use orchard_core::push::{PushCertificateUpload, VendorIdentity};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::ApiError;
use super::extract::{AppState, JsonBody, Operator, State};
use super::reply::{Created, Reply};

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

#[utoipa::path(
    get,
    path = "/push-certificate",
    tag = "push",
    responses((status = 200, description = "The push certificate (operators)", body = PushCertificateAnswer))
)]
pub(super) async fn push_certificate_status(
    State(state): State<AppState>,
    // Only operators see the push certificate.
    _: Operator,
) -> Reply<Json<PushCertificateAnswer>> {
    Ok(Json(match state.orchard.push_certificate_status() {
        Some(s) => PushCertificateAnswer::Uploaded(s),
        None => PushCertificateAnswer::Missing(NoPushCertificate {
            topic: state.orchard.current_topic().to_string(),
            development_topic: true,
            message: "no push certificate uploaded: devices cannot be woken by push".into(),
        }),
    }))
}

/// A push certificate upload: PEM certificate and key, a base64 PKCS#12 with its password, or the PEM
/// certificate alone when it was issued for a CSR from `POST /push-certificate/csr` (the key is stored).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PushCertificateBody {
    certificate_pem: Option<String>,
    private_key_pem: Option<String>,
    pkcs12_base64: Option<String>,
    password: Option<String>,
    #[serde(default)]
    force: bool,
}

#[utoipa::path(
    put,
    path = "/push-certificate",
    tag = "push",
    request_body = PushCertificateBody,
    responses((status = 200, description = "Installed", body = orchard_core::push::PushCertificateStatus))
)]
pub(super) async fn upload_push_certificate(
    State(state): State<AppState>,
    Operator(operator): Operator,
    JsonBody(req): JsonBody<PushCertificateBody>,
) -> Reply {
    use base64::Engine;
    let upload = match (req.certificate_pem, req.private_key_pem, req.pkcs12_base64) {
        (Some(c), Some(k), None) => PushCertificateUpload::Pem {
            certificate: c.into_bytes(),
            private_key: k.into_bytes(),
        },
        (Some(c), None, None) => PushCertificateUpload::CertificateOnly {
            certificate: c.into_bytes(),
        },
        (None, None, Some(p)) => PushCertificateUpload::Pkcs12 {
            der: base64::engine::general_purpose::STANDARD
                .decode(p.trim())
                .map_err(|_| ApiError::invalid("pkcs12_base64 is not base64"))?,
            password: req.password.unwrap_or_default(),
        },
        _ => return Err(ApiError::invalid(
            "give certificate_pem (with private_key_pem, or alone when orchard made the csr), or \
                 pkcs12_base64 (and password)",
        )),
    };
    let status = state
        .orchard
        .upload_push_certificate(&operator, upload, req.force)
        .await?;
    Ok(Json(status).into_response())
}

/// `POST /push-certificate/csr`: optional MDM vendor identity (both fields or neither). No body at all means
/// no vendor: the answer is the CSR alone.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PushCsrBody {
    vendor_cert_chain_pem: Option<String>,
    vendor_key_pem: Option<String>,
}

#[utoipa::path(
    post,
    path = "/push-certificate/csr",
    tag = "push",
    request_body(content = Option<PushCsrBody>, description = "Optional MDM vendor identity; no body means no vendor"),
    responses((status = 201, description = "A new key and CSR", body = orchard_core::push::PushCsr))
)]
pub(super) async fn create_push_csr(
    State(state): State<AppState>,
    Operator(operator): Operator,
    body: Option<JsonBody<PushCsrBody>>,
) -> Reply<Response> {
    let req = body.map(|JsonBody(b)| b).unwrap_or_default();
    let vendor = match (req.vendor_cert_chain_pem, req.vendor_key_pem) {
        (Some(chain), Some(key)) => Some(VendorIdentity {
            cert_chain_pem: chain.into_bytes(),
            key_pem: orchard_types::Secret::new(key.into_bytes()),
        }),
        (None, None) => None,
        _ => {
            return Err(ApiError::invalid(
                "give vendor_cert_chain_pem and vendor_key_pem together, or neither",
            ))
        }
    };
    let csr = state.orchard.create_push_csr(&operator, vendor).await?;
    Ok(Created(csr).into_response())
}
