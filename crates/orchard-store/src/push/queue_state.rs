//! Push bookkeeping: which channels owe a push (derived from the command queue, so pending pushes survive a
//! restart), claiming them for the dispatcher (once, across nodes), dead tokens, and the push certificate.

use orchard_types::{ChannelId, DeviceId, UnixTime};

use crate::unit::Db;
use crate::{rows, Backend, Store, StoreError};

/// Channel ids per `UPDATE … WHERE id IN (…)` statement when requesting pushes in bulk.
const REQUEST_CHUNK: usize = 200;

/// A channel the dispatcher should push now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushTarget {
    pub channel: ChannelId,
    pub device_id: DeviceId,
    pub push_token: Vec<u8>,
    pub push_magic: String,
}

/// An uploaded MDM push certificate (the key is encrypted by the caller before it gets here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushCertificateRecord {
    pub id: String,
    pub topic: String,
    pub cert_pem: String,
    pub key_encrypted: Vec<u8>,
    pub not_before: UnixTime,
    pub not_after: UnixTime,
    pub uploaded_at: UnixTime,
    pub uploaded_by: Option<String>,
    pub active: bool,
}

/// Bumps `push_wanted` for the channels (in chunks), in the caller's unit of work or on a pooled connection.
pub(crate) async fn mark_push_wanted(
    db: &mut impl Db,
    channels: &[&str],
    now: i64,
) -> Result<u64, StoreError> {
    let mut changed = 0;
    for chunk in channels.chunks(REQUEST_CHUNK) {
        let placeholders = (0..chunk.len())
            .map(|i| format!("${}", i + 2))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "UPDATE channels SET push_wanted = push_wanted + 1, push_requested_at = $1 \
             WHERE id IN ({placeholders})"
        );
        let mut q = sqlx::query(&sql).bind(now);
        for c in chunk {
            q = q.bind(*c);
        }
        changed += q.execute(db.conn()?).await?.rows_affected();
    }
    Ok(changed)
}

/// Claims due channels and marks them pushed, in one statement. PostgreSQL skips rows another node is claiming.
const SQLITE_CLAIM: &str = "UPDATE channels SET push_done = push_wanted, pushed_at = $2 \
     WHERE id IN (SELECT id FROM channels \
                  WHERE push_wanted > push_done AND push_token IS NOT NULL AND push_magic IS NOT NULL \
                    AND push_token_dead_at IS NULL \
                  ORDER BY push_requested_at LIMIT $1) \
     RETURNING id, device_id, push_token, push_magic";

const POSTGRES_CLAIM: &str = "UPDATE channels SET push_done = push_wanted, pushed_at = $2 \
     WHERE id IN (SELECT id FROM channels \
                  WHERE push_wanted > push_done AND push_token IS NOT NULL AND push_magic IS NOT NULL \
                    AND push_token_dead_at IS NULL \
                  ORDER BY push_requested_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
     RETURNING id, device_id, push_token, push_magic";

impl Store {
    /// Marks the channels as owing a push (coalesced: however often this is called before the dispatcher runs,
    /// the channel gets one push).
    pub async fn request_push(
        &self,
        channels: &[ChannelId],
        now: UnixTime,
    ) -> Result<u64, StoreError> {
        let ids: Vec<&str> = channels.iter().map(ChannelId::as_str).collect();
        mark_push_wanted(&mut self.pooled().await?, &ids, now.0).await
    }

