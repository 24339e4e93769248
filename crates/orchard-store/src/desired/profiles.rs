//! The profile library's rows: profiles (a tenant's, or global with a NULL tenant), their immutable numbered
//! versions, and `device_profiles`, what Orchard knows each device has of a profile and what it asked for.
//! Global profiles are read through [`Sql::in_scope_or_global`], so a tenant scope sees its own and the global
//! ones and never another tenant's.

use orchard_types::{CommandUuid, DeviceId, ProfileId, TenantId, UnixTime};
use sqlx::any::AnyRow;

use crate::desired::groups::KEEP_EARLIEST_MARK;
use crate::sql::Sql;
use crate::unit::Db;
use crate::{rows, NewCommand, Scope, Store, StoreError, UnitOfWork};

/// A profile of the library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileRecord {
    pub id: ProfileId,
    /// None: a global profile, offered to every tenant and changed only by operators.
    pub tenant_id: Option<TenantId>,
    pub name: String,
    /// The profile's PayloadIdentifier, the same in every version.
    pub identifier: String,
    pub latest_version: i64,
    pub created_at: UnixTime,
    pub created_by: Option<String>,
    pub updated_at: UnixTime,
    pub archived_at: Option<UnixTime>,
}

/// Where a version came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileSource {
    /// A .mobileconfig uploaded as a plist.
    Upload,
    /// A signed .mobileconfig, unwrapped (its signer is kept for display).
    SignedUpload,
    /// Built from JSON.
    Json,
}

impl ProfileSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ProfileSource::Upload => "upload",
            ProfileSource::SignedUpload => "signed_upload",
            ProfileSource::Json => "json",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "upload" => ProfileSource::Upload,
            "signed_upload" => ProfileSource::SignedUpload,
            "json" => ProfileSource::Json,
            other => return Err(StoreError::Corrupt(format!("profile source {other:?}"))),
        })
    }
}

/// One immutable version of a profile.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileVersionRecord {
    pub profile_id: ProfileId,
    pub version: i64,
    /// The top-level PayloadUUID of this version (new for every version).
    pub payload_uuid: String,
    pub display_name: Option<String>,
    pub payload_types: Vec<String>,
    /// The whole profile plist, secrets included, sealed under the data key (bound to profile and version).
    pub plist_sealed: Vec<u8>,
    /// The profile as people see it: JSON with every secret replaced by a marker.
    pub redacted_json: String,
    /// How many values the redacted form hides.
    pub sealed_secrets: i64,
    /// Validated for Shared iPad (and its user channel).
    pub shared_ipad: bool,
    /// Validated for a Shared iPad's user channel.
    pub user_channel: bool,
    pub source: ProfileSource,
    pub signer_subject: Option<String>,
    pub signer_issuer: Option<String>,
    pub signer_not_after: Option<UnixTime>,
    pub created_at: UnixTime,
    pub created_by: Option<String>,
}

/// What a device has of a profile, and the command Orchard is waiting for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceProfileRecord {
    pub device_id: DeviceId,
    pub profile_id: ProfileId,
    /// The version the device has, when its PayloadUUID is one of ours.
    pub installed_version: Option<i64>,
    /// Set while the device has the profile (whatever version).
    pub installed_payload_uuid: Option<String>,
    pub installed_at: Option<UnixTime>,
    /// `install` or `remove`, queued and not answered yet.
    pub pending_action: Option<String>,
    pub pending_version: Option<i64>,
    pub pending_command: Option<String>,
    pub last_error: Option<String>,
    pub updated_at: UnixTime,
    /// Failed commands since the last success (the reconciler's retries).
    pub attempts: i64,
    /// When the reconciler may try again after a failure.
    pub next_attempt_at: Option<UnixTime>,
    /// The reconciler installed it (and so may remove it).
    pub reconciled: bool,
    /// The version the device's declaration set names, when the profile travels as a declaration.
    pub declared_version: Option<i64>,
}

/// A profile command to queue with its bookkeeping.
#[derive(Debug, Clone)]
pub struct ProfileCommand {
    pub command: NewCommand,
    pub profile_id: ProfileId,
    /// `install` or `remove`.
    pub action: &'static str,
    /// The version an install installs.
    pub version: Option<i64>,
}

