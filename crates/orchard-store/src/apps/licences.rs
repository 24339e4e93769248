//! `app_assignment_options` and `device_app_licences`: what an app assignment does, and each device's licence
//! and install state per app. The reconciler plans inside its unit (rows wanted, commands queued behind the
//! row's `pending_command` guard, licences released); the licence pass claims rows with a lease, calls Apple
//! between units, and writes what Apple answered per serial in one unit that also marks the devices for the
//! reconciler. Rows are moved only by conditional updates, so two nodes never queue or submit one thing twice.

use std::collections::{BTreeMap, BTreeSet};

use orchard_types::{AssignmentId, DeviceId, TenantId, UnixTime};
use sqlx::any::AnyRow;

use crate::desired::groups::{in_list, mark_dirty, values_list, ROWS_PER_STATEMENT};
use crate::unit::Db;
use crate::{rows, NewCommand, Scope, Store, StoreError, UnitOfWork};

/// What an app assignment does on the devices it reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppAssignmentOptions {
    pub assignment_id: AssignmentId,
    /// `required` or `removed`.
    pub install_behaviour: String,
    /// The managed app configuration, an XML plist dictionary (validated by core).
    pub configuration_plist: Option<String>,
    pub remove_on_unmanage: bool,
}

/// A device's licence and install state for one app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceAppLicence {
    pub device_id: DeviceId,
    pub adam_id: String,
    /// The tenant whose location the licence comes from.
    pub tenant_id: TenantId,
    pub pricing_param: String,
    pub serial_number: String,
    pub state: String,
    pub event_id: Option<String>,
    pub reason: Option<String>,
    pub bundle_id: Option<String>,
    pub pending_command: Option<String>,
    /// The pending command is still queued, sent or NotNow (false: it expired or failed unanswered).
    pub pending_live: bool,
    pub updated_at: UnixTime,
}

/// A licence the reconciler wants for a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantedLicence {
    pub device_id: DeviceId,
    pub adam_id: String,
    pub tenant_id: TenantId,
    pub pricing_param: String,
    pub serial_number: String,
}

/// A command the reconciler wants queued for a (device, app) row in state `from`, moving it to `to`.
#[derive(Debug, Clone)]
pub struct PlannedAppCommand {
    pub command: NewCommand,
    pub adam_id: String,
    pub from: &'static str,
    pub to: &'static str,
}

/// What Apple said about one row's association or disassociation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LicenceOutcome {
    /// Apple accepted the request: its event is polled next.
    Submitted { event_id: String },
    /// The event completed for the serial (associated, or freed).
    Done,
    /// No licence left (9610 on associate).
    Shortage { reason: String },
    /// Apple refused the serial for another reason.
    Failed { reason: String },
    /// Not sent or not finished (rate limit, token problem, event still pending): kept for a later pass (not
    /// before `retry_at`, Apple's Retry-After), with why.
    Later {
        reason: Option<String>,
        retry_at: Option<UnixTime>,
    },
    /// Apple no longer knows the event: the row is submitted again (associate and disassociate are idempotent).
    Resubmit,
}

const LICENCE_COLUMNS: &str =
    "l.device_id, l.adam_id, l.tenant_id, l.pricing_param, l.serial_number, \
     l.state, l.event_id, l.reason, l.bundle_id, l.pending_command, l.updated_at";

fn licence(r: &AnyRow) -> Result<DeviceAppLicence, StoreError> {
    Ok(DeviceAppLicence {
        device_id: rows::device_id(r, "device_id")?,
        adam_id: rows::text(r, "adam_id")?,
        tenant_id: rows::tenant_id(r, "tenant_id")?,
        pricing_param: rows::text(r, "pricing_param")?,
        serial_number: rows::text(r, "serial_number")?,
        state: rows::text(r, "state")?,
        event_id: rows::opt_text(r, "event_id")?,
        reason: rows::opt_text(r, "reason")?,
        bundle_id: rows::opt_text(r, "bundle_id")?,
        pending_command: rows::opt_text(r, "pending_command")?,
        pending_live: rows::boolean(r, "pending_live")?,
        updated_at: rows::time(r, "updated_at")?,
    })
}

