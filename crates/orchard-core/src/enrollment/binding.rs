//! Which device an identity may claim at Authenticate: the tenant-safe binding rule (issue 10), a check of
//! recorded data rather than a guess.
//!
//! Every identity records the grant that issued it ([`IdentityGrant`]): an enrollment link (any device new to
//! Orchard, or a device of the link's tenant), an ADE enrollment (exactly the serial and UDID that Apple's
//! device CA vouched for in the MachineInfo), or one known device (identity renewal, Return to Service). An
//! identity binds once, to one device, and a revoked identity binds nothing. For a UDID Orchard already holds
//! an enrollment for, a new identity is accepted only when
//!
//! - it was issued for that device (renewal of the device's identity: a legitimate rebind), or
//! - it was issued under the device's own tenant (the tenant re-enrolls its iPad: erase, Return to Service,
//!   profile reinstall), or
//! - it came through ADE for this very UDID and the serial is assigned to a template of the identity's tenant
//!   (Apple's assignment decides which department owns the hardware), or
//! - an operator released the device for re-enrollment (into any tenant, or into one named tenant) and the
//!   release has not run out.
//!
//! A device that checked out itself (the CheckOut it signed revoked its identity: its profile, and so its
//! identity, is gone) has no enrollment left to protect and may be enrolled by anyone holding a valid grant. Everything else is refused with 403, nothing changes, and a
//! security event is audited (under no tenant: central IT's log; the victim's device id would otherwise show
//! in the attacker's tenant log).

use orchard_store::{DeviceBinding, IdentityGrant, IssuedCertificate};
use orchard_types::{EnrollmentState, TenantId, Udid, UnixTime};
use serde_json::json;

use crate::reporting::audit::{AuditActor, AuditEvent, AuditOutcome};
use crate::{CoreError, DeviceRejection, Orchard};

/// The revocation reason CheckOut records on the identity that signed it.
pub const CHECKED_OUT_REASON: &str = "checked_out";
/// The audit action of a refused Authenticate (a security event).
pub const AUTHENTICATE_REFUSED_ACTION: &str = "security.device.authenticate_refused";
/// The audit action of an Authenticate that moved a device into another tenant (ADE, a release, after CheckOut).
pub const CROSS_TENANT_BIND_ACTION: &str = "security.device.tenant_changed_by_enrollment";

/// Why a new identity may claim a UDID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// Orchard has never seen the UDID.
    NewDevice,
    /// The device checked out: no enrollment to protect.
    AfterCheckOut,
    /// The identity was issued for this device (renewal, Return to Service).
    IssuedForDevice,
    /// Same tenant: the tenant re-enrolls its own device.
    SameTenant,
    /// ADE for this UDID, its serial assigned to a template of the identity's tenant.
    AdeAssignment,
    /// An operator released the device for re-enrollment.
    OperatorRelease,
}

impl Claim {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Claim::NewDevice => "new_device",
            Claim::AfterCheckOut => "after_checkout",
            Claim::IssuedForDevice => "issued_for_device",
            Claim::SameTenant => "same_tenant",
            Claim::AdeAssignment => "ade_assignment",
            Claim::OperatorRelease => "operator_release",
        }
    }

    /// The tenant the device belongs to after the bind: a renewal keeps the device where it is (an operator may
    /// have moved it since the old identity was issued); every other claim takes the identity's tenant.
    pub(crate) fn tenant(
        self,
        issued: &IssuedCertificate,
        current: Option<&DeviceBinding>,
    ) -> TenantId {
        match (self, current) {
            (Claim::IssuedForDevice, Some(b)) => b.device.tenant_id,
            _ => issued.tenant_id,
        }
    }
}

/// What Authenticate does with an identity and a UDID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BindingDecision {
    /// Bind the identity (a new enrollment of the UDID).
    Bind(Claim),
    /// The identity is the one the enrolled device is bound to: nothing to do (a replay or a repeat).
    AlreadyBound,
    /// Refused, with the reason for the log and the audit event.
    Refuse(&'static str),
}

impl Orchard {
    /// The binding rule (see the module documentation). Reads only; the caller holds the device row locked.
    pub(crate) async fn binding_decision(
        &self,
        issued: &IssuedCertificate,
        udid: &Udid,
        current: Option<&DeviceBinding>,
        now: UnixTime,
    ) -> Result<BindingDecision, CoreError> {
        use BindingDecision::{AlreadyBound, Bind, Refuse};
        if issued.revoked_at.is_some() {
            return Ok(Refuse("identity revoked"));
        }
        let device = current.map(|b| &b.device);
        match &issued.grant {
            IdentityGrant::Ade { udid: granted, .. } if granted != udid => {
                return Ok(Refuse("ade identity issued for another udid"));
            }
            IdentityGrant::Device { device_id, .. } if device.map(|d| d.id) != Some(*device_id) => {
                return Ok(Refuse("identity issued for another device"));
            }
            _ => {}
        }
        if let Some(bound_to) = issued.bound_device_id {
            return Ok(match device {
                Some(d)
                    if d.id == bound_to
                        && d.cert_fingerprint.as_deref() == Some(&issued.fingerprint) =>
                {
                    if d.state == EnrollmentState::Unenrolled {
                        Refuse("identity ended by checkout")
                    } else {
                        AlreadyBound
                    }
                }
                Some(d) if d.id == bound_to => Refuse("identity superseded by a newer one"),
                _ => Refuse("identity bound to another device"),
            });
        }
        let Some(binding) = current else {
            return Ok(Bind(Claim::NewDevice));
        };
        let device = &binding.device;
        if device.state == EnrollmentState::Unenrolled && self.checked_out_itself(device).await? {
            return Ok(Bind(Claim::AfterCheckOut));
        }
        if matches!(issued.grant, IdentityGrant::Device { .. }) {
            return Ok(Bind(Claim::IssuedForDevice));
        }
        if device.tenant_id == issued.tenant_id {
            return Ok(Bind(Claim::SameTenant));
        }
        if let IdentityGrant::Ade { serial, .. } = &issued.grant {
            // Apple's assignment at Authenticate time decides, not at MachineInfo time: a serial moved to another
            // department's template meanwhile no longer carries this identity's tenant.
            let assigned = self.store.dep_serial_template(serial).await?;
            if assigned.is_some_and(|a| a.template.tenant_id == issued.tenant_id) {
                return Ok(Bind(Claim::AdeAssignment));
            }
        }
        if let Some(release) = &binding.release {
            if release.until >= now && release.tenant_id.is_none_or(|t| t == issued.tenant_id) {
                return Ok(Bind(Claim::OperatorRelease));
            }
        }
        Ok(Refuse("device enrolled in another tenant"))
    }

