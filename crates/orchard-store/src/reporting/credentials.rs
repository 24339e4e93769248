//! The credential register's SQL: device identities per tenant in aggregate, and the ledger of expiry warnings
//! (`credential_warnings`), each recorded and claimed in one transaction, then marked sent or retried later.

use orchard_types::{TenantId, UnixTime};
use sqlx::any::AnyRow;

use crate::rows::{int, opt_text, opt_time, tenant_id, text, time};
use crate::sql::Sql;
use crate::unit::Db;
use crate::{Scope, Store, StoreError, UnitOfWork};

/// The enrolled devices of one tenant with an identity certificate, counted by how soon it runs out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantIdentityExpiry {
    pub tenant_id: TenantId,
    /// Enrolled devices with a known, unrevoked identity.
    pub devices: i64,
    /// Of those, the ones whose identity has run out.
    pub expired: i64,
    /// For each horizon asked for (same order): identities not yet expired that run out at or before it.
    pub expiring_by: Vec<i64>,
    /// The soonest expiry among the identities not yet expired.
    pub earliest_not_after: Option<UnixTime>,
}

/// A warning the register wants sent; recorded once per (credential, expiry, threshold, recipient).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCredentialWarning {
    /// A new id for the row (used only if the warning is new).
    pub id: String,
    pub credential_key: String,
    pub expires_at: UnixTime,
    pub threshold_days: i64,
    pub recipient: String,
    pub tenant_id: Option<TenantId>,
    pub subject: String,
    pub body: String,
}

/// A warning in the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialWarningRecord {
    pub id: String,
    pub credential_key: String,
    pub expires_at: UnixTime,
    pub threshold_days: i64,
    pub recipient: String,
    pub tenant_id: Option<TenantId>,
    pub subject: String,
    pub body: String,
    /// `pending`, `sent` or `superseded`.
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: UnixTime,
    pub last_error: Option<String>,
    pub created_at: UnixTime,
    pub sent_at: Option<UnixTime>,
}

const WARNING_COLUMNS: &str =
    "id, credential_key, expires_at, threshold_days, recipient, tenant_id, subject, body, \
     state, attempts, next_attempt_at, last_error, created_at, sent_at";

fn warning_from_row(row: &AnyRow) -> Result<CredentialWarningRecord, StoreError> {
    Ok(CredentialWarningRecord {
        id: text(row, "id")?,
        credential_key: text(row, "credential_key")?,
        expires_at: time(row, "expires_at")?,
        threshold_days: int(row, "threshold_days")?,
        recipient: text(row, "recipient")?,
        tenant_id: crate::rows::opt_tenant_id(row, "tenant_id")?,
        subject: text(row, "subject")?,
        body: text(row, "body")?,
        state: text(row, "state")?,
        attempts: int(row, "attempts")?,
        next_attempt_at: time(row, "next_attempt_at")?,
        last_error: opt_text(row, "last_error")?,
        created_at: time(row, "created_at")?,
        sent_at: opt_time(row, "sent_at")?,
    })
}

impl Store {
    /// Device identities per tenant in the scope: how many, how many expired, how many run out by each of
    /// `horizons`, and the soonest expiry. Tenants without an enrolled device with an identity are left out.
    pub async fn identity_expiry_by_tenant(
        &self,
        scope: Scope,
        now: UnixTime,
        horizons: &[UnixTime],
    ) -> Result<Vec<TenantIdentityExpiry>, StoreError> {
        let mut sql = Sql::new("SELECT d.tenant_id AS tenant_id, COUNT(*) AS devices, ");
        sql.push("COALESCE(SUM(CASE WHEN c.not_after <= ")
            .bind(now.0)
            .push(" THEN 1 ELSE 0 END), 0) AS expired, ");
        for (i, horizon) in horizons.iter().enumerate() {
            sql.push("COALESCE(SUM(CASE WHEN c.not_after > ")
                .bind(now.0)
                .push(" AND c.not_after <= ")
                .bind(horizon.0)
                .push(&format!(" THEN 1 ELSE 0 END), 0) AS by_{i}, "));
        }
        sql.push("MIN(CASE WHEN c.not_after > ")
            .bind(now.0)
            .push(
                " THEN c.not_after END) AS earliest \
                   FROM devices d JOIN issued_certificates c ON c.fingerprint = d.cert_fingerprint \
                   WHERE d.state = 'enrolled' AND c.revoked_at IS NULL AND d.tenant_id IS NOT NULL",
            )
            .in_scope("d.tenant_id", scope)
            .push(" GROUP BY d.tenant_id ORDER BY d.tenant_id");
        let rows = sql.query().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                Ok(TenantIdentityExpiry {
                    tenant_id: tenant_id(row, "tenant_id")?,
                    devices: int(row, "devices")?,
                    expired: int(row, "expired")?,
                    expiring_by: (0..horizons.len())
                        .map(|i| int(row, &format!("by_{i}")))
                        .collect::<Result<_, _>>()?,
                    earliest_not_after: opt_time(row, "earliest")?,
                })
            })
            .collect()
    }

    /// The whole ledger of expiry warnings, oldest first (for operators and tests).
    pub async fn credential_warnings(&self) -> Result<Vec<CredentialWarningRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {WARNING_COLUMNS} FROM credential_warnings ORDER BY created_at, credential_key, threshold_days, recipient"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(warning_from_row).collect()
    }

    /// Marks a claimed warning delivered. False when the claim was lost (it ran out and another node took it).
    pub async fn mark_credential_warning_sent(
        &self,
        id: &str,
        owner: &str,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        let changed = sqlx::query(
            "UPDATE credential_warnings SET state = 'sent', sent_at = $3, claimed_by = NULL, claimed_until = NULL, \
                    last_error = NULL \
             WHERE id = $1 AND claimed_by = $2 AND state = 'pending'",
        )
        .bind(id)
        .bind(owner)
        .bind(now.0)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(changed > 0)
    }

    /// Releases a claimed warning whose sending failed: it is tried again at `retry_at`.
    pub async fn mark_credential_warning_failed(
        &self,
        id: &str,
        owner: &str,
        retry_at: UnixTime,
        error: &str,
    ) -> Result<bool, StoreError> {
        let changed = sqlx::query(
            "UPDATE credential_warnings SET next_attempt_at = $3, last_error = $4, claimed_by = NULL, \
                    claimed_until = NULL \
             WHERE id = $1 AND claimed_by = $2 AND state = 'pending'",
        )
        .bind(id)
        .bind(owner)
        .bind(retry_at.0)
        .bind(error)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(changed > 0)
    }
}

