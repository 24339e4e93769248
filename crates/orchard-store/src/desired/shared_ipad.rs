//! `shared_ipad_policies` (a tenant's and its groups' SharedDeviceConfiguration settings) and
//! `device_shared_ipad_settings` (what each Shared iPad acknowledged, and the Settings command waiting).

use orchard_types::{DeviceId, GroupId, TenantId, UnixTime};
use sqlx::any::AnyRow;

use crate::desired::groups::{group_id, in_list, ROWS_PER_STATEMENT};
use crate::sql::Sql;
use crate::unit::Db;
use crate::{rows, NewCommand, Scope, Store, StoreError, UnitOfWork};

/// A tenant's (no group) or a group's Shared iPad settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedIpadPolicyRecord {
    pub tenant_id: TenantId,
    pub group_id: Option<GroupId>,
    /// The group's name (read only; ignored when saving).
    pub group_name: Option<String>,
    /// Only the keys set, as core serializes them.
    pub settings_json: String,
    /// Grows with every change of this policy (set by the store).
    pub revision: i64,
    pub updated_at: UnixTime,
    pub updated_by: Option<String>,
}

/// What Orchard knows of one enrolled device's Shared iPad settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharedIpadDeviceState {
    pub device_id: Option<DeviceId>,
    /// Its latest DeviceInformation inventory section (says `IsMultiUser`).
    pub device_information_json: Option<String>,
    pub applied_hash: Option<String>,
    pub applied_json: Option<String>,
    pub applied_at: Option<UnixTime>,
    pub pending_hash: Option<String>,
    pub pending_command: Option<String>,
    /// The pending command is still queued, sent or NotNow (false: it expired or failed unanswered).
    pub pending_live: bool,
    pub last_error: Option<String>,
}

const POLICY_COLUMNS: &str =
    "p.tenant_id, p.group_id, g.name AS group_name, p.settings_json, p.revision, \
                              p.updated_at, p.updated_by";
const POLICY_FROM: &str = "shared_ipad_policies p LEFT JOIN device_groups g ON g.id = p.group_id";

fn policy(r: &AnyRow) -> Result<SharedIpadPolicyRecord, StoreError> {
    Ok(SharedIpadPolicyRecord {
        tenant_id: rows::tenant_id(r, "tenant_id")?,
        group_id: match rows::opt_text(r, "group_id")? {
            Some(_) => Some(group_id(r, "group_id")?),
            None => None,
        },
        group_name: rows::opt_text(r, "group_name")?,
        settings_json: rows::text(r, "settings_json")?,
        revision: rows::int(r, "revision")?,
        updated_at: rows::time(r, "updated_at")?,
        updated_by: rows::opt_text(r, "updated_by")?,
    })
}

const STATE_SELECT: &str = "SELECT d.id AS device_id, i.json AS device_information_json, s.applied_hash, \
     s.applied_json, s.applied_at, s.pending_hash, s.pending_command, s.last_error, c.status AS pending_status \
     FROM devices d \
     LEFT JOIN inventory_sections i ON i.device_id = d.id AND i.section = 'device_information' \
     LEFT JOIN device_shared_ipad_settings s ON s.device_id = d.id \
     LEFT JOIN commands c ON c.command_uuid = s.pending_command";

fn state(r: &AnyRow) -> Result<SharedIpadDeviceState, StoreError> {
    let pending_status = rows::opt_text(r, "pending_status")?;
    Ok(SharedIpadDeviceState {
        device_id: Some(rows::device_id(r, "device_id")?),
        device_information_json: rows::opt_text(r, "device_information_json")?,
        applied_hash: rows::opt_text(r, "applied_hash")?,
        applied_json: rows::opt_text(r, "applied_json")?,
        applied_at: rows::opt_time(r, "applied_at")?,
        pending_hash: rows::opt_text(r, "pending_hash")?,
        pending_command: rows::opt_text(r, "pending_command")?,
        pending_live: matches!(
            pending_status.as_deref(),
            Some("queued" | "sent" | "not_now")
        ),
        last_error: rows::opt_text(r, "last_error")?,
    })
}

