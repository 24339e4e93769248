//! Devices, their command channels and inventory: the enrollment life cycle as the check-in endpoint drives it.

use sqlx::any::AnyRow;

use orchard_types::{
    ChannelId, CommandStatus, DeviceId, QueuedBy, Secret, TenantId, Udid, UnixTime,
};

use crate::commands::queue::{record_result_sql, ResultsTaken};
use crate::rows;
use crate::sql::Sql;
use crate::unit::Db;
use crate::{
    AuthenticateDevice, Backend, Channel, ChannelPushState, Device, DeviceBinding, DeviceFacts,
    DeviceRelease, InventorySection, Page, RepeatedFactsAnswer, Scope, Store, StoreError,
    TokenUpdateOutcome, TokenUpdateRecord, UnitOfWork,
};

pub(crate) const DEVICE_COLUMNS: &str =
    "id, udid, tenant_id, serial_number, state, topic, cert_fingerprint, \
     device_name, model, model_name, product_name, os_version, build_version, is_supervised, \
     enrolled_at, last_seen_at, created_at, updated_at, facts_digest, plan_inputs_digest";
const CHANNEL_COLUMNS: &str = "id, device_id, user_short_name, user_id, push_token, push_magic, \
     unlock_token, awaiting_configuration, token_updated_at, push_wanted, push_done, push_requested_at, \
     pushed_at, push_attempted_at, push_last_result, push_claimed_by, push_lease_until, push_token_dead_at, \
     push_token_dead_reason";

/// Every status a command can leave by itself; Authenticate and CheckOut expire them.
pub(crate) const UNFINISHED_STATUSES: &str = "('queued', 'sent', 'not_now')";

pub(crate) fn device_from_row(row: &AnyRow) -> Result<Device, StoreError> {
    Ok(Device {
        id: rows::device_id(row, "id")?,
        udid: rows::udid(row, "udid")?,
        tenant_id: rows::tenant_id(row, "tenant_id")?,
        serial_number: rows::opt_text(row, "serial_number")?,
        state: rows::enrollment_state(row, "state")?,
        topic: rows::opt_text(row, "topic")?,
        cert_fingerprint: rows::opt_text(row, "cert_fingerprint")?,
        device_name: rows::opt_text(row, "device_name")?,
        model: rows::opt_text(row, "model")?,
        model_name: rows::opt_text(row, "model_name")?,
        product_name: rows::opt_text(row, "product_name")?,
        os_version: rows::opt_text(row, "os_version")?,
        build_version: rows::opt_text(row, "build_version")?,
        is_supervised: rows::opt_boolean(row, "is_supervised")?,
        enrolled_at: rows::opt_time(row, "enrolled_at")?,
        last_seen_at: rows::opt_time(row, "last_seen_at")?,
        created_at: rows::time(row, "created_at")?,
        updated_at: rows::time(row, "updated_at")?,
        facts_digest: rows::opt_text(row, "facts_digest")?,
        plan_inputs_digest: rows::opt_text(row, "plan_inputs_digest")?,
    })
}

fn channel_from_row(row: &AnyRow) -> Result<Channel, StoreError> {
    Ok(Channel {
        id: rows::channel_id(row, "id")?,
        device_id: rows::device_id(row, "device_id")?,
        user_short_name: rows::opt_text(row, "user_short_name")?,
        user_id: rows::opt_text(row, "user_id")?,
        push_token: rows::opt_bytes(row, "push_token")?,
        push_magic: rows::opt_text(row, "push_magic")?,
        unlock_token: rows::opt_bytes(row, "unlock_token")?.map(Secret::new),
        awaiting_configuration: rows::boolean(row, "awaiting_configuration")?,
        token_updated_at: rows::opt_time(row, "token_updated_at")?,
        push: ChannelPushState {
            owed: rows::int(row, "push_wanted")? > rows::int(row, "push_done")?,
            requested_at: rows::opt_time(row, "push_requested_at")?,
            last_delivered_at: rows::opt_time(row, "pushed_at")?,
            last_attempt_at: rows::opt_time(row, "push_attempted_at")?,
            last_result: rows::opt_text(row, "push_last_result")?,
            // An unclaimed lease is APNs' Retry-After: no node pushes this channel before then.
            not_before: match rows::opt_text(row, "push_claimed_by")? {
                None => rows::opt_time(row, "push_lease_until")?,
                Some(_) => None,
            },
            token_dead_at: rows::opt_time(row, "push_token_dead_at")?,
            token_dead_reason: rows::opt_text(row, "push_token_dead_reason")?,
        },
    })
}

fn inventory_from_row(row: &AnyRow) -> Result<InventorySection, StoreError> {
    Ok(InventorySection {
        section: rows::text(row, "section")?,
        json: rows::text(row, "json")?,
        updated_at: rows::time(row, "updated_at")?,
    })
}

/// Booleans are stored as INTEGER 0/1 (STACK.md pitfall 7).
fn bool_to_int(value: bool) -> i32 {
    i32::from(value)
}

