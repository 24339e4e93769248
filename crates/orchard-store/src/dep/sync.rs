//! Automated Device Enrollment: the server tokens of ASM "MDM servers" (key, sealed token, cursor, last sync)
//! and the devices each one lists. Device pages are applied in one transaction together with the page's
//! cursor, and a record never overwrites a newer one of the same serial (ordered by `op_date`).

use std::collections::HashMap;

use orchard_dep::{AssignStatus, DeviceRecord, OpType, ProfileStatus, ProfileUuid};
use orchard_types::{SerialNumber, UnixTime};

use crate::unit::Db;
use crate::{rows, Backend, Store, StoreError, UnitOfWork};

/// Values bound per row by the device upsert.
const DEVICE_BINDS_PER_ROW: usize = 20;
/// Rows per upsert statement: a whole page of Apple's (at most 1,000 devices) in one statement, 20,000 values,
/// under SQLite's 32,766 and PostgreSQL's 65,535 bound values. Fixed, so full chunks reuse one cached prepared
/// statement (same reasoning as `enqueue_commands`).
const DEVICE_ROWS_PER_STATEMENT: usize = 1_000;
/// Serials per `UPDATE … WHERE serial_number IN (…)` when marking devices deleted.
const DELETE_CHUNK: usize = 1_000;

const TOKEN_COLUMNS: &str = "id, name, certificate_pem, key_encrypted, token_encrypted, consumer_key, \
     access_token_expiry, server_name, org_name, cursor, cursor_saved_at, last_sync_at, last_sync_error, \
     created_at";

const DEVICE_COLUMNS: &str = "token_id, serial_number, model, description, color, asset_tag, os, \
     device_family, profile_status, profile_uuid, profile_assign_time, device_assigned_date, \
     device_assigned_by, op_type, op_date, deleted, updated_at, profile_push_time, mdm_migration_deadline, \
     response_status";

/// A DEP server token. The key and the token are sealed by the caller before they get here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepTokenRecord {
    pub id: String,
    pub name: String,
    /// The certificate of the key pair Orchard made, for the operator to upload to ASM.
    pub certificate_pem: String,
    pub key_encrypted: Vec<u8>,
    /// The decrypted server token's JSON, sealed; `None` until the operator uploads the `.p7m`.
    pub token_encrypted: Option<Vec<u8>>,
    pub consumer_key: Option<String>,
    pub access_token_expiry: Option<UnixTime>,
    /// From `GET /account`.
    pub server_name: Option<String>,
    pub org_name: Option<String>,
    /// The cursor of the last page applied.
    pub cursor: Option<String>,
    pub cursor_saved_at: Option<UnixTime>,
    pub last_sync_at: Option<UnixTime>,
    /// Why the last sync failed (`None` after a successful one).
    pub last_sync_error: Option<String>,
    pub created_at: UnixTime,
}

/// What an uploaded server token sets on its row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepTokenUpload {
    pub token_encrypted: Vec<u8>,
    pub consumer_key: String,
    pub access_token_expiry: UnixTime,
    pub server_name: Option<String>,
    pub org_name: Option<String>,
}

/// One device as a DEP token's MDM server lists it: the record Apple sent, in the DEP client's own type (the one
/// definition of a DEP device), with the token it came through and Orchard's bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepDeviceRecord {
    pub token_id: String,
    /// As the last record applied described it. `op_date` is `None` for fetch records (the current state at
    /// fetch time); the stored `op_date` is the newest seen.
    pub device: DeviceRecord,
    /// Released from this MDM server (kept for history).
    pub deleted: bool,
    pub updated_at: UnixTime,
}

impl DepDeviceRecord {
    /// The row a fetched or synced record of `token_id` becomes at `now`: a `deleted` sync record releases the
    /// device.
    pub fn new(token_id: &str, device: DeviceRecord, now: UnixTime) -> Self {
        let deleted = device.op_type == Some(OpType::Deleted);
        Self {
            token_id: token_id.to_owned(),
            device,
            deleted,
            updated_at: now,
        }
    }
}

/// Which DEP devices a list or count covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DepDeviceFilter<'a> {
    /// One token's devices, or every token's.
    pub token_id: Option<&'a str>,
    /// Leave out devices released from their MDM server.
    pub only_active: bool,
}

