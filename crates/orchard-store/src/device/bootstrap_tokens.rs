//! Escrowed bootstrap tokens (SetBootstrapToken / GetBootstrapToken), one per device, sealed by the caller under
//! the data key before they get here.

use orchard_types::{DeviceId, UnixTime};

use crate::{Store, StoreError};

impl Store {
    /// Stores `sealed` as the device's bootstrap token (replacing the previous one), or deletes the token when
    /// `sealed` is `None` (the device sent an empty one).
    pub async fn set_bootstrap_token(
        &self,
        device: DeviceId,
        sealed: Option<&[u8]>,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        match sealed {
            Some(sealed) => {
                sqlx::query(
                    "INSERT INTO device_bootstrap_tokens (device_id, token_sealed, updated_at) \
                     VALUES ($1, $2, $3) ON CONFLICT (device_id) DO UPDATE SET \
                     token_sealed = excluded.token_sealed, updated_at = excluded.updated_at",
                )
                .bind(device.to_string())
                .bind(sealed)
                .bind(now.0)
                .execute(&self.pool)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM device_bootstrap_tokens WHERE device_id = $1")
                    .bind(device.to_string())
                    .execute(&self.pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// The device's sealed bootstrap token, if it escrowed one.
    pub async fn bootstrap_token(&self, device: DeviceId) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar::<_, Vec<u8>>(
            "SELECT token_sealed FROM device_bootstrap_tokens WHERE device_id = $1",
        )
        .bind(device.to_string())
        .fetch_optional(&self.pool)
        .await?)
    }
}
