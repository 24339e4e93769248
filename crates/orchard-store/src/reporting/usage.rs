//! Usage snapshots for billing: per UTC day and tenant, the number of enrolled devices.

use sqlx::any::AnyRow;

use orchard_types::{TenantId, UnixTime};

use crate::rows;
use crate::sql::Sql;
use crate::{Scope, Store, StoreError};

/// One tenant's count on one day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageSnapshotRecord {
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    pub tenant_id: TenantId,
    pub enrolled_devices: i64,
    pub taken_at: UnixTime,
}

fn snapshot_from_row(row: &AnyRow) -> Result<UsageSnapshotRecord, StoreError> {
    Ok(UsageSnapshotRecord {
        day: rows::text(row, "day")?,
        tenant_id: rows::tenant_id(row, "tenant_id")?,
        enrolled_devices: rows::int(row, "enrolled_devices")?,
        taken_at: rows::time(row, "taken_at")?,
    })
}

impl Store {
    /// Records `day`'s count of devices in state `enrolled` for every tenant (tenants without devices get 0),
    /// in one statement. Tenants that already have a row for the day keep it: the first snapshot of a day wins,
    /// so calling this again, or from several nodes at once, changes nothing. Returns the rows inserted.
    pub async fn take_usage_snapshot(&self, day: &str, now: UnixTime) -> Result<u64, StoreError> {
        // `WHERE 1 = 1` keeps SQLite from reading ON CONFLICT as a join constraint of the SELECT.
        let done = sqlx::query(
            "INSERT INTO usage_snapshots (day, tenant_id, enrolled_devices, taken_at) \
             SELECT $1, t.id, COUNT(d.id), $2 \
             FROM tenants t LEFT JOIN devices d ON d.tenant_id = t.id AND d.state = 'enrolled' \
             WHERE 1 = 1 \
             GROUP BY t.id \
             ON CONFLICT (day, tenant_id) DO NOTHING",
        )
        .bind(day)
        .bind(now.0)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// The snapshots of the days `from_day..=to_day` the scope may see, ordered by tenant, then day.
    pub async fn usage_snapshots(
        &self,
        scope: Scope,
        from_day: &str,
        to_day: &str,
    ) -> Result<Vec<UsageSnapshotRecord>, StoreError> {
        let mut sql = Sql::new(
            "SELECT day, tenant_id, enrolled_devices, taken_at FROM usage_snapshots WHERE day >= ",
        );
        sql.bind(from_day)
            .push(" AND day <= ")
            .bind(to_day)
            .in_scope("tenant_id", scope)
            .push(" ORDER BY tenant_id, day");
        sql.query()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(snapshot_from_row)
            .collect()
    }

    /// The latest UserList (its inventory JSON) of every enrolled Shared iPad the scope may see, with its
    /// tenant: the usage report's resident-user detail.
    pub async fn shared_ipad_user_lists(
        &self,
        scope: Scope,
    ) -> Result<Vec<(TenantId, String)>, StoreError> {
        let mut sql = Sql::new(
            "SELECT d.tenant_id, i.json FROM inventory_sections i JOIN devices d ON d.id = i.device_id \
             WHERE i.section = 'shared_ipad_users' AND d.state = 'enrolled'",
        );
        sql.in_scope("d.tenant_id", scope);
        sql.query()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| Ok((rows::tenant_id(row, "tenant_id")?, rows::text(row, "json")?)))
            .collect()
    }

    /// The days in `from_day..=to_day` on which a snapshot was taken (for any tenant), ascending. Whether a
    /// day was snapshotted is a fact about the server, not about a tenant, so it takes no scope.
    pub async fn usage_snapshot_days(
        &self,
        from_day: &str,
        to_day: &str,
    ) -> Result<Vec<String>, StoreError> {
        sqlx::query(
            "SELECT DISTINCT day FROM usage_snapshots WHERE day >= $1 AND day <= $2 ORDER BY day",
        )
        .bind(from_day)
        .bind(to_day)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| rows::text(row, "day"))
        .collect()
    }
}