async fn policies_of_tenant(
    db: &mut impl Db,
    tenant: TenantId,
) -> Result<Vec<SharedIpadPolicyRecord>, StoreError> {
    sqlx::query(&format!(
        "SELECT {POLICY_COLUMNS} FROM {POLICY_FROM} WHERE p.tenant_id = $1 \
         ORDER BY p.group_id IS NOT NULL, g.name, p.group_id"
    ))
    .bind(tenant.to_string())
    .fetch_all(db.conn()?)
    .await?
    .iter()
    .map(policy)
    .collect()
}

impl Store {
    /// The tenant's Shared iPad policies in the scope: the tenant's own first, then its groups' by name.
    pub async fn shared_ipad_policies(
        &self,
        scope: Scope,
        tenant: TenantId,
    ) -> Result<Vec<SharedIpadPolicyRecord>, StoreError> {
        let mut sql = Sql::new(&format!(
            "SELECT {POLICY_COLUMNS} FROM {POLICY_FROM} WHERE p.tenant_id = "
        ));
        sql.bind(tenant)
            .in_scope("p.tenant_id", scope)
            .push(" ORDER BY p.group_id IS NOT NULL, g.name, p.group_id");
        sql.query()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(policy)
            .collect()
    }

    /// Every enrolled device of the tenant (in the scope) with what Orchard knows of its Shared iPad settings.
    pub async fn shared_ipad_states_of_tenant(
        &self,
        scope: Scope,
        tenant: TenantId,
    ) -> Result<Vec<SharedIpadDeviceState>, StoreError> {
        let mut sql = Sql::new(&format!(
            "{STATE_SELECT} WHERE d.state = 'enrolled' AND d.tenant_id = "
        ));
        sql.bind(tenant)
            .in_scope("d.tenant_id", scope)
            .push(" ORDER BY d.id");
        sql.query()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(state)
            .collect()
    }
}

