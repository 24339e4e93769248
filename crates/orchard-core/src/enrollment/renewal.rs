//! Identity renewal: before a device's identity certificate runs out, Orchard installs a fresh enrollment
//! profile over the existing channel — the same MDM payload identifier (so iOS replaces its MDM profile in
//! place) with a new SCEP payload whose one-time challenge is bound to that device and tenant. The first request
//! the device signs with the new identity (Authenticate after the profile reinstall, or any other) moves the
//! binding in one unit of work; the old identity stays accepted for a grace period, then is refused. SCEP
//! RenewalReq identities move the binding the same way.
//!
//! The same machinery mints the enrollment profile of EraseDevice's Return to Service (a device-bound
//! challenge of purpose `return_to_service`, after which the device enrolls anew).

use orchard_pki::signature::VerifiedSigner;
use orchard_protocol::commands::Command;
use orchard_store::{
    Device, DeviceGrantPurpose, IdentityGrant, IssuedCertificate, RenewalCandidate, ScepChallenge,
};
use orchard_types::{
    ChannelId, CommandUuid, DeviceId, EnrollmentLinkId, QueuedBy, TenantId, UnixTime,
};

use crate::access::capability::SystemCtx;
use crate::commands::secrets::CommandTarget;
use crate::{random_secret, secret_hash, CoreError, DeviceRejection, Orchard};

const DAY: i64 = 86_400;

/// How Orchard renews device identities (`orchard serve --device-identity-days`, `--identity-renewal-days`,
/// `--identity-grace-days`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentityRenewalSettings {
    /// Renew when fewer than this many days of the identity remain.
    pub renewal_window_days: u32,
    /// How long the previous identity is still accepted after the device switched to its renewed one
    /// (requests already signed, a device that retries with what it had).
    pub grace_seconds: i64,
    /// How long after a failed renewal (the device reported the profile as failed) the next attempt waits.
    pub retry_after_seconds: i64,
    /// At most this many devices get a renewal profile per step of the job (the rest at the next step).
    pub batch: i64,
}

impl Default for IdentityRenewalSettings {
    fn default() -> Self {
        Self {
            renewal_window_days: 60,
            grace_seconds: 7 * DAY,
            retry_after_seconds: DAY,
            batch: 500,
        }
    }
}

impl IdentityRenewalSettings {
    /// Checks the settings against the identity validity: a window as long as the validity would renew every
    /// identity at once, for ever.
    pub fn new(
        identity_validity_days: u32,
        renewal_window_days: u32,
        grace_days: u32,
    ) -> Result<Self, String> {
        if identity_validity_days < 2 {
            return Err("the device identity validity must be at least 2 days".into());
        }
        if renewal_window_days == 0 || renewal_window_days >= identity_validity_days {
            return Err(format!(
                "the renewal window must be between 1 and {} days (less than the identity validity)",
                identity_validity_days - 1
            ));
        }
        Ok(Self {
            renewal_window_days,
            grace_seconds: i64::from(grace_days) * DAY,
            ..Self::default()
        })
    }
}

/// What one step of the renewal job did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RenewalStepStats {
    /// Renewal profiles queued.
    pub queued: usize,
    /// Devices skipped because a profile could not be made for them (logged).
    pub failed: usize,
}

/// A device's identity as the device detail shows it: when it runs out and how its renewal stands.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IdentityStatusView {
    /// When the identity the device is bound to runs out (RFC 3339); none before the first Authenticate.
    pub not_after: Option<String>,
    /// none | pending | renewed | failed.
    pub renewal_state: &'static str,
    pub renewal_requested_at: Option<String>,
    pub renewed_at: Option<String>,
    /// The device's answer to the last renewal profile that failed (its ErrorChain), and when.
    pub last_renewal_error: Option<String>,
    pub last_renewal_failed_at: Option<String>,
    pub renewal_failures: i64,
}

impl Orchard {
    pub fn with_identity_renewal(mut self, settings: IdentityRenewalSettings) -> Self {
        self.renewal = settings;
        self
    }

    pub fn identity_renewal_settings(&self) -> IdentityRenewalSettings {
        self.renewal
    }

