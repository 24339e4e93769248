//! Tenants, enrollment links, SCEP challenges and the certificates SCEP issued.

use sqlx::any::AnyRow;

use orchard_types::{EnrollmentLinkId, TenantId, UnixTime};

use crate::rows;
use crate::sql::Sql;
use crate::unit::Db;
use crate::{
    DeviceGrantPurpose, EnrollmentLink, IdentityGrant, IssuedCertificate, ScepChallenge, Scope,
    Store, StoreError, Tenant, UnitOfWork,
};

const TENANT_COLUMNS: &str = "id, name, code, created_at";
const LINK_COLUMNS: &str =
    "id, tenant_id, name, secret_hash, max_uses, uses, expires_at, created_at, created_by";
const CHALLENGE_COLUMNS: &str =
    "challenge_hash, link_id, tenant_id, created_at, expires_at, used_at, \
     grant_kind, grant_serial, grant_udid, grant_device_id, grant_purpose";
const CERTIFICATE_COLUMNS: &str = "fingerprint, serial_hex, subject, tenant_id, link_id, issued_at, \
     not_after, grant_kind, grant_serial, grant_udid, grant_device_id, bound_device_id, bound_at, revoked_at, \
     revoked_reason, grant_purpose, renewed_at";

/// The grant columns (`grant_kind, grant_serial, grant_udid, grant_device_id, grant_purpose`) as stored.
type GrantColumns = (
    &'static str,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<&'static str>,
);

fn grant_columns(grant: &IdentityGrant) -> GrantColumns {
    match grant {
        IdentityGrant::Link => ("link", None, None, None, None),
        IdentityGrant::Ade { serial, udid } => (
            "ade",
            Some(serial.clone()),
            Some(udid.as_str().to_owned()),
            None,
            None,
        ),
        IdentityGrant::Device { device_id, purpose } => (
            "device",
            None,
            None,
            Some(device_id.to_string()),
            Some(purpose.as_str()),
        ),
    }
}

fn grant_from_row(row: &AnyRow) -> Result<IdentityGrant, StoreError> {
    let kind = rows::text(row, "grant_kind")?;
    match kind.as_str() {
        "link" => Ok(IdentityGrant::Link),
        "ade" => Ok(IdentityGrant::Ade {
            serial: rows::opt_text(row, "grant_serial")?
                .ok_or_else(|| StoreError::Corrupt("ade grant without serial".into()))?,
            udid: rows::udid(row, "grant_udid")?,
        }),
        "device" => Ok(IdentityGrant::Device {
            device_id: rows::device_id(row, "grant_device_id")?,
            // Device grants older than the purpose column came from SCEP RenewalReq: renewals.
            purpose: match rows::opt_text(row, "grant_purpose")?.as_deref() {
                None | Some("renewal") => DeviceGrantPurpose::Renewal,
                Some("return_to_service") => DeviceGrantPurpose::ReturnToService,
                Some(other) => {
                    return Err(StoreError::Corrupt(format!(
                        "unknown grant purpose {other:?}"
                    )))
                }
            },
        }),
        other => Err(StoreError::Corrupt(format!("unknown grant kind {other:?}"))),
    }
}

fn tenant_from_row(row: &AnyRow) -> Result<Tenant, StoreError> {
    Ok(Tenant {
        id: rows::tenant_id(row, "id")?,
        name: rows::text(row, "name")?,
        code: rows::text(row, "code")?,
        created_at: rows::time(row, "created_at")?,
    })
}

fn link_from_row(row: &AnyRow) -> Result<EnrollmentLink, StoreError> {
    Ok(EnrollmentLink {
        id: rows::link_id(row, "id")?,
        tenant_id: rows::tenant_id(row, "tenant_id")?,
        name: rows::text(row, "name")?,
        secret_hash: rows::text(row, "secret_hash")?,
        max_uses: rows::opt_int(row, "max_uses")?,
        uses: rows::int(row, "uses")?,
        expires_at: rows::opt_time(row, "expires_at")?,
        created_at: rows::time(row, "created_at")?,
        created_by: rows::opt_text(row, "created_by")?,
    })
}

