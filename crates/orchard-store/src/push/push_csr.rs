//! Keys of the push certificate requests Orchard made: kept (sealed by the caller) until Apple's certificate
//! comes back, then found by the certificate's public key, so the operator never handles the private key.

use orchard_types::UnixTime;

use crate::{rows, Store, StoreError};

/// A push CSR's private key, encrypted by the caller before it gets here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushCsrKeyRecord {
    pub id: String,
    /// Lowercase hex SHA-256 of the key's SubjectPublicKeyInfo DER.
    pub public_key_sha256: String,
    pub key_encrypted: Vec<u8>,
    pub created_at: UnixTime,
}

fn record(r: &sqlx::any::AnyRow) -> Result<PushCsrKeyRecord, StoreError> {
    Ok(PushCsrKeyRecord {
        id: rows::text(r, "id")?,
        public_key_sha256: rows::text(r, "public_key_sha256")?,
        key_encrypted: rows::bytes(r, "key_encrypted")?,
        created_at: rows::time(r, "created_at")?,
    })
}

impl Store {
    /// Stores the key of a new push CSR. A second key with the same public key is a conflict (it cannot
    /// happen with fresh keys; the unique index makes the lookup below unambiguous).
    pub async fn save_push_csr_key(&self, k: &PushCsrKeyRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO push_csr_keys (id, public_key_sha256, key_encrypted, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&k.id)
        .bind(&k.public_key_sha256)
        .bind(k.key_encrypted.as_slice())
        .bind(k.created_at.0)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The stored key whose public key has this SHA-256 (lowercase hex), if Orchard made that CSR.
    pub async fn push_csr_key_by_public_key(
        &self,
        public_key_sha256: &str,
    ) -> Result<Option<PushCsrKeyRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, public_key_sha256, key_encrypted, created_at FROM push_csr_keys \
             WHERE public_key_sha256 = $1",
        )
        .bind(public_key_sha256)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(record).transpose()
    }

    /// Every stored push CSR key, newest first.
    pub async fn list_push_csr_keys(&self) -> Result<Vec<PushCsrKeyRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, public_key_sha256, key_encrypted, created_at FROM push_csr_keys \
             ORDER BY created_at DESC, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(record).collect()
    }

    /// Removes keys made before `before` (requests that were never answered); returns how many.
    pub async fn delete_push_csr_keys_before(&self, before: UnixTime) -> Result<u64, StoreError> {
        Ok(
            sqlx::query("DELETE FROM push_csr_keys WHERE created_at < $1")
                .bind(before.0)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }
}