fn assignment_id(r: &AnyRow, column: &str) -> Result<AssignmentId, StoreError> {
    let text = rows::text(r, column)?;
    AssignmentId::parse(&text).map_err(|e| StoreError::Corrupt(format!("column {column}: {e}")))
}

/// Writes an assignment's app options (insert or replace).
pub(crate) async fn put_app_options(
    db: &mut impl Db,
    o: &AppAssignmentOptions,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO app_assignment_options (assignment_id, install_behaviour, configuration_plist, \
         remove_on_unmanage) VALUES ($1, $2, $3, $4) ON CONFLICT (assignment_id) DO UPDATE SET \
         install_behaviour = excluded.install_behaviour, configuration_plist = excluded.configuration_plist, \
         remove_on_unmanage = excluded.remove_on_unmanage",
    )
    .bind(o.assignment_id.to_string())
    .bind(o.install_behaviour.as_str())
    .bind(o.configuration_plist.as_deref())
    .bind(i64::from(o.remove_on_unmanage))
    .execute(db.conn()?)
    .await?;
    Ok(())
}

async fn app_options_of(
    db: &mut impl Db,
    ids: &[AssignmentId],
) -> Result<Vec<AppAssignmentOptions>, StoreError> {
    let mut out = Vec::new();
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "SELECT assignment_id, install_behaviour, configuration_plist, remove_on_unmanage \
             FROM app_assignment_options WHERE assignment_id IN ({})",
            in_list(db.backend(), 1, chunk.len())
        );
        let mut query = sqlx::query(&sql);
        for id in chunk {
            query = query.bind(id.to_string());
        }
        for r in query.fetch_all(db.conn()?).await? {
            out.push(AppAssignmentOptions {
                assignment_id: assignment_id(&r, "assignment_id")?,
                install_behaviour: rows::text(&r, "install_behaviour")?,
                configuration_plist: rows::opt_text(&r, "configuration_plist")?,
                remove_on_unmanage: rows::boolean(&r, "remove_on_unmanage")?,
            });
        }
    }
    Ok(out)
}

/// Frees every licence of the device that `keep_tenant` does not own (all of them when None): rows that never
/// got a licence go, the others start disassociating. Called when a device is erased, checks out or moves.
pub(crate) async fn release_device_licences(
    db: &mut impl Db,
    device: &str,
    keep_tenant: Option<TenantId>,
    now: UnixTime,
) -> Result<(), StoreError> {
    let keep = keep_tenant.map(|t| t.to_string()).unwrap_or_default();
    sqlx::query(
        "DELETE FROM device_app_licences WHERE device_id = $1 AND tenant_id <> $2 \
         AND (state IN ('shortage', 'failed') OR (state = 'associating' AND event_id IS NULL))",
    )
    .bind(device)
    .bind(keep.as_str())
    .execute(db.conn()?)
    .await?;
    let released = sqlx::query(
        "UPDATE device_app_licences SET state = 'disassociating', event_id = NULL, lease_until = NULL, \
         pending_command = NULL, reason = NULL, updated_at = $3 \
         WHERE device_id = $1 AND tenant_id <> $2 AND state <> 'disassociating'",
    )
    .bind(device)
    .bind(keep.as_str())
    .bind(now.0)
    .execute(db.conn()?)
    .await?
    .rows_affected();
    if released > 0 {
        db.note_licence_work();
    }
    Ok(())
}