const PROFILE_COLUMNS: &str =
    "id, tenant_id, name, identifier, latest_version, created_at, created_by, \
                               updated_at, archived_at";
const VERSION_COLUMNS: &str = "profile_id, version, payload_uuid, display_name, payload_types, plist_sealed, \
                               redacted_json, sealed_secrets, shared_ipad, user_channel, source, signer_subject, signer_issuer, \
                               signer_not_after, created_at, created_by";
const DEVICE_PROFILE_COLUMNS: &str = "dp.device_id, dp.profile_id, dp.installed_version, \
                                      dp.installed_payload_uuid, dp.installed_at, dp.pending_action, \
                                      dp.pending_version, dp.pending_command, dp.last_error, dp.updated_at, \
                                      dp.attempts, dp.next_attempt_at, dp.reconciled, dp.declared_version";

fn profile_id(r: &AnyRow, column: &str) -> Result<ProfileId, StoreError> {
    let text = rows::text(r, column)?;
    ProfileId::parse(&text).map_err(|e| StoreError::Corrupt(format!("column {column}: {e}")))
}

fn profile(r: &AnyRow) -> Result<ProfileRecord, StoreError> {
    Ok(ProfileRecord {
        id: profile_id(r, "id")?,
        tenant_id: rows::opt_tenant_id(r, "tenant_id")?,
        name: rows::text(r, "name")?,
        identifier: rows::text(r, "identifier")?,
        latest_version: rows::int(r, "latest_version")?,
        created_at: rows::time(r, "created_at")?,
        created_by: rows::opt_text(r, "created_by")?,
        updated_at: rows::time(r, "updated_at")?,
        archived_at: rows::opt_time(r, "archived_at")?,
    })
}

fn version(r: &AnyRow) -> Result<ProfileVersionRecord, StoreError> {
    Ok(ProfileVersionRecord {
        profile_id: profile_id(r, "profile_id")?,
        version: rows::int(r, "version")?,
        payload_uuid: rows::text(r, "payload_uuid")?,
        display_name: rows::opt_text(r, "display_name")?,
        payload_types: rows::text(r, "payload_types")?
            .split(',')
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect(),
        plist_sealed: rows::bytes(r, "plist_sealed")?,
        redacted_json: rows::text(r, "redacted_json")?,
        sealed_secrets: rows::int(r, "sealed_secrets")?,
        shared_ipad: rows::boolean(r, "shared_ipad")?,
        user_channel: rows::boolean(r, "user_channel")?,
        source: ProfileSource::parse(&rows::text(r, "source")?)?,
        signer_subject: rows::opt_text(r, "signer_subject")?,
        signer_issuer: rows::opt_text(r, "signer_issuer")?,
        signer_not_after: rows::opt_time(r, "signer_not_after")?,
        created_at: rows::time(r, "created_at")?,
        created_by: rows::opt_text(r, "created_by")?,
    })
}

fn device_profile(r: &AnyRow) -> Result<DeviceProfileRecord, StoreError> {
    Ok(DeviceProfileRecord {
        device_id: rows::device_id(r, "device_id")?,
        profile_id: profile_id(r, "profile_id")?,
        installed_version: rows::opt_int(r, "installed_version")?,
        installed_payload_uuid: rows::opt_text(r, "installed_payload_uuid")?,
        installed_at: rows::opt_time(r, "installed_at")?,
        pending_action: rows::opt_text(r, "pending_action")?,
        pending_version: rows::opt_int(r, "pending_version")?,
        pending_command: rows::opt_text(r, "pending_command")?,
        last_error: rows::opt_text(r, "last_error")?,
        updated_at: rows::time(r, "updated_at")?,
        attempts: rows::int(r, "attempts")?,
        next_attempt_at: rows::opt_time(r, "next_attempt_at")?,
        reconciled: rows::boolean(r, "reconciled")?,
        declared_version: rows::opt_int(r, "declared_version")?,
    })
}

fn owner_key(tenant: Option<TenantId>) -> String {
    tenant.map_or_else(|| "global".to_owned(), |t| t.to_string())
}

