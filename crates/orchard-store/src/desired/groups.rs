//! Device groups: static and smart groups of a tenant, their materialised members and the history of joins and
//! leaves, the facts a smart filter reads, and the reconciler's work set (`reconcile_dirty`), which every
//! membership change marks in the same transaction. Filters are core's (typed and validated there); the store
//! keeps their JSON and answers what core evaluates.

use std::collections::BTreeSet;

use orchard_types::{DeviceId, GroupId, TenantId, UnixTime};
use sqlx::any::AnyRow;

use crate::sql::Sql;
use crate::unit::Db;
use crate::{rows, Backend, DeviceFacts, Scope, Store, StoreError, UnitOfWork};

/// Rows per multi-row statement: well under SQLite's 32,766 bound values for every statement here.
pub(crate) const ROWS_PER_STATEMENT: usize = 500;

/// Static (members by hand) or smart (members by filter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupKind {
    Static,
    Smart,
}

impl GroupKind {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupKind::Static => "static",
            GroupKind::Smart => "smart",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "static" => Some(GroupKind::Static),
            "smart" => Some(GroupKind::Smart),
            _ => None,
        }
    }
}

/// A device group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    pub id: GroupId,
    pub tenant_id: TenantId,
    pub name: String,
    pub kind: GroupKind,
    /// A smart group's filter, as core wrote it.
    pub filter_json: Option<String>,
    pub created_at: UnixTime,
    pub created_by: Option<String>,
    pub updated_at: UnixTime,
    /// Members now (filled by reads; ignored by writes).
    pub member_count: i64,
}

/// A member with what people recognise it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMemberRecord {
    pub device_id: DeviceId,
    pub serial_number: Option<String>,
    pub device_name: Option<String>,
    pub joined_at: UnixTime,
}

/// One join or leave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupHistoryRecord {
    pub group_id: GroupId,
    pub device_id: DeviceId,
    /// `joined` or `left`.
    pub event: String,
    pub reason: String,
    pub at: UnixTime,
}

/// What one device's re-evaluation starts from ([`UnitOfWork::read_device_standing`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceStanding {
    /// Its tenant's smart groups and the groups it is in.
    pub groups: Vec<GroupStanding>,
    /// Its facts without inventory sections; None when there are no groups to evaluate.
    pub facts: Option<DeviceGroupFacts>,
    /// The tenant's smart-groups revision its smart groups were read at (`tenants.smart_groups_revision`,
    /// raised in the unit of every create, refilter and delete of a smart group); None when the read found no
    /// group to say it.
    pub smart_groups_revision: Option<i64>,
}

/// A group as one device's re-evaluation sees it ([`UnitOfWork::read_device_standing`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStanding {
    pub id: GroupId,
    pub tenant_id: TenantId,
    pub smart: bool,
    /// The smart filter (JSON); None for a static group.
    pub filter_json: Option<String>,
    /// Whether the device is in it now.
    pub member: bool,
}

/// What a smart filter may look at of one device. The inventory sections come as stored JSON, and only when
/// the caller asked for them (a filter over OS versions of 50,000 devices reads no inventory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceGroupFacts {
    pub device_id: DeviceId,
    pub tenant_id: TenantId,
    pub enrolled: bool,
    pub model: Option<String>,
    pub model_name: Option<String>,
    pub product_name: Option<String>,
    pub os_version: Option<String>,
    pub device_name: Option<String>,
    pub supervised: Option<bool>,
    pub last_seen_at: Option<UnixTime>,
    pub dep_template_id: Option<String>,
    pub identity_not_after: Option<UnixTime>,
    /// The stored `device_information` section (when asked for).
    pub device_information_json: Option<String>,
    /// The stored `installed_applications` section (when asked for).
    pub installed_applications_json: Option<String>,
}

/// Which inventory sections [`DeviceGroupFacts`] should carry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FactSections {
    pub device_information: bool,
    pub installed_applications: bool,
}

const GROUP_COLUMNS: &str = "g.id, g.tenant_id, g.name, g.kind, g.filter_json, g.created_at, g.created_by, \
     g.updated_at, (SELECT COUNT(*) FROM device_group_members m WHERE m.group_id = g.id) AS member_count";

pub(crate) fn group_id(r: &AnyRow, column: &str) -> Result<GroupId, StoreError> {
    let text = rows::text(r, column)?;
    GroupId::parse(&text).map_err(|e| StoreError::Corrupt(format!("column {column}: {e}")))
}

