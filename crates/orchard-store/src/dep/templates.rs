//! Enrollment templates ("PreStage enrollments"), the assignment of DEP serials to them, the zero-touch setup
//! state of devices enrolled through them, their Activation Lock bypass codes, and the per-token sync lease.
//!
//! A template's tenant is the tenant of every serial assigned to it: assigning copies it onto the DEP device
//! row, and the template's hidden enrollment link carries it into SCEP challenges and issued certificates.

use orchard_types::{DeviceId, EnrollmentLinkId, QueuedBy, SetupState, TenantId, UnixTime};
use sqlx::any::AnyRow;

use crate::sql::Sql;
use crate::unit::Db;
use crate::{rows, DepDeviceRecord, EnrollmentLink, Scope, Store, StoreError, UnitOfWork};

const TEMPLATE_COLUMNS: &str = "id, token_id, tenant_id, link_id, name, profile_json, setup_json, \
     minimum_os_version, auto_assign, profile_uuid, defined_at, define_error, created_at, updated_at";

/// Serials per statement when assigning (well under SQLite's and PostgreSQL's bind limits).
const ASSIGN_CHUNK: usize = 500;

/// An enrollment template as stored. The JSON columns are owned by the core, which gives them their shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepTemplateRecord {
    pub id: String,
    pub token_id: String,
    pub tenant_id: TenantId,
    /// The hidden enrollment link whose challenges carry this template's tenant.
    pub link_id: EnrollmentLinkId,
    pub name: String,
    pub profile_json: String,
    pub setup_json: String,
    pub minimum_os_version: Option<String>,
    /// New serials of the token get this template.
    pub auto_assign: bool,
    /// Apple's uuid of the profile as last defined.
    pub profile_uuid: Option<String>,
    pub defined_at: Option<UnixTime>,
    /// Why the last definition at Apple failed.
    pub define_error: Option<String>,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
}

/// Where a serial's assignment stands at Apple.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssignStatus {
    /// To be sent to Apple.
    Pending,
    Assigned,
    /// Apple asked to retry later (`assign_retry_at`).
    Throttled,
    Failed,
    /// The serial is not (any longer) in this MDM server at Apple.
    NotAccessible,
    /// An operator removed the assignment; the serial is not auto-assigned again.
    Unassigned,
}

impl AssignStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AssignStatus::Pending => "pending",
            AssignStatus::Assigned => "assigned",
            AssignStatus::Throttled => "throttled",
            AssignStatus::Failed => "failed",
            AssignStatus::NotAccessible => "not_accessible",
            AssignStatus::Unassigned => "unassigned",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => AssignStatus::Pending,
            "assigned" => AssignStatus::Assigned,
            "throttled" => AssignStatus::Throttled,
            "failed" => AssignStatus::Failed,
            "not_accessible" => AssignStatus::NotAccessible,
            "unassigned" => AssignStatus::Unassigned,
            _ => return None,
        })
    }
}

/// Orchard's side of a DEP device: which template (and so tenant) it should have, and how far Apple is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DepAssignment {
    pub template_id: Option<String>,
    pub tenant_id: Option<TenantId>,
    pub status: Option<String>,
    pub error: Option<String>,
    pub retry_at: Option<UnixTime>,
    pub assigned_at: Option<UnixTime>,
}

/// A DEP device with its assignment, as lists show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepDeviceListing {
    pub device: DepDeviceRecord,
    pub assignment: DepAssignment,
}

/// What a bulk assignment did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AssignOutcome {
    /// Serials now wanting the template (or unassigned).
    pub updated: u64,
    /// Serials this token does not list (or lists as released): nothing was changed for them.
    pub unknown: Vec<String>,
}

/// A serial whose assignment should be sent to Apple now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueAssignment {
    pub serial_number: String,
    pub template_id: String,
    /// The template's profile at Apple; `None` while the template is not defined.
    pub profile_uuid: Option<String>,
}

/// Apple's answer for one serial of an assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignResult {
    pub serial_number: String,
    pub template_id: String,
    pub status: AssignStatus,
    pub profile_uuid: Option<String>,
    pub error: Option<String>,
    pub retry_at: Option<UnixTime>,
}

/// A serial as the zero-touch endpoint needs it: the active DEP record and its template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepSerialTemplate {
    pub token_id: String,
    pub serial_number: String,
    pub template: DepTemplateRecord,
}

/// Zero-touch setup state of a device enrolled through a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSetup {
    pub template_id: Option<String>,
    /// Absent for a device that did not enroll through a template.
    pub state: Option<SetupState>,
    pub error: Option<String>,
    pub updated_at: Option<UnixTime>,
}