impl Store {
    /// The device with this UDID in any tenant (the device surface knows no scope).
    pub async fn find_device_by_udid(&self, udid: &Udid) -> Result<Option<Device>, StoreError> {
        let sql = format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE udid = $1");
        sqlx::query(&sql)
            .bind(udid.as_str())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(device_from_row)
            .transpose()
    }

    /// The device whose current identity certificate has this fingerprint (a certificate is bound to one
    /// device at Authenticate).
    pub async fn find_device_by_cert_fingerprint(
        &self,
        fingerprint: &str,
    ) -> Result<Option<Device>, StoreError> {
        let sql = format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE cert_fingerprint = $1");
        sqlx::query(&sql)
            .bind(fingerprint)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(device_from_row)
            .transpose()
    }

    pub async fn get_device(
        &self,
        scope: Scope,
        id: DeviceId,
    ) -> Result<Option<Device>, StoreError> {
        let mut sql = Sql::new(&format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE id = "));
        sql.bind(id.to_string()).in_scope("tenant_id", scope);
        sql.query()
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(device_from_row)
            .transpose()
    }

    /// Ordered by enrolled_at, then id.
    pub async fn list_devices(&self, scope: Scope, page: Page) -> Result<Vec<Device>, StoreError> {
        let mut sql = Sql::new(&format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE 1 = 1"));
        sql.in_scope("tenant_id", scope)
            .push(" ORDER BY enrolled_at, id LIMIT ")
            .bind(page.limit.max(0))
            .push(" OFFSET ")
            .bind(page.offset.max(0));
        sql.query()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(device_from_row)
            .collect()
    }

    /// The enrolled devices of `scope`, at most `limit`, in [`Store::list_devices`]' order: a bulk request's
    /// targets in one read (paging with OFFSET re-scans every earlier page: 50 pages for 50,000 iPads).
    pub async fn enrolled_devices(
        &self,
        scope: Scope,
        limit: i64,
    ) -> Result<Vec<Device>, StoreError> {
        let mut sql = Sql::new(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE state = 'enrolled'"
        ));
        sql.in_scope("tenant_id", scope)
            .push(" ORDER BY enrolled_at, id LIMIT ")
            .bind(limit.max(0));
        sql.query()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(device_from_row)
            .collect()
    }

    /// Those of `ids` that are enrolled devices of `scope` (unknown ids, another tenant's and unenrolled
    /// devices are left out), a few hundred ids per statement instead of a read each.
    pub async fn enrolled_devices_among(
        &self,
        scope: Scope,
        ids: &[DeviceId],
    ) -> Result<Vec<Device>, StoreError> {
        let mut devices = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(crate::desired::groups::ROWS_PER_STATEMENT) {
            let mut sql = Sql::new(&format!(
                "SELECT {DEVICE_COLUMNS} FROM devices WHERE state = 'enrolled' AND id IN ("
            ));
            for (i, id) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.bind(id.to_string());
            }
            sql.push(")").in_scope("tenant_id", scope);
            for row in sql.query().fetch_all(&self.pool).await? {
                devices.push(device_from_row(&row)?);
            }
        }
        Ok(devices)
    }

    pub async fn count_devices(&self, scope: Scope) -> Result<i64, StoreError> {
        let mut sql = Sql::new("SELECT COUNT(*) AS n FROM devices WHERE 1 = 1");
        sql.in_scope("tenant_id", scope);
        let row = sql.query().fetch_one(&self.pool).await?;
        rows::int(&row, "n")
    }

    /// Authenticate = a new enrollment for the UDID, in ONE transaction, without any check: the store
    /// primitive behind [`UnitOfWork::bind_identity`] for callers that already decided (tests, seeding). The
    /// device surface decides in core (`Orchard::authenticate`) whether the identity may claim the UDID.
    pub async fn authenticate_device(&self, a: &AuthenticateDevice) -> Result<Device, StoreError> {
        let mut unit = self.begin_unit().await?;
        let current = unit.device_binding(&a.udid).await?.map(|b| b.device);
        let device = unit
            .bind_identity(a, current.as_ref())
            .await?
            .ok_or_else(|| StoreError::Conflict("the device changed meanwhile".into()))?;
        unit.commit().await?;
        Ok(device)
    }

    /// Upserts the channel's push token/PushMagic (and UnlockToken if Some, AwaitingConfiguration); sets the
    /// device state enrolled and last_seen. `first` is true when the channel had no push token before.
    /// NotFound when the device does not exist. One transaction.
    pub async fn update_token(
        &self,
        t: &TokenUpdateRecord,
    ) -> Result<TokenUpdateOutcome, StoreError> {
        let mut unit = self.begin_unit().await?;
        let outcome = unit.update_token(t).await?;
        unit.commit().await?;
        Ok(outcome)
    }

    /// CheckOut: state unenrolled, channels removed, unfinished commands expired. NotFound for an unknown UDID.
    pub async fn check_out(&self, udid: &Udid, now: UnixTime) -> Result<(), StoreError> {
        let mut unit = self.begin_unit().await?;
        unit.check_out(udid, now).await?;
        unit.commit().await
    }