fn group(r: &AnyRow) -> Result<GroupRecord, StoreError> {
    let kind = rows::text(r, "kind")?;
    Ok(GroupRecord {
        id: group_id(r, "id")?,
        tenant_id: rows::tenant_id(r, "tenant_id")?,
        name: rows::text(r, "name")?,
        kind: GroupKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("group kind {kind:?}")))?,
        filter_json: rows::opt_text(r, "filter_json")?,
        created_at: rows::time(r, "created_at")?,
        created_by: rows::opt_text(r, "created_by")?,
        updated_at: rows::time(r, "updated_at")?,
        member_count: rows::int(r, "member_count")?,
    })
}

/// `($1, $2, …), (…)`: `rows` groups of `width` placeholders, the statement's first parameters (any other
/// parameter comes after them in the text and is numbered after them).
///
/// SQLite gets anonymous `?` (see `dep::sync::placeholders`): sqlx binds a named parameter by asking SQLite for
/// its name, a scan of the statement's named parameters, so n of them cost O(n²) to bind; with 500-row lists
/// that was 16 % of assigning a profile to 50,000 iPads. sqlx numbers anonymous parameters by their order in
/// the text, hence the rule above.
pub(crate) fn values_list(backend: Backend, rows: usize, width: usize) -> String {
    let mut out = String::with_capacity(rows * width * 5);
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        out.push_str(&crate::dep::sync::placeholders(
            backend,
            r * width + 1,
            width,
        ));
        out.push(')');
    }
    out
}

/// `$first, $first+1, …` for an `IN (…)` list of `n` values. From `$1` these are SQLite's anonymous `?` under
/// the rule of [`values_list`]; a list after other parameters keeps numbered ones (used where lists are small).
pub(crate) fn in_list(backend: Backend, first: usize, n: usize) -> String {
    if first == 1 {
        return crate::dep::sync::placeholders(backend, 1, n);
    }
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Raises the smart-groups revision of the tenant of `group` if it is a smart group (`tenants`,
/// migration 0043), in the unit that creates, refilters or deletes it: a node that holds the tenant's filters
/// in memory sees from the revision that they changed once the unit commits, whichever node changed them.
async fn raise_smart_groups_revision(db: &mut impl Db, group: GroupId) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE tenants SET smart_groups_revision = smart_groups_revision + 1 \
         WHERE id = (SELECT tenant_id FROM device_groups WHERE id = $1 AND kind = 'smart')",
    )
    .bind(group.to_string())
    .execute(db.conn()?)
    .await?;
    Ok(())
}

/// How every insert into the reconciler's work set meets a mark already there: the earliest mark stays, and the
/// row is locked until the unit ends. The lock is the point. A claim deletes marks (`FOR UPDATE SKIP LOCKED` on
/// PostgreSQL); with `DO NOTHING` a unit that found the mark there took no lock, a pass could claim the mark and
/// read the device before that unit committed, and the unit's change was never reconciled (a device left its
/// group and kept its app and licence). Locked, the mark is skipped by claims until the unit commits, so the
/// pass that takes it reads the change. A claim that deleted the mark first makes this insert wait for it and
/// then insert anew. Marks of many devices are written in device order, so two units lock them in one order.
pub(crate) const KEEP_EARLIEST_MARK: &str =
    "ON CONFLICT (device_id) DO UPDATE SET marked_at = reconcile_dirty.marked_at";

/// Marks devices for the reconciler (the earliest mark of a device stays).
pub(crate) async fn mark_dirty(
    db: &mut impl Db,
    devices: &[DeviceId],
    now: UnixTime,
) -> Result<(), StoreError> {
    let mut unique: Vec<String> = devices.iter().map(ToString::to_string).collect();
    unique.sort_unstable();
    unique.dedup();
    for chunk in unique.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO reconcile_dirty (device_id, marked_at) VALUES {} {KEEP_EARLIEST_MARK}",
            values_list(db.backend(), chunk.len(), 2)
        );
        let mut query = sqlx::query(&sql);
        for id in chunk {
            query = query.bind(id.as_str()).bind(now.0);
        }
        query.execute(db.conn()?).await?;
    }
    Ok(())
}

