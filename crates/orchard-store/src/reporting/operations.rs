//! Figures for the operators' monitoring (`/metrics`): the command queue by status with its oldest entry, and
//! the connection pool. One aggregate statement per family, on indexed columns, so a scrape stays cheap with
//! 50,000 devices.

use orchard_types::UnixTime;

use crate::rows::{int, opt_int, text};
use crate::{Store, StoreError};

/// Live commands (the hot queue: queued, sent, not now) of one status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStatusFigures {
    /// The status as stored (`queued`, `sent`, `not_now` …).
    pub status: String,
    pub commands: i64,
    /// When the longest-waiting command of this status was queued.
    pub oldest_queued_at: Option<UnixTime>,
}

/// The connection pool of this node, right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolFigures {
    /// Connections open and lent out.
    pub in_use: u32,
    /// Connections open and waiting in the pool.
    pub idle: u32,
    /// The most connections the pool opens.
    pub max: u32,
}

impl Store {
    /// The hot command queue by status: how many, and since when the oldest waits (index
    /// `commands_status_queued_at_idx`, so counting does not read the rows).
    pub async fn command_queue_figures(&self) -> Result<Vec<QueueStatusFigures>, StoreError> {
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS n, MIN(queued_at) AS oldest FROM commands GROUP BY status \
             ORDER BY status",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(QueueStatusFigures {
                    status: text(row, "status")?,
                    commands: int(row, "n")?,
                    oldest_queued_at: opt_int(row, "oldest")?.map(UnixTime),
                })
            })
            .collect()
    }

    /// This node's pool: no database round trip.
    pub fn pool_figures(&self) -> PoolFigures {
        let size = self.pool.size();
        let idle = u32::try_from(self.pool.num_idle())
            .unwrap_or(u32::MAX)
            .min(size);
        PoolFigures {
            in_use: size - idle,
            idle,
            max: self.pool.options().get_max_connections(),
        }
    }
}