    /// The enrolled-or-not device of this UDID with whether the identity it is bound to is revoked, whether it
    /// awaits the reconciler, whether `channel` has an unfinished command, whether any webhook endpoint is
    /// enabled, whether its tenant has an OS policy and whether its device channel is declarative: what every
    /// signed device request checks (one statement; the answers after the identity spare an idle poll the
    /// queue's own read, a report the webhook event's statement and an OS-changing report the OS evaluation's
    /// reads when there is nothing to evaluate).
    pub async fn find_device_with_identity(
        &self,
        udid: &Udid,
        channel: Option<&ChannelId>,
    ) -> Result<Option<RequestingDevice>, StoreError> {
        // Every signed device request runs this: the statement text is built once.
        static SQL: std::sync::LazyLock<String> =
            std::sync::LazyLock::new(|| requesting_device_sql(1, 2));
        sqlx::query(SQL.as_str())
            .bind(udid.as_str())
            .bind(channel.map(ChannelId::as_str))
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(requesting_device_from_row)
            .transpose()
    }

    /// The device's open release for re-enrollment, if any (expired ones included: the caller compares).
    pub async fn device_release(&self, id: DeviceId) -> Result<Option<DeviceRelease>, StoreError> {
        let row = sqlx::query(
            "SELECT released_until, released_to_tenant_id, released_by FROM devices WHERE id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(row) => release_from_row(&row)?,
            None => None,
        })
    }

    /// Releases a device for re-enrollment (see [`DeviceRelease`]). NotFound outside the scope.
    pub async fn release_device(
        &self,
        scope: Scope,
        id: DeviceId,
        release: &DeviceRelease,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        let mut sql = Sql::new("UPDATE devices SET released_until = ");
        sql.bind(release.until.0)
            .push(", released_to_tenant_id = ")
            .bind_optional(release.tenant_id.map(|t| t.to_string()).as_deref())
            .push(", released_by = ")
            .bind_optional(release.released_by.as_deref())
            .push(", updated_at = ")
            .bind(now.0)
            .push(" WHERE id = ")
            .bind(id.to_string())
            .in_scope("tenant_id", scope);
        if sql.query().execute(&self.pool).await?.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Sets last_seen_at. NotFound when the device does not exist.
    pub async fn touch_device(&self, id: DeviceId, now: UnixTime) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE devices SET last_seen_at = $2 WHERE id = $1")
            .bind(id.to_string())
            .bind(now.0)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    pub async fn get_channel(&self, channel: &ChannelId) -> Result<Option<Channel>, StoreError> {
        get_channel(&mut self.pooled().await?, channel).await
    }

    /// The device channel first (its id is the bare UDID, which sorts before `UDID:user`), then user channels.
    pub async fn list_channels(&self, device: DeviceId) -> Result<Vec<Channel>, StoreError> {
        list_channels(&mut self.pooled().await?, device).await
    }

    /// Promotes known facts to device columns (None = leave unchanged). NotFound when the device does not exist.
    pub async fn update_device_facts(
        &self,
        id: DeviceId,
        f: &DeviceFacts,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        update_device_facts(&mut self.pooled().await?, id, f, now).await
    }

    /// Replaces one inventory section (a JSON document) of the device. NotFound when the device does not exist.
    pub async fn put_inventory_section(
        &self,
        id: DeviceId,
        section: &str,
        json: &str,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        put_inventory_section(&mut self.pooled().await?, id, section, json, now).await
    }

    /// All inventory sections of the device, ordered by section name; empty for a device outside the scope.
    pub async fn get_inventory(
        &self,
        scope: Scope,
        id: DeviceId,
    ) -> Result<Vec<InventorySection>, StoreError> {
        let mut sql = Sql::new(
            "SELECT s.section, s.json, s.updated_at FROM inventory_sections s \
             JOIN devices d ON d.id = s.device_id WHERE s.device_id = ",
        );
        sql.bind(id.to_string())
            .in_scope("d.tenant_id", scope)
            .push(" ORDER BY s.section");
        sql.query()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(inventory_from_row)
            .collect()
    }
}

/// Expires every unfinished command of the device (a new enrollment, CheckOut or a move makes them moot).
async fn expire_unfinished_commands(
    db: &mut impl Db,
    device_id: &str,
    now: UnixTime,
) -> Result<(), StoreError> {
    let sql = format!(
        "UPDATE commands SET status = 'expired', completed_at = $2 \
         WHERE device_id = $1 AND status IN {UNFINISHED_STATUSES}"
    );
    sqlx::query(&sql)
        .bind(device_id)
        .bind(now.0)
        .execute(db.conn()?)
        .await?;
    Ok(())
}