/// Writes a membership change: joins and leaves with their history, and marks the devices dirty.
async fn apply_membership(
    db: &mut impl Db,
    group: GroupId,
    joined: &[DeviceId],
    left: &[DeviceId],
    reason: &str,
    now: UnixTime,
) -> Result<(), StoreError> {
    let group_text = group.to_string();
    for chunk in joined.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO device_group_members (group_id, device_id, joined_at) VALUES {} \
             ON CONFLICT (group_id, device_id) DO NOTHING",
            values_list(db.backend(), chunk.len(), 3)
        );
        let mut query = sqlx::query(&sql);
        for d in chunk {
            query = query
                .bind(group_text.as_str())
                .bind(d.to_string())
                .bind(now.0);
        }
        query.execute(db.conn()?).await?;
    }
    for chunk in left.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "DELETE FROM device_group_members WHERE group_id = $1 AND device_id IN ({})",
            in_list(db.backend(), 2, chunk.len())
        );
        let mut query = sqlx::query(&sql).bind(group_text.as_str());
        for d in chunk {
            query = query.bind(d.to_string());
        }
        query.execute(db.conn()?).await?;
    }
    let events = joined
        .iter()
        .map(|d| (d, "joined"))
        .chain(left.iter().map(|d| (d, "left")))
        .collect::<Vec<_>>();
    for chunk in events.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO device_group_history (group_id, device_id, event, reason, at) VALUES {}",
            values_list(db.backend(), chunk.len(), 5)
        );
        let mut query = sqlx::query(&sql);
        for (d, event) in chunk {
            query = query
                .bind(group_text.as_str())
                .bind(d.to_string())
                .bind(*event)
                .bind(reason)
                .bind(now.0);
        }
        query.execute(db.conn()?).await?;
    }
    let changed: Vec<DeviceId> = joined.iter().chain(left).copied().collect();
    mark_dirty(db, &changed, now).await
}

async fn member_ids(db: &mut impl Db, group: GroupId) -> Result<BTreeSet<DeviceId>, StoreError> {
    sqlx::query("SELECT device_id FROM device_group_members WHERE group_id = $1")
        .bind(group.to_string())
        .fetch_all(db.conn()?)
        .await?
        .iter()
        .map(|r| rows::device_id(r, "device_id"))
        .collect()
}

/// Makes the members exactly `wanted` (a smart group's evaluation); returns (joined, left).
async fn replace_members(
    db: &mut impl Db,
    group: GroupId,
    wanted: &BTreeSet<DeviceId>,
    reason: &str,
    now: UnixTime,
) -> Result<(usize, usize), StoreError> {
    let current = member_ids(db, group).await?;
    let joined: Vec<DeviceId> = wanted.difference(&current).copied().collect();
    let left: Vec<DeviceId> = current.difference(wanted).copied().collect();
    apply_membership(db, group, &joined, &left, reason, now).await?;
    Ok((joined.len(), left.len()))
}

fn facts(r: &AnyRow, sections: FactSections) -> Result<DeviceGroupFacts, StoreError> {
    Ok(DeviceGroupFacts {
        device_id: rows::device_id(r, "id")?,
        tenant_id: rows::tenant_id(r, "tenant_id")?,
        enrolled: rows::text(r, "state")? == "enrolled",
        model: rows::opt_text(r, "model")?,
        model_name: rows::opt_text(r, "model_name")?,
        product_name: rows::opt_text(r, "product_name")?,
        os_version: rows::opt_text(r, "os_version")?,
        device_name: rows::opt_text(r, "device_name")?,
        supervised: rows::opt_boolean(r, "is_supervised")?,
        last_seen_at: rows::opt_time(r, "last_seen_at")?,
        dep_template_id: rows::opt_text(r, "dep_template_id")?,
        identity_not_after: rows::opt_time(r, "identity_not_after")?,
        device_information_json: if sections.device_information {
            rows::opt_text(r, "device_information_json")?
        } else {
            None
        },
        installed_applications_json: if sections.installed_applications {
            rows::opt_text(r, "installed_applications_json")?
        } else {
            None
        },
    })
}

/// Every group the device (`device`, a placeholder) is in now, and every smart group of `tenant` it is not in:
/// `group_id`, `group_kind`, `group_tenant_id`, `filter_json`, `member`.
fn standing_groups_sql(device: &str, tenant: &str) -> String {
    format!(
        "SELECT g.id AS group_id, g.kind AS group_kind, g.tenant_id AS group_tenant_id, g.filter_json, \
                1 AS member FROM device_group_members m \
         JOIN device_groups g ON g.id = m.group_id WHERE m.device_id = {device} \
         UNION ALL \
         SELECT g.id, g.kind, g.tenant_id, g.filter_json, 0 FROM device_groups g \
         WHERE g.tenant_id = {tenant} AND g.kind = 'smart' AND NOT EXISTS \
           (SELECT 1 FROM device_group_members m WHERE m.group_id = g.id AND m.device_id = {device})"
    )
}