fn template_from_row(r: &AnyRow) -> Result<DepTemplateRecord, StoreError> {
    Ok(DepTemplateRecord {
        id: rows::text(r, "id")?,
        token_id: rows::text(r, "token_id")?,
        tenant_id: rows::tenant_id(r, "tenant_id")?,
        link_id: rows::link_id(r, "link_id")?,
        name: rows::text(r, "name")?,
        profile_json: rows::text(r, "profile_json")?,
        setup_json: rows::text(r, "setup_json")?,
        minimum_os_version: rows::opt_text(r, "minimum_os_version")?,
        auto_assign: rows::boolean(r, "auto_assign")?,
        profile_uuid: rows::opt_text(r, "profile_uuid")?,
        defined_at: rows::opt_time(r, "defined_at")?,
        define_error: rows::opt_text(r, "define_error")?,
        created_at: rows::time(r, "created_at")?,
        updated_at: rows::time(r, "updated_at")?,
    })
}

fn prefixed_template_from_row(r: &AnyRow) -> Result<DepTemplateRecord, StoreError> {
    Ok(DepTemplateRecord {
        id: rows::text(r, "t_id")?,
        token_id: rows::text(r, "t_token_id")?,
        tenant_id: rows::tenant_id(r, "t_tenant_id")?,
        link_id: rows::link_id(r, "t_link_id")?,
        name: rows::text(r, "t_name")?,
        profile_json: rows::text(r, "t_profile_json")?,
        setup_json: rows::text(r, "t_setup_json")?,
        minimum_os_version: rows::opt_text(r, "t_minimum_os_version")?,
        auto_assign: rows::boolean(r, "t_auto_assign")?,
        profile_uuid: rows::opt_text(r, "t_profile_uuid")?,
        defined_at: rows::opt_time(r, "t_defined_at")?,
        define_error: rows::opt_text(r, "t_define_error")?,
        created_at: rows::time(r, "t_created_at")?,
        updated_at: rows::time(r, "t_updated_at")?,
    })
}

const PREFIXED_TEMPLATE_COLUMNS: &str = "t.id AS t_id, t.token_id AS t_token_id, \
     t.tenant_id AS t_tenant_id, t.link_id AS t_link_id, t.name AS t_name, \
     t.profile_json AS t_profile_json, t.setup_json AS t_setup_json, \
     t.minimum_os_version AS t_minimum_os_version, t.auto_assign AS t_auto_assign, \
     t.profile_uuid AS t_profile_uuid, t.defined_at AS t_defined_at, t.define_error AS t_define_error, \
     t.created_at AS t_created_at, t.updated_at AS t_updated_at";

const LISTING_COLUMNS: &str = "token_id, serial_number, model, description, color, asset_tag, os, \
     device_family, profile_status, profile_uuid, profile_assign_time, device_assigned_date, \
     device_assigned_by, op_type, op_date, deleted, updated_at, profile_push_time, mdm_migration_deadline, \
     response_status, template_id, tenant_id, assign_status, assign_error, assign_retry_at, assigned_at";

fn listing_from_row(r: &AnyRow) -> Result<DepDeviceListing, StoreError> {
    Ok(DepDeviceListing {
        device: crate::dep::sync::device_record(r)?,
        assignment: DepAssignment {
            template_id: rows::opt_text(r, "template_id")?,
            tenant_id: rows::opt_tenant_id(r, "tenant_id")?,
            status: rows::opt_text(r, "assign_status")?,
            error: rows::opt_text(r, "assign_error")?,
            retry_at: rows::opt_time(r, "assign_retry_at")?,
            assigned_at: rows::opt_time(r, "assigned_at")?,
        },
    })
}

/// `$first, $first+1, …` for `count` values.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Which DEP devices a scoped list covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DepListingFilter<'a> {
    pub token_id: Option<&'a str>,
    pub template_id: Option<&'a str>,
    /// Leave out devices released from their MDM server.
    pub only_active: bool,
}

impl Store {
    /// Stores a template together with its hidden enrollment link. A second template of the same name on the
    /// token, or a second auto-assign template, is a conflict; a missing token or tenant is NotFound.
    pub async fn create_dep_template(
        &self,
        t: &DepTemplateRecord,
        link: &EnrollmentLink,
    ) -> Result<(), StoreError> {
        let mut unit = self.begin_unit().await?;
        create_dep_template(&mut unit, t, link).await?;
        unit.commit().await
    }