impl DepDeviceFilter<'_> {
    /// ` WHERE …` with placeholders from `$1`, and the values to bind in order.
    fn clause(&self) -> (String, Vec<String>) {
        let mut conditions = Vec::new();
        let mut binds = Vec::new();
        if let Some(token) = self.token_id {
            binds.push(token.to_owned());
            conditions.push(format!("token_id = ${}", binds.len()));
        }
        if self.only_active {
            conditions.push("deleted = 0".to_owned());
        }
        if conditions.is_empty() {
            (String::new(), binds)
        } else {
            (format!(" WHERE {}", conditions.join(" AND ")), binds)
        }
    }
}

fn token_record(r: &sqlx::any::AnyRow) -> Result<DepTokenRecord, StoreError> {
    Ok(DepTokenRecord {
        id: rows::text(r, "id")?,
        name: rows::text(r, "name")?,
        certificate_pem: rows::text(r, "certificate_pem")?,
        key_encrypted: rows::bytes(r, "key_encrypted")?,
        token_encrypted: rows::opt_bytes(r, "token_encrypted")?,
        consumer_key: rows::opt_text(r, "consumer_key")?,
        access_token_expiry: rows::opt_time(r, "access_token_expiry")?,
        server_name: rows::opt_text(r, "server_name")?,
        org_name: rows::opt_text(r, "org_name")?,
        cursor: rows::opt_text(r, "cursor")?,
        cursor_saved_at: rows::opt_time(r, "cursor_saved_at")?,
        last_sync_at: rows::opt_time(r, "last_sync_at")?,
        last_sync_error: rows::opt_text(r, "last_sync_error")?,
        created_at: rows::time(r, "created_at")?,
    })
}

pub(crate) fn device_record(r: &sqlx::any::AnyRow) -> Result<DepDeviceRecord, StoreError> {
    let corrupt =
        |column: &str, reason: String| StoreError::Corrupt(format!("column {column}: {reason}"));
    let serial_number = SerialNumber::parse(&rows::text(r, "serial_number")?)
        .map_err(|e| corrupt("serial_number", e.to_string()))?;
    let profile_uuid = rows::opt_text(r, "profile_uuid")?
        .map(ProfileUuid::try_from)
        .transpose()
        .map_err(|e| corrupt("profile_uuid", e.to_string()))?;
    Ok(DepDeviceRecord {
        token_id: rows::text(r, "token_id")?,
        device: DeviceRecord {
            serial_number,
            model: rows::opt_text(r, "model")?,
            description: rows::opt_text(r, "description")?,
            color: rows::opt_text(r, "color")?,
            asset_tag: rows::opt_text(r, "asset_tag")?,
            profile_status: rows::opt_text(r, "profile_status")?
                .map(|s| ProfileStatus::from(s.as_str())),
            profile_uuid,
            profile_assign_time: rows::opt_time(r, "profile_assign_time")?,
            profile_push_time: rows::opt_time(r, "profile_push_time")?,
            device_assigned_date: rows::opt_time(r, "device_assigned_date")?,
            device_assigned_by: rows::opt_text(r, "device_assigned_by")?,
            os: rows::opt_text(r, "os")?,
            device_family: rows::opt_text(r, "device_family")?,
            op_type: rows::opt_text(r, "op_type")?.map(|s| OpType::from(s.as_str())),
            op_date: rows::opt_time(r, "op_date")?,
            mdm_migration_deadline: rows::opt_time(r, "mdm_migration_deadline")?,
            response_status: rows::opt_text(r, "response_status")?
                .map(|s| AssignStatus::from(s.as_str())),
        },
        deleted: rows::boolean(r, "deleted")?,
        updated_at: rows::time(r, "updated_at")?,
    })
}

/// `count` placeholders for the values numbered from `first` (1-based), comma-separated.
///
/// SQLite gets anonymous `?` (bound in order): sqlx binds each named parameter (`$N`) by asking SQLite for its
/// name, which scans the statement's list of named parameters, so a statement with n of them costs O(n²) to
/// bind. With 1,700 values per statement that scan was 62 % of a 50,000-device sync. PostgreSQL has no such
/// cost and only understands `$N`.
pub(crate) fn placeholders(backend: Backend, first: usize, count: usize) -> String {
    let mut out = String::with_capacity(count * 7);
    for i in 0..count {
        if i > 0 {
            out.push_str(", ");
        }
        match backend {
            Backend::Sqlite => out.push('?'),
            Backend::Postgres => {
                out.push('$');
                out.push_str(&(first + i).to_string());
            }
        }
    }
    out
}