    /// One step of the renewal job: queues a renewal profile for each enrolled device whose identity runs out
    /// within the window and has none in flight (at most `batch`).
    pub async fn renew_expiring_identities_once(
        &self,
        _system: &SystemCtx,
    ) -> Result<RenewalStepStats, CoreError> {
        let now = self.clock.now();
        let s = self.renewal;
        let candidates = self
            .store
            .identity_renewal_candidates(
                now,
                now.plus_seconds(i64::from(s.renewal_window_days) * DAY),
                now.plus_seconds(-s.retry_after_seconds),
                s.batch,
            )
            .await?;
        let mut stats = RenewalStepStats::default();
        for candidate in candidates {
            match self.queue_identity_renewal(&candidate, now).await {
                Ok(()) => stats.queued += 1,
                Err(e) => {
                    stats.failed += 1;
                    tracing::error!(device = %candidate.device_id, error = %e, "identity renewal could not be queued");
                }
            }
        }
        if stats.queued > 0 {
            tracing::info!(queued = stats.queued, "identity renewal profiles queued");
        }
        Ok(stats)
    }

    /// Queues the renewal profile of one device: its InstallProfile and the renewal record commit together.
    async fn queue_identity_renewal(
        &self,
        candidate: &RenewalCandidate,
        now: UnixTime,
    ) -> Result<(), CoreError> {
        let link_id = candidate.link_id.ok_or_else(|| {
            CoreError::Conflict("the device's identity came through no enrollment link".into())
        })?;
        // The challenge lives as long as the identity it replaces: a device that is away for weeks still
        // renews when it comes back, and after that date it could not talk to us anyway.
        let profile = self
            .device_enrollment_profile(
                candidate.device_id,
                candidate.tenant_id,
                link_id,
                DeviceGrantPurpose::Renewal,
                candidate.not_after,
            )
            .await?;
        let channel = ChannelId::device(&candidate.udid);
        let command = self.new_command(
            &Command::InstallProfile { payload: profile },
            CommandTarget {
                device_id: candidate.device_id,
                tenant_id: candidate.tenant_id,
                channel: &channel,
            },
            QueuedBy::Renewal,
            now,
        )?;
        let mut unit = self.store.begin_unit().await?;
        unit.enqueue_commands(std::slice::from_ref(&command))
            .await?;
        unit.start_identity_renewal(
            candidate.device_id,
            &command.uuid,
            &candidate.fingerprint,
            now,
        )
        .await?;
        self.commit_unit(unit).await?;
        tracing::info!(device = %candidate.device_id, not_after = candidate.not_after.0, command = %command.uuid, "identity renewal queued");
        Ok(())
    }

    /// A signed enrollment profile whose one-time SCEP challenge is bound to one device and tenant (`purpose`:
    /// renewal or Return to Service), valid until `expires_at`. Same identifiers as every enrollment profile,
    /// so iOS replaces the installed MDM profile in place.
    pub(crate) async fn device_enrollment_profile(
        &self,
        device_id: DeviceId,
        tenant_id: TenantId,
        link_id: EnrollmentLinkId,
        purpose: DeviceGrantPurpose,
        expires_at: UnixTime,
    ) -> Result<Vec<u8>, CoreError> {
        let now = self.clock.now();
        let challenge = random_secret(24);
        self.store
            .create_scep_challenge(&ScepChallenge {
                challenge_hash: secret_hash(&challenge),
                link_id,
                tenant_id,
                grant: IdentityGrant::Device { device_id, purpose },
                created_at: now,
                expires_at,
                used_at: None,
            })
            .await?;
        let profile = self.build_enrollment_profile(challenge);
        Ok(orchard_pki::signature::sign_profile(
            &profile.to_plist(),
            &self.pki.profile_signer,
            &[self.pki.server_ca.identity()],
        )?)
    }

    /// A request for an enrolled device signed by an identity other than the one it is bound to: its renewed
    /// identity's first request (the binding moves now, in one unit of work), or its previous identity within
    /// the grace period after a renewal. Everything else is the identity mismatch it always was.
    pub(crate) async fn other_identity_of(
        &self,
        device: Device,
        signer: &VerifiedSigner,
        now: UnixTime,
    ) -> Result<Device, CoreError> {
        let Some(issued) = self
            .store
            .find_issued_certificate(&signer.fingerprint)
            .await?
        else {
            return Err(DeviceRejection::IdentityMismatch.into());
        };
        if issued.revoked_at.is_some() {
            tracing::warn!(udid = %device.udid, device = %device.id, "request signed by a revoked identity refused");
            return Err(DeviceRejection::UntrustedIdentity("identity revoked".into()).into());
        }
        if issued.bound_device_id == Some(device.id) {
            return match issued.renewed_at {
                Some(at) if now.0 < at.0.saturating_add(self.renewal.grace_seconds) => {
                    tracing::debug!(udid = %device.udid, device = %device.id, "request signed by the previous identity within the renewal grace period");
                    Ok(device)
                }
                Some(_) => {
                    tracing::warn!(udid = %device.udid, device = %device.id, "request signed by a renewed identity after its grace period refused");
                    Err(DeviceRejection::IdentityMismatch.into())
                }
                None => Err(DeviceRejection::IdentityMismatch.into()),
            };
        }
        if !is_renewal_of(&issued, &device) {
            return Err(DeviceRejection::IdentityMismatch.into());
        }
        match self.move_to_renewed_identity(&device, &issued, now).await? {
            Some(moved) => Ok(moved),
            None => Err(DeviceRejection::IdentityMismatch.into()),
        }
    }