    /// Every channel of a device owes a push (a manual push from the API).
    pub async fn request_push_for_device(
        &self,
        device: DeviceId,
        now: UnixTime,
    ) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "UPDATE channels SET push_wanted = push_wanted + 1, push_requested_at = $1 WHERE device_id = $2",
        )
        .bind(now.0)
        .bind(device.to_string())
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Up to `limit` channels that owe a push and have a live token, oldest request first; they are marked
    /// pushed in the same statement, so two dispatchers (or nodes) never push the same request twice.
    pub async fn claim_due_pushes(
        &self,
        limit: i64,
        now: UnixTime,
    ) -> Result<Vec<PushTarget>, StoreError> {
        let sql = match self.backend {
            Backend::Sqlite => SQLITE_CLAIM,
            Backend::Postgres => POSTGRES_CLAIM,
        };
        let rows = sqlx::query(sql)
            .bind(limit.max(0))
            .bind(now.0)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(PushTarget {
                    channel: rows::channel_id(r, "id")?,
                    device_id: rows::device_id(r, "device_id")?,
                    push_token: rows::bytes(r, "push_token")?,
                    push_magic: rows::text(r, "push_magic")?,
                })
            })
            .collect()
    }

    /// How many channels owe a push and could get one.
    pub async fn count_due_pushes(&self) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM channels WHERE push_wanted > push_done \
             AND push_token IS NOT NULL AND push_token_dead_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        rows::int(&row, "n")
    }

    /// APNs said the token is dead: no more pushes to this channel until a new TokenUpdate.
    pub async fn mark_push_token_dead(
        &self,
        channel: &ChannelId,
        reason: &str,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE channels SET push_token_dead_at = $2, push_token_dead_reason = $3 WHERE id = $1",
        )
        .bind(channel.as_str())
        .bind(now.0)
        .bind(reason)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A push could not be sent (e.g. APNs kept failing): it is owed again, for the next dispatcher pass.
    pub async fn requeue_push(&self, channel: &ChannelId, now: UnixTime) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE channels SET push_wanted = push_wanted + 1, push_requested_at = $2 WHERE id = $1",
        )
        .bind(channel.as_str())
        .bind(now.0)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Device channels of enrolled devices not seen since `seen_before` and not pushed since `pushed_before`
    /// owe a wake-up push, so inactive devices are detected. Returns how many were marked.
    pub async fn request_wake_for_inactive(
        &self,
        seen_before: UnixTime,
        pushed_before: UnixTime,
        limit: i64,
        now: UnixTime,
    ) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "UPDATE channels SET push_wanted = push_wanted + 1, push_requested_at = $1 \
             WHERE id IN (SELECT c.id FROM channels c JOIN devices d ON d.id = c.device_id \
                          WHERE d.state = 'enrolled' AND c.user_short_name IS NULL \
                            AND COALESCE(d.last_seen_at, 0) < $2 AND COALESCE(c.pushed_at, 0) < $3 \
                            AND c.push_wanted <= c.push_done AND c.push_token_dead_at IS NULL \
                          LIMIT $4)",
        )
        .bind(now.0)
        .bind(seen_before.0)
        .bind(pushed_before.0)
        .bind(limit.max(0))
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Stores a push certificate; when `active`, it replaces the active one in the same transaction.
    pub async fn save_push_certificate(&self, c: &PushCertificateRecord) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        if c.active {
            sqlx::query("UPDATE push_certificates SET active = 0 WHERE active = 1")
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO push_certificates (id, topic, cert_pem, key_encrypted, not_before, not_after, \
               uploaded_at, uploaded_by, active) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&c.id)
        .bind(&c.topic)
        .bind(&c.cert_pem)
        .bind(c.key_encrypted.as_slice())
        .bind(c.not_before.0)
        .bind(c.not_after.0)
        .bind(c.uploaded_at.0)
        .bind(c.uploaded_by.as_deref())
        .bind(i64::from(c.active))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The push certificate in use, if one was uploaded.
    pub async fn active_push_certificate(
        &self,
    ) -> Result<Option<PushCertificateRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, topic, cert_pem, key_encrypted, not_before, not_after, uploaded_at, uploaded_by, active \
             FROM push_certificates WHERE active = 1 ORDER BY uploaded_at DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref()
            .map(|r| {
                Ok(PushCertificateRecord {
                    id: rows::text(r, "id")?,
                    topic: rows::text(r, "topic")?,
                    cert_pem: rows::text(r, "cert_pem")?,
                    key_encrypted: rows::bytes(r, "key_encrypted")?,
                    not_before: rows::time(r, "not_before")?,
                    not_after: rows::time(r, "not_after")?,
                    uploaded_at: rows::time(r, "uploaded_at")?,
                    uploaded_by: rows::opt_text(r, "uploaded_by")?,
                    active: rows::boolean(r, "active")?,
                })
            })
            .transpose()
    }
}