impl UnitOfWork {
    /// Saves the tenant's (`group` None) or a group's policy, replacing the one there was; the revision grows.
    pub async fn put_shared_ipad_policy(
        &mut self,
        record: &SharedIpadPolicyRecord,
    ) -> Result<SharedIpadPolicyRecord, StoreError> {
        let previous = self
            .delete_shared_ipad_policy(record.tenant_id, record.group_id)
            .await?;
        let revision = previous.map_or(1, |p| p.revision + 1);
        sqlx::query(
            "INSERT INTO shared_ipad_policies (tenant_id, group_id, settings_json, revision, updated_at, \
             updated_by) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(record.tenant_id.to_string())
        .bind(record.group_id.map(|g| g.to_string()))
        .bind(&record.settings_json)
        .bind(revision)
        .bind(record.updated_at.0)
        .bind(record.updated_by.as_deref())
        .execute(self.conn()?)
        .await?;
        Ok(SharedIpadPolicyRecord {
            revision,
            group_name: None,
            ..record.clone()
        })
    }

    /// Deletes the tenant's (`group` None) or a group's policy; returns it when there was one.
    pub async fn delete_shared_ipad_policy(
        &mut self,
        tenant: TenantId,
        group: Option<GroupId>,
    ) -> Result<Option<SharedIpadPolicyRecord>, StoreError> {
        let existing = policies_of_tenant(self, tenant)
            .await?
            .into_iter()
            .find(|p| p.group_id == group);
        if existing.is_some() {
            let (sql, bind_group) = match group {
                None => (
                    "DELETE FROM shared_ipad_policies WHERE tenant_id = $1 AND group_id IS NULL",
                    None,
                ),
                Some(g) => (
                    "DELETE FROM shared_ipad_policies WHERE tenant_id = $1 AND group_id = $2",
                    Some(g.to_string()),
                ),
            };
            let mut query = sqlx::query(sql).bind(tenant.to_string());
            if let Some(g) = bind_group {
                query = query.bind(g);
            }
            query.execute(self.conn()?).await?;
        }
        Ok(existing)
    }

    /// The Shared iPad policies of these tenants (the reconciler's input).
    pub async fn shared_ipad_policies_of_tenants(
        &mut self,
        tenants: &[TenantId],
    ) -> Result<Vec<SharedIpadPolicyRecord>, StoreError> {
        let mut out = Vec::new();
        for tenant in tenants {
            out.extend(policies_of_tenant(self, *tenant).await?);
        }
        Ok(out)
    }

    /// What Orchard knows of these devices' Shared iPad settings (the reconciler's input).
    pub async fn shared_ipad_states_of(
        &mut self,
        devices: &[DeviceId],
    ) -> Result<Vec<SharedIpadDeviceState>, StoreError> {
        let mut out = Vec::new();
        for chunk in devices.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "{STATE_SELECT} WHERE d.id IN ({})",
                in_list(self.backend(), 1, chunk.len())
            );
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(id.to_string());
            }
            for r in query.fetch_all(self.conn()?).await? {
                out.push(state(&r)?);
            }
        }
        Ok(out)
    }

    /// Queues `command` (a Settings command carrying the settings of `hash`) for its device when nothing is
    /// pending there, or only `dead_pending` (a command that can no longer be answered): the guard and the
    /// record are one statement, so of several passes exactly one queues. Returns whether this one did.
    pub async fn queue_shared_ipad_settings(
        &mut self,
        command: &NewCommand,
        hash: &str,
        settings_json: &str,
        dead_pending: Option<&str>,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        let device = command.device_id.to_string();
        sqlx::query(
            "INSERT INTO device_shared_ipad_settings (device_id, updated_at) VALUES ($1, $2) \
             ON CONFLICT (device_id) DO NOTHING",
        )
        .bind(&device)
        .bind(now.0)
        .execute(self.conn()?)
        .await?;
        let won = sqlx::query(
            "UPDATE device_shared_ipad_settings SET pending_command = $2, pending_hash = $3, pending_json = $4, \
             updated_at = $5 WHERE device_id = $1 AND (pending_command IS NULL OR pending_command = $6) \
             RETURNING device_id",
        )
        .bind(&device)
        .bind(command.uuid.as_str())
        .bind(hash)
        .bind(settings_json)
        .bind(now.0)
        .bind(dead_pending.unwrap_or(""))
        .fetch_optional(self.conn()?)
        .await?
        .is_some();
        if won {
            self.enqueue_commands(std::slice::from_ref(command)).await?;
        }
        Ok(won)
    }

    /// The device answered the pending Settings command `command`: acknowledged (`error` None) makes its
    /// settings the applied ones; an error is kept. Returns false when `command` is not the pending one.
    pub async fn shared_ipad_settings_reported(
        &mut self,
        device: DeviceId,
        command: &str,
        error: Option<&str>,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        let sql = match error {
            None => {
                "UPDATE device_shared_ipad_settings SET applied_hash = pending_hash, applied_json = pending_json, \
                 applied_at = $3, pending_hash = NULL, pending_json = NULL, pending_command = NULL, \
                 last_error = NULL, updated_at = $3 WHERE device_id = $1 AND pending_command = $2 \
                 RETURNING device_id"
            }
            Some(_) => {
                "UPDATE device_shared_ipad_settings SET pending_hash = NULL, pending_json = NULL, \
                 pending_command = NULL, last_error = $4, updated_at = $3 \
                 WHERE device_id = $1 AND pending_command = $2 RETURNING device_id"
            }
        };
        let mut query = sqlx::query(sql)
            .bind(device.to_string())
            .bind(command)
            .bind(now.0);
        if let Some(e) = error {
            query = query.bind(e);
        }
        Ok(query.fetch_optional(self.conn()?).await?.is_some())
    }
}
