//! Clearing Activation Lock with an escrowed bypass code, so a locked iPad can be reused.
//!
//! An operator or the device tenant's admin asks; Orchard sends the device's identifiers and a bypass code to
//! Apple's activation service (`orchard_dep::activation_service`), authenticated as TLS client with the MDM
//! push certificate, and reports what Apple answered. Every attempt is logged (never the code); the API layer
//! adds the audit event.
//!
//! Apple asks servers to keep two codes, the one the device generated and one the server generated when it
//! locked the device itself, and to try the other when the first fails: nobody can tell which one is active.
//! Orchard escrows only the device's code today; [`BypassCodeSource::Server`] and the loop over
//! `escrowed_bypass_codes` are where a server-generated code joins later. The next code is tried only after a
//! refusal (4xx); when the service is unavailable or unreachable another code would fare no better.

use orchard_dep::activation_service::{
    ActivationAnswer, ActivationServiceClient, ActivationServiceConfig, ActivationServiceError,
    ClientIdentity, UnlockRequest, APPLE_DEVICE_ACTIVATION_URL,
};
use orchard_store::{Device, PushCertificateRecord};
use orchard_types::{DeviceId, Secret, TenantId};
use serde::Serialize;

use crate::access::principal::Principal;
use crate::access::roles::Ability;
use crate::{CoreError, Orchard};

/// Where Apple's activation service is, and the roots its TLS certificate must chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivationLockSettings {
    /// The full endpoint URL (Apple's by default; a local service in tests).
    pub url: String,
    /// DER roots trusted instead of the public web roots; empty: the public roots.
    pub roots_der: Vec<Vec<u8>>,
}

impl Default for ActivationLockSettings {
    fn default() -> Self {
        Self {
            url: APPLE_DEVICE_ACTIVATION_URL.to_owned(),
            roots_der: Vec::new(),
        }
    }
}

impl ActivationLockSettings {
    /// Another endpoint than Apple's, trusting the certificates of `roots_pem` (one or more) when given.
    pub fn with_url(url: &str, roots_pem: Option<&[u8]>) -> Result<Self, CoreError> {
        let roots_der = match roots_pem {
            None => Vec::new(),
            Some(pem) => match orchard_apns::TrustRoots::from_pem(pem)
                .map_err(|e| CoreError::Invalid(format!("activation lock roots: {e}")))?
            {
                orchard_apns::TrustRoots::Custom(ders) => ders,
                orchard_apns::TrustRoots::Public => Vec::new(),
            },
        };
        Ok(Self {
            url: url.to_owned(),
            roots_der,
        })
    }
}

/// Which escrowed code an attempt used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum BypassCodeSource {
    /// The code the device generated and reported to `ActivationLockBypassCode`.
    Device,
    /// A code Orchard generated when it locked the device through Apple (not escrowed yet).
    Server,
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AttemptResult {
    /// Apple answered 200: the lock is cleared.
    Cleared,
    /// Apple refused this request (4xx), e.g. the code is not the active one.
    Refused,
    /// Apple answered 429, a 5xx or another unexpected status.
    Unavailable,
    /// No answer: connection, TLS or timeout failure.
    Unreachable,
}

/// One request to Apple.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClearAttempt {
    pub code: BypassCodeSource,
    /// The request's `guid`, also in Orchard's log.
    pub guid: String,
    pub result: AttemptResult,
    /// Apple's HTTP status, when it answered.
    pub status: Option<u16>,
    /// Apple's reason or the transport error; absent on success.
    pub reason: Option<String>,
}

/// What a clear request achieved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClearOutcome {
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub device_id: DeviceId,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub tenant_id: TenantId,
    pub serial_number: String,
    pub cleared: bool,
    /// The code that cleared the lock.
    pub cleared_with: Option<BypassCodeSource>,
    /// In the order they were made.
    pub attempts: Vec<ClearAttempt>,
    pub attempted_at: String,
}