    /// Whether the device ended its own enrollment: its identity was revoked by the CheckOut it signed. Only then
    /// is the UDID free for anyone's enrollment (a device Orchard merely marked unenrolled stays protected).
    async fn checked_out_itself(&self, device: &orchard_store::Device) -> Result<bool, CoreError> {
        let Some(fingerprint) = &device.cert_fingerprint else {
            return Ok(false);
        };
        Ok(self
            .store
            .find_issued_certificate(fingerprint)
            .await?
            .is_some_and(|c| c.revoked_reason.as_deref() == Some(CHECKED_OUT_REASON)))
    }

    /// Audits a refused Authenticate as a security event and returns the device-surface refusal (403). An audit
    /// failure is logged in full and does not turn the refusal into an acceptance.
    pub(crate) async fn refuse_binding(
        &self,
        issued: &IssuedCertificate,
        udid: &Udid,
        current: Option<&DeviceBinding>,
        reason: &'static str,
    ) -> CoreError {
        let device = current.map(|b| &b.device);
        tracing::warn!(
            udid = %udid,
            identity_tenant = %issued.tenant_id,
            device = ?device.map(|d| d.id),
            device_tenant = ?device.map(|d| d.tenant_id),
            reason,
            "authenticate refused: the identity may not claim this device"
        );
        let event = AuditEvent {
            actor: identity_actor(issued),
            tenant_id: None,
            action: AUTHENTICATE_REFUSED_ACTION.into(),
            target: Some(
                device
                    .map(|d| d.id.to_string())
                    .unwrap_or_else(|| udid.to_string()),
            ),
            request_id: None,
            outcome: AuditOutcome::Denied,
            http_status: Some(403),
            details: json!({
                "reason": reason,
                "udid": udid.as_str(),
                "identity_fingerprint": issued.fingerprint,
                "identity_tenant_id": issued.tenant_id.to_string(),
                "identity_grant": issued.grant.kind(),
                "identity_link_id": issued.link_id.map(|l| l.to_string()),
                "device_id": device.map(|d| d.id.to_string()),
                "device_tenant_id": device.map(|d| d.tenant_id.to_string()),
            }),
        };
        if let Err(e) = self.append_audit(event.clone()).await {
            tracing::error!(error = %e, action = %event.action, details = %event.details, "security event could not be recorded");
        }
        DeviceRejection::UntrustedIdentity(format!("identity may not claim this device: {reason}"))
            .into()
    }

    /// Audits an Authenticate that moved a device into another tenant by a legitimate claim.
    pub(crate) async fn audit_cross_tenant_bind(
        &self,
        issued: &IssuedCertificate,
        device: &orchard_store::Device,
        previous_tenant: Option<TenantId>,
        claim: Claim,
    ) {
        let event = AuditEvent {
            actor: identity_actor(issued),
            tenant_id: Some(device.tenant_id),
            action: CROSS_TENANT_BIND_ACTION.into(),
            target: Some(device.id.to_string()),
            request_id: None,
            outcome: AuditOutcome::Ok,
            http_status: Some(200),
            details: json!({
                "claim": claim.as_str(),
                "udid": device.udid.as_str(),
                "from_tenant_id": previous_tenant.map(|t| t.to_string()),
                "to_tenant_id": device.tenant_id.to_string(),
                "identity_fingerprint": issued.fingerprint,
                "identity_grant": issued.grant.kind(),
            }),
        };
        if let Err(e) = self.append_audit(event.clone()).await {
            tracing::error!(error = %e, action = %event.action, details = %event.details, "security event could not be recorded");
        }
    }
}

/// The device identity as an audit actor: `identity:<fingerprint prefix>`, in the tenant that issued it.
fn identity_actor(issued: &IssuedCertificate) -> AuditActor {
    AuditActor {
        id: format!(
            "identity:{}",
            issued.fingerprint.get(..16).unwrap_or(&issued.fingerprint)
        ),
        name: Some(issued.subject.chars().take(64).collect()),
        role: None,
        tenant_id: Some(issued.tenant_id),
    }
}