/// The upsert for `rows` devices. A stored record is only replaced by one at least as new: records with an
/// `op_date` are ordered by it; a fetch record (no `op_date`) is the current state and always applies, keeping
/// the stored `op_date` so older change records that arrive later still lose. Only Apple's columns are set:
/// Orchard's own (the template and tenant assignment and its progress) are never touched by a sync. A record
/// that changes none of Apple's columns writes nothing (`updated_at` is when Apple's data last changed): a full
/// resync of an unchanged fleet then costs reads only, and the count returned is the devices that changed.
fn upsert_sql(backend: Backend, rows: usize) -> String {
    let mut sql = format!("INSERT INTO dep_devices ({DEVICE_COLUMNS}) VALUES ");
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        sql.push_str(&placeholders(
            backend,
            row * DEVICE_BINDS_PER_ROW + 1,
            DEVICE_BINDS_PER_ROW,
        ));
        sql.push(')');
    }
    sql.push_str(
        " ON CONFLICT (token_id, serial_number) DO UPDATE SET model = excluded.model, \
         description = excluded.description, color = excluded.color, asset_tag = excluded.asset_tag, \
         os = excluded.os, device_family = excluded.device_family, \
         profile_status = excluded.profile_status, profile_uuid = excluded.profile_uuid, \
         profile_assign_time = excluded.profile_assign_time, \
         device_assigned_date = excluded.device_assigned_date, \
         device_assigned_by = excluded.device_assigned_by, op_type = excluded.op_type, \
         op_date = COALESCE(excluded.op_date, dep_devices.op_date), deleted = excluded.deleted, \
         updated_at = excluded.updated_at, profile_push_time = excluded.profile_push_time, \
         mdm_migration_deadline = excluded.mdm_migration_deadline, \
         response_status = excluded.response_status \
         WHERE (excluded.op_date IS NULL OR dep_devices.op_date IS NULL \
            OR excluded.op_date >= dep_devices.op_date) \
           AND (dep_devices.model IS DISTINCT FROM excluded.model \
            OR dep_devices.description IS DISTINCT FROM excluded.description \
            OR dep_devices.color IS DISTINCT FROM excluded.color \
            OR dep_devices.asset_tag IS DISTINCT FROM excluded.asset_tag \
            OR dep_devices.os IS DISTINCT FROM excluded.os \
            OR dep_devices.device_family IS DISTINCT FROM excluded.device_family \
            OR dep_devices.profile_status IS DISTINCT FROM excluded.profile_status \
            OR dep_devices.profile_uuid IS DISTINCT FROM excluded.profile_uuid \
            OR dep_devices.profile_assign_time IS DISTINCT FROM excluded.profile_assign_time \
            OR dep_devices.device_assigned_date IS DISTINCT FROM excluded.device_assigned_date \
            OR dep_devices.device_assigned_by IS DISTINCT FROM excluded.device_assigned_by \
            OR dep_devices.op_type IS DISTINCT FROM excluded.op_type \
            OR dep_devices.op_date IS DISTINCT FROM COALESCE(excluded.op_date, dep_devices.op_date) \
            OR dep_devices.deleted <> excluded.deleted \
            OR dep_devices.profile_push_time IS DISTINCT FROM excluded.profile_push_time \
            OR dep_devices.mdm_migration_deadline IS DISTINCT FROM excluded.mdm_migration_deadline \
            OR dep_devices.response_status IS DISTINCT FROM excluded.response_status)",
    );
    sql
}

/// Opens the transaction that applies sync data. On PostgreSQL its commit does not wait for the WAL flush
/// (`synchronous_commit = off`, this transaction only): a crash may lose the last pages committed, never part
/// of one, and since each page's cursor commits with it the next sync resumes from the last page that
/// survived and fetches the lost ones again. Apple's data can always be fetched again; any later
/// synchronous commit (Orchard's own writes) flushes these first, so nothing durable depends on a lost page.
/// SQLite already commits without syncing in WAL mode (`synchronous = NORMAL`) with the same guarantee.
async fn begin_sync_write(
    store: &Store,
) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
    let mut tx = store.begin_write().await?;
    if store.backend == Backend::Postgres {
        sqlx::query("SET LOCAL synchronous_commit TO OFF")
            .execute(&mut *tx)
            .await?;
    }
    Ok(tx)
}

