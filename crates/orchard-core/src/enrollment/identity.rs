//! A device's identity and ownership as operators manage them: the identity it is bound to (grant, validity,
//! revocation), revoking that identity (retired, moved, suspected theft), releasing the device for
//! re-enrollment into another tenant, and moving the device between tenants. Reading is for everyone who may
//! see the device; the three actions are operator-only (they cross tenants or take a device off management),
//! and the API's audit trail records each of them.

use orchard_store::DeviceRelease;
use orchard_types::{DeviceId, TenantId, UnixTime};
use serde::{Deserialize, Serialize};

use crate::access::capability::OperatorCtx;
use crate::access::principal::Principal;
use crate::{CoreError, Orchard};

/// How long a release for re-enrollment stays open when the operator does not say: long enough to hand an iPad
/// over, short enough that a forgotten release does not stay a standing invitation.
pub const DEFAULT_RELEASE_SECONDS: i64 = 7 * 86_400;
/// The longest release an operator may open.
pub const MAX_RELEASE_SECONDS: i64 = 30 * 86_400;

/// Why an operator revokes a device identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RevocationReason {
    /// The device leaves management for good.
    Retired,
    /// The device moves to another owner, who enrolls it anew.
    Moved,
    /// The device (or its identity key) may be in the wrong hands.
    SuspectedTheft,
}

impl RevocationReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationReason::Retired => "retired",
            RevocationReason::Moved => "moved",
            RevocationReason::SuspectedTheft => "suspected_theft",
        }
    }
}

/// A device's identity and release state as the API shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceIdentityView {
    pub device_id: String,
    pub tenant_id: String,
    /// SHA-256 of the identity certificate the device is bound to (none before its first Authenticate).
    pub fingerprint: Option<String>,
    /// link | ade | device: what the identity was issued for.
    pub grant: Option<String>,
    pub issued_at: Option<String>,
    pub not_after: Option<String>,
    pub revoked_at: Option<String>,
    pub revoked_reason: Option<String>,
    /// An open release for re-enrollment: until when, and into which tenant (any when absent).
    pub released_until: Option<String>,
    pub released_to_tenant_id: Option<String>,
}

impl Orchard {
    /// The device's identity and release state (everyone who may see the device).
    pub async fn device_identity_view(
        &self,
        who: &Principal,
        id: DeviceId,
    ) -> Result<DeviceIdentityView, CoreError> {
        let device = self
            .store
            .get_device(who.scope(), id)
            .await?
            .ok_or(CoreError::NotFound)?;
        let issued = match &device.cert_fingerprint {
            Some(fp) => self.store.find_issued_certificate(fp).await?,
            None => None,
        };
        let now = self.clock.now();
        let release = self
            .store
            .device_release(device.id)
            .await?
            .filter(|r| r.until >= now);
        Ok(DeviceIdentityView {
            device_id: device.id.to_string(),
            tenant_id: device.tenant_id.to_string(),
            fingerprint: device.cert_fingerprint.clone(),
            grant: issued.as_ref().map(|c| c.grant.kind().to_owned()),
            issued_at: issued.as_ref().map(|c| c.issued_at.to_rfc3339()),
            not_after: issued.as_ref().map(|c| c.not_after.to_rfc3339()),
            revoked_at: issued
                .as_ref()
                .and_then(|c| c.revoked_at)
                .map(UnixTime::to_rfc3339),
            revoked_reason: issued.and_then(|c| c.revoked_reason),
            released_until: release.as_ref().map(|r| r.until.to_rfc3339()),
            released_to_tenant_id: release.and_then(|r| r.tenant_id).map(|t| t.to_string()),
        })
    }

    /// Revokes the identity the device is bound to: every request it signs is refused from now on (check-ins,
    /// commands, SCEP renewal), and it can never bind again. The device record and its history stay.
    pub async fn revoke_device_identity(
        &self,
        operator: &OperatorCtx,
        id: DeviceId,
        reason: RevocationReason,
    ) -> Result<DeviceIdentityView, CoreError> {
        let device = self
            .store
            .get_device(operator.scope(), id)
            .await?
            .ok_or(CoreError::NotFound)?;
        let Some(fingerprint) = &device.cert_fingerprint else {
            return Err(CoreError::Conflict(
                "the device has no identity to revoke".into(),
            ));
        };
        let now = self.clock.now();
        if !self
            .store
            .revoke_identity(fingerprint, reason.as_str(), now)
            .await?
        {
            return Err(CoreError::Conflict(
                "the device's identity is already revoked".into(),
            ));
        }
        tracing::warn!(device = %device.id, udid = %device.udid, reason = reason.as_str(), actor = %operator.principal().actor(), "device identity revoked");
        self.device_identity_view(operator.principal(), id).await
    }

    /// Opens the device for re-enrollment: until the release runs out, a new identity of `tenant` (any tenant
    /// when None) may claim it at Authenticate, moving it there. The current identity keeps working until then.
    pub async fn release_device_for_reenrollment(
        &self,
        operator: &OperatorCtx,
        id: DeviceId,
        tenant: Option<TenantId>,
        expires_in_seconds: Option<i64>,
    ) -> Result<DeviceIdentityView, CoreError> {
        let seconds = expires_in_seconds.unwrap_or(DEFAULT_RELEASE_SECONDS);
        if !(1..=MAX_RELEASE_SECONDS).contains(&seconds) {
            return Err(CoreError::Invalid(format!(
                "expires_in_seconds must be between 1 and {MAX_RELEASE_SECONDS}"
            )));
        }
        if let Some(t) = tenant {
            self.store
                .get_tenant(operator.scope(), t)
                .await?
                .ok_or_else(|| CoreError::Invalid("no such tenant".into()))?;
        }
        let now = self.clock.now();
        self.store
            .release_device(
                operator.scope(),
                id,
                &DeviceRelease {
                    until: now.plus_seconds(seconds),
                    tenant_id: tenant,
                    released_by: Some(operator.principal().actor()),
                },
                now,
            )
            .await?;
        tracing::warn!(device = %id, tenant = ?tenant, seconds, actor = %operator.principal().actor(), "device released for re-enrollment");
        self.device_identity_view(operator.principal(), id).await
    }

    /// Moves a device to another tenant at once: its record, identity and command history stay; commands the
    /// previous tenant queued and that did not run expire; the inventory (what the previous tenant managed) is
    /// kept or deleted as the operator says. An identity that was issued for the device keeps working.
    pub async fn move_device_to_tenant(
        &self,
        operator: &OperatorCtx,
        id: DeviceId,
        to: TenantId,
        keep_inventory: bool,
    ) -> Result<(DeviceIdentityView, TenantId), CoreError> {
        let device = self
            .store
            .get_device(operator.scope(), id)
            .await?
            .ok_or(CoreError::NotFound)?;
        self.store
            .get_tenant(operator.scope(), to)
            .await?
            .ok_or_else(|| CoreError::Invalid("no such tenant".into()))?;
        if device.tenant_id == to {
            return Err(CoreError::Conflict(
                "the device already belongs to that tenant".into(),
            ));
        }
        let now = self.clock.now();
        let mut unit = self.store.begin_unit().await?;
        unit.move_device(device.id, to, keep_inventory, now).await?;
        self.commit_unit(unit).await?;
        tracing::warn!(device = %device.id, from = %device.tenant_id, to = %to, keep_inventory, actor = %operator.principal().actor(), "device moved to another tenant");
        let view = self.device_identity_view(operator.principal(), id).await?;
        Ok((view, device.tenant_id))
    }
}