    /// Replaces a template's settings (name, tenant, profile, setup, minimum OS, auto-assign). The tenant
    /// follows onto its link and onto every serial assigned to it, in one transaction.
    pub async fn update_dep_template(&self, t: &DepTemplateRecord) -> Result<(), StoreError> {
        let mut unit = self.begin_unit().await?;
        update_dep_template(&mut unit, t).await?;
        unit.commit().await
    }

    /// Records the outcome of defining the template's profile at Apple: a new uuid, or why it failed (the
    /// previous uuid is kept then, so assigned devices keep their last good profile).
    pub async fn set_dep_template_definition(
        &self,
        id: &str,
        profile_uuid: Option<&str>,
        error: Option<&str>,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        set_dep_template_definition(&mut self.pooled().await?, id, profile_uuid, error, now).await
    }

    /// A template in the caller's scope (other tenants' templates look missing).
    pub async fn dep_template(
        &self,
        scope: Scope,
        id: &str,
    ) -> Result<Option<DepTemplateRecord>, StoreError> {
        let mut sql = Sql::new(&format!(
            "SELECT {TEMPLATE_COLUMNS} FROM dep_templates WHERE id = "
        ));
        sql.bind(id).in_scope("tenant_id", scope);
        sql.query()
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(template_from_row)
            .transpose()
    }

    /// The template that owns an enrollment link (the device surface knows no scope).
    pub async fn dep_template_by_link(
        &self,
        link: EnrollmentLinkId,
    ) -> Result<Option<DepTemplateRecord>, StoreError> {
        dep_template_by_link(&mut self.pooled().await?, link).await
    }

    /// Templates in the caller's scope, optionally of one token, by name.
    pub async fn list_dep_templates(
        &self,
        scope: Scope,
        token_id: Option<&str>,
    ) -> Result<Vec<DepTemplateRecord>, StoreError> {
        let mut sql = Sql::new(&format!(
            "SELECT {TEMPLATE_COLUMNS} FROM dep_templates WHERE 1 = 1"
        ));
        if let Some(token) = token_id {
            sql.push(" AND token_id = ").bind(token);
        }
        sql.in_scope("tenant_id", scope).push(" ORDER BY name, id");
        let query = sql.query();
        query
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(template_from_row)
            .collect()
    }