async fn insert_version(db: &mut impl Db, v: &ProfileVersionRecord) -> Result<(), StoreError> {
    sqlx::query(&format!(
        "INSERT INTO profile_versions ({VERSION_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
    ))
    .bind(v.profile_id.to_string())
    .bind(v.version)
    .bind(v.payload_uuid.as_str())
    .bind(v.display_name.as_deref())
    .bind(v.payload_types.join(","))
    .bind(v.plist_sealed.as_slice())
    .bind(v.redacted_json.as_str())
    .bind(v.sealed_secrets)
    .bind(i64::from(v.shared_ipad))
    .bind(i64::from(v.user_channel))
    .bind(v.source.as_str())
    .bind(v.signer_subject.as_deref())
    .bind(v.signer_issuer.as_deref())
    .bind(v.signer_not_after.map(|t| t.0))
    .bind(v.created_at.0)
    .bind(v.created_by.as_deref())
    .execute(db.conn()?)
    .await?;
    Ok(())
}

/// Marks for the reconciler every enrolled device of a tenant that assigns the profile, and every device
/// the reconciler installed it on (a new version replaces the old one there).
async fn mark_profile_devices_dirty(
    db: &mut impl Db,
    profile: ProfileId,
    now: UnixTime,
) -> Result<(), StoreError> {
    sqlx::query(&format!(
        "INSERT INTO reconcile_dirty (device_id, marked_at) \
         SELECT d.id, $2 FROM devices d WHERE d.state = 'enrolled' AND (d.tenant_id IN \
           (SELECT a.tenant_id FROM assignments a WHERE a.object_kind = 'profile' AND a.object_id = $1) \
           OR d.id IN (SELECT dp.device_id FROM device_profiles dp WHERE dp.profile_id = $1 AND dp.reconciled = 1)) \
         ORDER BY d.id {KEEP_EARLIEST_MARK}"
    ))
    .bind(profile.to_string())
    .bind(now.0)
    .execute(db.conn()?)
    .await?;
    Ok(())
}

/// `next_attempt_at` after a failure: `base` seconds doubled per earlier attempt, at most 1024 × base.
fn retry_backoff_sql() -> String {
    let mut ladder = String::from("CASE");
    for attempts in 0..10 {
        ladder.push_str(&format!(
            " WHEN attempts = {attempts} THEN {}",
            1_i64 << attempts
        ));
    }
    ladder.push_str(" ELSE 1024 END");
    ladder
}

