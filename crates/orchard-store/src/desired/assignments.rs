//! Assignments: one object (kind + id: a profile now, an app or an OS policy later) wanted on a tenant's
//! devices — the whole tenant, groups or single devices, minus excluded groups and devices. Every write marks
//! the tenant's enrolled devices for the reconciler in the same transaction.

use orchard_types::{AssignmentId, TenantId, UnixTime};
use sqlx::any::AnyRow;

use crate::desired::groups::{values_list, KEEP_EARLIEST_MARK};
use crate::sql::Sql;
use crate::unit::Db;
use crate::{rows, Scope, Store, StoreError, UnitOfWork};

/// A group or a device an assignment names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AssignmentTarget {
    /// `group` or `device`.
    pub kind: String,
    pub id: String,
    /// An exclusion rather than a target.
    pub exclude: bool,
}

/// An assignment with its targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignmentRecord {
    pub id: AssignmentId,
    pub tenant_id: TenantId,
    /// `profile` (later `app`, `os_policy`).
    pub object_kind: String,
    pub object_id: String,
    /// `latest`.
    pub version_policy: String,
    pub all_devices: bool,
    /// How a profile travels: `command` (InstallProfile / RemoveProfile) or `declaration`
    /// (`configuration.legacy` in the device's declaration set, where its iOS takes it).
    pub delivery: String,
    pub targets: Vec<AssignmentTarget>,
    pub created_at: UnixTime,
    pub created_by: Option<String>,
    pub updated_at: UnixTime,
}

const ASSIGNMENT_COLUMNS: &str =
    "id, tenant_id, object_kind, object_id, version_policy, all_devices, \
     created_at, created_by, updated_at, delivery";

fn assignment_id(r: &AnyRow, column: &str) -> Result<AssignmentId, StoreError> {
    let text = rows::text(r, column)?;
    AssignmentId::parse(&text).map_err(|e| StoreError::Corrupt(format!("column {column}: {e}")))
}

fn assignment(r: &AnyRow) -> Result<AssignmentRecord, StoreError> {
    Ok(AssignmentRecord {
        id: assignment_id(r, "id")?,
        tenant_id: rows::tenant_id(r, "tenant_id")?,
        object_kind: rows::text(r, "object_kind")?,
        object_id: rows::text(r, "object_id")?,
        version_policy: rows::text(r, "version_policy")?,
        all_devices: rows::boolean(r, "all_devices")?,
        delivery: rows::text(r, "delivery")?,
        targets: Vec::new(),
        created_at: rows::time(r, "created_at")?,
        created_by: rows::opt_text(r, "created_by")?,
        updated_at: rows::time(r, "updated_at")?,
    })
}

/// Fills in the targets of the assignments read.
async fn with_targets(
    db: &mut impl Db,
    mut list: Vec<AssignmentRecord>,
) -> Result<Vec<AssignmentRecord>, StoreError> {
    for chunk in list.chunks_mut(crate::desired::groups::ROWS_PER_STATEMENT) {
        let sql = format!(
            "SELECT assignment_id, target_kind, target_id, exclude FROM assignment_targets \
             WHERE assignment_id IN ({}) ORDER BY exclude, target_kind, target_id",
            crate::desired::groups::in_list(db.backend(), 1, chunk.len())
        );
        let mut query = sqlx::query(&sql);
        for a in chunk.iter() {
            query = query.bind(a.id.to_string());
        }
        let targets = query.fetch_all(db.conn()?).await?;
        for r in &targets {
            let owner = assignment_id(r, "assignment_id")?;
            if let Some(a) = chunk.iter_mut().find(|a| a.id == owner) {
                a.targets.push(AssignmentTarget {
                    kind: rows::text(r, "target_kind")?,
                    id: rows::text(r, "target_id")?,
                    exclude: rows::boolean(r, "exclude")?,
                });
            }
        }
    }
    Ok(list)
}