/// A data-modifying `WITH` part that marks the device (`device`, a placeholder) for the reconciler at `at`.
fn mark_dirty_cte(device: &str, at: &str) -> String {
    format!(
        "mark AS (INSERT INTO reconcile_dirty (device_id, marked_at) VALUES ({device}, {at}) \
         {KEEP_EARLIEST_MARK})"
    )
}

/// The tenant's smart-groups revision as a column of a standing read (`tenant`, a placeholder): read by the
/// same statement as the groups, so the two agree.
fn revision_column(tenant: &str) -> String {
    format!(
        "(SELECT t.smart_groups_revision FROM tenants t WHERE t.id = {tenant}) AS smart_groups_revision"
    )
}

/// A standing read's rows: the facts and the revision from the first, a group from each row that has one.
fn standing_from_rows(rows: &[AnyRow]) -> Result<DeviceStanding, StoreError> {
    let facts = rows
        .first()
        .map(|r| facts(r, FactSections::default()))
        .transpose()?;
    let smart_groups_revision = match rows.first() {
        Some(r) => rows::opt_int(r, "smart_groups_revision")?,
        None => None,
    };
    let mut groups = Vec::with_capacity(rows.len());
    for r in rows {
        if rows::opt_text(r, "group_id")?.is_none() {
            continue;
        }
        groups.push(GroupStanding {
            id: group_id(r, "group_id")?,
            tenant_id: rows::tenant_id(r, "group_tenant_id")?,
            smart: rows::text(r, "group_kind")? == "smart",
            filter_json: rows::opt_text(r, "filter_json")?,
            member: rows::int(r, "member")? == 1,
        });
    }
    Ok(DeviceStanding {
        groups,
        facts,
        smart_groups_revision,
    })
}

fn facts_sql(sections: FactSections) -> String {
    facts_sql_from("devices", sections)
}

/// [`facts_sql`] over `source`: the `devices` table, or a `WITH` that returns its rows.
fn facts_sql_from(source: &str, sections: FactSections) -> String {
    let mut select = String::from(
        "SELECT d.id, d.tenant_id, d.state, d.model, d.model_name, d.product_name, d.os_version, \
         d.device_name, d.is_supervised, d.last_seen_at, d.dep_template_id, c.not_after AS identity_not_after",
    );
    let mut from = format!(
        " FROM {source} d LEFT JOIN issued_certificates c ON c.fingerprint = d.cert_fingerprint"
    );
    if sections.device_information {
        select.push_str(", di.json AS device_information_json");
        from.push_str(
            " LEFT JOIN inventory_sections di ON di.device_id = d.id AND di.section = 'device_information'",
        );
    }
    if sections.installed_applications {
        select.push_str(", ia.json AS installed_applications_json");
        from.push_str(
            " LEFT JOIN inventory_sections ia ON ia.device_id = d.id AND ia.section = 'installed_applications'",
        );
    }
    select + &from
}

async fn device_facts(
    db: &mut impl Db,
    device: DeviceId,
    sections: FactSections,
) -> Result<Option<DeviceGroupFacts>, StoreError> {
    let sql = format!("{} WHERE d.id = $1", facts_sql(sections));
    sqlx::query(&sql)
        .bind(device.to_string())
        .fetch_optional(db.conn()?)
        .await?
        .as_ref()
        .map(|r| facts(r, sections))
        .transpose()
}

async fn tenant_facts(
    db: &mut impl Db,
    tenant: TenantId,
    sections: FactSections,
) -> Result<Vec<DeviceGroupFacts>, StoreError> {
    let sql = format!(
        "{} WHERE d.tenant_id = $1 AND d.state = 'enrolled'",
        facts_sql(sections)
    );
    sqlx::query(&sql)
        .bind(tenant.to_string())
        .fetch_all(db.conn()?)
        .await?
        .iter()
        .map(|r| facts(r, sections))
        .collect()
}

impl Store {
    /// The tenant's groups (in the scope), by name.
    pub async fn list_groups(
        &self,
        scope: Scope,
        tenant: TenantId,
    ) -> Result<Vec<GroupRecord>, StoreError> {
        let mut sql = Sql::new(&format!(
            "SELECT {GROUP_COLUMNS} FROM device_groups g WHERE g.tenant_id = "
        ));
        sql.bind(tenant)
            .in_scope("g.tenant_id", scope)
            .push(" ORDER BY g.name, g.id");
        sql.query()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(group)
            .collect()
    }

