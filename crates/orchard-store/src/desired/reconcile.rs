//! The reconciler's rows: claiming dirty devices, reading what they should and do have, and queueing profile
//! commands behind a guard. The guard is the `device_profiles` row: a command is queued only by the statement
//! that moves the row's `pending_command` from NULL to the new command's uuid, so two passes (two nodes on one
//! PostgreSQL) that planned the same install queue it once — the loser's UPDATE matches nothing.

use std::collections::BTreeSet;

use orchard_types::{DeviceId, GroupId, ProfileId, TenantId, Udid, UnixTime};

use crate::desired::groups::{group_id, in_list, values_list, ROWS_PER_STATEMENT};
use crate::unit::Db;
use crate::{rows, Backend, NewCommand, Store, StoreError, UnitOfWork};

/// A claimed device as the reconciler needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcileDevice {
    pub id: DeviceId,
    pub tenant_id: TenantId,
    pub udid: Udid,
    pub enrolled: bool,
    /// `OSVersion` as last reported (decides whether profiles may travel as declarations).
    pub os_version: Option<String>,
}

/// A profile as the reconciler needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcileProfile {
    pub id: ProfileId,
    /// None: global.
    pub tenant_id: Option<TenantId>,
    pub identifier: String,
    pub latest_version: i64,
    pub archived: bool,
}

/// What a device has of a profile, with whether its pending command is still waiting for the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownDeviceProfile {
    pub device_id: DeviceId,
    pub profile_id: ProfileId,
    pub installed_version: Option<i64>,
    pub installed_payload_uuid: Option<String>,
    pub pending_action: Option<String>,
    pub pending_command: Option<String>,
    /// The pending command is still queued, sent or NotNow (false: it expired or failed unanswered).
    pub pending_live: bool,
    pub next_attempt_at: Option<UnixTime>,
    pub reconciled: bool,
    /// The version the device's declaration set names (`configuration.legacy`), if the profile travels so.
    pub declared_version: Option<i64>,
}

/// An install or removal the reconciler wants queued.
#[derive(Debug, Clone)]
pub struct PlannedProfileCommand {
    pub command: NewCommand,
    pub profile_id: ProfileId,
    /// `install` or `remove`.
    pub action: &'static str,
    pub version: Option<i64>,
}

fn profile_id(r: &sqlx::any::AnyRow, column: &str) -> Result<ProfileId, StoreError> {
    let text = rows::text(r, column)?;
    ProfileId::parse(&text).map_err(|e| StoreError::Corrupt(format!("column {column}: {e}")))
}

fn bind_ids<'q, T: ToString>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ids: &[T],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for id in ids {
        query = query.bind(id.to_string());
    }
    query
}

async fn declared_profiles(
    db: &mut impl Db,
    device: DeviceId,
) -> Result<Vec<(ProfileId, i64)>, StoreError> {
    // Only an enrolled device's: a checked-out or retired iPad's declared profiles are not served.
    sqlx::query(
        "SELECT dp.profile_id, dp.declared_version FROM device_profiles dp \
         JOIN devices d ON d.id = dp.device_id \
         WHERE dp.device_id = $1 AND dp.declared_version IS NOT NULL AND d.state = 'enrolled' \
         ORDER BY dp.profile_id",
    )
    .bind(device.to_string())
    .fetch_all(db.conn()?)
    .await?
    .iter()
    .map(|r| {
        Ok((
            profile_id(r, "profile_id")?,
            rows::int(r, "declared_version")?,
        ))
    })
    .collect()
}

/// What a claim of work-set marks adds to its row selection: on PostgreSQL it skips the marks another unit holds
/// (SQLite has one writer at a time).
fn skip_locked(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    }
}

impl UnitOfWork {
    /// Takes up to `limit` devices off the work set (oldest marks first). On PostgreSQL rows another pass
    /// holds are skipped; the marks go only if this unit commits.
    pub async fn claim_dirty_devices(
        &mut self,
        limit: i64,
    ) -> Result<Vec<ReconcileDevice>, StoreError> {
        let lock = skip_locked(self.backend());
        let claimed = sqlx::query(&format!(
            "DELETE FROM reconcile_dirty WHERE device_id IN \
             (SELECT device_id FROM reconcile_dirty ORDER BY marked_at, device_id LIMIT $1{lock}) \
             RETURNING device_id"
        ))
        .bind(limit.max(0))
        .fetch_all(self.conn()?)
        .await?
        .iter()
        .map(|r| rows::device_id(r, "device_id"))
        .collect::<Result<Vec<_>, _>>()?;
        self.reconcile_devices(&claimed).await
    }

