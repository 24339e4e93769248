//! Clearing Activation Lock at Apple's device activation service with an escrowed bypass code.
//!
//! The MDM server POSTs a form (`application/x-www-form-urlencoded`) to
//! [`APPLE_DEVICE_ACTIVATION_URL`] over TLS, authenticated as a TLS client with its MDM push certificate (the
//! APNs identity). The form names the device (`serial`, `imei` / `meid` when it has them, `productType`), the
//! bypass code as `escrowKey`, the organisation (`orgName`) and an id of the request (`guid`). A 200 means the
//! lock was cleared. Apple tells servers to keep both the device-generated and a server-generated code and to
//! try the other one when the first fails: the caller decides which codes to try, one request per code.
//!
//! The URL and the trusted roots are configurable so tests reach the local activation service (feature `fake`)
//! over real TLS with a client certificate.

use std::fmt;
use std::time::Duration;

use openssl::pkey::PKey;
use openssl::x509::X509;
use orchard_types::Secret;
use reqwest::header::CONTENT_TYPE;
use reqwest::Url;

/// Apple's endpoint for clearing Activation Lock with a bypass code.
pub const APPLE_DEVICE_ACTIVATION_URL: &str =
    "https://deviceservices-external.apple.com/deviceservicesworkflow/deviceActivation";

/// Answers are only read for their reason; nothing legitimate is larger.
const MAX_ANSWER_BYTES: usize = 16 * 1024;
/// How much of an answer's text a reason keeps (it ends up in API answers and logs).
const MAX_REASON_CHARS: usize = 300;
/// Form values come from device records and inventory; anything longer is not a real identifier.
const MAX_FIELD_CHARS: usize = 256;

/// Why a request could not be made or got no answer. Apple's own refusals are not errors but
/// [`ActivationAnswer`]s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActivationServiceError {
    #[error("invalid activation service configuration: {0}")]
    Config(String),
    #[error("the push certificate cannot be used as tls client identity: {0}")]
    Identity(String),
    #[error("invalid activation lock request: {0}")]
    InvalidRequest(String),
    #[error("cannot reach apple's activation service: {0}")]
    Transport(String),
}

/// Where the activation service is and which roots its TLS certificate must chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivationServiceConfig {
    /// The full endpoint URL ([`APPLE_DEVICE_ACTIVATION_URL`] in production); `https` only, because the
    /// request carries a bypass code and authenticates with the push certificate.
    pub url: String,
    /// DER roots to trust instead of the public web roots (the local service's test root). Empty: public roots.
    pub root_certificates_der: Vec<Vec<u8>>,
    pub request_timeout: Duration,
    pub user_agent: String,
}

