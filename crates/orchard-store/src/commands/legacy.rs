//! Rows written before secrets were sealed (migration 0013 lists them): read in batches and rewritten by core
//! under the data key, each list entry deleted in the transaction that rewrites its row.

use orchard_types::{ChannelId, CommandStatus, CommandUuid, RequestType, Secret};

use crate::rows;
use crate::unit::Db;
use crate::{Store, StoreError, UnitOfWork};

/// A command that may hold a secret in plaintext. `None` fields: the command is gone (its device was deleted).
#[derive(Debug)]
pub struct LegacyCommand {
    pub uuid: CommandUuid,
    pub found: Option<LegacyCommandRow>,
}

/// What a legacy command holds.
#[derive(Debug)]
pub struct LegacyCommandRow {
    pub request_type: RequestType,
    pub status: CommandStatus,
    pub payload: Secret<Vec<u8>>,
    pub result: Option<Secret<Vec<u8>>>,
}

/// A legacy command as core rewrote it.
#[derive(Debug)]
pub struct ResealedCommand {
    pub uuid: CommandUuid,
    pub payload: Vec<u8>,
    pub payload_sealed: bool,
    pub result: Option<Vec<u8>>,
    pub result_sealed: bool,
    pub deliver_once: bool,
}

/// A channel's UnlockToken as it was stored before sealing.
#[derive(Debug)]
pub struct LegacyUnlockToken {
    pub channel: ChannelId,
    pub unlock_token: Secret<Vec<u8>>,
}

impl Store {
    /// Up to `limit` commands still listed as possibly holding a plaintext secret.
    pub async fn legacy_plaintext_commands(
        &self,
        limit: i64,
    ) -> Result<Vec<LegacyCommand>, StoreError> {
        let found = sqlx::query(
            "SELECT l.command_uuid, c.request_type, c.status, c.payload, c.result \
             FROM legacy_plaintext_commands l LEFT JOIN commands c ON c.command_uuid = l.command_uuid \
             ORDER BY l.command_uuid LIMIT $1",
        )
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await?;
        found
            .iter()
            .map(|row| {
                let uuid = rows::command_uuid(row, "command_uuid")?;
                let found = match rows::opt_text(row, "request_type")? {
                    None => None,
                    Some(_) => Some(LegacyCommandRow {
                        request_type: rows::request_type(row, "request_type")?,
                        status: rows::command_status(row, "status")?,
                        payload: Secret::new(rows::bytes(row, "payload")?),
                        result: rows::opt_bytes(row, "result")?.map(Secret::new),
                    }),
                };
                Ok(LegacyCommand { uuid, found })
            })
            .collect()
    }

    /// Up to `limit` UnlockTokens still waiting to be sealed.
    pub async fn legacy_unlock_tokens(
        &self,
        limit: i64,
    ) -> Result<Vec<LegacyUnlockToken>, StoreError> {
        let found = sqlx::query(
            "SELECT channel_id, unlock_token FROM legacy_unlock_tokens ORDER BY channel_id LIMIT $1",
        )
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await?;
        found
            .iter()
            .map(|row| {
                Ok(LegacyUnlockToken {
                    channel: rows::channel_id(row, "channel_id")?,
                    unlock_token: Secret::new(rows::bytes(row, "unlock_token")?),
                })
            })
            .collect()
    }
}

impl UnitOfWork {
    /// Writes a legacy command back sealed and takes it off the list. A command whose result was recorded
    /// (sealed) since it was read keeps that newer result: the rewrite then only takes it off the list.
    pub async fn reseal_legacy_command(&mut self, r: &ResealedCommand) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE commands SET payload = $2, payload_sealed = $3, result = $4, result_sealed = $5, \
             deliver_once = $6 WHERE command_uuid = $1 AND payload_sealed = 0 AND result_sealed = 0",
        )
        .bind(r.uuid.as_str())
        .bind(r.payload.as_slice())
        .bind(i64::from(r.payload_sealed))
        .bind(r.result.as_deref())
        .bind(i64::from(r.result_sealed))
        .bind(i64::from(r.deliver_once))
        .execute(self.conn()?)
        .await?;
        self.forget_legacy_command(&r.uuid).await
    }

    /// Takes a command off the legacy list without rewriting it (it is gone, or holds nothing secret).
    pub async fn forget_legacy_command(&mut self, uuid: &CommandUuid) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM legacy_plaintext_commands WHERE command_uuid = $1")
            .bind(uuid.as_str())
            .execute(self.conn()?)
            .await?;
        Ok(())
    }

    /// Stores a legacy UnlockToken sealed, unless the channel got a newer (sealed) one meanwhile, and takes it
    /// off the list.
    pub async fn reseal_legacy_unlock_token(
        &mut self,
        channel: &ChannelId,
        sealed: &[u8],
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE channels SET unlock_token = $2 WHERE id = $1 AND unlock_token IS NULL")
            .bind(channel.as_str())
            .bind(sealed)
            .execute(self.conn()?)
            .await?;
        sqlx::query("DELETE FROM legacy_unlock_tokens WHERE channel_id = $1")
            .bind(channel.as_str())
            .execute(self.conn()?)
            .await?;
        Ok(())
    }
}