impl Store {
    /// Creates a profile with its first version, in one transaction. Conflict when a live profile of the same
    /// owner already has the identifier.
    pub async fn create_profile(
        &self,
        p: &ProfileRecord,
        first: &ProfileVersionRecord,
    ) -> Result<(), StoreError> {
        let mut unit = self.begin_unit().await?;
        sqlx::query(&format!(
            "INSERT INTO profiles ({PROFILE_COLUMNS}, owner_key) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))
        .bind(p.id.to_string())
        .bind(p.tenant_id.map(|t| t.to_string()))
        .bind(p.name.as_str())
        .bind(p.identifier.as_str())
        .bind(p.latest_version)
        .bind(p.created_at.0)
        .bind(p.created_by.as_deref())
        .bind(p.updated_at.0)
        .bind(p.archived_at.map(|t| t.0))
        .bind(owner_key(p.tenant_id))
        .execute(unit.conn()?)
        .await?;
        insert_version(&mut unit, first).await?;
        unit.commit().await
    }

    /// Adds the next version: `v.version` must be the profile's latest + 1 and the profile live, or Conflict
    /// (someone else added a version meanwhile, or it was archived). The name may change with it.
    pub async fn add_profile_version(
        &self,
        v: &ProfileVersionRecord,
        name: &str,
    ) -> Result<(), StoreError> {
        let mut unit = self.begin_unit().await?;
        let updated = sqlx::query(
            "UPDATE profiles SET latest_version = $2, updated_at = $3, name = $4 \
             WHERE id = $1 AND latest_version = $5 AND archived_at IS NULL",
        )
        .bind(v.profile_id.to_string())
        .bind(v.version)
        .bind(v.created_at.0)
        .bind(name)
        .bind(v.version - 1)
        .execute(unit.conn()?)
        .await?
        .rows_affected();
        if updated == 0 {
            return Err(StoreError::Conflict(
                "the profile changed meanwhile or was archived".into(),
            ));
        }
        insert_version(&mut unit, v).await?;
        mark_profile_devices_dirty(&mut unit, v.profile_id, v.created_at).await?;
        unit.commit().await
    }

    /// Live profiles: a tenant's own and the global ones (`tenant` Some), or only the global ones (None), in
    /// the scope; by name.
    pub async fn list_profiles(
        &self,
        scope: Scope,
        tenant: Option<TenantId>,
    ) -> Result<Vec<ProfileRecord>, StoreError> {
        let mut sql = Sql::new(&format!(
            "SELECT {PROFILE_COLUMNS} FROM profiles WHERE archived_at IS NULL"
        ));
        match tenant {
            Some(t) => sql
                .push(" AND (tenant_id IS NULL OR tenant_id = ")
                .bind(t)
                .push(")"),
            None => sql.push(" AND tenant_id IS NULL"),
        };
        sql.in_scope_or_global("tenant_id", scope)
            .push(" ORDER BY name, id");
        sql.query()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(profile)
            .collect()
    }

    /// A profile (live or archived) in the scope, global ones included.
    pub async fn get_profile(
        &self,
        scope: Scope,
        id: ProfileId,
    ) -> Result<Option<ProfileRecord>, StoreError> {
        let mut sql = Sql::new(&format!(
            "SELECT {PROFILE_COLUMNS} FROM profiles WHERE id = "
        ));
        sql.bind(id.to_string())
            .in_scope_or_global("tenant_id", scope);
        sql.query()
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(profile)
            .transpose()
    }

    /// Whether a live profile that a device of `tenant` could also get (the tenant's own or a global one; for
    /// a global profile, any) already uses `identifier`.
    pub async fn profile_identifier_taken(
        &self,
        tenant: Option<TenantId>,
        identifier: &str,
    ) -> Result<bool, StoreError> {
        let mut sql = Sql::new(
            "SELECT COUNT(*) AS n FROM profiles WHERE archived_at IS NULL AND identifier = ",
        );
        sql.bind(identifier);
        if let Some(t) = tenant {
            sql.push(" AND (tenant_id IS NULL OR tenant_id = ")
                .bind(t)
                .push(")");
        }
        let row = sql.query().fetch_one(&self.pool).await?;
        Ok(rows::int(&row, "n")? > 0)
    }

    /// Every version of a profile, newest first (the caller found the profile through its scope).
    pub async fn list_profile_versions(
        &self,
        profile: ProfileId,
    ) -> Result<Vec<ProfileVersionRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {VERSION_COLUMNS} FROM profile_versions WHERE profile_id = $1 ORDER BY version DESC"
        ))
        .bind(profile.to_string())
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(version)
        .collect()
    }

    /// One version of a profile (the caller found the profile through its scope).
    pub async fn get_profile_version(
        &self,
        profile: ProfileId,
        number: i64,
    ) -> Result<Option<ProfileVersionRecord>, StoreError> {
        profile_version(&mut self.pooled().await?, profile, number).await
    }
}

impl UnitOfWork {
    /// [`Store::get_profile_version`] inside this unit: a unit never waits for a second connection of the pool
    /// (with SQLite's small pool, units waiting for the write lock may hold all the others).
    pub async fn profile_version(
        &mut self,
        profile: ProfileId,
        number: i64,
    ) -> Result<Option<ProfileVersionRecord>, StoreError> {
        profile_version(self, profile, number).await
    }
}

async fn profile_version(
    db: &mut impl Db,
    profile: ProfileId,
    number: i64,
) -> Result<Option<ProfileVersionRecord>, StoreError> {
    sqlx::query(&format!(
        "SELECT {VERSION_COLUMNS} FROM profile_versions WHERE profile_id = $1 AND version = $2"
    ))
    .bind(profile.to_string())
    .bind(number)
    .fetch_optional(db.conn()?)
    .await?
    .as_ref()
    .map(version)
    .transpose()
}