    /// Takes one device off the work set, for its own session to plan its commands: None when it is not
    /// there, or (PostgreSQL) when a reconciler pass holds its mark. That pass queues its commands and
    /// pushes; the device is not kept waiting for it.
    pub async fn claim_dirty_device(
        &mut self,
        device: DeviceId,
    ) -> Result<Option<ReconcileDevice>, StoreError> {
        let lock = skip_locked(self.backend());
        let claimed = sqlx::query(&format!(
            "DELETE FROM reconcile_dirty WHERE device_id IN \
             (SELECT device_id FROM reconcile_dirty WHERE device_id = $1{lock}) RETURNING device_id"
        ))
        .bind(device.to_string())
        .fetch_optional(self.conn()?)
        .await?;
        if claimed.is_none() {
            return Ok(None);
        }
        Ok(self.reconcile_devices(&[device]).await?.pop())
    }

    /// The devices as the reconciler needs them.
    async fn reconcile_devices(
        &mut self,
        claimed: &[DeviceId],
    ) -> Result<Vec<ReconcileDevice>, StoreError> {
        let mut devices = Vec::with_capacity(claimed.len());
        for chunk in claimed.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "SELECT id, tenant_id, udid, state, os_version FROM devices WHERE id IN ({})",
                in_list(self.backend(), 1, chunk.len())
            );
            for r in bind_ids(sqlx::query(&sql), chunk)
                .fetch_all(self.conn()?)
                .await?
            {
                devices.push(ReconcileDevice {
                    id: rows::device_id(&r, "id")?,
                    tenant_id: rows::tenant_id(&r, "tenant_id")?,
                    udid: rows::udid(&r, "udid")?,
                    enrolled: rows::text(&r, "state")? == "enrolled",
                    os_version: rows::opt_text(&r, "os_version")?,
                });
            }
        }
        Ok(devices)
    }

    /// The groups each of these devices is a member of.
    pub async fn memberships_of(
        &mut self,
        devices: &[DeviceId],
    ) -> Result<Vec<(DeviceId, GroupId)>, StoreError> {
        let mut out = Vec::new();
        for chunk in devices.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "SELECT device_id, group_id FROM device_group_members WHERE device_id IN ({})",
                in_list(self.backend(), 1, chunk.len())
            );
            for r in bind_ids(sqlx::query(&sql), chunk)
                .fetch_all(self.conn()?)
                .await?
            {
                out.push((rows::device_id(&r, "device_id")?, group_id(&r, "group_id")?));
            }
        }
        Ok(out)
    }

    /// What these devices have of every profile Orchard tracks for them.
    pub async fn known_profiles_of(
        &mut self,
        devices: &[DeviceId],
    ) -> Result<Vec<KnownDeviceProfile>, StoreError> {
        let mut out = Vec::new();
        for chunk in devices.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "SELECT dp.device_id, dp.profile_id, dp.installed_version, dp.installed_payload_uuid, \
                 dp.pending_action, dp.pending_command, dp.next_attempt_at, dp.reconciled, dp.declared_version, \
                 CASE WHEN c.command_uuid IS NULL THEN 0 ELSE 1 END AS pending_live \
                 FROM device_profiles dp LEFT JOIN commands c ON c.command_uuid = dp.pending_command \
                   AND c.status IN ('queued', 'sent', 'not_now') \
                 WHERE dp.device_id IN ({})",
                in_list(self.backend(), 1, chunk.len())
            );
            for r in bind_ids(sqlx::query(&sql), chunk)
                .fetch_all(self.conn()?)
                .await?
            {
                out.push(KnownDeviceProfile {
                    device_id: rows::device_id(&r, "device_id")?,
                    profile_id: profile_id(&r, "profile_id")?,
                    installed_version: rows::opt_int(&r, "installed_version")?,
                    installed_payload_uuid: rows::opt_text(&r, "installed_payload_uuid")?,
                    pending_action: rows::opt_text(&r, "pending_action")?,
                    pending_command: rows::opt_text(&r, "pending_command")?,
                    pending_live: rows::boolean(&r, "pending_live")?,
                    next_attempt_at: rows::opt_time(&r, "next_attempt_at")?,
                    reconciled: rows::boolean(&r, "reconciled")?,
                    declared_version: rows::opt_int(&r, "declared_version")?,
                });
            }
        }
        Ok(out)
    }

    /// The profiles with these ids.
    pub async fn reconcile_profiles(
        &mut self,
        ids: &[ProfileId],
    ) -> Result<Vec<ReconcileProfile>, StoreError> {
        let mut out = Vec::new();
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "SELECT id, tenant_id, identifier, latest_version, archived_at FROM profiles WHERE id IN ({})",
                in_list(self.backend(), 1, chunk.len())
            );
            for r in bind_ids(sqlx::query(&sql), chunk)
                .fetch_all(self.conn()?)
                .await?
            {
                out.push(ReconcileProfile {
                    id: profile_id(&r, "id")?,
                    tenant_id: rows::opt_tenant_id(&r, "tenant_id")?,
                    identifier: rows::text(&r, "identifier")?,
                    latest_version: rows::int(&r, "latest_version")?,
                    archived: rows::opt_time(&r, "archived_at")?.is_some(),
                });
            }
        }
        Ok(out)
    }

    /// [`Store::declared_profiles`] inside this unit.
    pub async fn declared_profiles(
        &mut self,
        device: DeviceId,
    ) -> Result<Vec<(ProfileId, i64)>, StoreError> {
        declared_profiles(self, device).await
    }

    /// Sets, per device, the versions its declaration set names (`None`: no longer declared) and moves each
    /// of those devices' declared-profiles revision once, so every node's cached set for them is stale.
    pub async fn set_declared_profiles(
        &mut self,
        changes: &[(DeviceId, ProfileId, Option<i64>)],
        now: UnixTime,
    ) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        for chunk in changes.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO device_profiles (device_id, profile_id, updated_at) VALUES {} \
                 ON CONFLICT (device_id, profile_id) DO NOTHING",
                values_list(self.backend(), chunk.len(), 3)
            );
            let mut query = sqlx::query(&sql);
            for (device, profile, _) in chunk {
                query = query
                    .bind(device.to_string())
                    .bind(profile.to_string())
                    .bind(now.0);
            }
            query.execute(self.conn()?).await?;
        }
        for (device, profile, version) in changes {
            sqlx::query(
                "UPDATE device_profiles SET declared_version = $3, updated_at = $4, \
                 installed_version = CASE WHEN $3 IS NULL THEN NULL ELSE installed_version END \
                 WHERE device_id = $1 AND profile_id = $2",
            )
            .bind(device.to_string())
            .bind(profile.to_string())
            .bind(*version)
            .bind(now.0)
            .execute(self.conn()?)
            .await?;
        }
        let mut devices: Vec<DeviceId> = changes.iter().map(|c| c.0).collect();
        devices.sort();
        devices.dedup();
        for chunk in devices.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "UPDATE devices SET declared_profiles_revision = declared_profiles_revision + 1 \
                 WHERE id IN ({})",
                in_list(self.backend(), 1, chunk.len())
            );
            bind_ids(sqlx::query(&sql), chunk)
                .execute(self.conn()?)
                .await?;
        }
        Ok(())
    }

    /// Forgets a pending command that can no longer be answered (expired, failed unanswered), if it is still
    /// the pending one.
    pub async fn clear_dead_pending(
        &mut self,
        device: DeviceId,
        profile: ProfileId,
        command: &str,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE device_profiles SET pending_action = NULL, pending_version = NULL, pending_command = NULL, \
             updated_at = $4 WHERE device_id = $1 AND profile_id = $2 AND pending_command = $3",
        )
        .bind(device.to_string())
        .bind(profile.to_string())
        .bind(command)
        .bind(now.0)
        .execute(self.conn()?)
        .await?;
        Ok(())
    }

    /// Queues the planned commands whose (device, profile) has nothing pending, and records each as pending
    /// in the same statement that checks it; returns how many were queued. A plan another pass queued first
    /// is dropped.
    pub async fn queue_planned_profile_commands(
        &mut self,
        planned: &[PlannedProfileCommand],
        now: UnixTime,
    ) -> Result<usize, StoreError> {
        let mut queued = 0;
        for chunk in planned.chunks(ROWS_PER_STATEMENT) {
            // The guard, in the statement that records the plan: a new row takes it, an existing one only if
            // nothing is pending on it. RETURNING names the rows that took it (an upsert whose WHERE fails
            // returns nothing, on both backends).
            let sql = format!(
                "INSERT INTO device_profiles (device_id, profile_id, pending_action, pending_version, \
                 pending_command, reconciled, updated_at) VALUES {} \
                 ON CONFLICT (device_id, profile_id) DO UPDATE SET \
                 pending_action = excluded.pending_action, pending_version = excluded.pending_version, \
                 pending_command = excluded.pending_command, \
                 reconciled = CASE WHEN excluded.pending_action = 'install' THEN 1 \
                 ELSE device_profiles.reconciled END, \
                 next_attempt_at = NULL, updated_at = excluded.updated_at \
                 WHERE device_profiles.pending_command IS NULL \
                 RETURNING pending_command",
                values_list(self.backend(), chunk.len(), 7)
            );
            let mut query = sqlx::query(&sql);
            for p in chunk {
                query = query
                    .bind(p.command.device_id.to_string())
                    .bind(p.profile_id.to_string())
                    .bind(p.action)
                    .bind(p.version)
                    .bind(p.command.uuid.as_str())
                    .bind(i64::from(p.action == "install"))
                    .bind(now.0);
            }
            let won: BTreeSet<String> = query
                .fetch_all(self.conn()?)
                .await?
                .iter()
                .map(|r| rows::text(r, "pending_command"))
                .collect::<Result<_, _>>()?;
            let commands: Vec<NewCommand> = chunk
                .iter()
                .filter(|p| won.contains(p.command.uuid.as_str()))
                .map(|p| p.command.clone())
                .collect();
            queued += commands.len();
            self.enqueue_commands(&commands).await?;
        }
        Ok(queued)
    }
}

