//! Push bookkeeping: which channels owe a push (derived from the command queue, so pending pushes survive a
//! restart), leasing them to a dispatcher (one node at a time; done only once APNs answered, claimable again by
//! any node when the lease runs out), dead tokens, and the push certificate with its refusal state.

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
    /// The channel's `push_wanted` when it was claimed: what a delivery settles (requests made after the claim
    /// stay owed).
    pub claimed_wanted: i64,
}

/// What became of one push, as the device API shows it (`channels.push_last_result`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushResult<'a> {
    /// APNs accepted it.
    Delivered,
    /// APNs refused the request itself (sending it again would not help).
    Rejected { status: u16, reason: &'a str },
    /// APNs said the token is dead.
    TokenDead { status: u16, reason: &'a str },
    /// APNs said the pushed token is dead, but the device had sent a new one meanwhile: that one is pushed.
    TokenReplaced { status: u16, reason: &'a str },
    /// APNs asked to wait (429 for this device, 503 for everyone).
    RetryLater { status: u16, reason: &'a str },
    /// APNs refused the push certificate: nothing is pushed until a new one is uploaded.
    CertificateRefused { reason: &'a str },
    /// No answer (connection or TLS failure): the push stays owed.
    Failed { error: &'a str },
}

impl PushResult<'_> {
    /// The stored text: a short word first, then APNs' status and reason.
    pub fn stored(&self) -> String {
        match self {
            PushResult::Delivered => "delivered".to_owned(),
            PushResult::Rejected { status, reason } => format!("rejected: {status} {reason}"),
            PushResult::TokenDead { status, reason } => format!("token dead: {status} {reason}"),
            PushResult::TokenReplaced { status, reason } => {
                format!("old token dead, new token pending: {status} {reason}")
            }
            PushResult::RetryLater { status, reason } => format!("retry later: {status} {reason}"),
            PushResult::CertificateRefused { reason } => {
                format!("push certificate refused: {reason}")
            }
            PushResult::Failed { error } => format!("not sent: {error}"),
        }
    }
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

/// Which channels may be claimed: they owe a push, have a live token, and are neither leased by a node that may
/// still be sending nor waiting out an APNs Retry-After.
macro_rules! claimable_channel {
    () => {
        "push_wanted > push_done AND push_token IS NOT NULL AND push_magic IS NOT NULL \
         AND push_token_dead_at IS NULL AND (push_lease_until IS NULL OR push_lease_until <= $2)"
    };
}

/// Leases due channels to one node, in one statement. PostgreSQL skips rows another node is claiming.
const SQLITE_CLAIM: &str = concat!(
    "UPDATE channels SET push_claimed_by = $3, push_lease_until = $4 \
     WHERE id IN (SELECT id FROM channels WHERE ",
    claimable_channel!(),
    " ORDER BY push_requested_at LIMIT $1) \
     RETURNING id, device_id, push_token, push_magic, push_wanted"
);

const POSTGRES_CLAIM: &str = concat!(
    "UPDATE channels SET push_claimed_by = $3, push_lease_until = $4 \
     WHERE id IN (SELECT id FROM channels WHERE ",
    claimable_channel!(),
    " ORDER BY push_requested_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
     RETURNING id, device_id, push_token, push_magic, push_wanted"
);

/// Pushes settled per statement at most: [`Store::complete_pushes`] splits a batch into power-of-two chunks of
/// up to this many, so at most nine statement texts exist (the prepared-statement caches keep them all).
const COMPLETE_CHUNK: usize = 256;

/// `UPDATE channels … FROM (VALUES (channel, claimed_wanted), …)` settling `rows` pushes APNs answered: the
/// requests each claim covered are done. The lease is dropped only if it is still this node's (another node may
/// have re-claimed it after our lease ran out; its claim stays). `$1` node, `$2` now, `$3` result.
fn complete_pushes_sql(rows: usize) -> String {
    let mut sql = String::from(
        "UPDATE channels SET \
           push_done = CASE WHEN push_done < v.column2 THEN v.column2 ELSE push_done END, \
           pushed_at = CASE WHEN $3 = 'delivered' THEN $2 ELSE pushed_at END, \
           push_attempted_at = $2, push_last_result = $3, \
           push_claimed_by = CASE WHEN push_claimed_by = $1 THEN NULL ELSE push_claimed_by END, \
           push_lease_until = CASE WHEN push_claimed_by = $1 THEN NULL ELSE push_lease_until END \
         FROM (VALUES ",
    );
    for row in 0..rows {
        let first = 4 + 2 * row;
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!("(${first}, ${})", first + 1));
    }
    sql.push_str(") AS v WHERE channels.id = v.column1");
    sql
}

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

    /// Leases up to `limit` channels that owe a push and have a live token to `node` until `lease_until`,
    /// oldest request first. Nothing is marked done here: [`Store::complete_pushes`] does that once APNs answered,
    /// so a node that dies between claim and send loses nothing (its lease runs out and any node claims again).
    pub async fn claim_push_leases(
        &self,
        limit: i64,
        node: &str,
        now: UnixTime,
        lease_until: UnixTime,
    ) -> Result<Vec<PushTarget>, StoreError> {
        let sql = match self.backend {
            Backend::Sqlite => SQLITE_CLAIM,
            Backend::Postgres => POSTGRES_CLAIM,
        };
        let rows = sqlx::query(sql)
            .bind(limit.max(0))
            .bind(now.0)
            .bind(node)
            .bind(lease_until.0)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(PushTarget {
                    channel: rows::channel_id(r, "id")?,
                    device_id: rows::device_id(r, "device_id")?,
                    push_token: rows::bytes(r, "push_token")?,
                    push_magic: rows::text(r, "push_magic")?,
                    claimed_wanted: rows::int(r, "push_wanted")?,
                })
            })
            .collect()
    }

    /// APNs took (or finally refused) the pushes of `targets`, claimed by `node`: the requests each covered are
    /// done. A dispatcher pass settles its deliveries together, a statement per chunk, not one per push.
    pub async fn complete_pushes(
        &self,
        targets: &[PushTarget],
        node: &str,
        outcome: &PushResult<'_>,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        let mut rest = targets;
        while !rest.is_empty() {
            let rows = COMPLETE_CHUNK.min(1 << rest.len().ilog2());
            let (chunk, after) = rest.split_at(rows);
            let sql = complete_pushes_sql(rows);
            let mut query = sqlx::query(&sql)
                .bind(node)
                .bind(now.0)
                .bind(outcome.stored());
            for target in chunk {
                query = query
                    .bind(target.channel.as_str())
                    .bind(target.claimed_wanted);
            }
            query.execute(&self.pool).await?;
            rest = after;
        }
        Ok(())
    }

    /// The push of `channel` was not sent (APNs unreachable, the certificate refused, or APNs asked us to wait):
    /// `node` gives its lease back and the push stays owed; no node claims it before `not_before`.
    pub async fn release_push(
        &self,
        channel: &ChannelId,
        node: &str,
        not_before: Option<UnixTime>,
        outcome: &PushResult<'_>,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE channels SET push_claimed_by = NULL, push_lease_until = $3, \
               push_attempted_at = $4, push_last_result = $5 \
             WHERE id = $1 AND push_claimed_by = $2",
        )
        .bind(channel.as_str())
        .bind(node)
        .bind(not_before.map(|t| t.0))
        .bind(now.0)
        .bind(outcome.stored())
        .execute(&self.pool)
        .await?;
        Ok(())
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

    /// APNs said the token `target` was pushed to is dead: no more pushes to this channel until a new
    /// TokenUpdate, and the push is settled. Only if the channel still has that token: a TokenUpdate that
    /// landed since the claim brought a live token, which stays alive, and the push stays owed for it (this
    /// node's lease is dropped so the next pass pushes the new token). Returns whether the token was marked.
    pub async fn mark_push_token_dead(
        &self,
        target: &PushTarget,
        node: &str,
        dead_status: u16,
        reason: &str,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        let marked = sqlx::query(
            "UPDATE channels SET push_token_dead_at = $3, push_token_dead_reason = $4, \
               push_attempted_at = $3, push_last_result = $6, \
               push_done = CASE WHEN push_done < $5 THEN $5 ELSE push_done END, \
               push_claimed_by = NULL, push_lease_until = NULL \
             WHERE id = $1 AND push_token = $2",
        )
        .bind(target.channel.as_str())
        .bind(target.push_token.as_slice())
        .bind(now.0)
        .bind(reason)
        .bind(target.claimed_wanted)
        .bind(
            PushResult::TokenDead {
                status: dead_status,
                reason,
            }
            .stored(),
        )
        .execute(&self.pool)
        .await?
        .rows_affected()
            > 0;
        if !marked {
            let outcome = PushResult::TokenReplaced {
                status: dead_status,
                reason,
            };
            self.release_push(&target.channel, node, None, &outcome, now)
                .await?;
        }
        Ok(marked)
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

    /// APNs refused push certificate `id`: every node stops pushing with it (until a new one is uploaded,
    /// which is a new row). The first reason is kept.
    pub async fn refuse_push_certificate(
        &self,
        id: &str,
        reason: &str,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE push_certificates SET refused_at = $2, refused_reason = $3 \
             WHERE id = $1 AND refused_at IS NULL",
        )
        .bind(id)
        .bind(now.0)
        .bind(reason)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Why APNs refused push certificate `id`, if it did (as recorded by any node).
    pub async fn push_certificate_refusal(&self, id: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "SELECT refused_reason FROM push_certificates WHERE id = $1 AND refused_at IS NOT NULL",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref()
            .map(|r| Ok(rows::opt_text(r, "refused_reason")?.unwrap_or_default()))
            .transpose()
    }
}