impl Default for ActivationServiceConfig {
    fn default() -> Self {
        Self {
            url: APPLE_DEVICE_ACTIVATION_URL.to_owned(),
            root_certificates_der: Vec::new(),
            request_timeout: Duration::from_secs(30),
            user_agent: concat!("orchard/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// The TLS client identity: the MDM push certificate (with any intermediates) and its private key.
pub struct ClientIdentity {
    /// The PKCS#8 key, leaf and intermediates, as one PEM (the form reqwest takes).
    pub(crate) bundle_pem: Secret<Vec<u8>>,
    leaf_der: Vec<u8>,
    subject: String,
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl ClientIdentity {
    /// From the certificate PEM (leaf first, intermediates after) and the private key PEM (PKCS#8, PKCS#1 or
    /// SEC1). The key must belong to the leaf.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, ActivationServiceError> {
        let identity_error = |what: &str, e: openssl::error::ErrorStack| {
            ActivationServiceError::Identity(format!("{what}: {e}"))
        };
        let chain =
            X509::stack_from_pem(cert_pem).map_err(|e| identity_error("certificate pem", e))?;
        let leaf = chain
            .first()
            .ok_or_else(|| ActivationServiceError::Identity("no certificate in the pem".into()))?;
        let key = PKey::private_key_from_pem(key_pem)
            .map_err(|e| identity_error("private key pem", e))?;
        let leaf_key = leaf
            .public_key()
            .map_err(|e| identity_error("certificate key", e))?;
        if !leaf_key.public_eq(&key) {
            return Err(ActivationServiceError::Identity(
                "the private key does not belong to the certificate".into(),
            ));
        }
        // Re-encoding normalises the key to PKCS#8 and drops anything else the files carried.
        let mut bundle = key
            .private_key_to_pem_pkcs8()
            .map_err(|e| identity_error("private key", e))?;
        for cert in &chain {
            bundle.extend(
                cert.to_pem()
                    .map_err(|e| identity_error("certificate", e))?,
            );
        }
        Ok(Self {
            bundle_pem: Secret::new(bundle),
            leaf_der: leaf
                .to_der()
                .map_err(|e| identity_error("certificate", e))?,
            subject: name_to_string(leaf.subject_name()),
        })
    }

    /// The leaf certificate (DER): what the service sees as the client certificate.
    pub fn certificate_der(&self) -> &[u8] {
        &self.leaf_der
    }

    /// The leaf's subject, e.g. `UID=com.apple.mgmt.External.…, CN=APSP:…, C=US`.
    pub fn subject(&self) -> &str {
        &self.subject
    }
}

/// A certificate subject as `KEY=value` pairs in certificate order, separated by `, `.
pub fn name_to_string(name: &openssl::x509::X509NameRef) -> String {
    name.entries()
        .map(|entry| {
            let key = entry.object().nid().short_name().unwrap_or("?");
            let value = entry.data().to_string().unwrap_or_default();
            format!("{key}={value}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One request to clear Activation Lock with one bypass code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnlockRequest {
    pub serial: String,
    /// Cellular iPads only.
    pub imei: Option<String>,
    pub meid: Option<String>,
    /// The model identifier, e.g. `iPad13,18`.
    pub product_type: String,
    /// The bypass code, sent as Apple's `escrowKey`.
    pub escrow_key: Secret<String>,
    pub org_name: String,
    /// An id of this request (`guid`), for matching it in logs on both sides.
    pub guid: String,
}

impl UnlockRequest {
    /// The form fields in the order they are sent. Optional identifiers the device does not have are left out.
    pub fn form_fields(&self) -> Result<Vec<(&'static str, String)>, ActivationServiceError> {
        let mut fields = vec![("serial", required("serial", &self.serial)?)];
        if let Some(imei) = optional("imei", self.imei.as_deref())? {
            fields.push(("imei", imei));
        }
        if let Some(meid) = optional("meid", self.meid.as_deref())? {
            fields.push(("meid", meid));
        }
        fields.push(("productType", required("productType", &self.product_type)?));
        fields.push((
            "escrowKey",
            required("escrowKey", self.escrow_key.expose())?,
        ));
        fields.push(("orgName", required("orgName", &self.org_name)?));
        fields.push(("guid", required("guid", &self.guid)?));
        Ok(fields)
    }
}

fn required(name: &str, value: &str) -> Result<String, ActivationServiceError> {
    optional(name, Some(value))?
        .ok_or_else(|| ActivationServiceError::InvalidRequest(format!("{name} is empty")))
}

/// Trimmed; `None` when absent or blank; refused when too long or holding control characters (never echoing
/// the value, which may be the bypass code).
fn optional(name: &str, value: Option<&str>) -> Result<Option<String>, ActivationServiceError> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if value.chars().count() > MAX_FIELD_CHARS {
        return Err(ActivationServiceError::InvalidRequest(format!(
            "{name} is longer than {MAX_FIELD_CHARS} characters"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(ActivationServiceError::InvalidRequest(format!(
            "{name} contains control characters"
        )));
    }
    Ok(Some(value.to_owned()))
}

/// What Apple answered one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActivationAnswer {
    /// 200: Activation Lock is cleared.
    Cleared,
    /// A 4xx: Apple did not accept this request (for instance a code that is not the active one). Trying the
    /// other bypass code is worthwhile.
    Refused { status: u16, reason: String },
    /// 429, a 5xx or any other non-success status: the service could not answer now; another code would fare
    /// no better, retry later.
    Unavailable { status: u16, reason: String },
}

impl ActivationAnswer {
    pub fn is_cleared(&self) -> bool {
        matches!(self, ActivationAnswer::Cleared)
    }

    fn from_status(status: reqwest::StatusCode, body: &[u8]) -> Self {
        if status == reqwest::StatusCode::OK {
            return ActivationAnswer::Cleared;
        }
        let reason = reason_text(status, body);
        let code = status.as_u16();
        if status.is_client_error() && status != reqwest::StatusCode::TOO_MANY_REQUESTS {
            ActivationAnswer::Refused {
                status: code,
                reason,
            }
        } else {
            ActivationAnswer::Unavailable {
                status: code,
                reason,
            }
        }
    }
}

/// A short, printable reason from an answer's body, or the status's own phrase when the body says nothing.
fn reason_text(status: reqwest::StatusCode, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut reason: String = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_REASON_CHARS)
        .collect();
    if reason.is_empty() {
        reason = status
            .canonical_reason()
            .unwrap_or("no reason given")
            .to_owned();
    }
    reason
}

/// The client. Holds one HTTP client with the push certificate as TLS client identity.
#[derive(Debug, Clone)]
pub struct ActivationServiceClient {
    http: reqwest::Client,
    url: Url,
}

impl ActivationServiceClient {
    pub fn new(
        config: &ActivationServiceConfig,
        identity: &ClientIdentity,
    ) -> Result<Self, ActivationServiceError> {
        let url = Url::parse(&config.url).map_err(|e| {
            ActivationServiceError::Config(format!("activation service url {:?}: {e}", config.url))
        })?;
        if url.scheme() != "https" {
            return Err(ActivationServiceError::Config(format!(
                "activation service url {:?} must be https",
                config.url
            )));
        }
        let tls_identity = reqwest::Identity::from_pem(identity.bundle_pem.expose())
            .map_err(|e| ActivationServiceError::Identity(error_chain(&e)))?;
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .identity(tls_identity)
            .user_agent(config.user_agent.clone())
            .timeout(config.request_timeout)
            .connect_timeout(Duration::from_secs(15))
            // The body carries a bypass code: it goes to the configured host or nowhere.
            .redirect(reqwest::redirect::Policy::none());
        if !config.root_certificates_der.is_empty() {
            builder = builder.tls_built_in_root_certs(false);
            for der in &config.root_certificates_der {
                let cert = reqwest::Certificate::from_der(der).map_err(|e| {
                    ActivationServiceError::Config(format!("root certificate: {e}"))
                })?;
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| {
            ActivationServiceError::Config(format!("http client: {}", error_chain(&e)))
        })?;
        Ok(Self { http, url })
    }

    pub fn url(&self) -> &str {
        self.url.as_str()
    }

    /// Sends one request. Not retried: a second attempt with the same code is the operator's decision, and
    /// trying the other code is the caller's (see the module documentation).
    pub async fn clear_activation_lock(
        &self,
        request: &UnlockRequest,
    ) -> Result<ActivationAnswer, ActivationServiceError> {
        let fields = request.form_fields()?;
        let response = self
            .http
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .form(&fields)
            .send()
            .await
            .map_err(|e| ActivationServiceError::Transport(error_chain(&e)))?;
        let status = response.status();
        let body = read_bounded(response).await?;
        Ok(ActivationAnswer::from_status(status, &body))
    }
}

/// The answer's body, cut at [`MAX_ANSWER_BYTES`] (the rest is not needed for a reason).
async fn read_bounded(mut response: reqwest::Response) -> Result<Vec<u8>, ActivationServiceError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| ActivationServiceError::Transport(error_chain(&e)))?
    {
        let room = MAX_ANSWER_BYTES.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_ANSWER_BYTES {
            break;
        }
    }
    Ok(body)
}

/// An error with its causes (reqwest's own message is only the outermost layer; the TLS reason is inside).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> UnlockRequest {
        UnlockRequest {
            serial: "F9FXK0AAQ1GC".into(),
            imei: None,
            meid: Some(" A0000000000001 ".into()),
            product_type: "iPad13,18".into(),
            escrow_key: Secret::new("3UM43-PUYVY-QYD1-UVCC-HEHJ-FKA4".into()),
            org_name: "Example University".into(),
            guid: "5A0C6F1E-0000-4000-8000-000000000001".into(),
        }
    }

    #[test]
    fn form_fields_follow_apple_names_and_skip_missing_identifiers() {
        let fields = request().form_fields().unwrap();
        let names: Vec<&str> = fields.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            names,
            [
                "serial",
                "meid",
                "productType",
                "escrowKey",
                "orgName",
                "guid"
            ]
        );
        assert!(fields.contains(&("meid", "A0000000000001".to_owned())));
        assert!(fields.contains(&("escrowKey", "3UM43-PUYVY-QYD1-UVCC-HEHJ-FKA4".to_owned())));
    }

    #[test]
    fn bad_fields_are_refused_without_echoing_them() {
        let mut r = request();
        r.serial = "  ".into();
        assert_eq!(
            r.form_fields(),
            Err(ActivationServiceError::InvalidRequest(
                "serial is empty".into()
            ))
        );
        let mut r = request();
        r.escrow_key = Secret::new("SECRET\nCODE".into());
        let e = r.form_fields().unwrap_err().to_string();
        assert!(e.contains("escrowKey contains control characters"), "{e}");
        assert!(!e.contains("SECRET"), "{e}");
        let mut r = request();
        r.product_type = "x".repeat(MAX_FIELD_CHARS + 1);
        assert!(matches!(
            r.form_fields(),
            Err(ActivationServiceError::InvalidRequest(_))
        ));
    }

    #[test]
    fn answers_are_classified() {
        use reqwest::StatusCode;
        assert_eq!(
            ActivationAnswer::from_status(StatusCode::OK, b""),
            ActivationAnswer::Cleared
        );
        assert_eq!(
            ActivationAnswer::from_status(StatusCode::BAD_REQUEST, b"  invalid\r\n escrow key "),
            ActivationAnswer::Refused {
                status: 400,
                reason: "invalid escrow key".into()
            }
        );
        assert_eq!(
            ActivationAnswer::from_status(StatusCode::TOO_MANY_REQUESTS, b""),
            ActivationAnswer::Unavailable {
                status: 429,
                reason: "Too Many Requests".into()
            }
        );
        assert!(matches!(
            ActivationAnswer::from_status(StatusCode::BAD_GATEWAY, &[b'x'; 5000]),
            ActivationAnswer::Unavailable { status: 502, reason } if reason.len() == MAX_REASON_CHARS
        ));
        // A redirect is not followed and is not success either.
        assert!(matches!(
            ActivationAnswer::from_status(StatusCode::FOUND, b""),
            ActivationAnswer::Unavailable { status: 302, .. }
        ));
    }

    #[test]
    fn default_config_is_apples_endpoint() {
        let config = ActivationServiceConfig::default();
        assert_eq!(config.url, APPLE_DEVICE_ACTIVATION_URL);
        assert!(config.root_certificates_der.is_empty());
    }

    #[test]
    fn identity_needs_a_matching_key() {
        let now = orchard_types::UnixTime(1_700_000_000);
        let a = orchard_pki::Identity::generate_self_signed_rsa("a", now, 1).unwrap();
        let b = orchard_pki::Identity::generate_self_signed_rsa("b", now, 1).unwrap();
        let ok = ClientIdentity::from_pem(&a.cert_pem(), a.key_pem().expose()).unwrap();
        assert_eq!(ok.certificate_der(), a.cert_der().as_slice());
        assert!(ok.subject().contains("CN=a"), "{}", ok.subject());
        assert!(!format!("{ok:?}").contains("PRIVATE"));
        assert_eq!(
            ClientIdentity::from_pem(&a.cert_pem(), b.key_pem().expose()).unwrap_err(),
            ActivationServiceError::Identity(
                "the private key does not belong to the certificate".into()
            )
        );
        assert!(matches!(
            ClientIdentity::from_pem(b"not pem", a.key_pem().expose()),
            Err(ActivationServiceError::Identity(_))
        ));
    }

    #[test]
    fn only_https_urls_are_accepted() {
        let now = orchard_types::UnixTime(1_700_000_000);
        let a = orchard_pki::Identity::generate_self_signed_rsa("a", now, 1).unwrap();
        let identity = ClientIdentity::from_pem(&a.cert_pem(), a.key_pem().expose()).unwrap();
        for url in ["http://127.0.0.1:9/x", "not a url"] {
            let config = ActivationServiceConfig {
                url: url.into(),
                ..ActivationServiceConfig::default()
            };
            assert!(
                matches!(
                    ActivationServiceClient::new(&config, &identity),
                    Err(ActivationServiceError::Config(_))
                ),
                "{url}"
            );
        }
    }
}