/// The statement of [`Store::find_device_with_identity`], with the UDID as `$(udid)` and the channel as
/// `$(channel)`; its row is read by [`requesting_device_from_row`].
pub(crate) fn requesting_device_sql(udid: usize, channel: usize) -> String {
    let columns = DEVICE_COLUMNS
        .split(',')
        .map(|c| format!("d.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "SELECT {columns}, c.revoked_at AS identity_revoked_at, c.fingerprint AS identity_fingerprint, \
         CASE WHEN EXISTS (SELECT 1 FROM reconcile_dirty r WHERE r.device_id = d.id) THEN 1 ELSE 0 END \
           AS awaiting_reconcile, \
         CASE WHEN EXISTS (SELECT 1 FROM commands q WHERE q.channel_id = ${channel} \
           AND q.status IN {UNFINISHED_STATUSES}) THEN 1 ELSE 0 END AS channel_has_unfinished, \
         CASE WHEN EXISTS (SELECT 1 FROM webhook_endpoints w WHERE w.enabled = 1) THEN 1 ELSE 0 END \
           AS webhook_endpoints, \
         CASE WHEN EXISTS (SELECT 1 FROM os_policies p WHERE p.tenant_id = d.tenant_id) THEN 1 ELSE 0 END \
           AS tenant_os_policy, \
         CASE WHEN EXISTS (SELECT 1 FROM ddm_channels k WHERE k.channel = d.udid) THEN 1 ELSE 0 END \
           AS declarative_channel \
         FROM devices d LEFT JOIN issued_certificates c ON c.fingerprint = d.cert_fingerprint \
         WHERE d.udid = ${udid}"
    )
}

/// Reads a row of [`requesting_device_sql`].
pub(crate) fn requesting_device_from_row(row: &AnyRow) -> Result<RequestingDevice, StoreError> {
    let device = device_from_row(row)?;
    let identity = match (
        rows::opt_text(row, "identity_fingerprint")?,
        rows::opt_time(row, "identity_revoked_at")?,
    ) {
        (None, _) => IdentityStatus::Unknown,
        (Some(_), Some(at)) => IdentityStatus::Revoked(at),
        (Some(_), None) => IdentityStatus::Valid,
    };
    Ok(RequestingDevice {
        device,
        identity,
        awaiting_reconcile: rows::boolean(row, "awaiting_reconcile")?,
        channel_has_unfinished: rows::boolean(row, "channel_has_unfinished")?,
        webhook_endpoints: rows::boolean(row, "webhook_endpoints")?,
        tenant_os_policy: rows::boolean(row, "tenant_os_policy")?,
        declarative_channel: rows::boolean(row, "declarative_channel")?,
    })
}

/// What a signed device request needs to know of its device (one statement).
#[derive(Debug, Clone)]
pub struct RequestingDevice {
    pub device: Device,
    pub identity: IdentityStatus,
    /// The device is in the reconciler's work set: its session plans its own commands before asking for one.
    pub awaiting_reconcile: bool,
    /// The channel asked about had a queued, sent or NotNow command when read (false when none was asked).
    pub channel_has_unfinished: bool,
    /// Some webhook endpoint (of any tenant) was enabled when read: without one, the request's unit need not
    /// write events ([`crate::UnitOfWork::assume_no_webhook_endpoints`]).
    pub webhook_endpoints: bool,
    /// The device's tenant had an OS policy when read.
    pub tenant_os_policy: bool,
    /// The device channel (the UDID's) had declarative management when read. Without this and a policy, the
    /// device's OS evaluation has nothing to read or do.
    pub declarative_channel: bool,
}

/// Whether the identity a device is bound to may still speak for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityStatus {
    Valid,
    Revoked(UnixTime),
    /// The bound certificate is not in `issued_certificates` (or the device has none).
    Unknown,
}

fn release_from_row(row: &AnyRow) -> Result<Option<DeviceRelease>, StoreError> {
    Ok(match rows::opt_time(row, "released_until")? {
        Some(until) => Some(DeviceRelease {
            until,
            tenant_id: rows::opt_tenant_id(row, "released_to_tenant_id")?,
            released_by: rows::opt_text(row, "released_by")?,
        }),
        None => None,
    })
}