impl Store {
    /// The profiles this device's declaration set names, with their versions (profile id order).
    pub async fn declared_profiles(
        &self,
        device: DeviceId,
    ) -> Result<Vec<(ProfileId, i64)>, StoreError> {
        declared_profiles(&mut self.pooled().await?, device).await
    }

    /// Records what a device's declaration status says of a declared profile: the version it has installed
    /// (None: it failed or removed it), with the reason of a failure. Only rows still declared at that
    /// version change, so a late status of an older version changes nothing.
    pub async fn declared_profile_reported(
        &self,
        device: DeviceId,
        profile: ProfileId,
        version: i64,
        installed: bool,
        error: Option<&str>,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        let changed = sqlx::query(
            "UPDATE device_profiles SET \
             installed_version = CASE WHEN $4 = 1 THEN $3 ELSE installed_version END, \
             last_error = $5, updated_at = $6 \
             WHERE device_id = $1 AND profile_id = $2 AND declared_version = $3",
        )
        .bind(device.to_string())
        .bind(profile.to_string())
        .bind(version)
        .bind(i64::from(installed))
        .bind(error)
        .bind(now.0)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(changed > 0)
    }

    /// Failed profile commands whose retry is due: their devices join the work set (the retry time is
    /// cleared, so a device is marked once per failure). Returns how many.
    pub async fn mark_due_profile_retries(&self, now: UnixTime) -> Result<usize, StoreError> {
        let mut unit = self.begin_unit().await?;
        let due = sqlx::query(
            "UPDATE device_profiles SET next_attempt_at = NULL \
             WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= $1 RETURNING device_id",
        )
        .bind(now.0)
        .fetch_all(unit.conn()?)
        .await?
        .iter()
        .map(|r| rows::device_id(r, "device_id"))
        .collect::<Result<Vec<_>, _>>()?;
        crate::desired::groups::mark_dirty(&mut unit, &due, now).await?;
        unit.commit().await?;
        Ok(due.len())
    }

    /// How many devices wait for the reconciler.
    pub async fn reconcile_backlog(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM reconcile_dirty")
            .fetch_one(&self.pool)
            .await?;
        rows::int(&row, "n")
    }

    /// Marks devices for the reconciler in a transaction of their own.
    pub async fn mark_devices_dirty(
        &self,
        devices: &[DeviceId],
        now: UnixTime,
    ) -> Result<(), StoreError> {
        let mut unit = self.begin_unit().await?;
        crate::desired::groups::mark_dirty(&mut unit, devices, now).await?;
        unit.commit().await
    }
}
