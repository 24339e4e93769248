//! App installs through Apps and Books device licences (issue 13, point 4), on the desired-state machinery: an
//! assignment of kind `app` names an adamId of the tenant's location, with install behaviour (`required` or
//! `removed`), a managed app configuration (an XML plist dictionary) and "remove the app when the device leaves
//! management" (ManagementFlags 1).
//!
//! The flow per (device, app), each step in its own unit of work:
//! 1. the reconciler (its pass over the dirty devices) wants a licence: a row `associating`;
//! 2. the licence pass leases rows, associates them by serial in batches within the limits Apple announces (one
//!    event per batch; the event id stored before it is polled), polls each event to completion and writes the
//!    outcome per serial: `associated`, `shortage` (no licence left: tried again once a sync sees licences
//!    available) or `failed` with Apple's reason; a refused or rate-limited batch stays `associating` until its
//!    Retry-After has passed, so nothing is lost or sent twice; the tenant's counts are synced afterwards;
//! 3. the reconciler queues InstallApplication (iTunesStoreID, PurchaseMethod 1) on `associated` rows behind the
//!    row's guard: `installing`; the device's answer keeps the bundle id, and a ManagedApplicationList that reports
//!    it Managed makes it `installed`;
//! 4. a device that leaves scope (or whose assignment says `removed`) gets RemoveApplication and its licence is
//!    disassociated; an erased, retired or checked-out device, or one moved to another tenant, loses its licences
//!    (the old tenant's, with the old tenant's token) without any command.
//!
//! Licences are always device licences (by serial), so Shared iPads get what every iPad gets. Apple is called
//! between units of work, never inside one.

use std::collections::{BTreeMap, HashMap, HashSet};

use orchard_protocol::commands::Command;
use orchard_store::{
    AppAssignmentOptions, AssignmentRecord, DeviceAppLicence, LicenceOutcome, LicenceWork,
    PlannedAppCommand, ReconcileDevice, UnitOfWork, WantedLicence,
};
use orchard_types::{ChannelId, CommandStatus, DeviceId, GroupId, QueuedBy, TenantId, UnixTime};
use orchard_vpp::types::AssetRef;
use orchard_vpp::{error_numbers, AdamId, EventId, EventStatus, PricingParam, VppError};
use serde::{Deserialize, Serialize};

use crate::access::capability::SystemCtx;
use crate::commands::secrets::CommandTarget;
use crate::desired::profile_schema::ValidationError;
use crate::desired::reconciler::targets_device;
use crate::{CoreError, Orchard};

/// The largest managed app configuration accepted (Apple's own limit is not documented; 64 KiB is generous).
const MAX_CONFIGURATION_BYTES: usize = 64 * 1024;
/// Rows one licence pass works on.
const LICENCE_PASS_ROWS: i64 = 20_000;
/// How long a licence pass holds its rows (a node that dies mid-pass frees them after this).
const LICENCE_LEASE_SECONDS: i64 = 600;

/// An app assignment's options as the API takes them.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AppAssignmentInput {
    /// `required` (default: install and keep installed) or `removed` (remove it and free the licence).
    #[serde(default)]
    pub install_behaviour: Option<String>,
    /// Managed app configuration: an XML plist whose top level is a dictionary.
    #[serde(default)]
    pub configuration: Option<String>,
    /// Remove the app when the device leaves management (ManagementFlags 1). Default true.
    #[serde(default)]
    pub remove_on_unmanage: Option<bool>,
}

/// An app assignment's options as the API shows them.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppAssignmentView {
    pub install_behaviour: String,
    pub configuration: Option<String>,
    pub remove_on_unmanage: bool,
}

impl From<&AppAssignmentOptions> for AppAssignmentView {
    fn from(o: &AppAssignmentOptions) -> Self {
        AppAssignmentView {
            install_behaviour: o.install_behaviour.clone(),
            configuration: o.configuration_plist.clone(),
            remove_on_unmanage: o.remove_on_unmanage,
        }
    }
}

/// One device's licence and install state for an app.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppDeviceLicenceView {
    pub device_id: String,
    pub serial_number: String,
    /// associating, associated, installing, installed, shortage, failed or disassociating.
    pub state: String,
    /// Why it is in `shortage` or `failed` (Apple's or the device's error), or why it waits.
    pub reason: Option<String>,
    pub bundle_id: Option<String>,
    pub updated_at: String,
}