impl UnitOfWork {
    /// The device of this UDID as Authenticate must see it before deciding: locked for the rest of the unit
    /// (`FOR UPDATE` on PostgreSQL; SQLite's unit holds the write lock from its start).
    pub async fn device_binding(
        &mut self,
        udid: &Udid,
    ) -> Result<Option<DeviceBinding>, StoreError> {
        let lock = match self.backend() {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "SELECT {DEVICE_COLUMNS}, released_until, released_to_tenant_id, released_by \
             FROM devices WHERE udid = $1{lock}"
        );
        let Some(row) = sqlx::query(&sql)
            .bind(udid.as_str())
            .fetch_optional(self.conn()?)
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(DeviceBinding {
            device: device_from_row(&row)?,
            release: release_from_row(&row)?,
        }))
    }

    /// Authenticate's write, decided by the caller against `expected` (the device as
    /// [`UnitOfWork::device_binding`] returned it, or None for a UDID new to Orchard): inserts the device or
    /// keeps its id; sets tenant, certificate fingerprint, topic and the facts given (None keeps the stored
    /// value), state pending, enrolled_at = last_seen_at = now; deletes its channels (push token, PushMagic,
    /// UnlockToken gone); expires every unfinished command; when the tenant changes, deletes the inventory of
    /// the previous enrollment; records the binding on the issued certificate and ends any release.
    ///
    /// Ok(None), changing nothing, when the device is no longer what `expected` says (another node bound it
    /// meanwhile): the caller refuses rather than acting on a decision made for other data.
    pub async fn bind_identity(
        &mut self,
        a: &AuthenticateDevice,
        expected: Option<&Device>,
    ) -> Result<Option<Device>, StoreError> {
        // The update applies only to the row the caller decided on: tenant and certificate unchanged. For a
        // new UDID the guard matches nothing (tenant ids are never empty), so a concurrent insert wins alone.
        let (expected_tenant, expected_cert) = match expected {
            Some(d) => (
                d.tenant_id.to_string(),
                d.cert_fingerprint.clone().unwrap_or_default(),
            ),
            None => (String::new(), String::new()),
        };
        let sql = format!(
            "INSERT INTO devices (id, udid, tenant_id, serial_number, state, topic, cert_fingerprint, \
               device_name, model, model_name, product_name, os_version, build_version, is_supervised, \
               enrolled_at, last_seen_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14, $14, $14) \
             ON CONFLICT (udid) DO UPDATE SET \
               tenant_id = excluded.tenant_id, \
               serial_number = COALESCE(excluded.serial_number, devices.serial_number), \
               state = 'pending', \
               topic = excluded.topic, \
               cert_fingerprint = excluded.cert_fingerprint, \
               device_name = COALESCE(excluded.device_name, devices.device_name), \
               model = COALESCE(excluded.model, devices.model), \
               model_name = COALESCE(excluded.model_name, devices.model_name), \
               product_name = COALESCE(excluded.product_name, devices.product_name), \
               os_version = COALESCE(excluded.os_version, devices.os_version), \
               build_version = COALESCE(excluded.build_version, devices.build_version), \
               is_supervised = COALESCE(excluded.is_supervised, devices.is_supervised), \
               enrolled_at = excluded.enrolled_at, \
               last_seen_at = excluded.last_seen_at, \
               updated_at = excluded.updated_at, \
               released_until = NULL, \
               released_to_tenant_id = NULL, \
               released_by = NULL, \
               facts_digest = NULL, \
               plan_inputs_digest = NULL \
             WHERE devices.tenant_id = $15 AND COALESCE(devices.cert_fingerprint, '') = $16 \
             RETURNING {DEVICE_COLUMNS}"
        );
        let f = &a.facts;
        let row = sqlx::query(&sql)
            .bind(DeviceId::new().to_string())
            .bind(a.udid.as_str())
            .bind(a.tenant_id.to_string())
            .bind(f.serial_number.as_deref())
            .bind(&a.topic)
            .bind(&a.cert_fingerprint)
            .bind(f.device_name.as_deref())
            .bind(f.model.as_deref())
            .bind(f.model_name.as_deref())
            .bind(f.product_name.as_deref())
            .bind(f.os_version.as_deref())
            .bind(f.build_version.as_deref())
            .bind(f.is_supervised.map(bool_to_int))
            .bind(a.now.0)
            .bind(expected_tenant)
            .bind(expected_cert)
            .fetch_optional(self.conn()?)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let device = device_from_row(&row)?;
        let device_id = device.id.to_string();
        sqlx::query("DELETE FROM channels WHERE device_id = $1")
            .bind(&device_id)
            .execute(self.conn()?)
            .await?;
        expire_unfinished_commands(self, &device_id, a.now).await?;
        // The inventory describes what another tenant managed: it must not become visible to the new one.
        if expected.is_some_and(|previous| previous.tenant_id != a.tenant_id) {
            sqlx::query("DELETE FROM inventory_sections WHERE device_id = $1")
                .bind(&device_id)
                .execute(self.conn()?)
                .await?;
        }
        sqlx::query(
            "UPDATE issued_certificates SET bound_device_id = $1, bound_at = $2 \
             WHERE fingerprint = $3 AND bound_device_id IS NULL",
        )
        .bind(&device_id)
        .bind(a.now.0)
        .bind(&a.cert_fingerprint)
        .execute(self.conn()?)
        .await?;
        Ok(Some(device))
    }

    /// [`Store::check_out`] inside this unit.
    pub async fn check_out(&mut self, udid: &Udid, now: UnixTime) -> Result<(), StoreError> {
        let row = sqlx::query(
            "UPDATE devices SET state = 'unenrolled', last_seen_at = $2, updated_at = $2 \
             WHERE udid = $1 RETURNING id",
        )
        .bind(udid.as_str())
        .bind(now.0)
        .fetch_optional(self.conn()?)
        .await?;
        let Some(row) = row else {
            return Err(StoreError::NotFound);
        };
        let device_id = rows::text(&row, "id")?;
        sqlx::query("DELETE FROM channels WHERE device_id = $1")
            .bind(&device_id)
            .execute(self.conn()?)
            .await?;
        // A device that left management keeps no Apps and Books licence.
        crate::apps::licences::release_device_licences(self, &device_id, None, now).await?;
        expire_unfinished_commands(self, &device_id, now).await
    }

    /// An operator's move of a device to another tenant (its record, identity and history stay): the tenant
    /// changes, unfinished commands (queued by the previous tenant) expire, any release ends, and the inventory
    /// sections are deleted unless `keep_inventory`. NotFound when the device does not exist.
    pub async fn move_device(
        &mut self,
        id: DeviceId,
        to: TenantId,
        keep_inventory: bool,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE devices SET tenant_id = $2, released_until = NULL, released_to_tenant_id = NULL, \
               released_by = NULL, updated_at = $3 WHERE id = $1",
        )
        .bind(id.to_string())
        .bind(to.to_string())
        .bind(now.0)
        .execute(self.conn()?)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        expire_unfinished_commands(self, &id.to_string(), now).await?;
        // Licences of the previous tenant's location go back to it.
        crate::apps::licences::release_device_licences(self, &id.to_string(), Some(to), now)
            .await?;
        crate::desired::groups::mark_dirty(self, &[id], now).await?;
        if !keep_inventory {
            sqlx::query("DELETE FROM inventory_sections WHERE device_id = $1")
                .bind(id.to_string())
                .execute(self.conn()?)
                .await?;
        }
        Ok(())
    }

    /// [`Store::update_token`] inside this unit: a first TokenUpdate stays "first" until the unit commits.
    pub async fn update_token(
        &mut self,
        t: &TokenUpdateRecord,
    ) -> Result<TokenUpdateOutcome, StoreError> {
        update_token(self, t).await
    }

    /// [`Store::get_channel`] inside this unit.
    /// [`Store::list_channels`] inside this unit.
    pub async fn list_channels(&mut self, device: DeviceId) -> Result<Vec<Channel>, StoreError> {
        list_channels(self, device).await
    }

    pub async fn get_channel(
        &mut self,
        channel: &ChannelId,
    ) -> Result<Option<Channel>, StoreError> {
        get_channel(self, channel).await
    }

    /// A device by id, read inside this unit (sees the unit's own changes).
    pub async fn device(&mut self, id: DeviceId) -> Result<Option<Device>, StoreError> {
        let sql = format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE id = $1");
        sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(self.conn()?)
            .await?
            .as_ref()
            .map(device_from_row)
            .transpose()
    }

    /// [`Store::update_device_facts`] inside this unit.
    pub async fn update_device_facts(
        &mut self,
        id: DeviceId,
        f: &DeviceFacts,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        update_device_facts(self, id, f, now).await
    }

    /// The device's next DeviceInformation report is evaluated in full (see [`Device::facts_digest`]).
    pub async fn forget_facts_digest(&mut self, id: DeviceId) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE devices SET facts_digest = NULL WHERE id = $1 AND facts_digest IS NOT NULL",
        )
        .bind(id.to_string())
        .execute(self.conn()?)
        .await?;
        Ok(())
    }

    /// Every device of the tenant has its next DeviceInformation report evaluated in full: its smart groups
    /// changed, so a report that repeats what the device said before may now mean something else.
    pub async fn forget_tenant_facts_digests(
        &mut self,
        tenant: TenantId,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE devices SET facts_digest = NULL WHERE tenant_id = $1 AND facts_digest IS NOT NULL",
        )
        .bind(tenant.to_string())
        .execute(self.conn()?)
        .await?;
        Ok(())
    }

    /// A Shared iPad user was deleted from the device: its user channel ends (the row, its declarative state)
    /// and its unfinished commands expire, as a CheckOut ends the device channel. Returns whether a channel
    /// existed. The channel must be a user channel of `device`.
    pub async fn end_user_channel(
        &mut self,
        device: DeviceId,
        channel: &ChannelId,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        if !channel.is_user_channel() {
            return Err(StoreError::Conflict(
                "only a user channel ends with its user".into(),
            ));
        }
        let deleted = sqlx::query("DELETE FROM channels WHERE id = $1 AND device_id = $2")
            .bind(channel.as_str())
            .bind(device.to_string())
            .execute(self.conn()?)
            .await?;
        sqlx::query("DELETE FROM ddm_channels WHERE channel = $1 AND device_id = $2")
            .bind(channel.as_str())
            .bind(device.to_string())
            .execute(self.conn()?)
            .await?;
        let sql = format!(
            "UPDATE commands SET status = 'expired', completed_at = $3 \
             WHERE channel_id = $1 AND device_id = $2 AND status IN {UNFINISHED_STATUSES}"
        );
        sqlx::query(&sql)
            .bind(channel.as_str())
            .bind(device.to_string())
            .bind(now.0)
            .execute(self.conn()?)
            .await?;
        Ok(deleted.rows_affected() > 0)
    }

    /// [`Store::put_inventory_section`] inside this unit.
    pub async fn put_inventory_section(
        &mut self,
        id: DeviceId,
        section: &str,
        json: &str,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        put_inventory_section(self, id, section, json, now).await
    }

    /// [`UnitOfWork::update_device_facts`] and [`UnitOfWork::put_inventory_section`] of one answer: on
    /// PostgreSQL a single statement, one round trip fewer for the usual inventory answer (one that repeats
    /// the device's facts). NotFound, with nothing written, when the device does not exist.
    pub async fn update_device_facts_and_section(
        &mut self,
        id: DeviceId,
        f: &DeviceFacts,
        section: &str,
        json: &str,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        if self.backend() == Backend::Sqlite {
            update_device_facts(self, id, f, now).await?;
            return put_inventory_section(self, id, section, json, now).await;
        }
        // The section is written only for a device the update found (`$10` is the update's time).
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "WITH updated AS ({UPDATE_DEVICE_FACTS} RETURNING id) \
                 {INSERT_INVENTORY_SECTION} SELECT id, $13, $14, $10 FROM updated {ON_SECTION_CONFLICT}"
            )
        });
        let done = bind_device_facts(sqlx::query(SQL.as_str()), id, f, now)
            .bind(section)
            .bind(json)
            .execute(self.conn()?)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}

