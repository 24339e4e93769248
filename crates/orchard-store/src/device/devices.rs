//! Devices, their command channels and inventory: the enrollment life cycle as the check-in endpoint drives it.

use sqlx::any::AnyRow;

use orchard_types::{ChannelId, DeviceId, Secret, Udid, UnixTime};

use crate::rows;
use crate::sql::Sql;
use crate::unit::Db;
use crate::{
    AuthenticateDevice, Channel, Device, DeviceFacts, InventorySection, Page, Scope, Store,
    StoreError, TokenUpdateOutcome, TokenUpdateRecord, UnitOfWork,
};

pub(crate) const DEVICE_COLUMNS: &str =
    "id, udid, tenant_id, serial_number, state, topic, cert_fingerprint, \
     device_name, model, model_name, product_name, os_version, build_version, is_supervised, \
     enrolled_at, last_seen_at, created_at, updated_at";
const CHANNEL_COLUMNS: &str = "id, device_id, user_short_name, user_id, push_token, push_magic, \
     unlock_token, awaiting_configuration, token_updated_at";

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

    pub async fn count_devices(&self, scope: Scope) -> Result<i64, StoreError> {
        let mut sql = Sql::new("SELECT COUNT(*) AS n FROM devices WHERE 1 = 1");
        sql.in_scope("tenant_id", scope);
        let row = sql.query().fetch_one(&self.pool).await?;
        rows::int(&row, "n")
    }

    /// Authenticate = a new enrollment for the UDID, in ONE transaction: inserts the device or keeps its
    /// existing id; sets tenant, certificate fingerprint, topic and the facts given (None keeps the stored
    /// value), state pending, enrolled_at = last_seen_at = now; deletes its channels (push token, PushMagic,
    /// UnlockToken gone); every unfinished command (queued/sent/not_now) of the device becomes expired; when
    /// the tenant changes, the inventory sections of the previous enrollment are deleted.
    pub async fn authenticate_device(&self, a: &AuthenticateDevice) -> Result<Device, StoreError> {
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
               updated_at = excluded.updated_at \
             RETURNING {DEVICE_COLUMNS}"
        );
        let f = &a.facts;
        let mut tx = self.begin_write().await?;
        let previous_tenant = sqlx::query("SELECT tenant_id FROM devices WHERE udid = $1")
            .bind(a.udid.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .map(|row| rows::text(&row, "tenant_id"))
            .transpose()?;
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
            .fetch_one(&mut *tx)
            .await?;
        let device = device_from_row(&row)?;
        let device_id = device.id.to_string();
        sqlx::query("DELETE FROM channels WHERE device_id = $1")
            .bind(&device_id)
            .execute(&mut *tx)
            .await?;
        expire_unfinished_commands(&mut tx, &device_id, a.now).await?;
        // The inventory describes what another tenant managed: it must not become visible to the new one.
        if previous_tenant.is_some_and(|previous| previous != a.tenant_id.to_string()) {
            sqlx::query("DELETE FROM inventory_sections WHERE device_id = $1")
                .bind(&device_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
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
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "UPDATE devices SET state = 'unenrolled', last_seen_at = $2, updated_at = $2 \
             WHERE udid = $1 RETURNING id",
        )
        .bind(udid.as_str())
        .bind(now.0)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(StoreError::NotFound);
        };
        let device_id = rows::text(&row, "id")?;
        sqlx::query("DELETE FROM channels WHERE device_id = $1")
            .bind(&device_id)
            .execute(&mut *tx)
            .await?;
        expire_unfinished_commands(&mut tx, &device_id, now).await?;
        tx.commit().await?;
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
        let sql =
            format!("SELECT {CHANNEL_COLUMNS} FROM channels WHERE device_id = $1 ORDER BY id");
        sqlx::query(&sql)
            .bind(device.to_string())
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(channel_from_row)
            .collect()
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

/// Expires every unfinished command of the device (a new enrollment or CheckOut makes them moot).
async fn expire_unfinished_commands(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
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
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl UnitOfWork {
    /// [`Store::update_token`] inside this unit: a first TokenUpdate stays "first" until the unit commits.
    pub async fn update_token(
        &mut self,
        t: &TokenUpdateRecord,
    ) -> Result<TokenUpdateOutcome, StoreError> {
        update_token(self, t).await
    }

    /// [`Store::get_channel`] inside this unit.
    pub async fn get_channel(
        &mut self,
        channel: &ChannelId,
    ) -> Result<Option<Channel>, StoreError> {
        get_channel(self, channel).await
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

async fn update_device_facts(
    db: &mut impl Db,
    id: DeviceId,
    f: &DeviceFacts,
    now: UnixTime,
) -> Result<(), StoreError> {
    let done = sqlx::query(
        "UPDATE devices SET \
           serial_number = COALESCE($2, serial_number), \
           device_name = COALESCE($3, device_name), \
           model = COALESCE($4, model), \
           model_name = COALESCE($5, model_name), \
           product_name = COALESCE($6, product_name), \
           os_version = COALESCE($7, os_version), \
           build_version = COALESCE($8, build_version), \
           is_supervised = COALESCE($9, is_supervised), \
           updated_at = $10 \
         WHERE id = $1",
    )
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
    .execute(db.conn()?)
    .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

async fn put_inventory_section(
    db: &mut impl Db,
    id: DeviceId,
    section: &str,
    json: &str,
    now: UnixTime,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO inventory_sections (device_id, section, json, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (device_id, section) DO UPDATE SET json = excluded.json, updated_at = excluded.updated_at",
    )
    .bind(id.to_string())
    .bind(section)
    .bind(json)
    .bind(now.0)
    .execute(db.conn()?)
    .await?;
    Ok(())
}