/// One record per serial: the latest `op_date` wins (no date counts as oldest; on equal dates the later one),
/// because one statement may not touch a row twice.
fn latest_per_serial(devices: &[DepDeviceRecord]) -> Vec<&DepDeviceRecord> {
    let mut best: HashMap<(&str, &str), usize> = HashMap::with_capacity(devices.len());
    for (index, record) in devices.iter().enumerate() {
        let key = (
            record.token_id.as_str(),
            record.device.serial_number.as_str(),
        );
        match best.get(&key).and_then(|i| devices.get(*i)) {
            Some(current) if current.device.op_date > record.device.op_date => {}
            _ => {
                best.insert(key, index);
            }
        }
    }
    let mut winners: Vec<usize> = best.into_values().collect();
    winners.sort_unstable();
    winners.iter().filter_map(|i| devices.get(*i)).collect()
}

async fn upsert_devices(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    devices: &[DepDeviceRecord],
) -> Result<u64, StoreError> {
    let devices = latest_per_serial(devices);
    let mut changed = 0;
    let mut full_chunk_sql: Option<String> = None;
    for chunk in devices.chunks(DEVICE_ROWS_PER_STATEMENT) {
        let full = chunk.len() == DEVICE_ROWS_PER_STATEMENT;
        let partial_sql;
        let sql = if full {
            full_chunk_sql.get_or_insert_with(|| upsert_sql(backend, DEVICE_ROWS_PER_STATEMENT))
        } else {
            partial_sql = upsert_sql(backend, chunk.len());
            &partial_sql
        };
        // Only the full-size statement is worth keeping prepared: other sizes come once per page at most.
        let mut query = sqlx::query(sql).persistent(full || chunk.len() == 1);
        for record in chunk {
            let d = &record.device;
            query = query
                .bind(record.token_id.as_str())
                .bind(d.serial_number.as_str())
                .bind(d.model.as_deref())
                .bind(d.description.as_deref())
                .bind(d.color.as_deref())
                .bind(d.asset_tag.as_deref())
                .bind(d.os.as_deref())
                .bind(d.device_family.as_deref())
                .bind(d.profile_status.as_ref().map(ProfileStatus::as_str))
                .bind(d.profile_uuid.as_ref().map(ProfileUuid::as_str))
                .bind(d.profile_assign_time.map(|t| t.0))
                .bind(d.device_assigned_date.map(|t| t.0))
                .bind(d.device_assigned_by.as_deref())
                .bind(d.op_type.as_ref().map(OpType::as_str))
                .bind(d.op_date.map(|t| t.0))
                .bind(i32::from(record.deleted))
                .bind(record.updated_at.0)
                .bind(d.profile_push_time.map(|t| t.0))
                .bind(d.mdm_migration_deadline.map(|t| t.0))
                .bind(d.response_status.as_ref().map(AssignStatus::as_str));
        }
        changed += query.execute(&mut *conn).await?.rows_affected();
    }
    Ok(changed)
}