/// Licence rows of an app by state: the shortfall is `shortage`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppDeviceStates {
    pub associating: i64,
    pub associated: i64,
    pub installing: i64,
    pub installed: i64,
    /// Devices waiting for a licence the location does not have.
    pub shortage: i64,
    pub failed: i64,
    pub disassociating: i64,
}

impl AppDeviceStates {
    pub(crate) fn add(&mut self, state: &str, n: i64) {
        let slot = match state {
            "associating" => &mut self.associating,
            "associated" => &mut self.associated,
            "installing" => &mut self.installing,
            "installed" => &mut self.installed,
            "shortage" => &mut self.shortage,
            "failed" => &mut self.failed,
            _ => &mut self.disassociating,
        };
        *slot += n;
    }
}

/// What one licence pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LicencePassStats {
    /// Rows leased.
    pub rows: usize,
    /// Associate / disassociate requests Apple accepted.
    pub submitted_batches: usize,
    /// Rows whose association or disassociation completed.
    pub done: usize,
    pub shortage: usize,
    pub failed: usize,
    /// Rows left for a later pass (rate limit, token problem, event still pending).
    pub later: usize,
}

fn problem(path: &str, message: impl Into<String>) -> ValidationError {
    ValidationError {
        path: path.into(),
        message: message.into(),
    }
}

