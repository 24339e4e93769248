//! Identity renewal: which devices' identities run out soon, the renewal in flight per device (its
//! InstallProfile command), the move of a device's binding to its renewed identity, and the expiry figures for
//! metrics.

use sqlx::any::AnyRow;

use orchard_types::{CommandUuid, DeviceId, EnrollmentLinkId, TenantId, Udid, UnixTime};

use crate::device::devices::UNFINISHED_STATUSES;
use crate::rows;
use crate::unit::Db;
use crate::{Store, StoreError, UnitOfWork};

/// An enrolled device whose identity runs out within the renewal window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewalCandidate {
    pub device_id: DeviceId,
    pub udid: Udid,
    pub tenant_id: TenantId,
    /// The identity the device is bound to now.
    pub fingerprint: String,
    pub not_after: UnixTime,
    /// The link the current identity came through (the renewal challenge is filed under it).
    pub link_id: Option<EnrollmentLinkId>,
}

/// Where a device's identity renewal stands (`identity_renewals`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewalState {
    /// A renewal profile is queued or on its way; the device has not switched yet.
    Pending,
    /// The device switched to its renewed identity.
    Renewed,
    /// The device reported the renewal profile as failed.
    Failed,
}

impl RenewalState {
    pub fn as_str(self) -> &'static str {
        match self {
            RenewalState::Pending => "pending",
            RenewalState::Renewed => "renewed",
            RenewalState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "pending" => RenewalState::Pending,
            "renewed" => RenewalState::Renewed,
            "failed" => RenewalState::Failed,
            other => return Err(StoreError::Corrupt(format!("renewal state {other:?}"))),
        })
    }
}

/// A device's renewal record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityRenewal {
    pub device_id: DeviceId,
    pub state: RenewalState,
    pub command_uuid: Option<String>,
    pub requested_at: UnixTime,
    pub renewed_at: Option<UnixTime>,
    pub last_error: Option<String>,
    pub failed_at: Option<UnixTime>,
    pub failures: i64,
}

/// Expiry of the identities enrolled devices are bound to, for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IdentityExpiryFigures {
    /// Enrolled devices with a known identity.
    pub devices: i64,
    /// Of those, the ones whose identity has run out (the device can no longer talk to Orchard).
    pub expired: i64,
    /// Of those, the ones whose identity runs out within the renewal window (not yet expired).
    pub expiring: i64,
    /// Devices whose last renewal attempt failed.
    pub renewal_failed: i64,
    /// The soonest not_after among the identities not yet expired.
    pub earliest_not_after: Option<UnixTime>,
}

fn renewal_from_row(row: &AnyRow) -> Result<IdentityRenewal, StoreError> {
    Ok(IdentityRenewal {
        device_id: rows::device_id(row, "device_id")?,
        state: RenewalState::parse(&rows::text(row, "state")?)?,
        command_uuid: rows::opt_text(row, "command_uuid")?,
        requested_at: rows::time(row, "requested_at")?,
        renewed_at: rows::opt_time(row, "renewed_at")?,
        last_error: rows::opt_text(row, "last_error")?,
        failed_at: rows::opt_time(row, "failed_at")?,
        failures: rows::int(row, "failures")?,
    })
}

impl Store {
    /// Enrolled devices whose bound, unrevoked identity runs out after `now` and before `expiring_before`, and
    /// that have no renewal in flight (a pending renewal whose command is still unfinished) and no failure
    /// at or after `retry_failed_after` (a failed renewal is retried once that much time has passed).
    /// Soonest expiry first, at most `limit`.
    pub async fn identity_renewal_candidates(
        &self,
        now: UnixTime,
        expiring_before: UnixTime,
        retry_failed_after: UnixTime,
        limit: i64,
    ) -> Result<Vec<RenewalCandidate>, StoreError> {
        // Devices without a renewal row have NULLs there, and `NOT (NULL AND …)` is not true: coalesce.
        let sql = format!(
            "SELECT d.id, d.udid, d.tenant_id, c.fingerprint, c.not_after, c.link_id \
             FROM devices d JOIN issued_certificates c ON c.fingerprint = d.cert_fingerprint \
             LEFT JOIN identity_renewals r ON r.device_id = d.id \
             WHERE d.state = 'enrolled' AND c.revoked_at IS NULL \
               AND c.not_after > $1 AND c.not_after < $2 \
               AND NOT (COALESCE(r.state, '') = 'pending' AND EXISTS (SELECT 1 FROM commands q \
                        WHERE q.command_uuid = r.command_uuid AND q.status IN {UNFINISHED_STATUSES})) \
               AND NOT (COALESCE(r.state, '') = 'failed' AND COALESCE(r.failed_at, 0) >= $3) \
             ORDER BY c.not_after, d.id LIMIT $4"
        );
        sqlx::query(&sql)
            .bind(now.0)
            .bind(expiring_before.0)
            .bind(retry_failed_after.0)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| {
                Ok(RenewalCandidate {
                    device_id: rows::device_id(row, "id")?,
                    udid: rows::udid(row, "udid")?,
                    tenant_id: rows::tenant_id(row, "tenant_id")?,
                    fingerprint: rows::text(row, "fingerprint")?,
                    not_after: rows::time(row, "not_after")?,
                    link_id: rows::opt_link_id(row, "link_id")?,
                })
            })
            .collect()
    }

    /// The device's renewal record, if Orchard ever renewed or tried to.
    pub async fn identity_renewal(
        &self,
        device_id: DeviceId,
    ) -> Result<Option<IdentityRenewal>, StoreError> {
        sqlx::query(
            "SELECT device_id, state, command_uuid, requested_at, renewed_at, last_error, failed_at, failures \
             FROM identity_renewals WHERE device_id = $1",
        )
        .bind(device_id.to_string())
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(renewal_from_row)
        .transpose()
    }

    /// Expiry figures of enrolled devices' identities at `now`, with the renewal window ending at `window_end`.
    pub async fn identity_expiry_figures(
        &self,
        now: UnixTime,
        window_end: UnixTime,
    ) -> Result<IdentityExpiryFigures, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS devices, \
               COALESCE(SUM(CASE WHEN c.not_after <= $1 THEN 1 ELSE 0 END), 0) AS expired, \
               COALESCE(SUM(CASE WHEN c.not_after > $1 AND c.not_after < $2 THEN 1 ELSE 0 END), 0) AS expiring, \
               MIN(CASE WHEN c.not_after > $1 THEN c.not_after END) AS earliest \
             FROM devices d JOIN issued_certificates c ON c.fingerprint = d.cert_fingerprint \
             WHERE d.state = 'enrolled' AND c.revoked_at IS NULL",
        )
        .bind(now.0)
        .bind(window_end.0)
        .fetch_one(&self.pool)
        .await?;
        let failed = sqlx::query(
            "SELECT COUNT(*) AS n FROM identity_renewals r JOIN devices d ON d.id = r.device_id \
             WHERE r.state = 'failed' AND d.state <> 'unenrolled'",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(IdentityExpiryFigures {
            devices: rows::int(&row, "devices")?,
            expired: rows::int(&row, "expired")?,
            expiring: rows::int(&row, "expiring")?,
            renewal_failed: rows::int(&failed, "n")?,
            earliest_not_after: rows::opt_time(&row, "earliest")?,
        })
    }
}

