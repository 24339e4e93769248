//! `ddm_channels`: one row per enrollment channel that speaks declarative management. The announced token and
//! the waiting sync command make "one DeclarativeManagement command per change, never two while one waits" a
//! conditional update; the status tree is merged (or replaced by a FullReport) by core and stored here.

use orchard_types::{ChannelId, CommandUuid, DeviceId, TenantId, UnixTime};
use sqlx::any::AnyRow;

use crate::sql::Sql;
use crate::unit::Db;
use crate::{rows, NewCommand, Scope, Store, StoreError, UnitOfWork};

/// One channel's declarative management state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DdmChannelRecord {
    pub channel: ChannelId,
    pub device_id: DeviceId,
    /// The DeclarationsToken Orchard last announced (in a DeclarativeManagement command's SyncTokens).
    pub declarations_token: Option<String>,
    /// When that token became current: the SyncTokens Timestamp.
    pub token_changed_at: Option<UnixTime>,
    /// The DeclarativeManagement command waiting for an answer.
    pub sync_command: Option<String>,
    /// The merged status tree (JSON object), as the device last reported it.
    pub status_json: Option<String>,
    /// The `Errors` of the last report (JSON array).
    pub errors_json: Option<String>,
    pub status_at: Option<UnixTime>,
    pub full_report_at: Option<UnixTime>,
    pub updated_at: UnixTime,
}

const COLUMNS: &str =
    "c.channel, c.device_id, c.declarations_token, c.token_changed_at, c.sync_command, \
                       c.status_json, c.errors_json, c.status_at, c.full_report_at, c.updated_at";

fn record(r: &AnyRow) -> Result<DdmChannelRecord, StoreError> {
    Ok(DdmChannelRecord {
        channel: rows::channel_id(r, "channel")?,
        device_id: rows::device_id(r, "device_id")?,
        declarations_token: rows::opt_text(r, "declarations_token")?,
        token_changed_at: rows::opt_time(r, "token_changed_at")?,
        sync_command: rows::opt_text(r, "sync_command")?,
        status_json: rows::opt_text(r, "status_json")?,
        errors_json: rows::opt_text(r, "errors_json")?,
        status_at: rows::opt_time(r, "status_at")?,
        full_report_at: rows::opt_time(r, "full_report_at")?,
        updated_at: rows::time(r, "updated_at")?,
    })
}

async fn channel_row(
    db: &mut impl Db,
    channel: &ChannelId,
) -> Result<Option<DdmChannelRecord>, StoreError> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM ddm_channels c WHERE c.channel = $1"
    ))
    .bind(channel.as_str())
    .fetch_optional(db.conn()?)
    .await?
    .as_ref()
    .map(record)
    .transpose()
}

async fn ensure_row(
    db: &mut impl Db,
    channel: &ChannelId,
    device: DeviceId,
    now: UnixTime,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO ddm_channels (channel, device_id, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (channel) DO NOTHING",
    )
    .bind(channel.as_str())
    .bind(device.to_string())
    .bind(now.0)
    .execute(db.conn()?)
    .await?;
    Ok(())
}

/// Whether a sync may be queued: none waits, or the one recorded is finished (answered, expired) or gone.
const NO_SYNC_WAITING: &str = "(sync_command IS NULL OR NOT EXISTS (SELECT 1 FROM commands k \
     WHERE k.command_uuid = ddm_channels.sync_command AND k.status IN ('queued', 'sent', 'not_now')))";

impl Store {
    /// The state of one channel (the device surface: the caller authenticated the device).
    pub async fn ddm_channel(
        &self,
        channel: &ChannelId,
    ) -> Result<Option<DdmChannelRecord>, StoreError> {
        channel_row(&mut self.pooled().await?, channel).await
    }

    /// Every channel of a device in the scope (device channel first).
    pub async fn ddm_channels_of_device(
        &self,
        scope: Scope,
        device: DeviceId,
    ) -> Result<Vec<DdmChannelRecord>, StoreError> {
        let mut sql = Sql::new(&format!(
            "SELECT {COLUMNS} FROM ddm_channels c JOIN devices d ON d.id = c.device_id WHERE c.device_id = "
        ));
        sql.bind(device.to_string())
            .in_scope("d.tenant_id", scope)
            .push(" ORDER BY length(c.channel), c.channel");
        sql.query()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(record)
            .collect()
    }