impl Store {
    /// Archives a live profile: it leaves the lists and takes no new versions or installs; its versions and
    /// what devices have of it stay. NotFound when it is not live.
    pub async fn archive_profile(&self, id: ProfileId, now: UnixTime) -> Result<(), StoreError> {
        let updated = sqlx::query(
            "UPDATE profiles SET archived_at = $2, updated_at = $2 WHERE id = $1 AND archived_at IS NULL",
        )
        .bind(id.to_string())
        .bind(now.0)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if updated == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Queues an InstallProfile or RemoveProfile and records it as the device's pending action for the
    /// profile, in one transaction (a pending action it replaces is forgotten; its command stays queued).
    pub async fn queue_profile_command(&self, c: &ProfileCommand) -> Result<(), StoreError> {
        let mut unit = self.begin_unit().await?;
        unit.enqueue_commands(std::slice::from_ref(&c.command))
            .await?;
        sqlx::query(
            "INSERT INTO device_profiles (device_id, profile_id, pending_action, pending_version, \
             pending_command, updated_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (device_id, profile_id) DO UPDATE SET pending_action = excluded.pending_action, \
             pending_version = excluded.pending_version, pending_command = excluded.pending_command, \
             updated_at = excluded.updated_at",
        )
        .bind(c.command.device_id.to_string())
        .bind(c.profile_id.to_string())
        .bind(c.action)
        .bind(c.version)
        .bind(c.command.uuid.as_str())
        .bind(c.command.queued_at.0)
        .execute(unit.conn()?)
        .await?;
        unit.commit().await
    }

    /// What the devices of `tenant` (in the scope) have of a profile, by device.
    pub async fn list_profile_devices(
        &self,
        scope: Scope,
        tenant: TenantId,
        profile: ProfileId,
    ) -> Result<Vec<DeviceProfileRecord>, StoreError> {
        let mut sql = Sql::new(&format!(
            "SELECT {DEVICE_PROFILE_COLUMNS} FROM device_profiles dp JOIN devices d ON d.id = dp.device_id \
             WHERE dp.profile_id = "
        ));
        sql.bind(profile.to_string())
            .push(" AND d.tenant_id = ")
            .bind(tenant)
            .in_scope("d.tenant_id", scope)
            .push(" ORDER BY dp.device_id");
        sql.query()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(device_profile)
            .collect()
    }

    /// What one device (in the scope) has of one profile.
    pub async fn get_device_profile(
        &self,
        scope: Scope,
        device: DeviceId,
        profile: ProfileId,
    ) -> Result<Option<DeviceProfileRecord>, StoreError> {
        let mut sql = Sql::new(&format!(
            "SELECT {DEVICE_PROFILE_COLUMNS} FROM device_profiles dp JOIN devices d ON d.id = dp.device_id \
             WHERE dp.device_id = "
        ));
        sql.bind(device.to_string())
            .push(" AND dp.profile_id = ")
            .bind(profile.to_string())
            .in_scope("d.tenant_id", scope);
        sql.query()
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(device_profile)
            .transpose()
    }
}

impl UnitOfWork {
    /// The device answered a profile command: an acknowledged install makes its version the installed one, an
    /// acknowledged removal clears it, an error is kept as `last_error`; the pending action ends either way.
    /// Does nothing for commands the library did not queue.
    /// A failure counts an attempt and sets the next try `retry_base_seconds` × 2^(attempts before) later
    /// (the reconciler waits until then); a success resets the count.
    pub async fn profile_command_answered(
        &mut self,
        device: DeviceId,
        command: &CommandUuid,
        error: Option<&str>,
        retry_base_seconds: i64,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        let clear_pending = "pending_action = NULL, pending_version = NULL, pending_command = NULL";
        let sql = match error {
            None => format!(
                "UPDATE device_profiles SET \
                 installed_version = CASE WHEN pending_action = 'install' THEN pending_version ELSE NULL END, \
                 installed_payload_uuid = CASE WHEN pending_action = 'install' THEN \
                   (SELECT v.payload_uuid FROM profile_versions v \
                    WHERE v.profile_id = device_profiles.profile_id AND v.version = device_profiles.pending_version) \
                   ELSE NULL END, \
                 installed_at = CASE WHEN pending_action = 'install' THEN $3 ELSE NULL END, \
                 last_error = NULL, attempts = 0, next_attempt_at = NULL, {clear_pending}, updated_at = $3 \
                 WHERE device_id = $1 AND pending_command = $2"
            ),
            Some(_) => format!(
                "UPDATE device_profiles SET last_error = $4, \
                 next_attempt_at = $3 + $5 * ({}), attempts = attempts + 1, \
                 {clear_pending}, updated_at = $3 \
                 WHERE device_id = $1 AND pending_command = $2",
                retry_backoff_sql()
            ),
        };
        let mut query = sqlx::query(&sql)
            .bind(device.to_string())
            .bind(command.as_str())
            .bind(now.0);
        if let Some(error) = error {
            query = query.bind(error).bind(retry_base_seconds.max(0));
        }
        query.execute(self.conn()?).await?;
        Ok(())
    }