/// Checks an app assignment's options: behaviour known, configuration an XML plist dictionary within bounds.
pub(crate) fn checked_app_options(
    input: Option<&AppAssignmentInput>,
    assignment: orchard_types::AssignmentId,
) -> Result<AppAssignmentOptions, Vec<ValidationError>> {
    let default = AppAssignmentInput::default();
    let input = input.unwrap_or(&default);
    let mut errors = Vec::new();
    let behaviour = input
        .install_behaviour
        .clone()
        .unwrap_or_else(|| "required".into());
    if !matches!(behaviour.as_str(), "required" | "removed") {
        errors.push(problem(
            "app.install_behaviour",
            "must be \"required\" or \"removed\"",
        ));
    }
    if let Some(text) = &input.configuration {
        if text.len() > MAX_CONFIGURATION_BYTES {
            errors.push(problem(
                "app.configuration",
                format!("at most {MAX_CONFIGURATION_BYTES} bytes"),
            ));
        } else if let Err(e) = orchard_protocol::parse_dictionary(text.as_bytes()) {
            errors.push(problem(
                "app.configuration",
                format!("must be an XML plist whose top level is a dictionary: {e}"),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(AppAssignmentOptions {
        assignment_id: assignment,
        install_behaviour: behaviour,
        configuration_plist: input.configuration.clone(),
        remove_on_unmanage: input.remove_on_unmanage.unwrap_or(true),
    })
}

/// What the reconciler decided for one (device, app).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AppPlan {
    /// Get a licence (a new row `associating`).
    Associate { adam_id: String, pricing: String },
    /// Licence there: install (or re-send to apply new options).
    Install { adam_id: String },
    /// Ask the device whether the app is Managed yet.
    Query { adam_id: String, bundle_id: String },
    /// Remove the app, then free the licence.
    Remove { adam_id: String, bundle_id: String },
    /// Free the licence (no app to remove).
    Release { adam_id: String },
}

/// The app plan for one enrolled device: pure, so the rules are tested without a database.
pub(crate) fn plan_device_apps(
    device: &ReconcileDevice,
    serial: Option<&str>,
    assignments: &[(&AssignmentRecord, &AppAssignmentOptions)],
    assignable: &HashMap<(TenantId, String), String>,
    groups: &HashSet<GroupId>,
    known: &[&DeviceAppLicence],
) -> Vec<AppPlan> {
    // adamId → required (true) or removed (false); `removed` wins when both reach the device.
    let mut wanted: BTreeMap<&str, bool> = BTreeMap::new();
    for (a, o) in assignments {
        if a.tenant_id != device.tenant_id || !targets_device(a, device.id, groups) {
            continue;
        }
        let required = o.install_behaviour == "required";
        wanted
            .entry(a.object_id.as_str())
            .and_modify(|r| *r &= required)
            .or_insert(required);
    }
    let by_app: HashMap<&str, &DeviceAppLicence> =
        known.iter().map(|k| (k.adam_id.as_str(), *k)).collect();
    let mut plans = Vec::new();
    for (&adam_id, &required) in &wanted {
        let row = by_app.get(adam_id);
        if !required {
            continue;
        }
        match row {
            None => {
                if let (Some(pricing), Some(_)) = (
                    assignable.get(&(device.tenant_id, adam_id.to_owned())),
                    serial,
                ) {
                    plans.push(AppPlan::Associate {
                        adam_id: adam_id.to_owned(),
                        pricing: pricing.clone(),
                    });
                }
            }
            Some(k) if k.tenant_id != device.tenant_id || k.pending_live => {}
            Some(k) if k.state == "associated" => plans.push(AppPlan::Install {
                adam_id: adam_id.to_owned(),
            }),
            Some(k) if k.state == "installing" => {
                if let Some(bundle_id) = &k.bundle_id {
                    plans.push(AppPlan::Query {
                        adam_id: adam_id.to_owned(),
                        bundle_id: bundle_id.clone(),
                    });
                }
            }
            Some(_) => {}
        }
    }
    for k in known {
        if k.state == "disassociating" || k.pending_live {
            continue;
        }
        let still_wanted =
            k.tenant_id == device.tenant_id && wanted.get(k.adam_id.as_str()) == Some(&true);
        if still_wanted {
            continue;
        }
        let on_device = matches!(k.state.as_str(), "installing" | "installed");
        match (&k.bundle_id, on_device && k.tenant_id == device.tenant_id) {
            (Some(bundle_id), true) => plans.push(AppPlan::Remove {
                adam_id: k.adam_id.clone(),
                bundle_id: bundle_id.clone(),
            }),
            _ => plans.push(AppPlan::Release {
                adam_id: k.adam_id.clone(),
            }),
        }
    }
    plans
}

fn install_command(adam_id: &str, options: &AppAssignmentOptions) -> Result<Command, CoreError> {
    let store_id: i64 = adam_id
        .parse()
        .map_err(|_| CoreError::Internal(format!("stored adamId {adam_id:?} is not a number")))?;
    let configuration = match &options.configuration_plist {
        Some(text) => Some(
            orchard_protocol::parse_dictionary(text.as_bytes())
                .map_err(|e| CoreError::Internal(format!("stored app configuration: {e}")))?,
        ),
        None => None,
    };
    Ok(Command::InstallApplication {
        itunes_store_id: Some(store_id),
        identifier: None,
        manifest_url: None,
        management_flags: Some(i64::from(options.remove_on_unmanage)),
        purchase_method: Some(1),
        configuration,
        attributes: None,
        change_management_state: None,
    })
}

fn error_text(e: &orchard_vpp::ApiError) -> String {
    format!(
        "{}: {}",
        e.error_number,
        e.error_message
            .as_deref()
            .unwrap_or("apple gave no message")
    )
}

impl Orchard {
    /// The reconciler's app step inside its unit: for every claimed device, the licences and commands its app
    /// assignments want; devices no longer enrolled lose their licences. Returns commands queued.
    pub(crate) async fn reconcile_apps(
        &self,
        unit: &mut UnitOfWork,
        claimed: &[ReconcileDevice],
        groups: &HashMap<DeviceId, HashSet<GroupId>>,
        now: UnixTime,
    ) -> Result<(usize, usize), CoreError> {
        let ids: Vec<DeviceId> = claimed.iter().map(|d| d.id).collect();
        let known = unit.known_app_licences_of(&ids).await?;
        let mut tenants: Vec<TenantId> = claimed.iter().map(|d| d.tenant_id).collect();
        tenants.sort();
        tenants.dedup();
        let assignments = unit.assignments_of_tenants(&tenants, "app").await?;
        if assignments.is_empty() && known.is_empty() {
            return Ok((0, 0));
        }
        let options: HashMap<_, AppAssignmentOptions> = unit
            .app_options_of(&assignments.iter().map(|a| a.id).collect::<Vec<_>>())
            .await?
            .into_iter()
            .map(|o| (o.assignment_id, o))
            .collect();
        let with_options: Vec<(&AssignmentRecord, &AppAssignmentOptions)> = assignments
            .iter()
            .filter_map(|a| options.get(&a.id).map(|o| (a, o)))
            .collect();
        let options_by_app: HashMap<(TenantId, &str), &AppAssignmentOptions> = with_options
            .iter()
            .filter(|(_, o)| o.install_behaviour == "required")
            .map(|(a, o)| ((a.tenant_id, a.object_id.as_str()), *o))
            .collect();
        let assignable: HashMap<(TenantId, String), String> = unit
            .assignable_apps_of(&tenants)
            .await?
            .into_iter()
            .map(|(t, adam, pricing)| ((t, adam), pricing))
            .collect();
        let serials: HashMap<DeviceId, String> = unit
            .licensable_device_serials(&ids)
            .await?
            .into_iter()
            .collect();
        let mut known_by_device: HashMap<DeviceId, Vec<&DeviceAppLicence>> = HashMap::new();
        for k in &known {
            known_by_device.entry(k.device_id).or_default().push(k);
        }
        let no_groups = HashSet::new();
        let mut wanted = Vec::new();
        let mut planned = Vec::new();
        for device in claimed {
            let rows = known_by_device
                .get(&device.id)
                .map(Vec::as_slice)
                .unwrap_or_default();
            if !device.enrolled {
                if rows.iter().any(|k| k.state != "disassociating") {
                    unit.release_device_licences(device.id, now).await?;
                }
                continue;
            }
            for k in rows {
                if let (Some(command), false) = (&k.pending_command, k.pending_live) {
                    unit.clear_dead_app_command(device.id, &k.adam_id, command, now)
                        .await?;
                }
            }
            let serial = serials.get(&device.id);
            let plans = plan_device_apps(
                device,
                serial.map(String::as_str),
                &with_options,
                &assignable,
                groups.get(&device.id).unwrap_or(&no_groups),
                rows,
            );
            let channel = ChannelId::device(&device.udid);
            for plan in plans {
                let (command, adam_id, from, to) = match plan {
                    AppPlan::Associate { adam_id, pricing } => {
                        if let Some(serial) = serial {
                            wanted.push(WantedLicence {
                                device_id: device.id,
                                adam_id,
                                tenant_id: device.tenant_id,
                                pricing_param: pricing,
                                serial_number: serial.clone(),
                            });
                        }
                        continue;
                    }
                    AppPlan::Release { adam_id } => {
                        unit.release_app_licence(device.id, &adam_id, now).await?;
                        continue;
                    }
                    AppPlan::Install { adam_id } => {
                        let Some(options) =
                            options_by_app.get(&(device.tenant_id, adam_id.as_str()))
                        else {
                            continue;
                        };
                        (
                            install_command(&adam_id, options)?,
                            adam_id,
                            "associated",
                            "installing",
                        )
                    }
                    AppPlan::Query { adam_id, bundle_id } => (
                        Command::ManagedApplicationList {
                            identifiers: Some(vec![bundle_id]),
                        },
                        adam_id,
                        "installing",
                        "installing",
                    ),
                    AppPlan::Remove { adam_id, bundle_id } => {
                        let from = known_by_device
                            .get(&device.id)
                            .and_then(|rows| rows.iter().find(|k| k.adam_id == adam_id))
                            .map(|k| {
                                if k.state == "installed" {
                                    "installed"
                                } else {
                                    "installing"
                                }
                            })
                            .unwrap_or("installed");
                        (
                            Command::RemoveApplication {
                                identifier: bundle_id,
                            },
                            adam_id,
                            from,
                            "disassociating",
                        )
                    }
                };
                planned.push(PlannedAppCommand {
                    command: self.new_command(
                        &command,
                        CommandTarget {
                            device_id: device.id,
                            tenant_id: device.tenant_id,
                            channel: &channel,
                        },
                        QueuedBy::Reconciler,
                        now,
                    )?,
                    adam_id,
                    from,
                    to,
                });
            }
        }
        unit.want_app_licences(&wanted, now).await?;
        let queued = unit.queue_planned_app_commands(&planned, now).await?;
        Ok((wanted.len(), queued))
    }

    /// Inside a report's unit: an app command of ours was answered (InstallApplication, RemoveApplication,
    /// ManagedApplicationList), or an erase freed the device's licences. Returns whether the reconciler should
    /// look at the device again.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn app_command_reported(
        &self,
        unit: &mut UnitOfWork,
        device: DeviceId,
        uuid: &str,
        request_type: orchard_types::RequestType,
        status: CommandStatus,
        report: &orchard_protocol::report::CommandReport,
        error_chain: Option<&str>,
        now: UnixTime,
    ) -> Result<bool, CoreError> {
        use orchard_types::RequestType as R;
        match (request_type, status) {
            (R::EraseDevice, CommandStatus::Acknowledged) => {
                unit.release_device_licences(device, now).await?;
                Ok(true)
            }
            (R::InstallApplication, CommandStatus::Acknowledged) => {
                let text = |key: &str| {
                    report
                        .body
                        .get(key)
                        .and_then(plist::Value::as_string)
                        .map(str::to_owned)
                };
                let state = match text("State").as_deref() {
                    Some("Managed") => "installed",
                    Some("Failed" | "UserRejected" | "PromptingForLogin") => "failed",
                    _ => "installing",
                };
                let reason = (state == "failed").then(|| {
                    format!(
                        "the device answered state {} {}",
                        text("State").unwrap_or_default(),
                        text("RejectionReason").unwrap_or_default()
                    )
                });
                let ours = unit
                    .app_command_answered(
                        device,
                        uuid,
                        Some(state),
                        text("Identifier").as_deref(),
                        reason.as_deref(),
                        now,
                    )
                    .await?;
                Ok(ours && state == "installing")
            }
            (
                R::InstallApplication | R::RemoveApplication | R::ManagedApplicationList,
                CommandStatus::Error | CommandStatus::CommandFormatError,
            ) => {
                let reason = error_chain.unwrap_or(status.as_str());
                // Only a refused install fails the row; a refused query or removal keeps its state.
                let state = (request_type == R::InstallApplication).then_some("failed");
                unit.app_command_answered(device, uuid, state, None, Some(reason), now)
                    .await?;
                Ok(false)
            }
            (R::RemoveApplication | R::ManagedApplicationList, CommandStatus::Acknowledged) => {
                // What the list said was applied with the result; the row is free for the next command.
                unit.app_command_answered(device, uuid, None, None, None, now)
                    .await?;
                Ok(false)
            }
            _ => Ok(false),
        }
    }

    /// One licence pass (after each reconciler pass; tests call it directly): leases the rows that need Apple,
    /// submits what was never submitted, polls every event to completion and stores each serial's outcome.
    pub async fn app_licences_once(
        &self,
        system: &SystemCtx,
    ) -> Result<LicencePassStats, CoreError> {
        let now = self.clock.now();
        let work = self
            .store
            .lease_licence_work(
                now,
                now.plus_seconds(LICENCE_LEASE_SECONDS),
                LICENCE_PASS_ROWS,
            )
            .await?;
        let mut stats = LicencePassStats {
            rows: work.len(),
            ..LicencePassStats::default()
        };
        if work.is_empty() {
            return Ok(stats);
        }
        let mut by_tenant: BTreeMap<TenantId, Vec<LicenceWork>> = BTreeMap::new();
        for w in work {
            by_tenant.entry(w.tenant_id).or_default().push(w);
        }
        let tokens = self.store.list_apps_tokens().await?;
        for (tenant, rows) in by_tenant {
            let outcomes = match tokens.iter().find(|t| t.tenant_id == tenant) {
                Some(token) => self.licence_pass_for(token, rows, &mut stats).await?,
                None => rows
                    .into_iter()
                    .map(|w| {
                        (
                            w,
                            LicenceOutcome::Later {
                                reason: Some("the department has no apps and books token".into()),
                                retry_at: None,
                            },
                        )
                    })
                    .collect(),
            };
            for (_, o) in &outcomes {
                match o {
                    LicenceOutcome::Done => stats.done += 1,
                    LicenceOutcome::Shortage { .. } => stats.shortage += 1,
                    LicenceOutcome::Failed { .. } => stats.failed += 1,
                    LicenceOutcome::Later { .. } => stats.later += 1,
                    LicenceOutcome::Submitted { .. } | LicenceOutcome::Resubmit => {}
                }
            }
            let recorded_at = self.clock.now();
            self.store
                .record_licence_outcomes(&outcomes, recorded_at, |w, o| {
                    crate::webhooks::licence_event(w, o, recorded_at)
                })
                .await?;
            // `app.licence` events may be in the outbox now.
            self.wake_webhooks();
            if outcomes
                .iter()
                .any(|(_, o)| matches!(o, LicenceOutcome::Done | LicenceOutcome::Shortage { .. }))
            {
                // Orchard's counts follow the server's after every change.
                if let Err(e) = self.run_apps_sync(system, tenant).await {
                    tracing::warn!(%tenant, error = %e, "apps sync after licence changes failed");
                }
            }
        }
        if stats.done > 0 {
            self.wake_reconciler();
        }
        if stats.rows > 0 {
            tracing::info!(
                rows = stats.rows,
                batches = stats.submitted_batches,
                done = stats.done,
                shortage = stats.shortage,
                failed = stats.failed,
                later = stats.later,
                "licence pass"
            );
        }
        Ok(stats)
    }

    /// One tenant's rows of a licence pass: submissions (their event ids stored at once), then every event
    /// polled to completion.
    async fn licence_pass_for(
        &self,
        token: &orchard_store::AppsTokenRecord,
        rows: Vec<LicenceWork>,
        stats: &mut LicencePassStats,
    ) -> Result<Vec<(LicenceWork, LicenceOutcome)>, CoreError> {
        let later = |rows: Vec<LicenceWork>, reason: String, retry_at: Option<UnixTime>| {
            rows.into_iter()
                .map(|w| {
                    (
                        w,
                        LicenceOutcome::Later {
                            reason: Some(reason.clone()),
                            retry_at,
                        },
                    )
                })
                .collect::<Vec<_>>()
        };
        let client = self.client_of(token)?;
        let limits = match client.service_config().await {
            Ok(c) => c.limits,
            Err(e) => return Ok(later(rows, e.to_string(), self.retry_at(&e))),
        };
        // Submissions: per action and app, every serial not yet sent.
        let (submitted, unsent): (Vec<LicenceWork>, Vec<LicenceWork>) =
            rows.into_iter().partition(|w| w.event_id.is_some());
        let mut groups: BTreeMap<(String, String, String), Vec<LicenceWork>> = BTreeMap::new();
        for w in unsent {
            groups
                .entry((w.state.clone(), w.adam_id.clone(), w.pricing_param.clone()))
                .or_default()
                .push(w);
        }
        let mut outcomes = Vec::new();
        let mut to_poll: Vec<LicenceWork> = submitted;
        for ((state, adam_id, pricing), group) in groups {
            let Ok(adam) = AdamId::parse(&adam_id) else {
                outcomes.extend(group.into_iter().map(|w| {
                    (
                        w,
                        LicenceOutcome::Failed {
                            reason: format!("{adam_id:?} is not an adamId"),
                        },
                    )
                }));
                continue;
            };
            let asset = AssetRef {
                adam_id: adam,
                pricing_param: PricingParam::from(pricing),
            };
            let serials: Vec<String> = group.iter().map(|w| w.serial_number.clone()).collect();
            let batch = if state == "disassociating" {
                client
                    .disassociate_batched(std::slice::from_ref(&asset), &serials, &limits)
                    .await
            } else {
                client
                    .associate_batched(std::slice::from_ref(&asset), &serials, &limits)
                    .await
            };
            stats.submitted_batches += batch.submitted.len();
            let mut rest: HashMap<String, LicenceWork> = group
                .into_iter()
                .map(|w| (w.serial_number.clone(), w))
                .collect();
            let mut recorded = Vec::new();
            for b in &batch.submitted {
                for serial in &b.serial_numbers {
                    if let Some(mut w) = rest.remove(serial) {
                        recorded.push((
                            w.clone(),
                            LicenceOutcome::Submitted {
                                event_id: b.event.event_id.0.clone(),
                            },
                        ));
                        w.event_id = Some(b.event.event_id.0.clone());
                        to_poll.push(w);
                    }
                }
            }
            // The event ids are stored before anything is polled: a crash now loses no association.
            self.store
                .record_licence_outcomes(&recorded, self.clock.now(), |_, _| None)
                .await?;
            if let Some(e) = batch.error {
                let reason = e.to_string();
                let retry_at = self.retry_at(&e);
                outcomes.extend(later(rest.into_values().collect(), reason, retry_at));
            }
        }
        // Polls: one event per batch, every serial's outcome.
        let mut by_event: BTreeMap<String, Vec<LicenceWork>> = BTreeMap::new();
        for w in to_poll {
            if let Some(event) = w.event_id.clone() {
                by_event.entry(event).or_default().push(w);
            }
        }
        for (event, group) in by_event {
            match client.wait_for_event(&EventId(event.clone())).await {
                Ok(status) => outcomes.extend(event_outcomes(&status, group)),
                Err(VppError::Apple { number, .. })
                    if number == error_numbers::RESULT_NOT_FOUND =>
                {
                    // Apple forgot the event: submit again (associate and disassociate are idempotent).
                    outcomes.extend(group.into_iter().map(|w| (w, LicenceOutcome::Resubmit)));
                }
                Err(e) => {
                    let retry_at = self.retry_at(&e);
                    outcomes.extend(later(group, e.to_string(), retry_at));
                }
            }
        }
        Ok(outcomes)
    }

    /// When a row refused for `e` may be tried again: after Apple's Retry-After, or at once.
    fn retry_at(&self, e: &VppError) -> Option<UnixTime> {
        match e {
            VppError::RateLimited {
                retry_after_seconds,
            } => Some(
                self.clock
                    .now()
                    .plus_seconds(i64::try_from(*retry_after_seconds).unwrap_or(i64::MAX / 2)),
            ),
            _ => None,
        }
    }

    /// The tenant's licence rows of one app, per device (anyone who sees the tenant).
    pub async fn app_device_licences(
        &self,
        who: &crate::access::principal::Principal,
        tenant: TenantId,
        adam_id: &str,
    ) -> Result<Vec<AppDeviceLicenceView>, CoreError> {
        self.store
            .get_tenant(who.scope(), tenant)
            .await?
            .ok_or(CoreError::NotFound)?;
        let known = self
            .store
            .list_app_assets(who.scope(), tenant)
            .await?
            .iter()
            .any(|a| a.adam_id == adam_id);
        if !known {
            return Err(CoreError::NotFound);
        }
        Ok(self
            .store
            .app_licences(who.scope(), tenant, adam_id)
            .await?
            .into_iter()
            .map(|l| AppDeviceLicenceView {
                device_id: l.device_id.to_string(),
                serial_number: l.serial_number,
                state: l.state,
                reason: l.reason,
                bundle_id: l.bundle_id,
                updated_at: l.updated_at.to_rfc3339(),
            })
            .collect())
    }
}

/// Each serial's outcome of a finished event: in the failures → shortage (9610 on associate), done (9619 on
/// disassociate: nothing was there) or failed with Apple's reason; otherwise done. Still pending → later.
fn event_outcomes(
    status: &EventStatus,
    group: Vec<LicenceWork>,
) -> Vec<(LicenceWork, LicenceOutcome)> {
    if !status.is_done() {
        return group
            .into_iter()
            .map(|w| {
                (
                    w,
                    LicenceOutcome::Later {
                        reason: None,
                        retry_at: None,
                    },
                )
            })
            .collect();
    }
    let failed = status.failed_serials();
    group
        .into_iter()
        .map(|w| {
            let outcome = match failed.get(&w.serial_number) {
                None => LicenceOutcome::Done,
                Some(e)
                    if w.state == "disassociating"
                        && e.error_number == error_numbers::LICENSE_NOT_ASSOCIATED =>
                {
                    LicenceOutcome::Done
                }
                Some(e)
                    if w.state == "associating"
                        && e.error_number == error_numbers::LICENSE_NOT_FOUND =>
                {
                    LicenceOutcome::Shortage {
                        reason: format!("no licence left in the location ({})", error_text(e)),
                    }
                }
                Some(e) => LicenceOutcome::Failed {
                    reason: format!("apple refused the serial ({})", error_text(e)),
                },
            };
            (w, outcome)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchard_store::AssignmentTarget;
    use orchard_types::{AssignmentId, Udid};

    fn device(tenant: TenantId) -> ReconcileDevice {
        ReconcileDevice {
            id: DeviceId::new(),
            tenant_id: tenant,
            udid: Udid::parse("00008030-000A1C2E0C38802E").expect("udid"),
            enrolled: true,
            os_version: Some("18.1".into()),
        }
    }

    fn assignment(tenant: TenantId, adam: &str, group: GroupId) -> AssignmentRecord {
        AssignmentRecord {
            id: AssignmentId::new(),
            tenant_id: tenant,
            object_kind: "app".into(),
            object_id: adam.into(),
            version_policy: "latest".into(),
            all_devices: false,
            delivery: "command".into(),
            targets: vec![AssignmentTarget {
                kind: "group".into(),
                id: group.to_string(),
                exclude: false,
            }],
            created_at: UnixTime(0),
            created_by: None,
            updated_at: UnixTime(0),
        }
    }

    fn row(d: &ReconcileDevice, adam: &str, state: &str) -> DeviceAppLicence {
        DeviceAppLicence {
            device_id: d.id,
            adam_id: adam.into(),
            tenant_id: d.tenant_id,
            pricing_param: "STDQ".into(),
            serial_number: "F9FXK0ABCD12".into(),
            state: state.into(),
            event_id: None,
            reason: None,
            bundle_id: Some("com.example.app".into()),
            pending_command: None,
            pending_live: false,
            updated_at: UnixTime(0),
        }
    }

    #[test]
    fn plans_licence_then_install_then_removal_when_out_of_scope() {
        let tenant = TenantId::new();
        let d = device(tenant);
        let group = GroupId::new();
        let a = assignment(tenant, "361309726", group);
        let options = checked_app_options(None, a.id).expect("defaults");
        let assignable: HashMap<_, _> =
            [((tenant, "361309726".to_owned()), "STDQ".to_owned())].into();
        let member: HashSet<GroupId> = [group].into();
        let serial = Some("F9FXK0ABCD12");
        let plan = |known: &[&DeviceAppLicence], groups: &HashSet<GroupId>| {
            plan_device_apps(&d, serial, &[(&a, &options)], &assignable, groups, known)
        };
        assert_eq!(
            plan(&[], &member),
            [AppPlan::Associate {
                adam_id: "361309726".into(),
                pricing: "STDQ".into()
            }]
        );
        // No serial yet: nothing to associate.
        assert!(
            plan_device_apps(&d, None, &[(&a, &options)], &assignable, &member, &[]).is_empty()
        );
        let associated = row(&d, "361309726", "associated");
        assert_eq!(
            plan(&[&associated], &member),
            [AppPlan::Install {
                adam_id: "361309726".into()
            }]
        );
        for waiting in ["associating", "shortage", "failed", "installed"] {
            assert!(plan(&[&row(&d, "361309726", waiting)], &member).is_empty());
        }
        let mut pending = associated.clone();
        pending.pending_live = true;
        assert!(plan(&[&pending], &member).is_empty());
        // Out of scope: installed → removed; never installed → licence freed.
        let installed = row(&d, "361309726", "installed");
        assert_eq!(
            plan(&[&installed], &HashSet::new()),
            [AppPlan::Remove {
                adam_id: "361309726".into(),
                bundle_id: "com.example.app".into()
            }]
        );
        assert_eq!(
            plan(&[&associated], &HashSet::new()),
            [AppPlan::Release {
                adam_id: "361309726".into()
            }]
        );
        // Another tenant's licence on a device that moved: freed, and no new one until it is gone.
        let mut old = associated.clone();
        old.tenant_id = TenantId::new();
        assert_eq!(
            plan(&[&old], &member),
            [AppPlan::Release {
                adam_id: "361309726".into()
            }]
        );
    }

    #[test]
    fn configuration_must_be_a_bounded_plist_dictionary() {
        let id = AssignmentId::new();
        let input = |c: &str| AppAssignmentInput {
            configuration: Some(c.into()),
            ..AppAssignmentInput::default()
        };
        assert!(checked_app_options(
            Some(&input(
                "<plist><dict><key>server</key><string>x</string></dict></plist>"
            )),
            id
        )
        .is_ok());
        for bad in ["not a plist", "<plist><array/></plist>"] {
            let errors = checked_app_options(Some(&input(bad)), id).expect_err(bad);
            assert_eq!(errors[0].path, "app.configuration");
        }
        let deep = format!(
            "<plist><dict><key>a</key>{}{}</dict></plist>",
            "<array>".repeat(5_000),
            "</array>".repeat(5_000)
        );
        assert!(checked_app_options(Some(&input(&deep)), id).is_err());
        let behaviour = AppAssignmentInput {
            install_behaviour: Some("sometimes".into()),
            ..AppAssignmentInput::default()
        };
        assert_eq!(
            checked_app_options(Some(&behaviour), id).expect_err("behaviour")[0].path,
            "app.install_behaviour"
        );
    }
}