    /// Deletes a template: its serials lose their assignment (back to no template, status unassigned, so the
    /// auto-assign rule does not take them) and its link stops handing out challenges.
    pub async fn delete_dep_template(&self, id: &str, now: UnixTime) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let link = sqlx::query("SELECT link_id FROM dep_templates WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let link_id = rows::text(&link, "link_id")?;
        sqlx::query(
            "UPDATE dep_devices SET template_id = NULL, tenant_id = NULL, assign_status = $2, \
             assign_error = NULL, assign_retry_at = NULL WHERE template_id = $1",
        )
        .bind(id)
        .bind(AssignStatus::Unassigned.as_str())
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE devices SET dep_template_id = NULL WHERE dep_template_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM dep_templates WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        // A link is usable through its expiry second: end it at the second before now.
        sqlx::query("UPDATE enrollment_links SET expires_at = $2 WHERE id = $1")
            .bind(&link_id)
            .bind(now.0 - 1)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Sets the wanted template of `serials` of one token (`None` removes the assignment). The tenant follows
    /// the template. Serials the token does not list as active are reported back untouched.
    pub async fn set_dep_assignment(
        &self,
        token_id: &str,
        serials: &[String],
        template: Option<(&str, TenantId)>,
    ) -> Result<AssignOutcome, StoreError> {
        let mut outcome = AssignOutcome::default();
        let mut unit = self.begin_unit().await?;
        for chunk in serials.chunks(ASSIGN_CHUNK) {
            let list = placeholders(2, chunk.len());
            let sql = format!(
                "SELECT serial_number FROM dep_devices WHERE token_id = $1 AND deleted = 0 \
                 AND serial_number IN ({list})"
            );
            let mut query = sqlx::query(&sql).bind(token_id);
            for s in chunk {
                query = query.bind(s.as_str());
            }
            let known: std::collections::HashSet<String> = query
                .fetch_all(unit.conn()?)
                .await?
                .iter()
                .map(|r| rows::text(r, "serial_number"))
                .collect::<Result<_, _>>()?;
            outcome.unknown.extend(
                chunk
                    .iter()
                    .filter(|s| !known.contains(s.as_str()))
                    .cloned(),
            );
            let first = 5;
            let list = placeholders(first, chunk.len());
            let sql = format!(
                "UPDATE dep_devices SET template_id = $2, tenant_id = $3, assign_status = $4, \
                 assign_error = NULL, assign_retry_at = NULL \
                 WHERE token_id = $1 AND deleted = 0 AND serial_number IN ({list})"
            );
            let status = match template {
                Some(_) => AssignStatus::Pending,
                None => AssignStatus::Unassigned,
            };
            let mut query = sqlx::query(&sql)
                .bind(token_id)
                .bind(template.map(|(id, _)| id))
                .bind(template.map(|(_, tenant)| tenant.to_string()))
                .bind(status.as_str());
            for s in chunk {
                query = query.bind(s.as_str());
            }
            outcome.updated += query.execute(unit.conn()?).await?.rows_affected();
        }
        unit.commit().await?;
        Ok(outcome)
    }

    /// The assignment rule: active serials of the token that never had an assignment get the token's
    /// auto-assign template (if it has one). Returns how many were taken.
    pub async fn auto_assign_dep_devices(&self, token_id: &str) -> Result<u64, StoreError> {
        auto_assign_dep_devices(&mut self.pooled().await?, token_id).await
    }

    /// Marks every serial of a template pending again (after the template's profile was redefined under a
    /// new uuid, Apple must be told to use it).
    pub async fn reassign_dep_template_devices(
        &self,
        template_id: &str,
    ) -> Result<u64, StoreError> {
        reassign_dep_template_devices(&mut self.pooled().await?, template_id).await
    }

    /// Serials of a token whose assignment should go to Apple now: pending, or throttled and due.
    pub async fn due_dep_assignments(
        &self,
        token_id: &str,
        now: UnixTime,
        limit: i64,
    ) -> Result<Vec<DueAssignment>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.serial_number, d.template_id, t.profile_uuid FROM dep_devices d \
             JOIN dep_templates t ON t.id = d.template_id \
             WHERE d.token_id = $1 AND d.deleted = 0 \
               AND (d.assign_status = $2 OR (d.assign_status = $3 AND d.assign_retry_at <= $4)) \
             ORDER BY d.template_id, d.serial_number LIMIT $5",
        )
        .bind(token_id)
        .bind(AssignStatus::Pending.as_str())
        .bind(AssignStatus::Throttled.as_str())
        .bind(now.0)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DueAssignment {
                    serial_number: rows::text(r, "serial_number")?,
                    template_id: rows::text(r, "template_id")?,
                    profile_uuid: rows::opt_text(r, "profile_uuid")?,
                })
            })
            .collect()
    }

    /// Stores Apple's answers. A serial reassigned meanwhile (another template) is left alone: its new
    /// assignment is still to be sent.
    pub async fn record_dep_assignments(
        &self,
        token_id: &str,
        results: &[AssignResult],
        now: UnixTime,
    ) -> Result<(), StoreError> {
        let mut unit = self.begin_unit().await?;
        for r in results {
            let assigned = r.status == AssignStatus::Assigned;
            sqlx::query(
                "UPDATE dep_devices SET assign_status = $4, assign_error = $5, assign_retry_at = $6, \
                 assigned_at = CASE WHEN $7 = 1 THEN $8 ELSE assigned_at END, \
                 profile_uuid = CASE WHEN $7 = 1 THEN $9 ELSE profile_uuid END, \
                 profile_status = CASE WHEN $7 = 1 THEN 'assigned' ELSE profile_status END, \
                 profile_assign_time = CASE WHEN $7 = 1 THEN $8 ELSE profile_assign_time END \
                 WHERE token_id = $1 AND serial_number = $2 AND template_id = $3",
            )
            .bind(token_id)
            .bind(&r.serial_number)
            .bind(&r.template_id)
            .bind(r.status.as_str())
            .bind(r.error.as_deref())
            .bind(r.retry_at.map(|t| t.0))
            .bind(i32::from(assigned))
            .bind(now.0)
            .bind(r.profile_uuid.as_deref())
            .execute(unit.conn()?)
            .await?;
        }
        unit.commit().await?;
        Ok(())
    }

    /// Counts of a token's active serials by assignment status (`none` for never assigned).
    pub async fn dep_assignment_counts(
        &self,
        token_id: &str,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT COALESCE(assign_status, 'none') AS status, COUNT(*) AS n FROM dep_devices \
             WHERE token_id = $1 AND deleted = 0 GROUP BY COALESCE(assign_status, 'none') ORDER BY 1",
        )
        .bind(token_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((rows::text(r, "status")?, rows::int(r, "n")?)))
            .collect()
    }

    /// DEP devices in the caller's scope with their assignment: a tenant sees the serials assigned to its
    /// templates (including those that have not enrolled yet), operators every serial.
    pub async fn list_dep_device_listings(
        &self,
        scope: Scope,
        filter: DepListingFilter<'_>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<DepDeviceListing>, StoreError> {
        let mut sql = Sql::new(&format!(
            "SELECT {LISTING_COLUMNS} FROM dep_devices WHERE 1 = 1"
        ));
        listing_conditions(&mut sql, scope, filter).push(&format!(
            " ORDER BY serial_number, token_id LIMIT {} OFFSET {}",
            limit.max(0),
            offset.max(0)
        ));
        sql.query()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(listing_from_row)
            .collect()
    }

    /// Serials Apple's sync assigned to a department (through its templates) that have no enrolled device yet:
    /// the dashboard's "waiting to enroll (from ASM)". A serial listed by two tokens counts once.
    pub async fn count_dep_waiting_to_enroll(&self, scope: Scope) -> Result<i64, StoreError> {
        let mut sql = Sql::new(
            "SELECT COUNT(DISTINCT d.serial_number) AS n FROM dep_devices d \
             WHERE d.deleted = 0 AND d.tenant_id IS NOT NULL \
             AND NOT EXISTS (SELECT 1 FROM devices v \
                 WHERE v.serial_number = d.serial_number AND v.state = 'enrolled')",
        );
        sql.in_scope("d.tenant_id", scope);
        let row = sql.query().fetch_one(&self.pool).await?;
        rows::int(&row, "n")
    }

    pub async fn count_dep_device_listings(
        &self,
        scope: Scope,
        filter: DepListingFilter<'_>,
    ) -> Result<i64, StoreError> {
        let mut sql = Sql::new("SELECT COUNT(*) AS n FROM dep_devices WHERE 1 = 1");
        listing_conditions(&mut sql, scope, filter);
        let row = sql.query().fetch_one(&self.pool).await?;
        rows::int(&row, "n")
    }

    /// The active DEP record of a serial and its template, if the serial is assigned to one (the
    /// zero-touch endpoint: "is this serial ours, and what should it get?").
    pub async fn dep_serial_template(
        &self,
        serial: &str,
    ) -> Result<Option<DepSerialTemplate>, StoreError> {
        let sql = format!(
            "SELECT d.token_id, d.serial_number, {PREFIXED_TEMPLATE_COLUMNS} FROM dep_devices d \
             JOIN dep_templates t ON t.id = d.template_id \
             WHERE d.serial_number = $1 AND d.deleted = 0 ORDER BY d.updated_at DESC LIMIT 1"
        );
        let row = sqlx::query(&sql)
            .bind(serial)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(DepSerialTemplate {
                token_id: rows::text(&r, "token_id")?,
                serial_number: rows::text(&r, "serial_number")?,
                template: prefixed_template_from_row(&r)?,
            })
        })
        .transpose()
    }

    /// Sets a device's zero-touch setup state (and the template it came through when given).
    pub async fn set_device_setup(
        &self,
        device: DeviceId,
        template_id: Option<&str>,
        state: SetupState,
        error: Option<&str>,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        set_device_setup(
            &mut self.pooled().await?,
            device,
            template_id,
            state,
            error,
            now,
        )
        .await
    }

    /// Moves the setup state from `from` to `to` only if it is still `from` (two reports racing on two nodes
    /// release a device once). Returns whether this call moved it. Conflict for a move that
    /// [`SetupState::may_move_to`] does not allow.
    pub async fn advance_device_setup(
        &self,
        device: DeviceId,
        from: SetupState,
        to: SetupState,
        error: Option<&str>,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        advance_device_setup(&mut self.pooled().await?, device, from, to, error, now).await
    }

    pub async fn device_setup(&self, device: DeviceId) -> Result<Option<DeviceSetup>, StoreError> {
        device_setup(&mut self.pooled().await?, device).await
    }

    /// Setup commands of a device not finished yet (queued, sent or answered NotNow).
    pub async fn count_unfinished_setup_commands(
        &self,
        device: DeviceId,
    ) -> Result<i64, StoreError> {
        count_unfinished_setup_commands(&mut self.pooled().await?, device).await
    }

    /// Keeps the device's Activation Lock bypass code (sealed by the caller).
    pub async fn store_bypass_code(
        &self,
        device: DeviceId,
        sealed: &[u8],
        now: UnixTime,
    ) -> Result<(), StoreError> {
        store_bypass_code(&mut self.pooled().await?, device, sealed, now).await
    }

    /// The sealed bypass code and when it was stored.
    pub async fn bypass_code(
        &self,
        device: DeviceId,
    ) -> Result<Option<(Vec<u8>, UnixTime)>, StoreError> {
        let row = sqlx::query(
            "SELECT bypass_code_encrypted, bypass_code_at FROM devices WHERE id = $1 \
             AND bypass_code_encrypted IS NOT NULL",
        )
        .bind(device.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok((
                rows::bytes(&r, "bypass_code_encrypted")?,
                rows::time(&r, "bypass_code_at")?,
            ))
        })
        .transpose()
    }

    /// Claims the background sync of a token for `owner` until `until`, unless another node holds an
    /// unexpired lease. The same owner may renew.
    pub async fn claim_dep_sync_lease(
        &self,
        token_id: &str,
        owner: &str,
        now: UnixTime,
        until: UnixTime,
    ) -> Result<bool, StoreError> {
        let changed = sqlx::query(
            "UPDATE dep_tokens SET sync_lease_owner = $2, sync_lease_until = $3 \
             WHERE id = $1 AND (sync_lease_until IS NULL OR sync_lease_until <= $4 \
                                OR sync_lease_owner = $2)",
        )
        .bind(token_id)
        .bind(owner)
        .bind(until.0)
        .bind(now.0)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(changed > 0)
    }

    pub async fn release_dep_sync_lease(
        &self,
        token_id: &str,
        owner: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE dep_tokens SET sync_lease_owner = NULL, sync_lease_until = NULL \
             WHERE id = $1 AND sync_lease_owner = $2",
        )
        .bind(token_id)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