impl UnitOfWork {
    /// Records that a renewal profile was queued for the device (the command is in the same unit).
    pub async fn start_identity_renewal(
        &mut self,
        device_id: DeviceId,
        command: &CommandUuid,
        old_fingerprint: &str,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO identity_renewals (device_id, state, command_uuid, old_fingerprint, requested_at, failures) \
             VALUES ($1, 'pending', $2, $3, $4, 0) \
             ON CONFLICT (device_id) DO UPDATE SET state = 'pending', command_uuid = excluded.command_uuid, \
               old_fingerprint = excluded.old_fingerprint, requested_at = excluded.requested_at",
        )
        .bind(device_id.to_string())
        .bind(command.as_str())
        .bind(old_fingerprint)
        .bind(now.0)
        .execute(self.conn()?)
        .await?;
        Ok(())
    }

    /// The device reported the renewal command `command` as failed: the failure is kept on the device's record
    /// (the renewal job retries later). Ok(false) when `command` is no renewal's command.
    pub async fn record_identity_renewal_failure(
        &mut self,
        command: &CommandUuid,
        error: &str,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE identity_renewals SET state = 'failed', last_error = $2, failed_at = $3, \
               failures = failures + 1 \
             WHERE command_uuid = $1 AND state = 'pending'",
        )
        .bind(command.as_str())
        .bind(error)
        .bind(now.0)
        .execute(self.conn()?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Moves the device's binding from `old_fingerprint` to its renewed identity `new_fingerprint`, keeping
    /// channels, queue and enrollment: the device now speaks with the new identity, the old one is marked
    /// renewed (its grace period starts now), the new one bound to the device, the renewal recorded as done.
    /// Ok(false) when the device is no longer bound to `old_fingerprint` (another request moved it meanwhile)
    /// or the new identity is already bound or revoked: the caller rolls the unit back.
    pub async fn move_identity_binding(
        &mut self,
        device_id: DeviceId,
        old_fingerprint: &str,
        new_fingerprint: &str,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        let device_id = device_id.to_string();
        let claimed = sqlx::query(
            "UPDATE issued_certificates SET bound_device_id = $1, bound_at = $2 \
             WHERE fingerprint = $3 AND bound_device_id IS NULL AND revoked_at IS NULL",
        )
        .bind(&device_id)
        .bind(now.0)
        .bind(new_fingerprint)
        .execute(self.conn()?)
        .await?;
        if claimed.rows_affected() != 1 {
            return Ok(false);
        }
        let moved = sqlx::query(
            "UPDATE devices SET cert_fingerprint = $1, updated_at = $2 \
             WHERE id = $3 AND cert_fingerprint = $4",
        )
        .bind(new_fingerprint)
        .bind(now.0)
        .bind(&device_id)
        .bind(old_fingerprint)
        .execute(self.conn()?)
        .await?;
        if moved.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE issued_certificates SET renewed_at = $1 WHERE fingerprint = $2 AND renewed_at IS NULL",
        )
        .bind(now.0)
        .bind(old_fingerprint)
        .execute(self.conn()?)
        .await?;
        sqlx::query(
            "INSERT INTO identity_renewals (device_id, state, old_fingerprint, requested_at, renewed_at, \
               new_fingerprint, failures) \
             VALUES ($1, 'renewed', $2, $3, $3, $4, 0) \
             ON CONFLICT (device_id) DO UPDATE SET state = 'renewed', renewed_at = excluded.renewed_at, \
               new_fingerprint = excluded.new_fingerprint",
        )
        .bind(&device_id)
        .bind(old_fingerprint)
        .bind(now.0)
        .bind(new_fingerprint)
        .execute(self.conn()?)
        .await?;
        Ok(true)
    }
}