    /// The device channels of a tenant's devices (the OS compliance view reads their status).
    pub async fn ddm_device_channels_of_tenant(
        &self,
        scope: Scope,
        tenant: TenantId,
    ) -> Result<Vec<DdmChannelRecord>, StoreError> {
        let mut sql = Sql::new(&format!(
            "SELECT {COLUMNS} FROM ddm_channels c JOIN devices d ON d.id = c.device_id \
             WHERE c.channel = d.udid AND d.tenant_id = "
        ));
        sql.bind(tenant).in_scope("d.tenant_id", scope);
        sql.query()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(record)
            .collect()
    }
}

impl UnitOfWork {
    /// The state of one channel, inside the unit.
    pub async fn ddm_channel(
        &mut self,
        channel: &ChannelId,
    ) -> Result<Option<DdmChannelRecord>, StoreError> {
        channel_row(self, channel).await
    }

    /// Stores the channel's status tree and errors as core merged them; `full` marks a FullReport.
    #[allow(clippy::too_many_arguments)]
    pub async fn ddm_status_reported(
        &mut self,
        channel: &ChannelId,
        device: DeviceId,
        status_json: &str,
        errors_json: &str,
        full: bool,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        ensure_row(self, channel, device, now).await?;
        sqlx::query(
            "UPDATE ddm_channels SET status_json = $2, errors_json = $3, status_at = $4, \
             full_report_at = CASE WHEN $5 = 1 THEN $4 ELSE full_report_at END, updated_at = $4 \
             WHERE channel = $1",
        )
        .bind(channel.as_str())
        .bind(status_json)
        .bind(errors_json)
        .bind(now.0)
        .bind(i64::from(full))
        .execute(self.conn()?)
        .await?;
        Ok(())
    }

    /// The channel's declaration set now has `token`. When it differs from the announced one and no
    /// DeclarativeManagement command waits, `command` is queued (its push owed) and recorded as the waiting
    /// one; while one waits only the token is recorded (the device fetches the current set when it answers).
    /// Returns whether `command` was queued. Decided by one conditional update, so two nodes never queue two.
    pub async fn ddm_set_changed(
        &mut self,
        channel: &ChannelId,
        device: DeviceId,
        token: &str,
        command: &NewCommand,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        ensure_row(self, channel, device, now).await?;
        let claimed = sqlx::query(&format!(
            "UPDATE ddm_channels SET declarations_token = $2, token_changed_at = $3, sync_command = $4, \
             updated_at = $3 WHERE channel = $1 \
             AND (declarations_token IS NULL OR declarations_token <> $2) AND {NO_SYNC_WAITING}"
        ))
        .bind(channel.as_str())
        .bind(token)
        .bind(now.0)
        .bind(command.uuid.as_str())
        .execute(self.conn()?)
        .await?
        .rows_affected();
        if claimed == 1 {
            self.enqueue_commands(std::slice::from_ref(command)).await?;
            return Ok(true);
        }
        sqlx::query(
            "UPDATE ddm_channels SET declarations_token = $2, token_changed_at = $3, updated_at = $3 \
             WHERE channel = $1 AND (declarations_token IS NULL OR declarations_token <> $2)",
        )
        .bind(channel.as_str())
        .bind(token)
        .bind(now.0)
        .execute(self.conn()?)
        .await?;
        Ok(false)
    }

    /// The waiting DeclarativeManagement command was answered: a later change may queue the next one.
    pub async fn ddm_sync_answered(
        &mut self,
        channel: &ChannelId,
        command: &CommandUuid,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE ddm_channels SET sync_command = NULL, updated_at = $3 \
             WHERE channel = $1 AND sync_command = $2",
        )
        .bind(channel.as_str())
        .bind(command.as_str())
        .bind(now.0)
        .execute(self.conn()?)
        .await?;
        Ok(())
    }
}