    /// Moves `device`'s binding to its renewed identity `issued` (channels, queue and enrollment stay): one unit
    /// of work. None when the device changed meanwhile (another request moved it first).
    pub(crate) async fn move_to_renewed_identity(
        &self,
        device: &Device,
        issued: &IssuedCertificate,
        now: UnixTime,
    ) -> Result<Option<Device>, CoreError> {
        let Some(old) = device.cert_fingerprint.as_deref() else {
            return Ok(None);
        };
        let mut unit = self.store.begin_unit().await?;
        if !unit
            .move_identity_binding(device.id, old, &issued.fingerprint, now)
            .await?
        {
            unit.rollback().await?;
            // Two requests of the renewed identity may race: the loser finds the device already moved.
            return Ok(self
                .store
                .find_device_by_cert_fingerprint(&issued.fingerprint)
                .await?
                .filter(|d| d.id == device.id));
        }
        self.commit_unit(unit).await?;
        tracing::info!(udid = %device.udid, device = %device.id, not_after = issued.not_after.0, "device identity renewed: binding moved to the new identity");
        Ok(Some(Device {
            cert_fingerprint: Some(issued.fingerprint.clone()),
            updated_at: now,
            ..device.clone()
        }))
    }

    /// The renewal state of a device's identity for its detail page.
    pub(crate) async fn identity_status_view(
        &self,
        device: &Device,
    ) -> Result<IdentityStatusView, CoreError> {
        let issued = match &device.cert_fingerprint {
            Some(fp) => self.store.find_issued_certificate(fp).await?,
            None => None,
        };
        let renewal = self.store.identity_renewal(device.id).await?;
        Ok(IdentityStatusView {
            not_after: issued.map(|c| c.not_after.to_rfc3339()),
            renewal_state: renewal.as_ref().map_or("none", |r| r.state.as_str()),
            renewal_requested_at: renewal.as_ref().map(|r| r.requested_at.to_rfc3339()),
            renewed_at: renewal
                .as_ref()
                .and_then(|r| r.renewed_at)
                .map(UnixTime::to_rfc3339),
            last_renewal_error: renewal.as_ref().and_then(|r| r.last_error.clone()),
            last_renewal_failed_at: renewal
                .as_ref()
                .and_then(|r| r.failed_at)
                .map(UnixTime::to_rfc3339),
            renewal_failures: renewal.map_or(0, |r| r.failures),
        })
    }

    /// Expiry figures of enrolled devices' identities for `/metrics`.
    pub async fn identity_expiry_figures(
        &self,
        _system: &SystemCtx,
    ) -> Result<orchard_store::IdentityExpiryFigures, CoreError> {
        let now = self.clock.now();
        let window_end = now.plus_seconds(i64::from(self.renewal.renewal_window_days) * DAY);
        Ok(self.store.identity_expiry_figures(now, window_end).await?)
    }

    /// Records a failed renewal profile (the device's error report) on the device, inside the report's unit.
    pub(crate) async fn record_renewal_failure(
        &self,
        unit: &mut orchard_store::UnitOfWork,
        uuid: &CommandUuid,
        error: &str,
        now: UnixTime,
    ) -> Result<(), CoreError> {
        // Bounded: the error chain comes from the device.
        let error: String = error.chars().take(2000).collect();
        if unit
            .record_identity_renewal_failure(uuid, &error, now)
            .await?
        {
            tracing::warn!(command = %uuid, error = %error, "identity renewal failed on the device");
        }
        Ok(())
    }
}

/// Whether `issued` is a renewal of `device`'s identity that has not bound yet: issued for this very device,
/// for a renewal, under the device's own tenant.
pub(crate) fn is_renewal_of(issued: &IssuedCertificate, device: &Device) -> bool {
    matches!(
        issued.grant,
        IdentityGrant::Device { device_id, purpose: DeviceGrantPurpose::Renewal } if device_id == device.id
    ) && issued.bound_device_id.is_none()
        && issued.revoked_at.is_none()
        && issued.tenant_id == device.tenant_id
        && device.state != orchard_types::EnrollmentState::Unenrolled
        && device.cert_fingerprint.is_some()
}