/// Binds the parameters of [`record_result_sql`] for [`ResultsTaken::RepeatedFactsAnswer`]: acknowledged,
/// without an error chain.
fn bind_repeated_answer<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    a: &RepeatedFactsAnswer<'q>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    query
        .bind(a.uuid.as_str())
        .bind(a.channel.as_str())
        .bind(CommandStatus::Acknowledged.as_str())
        .bind(a.result)
        .bind(None::<&str>)
        .bind(a.now.0)
        .bind(i64::from(a.result_sealed))
        .bind(a.device.to_string())
        .bind(QueuedBy::Setup.to_stored())
}

impl Store {
    /// Stores the usual inventory answer in one go: an acknowledged DeviceInformation answer that repeats the
    /// device's facts records its command's result, writes the facts again and replaces the inventory section,
    /// together. On PostgreSQL it is one statement outside any transaction, three round trips fewer than the
    /// general path's unit (`BEGIN`, the result, the facts and section, `COMMIT`).
    ///
    /// Returns whether another command of the channel is unfinished (`Some`), or `None` with nothing written
    /// when the answer is not for an unfinished DeviceInformation command of its channel and device queued by
    /// anyone but zero-touch setup: a duplicate, an unknown command, another request type or a setup
    /// command, all of which the general path (`UnitOfWork::record_result`) tells apart.
    pub async fn record_repeated_facts_answer(
        &self,
        a: &RepeatedFactsAnswer<'_>,
    ) -> Result<Option<bool>, StoreError> {
        if self.backend == Backend::Sqlite {
            // Each statement is a function call on SQLite: the general statements in one transaction.
            let mut unit = self.begin_unit().await?;
            static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
                record_result_sql(0, ResultsTaken::RepeatedFactsAnswer)
            });
            let Some(row) = bind_repeated_answer(sqlx::query(SQL.as_str()), a)
                .fetch_optional(unit.conn()?)
                .await?
            else {
                // Nothing was written; the general path takes the answer.
                unit.rollback().await?;
                return Ok(None);
            };
            unit.update_device_facts_and_section(a.device, a.facts, a.section, a.json, a.now)
                .await?;
            unit.commit().await?;
            return Ok(Some(rows::boolean(&row, "more_unfinished")?));
        }
        // The facts and the section are written only when the command was recorded (`$10` is the time); the
        // command names its device, which exists while the command does (its rows go with the device).
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "WITH recorded AS ({record}), \
                 updated AS ({UPDATE_DEVICE_FACTS} AND EXISTS (SELECT 1 FROM recorded) RETURNING id), \
                 section AS ({INSERT_INVENTORY_SECTION} SELECT id, $13, $14, $10 FROM updated \
                   {ON_SECTION_CONFLICT}) \
                 SELECT more_unfinished FROM recorded",
                record = record_result_sql(14, ResultsTaken::RepeatedFactsAnswer)
            )
        });
        let row = bind_repeated_answer(
            bind_device_facts(sqlx::query(SQL.as_str()), a.device, a.facts, a.now)
                .bind(a.section)
                .bind(a.json),
            a,
        )
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| rows::boolean(&row, "more_unfinished"))
            .transpose()
    }
}