    /// A device's ProfileList: for the profiles of its tenant and the global ones, what it reported is what it
    /// has (`installed` holds each reported PayloadIdentifier with its PayloadUUID). A profile it no longer
    /// lists is no longer installed (removed by hand, or by an earlier command); pending actions stay.
    /// Set-based: one statement per 500 reported profiles, and one for those no longer listed.
    pub async fn profiles_reported(
        &mut self,
        device: DeviceId,
        tenant: TenantId,
        installed: &[(String, String)],
        now: UnixTime,
    ) -> Result<(), StoreError> {
        // One row per identifier (a device listing one twice must not update a row twice in a statement).
        let mut reported: Vec<&(String, String)> = Vec::with_capacity(installed.len());
        for item in installed {
            if !reported.iter().any(|r| r.0 == item.0) {
                reported.push(item);
            }
        }
        for chunk in reported.chunks(crate::desired::groups::ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO device_profiles (device_id, profile_id, installed_version, \
                 installed_payload_uuid, installed_at, updated_at) \
                 SELECT $1, p.id, (SELECT v.version FROM profile_versions v WHERE v.profile_id = p.id \
                   AND v.payload_uuid = r.column2), r.column2, $2, $2 \
                 FROM profiles p JOIN (VALUES {}) AS r ON r.column1 = p.identifier \
                 WHERE p.archived_at IS NULL AND (p.tenant_id IS NULL OR p.tenant_id = $3) \
                 ON CONFLICT (device_id, profile_id) DO UPDATE SET \
                 installed_version = excluded.installed_version, \
                 installed_payload_uuid = excluded.installed_payload_uuid, \
                 installed_at = CASE WHEN device_profiles.installed_payload_uuid = excluded.installed_payload_uuid \
                   THEN device_profiles.installed_at ELSE excluded.installed_at END, \
                 updated_at = excluded.updated_at",
                shifted_values(chunk.len(), 2, 4)
            );
            let mut query = sqlx::query(&sql)
                .bind(device.to_string())
                .bind(now.0)
                .bind(tenant.to_string());
            for (identifier, uuid) in chunk {
                query = query.bind(identifier.as_str()).bind(uuid.as_str());
            }
            query.execute(self.conn()?).await?;
        }
        let mut sql = String::from(
            "UPDATE device_profiles SET installed_version = NULL, installed_payload_uuid = NULL, \
             installed_at = NULL, updated_at = $2 \
             WHERE device_id = $1 AND installed_payload_uuid IS NOT NULL AND profile_id IN \
             (SELECT p.id FROM profiles p WHERE p.archived_at IS NULL AND (p.tenant_id IS NULL OR p.tenant_id = $3)",
        );
        if !reported.is_empty() {
            sql.push_str(&format!(
                " AND p.identifier NOT IN ({})",
                crate::desired::groups::in_list(self.backend(), 4, reported.len())
            ));
        }
        sql.push(')');
        let mut query = sqlx::query(&sql)
            .bind(device.to_string())
            .bind(now.0)
            .bind(tenant.to_string());
        for (identifier, _) in &reported {
            query = query.bind(identifier.as_str());
        }
        query.execute(self.conn()?).await?;
        Ok(())
    }
}

/// `($first, $first+1), …`: `rows` groups of `width` placeholders numbered from `first`.
fn shifted_values(rows: usize, width: usize, first: usize) -> String {
    (0..rows)
        .map(|r| {
            let cells: Vec<String> = (0..width)
                .map(|c| format!("${}", first + r * width + c))
                .collect();
            format!("({})", cells.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}