impl UnitOfWork {
    /// [`Store::update_dep_template`] inside this unit.
    pub async fn update_dep_template(&mut self, t: &DepTemplateRecord) -> Result<(), StoreError> {
        update_dep_template(self, t).await
    }

    /// [`Store::create_dep_template`] inside this unit.
    pub async fn create_dep_template(
        &mut self,
        t: &DepTemplateRecord,
        link: &EnrollmentLink,
    ) -> Result<(), StoreError> {
        create_dep_template(self, t, link).await
    }

    /// [`Store::set_dep_template_definition`] inside this unit.
    pub async fn set_dep_template_definition(
        &mut self,
        id: &str,
        profile_uuid: Option<&str>,
        error: Option<&str>,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        set_dep_template_definition(self, id, profile_uuid, error, now).await
    }

    /// [`Store::auto_assign_dep_devices`] inside this unit.
    pub async fn auto_assign_dep_devices(&mut self, token_id: &str) -> Result<u64, StoreError> {
        auto_assign_dep_devices(self, token_id).await
    }

    /// [`Store::reassign_dep_template_devices`] inside this unit.
    pub async fn reassign_dep_template_devices(
        &mut self,
        template_id: &str,
    ) -> Result<u64, StoreError> {
        reassign_dep_template_devices(self, template_id).await
    }