async fn update_token(
    db: &mut impl Db,
    t: &TokenUpdateRecord,
) -> Result<TokenUpdateOutcome, StoreError> {
    let updated = sqlx::query(
        "UPDATE devices SET state = 'enrolled', last_seen_at = $2, updated_at = $2 WHERE id = $1",
    )
    .bind(t.device_id.to_string())
    .bind(t.now.0)
    .execute(db.conn()?)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    // The counter is bumped in the same statement that writes the token, so two concurrent TokenUpdates
    // cannot both believe they were the first.
    let row = sqlx::query(
        "INSERT INTO channels (id, device_id, user_short_name, user_id, push_token, push_magic, \
           unlock_token, awaiting_configuration, token_updated_at, token_update_count, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, $9) \
         ON CONFLICT (id) DO UPDATE SET \
           device_id = excluded.device_id, \
           user_short_name = excluded.user_short_name, \
           user_id = excluded.user_id, \
           push_token = excluded.push_token, \
           push_magic = excluded.push_magic, \
           unlock_token = COALESCE(excluded.unlock_token, channels.unlock_token), \
           awaiting_configuration = excluded.awaiting_configuration, \
           token_updated_at = excluded.token_updated_at, \
           push_token_dead_at = NULL, \
           push_token_dead_reason = NULL, \
           token_update_count = CASE WHEN channels.push_token IS NULL THEN 1 \
                                     ELSE channels.token_update_count + 1 END \
         RETURNING token_update_count",
    )
    .bind(t.channel.as_str())
    .bind(t.device_id.to_string())
    .bind(t.user_short_name.as_deref())
    .bind(t.user_id.as_deref())
    .bind(t.push_token.as_slice())
    .bind(&t.push_magic)
    .bind(t.unlock_token.as_deref())
    .bind(bool_to_int(t.awaiting_configuration))
    .bind(t.now.0)
    .fetch_one(db.conn()?)
    .await?;
    let count = rows::int(&row, "token_update_count")?;
    Ok(TokenUpdateOutcome { first: count == 1 })
}