impl ClearOutcome {
    /// Why the lock was not cleared (from the last attempt), for an error message; `None` when it was.
    pub fn failure_reason(&self) -> Option<String> {
        if self.cleared {
            return None;
        }
        let last = self.attempts.last()?;
        let what = match last.result {
            AttemptResult::Cleared => return None,
            AttemptResult::Refused => "apple's activation service refused the bypass code",
            AttemptResult::Unavailable => {
                "apple's activation service could not answer; retry later"
            }
            AttemptResult::Unreachable => "apple's activation service could not be reached",
        };
        let status = last.status.map(|s| format!(" ({s})")).unwrap_or_default();
        let reason = last
            .reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        Some(format!("{what}{status}{reason}"))
    }
}

/// Identifiers Apple needs besides the serial: from the device record, else from the stored
/// `DeviceInformation` inventory.
#[derive(Debug, Default, PartialEq, Eq)]
struct Identifiers {
    serial: Option<String>,
    product_type: Option<String>,
    imei: Option<String>,
    meid: Option<String>,
}

/// Reads the `device_information` inventory section (`{"type":"DeviceInformation","data":{…Apple keys…}}`).
fn identifiers_from_inventory(json: &str) -> Identifiers {
    let value: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    let data = &value["data"];
    let text = |key: &str| {
        data[key]
            .as_str()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    Identifiers {
        serial: text("SerialNumber"),
        product_type: text("ProductName"),
        imei: text("IMEI"),
        meid: text("MEID"),
    }
}

fn non_empty(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

impl Orchard {
    /// Uses another activation service than Apple's (tests), or other roots.
    pub fn with_activation_lock_settings(mut self, settings: ActivationLockSettings) -> Self {
        self.activation_lock = settings;
        self
    }

    pub fn activation_lock_settings(&self) -> &ActivationLockSettings {
        &self.activation_lock
    }

    /// Asks Apple to clear the device's Activation Lock with its escrowed bypass code(s). Operators and the
    /// device tenant's admins only; another tenant's device is not found. A refusal or an unreachable service
    /// is not an error: the outcome says so (with Apple's status and reason), and the attempt is logged.
    pub async fn clear_activation_lock(
        &self,
        who: &Principal,
        device: DeviceId,
    ) -> Result<ClearOutcome, CoreError> {
        let device = self
            .store
            .get_device(who.scope(), device)
            .await?
            .ok_or(CoreError::NotFound)?;
        if !who.may(Ability::Administer, device.tenant_id) {
            return Err(CoreError::Forbidden(
                "only operators and the device tenant's admins may clear activation lock".into(),
            ));
        }
        let codes = self.escrowed_bypass_codes(&device).await?;
        if codes.is_empty() {
            return Err(CoreError::Conflict(
                "no activation lock bypass code is escrowed for this device: a supervised iPad reports one \
                 when it answers the ActivationLockBypassCode command (queued during zero-touch setup, or \
                 through POST /api/v1/devices/{id}/commands)"
                    .into(),
            ));
        }
        let now = self.clock.now();
        let record = self.store.active_push_certificate().await?.ok_or_else(|| {
            CoreError::Conflict(
                "no mdm push certificate is uploaded: apple's activation service identifies the mdm server \
                 by it; upload one (PUT /api/v1/push-certificate) first"
                    .into(),
            )
        })?;
        if record.not_after < now {
            return Err(CoreError::Conflict(format!(
                "the mdm push certificate expired at {}: renew it in the apple push certificates portal \
                 and upload it again",
                record.not_after.to_rfc3339()
            )));
        }
        let ids = self.device_identifiers(who, &device).await?;
        let serial = ids.serial.ok_or_else(|| {
            CoreError::Conflict(
                "the device's serial number is not known yet: wait for its DeviceInformation inventory".into(),
            )
        })?;
        let product_type = ids.product_type.ok_or_else(|| {
            CoreError::Conflict(
                "the device's product type (e.g. iPad13,18) is not known yet: wait for its DeviceInformation \
                 inventory"
                    .into(),
            )
        })?;
        let client = self.activation_service_client(&record)?;

        let mut attempts = Vec::new();
        let mut cleared_with = None;
        for (source, code) in codes {
            let guid = uuid::Uuid::new_v4().hyphenated().to_string().to_uppercase();
            let request = UnlockRequest {
                serial: serial.clone(),
                imei: ids.imei.clone(),
                meid: ids.meid.clone(),
                product_type: product_type.clone(),
                escrow_key: code,
                org_name: self.config.organization.clone(),
                guid: guid.clone(),
            };
            let attempt = |result, status, reason| ClearAttempt {
                code: source,
                guid: guid.clone(),
                result,
                status,
                reason,
            };
            let (attempt, try_next) = match client.clear_activation_lock(&request).await {
                Ok(ActivationAnswer::Cleared) => {
                    cleared_with = Some(source);
                    (attempt(AttemptResult::Cleared, Some(200), None), false)
                }
                Ok(ActivationAnswer::Refused { status, reason }) => (
                    attempt(AttemptResult::Refused, Some(status), Some(reason)),
                    true,
                ),
                Ok(ActivationAnswer::Unavailable { status, reason }) => (
                    attempt(AttemptResult::Unavailable, Some(status), Some(reason)),
                    false,
                ),
                Err(ActivationServiceError::Transport(reason)) => (
                    attempt(AttemptResult::Unreachable, None, Some(reason)),
                    false,
                ),
                Err(ActivationServiceError::InvalidRequest(reason)) => {
                    return Err(CoreError::Conflict(format!(
                        "cannot ask apple to clear activation lock: {reason}"
                    )))
                }
                Err(e) => return Err(CoreError::Internal(e.to_string())),
            };
            tracing::info!(
                device = %device.id,
                serial = %serial,
                actor = %who.actor(),
                code = ?attempt.code,
                guid = %attempt.guid,
                result = ?attempt.result,
                status = ?attempt.status,
                reason = attempt.reason.as_deref().unwrap_or(""),
                "activation lock clear attempt"
            );
            attempts.push(attempt);
            if !try_next {
                break;
            }
        }
        let outcome = ClearOutcome {
            device_id: device.id,
            tenant_id: device.tenant_id,
            serial_number: serial,
            cleared: cleared_with.is_some(),
            cleared_with,
            attempts,
            attempted_at: now.to_rfc3339(),
        };
        match outcome.failure_reason() {
            None => {
                tracing::info!(device = %device.id, actor = %who.actor(), "activation lock cleared")
            }
            Some(reason) => {
                tracing::warn!(device = %device.id, actor = %who.actor(), %reason, "activation lock not cleared")
            }
        }
        Ok(outcome)
    }

    /// The escrowed codes in the order to try them. Only the device's code exists today; a server-generated
    /// code joins this list when Orchard locks devices through Apple itself.
    async fn escrowed_bypass_codes(
        &self,
        device: &Device,
    ) -> Result<Vec<(BypassCodeSource, Secret<String>)>, CoreError> {
        let mut codes = Vec::new();
        if let Some((sealed, _at)) = self.store.bypass_code(device.id).await? {
            let opened = self.pki.data_key.open(
                &sealed,
                &crate::enrollment::ade::bypass_seal_context(device.id),
            )?;
            let code = String::from_utf8(opened.expose().clone())
                .map_err(|_| CoreError::Internal("bypass code is not text".into()))?;
            codes.push((BypassCodeSource::Device, Secret::new(code)));
        }
        Ok(codes)
    }

    async fn device_identifiers(
        &self,
        who: &Principal,
        device: &Device,
    ) -> Result<Identifiers, CoreError> {
        let inventory = self
            .store
            .get_inventory(who.scope(), device.id)
            .await?
            .into_iter()
            .find(|s| s.section == "device_information")
            .map(|s| identifiers_from_inventory(&s.json))
            .unwrap_or_default();
        Ok(Identifiers {
            serial: non_empty(&device.serial_number).or(inventory.serial),
            product_type: non_empty(&device.product_name).or(inventory.product_type),
            imei: inventory.imei,
            meid: inventory.meid,
        })
    }

    /// A client with the stored push certificate (its key unsealed) as TLS client identity.
    fn activation_service_client(
        &self,
        record: &PushCertificateRecord,
    ) -> Result<ActivationServiceClient, CoreError> {
        let key = self.pki.data_key.open(
            &record.key_encrypted,
            &crate::push::seal_context(&record.id),
        )?;
        let identity = ClientIdentity::from_pem(record.cert_pem.as_bytes(), key.expose())
            .map_err(|e| CoreError::Internal(format!("stored push certificate: {e}")))?;
        let config = ActivationServiceConfig {
            url: self.activation_lock.url.clone(),
            root_certificates_der: self.activation_lock.roots_der.clone(),
            ..ActivationServiceConfig::default()
        };
        ActivationServiceClient::new(&config, &identity)
            .map_err(|e| CoreError::Internal(format!("activation lock settings: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use orchard_types::UnixTime;

    use super::*;

    #[test]
    fn default_settings_are_apples_endpoint() {
        let settings = ActivationLockSettings::default();
        assert_eq!(
            settings.url,
            "https://deviceservices-external.apple.com/deviceservicesworkflow/deviceActivation"
        );
        assert!(settings.roots_der.is_empty());
    }

    #[test]
    fn settings_read_every_root_of_the_pem() {
        let now = UnixTime(1_700_000_000);
        let a = orchard_pki::CertificateAuthority::generate("a", now, 1).unwrap();
        let b = orchard_pki::CertificateAuthority::generate("b", now, 1).unwrap();
        let mut pem = a.cert_pem();
        pem.extend(b.cert_pem());
        let s = ActivationLockSettings::with_url("https://127.0.0.1:9/x", Some(&pem)).unwrap();
        assert_eq!(s.url, "https://127.0.0.1:9/x");
        assert_eq!(s.roots_der, vec![a.cert_der(), b.cert_der()]);
        assert!(matches!(
            ActivationLockSettings::with_url("https://x", Some(b"no pem here")),
            Err(CoreError::Invalid(_))
        ));
    }

    #[test]
    fn identifiers_come_from_the_device_information_section() {
        let json = r#"{"type":"DeviceInformation","data":{"SerialNumber":"F9FXK0AAQ1GC","ProductName":"iPad13,18","IMEI":"35 693803 564380 9","MEID":" "}}"#;
        assert_eq!(
            identifiers_from_inventory(json),
            Identifiers {
                serial: Some("F9FXK0AAQ1GC".into()),
                product_type: Some("iPad13,18".into()),
                imei: Some("35 693803 564380 9".into()),
                meid: None,
            }
        );
        assert_eq!(
            identifiers_from_inventory("not json"),
            Identifiers::default()
        );
    }

    #[test]
    fn failure_reasons_name_the_last_attempt() {
        let mut outcome = ClearOutcome {
            device_id: DeviceId::new(),
            tenant_id: TenantId::new(),
            serial_number: "S".into(),
            cleared: false,
            cleared_with: None,
            attempts: vec![ClearAttempt {
                code: BypassCodeSource::Device,
                guid: "G".into(),
                result: AttemptResult::Refused,
                status: Some(400),
                reason: Some("Invalid escrow key".into()),
            }],
            attempted_at: "2026-01-01T00:00:00Z".into(),
        };
        assert_eq!(
            outcome.failure_reason().as_deref(),
            Some("apple's activation service refused the bypass code (400): Invalid escrow key")
        );
        outcome.attempts[0].result = AttemptResult::Unreachable;
        outcome.attempts[0].status = None;
        outcome.attempts[0].reason = Some("connection refused".into());
        assert_eq!(
            outcome.failure_reason().as_deref(),
            Some("apple's activation service could not be reached: connection refused")
        );
        outcome.cleared = true;
        assert_eq!(outcome.failure_reason(), None);
    }
}
