//! Command bodies shared by many queued commands (`command_bodies`, migration 0037): a `Command` dictionary
//! stored once (for instance a profile version's InstallProfile) and named by each queue row's `body_id`.

use orchard_types::UnixTime;

use crate::rows;
use crate::unit::Db;
use crate::{Store, StoreError, UnitOfWork};

impl UnitOfWork {
    /// The body made from `source`, if one is stored, marked as used now (so the purge leaves it alone).
    pub async fn use_command_body(
        &mut self,
        source: &str,
        now: UnixTime,
    ) -> Result<Option<String>, StoreError> {
        sqlx::query("UPDATE command_bodies SET last_used_at = $2 WHERE source = $1 RETURNING id")
            .bind(source)
            .bind(now.0)
            .fetch_optional(self.conn()?)
            .await?
            .map(|row| rows::text(&row, "id"))
            .transpose()
    }

    /// Stores a body made from `source` unless one is already stored for it (another node may have written
    /// it meanwhile). Returns whether this one was stored; if not, [`UnitOfWork::use_command_body`] finds the
    /// other.
    pub async fn insert_command_body(
        &mut self,
        id: &str,
        source: &str,
        body: &[u8],
        sealed: bool,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO command_bodies (id, source, body, body_sealed, created_at, last_used_at) \
             VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (source) DO NOTHING",
        )
        .bind(id)
        .bind(source)
        .bind(body)
        .bind(i64::from(sealed))
        .bind(now.0)
        .execute(self.conn()?)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }
}

impl Store {
    /// Deletes bodies no command (queued or in the history) names and nobody used since `unused_since`: the
    /// grace period keeps a body a reconciler pass on another node has just found from vanishing before its
    /// commands are written (were it to happen, the foreign key refuses those commands and the pass is
    /// retried). Returns how many went.
    pub async fn purge_unused_command_bodies(
        &self,
        unused_since: UnixTime,
    ) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "DELETE FROM command_bodies WHERE last_used_at < $1 \
             AND NOT EXISTS (SELECT 1 FROM commands c WHERE c.body_id = command_bodies.id) \
             AND NOT EXISTS (SELECT 1 FROM command_history h WHERE h.body_id = command_bodies.id)",
        )
        .bind(unused_since.0)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }
}