async fn list_channels(db: &mut impl Db, device: DeviceId) -> Result<Vec<Channel>, StoreError> {
    let sql = format!("SELECT {CHANNEL_COLUMNS} FROM channels WHERE device_id = $1 ORDER BY id");
    sqlx::query(&sql)
        .bind(device.to_string())
        .fetch_all(db.conn()?)
        .await?
        .iter()
        .map(channel_from_row)
        .collect()
}

async fn get_channel(db: &mut impl Db, channel: &ChannelId) -> Result<Option<Channel>, StoreError> {
    let sql = format!("SELECT {CHANNEL_COLUMNS} FROM channels WHERE id = $1");
    sqlx::query(&sql)
        .bind(channel.as_str())
        .fetch_optional(db.conn()?)
        .await?
        .as_ref()
        .map(channel_from_row)
        .transpose()
}

/// Promotes a DeviceInformation answer's facts: `$1` is the device, `$2`–`$12` the facts (see
/// [`bind_device_facts`]). Also the first part of the desired-state read that folds into it
/// (`UnitOfWork::update_device_facts_reading_standing`).
pub(crate) const UPDATE_DEVICE_FACTS: &str = "UPDATE devices SET \
       serial_number = COALESCE($2, serial_number), \
       device_name = COALESCE($3, device_name), \
       model = COALESCE($4, model), \
       model_name = COALESCE($5, model_name), \
       product_name = COALESCE($6, product_name), \
       os_version = COALESCE($7, os_version), \
       build_version = COALESCE($8, build_version), \
       is_supervised = COALESCE($9, is_supervised), \
       updated_at = $10, \
       facts_digest = COALESCE($11, facts_digest), \
       plan_inputs_digest = COALESCE($12, plan_inputs_digest) \
     WHERE id = $1";

/// Binds `$1`–`$12` of [`UPDATE_DEVICE_FACTS`].
pub(crate) fn bind_device_facts<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    id: DeviceId,
    f: &'q DeviceFacts,
    now: UnixTime,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    query
        .bind(id.to_string())
        .bind(f.serial_number.as_deref())
        .bind(f.device_name.as_deref())
        .bind(f.model.as_deref())
        .bind(f.model_name.as_deref())
        .bind(f.product_name.as_deref())
        .bind(f.os_version.as_deref())
        .bind(f.build_version.as_deref())
        .bind(f.is_supervised.map(bool_to_int))
        .bind(now.0)
        .bind(f.facts_digest.as_deref())
        .bind(f.plan_inputs_digest.as_deref())
}

async fn update_device_facts(
    db: &mut impl Db,
    id: DeviceId,
    f: &DeviceFacts,
    now: UnixTime,
) -> Result<(), StoreError> {
    let done = bind_device_facts(sqlx::query(UPDATE_DEVICE_FACTS), id, f, now)
        .execute(db.conn()?)
        .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// An inventory section's row, followed by its values (`VALUES` or a `SELECT`) and [`ON_SECTION_CONFLICT`].
const INSERT_INVENTORY_SECTION: &str =
    "INSERT INTO inventory_sections (device_id, section, json, updated_at)";

/// A section written again replaces the one stored.
const ON_SECTION_CONFLICT: &str = "ON CONFLICT (device_id, section) \
     DO UPDATE SET json = excluded.json, updated_at = excluded.updated_at";

async fn put_inventory_section(
    db: &mut impl Db,
    id: DeviceId,
    section: &str,
    json: &str,
    now: UnixTime,
) -> Result<(), StoreError> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!("{INSERT_INVENTORY_SECTION} VALUES ($1, $2, $3, $4) {ON_SECTION_CONFLICT}")
    });
    sqlx::query(SQL.as_str())
        .bind(id.to_string())
        .bind(section)
        .bind(json)
        .bind(now.0)
        .execute(db.conn()?)
        .await?;
    Ok(())
}
