//! Planned-maintenance notices: service-wide (not a tenant's), so every scope reads them and only operators,
//! through core, write them.

use orchard_types::{MaintenanceNoticeId, UnixTime};
use sqlx::any::AnyRow;

use crate::sql::Sql;
use crate::{rows, Store, StoreError};

/// A notice as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceNoticeRecord {
    pub id: MaintenanceNoticeId,
    pub starts_at: UnixTime,
    pub ends_at: UnixTime,
    pub text_sv: String,
    pub text_en: String,
    pub created_at: UnixTime,
    pub created_by: Option<String>,
    pub withdrawn_at: Option<UnixTime>,
}

const COLUMNS: &str =
    "id, starts_at, ends_at, text_sv, text_en, created_at, created_by, withdrawn_at";

fn notice(r: &AnyRow) -> Result<MaintenanceNoticeRecord, StoreError> {
    let id = rows::text(r, "id")?;
    Ok(MaintenanceNoticeRecord {
        id: MaintenanceNoticeId::parse(&id)
            .map_err(|e| StoreError::Corrupt(format!("column id: {e}")))?,
        starts_at: rows::time(r, "starts_at")?,
        ends_at: rows::time(r, "ends_at")?,
        text_sv: rows::text(r, "text_sv")?,
        text_en: rows::text(r, "text_en")?,
        created_at: rows::time(r, "created_at")?,
        created_by: rows::opt_text(r, "created_by")?,
        withdrawn_at: rows::opt_time(r, "withdrawn_at")?,
    })
}

impl Store {
    /// Records a new notice.
    pub async fn create_maintenance_notice(
        &self,
        n: &MaintenanceNoticeRecord,
    ) -> Result<(), StoreError> {
        let mut sql = Sql::new(
            "INSERT INTO maintenance_notices (id, starts_at, ends_at, text_sv, text_en, created_at, \
             created_by, withdrawn_at) VALUES (",
        );
        sql.bind(n.id.to_string())
            .push(", ")
            .bind(n.starts_at.0)
            .push(", ")
            .bind(n.ends_at.0)
            .push(", ")
            .bind(n.text_sv.as_str())
            .push(", ")
            .bind(n.text_en.as_str())
            .push(", ")
            .bind(n.created_at.0)
            .push(", ")
            .bind_optional(n.created_by.as_deref())
            .push(", NULL)");
        sql.query().execute(&self.pool).await?;
        Ok(())
    }

    /// The notices not withdrawn whose window has not ended at `now` (current and upcoming), soonest first.
    pub async fn current_maintenance_notices(
        &self,
        now: UnixTime,
    ) -> Result<Vec<MaintenanceNoticeRecord>, StoreError> {
        let mut sql = Sql::new(&format!(
            "SELECT {COLUMNS} FROM maintenance_notices WHERE withdrawn_at IS NULL AND ends_at > "
        ));
        sql.bind(now.0).push(" ORDER BY starts_at, id");
        sql.query()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(notice)
            .collect()
    }

    /// Withdraws a notice that is still shown. NotFound for an unknown, already withdrawn or ended one.
    pub async fn withdraw_maintenance_notice(
        &self,
        id: MaintenanceNoticeId,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        let mut sql = Sql::new("UPDATE maintenance_notices SET withdrawn_at = ");
        sql.bind(now.0)
            .push(" WHERE id = ")
            .bind(id.to_string())
            .push(" AND withdrawn_at IS NULL AND ends_at > ")
            .bind(now.0);
        if sql.query().execute(&self.pool).await?.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}