impl UnitOfWork {
    /// Records warnings that are due; one already recorded (same credential, expiry, threshold and recipient) is
    /// left as it is, and pending ones of looser thresholds for the same recipient are superseded. Returns how
    /// many were new.
    pub async fn record_credential_warnings(
        &mut self,
        warnings: &[NewCredentialWarning],
        now: UnixTime,
    ) -> Result<u64, StoreError> {
        let mut added = 0;
        for w in warnings {
            added += u64::from(self.insert_credential_warning(w, now, false).await?);
            // A looser warning still waiting (its sending failed) is out of date once a tighter one is due.
            let conn = self.conn()?;
            sqlx::query(
                "UPDATE credential_warnings SET state = 'superseded', claimed_by = NULL, claimed_until = NULL \
                 WHERE credential_key = $1 AND expires_at = $2 AND recipient = $3 AND threshold_days > $4 \
                   AND state = 'pending'",
            )
            .bind(w.credential_key.as_str())
            .bind(w.expires_at.0)
            .bind(w.recipient.as_str())
            .bind(w.threshold_days)
            .execute(&mut *conn)
            .await?;
        }
        Ok(added)
    }

    /// Records a warning that goes out with the unit itself (the webhook event written beside it), so it is
    /// `sent` at once and never claimed for mailing. Returns false when it was recorded before: the caller
    /// publishes nothing again.
    pub async fn record_credential_warning_sent(
        &mut self,
        w: &NewCredentialWarning,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        self.insert_credential_warning(w, now, true).await
    }

    /// Inserts a warning, pending (to be mailed) or already sent; false when it was there before.
    async fn insert_credential_warning(
        &mut self,
        w: &NewCredentialWarning,
        now: UnixTime,
        sent: bool,
    ) -> Result<bool, StoreError> {
        let conn = self.conn()?;
        let added = sqlx::query(
            "INSERT INTO credential_warnings (id, credential_key, expires_at, threshold_days, recipient, \
                 tenant_id, subject, body, state, attempts, next_attempt_at, created_at, sent_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $10, $11, $9, $9, $12) \
             ON CONFLICT (credential_key, expires_at, threshold_days, recipient) DO NOTHING",
        )
        .bind(w.id.as_str())
        .bind(w.credential_key.as_str())
        .bind(w.expires_at.0)
        .bind(w.threshold_days)
        .bind(w.recipient.as_str())
        .bind(w.tenant_id.map(|t| t.to_string()))
        .bind(w.subject.as_str())
        .bind(w.body.as_str())
        .bind(now.0)
        .bind(if sent { "sent" } else { "pending" })
        .bind(i64::from(sent))
        .bind(sent.then_some(now.0))
        .execute(&mut *conn)
        .await?
        .rows_affected();
        Ok(added > 0)
    }

    /// Claims up to `limit` pending warnings that are due and not claimed by a live node, for `owner` until
    /// `claimed_until`. The outer conditions are checked again on every row a concurrent transaction changed
    /// (PostgreSQL READ COMMITTED; SQLite holds the write lock), so two nodes never claim the same warning.
    pub async fn claim_credential_warnings(
        &mut self,
        owner: &str,
        now: UnixTime,
        claimed_until: UnixTime,
        limit: i64,
    ) -> Result<Vec<CredentialWarningRecord>, StoreError> {
        let conn = self.conn()?;
        let rows = sqlx::query(&format!(
            "UPDATE credential_warnings SET claimed_by = $1, claimed_until = $3, attempts = attempts + 1 \
             WHERE state = 'pending' AND next_attempt_at <= $2 \
               AND (claimed_until IS NULL OR claimed_until <= $2) \
               AND id IN (SELECT id FROM credential_warnings \
                          WHERE state = 'pending' AND next_attempt_at <= $2 \
                            AND (claimed_until IS NULL OR claimed_until <= $2) \
                          ORDER BY next_attempt_at, id LIMIT $4) \
             RETURNING {WARNING_COLUMNS}"
        ))
        .bind(owner)
        .bind(now.0)
        .bind(claimed_until.0)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
        let mut claimed: Vec<_> = rows
            .iter()
            .map(warning_from_row)
            .collect::<Result<_, _>>()?;
        claimed.sort_by(|a, b| {
            a.next_attempt_at
                .cmp(&b.next_attempt_at)
                .then(a.id.cmp(&b.id))
        });
        Ok(claimed)
    }
}