async fn insert_targets(db: &mut impl Db, a: &AssignmentRecord) -> Result<(), StoreError> {
    for chunk in a.targets.chunks(crate::desired::groups::ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO assignment_targets (assignment_id, target_kind, target_id, exclude) VALUES {}",
            values_list(db.backend(), chunk.len(), 4)
        );
        let mut query = sqlx::query(&sql);
        for t in chunk {
            query = query
                .bind(a.id.to_string())
                .bind(t.kind.as_str())
                .bind(t.id.as_str())
                .bind(i64::from(t.exclude));
        }
        query.execute(db.conn()?).await?;
    }
    Ok(())
}

/// Marks every enrolled device of the tenant for the reconciler.
pub(crate) async fn mark_tenant_dirty(
    db: &mut impl Db,
    tenant: TenantId,
    now: UnixTime,
) -> Result<(), StoreError> {
    sqlx::query(&format!(
        "INSERT INTO reconcile_dirty (device_id, marked_at) \
         SELECT id, $2 FROM devices WHERE tenant_id = $1 AND state = 'enrolled' ORDER BY id \
         {KEEP_EARLIEST_MARK}"
    ))
    .bind(tenant.to_string())
    .bind(now.0)
    .execute(db.conn()?)
    .await?;
    Ok(())
}

impl Store {
    /// The tenant's assignments (in the scope), oldest first.
    pub async fn list_assignments(
        &self,
        scope: Scope,
        tenant: TenantId,
    ) -> Result<Vec<AssignmentRecord>, StoreError> {
        let mut sql = Sql::new(&format!(
            "SELECT {ASSIGNMENT_COLUMNS} FROM assignments WHERE tenant_id = "
        ));
        sql.bind(tenant)
            .in_scope("tenant_id", scope)
            .push(" ORDER BY created_at, id");
        let list = sql
            .query()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(assignment)
            .collect::<Result<Vec<_>, _>>()?;
        with_targets(&mut self.pooled().await?, list).await
    }

    /// One assignment of the tenant, in the scope.
    pub async fn get_assignment(
        &self,
        scope: Scope,
        tenant: TenantId,
        id: AssignmentId,
    ) -> Result<Option<AssignmentRecord>, StoreError> {
        let mut sql = Sql::new(&format!(
            "SELECT {ASSIGNMENT_COLUMNS} FROM assignments WHERE id = "
        ));
        sql.bind(id.to_string())
            .push(" AND tenant_id = ")
            .bind(tenant)
            .in_scope("tenant_id", scope);
        let Some(found) = sql
            .query()
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(assignment)
            .transpose()?
        else {
            return Ok(None);
        };
        Ok(with_targets(&mut self.pooled().await?, vec![found])
            .await?
            .pop())
    }

    /// Every assignment of these tenants of one object kind, with targets (the reconciler's input).
    pub async fn assignments_of_tenants(
        &self,
        tenants: &[TenantId],
        kind: &str,
    ) -> Result<Vec<AssignmentRecord>, StoreError> {
        assignments_of_tenants(&mut self.pooled().await?, tenants, kind).await
    }

    /// Creates an assignment with its targets and marks the tenant's devices, in one transaction. Conflict
    /// when the tenant assigns the object already.
    pub async fn create_assignment(&self, a: &AssignmentRecord) -> Result<(), StoreError> {
        self.create_assignment_with_options(a, None).await
    }

