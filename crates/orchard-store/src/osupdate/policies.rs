//! `os_policies` (one per tenant) and `device_os_updates` (the command-driven update of a device older than
//! iOS 17: which target, which stage, which command is waiting).

use orchard_types::{CommandUuid, DeviceId, TenantId, UnixTime};
use sqlx::any::AnyRow;

use crate::device::devices::{device_from_row, DEVICE_COLUMNS};
use crate::sql::Sql;
use crate::unit::Db;
use crate::{rows, NewCommand, Scope, Store, StoreError, UnitOfWork};

/// A tenant's OS policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsPolicyRecord {
    pub tenant_id: TenantId,
    /// `latest` (the newest release of each device's model) or `pinned`.
    pub target: String,
    pub pinned_version: Option<String>,
    pub pinned_build: Option<String>,
    /// The iPad's local time, `yyyy-mm-ddThh:mm:ss`.
    pub deadline_local: String,
    pub details_url: Option<String>,
    /// Grows with every change (set by the store).
    pub revision: i64,
    pub updated_at: UnixTime,
    pub updated_by: Option<String>,
}

/// Where a device older than iOS 17 is in its command-driven update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceOsUpdateRecord {
    pub device_id: DeviceId,
    pub target_version: String,
    /// checking | scheduling | scheduled | downloading | installing | failed.
    pub stage: String,
    pub product_key: Option<String>,
    pub pending_command: Option<String>,
    pub last_error: Option<String>,
    pub updated_at: UnixTime,
}

/// The revisions a device's declaration set depends on: its tenant's policy and the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DesiredRevisions {
    pub policy: Option<i64>,
    pub catalogue: Option<i64>,
    /// The device's declared-profiles revision (moved by the reconciler).
    pub declared_profiles: i64,
}

const POLICY_COLUMNS: &str =
    "tenant_id, target, pinned_version, pinned_build, deadline_local, details_url, \
                              revision, updated_at, updated_by";
const UPDATE_COLUMNS: &str =
    "device_id, target_version, stage, product_key, pending_command, last_error, updated_at";

fn policy(r: &AnyRow) -> Result<OsPolicyRecord, StoreError> {
    Ok(OsPolicyRecord {
        tenant_id: rows::tenant_id(r, "tenant_id")?,
        target: rows::text(r, "target")?,
        pinned_version: rows::opt_text(r, "pinned_version")?,
        pinned_build: rows::opt_text(r, "pinned_build")?,
        deadline_local: rows::text(r, "deadline_local")?,
        details_url: rows::opt_text(r, "details_url")?,
        revision: rows::int(r, "revision")?,
        updated_at: rows::time(r, "updated_at")?,
        updated_by: rows::opt_text(r, "updated_by")?,
    })
}

fn os_update(r: &AnyRow) -> Result<DeviceOsUpdateRecord, StoreError> {
    Ok(DeviceOsUpdateRecord {
        device_id: rows::device_id(r, "device_id")?,
        target_version: rows::text(r, "target_version")?,
        stage: rows::text(r, "stage")?,
        product_key: rows::opt_text(r, "product_key")?,
        pending_command: rows::opt_text(r, "pending_command")?,
        last_error: rows::opt_text(r, "last_error")?,
        updated_at: rows::time(r, "updated_at")?,
    })
}

async fn policy_of(
    db: &mut impl Db,
    tenant: TenantId,
) -> Result<Option<OsPolicyRecord>, StoreError> {
    sqlx::query(&format!(
        "SELECT {POLICY_COLUMNS} FROM os_policies WHERE tenant_id = $1"
    ))
    .bind(tenant.to_string())
    .fetch_optional(db.conn()?)
    .await?
    .as_ref()
    .map(policy)
    .transpose()
}

async fn os_update_of(
    db: &mut impl Db,
    device: DeviceId,
) -> Result<Option<DeviceOsUpdateRecord>, StoreError> {
    sqlx::query(&format!(
        "SELECT {UPDATE_COLUMNS} FROM device_os_updates WHERE device_id = $1"
    ))
    .bind(device.to_string())
    .fetch_optional(db.conn()?)
    .await?
    .as_ref()
    .map(os_update)
    .transpose()
}