    /// One group of the tenant, in the scope.
    pub async fn get_group(
        &self,
        scope: Scope,
        tenant: TenantId,
        id: GroupId,
    ) -> Result<Option<GroupRecord>, StoreError> {
        let mut sql = Sql::new(&format!(
            "SELECT {GROUP_COLUMNS} FROM device_groups g WHERE g.id = "
        ));
        sql.bind(id.to_string())
            .push(" AND g.tenant_id = ")
            .bind(tenant)
            .in_scope("g.tenant_id", scope);
        sql.query()
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(group)
            .transpose()
    }

    /// A group of any tenant the scope covers.
    pub async fn group_in_scope(
        &self,
        scope: Scope,
        id: GroupId,
    ) -> Result<Option<GroupRecord>, StoreError> {
        let mut sql = Sql::new(&format!(
            "SELECT {GROUP_COLUMNS} FROM device_groups g WHERE g.id = "
        ));
        sql.bind(id.to_string()).in_scope("g.tenant_id", scope);
        sql.query()
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(group)
            .transpose()
    }

    /// Every member of a group (bulk commands; the caller found the group through its scope).
    pub async fn group_member_ids(&self, group: GroupId) -> Result<Vec<DeviceId>, StoreError> {
        Ok(member_ids(&mut self.pooled().await?, group)
            .await?
            .into_iter()
            .collect())
    }

    /// A page of a group's members (the caller found the group through its scope), by serial number.
    pub async fn list_group_members(
        &self,
        group: GroupId,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<GroupMemberRecord>, StoreError> {
        sqlx::query(
            "SELECT m.device_id, d.serial_number, d.device_name, m.joined_at \
             FROM device_group_members m JOIN devices d ON d.id = m.device_id \
             WHERE m.group_id = $1 ORDER BY d.serial_number, m.device_id LIMIT $2 OFFSET $3",
        )
        .bind(group.to_string())
        .bind(limit.max(0))
        .bind(offset.max(0))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(GroupMemberRecord {
                device_id: rows::device_id(r, "device_id")?,
                serial_number: rows::opt_text(r, "serial_number")?,
                device_name: rows::opt_text(r, "device_name")?,
                joined_at: rows::time(r, "joined_at")?,
            })
        })
        .collect()
    }

    /// Joins and leaves of a group (or of one device in it), newest first.
    pub async fn group_history(
        &self,
        group: GroupId,
        device: Option<DeviceId>,
        limit: i64,
    ) -> Result<Vec<GroupHistoryRecord>, StoreError> {
        let mut sql = Sql::new(
            "SELECT group_id, device_id, event, reason, at FROM device_group_history WHERE group_id = ",
        );
        sql.bind(group.to_string());
        if let Some(d) = device {
            sql.push(" AND device_id = ").bind(d.to_string());
        }
        sql.push(" ORDER BY at DESC, event LIMIT ")
            .bind(limit.max(0));
        sql.query()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                Ok(GroupHistoryRecord {
                    group_id: group_id(r, "group_id")?,
                    device_id: rows::device_id(r, "device_id")?,
                    event: rows::text(r, "event")?,
                    reason: rows::text(r, "reason")?,
                    at: rows::time(r, "at")?,
                })
            })
            .collect()
    }

    /// The tenant's devices with these serial numbers: (serial, device). Serials it does not have are absent.
    pub async fn tenant_devices_by_serial(
        &self,
        tenant: TenantId,
        serials: &[String],
    ) -> Result<Vec<(String, DeviceId)>, StoreError> {
        let mut found = Vec::new();
        for chunk in serials.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "SELECT serial_number, id FROM devices WHERE tenant_id = $1 AND serial_number IN ({})",
                in_list(self.backend, 2, chunk.len())
            );
            let mut query = sqlx::query(&sql).bind(tenant.to_string());
            for s in chunk {
                query = query.bind(s.as_str());
            }
            for r in query.fetch_all(&self.pool).await? {
                found.push((rows::text(&r, "serial_number")?, rows::device_id(&r, "id")?));
            }
        }
        Ok(found)
    }

    /// Which of these devices belong to the tenant.
    pub async fn tenant_devices_among(
        &self,
        tenant: TenantId,
        devices: &[DeviceId],
    ) -> Result<BTreeSet<DeviceId>, StoreError> {
        let mut found = BTreeSet::new();
        for chunk in devices.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "SELECT id FROM devices WHERE tenant_id = $1 AND id IN ({})",
                in_list(self.backend, 2, chunk.len())
            );
            let mut query = sqlx::query(&sql).bind(tenant.to_string());
            for d in chunk {
                query = query.bind(d.to_string());
            }
            for r in query.fetch_all(&self.pool).await? {
                found.insert(rows::device_id(&r, "id")?);
            }
        }
        Ok(found)
    }

    /// Which of these groups belong to the tenant.
    pub async fn tenant_groups_among(
        &self,
        tenant: TenantId,
        groups: &[GroupId],
    ) -> Result<BTreeSet<GroupId>, StoreError> {
        let mut found = BTreeSet::new();
        for chunk in groups.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "SELECT id FROM device_groups WHERE tenant_id = $1 AND id IN ({})",
                in_list(self.backend, 2, chunk.len())
            );
            let mut query = sqlx::query(&sql).bind(tenant.to_string());
            for g in chunk {
                query = query.bind(g.to_string());
            }
            for r in query.fetch_all(&self.pool).await? {
                found.insert(group_id(&r, "id")?);
            }
        }
        Ok(found)
    }

    /// The enrolled devices of a tenant with what a smart filter reads.
    pub async fn tenant_group_facts(
        &self,
        tenant: TenantId,
        sections: FactSections,
    ) -> Result<Vec<DeviceGroupFacts>, StoreError> {
        tenant_facts(&mut self.pooled().await?, tenant, sections).await
    }

    /// The assignments that name a group as a target or an exclusion.
    pub async fn assignments_naming_group(
        &self,
        group: GroupId,
    ) -> Result<Vec<String>, StoreError> {
        sqlx::query(
            "SELECT DISTINCT assignment_id FROM assignment_targets WHERE target_kind = 'group' AND target_id = $1",
        )
        .bind(group.to_string())
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| rows::text(r, "assignment_id"))
        .collect()
    }
}