    /// [`Store::dep_template_by_link`] inside this unit.
    pub async fn dep_template_by_link(
        &mut self,
        link: EnrollmentLinkId,
    ) -> Result<Option<DepTemplateRecord>, StoreError> {
        dep_template_by_link(self, link).await
    }

    /// [`Store::set_device_setup`] inside this unit.
    pub async fn set_device_setup(
        &mut self,
        device: DeviceId,
        template_id: Option<&str>,
        state: SetupState,
        error: Option<&str>,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        set_device_setup(self, device, template_id, state, error, now).await
    }

    /// [`Store::advance_device_setup`] inside this unit.
    pub async fn advance_device_setup(
        &mut self,
        device: DeviceId,
        from: SetupState,
        to: SetupState,
        error: Option<&str>,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        advance_device_setup(self, device, from, to, error, now).await
    }

    /// [`Store::device_setup`] inside this unit.
    pub async fn device_setup(
        &mut self,
        device: DeviceId,
    ) -> Result<Option<DeviceSetup>, StoreError> {
        device_setup(self, device).await
    }

    /// [`Store::count_unfinished_setup_commands`] inside this unit (sees the unit's own report).
    pub async fn count_unfinished_setup_commands(
        &mut self,
        device: DeviceId,
    ) -> Result<i64, StoreError> {
        count_unfinished_setup_commands(self, device).await
    }

    /// [`Store::store_bypass_code`] inside this unit.
    pub async fn store_bypass_code(
        &mut self,
        device: DeviceId,
        sealed: &[u8],
        now: UnixTime,
    ) -> Result<(), StoreError> {
        store_bypass_code(self, device, sealed, now).await
    }
}