async fn save_cursor(
    conn: &mut sqlx::AnyConnection,
    token_id: &str,
    cursor: Option<&str>,
    now: UnixTime,
) -> Result<(), StoreError> {
    let changed =
        sqlx::query("UPDATE dep_tokens SET cursor = $1, cursor_saved_at = $2 WHERE id = $3")
            .bind(cursor)
            .bind(now.0)
            .bind(token_id)
            .execute(&mut *conn)
            .await?
            .rows_affected();
    if changed == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

impl Store {
    /// Stores a new token (before its `.p7m` is uploaded). A duplicate id is a conflict.
    pub async fn create_dep_token(&self, t: &DepTokenRecord) -> Result<(), StoreError> {
        sqlx::query(&format!(
            "INSERT INTO dep_tokens ({TOKEN_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        ))
        .bind(&t.id)
        .bind(&t.name)
        .bind(&t.certificate_pem)
        .bind(t.key_encrypted.as_slice())
        .bind(t.token_encrypted.as_deref())
        .bind(t.consumer_key.as_deref())
        .bind(t.access_token_expiry.map(|v| v.0))
        .bind(t.server_name.as_deref())
        .bind(t.org_name.as_deref())
        .bind(t.cursor.as_deref())
        .bind(t.cursor_saved_at.map(|v| v.0))
        .bind(t.last_sync_at.map(|v| v.0))
        .bind(t.last_sync_error.as_deref())
        .bind(t.created_at.0)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn dep_token(&self, id: &str) -> Result<Option<DepTokenRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM dep_tokens WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(token_record).transpose()
    }

    /// Every token, oldest first.
    pub async fn list_dep_tokens(&self) -> Result<Vec<DepTokenRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM dep_tokens ORDER BY created_at, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(token_record).collect()
    }

    /// Stores an uploaded (renewed) server token and what `/account` said. The cursor is kept: a renewed token
    /// of the same MDM server continues where the old one stopped.
    pub async fn set_dep_token_uploaded(
        &self,
        id: &str,
        upload: &DepTokenUpload,
    ) -> Result<(), StoreError> {
        let changed = sqlx::query(
            "UPDATE dep_tokens SET token_encrypted = $1, consumer_key = $2, access_token_expiry = $3, \
             server_name = $4, org_name = $5 WHERE id = $6",
        )
        .bind(upload.token_encrypted.as_slice())
        .bind(upload.consumer_key.as_str())
        .bind(upload.access_token_expiry.0)
        .bind(upload.server_name.as_deref())
        .bind(upload.org_name.as_deref())
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if changed == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Saves (or, with `None`, clears so the next sync fetches everything) the token's cursor.
    pub async fn save_dep_cursor(
        &self,
        token_id: &str,
        cursor: Option<&str>,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        save_cursor(&mut conn, token_id, cursor, now).await
    }

    /// Records the end of a sync run: its time and why it failed (`None`: it succeeded).
    pub async fn record_dep_sync(
        &self,
        token_id: &str,
        now: UnixTime,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        record_dep_sync(&mut self.pooled().await?, token_id, now, error).await
    }

    /// Applies the last page of a full fetch as one unit: its devices, then every active device of the token
    /// the fetch did not list (`listed`) marked as released, then the cursor — so the cursor never says "done"
    /// without the removals, and a failure leaves all three as they were (the next run fetches again).
    /// Returns (rows changed, devices released).
    pub async fn apply_last_fetch_page(
        &self,
        token_id: &str,
        devices: &[DepDeviceRecord],
        listed: &std::collections::HashSet<String>,
        cursor: &str,
        now: UnixTime,
    ) -> Result<(u64, u64), StoreError> {
        let mut unit = self.begin_unit().await?;
        let changed = if devices.is_empty() {
            0
        } else {
            upsert_devices(unit.conn()?, self.backend, devices).await?
        };
        let filter = DepDeviceFilter {
            token_id: Some(token_id),
            only_active: true,
        };
        let gone: Vec<String> = dep_serials(&mut unit, filter)
            .await?
            .into_iter()
            .filter(|s| !listed.contains(s))
            .collect();
        let released = mark_deleted(&mut unit, token_id, &gone, now).await?;
        save_cursor(unit.conn()?, token_id, Some(cursor), now).await?;
        unit.commit().await?;
        Ok((changed, released))
    }

    /// Inserts or updates devices in one transaction (multi-row statements); a record older than the stored
    /// one is ignored. Returns how many rows changed. An unknown token is `NotFound`.
    pub async fn upsert_dep_devices(&self, devices: &[DepDeviceRecord]) -> Result<u64, StoreError> {
        if devices.is_empty() {
            return Ok(0);
        }
        let mut tx = begin_sync_write(self).await?;
        let changed = upsert_devices(&mut tx, self.backend, devices).await?;
        tx.commit().await?;
        Ok(changed)
    }

    /// Applies one sync page: its devices and then its cursor, in one transaction, so a crash resumes from
    /// the last page applied with nothing lost or applied twice.
    pub async fn apply_dep_page(
        &self,
        token_id: &str,
        devices: &[DepDeviceRecord],
        cursor: &str,
        now: UnixTime,
    ) -> Result<u64, StoreError> {
        let mut tx = begin_sync_write(self).await?;
        let changed = upsert_devices(&mut tx, self.backend, devices).await?;
        save_cursor(&mut tx, token_id, Some(cursor), now).await?;
        tx.commit().await?;
        Ok(changed)
    }

    /// Marks the token's devices with these serials as released (devices a full fetch no longer lists).
    /// Returns how many were not already marked.
    pub async fn mark_dep_devices_deleted(
        &self,
        token_id: &str,
        serials: &[String],
        now: UnixTime,
    ) -> Result<u64, StoreError> {
        if serials.is_empty() {
            return Ok(0);
        }
        let mut unit = self.begin_unit().await?;
        let changed = mark_deleted(&mut unit, token_id, serials, now).await?;
        unit.commit().await?;
        Ok(changed)
    }

    /// One device of a token.
    pub async fn dep_device(
        &self,
        token_id: &str,
        serial_number: &str,
    ) -> Result<Option<DepDeviceRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {DEVICE_COLUMNS} FROM dep_devices WHERE token_id = $1 AND serial_number = $2"
        ))
        .bind(token_id)
        .bind(serial_number)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(device_record).transpose()
    }

    /// Devices ordered by token and serial, `limit` from `offset`.
    pub async fn list_dep_devices(
        &self,
        filter: DepDeviceFilter<'_>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<DepDeviceRecord>, StoreError> {
        let (clause, binds) = filter.clause();
        let sql = format!(
            "SELECT {DEVICE_COLUMNS} FROM dep_devices{clause} ORDER BY token_id, serial_number \
             LIMIT ${} OFFSET ${}",
            binds.len() + 1,
            binds.len() + 2
        );
        let mut query = sqlx::query(&sql);
        for b in &binds {
            query = query.bind(b.as_str());
        }
        let rows = query
            .bind(limit.max(0))
            .bind(offset.max(0))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(device_record).collect()
    }

    /// The serial numbers matching the filter, sorted (for comparing with a full fetch).
    pub async fn dep_serials(
        &self,
        filter: DepDeviceFilter<'_>,
    ) -> Result<Vec<String>, StoreError> {
        dep_serials(&mut self.pooled().await?, filter).await
    }

    pub async fn count_dep_devices(&self, filter: DepDeviceFilter<'_>) -> Result<i64, StoreError> {
        let (clause, binds) = filter.clause();
        let sql = format!("SELECT COUNT(*) AS n FROM dep_devices{clause}");
        let mut query = sqlx::query(&sql);
        for b in &binds {
            query = query.bind(b.as_str());
        }
        let row = query.fetch_one(&self.pool).await?;
        rows::int(&row, "n")
    }
}