impl Store {
    /// The tenant's policy, in the scope.
    pub async fn os_policy(
        &self,
        scope: Scope,
        tenant: TenantId,
    ) -> Result<Option<OsPolicyRecord>, StoreError> {
        let mut sql = Sql::new(&format!(
            "SELECT {POLICY_COLUMNS} FROM os_policies WHERE tenant_id = "
        ));
        sql.bind(tenant).in_scope("tenant_id", scope);
        sql.query()
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(policy)
            .transpose()
    }

    /// The policy of an authenticated device's tenant (the device surface).
    pub async fn os_policy_of_device_tenant(
        &self,
        tenant: TenantId,
    ) -> Result<Option<OsPolicyRecord>, StoreError> {
        policy_of(&mut self.pooled().await?, tenant).await
    }

    /// The revisions a device of `tenant` depends on, in one statement: cheap enough for every
    /// declarative check-in, so cached declaration sets are always checked against the database.
    pub async fn desired_revisions(
        &self,
        tenant: TenantId,
        device: DeviceId,
    ) -> Result<DesiredRevisions, StoreError> {
        let row = sqlx::query(
            "SELECT (SELECT revision FROM os_policies WHERE tenant_id = $1) AS policy, \
             (SELECT revision FROM os_catalogue_meta WHERE id = 1) AS catalogue, \
             (SELECT declared_profiles_revision FROM devices WHERE id = $2) AS declared_profiles",
        )
        .bind(tenant.to_string())
        .bind(device.to_string())
        .fetch_one(&self.pool)
        .await?;
        Ok(DesiredRevisions {
            policy: rows::opt_int(&row, "policy")?,
            catalogue: rows::opt_int(&row, "catalogue")?,
            declared_profiles: rows::opt_int(&row, "declared_profiles")?.unwrap_or(0),
        })
    }

    /// The command-driven updates of a tenant's devices.
    pub async fn device_os_updates_of_tenant(
        &self,
        scope: Scope,
        tenant: TenantId,
    ) -> Result<Vec<DeviceOsUpdateRecord>, StoreError> {
        let mut sql = Sql::new(
            "SELECT u.device_id, u.target_version, u.stage, u.product_key, u.pending_command, u.last_error, \
             u.updated_at FROM device_os_updates u JOIN devices d ON d.id = u.device_id WHERE d.tenant_id = ",
        );
        sql.bind(tenant).in_scope("d.tenant_id", scope);
        sql.query()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(os_update)
            .collect()
    }

    /// Claims for a retry up to `limit` command-driven updates of enrolled devices that failed at or before
    /// `failed_before`, oldest first. A claimed row's `updated_at` becomes `now`, so no claim (on any node)
    /// takes it again before the backoff has passed once more, whatever the retry then does.
    pub async fn claim_failed_os_updates(
        &self,
        failed_before: UnixTime,
        now: UnixTime,
        limit: i64,
    ) -> Result<Vec<DeviceId>, StoreError> {
        sqlx::query(
            "UPDATE device_os_updates SET updated_at = $2 WHERE stage = 'failed' AND updated_at <= $1 \
             AND device_id IN (SELECT u.device_id FROM device_os_updates u JOIN devices d ON d.id = u.device_id \
               WHERE u.stage = 'failed' AND u.updated_at <= $1 AND d.state = 'enrolled' \
               ORDER BY u.updated_at, u.device_id LIMIT $3) \
             RETURNING device_id",
        )
        .bind(failed_before.0)
        .bind(now.0)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| rows::device_id(r, "device_id"))
        .collect()
    }

    /// The enrolled devices of a tenant in the scope (a policy change re-evaluates each).
    pub async fn enrolled_devices_of_tenant(
        &self,
        scope: Scope,
        tenant: TenantId,
    ) -> Result<Vec<crate::Device>, StoreError> {
        let mut sql = Sql::new(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE state = 'enrolled' AND tenant_id = "
        ));
        sql.bind(tenant)
            .in_scope("tenant_id", scope)
            .push(" ORDER BY id");
        sql.query()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(device_from_row)
            .collect()
    }

    /// The policies of every tenant (a catalogue change re-evaluates the devices under each).
    pub async fn all_os_policies(&self, scope: Scope) -> Result<Vec<OsPolicyRecord>, StoreError> {
        let mut sql = Sql::new(&format!(
            "SELECT {POLICY_COLUMNS} FROM os_policies WHERE 1 = 1"
        ));
        sql.in_scope("tenant_id", scope).push(" ORDER BY tenant_id");
        sql.query()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(policy)
            .collect()
    }
}