    /// [`Store::create_assignment`] with an app assignment's options, written in the same transaction.
    pub async fn create_assignment_with_options(
        &self,
        a: &AssignmentRecord,
        app_options: Option<&crate::AppAssignmentOptions>,
    ) -> Result<(), StoreError> {
        let mut unit = self.begin_unit().await?;
        sqlx::query(&format!(
            "INSERT INTO assignments ({ASSIGNMENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))
        .bind(a.id.to_string())
        .bind(a.tenant_id.to_string())
        .bind(a.object_kind.as_str())
        .bind(a.object_id.as_str())
        .bind(a.version_policy.as_str())
        .bind(i64::from(a.all_devices))
        .bind(a.created_at.0)
        .bind(a.created_by.as_deref())
        .bind(a.updated_at.0)
        .bind(a.delivery.as_str())
        .execute(unit.conn()?)
        .await?;
        insert_targets(&mut unit, a).await?;
        if let Some(options) = app_options {
            crate::apps::licences::put_app_options(&mut unit, options).await?;
        }
        mark_tenant_dirty(&mut unit, a.tenant_id, a.created_at).await?;
        unit.commit().await
    }

    /// Replaces an assignment's targets (and `all_devices`) and marks the tenant's devices. NotFound if gone.
    pub async fn update_assignment(&self, a: &AssignmentRecord) -> Result<(), StoreError> {
        self.update_assignment_with_options(a, None).await
    }

    /// [`Store::update_assignment`] that also replaces an app assignment's options (when given).
    pub async fn update_assignment_with_options(
        &self,
        a: &AssignmentRecord,
        app_options: Option<&crate::AppAssignmentOptions>,
    ) -> Result<(), StoreError> {
        let mut unit = self.begin_unit().await?;
        let updated = sqlx::query(
            "UPDATE assignments SET all_devices = $2, version_policy = $3, updated_at = $4, delivery = $5 \
             WHERE id = $1",
        )
        .bind(a.id.to_string())
        .bind(i64::from(a.all_devices))
        .bind(a.version_policy.as_str())
        .bind(a.updated_at.0)
        .bind(a.delivery.as_str())
        .execute(unit.conn()?)
        .await?
        .rows_affected();
        if updated == 0 {
            return Err(StoreError::NotFound);
        }
        sqlx::query("DELETE FROM assignment_targets WHERE assignment_id = $1")
            .bind(a.id.to_string())
            .execute(unit.conn()?)
            .await?;
        insert_targets(&mut unit, a).await?;
        if let Some(options) = app_options {
            crate::apps::licences::put_app_options(&mut unit, options).await?;
        }
        mark_tenant_dirty(&mut unit, a.tenant_id, a.updated_at).await?;
        unit.commit().await
    }

    /// Deletes an assignment and marks the tenant's devices (the reconciler removes what no longer matches).
    pub async fn delete_assignment(
        &self,
        id: AssignmentId,
        tenant: TenantId,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        let mut unit = self.begin_unit().await?;
        let deleted = sqlx::query("DELETE FROM assignments WHERE id = $1 AND tenant_id = $2")
            .bind(id.to_string())
            .bind(tenant.to_string())
            .execute(unit.conn()?)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Err(StoreError::NotFound);
        }
        mark_tenant_dirty(&mut unit, tenant, now).await?;
        unit.commit().await
    }
}

async fn assignments_of_tenants(
    db: &mut impl Db,
    tenants: &[TenantId],
    kind: &str,
) -> Result<Vec<AssignmentRecord>, StoreError> {
    if tenants.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {ASSIGNMENT_COLUMNS} FROM assignments WHERE object_kind = $1 AND tenant_id IN ({}) \
         ORDER BY created_at, id",
        crate::desired::groups::in_list(db.backend(), 2, tenants.len())
    );
    let mut query = sqlx::query(&sql).bind(kind);
    for t in tenants {
        query = query.bind(t.to_string());
    }
    let list = query
        .fetch_all(db.conn()?)
        .await?
        .iter()
        .map(assignment)
        .collect::<Result<Vec<_>, _>>()?;
    with_targets(db, list).await
}

impl UnitOfWork {
    /// [`Store::assignments_of_tenants`] inside this unit.
    pub async fn assignments_of_tenants(
        &mut self,
        tenants: &[TenantId],
        kind: &str,
    ) -> Result<Vec<AssignmentRecord>, StoreError> {
        assignments_of_tenants(self, tenants, kind).await
    }
}