fn challenge_from_row(row: &AnyRow) -> Result<ScepChallenge, StoreError> {
    Ok(ScepChallenge {
        challenge_hash: rows::text(row, "challenge_hash")?,
        link_id: rows::link_id(row, "link_id")?,
        tenant_id: rows::tenant_id(row, "tenant_id")?,
        grant: grant_from_row(row)?,
        created_at: rows::time(row, "created_at")?,
        expires_at: rows::time(row, "expires_at")?,
        used_at: rows::opt_time(row, "used_at")?,
    })
}

fn certificate_from_row(row: &AnyRow) -> Result<IssuedCertificate, StoreError> {
    Ok(IssuedCertificate {
        fingerprint: rows::text(row, "fingerprint")?,
        serial_hex: rows::text(row, "serial_hex")?,
        subject: rows::text(row, "subject")?,
        tenant_id: rows::tenant_id(row, "tenant_id")?,
        link_id: rows::opt_link_id(row, "link_id")?,
        grant: grant_from_row(row)?,
        issued_at: rows::time(row, "issued_at")?,
        not_after: rows::time(row, "not_after")?,
        bound_device_id: rows::opt_device_id(row, "bound_device_id")?,
        bound_at: rows::opt_time(row, "bound_at")?,
        revoked_at: rows::opt_time(row, "revoked_at")?,
        revoked_reason: rows::opt_text(row, "revoked_reason")?,
        renewed_at: rows::opt_time(row, "renewed_at")?,
    })
}