impl UnitOfWork {
    /// The serial numbers of these devices that may hold licences: those that reported one and were not
    /// erased since they enrolled (an erased iPad still counts as enrolled until it comes back, but its
    /// licences went back to the department and it gets none until it enrolls again).
    pub async fn licensable_device_serials(
        &mut self,
        devices: &[DeviceId],
    ) -> Result<Vec<(DeviceId, String)>, StoreError> {
        let mut out = Vec::new();
        for chunk in devices.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "SELECT d.id, d.serial_number FROM devices d WHERE d.serial_number IS NOT NULL \
                 AND d.id IN ({}) AND NOT EXISTS (SELECT 1 FROM commands c WHERE c.device_id = d.id \
                   AND c.request_type = 'EraseDevice' AND c.status = 'acknowledged' \
                   AND c.completed_at >= COALESCE(d.enrolled_at, 0))",
                in_list(self.backend(), 1, chunk.len())
            );
            let mut query = sqlx::query(&sql);
            for d in chunk {
                query = query.bind(d.to_string());
            }
            for r in query.fetch_all(self.conn()?).await? {
                out.push((rows::device_id(&r, "id")?, rows::text(&r, "serial_number")?));
            }
        }
        Ok(out)
    }

    /// `(tenant, adamId, pricingParam)` of every device-assignable app of these tenants' locations.
    pub async fn assignable_apps_of(
        &mut self,
        tenants: &[TenantId],
    ) -> Result<Vec<(TenantId, String, String)>, StoreError> {
        let mut out = Vec::new();
        for chunk in tenants.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "SELECT tenant_id, adam_id, pricing_param FROM vpp_assets \
                 WHERE device_assignable = 1 AND tenant_id IN ({}) ORDER BY tenant_id, adam_id, pricing_param",
                in_list(self.backend(), 1, chunk.len())
            );
            let mut query = sqlx::query(&sql);
            for t in chunk {
                query = query.bind(t.to_string());
            }
            for r in query.fetch_all(self.conn()?).await? {
                out.push((
                    rows::tenant_id(&r, "tenant_id")?,
                    rows::text(&r, "adam_id")?,
                    rows::text(&r, "pricing_param")?,
                ));
            }
        }
        Ok(out)
    }

    /// The app options of these assignments.
    pub async fn app_options_of(
        &mut self,
        ids: &[AssignmentId],
    ) -> Result<Vec<AppAssignmentOptions>, StoreError> {
        app_options_of(self, ids).await
    }

    /// Every licence row of these devices.
    pub async fn known_app_licences_of(
        &mut self,
        devices: &[DeviceId],
    ) -> Result<Vec<DeviceAppLicence>, StoreError> {
        let mut out = Vec::new();
        for chunk in devices.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "SELECT {LICENCE_COLUMNS}, \
                 CASE WHEN c.command_uuid IS NULL THEN 0 ELSE 1 END AS pending_live \
                 FROM device_app_licences l LEFT JOIN commands c ON c.command_uuid = l.pending_command \
                   AND c.status IN ('queued', 'sent', 'not_now') \
                 WHERE l.device_id IN ({})",
                in_list(self.backend(), 1, chunk.len())
            );
            let mut query = sqlx::query(&sql);
            for d in chunk {
                query = query.bind(d.to_string());
            }
            for r in query.fetch_all(self.conn()?).await? {
                out.push(licence(&r)?);
            }
        }
        Ok(out)
    }

    /// Adds rows in state `associating` for licences wanted (rows that exist stay as they are).
    pub async fn want_app_licences(
        &mut self,
        wanted: &[WantedLicence],
        now: UnixTime,
    ) -> Result<(), StoreError> {
        for chunk in wanted.chunks(ROWS_PER_STATEMENT / 2) {
            let sql = format!(
                "INSERT INTO device_app_licences (device_id, adam_id, tenant_id, pricing_param, \
                 serial_number, updated_at, state) VALUES {} ON CONFLICT (device_id, adam_id) DO NOTHING",
                values_list(self.backend(), chunk.len(), 7)
            );
            let mut query = sqlx::query(&sql);
            for w in chunk {
                query = query
                    .bind(w.device_id.to_string())
                    .bind(w.adam_id.as_str())
                    .bind(w.tenant_id.to_string())
                    .bind(w.pricing_param.as_str())
                    .bind(w.serial_number.as_str())
                    .bind(now.0)
                    .bind("associating");
            }
            if query.execute(self.conn()?).await?.rows_affected() > 0 {
                self.note_licence_work();
            }
        }
        Ok(())
    }

    /// Frees the licence of one device and app (it left scope or the assignment removes the app): a row that
    /// never got a licence goes, the others start disassociating.
    pub async fn release_app_licence(
        &mut self,
        device: DeviceId,
        adam_id: &str,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM device_app_licences WHERE device_id = $1 AND adam_id = $2 \
             AND (state IN ('shortage', 'failed') OR (state = 'associating' AND event_id IS NULL))",
        )
        .bind(device.to_string())
        .bind(adam_id)
        .execute(self.conn()?)
        .await?;
        let released = sqlx::query(
            "UPDATE device_app_licences SET state = 'disassociating', event_id = NULL, lease_until = NULL, \
             pending_command = NULL, reason = NULL, updated_at = $3 \
             WHERE device_id = $1 AND adam_id = $2 AND state <> 'disassociating'",
        )
        .bind(device.to_string())
        .bind(adam_id)
        .bind(now.0)
        .execute(self.conn()?)
        .await?
        .rows_affected();
        if released > 0 {
            self.note_licence_work();
        }
        Ok(())
    }

    /// `release_device_licences` for a device whose licences all go (erased, retired).
    pub async fn release_device_licences(
        &mut self,
        device: DeviceId,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        release_device_licences(self, &device.to_string(), None, now).await
    }

    /// Forgets a pending command that can no longer be answered, if it is still the pending one.
    pub async fn clear_dead_app_command(
        &mut self,
        device: DeviceId,
        adam_id: &str,
        command: &str,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE device_app_licences SET pending_command = NULL, updated_at = $4 \
             WHERE device_id = $1 AND adam_id = $2 AND pending_command = $3",
        )
        .bind(device.to_string())
        .bind(adam_id)
        .bind(command)
        .bind(now.0)
        .execute(self.conn()?)
        .await?;
        Ok(())
    }

    /// Queues the planned commands whose row is still in state `from` with nothing pending, moving it to `to`
    /// in the statement that checks it; returns how many were queued (a plan another pass queued first is
    /// dropped).
    pub async fn queue_planned_app_commands(
        &mut self,
        planned: &[PlannedAppCommand],
        now: UnixTime,
    ) -> Result<usize, StoreError> {
        let mut queued = 0;
        for chunk in planned.chunks(ROWS_PER_STATEMENT / 2) {
            let width = 5;
            let now_at = chunk.len() * width + 1;
            // The values come first (a CTE), as values_list requires of SQLite's anonymous placeholders.
            let sql = format!(
                "WITH v (column1, column2, column3, column4, column5) AS (VALUES {}) \
                 UPDATE device_app_licences SET state = v.column4, pending_command = v.column5, \
                 reason = NULL, updated_at = ${now_at} FROM v \
                 WHERE device_app_licences.device_id = v.column1 AND device_app_licences.adam_id = v.column2 \
                 AND device_app_licences.state = v.column3 AND device_app_licences.pending_command IS NULL \
                 RETURNING device_app_licences.pending_command",
                values_list(self.backend(), chunk.len(), width)
            );
            let mut query = sqlx::query(&sql);
            for p in chunk {
                query = query
                    .bind(p.command.device_id.to_string())
                    .bind(p.adam_id.as_str())
                    .bind(p.from)
                    .bind(p.to)
                    .bind(p.command.uuid.as_str());
            }
            let won: BTreeSet<String> = query
                .bind(now.0)
                .fetch_all(self.conn()?)
                .await?
                .iter()
                .map(|r| rows::text(r, "pending_command"))
                .collect::<Result<_, _>>()?;
            let won: Vec<&PlannedAppCommand> = chunk
                .iter()
                .filter(|p| won.contains(p.command.uuid.as_str()))
                .collect();
            // A removal takes the row to `disassociating`: its licence goes back with the command.
            if won.iter().any(|p| p.to == "disassociating") {
                self.note_licence_work();
            }
            let commands: Vec<NewCommand> = won.iter().map(|p| p.command.clone()).collect();
            queued += commands.len();
            self.enqueue_commands(&commands).await?;
        }
        Ok(queued)
    }

    /// The device answered an app command of ours: the row leaves its pending command, takes `state` (when
    /// given and the row is not on its way out), and keeps the bundle id and the reason given. Returns whether a row was
    /// ours.
    pub async fn app_command_answered(
        &mut self,
        device: DeviceId,
        command: &str,
        state: Option<&str>,
        bundle_id: Option<&str>,
        reason: Option<&str>,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE device_app_licences SET pending_command = NULL, \
             state = CASE WHEN state IN ('installing', 'installed', 'associated') THEN COALESCE($3, state) \
               ELSE state END, \
             bundle_id = COALESCE($4, bundle_id), reason = COALESCE($5, reason), updated_at = $6 \
             WHERE device_id = $1 AND pending_command = $2",
        )
        .bind(device.to_string())
        .bind(command)
        .bind(state)
        .bind(bundle_id)
        .bind(reason)
        .bind(now.0)
        .execute(self.conn()?)
        .await?
        .rows_affected();
        Ok(done > 0)
    }

    /// A ManagedApplicationList: each app of ours the device reports takes `installed` (status Managed) or
    /// `failed` (status Failed, with it as reason); returns how many rows changed.
    pub async fn managed_apps_reported(
        &mut self,
        device: DeviceId,
        statuses: &BTreeMap<String, String>,
        now: UnixTime,
    ) -> Result<usize, StoreError> {
        let mut changed = 0;
        for (bundle_id, status) in statuses {
            let (state, reason) = match status.as_str() {
                "Managed" => ("installed", None),
                "Failed" | "UserRejected" | "UpdateRejected" | "ManagedButUninstalled" => (
                    "failed",
                    Some(format!("the device reports the app {status}")),
                ),
                _ => continue,
            };
            changed += sqlx::query(
                "UPDATE device_app_licences SET state = $3, reason = $4, updated_at = $5 \
                 WHERE device_id = $1 AND bundle_id = $2 AND state IN ('installing', 'installed') \
                 AND state <> $3",
            )
            .bind(device.to_string())
            .bind(bundle_id.as_str())
            .bind(state)
            .bind(reason.as_deref())
            .bind(now.0)
            .execute(self.conn()?)
            .await?
            .rows_affected() as usize;
        }
        Ok(changed)
    }
}

