//! The keys every node shares (device CA, server CA, profile signer, data key and the KEK check), sealed by the
//! caller under the key-encryption key before they get here. The first start inserts the whole set at once,
//! each row only if absent, so two nodes racing their first start end with one set; a renewal replaces rows
//! only if their certificate is still the one the caller read.

use orchard_types::UnixTime;

use crate::{rows, Store, StoreError};

/// One shared key: its certificate (none for the data key and the KEK check) and its sealed private part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerKeyRecord {
    pub name: String,
    pub cert_pem: Option<Vec<u8>>,
    pub key_sealed: Vec<u8>,
    pub created_at: UnixTime,
}

fn record(r: &sqlx::any::AnyRow) -> Result<ServerKeyRecord, StoreError> {
    Ok(ServerKeyRecord {
        name: rows::text(r, "name")?,
        cert_pem: rows::opt_bytes(r, "cert_pem")?,
        key_sealed: rows::bytes(r, "key_sealed")?,
        created_at: rows::time(r, "created_at")?,
    })
}

impl Store {
    /// Every stored shared key, by name.
    pub async fn server_keys(&self) -> Result<Vec<ServerKeyRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, cert_pem, key_sealed, created_at FROM server_keys ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(record).collect()
    }

    /// Inserts each key whose name is not stored yet, all in one transaction; returns how many were inserted
    /// (0 when another node stored its set first: the caller then reads that one).
    pub async fn insert_server_keys_if_absent(
        &self,
        keys: &[ServerKeyRecord],
    ) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut inserted = 0;
        for k in keys {
            inserted += sqlx::query(
                "INSERT INTO server_keys (name, cert_pem, key_sealed, created_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING",
            )
            .bind(&k.name)
            .bind(k.cert_pem.as_deref())
            .bind(k.key_sealed.as_slice())
            .bind(k.created_at.0)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(inserted)
    }

    /// Replaces every key of `replacements` (new record, certificate it replaces) in one transaction, only if
    /// each stored certificate is still the replaced one; `false` (nothing changed) when another node renewed
    /// first.
    pub async fn replace_server_keys(
        &self,
        replacements: &[(ServerKeyRecord, Vec<u8>)],
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        for (k, replaced_cert) in replacements {
            let changed = sqlx::query(
                "UPDATE server_keys SET cert_pem = $1, key_sealed = $2, created_at = $3 \
                 WHERE name = $4 AND cert_pem = $5",
            )
            .bind(k.cert_pem.as_deref())
            .bind(k.key_sealed.as_slice())
            .bind(k.created_at.0)
            .bind(&k.name)
            .bind(replaced_cert.as_slice())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if changed != 1 {
                tx.rollback().await?;
                return Ok(false);
            }
        }
        tx.commit().await?;
        Ok(true)
    }
}