impl Store {
    /// Conflict when the code (or id) is taken.
    pub async fn create_tenant(&self, t: &Tenant) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO tenants (id, name, code, created_at) VALUES ($1, $2, $3, $4)")
            .bind(t.id.to_string())
            .bind(&t.name)
            .bind(&t.code)
            .bind(t.created_at.0)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn get_tenant(
        &self,
        scope: Scope,
        id: TenantId,
    ) -> Result<Option<Tenant>, StoreError> {
        let mut sql = Sql::new(&format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = "));
        sql.bind(id).in_scope("id", scope);
        sql.query()
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(tenant_from_row)
            .transpose()
    }

    /// Ordered by code. A tenant scope sees only its own tenant.
    pub async fn list_tenants(&self, scope: Scope) -> Result<Vec<Tenant>, StoreError> {
        let mut sql = Sql::new(&format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE 1 = 1"));
        sql.in_scope("id", scope).push(" ORDER BY code");
        sql.query()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(tenant_from_row)
            .collect()
    }

    /// Conflict when the secret hash (or id) exists; NotFound when the tenant does not.
    pub async fn create_enrollment_link(&self, l: &EnrollmentLink) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO enrollment_links \
             (id, tenant_id, name, secret_hash, max_uses, uses, expires_at, created_at, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(l.id.to_string())
        .bind(l.tenant_id.to_string())
        .bind(&l.name)
        .bind(&l.secret_hash)
        .bind(l.max_uses)
        .bind(l.uses)
        .bind(l.expires_at.map(|v| v.0))
        .bind(l.created_at.0)
        .bind(l.created_by.as_deref())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn find_enrollment_link_by_hash(
        &self,
        secret_hash: &str,
    ) -> Result<Option<EnrollmentLink>, StoreError> {
        let sql = format!("SELECT {LINK_COLUMNS} FROM enrollment_links WHERE secret_hash = $1");
        sqlx::query(&sql)
            .bind(secret_hash)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(link_from_row)
            .transpose()
    }

    /// Atomically counts one use if the link is not expired (`expires_at >= now`) and below max_uses;
    /// Ok(false) otherwise (also for an unknown link). One statement, so concurrent downloads never overshoot.
    pub async fn use_enrollment_link(
        &self,
        id: EnrollmentLinkId,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE enrollment_links SET uses = uses + 1 \
             WHERE id = $1 AND (max_uses IS NULL OR uses < max_uses) \
               AND (expires_at IS NULL OR expires_at >= $2)",
        )
        .bind(id.to_string())
        .bind(now.0)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Conflict when the hash exists; NotFound when the link or tenant does not.
    pub async fn create_scep_challenge(&self, c: &ScepChallenge) -> Result<(), StoreError> {
        let (kind, serial, udid, device, purpose) = grant_columns(&c.grant);
        sqlx::query(
            "INSERT INTO scep_challenges (challenge_hash, link_id, tenant_id, created_at, expires_at, used_at, \
               grant_kind, grant_serial, grant_udid, grant_device_id, grant_purpose) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&c.challenge_hash)
        .bind(c.link_id.to_string())
        .bind(c.tenant_id.to_string())
        .bind(c.created_at.0)
        .bind(c.expires_at.0)
        .bind(c.used_at.map(|v| v.0))
        .bind(kind)
        .bind(serial)
        .bind(udid)
        .bind(device)
        .bind(purpose)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn find_issued_certificate(
        &self,
        fingerprint: &str,
    ) -> Result<Option<IssuedCertificate>, StoreError> {
        find_issued_certificate(&mut self.pooled().await?, fingerprint).await
    }
}

impl Store {
    /// Revokes the identity with this fingerprint (if not revoked yet): refused on every device request from
    /// now on. Ok(false) when there is no such identity or it was already revoked.
    pub async fn revoke_identity(
        &self,
        fingerprint: &str,
        reason: &str,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        revoke_identity(&mut self.pooled().await?, fingerprint, reason, now).await
    }
}

impl UnitOfWork {
    /// [`Store::revoke_identity`] inside this unit.
    pub async fn revoke_identity(
        &mut self,
        fingerprint: &str,
        reason: &str,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        revoke_identity(self, fingerprint, reason, now).await
    }

    /// [`Store::find_issued_certificate`] inside this unit.
    pub async fn find_issued_certificate(
        &mut self,
        fingerprint: &str,
    ) -> Result<Option<IssuedCertificate>, StoreError> {
        find_issued_certificate(self, fingerprint).await
    }
}

async fn find_issued_certificate(
    db: &mut impl Db,
    fingerprint: &str,
) -> Result<Option<IssuedCertificate>, StoreError> {
    let sql =
        format!("SELECT {CERTIFICATE_COLUMNS} FROM issued_certificates WHERE fingerprint = $1");
    sqlx::query(&sql)
        .bind(fingerprint)
        .fetch_optional(db.conn()?)
        .await?
        .as_ref()
        .map(certificate_from_row)
        .transpose()
}

async fn revoke_identity(
    db: &mut impl Db,
    fingerprint: &str,
    reason: &str,
    now: UnixTime,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE issued_certificates SET revoked_at = $2, revoked_reason = $3 \
         WHERE fingerprint = $1 AND revoked_at IS NULL",
    )
    .bind(fingerprint)
    .bind(now.0)
    .bind(reason)
    .execute(db.conn()?)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// What SCEP kept about the request a certificate was issued for: enough to answer a retry or a CertPoll with
/// the same certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScepTransaction {
    pub transaction_id: String,
    /// SHA-256 (hex) of the public key that signed the request.
    pub signer_key_sha256: String,
    /// The hash of the one-time challenge the request spent (None for a RenewalReq).
    pub challenge_hash: Option<String>,
    pub certificate_der: Vec<u8>,
}

impl Store {
    /// Atomically marks the challenge used if it exists, is unused and not expired (`expires_at >= now`);
    /// returns it (with `used_at` set), else None. A single `UPDATE … RETURNING`: exactly one caller wins.
    pub async fn consume_scep_challenge(
        &self,
        challenge_hash: &str,
        now: UnixTime,
    ) -> Result<Option<ScepChallenge>, StoreError> {
        consume_scep_challenge(&mut self.pooled().await?, challenge_hash, now).await
    }

    /// Conflict when the fingerprint exists.
    pub async fn record_issued_certificate(&self, c: &IssuedCertificate) -> Result<(), StoreError> {
        record_issued_certificate(&mut self.pooled().await?, c).await
    }

    /// The certificates issued for SCEP transaction `transaction_id` that are neither revoked nor expired at
    /// `now`, with their fingerprints, newest first (a client that enrolls again with the same key reuses its
    /// transactionID; at most a few).
    pub async fn find_scep_transactions(
        &self,
        transaction_id: &str,
        now: UnixTime,
    ) -> Result<Vec<(String, ScepTransaction)>, StoreError> {
        find_scep_transactions(&mut self.pooled().await?, transaction_id, now).await
    }
}

impl UnitOfWork {
    /// [`Store::consume_scep_challenge`] inside this unit: rolled back with it, so a refused request leaves the
    /// challenge usable.
    pub async fn consume_scep_challenge(
        &mut self,
        challenge_hash: &str,
        now: UnixTime,
    ) -> Result<Option<ScepChallenge>, StoreError> {
        consume_scep_challenge(self, challenge_hash, now).await
    }

    /// [`Store::record_issued_certificate`] inside this unit.
    pub async fn record_issued_certificate(
        &mut self,
        c: &IssuedCertificate,
    ) -> Result<(), StoreError> {
        record_issued_certificate(self, c).await
    }

    /// Notes the SCEP transaction the certificate `fingerprint` (recorded in this unit) was issued for.
    pub async fn record_scep_transaction(
        &mut self,
        fingerprint: &str,
        t: &ScepTransaction,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE issued_certificates \
             SET scep_transaction_id = $2, scep_signer_key_sha256 = $3, certificate_der = $4, \
                 scep_challenge_hash = $5, \
                 scep_sequence = (SELECT COALESCE(MAX(scep_sequence), 0) + 1 FROM issued_certificates \
                                  WHERE scep_transaction_id = $2) \
             WHERE fingerprint = $1",
        )
        .bind(fingerprint)
        .bind(&t.transaction_id)
        .bind(&t.signer_key_sha256)
        .bind(&t.certificate_der)
        .bind(t.challenge_hash.as_deref())
        .execute(self.conn()?)
        .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}

async fn consume_scep_challenge(
    db: &mut impl Db,
    challenge_hash: &str,
    now: UnixTime,
) -> Result<Option<ScepChallenge>, StoreError> {
    let sql = format!(
        "UPDATE scep_challenges SET used_at = $2 \
         WHERE challenge_hash = $1 AND used_at IS NULL AND expires_at >= $2 \
         RETURNING {CHALLENGE_COLUMNS}"
    );
    sqlx::query(&sql)
        .bind(challenge_hash)
        .bind(now.0)
        .fetch_optional(db.conn()?)
        .await?
        .as_ref()
        .map(challenge_from_row)
        .transpose()
}

async fn record_issued_certificate(
    db: &mut impl Db,
    c: &IssuedCertificate,
) -> Result<(), StoreError> {
    let (kind, serial, udid, device, purpose) = grant_columns(&c.grant);
    sqlx::query(
        "INSERT INTO issued_certificates (fingerprint, serial_hex, subject, tenant_id, link_id, issued_at, not_after, \
           grant_kind, grant_serial, grant_udid, grant_device_id, bound_device_id, bound_at, revoked_at, \
           revoked_reason, grant_purpose) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
    )
    .bind(&c.fingerprint)
    .bind(&c.serial_hex)
    .bind(&c.subject)
    .bind(c.tenant_id.to_string())
    .bind(c.link_id.map(|id| id.to_string()))
    .bind(c.issued_at.0)
    .bind(c.not_after.0)
    .bind(kind)
    .bind(serial)
    .bind(udid)
    .bind(device)
    .bind(c.bound_device_id.map(|id| id.to_string()))
    .bind(c.bound_at.map(|v| v.0))
    .bind(c.revoked_at.map(|v| v.0))
    .bind(c.revoked_reason.as_deref())
    .bind(purpose)
    .execute(db.conn()?)
    .await?;
    Ok(())
}

async fn find_scep_transactions(
    db: &mut impl Db,
    transaction_id: &str,
    now: UnixTime,
) -> Result<Vec<(String, ScepTransaction)>, StoreError> {
    let rows = sqlx::query(
        "SELECT fingerprint, scep_transaction_id, scep_signer_key_sha256, certificate_der, scep_challenge_hash \
         FROM issued_certificates \
         WHERE scep_transaction_id = $1 AND revoked_at IS NULL AND not_after > $2 \
           AND certificate_der IS NOT NULL AND scep_signer_key_sha256 IS NOT NULL \
         ORDER BY issued_at DESC, scep_sequence DESC, fingerprint LIMIT 32",
    )
    .bind(transaction_id)
    .bind(now.0)
    .fetch_all(db.conn()?)
    .await?;
    rows.iter()
        .map(|row| {
            Ok((
                rows::text(row, "fingerprint")?,
                ScepTransaction {
                    transaction_id: rows::text(row, "scep_transaction_id")?,
                    signer_key_sha256: rows::text(row, "scep_signer_key_sha256")?,
                    certificate_der: rows::bytes(row, "certificate_der")?,
                    challenge_hash: rows::opt_text(row, "scep_challenge_hash")?,
                },
            ))
        })
        .collect()
}