/// A row the licence pass works on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicenceWork {
    pub device_id: DeviceId,
    pub adam_id: String,
    pub tenant_id: TenantId,
    pub pricing_param: String,
    pub serial_number: String,
    /// `associating` or `disassociating`.
    pub state: String,
    /// Set: Apple accepted it already, poll this event.
    pub event_id: Option<String>,
}

impl Store {
    /// The app options of these assignments.
    pub async fn app_options_of(
        &self,
        ids: &[AssignmentId],
    ) -> Result<Vec<AppAssignmentOptions>, StoreError> {
        app_options_of(&mut self.pooled().await?, ids).await
    }

    /// Leases up to `limit` rows that need Apple (associating or disassociating, submitted or not) and whose
    /// lease is free, until `lease_until`. Tenants whose location Orchard does not hold are skipped (nothing is
    /// associated in a location claimed elsewhere or with a refused token).
    pub async fn lease_licence_work(
        &self,
        now: UnixTime,
        lease_until: UnixTime,
        limit: i64,
    ) -> Result<Vec<LicenceWork>, StoreError> {
        let mut unit = self.begin_unit().await?;
        let skip = match unit.backend() {
            crate::Backend::Postgres => " FOR UPDATE OF l SKIP LOCKED",
            crate::Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE device_app_licences SET lease_until = $2 WHERE (device_id, adam_id) IN \
             (SELECT l.device_id, l.adam_id FROM device_app_licences l \
              JOIN vpp_tokens t ON t.tenant_id = l.tenant_id AND t.claim_state = 'claimed' \
              WHERE l.state IN ('associating', 'disassociating') \
              AND (l.lease_until IS NULL OR l.lease_until <= $1) \
              ORDER BY l.updated_at, l.device_id LIMIT $3{skip}) \
             RETURNING device_id, adam_id, tenant_id, pricing_param, serial_number, state, event_id"
        );
        let work = sqlx::query(&sql)
            .bind(now.0)
            .bind(lease_until.0)
            .bind(limit.max(0))
            .fetch_all(unit.conn()?)
            .await?
            .iter()
            .map(|r| {
                Ok(LicenceWork {
                    device_id: rows::device_id(r, "device_id")?,
                    adam_id: rows::text(r, "adam_id")?,
                    tenant_id: rows::tenant_id(r, "tenant_id")?,
                    pricing_param: rows::text(r, "pricing_param")?,
                    serial_number: rows::text(r, "serial_number")?,
                    state: rows::text(r, "state")?,
                    event_id: rows::opt_text(r, "event_id")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        unit.commit().await?;
        Ok(work)
    }

    /// Writes what Apple answered for leased rows, in one unit: each row still in the state it was leased in
    /// takes its outcome and its lease ends; devices whose licence changed are marked for the reconciler.
    pub async fn record_licence_outcomes(
        &self,
        outcomes: &[(LicenceWork, LicenceOutcome)],
        now: UnixTime,
        event_of: impl Fn(&LicenceWork, &LicenceOutcome) -> Option<crate::WebhookEventRecord>,
    ) -> Result<(), StoreError> {
        let mut unit = self.begin_unit().await?;
        let mut dirty = Vec::new();
        for (w, outcome) in outcomes {
            let device = w.device_id.to_string();
            // Every statement: $1..$3 the guard, $4 a text (event id or reason), $5 a time.
            let (sql, text, time): (&str, Option<&str>, Option<i64>) = match (outcome, w.state.as_str())
            {
                (LicenceOutcome::Submitted { event_id }, _) => (
                    "UPDATE device_app_licences SET event_id = $4, lease_until = NULL, reason = NULL, \
                     updated_at = $5",
                    Some(event_id.as_str()),
                    Some(now.0),
                ),
                (LicenceOutcome::Done, "disassociating") => (
                    "DELETE FROM device_app_licences WHERE $4 IS NULL AND $5 IS NULL AND",
                    None,
                    None,
                ),
                (LicenceOutcome::Done, _) => (
                    "UPDATE device_app_licences SET state = 'associated', event_id = NULL, \
                     lease_until = NULL, reason = $4, updated_at = $5",
                    None,
                    Some(now.0),
                ),
                (LicenceOutcome::Shortage { reason }, _) => (
                    "UPDATE device_app_licences SET state = 'shortage', event_id = NULL, \
                     lease_until = NULL, reason = $4, updated_at = $5",
                    Some(reason.as_str()),
                    Some(now.0),
                ),
                // Kept disassociating (the licence may still be on the serial); the next submission waits for
                // the lease to run out.
                (LicenceOutcome::Failed { reason }, "disassociating") => (
                    "UPDATE device_app_licences SET event_id = NULL, reason = $4, updated_at = $5",
                    Some(reason.as_str()),
                    Some(now.0),
                ),
                (LicenceOutcome::Failed { reason }, _) => (
                    "UPDATE device_app_licences SET state = 'failed', event_id = NULL, \
                     lease_until = NULL, reason = $4, updated_at = $5",
                    Some(reason.as_str()),
                    Some(now.0),
                ),
                (LicenceOutcome::Later { reason, retry_at }, _) => (
                    "UPDATE device_app_licences SET reason = COALESCE($4, reason), lease_until = $5",
                    reason.as_deref(),
                    retry_at.map(|t| t.0),
                ),
                (LicenceOutcome::Resubmit, _) => (
                    "UPDATE device_app_licences SET event_id = NULL, lease_until = NULL, \
                     reason = COALESCE($4, reason), updated_at = COALESCE($5, updated_at)",
                    None,
                    None,
                ),
            };
            let guard = if sql.starts_with("DELETE") {
                " device_id = $1 AND adam_id = $2 AND state = $3"
            } else {
                " WHERE device_id = $1 AND adam_id = $2 AND state = $3"
            };
            let statement = format!("{sql}{guard}");
            let applied = sqlx::query(&statement)
                .bind(device)
                .bind(w.adam_id.as_str())
                .bind(w.state.as_str())
                .bind(text)
                .bind(time)
                .execute(unit.conn()?)
                .await?
                .rows_affected();
            // The webhook event goes with the outcome it reports, and only when the row took it.
            if let Some(event) = event_of(w, outcome).filter(|_| applied > 0) {
                unit.record_webhook_event(&event).await?;
            }
            if matches!(outcome, LicenceOutcome::Done) {
                dirty.push(w.device_id);
            }
        }
        mark_dirty(&mut unit, &dirty, now).await?;
        unit.commit().await
    }

    /// After licences were added: up to `available` rows of the app waiting in `shortage` try again (oldest
    /// first). Returns how many.
    pub async fn retry_licence_shortage(
        &self,
        tenant: TenantId,
        adam_id: &str,
        available: i64,
        now: UnixTime,
    ) -> Result<usize, StoreError> {
        if available <= 0 {
            return Ok(0);
        }
        let mut unit = self.begin_unit().await?;
        let moved = sqlx::query(
            "UPDATE device_app_licences SET state = 'associating', reason = NULL, updated_at = $4 \
             WHERE (device_id, adam_id) IN (SELECT device_id, adam_id FROM device_app_licences \
               WHERE tenant_id = $1 AND adam_id = $2 AND state = 'shortage' \
               ORDER BY updated_at, device_id LIMIT $3) RETURNING device_id",
        )
        .bind(tenant.to_string())
        .bind(adam_id)
        .bind(available)
        .bind(now.0)
        .fetch_all(unit.conn()?)
        .await?
        .len();
        unit.commit().await?;
        Ok(moved)
    }

    /// Rows per app and state of the tenant's licences, in the scope: `(adam_id, state, count)`.
    pub async fn app_licence_states(
        &self,
        scope: Scope,
        tenant: TenantId,
    ) -> Result<Vec<(String, String, i64)>, StoreError> {
        let mut sql = crate::sql::Sql::new(
            "SELECT adam_id, state, COUNT(*) AS n FROM device_app_licences WHERE tenant_id = ",
        );
        sql.bind(tenant)
            .in_scope("tenant_id", scope)
            .push(" GROUP BY adam_id, state ORDER BY adam_id, state");
        sql.query()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                Ok((
                    rows::text(r, "adam_id")?,
                    rows::text(r, "state")?,
                    rows::int(r, "n")?,
                ))
            })
            .collect()
    }

    /// The tenant's licence rows of one app (every device), in the scope.
    pub async fn app_licences(
        &self,
        scope: Scope,
        tenant: TenantId,
        adam_id: &str,
    ) -> Result<Vec<DeviceAppLicence>, StoreError> {
        let mut sql = crate::sql::Sql::new(&format!(
            "SELECT {LICENCE_COLUMNS}, 0 AS pending_live FROM device_app_licences l WHERE l.adam_id = "
        ));
        sql.bind(adam_id.to_owned())
            .push(" AND l.tenant_id = ")
            .bind(tenant)
            .in_scope("l.tenant_id", scope)
            .push(" ORDER BY l.serial_number");
        sql.query()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(licence)
            .collect()
    }
}