impl UnitOfWork {
    /// [`Store::record_dep_sync`] inside this unit.
    pub async fn record_dep_sync(
        &mut self,
        token_id: &str,
        now: UnixTime,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        record_dep_sync(self, token_id, now, error).await
    }
}

async fn record_dep_sync(
    db: &mut impl Db,
    token_id: &str,
    now: UnixTime,
    error: Option<&str>,
) -> Result<(), StoreError> {
    let changed =
        sqlx::query("UPDATE dep_tokens SET last_sync_at = $1, last_sync_error = $2 WHERE id = $3")
            .bind(now.0)
            .bind(error)
            .bind(token_id)
            .execute(db.conn()?)
            .await?
            .rows_affected();
    if changed == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

async fn dep_serials(
    db: &mut impl Db,
    filter: DepDeviceFilter<'_>,
) -> Result<Vec<String>, StoreError> {
    let (clause, binds) = filter.clause();
    let sql = format!("SELECT serial_number FROM dep_devices{clause} ORDER BY serial_number");
    let mut query = sqlx::query(&sql);
    for b in &binds {
        query = query.bind(b.as_str());
    }
    let rows = query.fetch_all(db.conn()?).await?;
    rows.iter()
        .map(|r| rows::text(r, "serial_number"))
        .collect()
}

/// Marks the token's devices with these serials as released; returns how many were not already.
async fn mark_deleted(
    db: &mut impl Db,
    token_id: &str,
    serials: &[String],
    now: UnixTime,
) -> Result<u64, StoreError> {
    let backend = db.backend();
    let mut changed = 0;
    for chunk in serials.chunks(DELETE_CHUNK) {
        let sql = format!(
            "UPDATE dep_devices SET deleted = 1, updated_at = {} \
             WHERE token_id = {} AND deleted = 0 AND serial_number IN ({})",
            placeholders(backend, 1, 1),
            placeholders(backend, 2, 1),
            placeholders(backend, 3, chunk.len())
        );
        let mut query = sqlx::query(&sql).bind(now.0).bind(token_id);
        for serial in chunk {
            query = query.bind(serial.as_str());
        }
        changed += query.execute(db.conn()?).await?.rows_affected();
    }
    Ok(changed)
}