async fn set_dep_template_definition(
    db: &mut impl Db,
    id: &str,
    profile_uuid: Option<&str>,
    error: Option<&str>,
    now: UnixTime,
) -> Result<(), StoreError> {
    let changed = sqlx::query(
        "UPDATE dep_templates SET profile_uuid = COALESCE($2, profile_uuid), \
         defined_at = CASE WHEN $2 IS NULL THEN defined_at ELSE $4 END, define_error = $3 \
         WHERE id = $1",
    )
    .bind(id)
    .bind(profile_uuid)
    .bind(error)
    .bind(now.0)
    .execute(db.conn()?)
    .await?
    .rows_affected();
    if changed == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

async fn auto_assign_dep_devices(db: &mut impl Db, token_id: &str) -> Result<u64, StoreError> {
    let changed = sqlx::query(
        "UPDATE dep_devices SET \
           template_id = (SELECT id FROM dep_templates WHERE token_id = $1 AND auto_assign = 1), \
           tenant_id = (SELECT tenant_id FROM dep_templates WHERE token_id = $1 AND auto_assign = 1), \
           assign_status = $2 \
         WHERE token_id = $1 AND deleted = 0 AND template_id IS NULL AND assign_status IS NULL \
           AND EXISTS (SELECT 1 FROM dep_templates WHERE token_id = $1 AND auto_assign = 1)",
    )
    .bind(token_id)
    .bind(AssignStatus::Pending.as_str())
    .execute(db.conn()?)
    .await?
    .rows_affected();
    Ok(changed)
}

async fn reassign_dep_template_devices(
    db: &mut impl Db,
    template_id: &str,
) -> Result<u64, StoreError> {
    let changed = sqlx::query(
        "UPDATE dep_devices SET assign_status = $2, assign_error = NULL, assign_retry_at = NULL \
         WHERE template_id = $1 AND deleted = 0",
    )
    .bind(template_id)
    .bind(AssignStatus::Pending.as_str())
    .execute(db.conn()?)
    .await?
    .rows_affected();
    Ok(changed)
}

async fn dep_template_by_link(
    db: &mut impl Db,
    link: EnrollmentLinkId,
) -> Result<Option<DepTemplateRecord>, StoreError> {
    let sql = format!("SELECT {TEMPLATE_COLUMNS} FROM dep_templates WHERE link_id = $1");
    sqlx::query(&sql)
        .bind(link.to_string())
        .fetch_optional(db.conn()?)
        .await?
        .as_ref()
        .map(template_from_row)
        .transpose()
}

async fn set_device_setup(
    db: &mut impl Db,
    device: DeviceId,
    template_id: Option<&str>,
    state: SetupState,
    error: Option<&str>,
    now: UnixTime,
) -> Result<(), StoreError> {
    let changed = sqlx::query(
        "UPDATE devices SET dep_template_id = COALESCE($2, dep_template_id), setup_state = $3, \
         setup_error = $4, setup_updated_at = $5 WHERE id = $1",
    )
    .bind(device.to_string())
    .bind(template_id)
    .bind(state.as_str())
    .bind(error)
    .bind(now.0)
    .execute(db.conn()?)
    .await?
    .rows_affected();
    if changed == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

async fn advance_device_setup(
    db: &mut impl Db,
    device: DeviceId,
    from: SetupState,
    to: SetupState,
    error: Option<&str>,
    now: UnixTime,
) -> Result<bool, StoreError> {
    // A move the state machine does not have is a bug in the caller: refuse it before touching the row.
    if !from.may_move_to(to) {
        return Err(StoreError::Conflict(format!(
            "setup cannot move from {from} to {to}"
        )));
    }
    let changed = sqlx::query(
        "UPDATE devices SET setup_state = $3, setup_error = $4, setup_updated_at = $5 \
         WHERE id = $1 AND setup_state = $2",
    )
    .bind(device.to_string())
    .bind(from.as_str())
    .bind(to.as_str())
    .bind(error)
    .bind(now.0)
    .execute(db.conn()?)
    .await?
    .rows_affected();
    Ok(changed > 0)
}

async fn device_setup(
    db: &mut impl Db,
    device: DeviceId,
) -> Result<Option<DeviceSetup>, StoreError> {
    let row = sqlx::query(
        "SELECT dep_template_id, setup_state, setup_error, setup_updated_at FROM devices WHERE id = $1",
    )
    .bind(device.to_string())
    .fetch_optional(db.conn()?)
    .await?;
    row.map(|r| {
        Ok(DeviceSetup {
            template_id: rows::opt_text(&r, "dep_template_id")?,
            state: rows::opt_setup_state(&r, "setup_state")?,
            error: rows::opt_text(&r, "setup_error")?,
            updated_at: rows::opt_time(&r, "setup_updated_at")?,
        })
    })
    .transpose()
}

async fn count_unfinished_setup_commands(
    db: &mut impl Db,
    device: DeviceId,
) -> Result<i64, StoreError> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS n FROM commands WHERE device_id = $1 AND queued_by = $2 \
         AND status IN ('queued', 'sent', 'not_now')",
    )
    .bind(device.to_string())
    .bind(QueuedBy::Setup.to_stored())
    .fetch_one(db.conn()?)
    .await?;
    rows::int(&row, "n")
}