impl UnitOfWork {
    /// Creates a group with its first members (a smart group's evaluation, or none).
    pub async fn create_group(
        &mut self,
        g: &GroupRecord,
        members: &BTreeSet<DeviceId>,
        reason: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO device_groups (id, tenant_id, name, kind, filter_json, created_at, created_by, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(g.id.to_string())
        .bind(g.tenant_id.to_string())
        .bind(g.name.as_str())
        .bind(g.kind.as_str())
        .bind(g.filter_json.as_deref())
        .bind(g.created_at.0)
        .bind(g.created_by.as_deref())
        .bind(g.updated_at.0)
        .execute(self.conn()?)
        .await?;
        raise_smart_groups_revision(self, g.id).await?;
        let joined: Vec<DeviceId> = members.iter().copied().collect();
        apply_membership(self, g.id, &joined, &[], reason, g.created_at).await
    }

    /// Renames a group and (smart) replaces its filter and members; returns (joined, left). NotFound when gone.
    pub async fn update_group(
        &mut self,
        id: GroupId,
        name: &str,
        filter_json: Option<&str>,
        members: Option<&BTreeSet<DeviceId>>,
        now: UnixTime,
    ) -> Result<(usize, usize), StoreError> {
        let updated = sqlx::query(
            "UPDATE device_groups SET name = $2, filter_json = COALESCE($3, filter_json), updated_at = $4 \
             WHERE id = $1",
        )
        .bind(id.to_string())
        .bind(name)
        .bind(filter_json)
        .bind(now.0)
        .execute(self.conn()?)
        .await?
        .rows_affected();
        if updated == 0 {
            return Err(StoreError::NotFound);
        }
        if filter_json.is_some() {
            raise_smart_groups_revision(self, id).await?;
        }
        match members {
            Some(wanted) => replace_members(self, id, wanted, "definition", now).await,
            None => Ok((0, 0)),
        }
    }

    /// Deletes a group; its members are marked for the reconciler (history goes with the group).
    pub async fn delete_group(&mut self, id: GroupId, now: UnixTime) -> Result<(), StoreError> {
        let members: Vec<DeviceId> = member_ids(self, id).await?.into_iter().collect();
        mark_dirty(self, &members, now).await?;
        raise_smart_groups_revision(self, id).await?;
        let deleted = sqlx::query("DELETE FROM device_groups WHERE id = $1")
            .bind(id.to_string())
            .execute(self.conn()?)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Adds devices to a static group; returns the ones that were not members yet.
    pub async fn add_group_members(
        &mut self,
        group: GroupId,
        devices: &BTreeSet<DeviceId>,
        now: UnixTime,
    ) -> Result<Vec<DeviceId>, StoreError> {
        let current = member_ids(self, group).await?;
        let joined: Vec<DeviceId> = devices.difference(&current).copied().collect();
        apply_membership(self, group, &joined, &[], "added", now).await?;
        Ok(joined)
    }

    /// Removes devices from a static group; returns the ones that were members.
    pub async fn remove_group_members(
        &mut self,
        group: GroupId,
        devices: &BTreeSet<DeviceId>,
        now: UnixTime,
    ) -> Result<Vec<DeviceId>, StoreError> {
        let current = member_ids(self, group).await?;
        let left: Vec<DeviceId> = devices.intersection(&current).copied().collect();
        apply_membership(self, group, &[], &left, "removed", now).await?;
        Ok(left)
    }

    /// One device's facts (for re-evaluating the smart groups of its tenant).
    pub async fn device_group_facts(
        &mut self,
        device: DeviceId,
        sections: FactSections,
    ) -> Result<Option<DeviceGroupFacts>, StoreError> {
        device_facts(self, device, sections).await
    }

    /// The tenant a device belongs to, or None when there is no such device.
    pub async fn device_tenant(
        &mut self,
        device: DeviceId,
    ) -> Result<Option<TenantId>, StoreError> {
        sqlx::query("SELECT tenant_id FROM devices WHERE id = $1")
            .bind(device.to_string())
            .fetch_optional(self.conn()?)
            .await?
            .map(|r| rows::tenant_id(&r, "tenant_id"))
            .transpose()
    }

    /// Reads what re-evaluating the device's groups starts from, and with `mark_at` marks the device for the
    /// reconciler: every smart group of `tenant` with its filter, every group the device is in now (its
    /// tenant's, or another's after a move), and the device's own facts (without inventory sections: a filter
    /// that reads them asks [`UnitOfWork::device_group_facts`]). Every inventory report that changed something
    /// runs it, so it counts no members (counting a 50,000-member group per report cost milliseconds), and it is
    /// one statement on PostgreSQL (the mark a data-modifying `WITH`): each statement through sqlx's PostgreSQL
    /// driver cost about 0.1 ms of Orchard's CPU and 0.15 ms of the server's. The mark is seen by the
    /// reconciler only once the unit commits, so writing it before the re-evaluation changes nothing.
    pub async fn read_device_standing(
        &mut self,
        device: DeviceId,
        tenant: TenantId,
        mark_at: Option<UnixTime>,
    ) -> Result<DeviceStanding, StoreError> {
        let mark = match (mark_at, self.backend()) {
            (None, _) => String::new(),
            (Some(_), Backend::Postgres) => format!("WITH {} ", mark_dirty_cte("$2", "$3")),
            (Some(now), Backend::Sqlite) => {
                mark_dirty(self, &[device], now).await?;
                String::new()
            }
        };
        // The device's facts are joined to every group row: groups are few, and without groups no facts are
        // needed.
        let sql = format!(
            "{mark}SELECT s.group_id, s.group_kind, s.group_tenant_id, s.filter_json, s.member, f.*, {revision} \
             FROM ({groups}) s CROSS JOIN ({facts} WHERE d.id = $2) f ORDER BY s.group_id",
            groups = standing_groups_sql("$2", "$1"),
            facts = facts_sql(FactSections::default()),
            revision = revision_column("$1"),
        );
        let mut query = sqlx::query(&sql)
            .bind(tenant.to_string())
            .bind(device.to_string());
        if let (Some(now), Backend::Postgres) = (mark_at, self.backend()) {
            query = query.bind(now.0);
        }
        let rows = query.fetch_all(self.conn()?).await?;
        standing_from_rows(&rows)
    }

    /// A DeviceInformation answer's facts promoted ([`UnitOfWork::update_device_facts`]) and then, in the same
    /// unit, [`UnitOfWork::read_device_standing`] with the device marked for the reconciler when `mark` says so.
    /// On PostgreSQL the three are one statement (the update and the mark data-modifying `WITH`s, the facts read
    /// from what the update returns): every changed answer re-evaluates the device's groups, and a statement's
    /// round trip costs the database about 0.08 ms of CPU before it does anything. NotFound when the device does
    /// not exist.
    pub async fn update_device_facts_reading_standing(
        &mut self,
        device: DeviceId,
        tenant: TenantId,
        f: &DeviceFacts,
        mark: bool,
        now: UnixTime,
    ) -> Result<DeviceStanding, StoreError> {
        if self.backend() == Backend::Sqlite {
            self.update_device_facts(device, f, now).await?;
            return self
                .read_device_standing(device, tenant, mark.then_some(now))
                .await;
        }
        let mark = if mark {
            format!(", {}", mark_dirty_cte("$1", "$10"))
        } else {
            String::new()
        };
        // The facts come from the update's RETURNING: the statement's other parts see the row as it was.
        let sql = format!(
            "WITH updated AS ({update} RETURNING *){mark} \
             SELECT s.group_id, s.group_kind, s.group_tenant_id, s.filter_json, s.member, f.*, {revision} \
             FROM ({facts}) f LEFT JOIN ({groups}) s ON TRUE ORDER BY s.group_id",
            update = crate::device::devices::UPDATE_DEVICE_FACTS,
            facts = facts_sql_from("updated", FactSections::default()),
            groups = standing_groups_sql("$1", "$13"),
            revision = revision_column("$13"),
        );
        let query = crate::device::devices::bind_device_facts(sqlx::query(&sql), device, f, now)
            .bind(tenant.to_string());
        let rows = query.fetch_all(self.conn()?).await?;
        if rows.is_empty() {
            return Err(StoreError::NotFound);
        }
        standing_from_rows(&rows)
    }

    /// A DeviceInformation answer's facts promoted ([`UnitOfWork::update_device_facts`]) and, when `mark` says
    /// so, the device marked for the reconciler; returns its tenant's smart-groups revision. For a node that
    /// holds the tenant's smart groups at that revision and finds the answer moves the device in none of them:
    /// on PostgreSQL one statement, where [`UnitOfWork::update_device_facts_reading_standing`] also reads the
    /// groups and the device's memberships. NotFound when the device does not exist.
    pub async fn update_device_facts_reading_revision(
        &mut self,
        device: DeviceId,
        f: &DeviceFacts,
        mark: bool,
        now: UnixTime,
    ) -> Result<i64, StoreError> {
        if self.backend() == Backend::Sqlite {
            self.update_device_facts(device, f, now).await?;
            if mark {
                mark_dirty(self, &[device], now).await?;
            }
            let row = sqlx::query(
                "SELECT t.smart_groups_revision FROM devices d JOIN tenants t ON t.id = d.tenant_id \
                 WHERE d.id = $1",
            )
            .bind(device.to_string())
            .fetch_one(self.conn()?)
            .await?;
            return rows::int(&row, "smart_groups_revision");
        }
        let mark = if mark {
            format!(", {}", mark_dirty_cte("$1", "$10"))
        } else {
            String::new()
        };
        let sql = format!(
            "WITH updated AS ({update} RETURNING tenant_id){mark} \
             SELECT t.smart_groups_revision FROM updated u JOIN tenants t ON t.id = u.tenant_id",
            update = crate::device::devices::UPDATE_DEVICE_FACTS,
        );
        let row = crate::device::devices::bind_device_facts(sqlx::query(&sql), device, f, now)
            .fetch_optional(self.conn()?)
            .await?
            .ok_or(StoreError::NotFound)?;
        rows::int(&row, "smart_groups_revision")
    }

    /// Takes a device out of `leave` and into `join`, recording each change in the groups' history.
    pub async fn change_device_groups(
        &mut self,
        device: DeviceId,
        leave: &[GroupId],
        join: &[GroupId],
        reason: &str,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        for g in leave {
            apply_membership(self, *g, &[], &[device], reason, now).await?;
        }
        for g in join {
            apply_membership(self, *g, &[device], &[], reason, now).await?;
        }
        Ok(())
    }

    /// Marks devices for the reconciler inside this unit.
    pub async fn mark_devices_dirty(
        &mut self,
        devices: &[DeviceId],
        now: UnixTime,
    ) -> Result<(), StoreError> {
        mark_dirty(self, devices, now).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_lists_number_every_value() {
        assert_eq!(
            values_list(Backend::Postgres, 2, 3),
            "($1, $2, $3), ($4, $5, $6)"
        );
        assert_eq!(values_list(Backend::Sqlite, 2, 2), "(?, ?), (?, ?)");
        assert_eq!(in_list(Backend::Postgres, 2, 3), "$2, $3, $4");
        assert_eq!(in_list(Backend::Sqlite, 1, 3), "?, ?, ?");
        assert_eq!(in_list(Backend::Sqlite, 2, 3), "$2, $3, $4");
    }
}