impl UnitOfWork {
    /// Creates or replaces the tenant's policy; returns it with its new revision.
    pub async fn put_os_policy(
        &mut self,
        p: &OsPolicyRecord,
    ) -> Result<OsPolicyRecord, StoreError> {
        let row = sqlx::query(
            "INSERT INTO os_policies (tenant_id, target, pinned_version, pinned_build, deadline_local, \
             details_url, revision, updated_at, updated_by) VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $8) \
             ON CONFLICT (tenant_id) DO UPDATE SET target = excluded.target, \
             pinned_version = excluded.pinned_version, pinned_build = excluded.pinned_build, \
             deadline_local = excluded.deadline_local, details_url = excluded.details_url, \
             revision = os_policies.revision + 1, updated_at = excluded.updated_at, \
             updated_by = excluded.updated_by RETURNING revision",
        )
        .bind(p.tenant_id.to_string())
        .bind(p.target.as_str())
        .bind(p.pinned_version.as_deref())
        .bind(p.pinned_build.as_deref())
        .bind(p.deadline_local.as_str())
        .bind(p.details_url.as_deref())
        .bind(p.updated_at.0)
        .bind(p.updated_by.as_deref())
        .fetch_one(self.conn()?)
        .await?;
        Ok(OsPolicyRecord {
            revision: rows::int(&row, "revision")?,
            ..p.clone()
        })
    }

    /// The tenant's policy, inside the unit.
    pub async fn os_policy(
        &mut self,
        tenant: TenantId,
    ) -> Result<Option<OsPolicyRecord>, StoreError> {
        policy_of(self, tenant).await
    }

    /// A device's command-driven update, inside the unit.
    pub async fn device_os_update(
        &mut self,
        device: DeviceId,
    ) -> Result<Option<DeviceOsUpdateRecord>, StoreError> {
        os_update_of(self, device).await
    }

    /// Queues the next command of a device's update and records its stage, unless a command of the update
    /// still waits (then nothing is queued; returns false). One conditional statement decides.
    pub async fn queue_os_update_step(
        &mut self,
        device: DeviceId,
        target_version: &str,
        stage: &str,
        product_key: Option<&str>,
        command: &NewCommand,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        sqlx::query(
            "INSERT INTO device_os_updates (device_id, target_version, stage, updated_at) \
             VALUES ($1, $2, 'checking', $3) ON CONFLICT (device_id) DO NOTHING",
        )
        .bind(device.to_string())
        .bind(target_version)
        .bind(now.0)
        .execute(self.conn()?)
        .await?;
        let claimed = sqlx::query(
            "UPDATE device_os_updates SET target_version = $2, stage = $3, product_key = $4, \
             pending_command = $5, last_error = NULL, updated_at = $6 WHERE device_id = $1 \
             AND (pending_command IS NULL OR NOT EXISTS (SELECT 1 FROM commands k \
               WHERE k.command_uuid = device_os_updates.pending_command \
               AND k.status IN ('queued', 'sent', 'not_now')))",
        )
        .bind(device.to_string())
        .bind(target_version)
        .bind(stage)
        .bind(product_key)
        .bind(command.uuid.as_str())
        .bind(now.0)
        .execute(self.conn()?)
        .await?
        .rows_affected();
        if claimed == 1 {
            self.enqueue_commands(std::slice::from_ref(command)).await?;
        }
        Ok(claimed == 1)
    }

    /// A command of the update was answered: the stage it leads to (and the error when it failed).
    pub async fn os_update_answered(
        &mut self,
        device: DeviceId,
        command: &CommandUuid,
        stage: &str,
        product_key: Option<&str>,
        error: Option<&str>,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE device_os_updates SET stage = $3, product_key = COALESCE($4, product_key), \
             last_error = $5, pending_command = NULL, updated_at = $6 \
             WHERE device_id = $1 AND pending_command = $2",
        )
        .bind(device.to_string())
        .bind(command.as_str())
        .bind(stage)
        .bind(product_key)
        .bind(error)
        .bind(now.0)
        .execute(self.conn()?)
        .await?;
        Ok(())
    }

    /// Progress read from an OSUpdateStatus (no command of the update waits for it).
    pub async fn os_update_progress(
        &mut self,
        device: DeviceId,
        stage: &str,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE device_os_updates SET stage = $2, updated_at = $3 WHERE device_id = $1",
        )
        .bind(device.to_string())
        .bind(stage)
        .bind(now.0)
        .execute(self.conn()?)
        .await?;
        Ok(())
    }
}