async fn store_bypass_code(
    db: &mut impl Db,
    device: DeviceId,
    sealed: &[u8],
    now: UnixTime,
) -> Result<(), StoreError> {
    let changed = sqlx::query(
        "UPDATE devices SET bypass_code_encrypted = $2, bypass_code_at = $3 WHERE id = $1",
    )
    .bind(device.to_string())
    .bind(sealed)
    .bind(now.0)
    .execute(db.conn()?)
    .await?
    .rows_affected();
    if changed == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// The ` AND …` conditions of a DEP device listing, inside the scope.
fn listing_conditions<'s>(
    sql: &'s mut Sql,
    scope: Scope,
    filter: DepListingFilter<'_>,
) -> &'s mut Sql {
    if let Some(token) = filter.token_id {
        sql.push(" AND token_id = ").bind(token);
    }
    if let Some(template) = filter.template_id {
        sql.push(" AND template_id = ").bind(template);
    }
    if filter.only_active {
        sql.push(" AND deleted = 0");
    }
    sql.in_scope("tenant_id", scope)
}

async fn create_dep_template(
    db: &mut impl Db,
    t: &DepTemplateRecord,
    link: &EnrollmentLink,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO enrollment_links \
         (id, tenant_id, name, secret_hash, max_uses, uses, expires_at, created_at, created_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(link.id.to_string())
    .bind(link.tenant_id.to_string())
    .bind(&link.name)
    .bind(&link.secret_hash)
    .bind(link.max_uses)
    .bind(link.uses)
    .bind(link.expires_at.map(|v| v.0))
    .bind(link.created_at.0)
    .bind(link.created_by.as_deref())
    .execute(db.conn()?)
    .await?;
    let sql = format!(
        "INSERT INTO dep_templates ({TEMPLATE_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
    );
    sqlx::query(&sql)
        .bind(&t.id)
        .bind(&t.token_id)
        .bind(t.tenant_id.to_string())
        .bind(t.link_id.to_string())
        .bind(&t.name)
        .bind(&t.profile_json)
        .bind(&t.setup_json)
        .bind(t.minimum_os_version.as_deref())
        .bind(i32::from(t.auto_assign))
        .bind(t.profile_uuid.as_deref())
        .bind(t.defined_at.map(|v| v.0))
        .bind(t.define_error.as_deref())
        .bind(t.created_at.0)
        .bind(t.updated_at.0)
        .execute(db.conn()?)
        .await?;
    Ok(())
}

async fn update_dep_template(db: &mut impl Db, t: &DepTemplateRecord) -> Result<(), StoreError> {
    let changed = sqlx::query(
        "UPDATE dep_templates SET name = $2, tenant_id = $3, profile_json = $4, setup_json = $5, \
         minimum_os_version = $6, auto_assign = $7, updated_at = $8 WHERE id = $1",
    )
    .bind(&t.id)
    .bind(&t.name)
    .bind(t.tenant_id.to_string())
    .bind(&t.profile_json)
    .bind(&t.setup_json)
    .bind(t.minimum_os_version.as_deref())
    .bind(i32::from(t.auto_assign))
    .bind(t.updated_at.0)
    .execute(db.conn()?)
    .await?
    .rows_affected();
    if changed == 0 {
        return Err(StoreError::NotFound);
    }
    sqlx::query("UPDATE enrollment_links SET tenant_id = $2 WHERE id = $1")
        .bind(t.link_id.to_string())
        .bind(t.tenant_id.to_string())
        .execute(db.conn()?)
        .await?;
    sqlx::query("UPDATE dep_devices SET tenant_id = $2 WHERE template_id = $1")
        .bind(&t.id)
        .bind(t.tenant_id.to_string())
        .execute(db.conn()?)
        .await?;
    Ok(())
}
