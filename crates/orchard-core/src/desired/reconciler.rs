//! The reconciler: for each device in the work set (`reconcile_dirty`, marked in the unit of work of whatever
//! changed — an assignment, a membership, a profile version, a report), the difference between what its
//! assignments want (the latest version of every assigned profile whose targets include it and whose
//! exclusions do not) and what Orchard knows it has (`device_profiles`: reported, acknowledged, pending)
//! becomes the fewest InstallProfile and RemoveProfile commands.
//!
//! Rules: nothing is queued for a (device, profile) while a command for it is pending — the store's guarded
//! update lets exactly one pass queue it, on any number of nodes; a failed command is retried after a backoff
//! (`--reconcile-retry-seconds` doubled per failure) and its error stays visible; a profile missing from a
//! ProfileList (removed by hand) is installed again; a new version replaces the old (same
//! PayloadIdentifier); only profiles the reconciler installed are ever removed (never the enrollment
//! profile, hand installs or profiles Orchard does not know); archived profiles are left as they are.
//!
//! How other kinds plug in: assignments are (object kind, object id) with targets and exclusions; the
//! targeting here (`targets_device`) is kind-free, and a kind adds its own "known" table and plan step (apps:
//! InstallApplication against ManagedApplicationList; OS policies: declarations) reading the same work set.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use orchard_protocol::commands::Command;
use orchard_store::{
    AssignmentRecord, KnownDeviceProfile, PlannedProfileCommand, ReconcileDevice, ReconcileProfile,
};
use orchard_types::{
    ChannelId, DeviceId, GroupId, ProfileId, QueuedBy, RequestType, TenantId, UnixTime,
};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::access::capability::SystemCtx;
use crate::commands::secrets::CommandTarget;
use crate::jobs::{Job, Step};
use crate::{CoreError, Orchard};

/// How the reconciler runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcilerSettings {
    /// A failed install or removal is tried again this many seconds later, doubled per failure (at most
    /// 1024 times this).
    pub retry_base_seconds: i64,
    /// The periodic pass (due retries, anything a wake-up missed).
    pub interval: Duration,
    /// Devices per unit of work.
    pub batch: i64,
}

impl Default for ReconcilerSettings {
    fn default() -> Self {
        Self {
            retry_base_seconds: 60,
            interval: Duration::from_secs(30),
            batch: 2_000,
        }
    }
}

/// The reconciler's settings and its wake-up signal.
#[derive(Debug, Default)]
pub struct ReconcilerState {
    pub(crate) settings: ReconcilerSettings,
    pub(crate) wake: Arc<Notify>,
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileStats {
    /// Devices taken off the work set.
    pub devices: usize,
    /// Commands planned.
    pub planned: usize,
    /// Commands queued (planned minus those another pass queued first).
    pub queued: usize,
    /// Devices whose failed command's retry came due.
    pub due_retries: usize,
    /// Devices whose declaration set changed (profiles delivered as declarations).
    pub declared: usize,
    /// Apps and Books licences newly wanted (the licence pass associates them).
    pub licences_wanted: usize,
}

/// Whether an assignment's targets include the device and its exclusions do not.
pub(crate) fn targets_device(
    a: &AssignmentRecord,
    device: DeviceId,
    groups: &HashSet<GroupId>,
) -> bool {
    let device_text = device.to_string();
    let names = |exclude: bool| {
        a.targets
            .iter()
            .filter(move |t| t.exclude == exclude)
            .any(|t| match t.kind.as_str() {
                "device" => t.id == device_text,
                "group" => GroupId::parse(&t.id).is_ok_and(|g| groups.contains(&g)),
                _ => false,
            })
    };
    (a.all_devices || names(false)) && !names(true)
}

/// An install or removal decided for one device.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Plan {
    Install { profile: ProfileId, version: i64 },
    Remove { profile: ProfileId },
}

/// What the reconciler's plans read of a device's reported facts, as stored after its DeviceInformation
/// answer: its tenant, its OS version (profiles as declarations from iOS 15, in [`plan_device`]), its serial
/// number (app licences are associated by serial) and whether it is a Shared iPad (the Shared iPad settings
/// step). Its groups are the plans' other input from a report, and the re-evaluation sees those change. So a
/// report whose digest equals the stored one, and that moves the device in no group, leaves every plan as it
/// was and need not mark the device. A plan that starts reading another reported fact adds it here; the
/// version prefix makes that a mark for every device's next changed report, never a missed one.
pub(crate) fn plan_inputs_digest(
    tenant: TenantId,
    os_version: Option<&str>,
    serial_number: Option<&str>,
    shared_ipad: bool,
) -> String {
    let mut hash = Sha256::new();
    for part in [
        tenant.to_string().as_str(),
        os_version.unwrap_or("\0"),
        serial_number.unwrap_or("\0"),
        if shared_ipad { "shared" } else { "single" },
    ] {
        hash.update(part.as_bytes());
        hash.update(b"\n");
    }
    format!("v1:{}", hex::encode(hash.finalize()))
}

/// The first iOS that installs profiles from `configuration.legacy` declarations.
pub const DECLARED_PROFILES_MIN_MAJOR: u32 = 15;

/// Whether a device on `os_version` takes profiles as declarations (unknown: assume current iOS).
pub fn takes_declared_profiles(os_version: Option<&str>) -> bool {
    os_version
        .and_then(crate::declarative::set::major_of)
        .is_none_or(|major| major >= DECLARED_PROFILES_MIN_MAJOR)
}

/// What one device needs: commands to queue, dead pending commands to forget, and changes to the profiles
/// its declaration set names (`None`: no longer declared).
#[derive(Debug, Default, PartialEq, Eq)]
struct DevicePlan {
    commands: Vec<Plan>,
    dead: Vec<(ProfileId, String)>,
    declared: Vec<(ProfileId, Option<i64>)>,
}

/// The plan for one device: pure, so the rules are tested without a database. A profile whose assignment
/// delivers it as a declaration, on a device whose iOS takes those, is named in the declaration set and never
/// installed or removed by command (the device removes it when its declaration goes).
fn plan_device(
    device: &ReconcileDevice,
    assignments: &[AssignmentRecord],
    groups: &HashSet<GroupId>,
    known: &[&KnownDeviceProfile],
    profiles: &HashMap<ProfileId, ReconcileProfile>,
    now: UnixTime,
) -> DevicePlan {
    let declarations = takes_declared_profiles(device.os_version.as_deref());
    let mut desired: BTreeMap<ProfileId, i64> = BTreeMap::new();
    let mut declared: BTreeMap<ProfileId, i64> = BTreeMap::new();
    for a in assignments
        .iter()
        .filter(|a| a.tenant_id == device.tenant_id && a.object_kind == "profile")
    {
        let Some(profile) = ProfileId::parse(&a.object_id)
            .ok()
            .and_then(|id| profiles.get(&id))
        else {
            continue;
        };
        let visible = profile.tenant_id.is_none_or(|t| t == device.tenant_id);
        if visible && !profile.archived && targets_device(a, device.id, groups) {
            if declarations && a.delivery == "declaration" {
                declared.insert(profile.id, profile.latest_version);
            } else {
                desired.insert(profile.id, profile.latest_version);
            }
        }
    }
    let mut declared_changes: Vec<(ProfileId, Option<i64>)> = known
        .iter()
        .filter(|k| k.declared_version.is_some() && !declared.contains_key(&k.profile_id))
        .map(|k| (k.profile_id, None))
        .collect();
    for (&profile, &version) in &declared {
        let now_declared = known
            .iter()
            .find(|k| k.profile_id == profile)
            .and_then(|k| k.declared_version);
        if now_declared != Some(version) {
            declared_changes.push((profile, Some(version)));
        }
    }
    let by_profile: HashMap<ProfileId, &KnownDeviceProfile> =
        known.iter().map(|k| (k.profile_id, *k)).collect();
    let mut dead = Vec::new();
    // Whether a row blocks a new command now: a live pending command, or a retry not yet due.
    let mut blocked = |k: &KnownDeviceProfile| {
        if let Some(command) = &k.pending_command {
            if k.pending_live {
                return true;
            }
            dead.push((k.profile_id, command.clone()));
        }
        k.next_attempt_at.is_some_and(|t| t > now)
    };
    let mut plans = Vec::new();
    for (&profile, &version) in &desired {
        match by_profile.get(&profile) {
            // A version installed through a declaration that is going away does not count as installed.
            Some(k)
                if blocked(k)
                    || (k.installed_version == Some(version) && k.declared_version.is_none()) => {}
            _ => plans.push(Plan::Install { profile, version }),
        }
    }
    for k in known {
        if desired.contains_key(&k.profile_id)
            || declared.contains_key(&k.profile_id)
            || k.declared_version.is_some()
            || !k.reconciled
            || k.installed_version.is_none()
        {
            continue;
        }
        if profiles.get(&k.profile_id).is_none_or(|p| p.archived) {
            continue;
        }
        if !blocked(k) {
            plans.push(Plan::Remove {
                profile: k.profile_id,
            });
        }
    }
    DevicePlan {
        commands: plans,
        dead,
        declared: declared_changes,
    }
}

impl Orchard {
    /// The reconciler's settings (default: [`ReconcilerSettings::default`]).
    pub fn with_reconciler_settings(mut self, settings: ReconcilerSettings) -> Self {
        self.reconciler.settings = settings;
        self
    }

    pub fn reconciler_settings(&self) -> &ReconcilerSettings {
        &self.reconciler.settings
    }

    /// Tells this node's reconciler there is work (after a unit marked devices).
    pub(crate) fn wake_reconciler(&self) {
        self.reconciler.wake.notify_one();
    }

    /// One pass (from [`ReconcilerJob`]; tests call it directly): due retries join the work set, then one
    /// batch of dirty devices is claimed, planned and queued in one unit of work. Safe on several nodes at
    /// once (claims skip each other's rows; queueing is guarded per device and profile).
    pub async fn reconcile_once(&self, _system: &SystemCtx) -> Result<ReconcileStats, CoreError> {
        let now = self.clock.now();
        let mut stats = ReconcileStats {
            due_retries: self.store.mark_due_profile_retries(now).await?,
            ..ReconcileStats::default()
        };
        let mut unit = self.store.begin_unit().await?;
        let claimed = unit
            .claim_dirty_devices(self.reconciler.settings.batch)
            .await?;
        stats.devices = claimed.len();
        if claimed.is_empty() {
            unit.rollback().await?;
            return Ok(stats);
        }
        self.reconcile_claimed(&mut unit, &claimed, now, &mut stats)
            .await?;
        self.commit_unit(unit).await?;
        if stats.queued > 0 {
            tracing::info!(
                devices = stats.devices,
                queued = stats.queued,
                "reconciler queued profile commands"
            );
        }
        Ok(stats)
    }

    /// A device in the work set that connects plans its own commands before it asks for one, so it never
    /// waits for the reconciler's passes to reach it: an assignment to 50,000 iPads has queued for each
    /// of them once its unit has marked them. The pass that later reaches a device finds it planned
    /// (nothing is queued twice: the same guard). Nothing happens when a pass holds the device's mark.
    pub(crate) async fn reconcile_arriving_device(
        &self,
        device: DeviceId,
        now: UnixTime,
    ) -> Result<(), CoreError> {
        let mut unit = self.store.begin_unit().await?;
        let Some(claimed) = unit.claim_dirty_device(device).await? else {
            unit.rollback().await?;
            return Ok(());
        };
        let mut stats = ReconcileStats {
            devices: 1,
            ..ReconcileStats::default()
        };
        self.reconcile_claimed(&mut unit, std::slice::from_ref(&claimed), now, &mut stats)
            .await?;
        self.commit_unit(unit).await?;
        tracing::debug!(device = %device, queued = stats.queued, "device planned on arrival");
        Ok(())
    }

    /// `Orchard::reconcile_arriving_device` for the server's own callers (benchmarks time it per device).
    pub async fn reconcile_device_now(
        &self,
        _system: &SystemCtx,
        device: DeviceId,
    ) -> Result<(), CoreError> {
        self.reconcile_arriving_device(device, self.clock.now())
            .await
    }

    /// Plans and queues, in the caller's unit, what the claimed devices need.
    async fn reconcile_claimed(
        &self,
        unit: &mut orchard_store::UnitOfWork,
        claimed: &[ReconcileDevice],
        now: UnixTime,
        stats: &mut ReconcileStats,
    ) -> Result<(), CoreError> {
        let devices: Vec<&ReconcileDevice> = claimed.iter().filter(|d| d.enrolled).collect();
        let ids: Vec<DeviceId> = devices.iter().map(|d| d.id).collect();
        let mut tenants: Vec<_> = devices.iter().map(|d| d.tenant_id).collect();
        tenants.sort();
        tenants.dedup();
        let assignments = unit.assignments_of_tenants(&tenants, "profile").await?;
        let mut groups: HashMap<DeviceId, HashSet<GroupId>> = HashMap::new();
        for (d, g) in unit.memberships_of(&ids).await? {
            groups.entry(d).or_default().insert(g);
        }
        let known = unit.known_profiles_of(&ids).await?;
        let mut known_by_device: HashMap<DeviceId, Vec<&KnownDeviceProfile>> = HashMap::new();
        for k in &known {
            known_by_device.entry(k.device_id).or_default().push(k);
        }
        let mut profile_ids: Vec<ProfileId> = assignments
            .iter()
            .filter_map(|a| ProfileId::parse(&a.object_id).ok())
            .chain(known.iter().map(|k| k.profile_id))
            .collect();
        profile_ids.sort();
        profile_ids.dedup();
        let profiles: HashMap<ProfileId, ReconcileProfile> = unit
            .reconcile_profiles(&profile_ids)
            .await?
            .into_iter()
            .map(|p| (p.id, p))
            .collect();

        let no_groups = HashSet::new();
        // One shared body per profile version: every device's InstallProfile names it (see command_bodies).
        let mut bodies: HashMap<(ProfileId, i64), String> = HashMap::new();
        let mut planned = Vec::new();
        for device in &devices {
            let DevicePlan {
                commands: plans,
                dead,
                declared,
            } = plan_device(
                device,
                &assignments,
                groups.get(&device.id).unwrap_or(&no_groups),
                known_by_device
                    .get(&device.id)
                    .map(Vec::as_slice)
                    .unwrap_or_default(),
                &profiles,
                now,
            );
            for (profile, command) in dead {
                unit.clear_dead_pending(device.id, profile, &command, now)
                    .await?;
            }
            if !declared.is_empty() {
                let changes: Vec<_> = declared
                    .into_iter()
                    .map(|(profile, version)| (device.id, profile, version))
                    .collect();
                unit.set_declared_profiles(&changes, now).await?;
                self.declared_profiles_changed(unit, device.id, now).await?;
                stats.declared += 1;
            }
            let channel = ChannelId::device(&device.udid);
            for plan in plans {
                let target = CommandTarget {
                    device_id: device.id,
                    tenant_id: device.tenant_id,
                    channel: &channel,
                };
                let (new, profile, action, version) = match plan {
                    Plan::Install { profile, version } => {
                        let body_id = match bodies.get(&(profile, version)) {
                            Some(id) => id.clone(),
                            None => {
                                let source = format!("profile:{profile}:{version}");
                                // Signed once per version: a device planning alone (on arrival) finds
                                // the body an earlier plan stored.
                                let id = match unit.use_command_body(&source, now).await? {
                                    Some(id) => id,
                                    None => {
                                        let Some(v) =
                                            unit.profile_version(profile, version).await?
                                        else {
                                            continue;
                                        };
                                        let command = Command::InstallProfile {
                                            payload: self.installable_profile(&v)?,
                                        };
                                        self.store_command_body(unit, &source, &command, now)
                                            .await?
                                    }
                                };
                                bodies.insert((profile, version), id.clone());
                                id
                            }
                        };
                        (
                            self.new_command_from_body(
                                RequestType::InstallProfile,
                                body_id,
                                target,
                                QueuedBy::Reconciler,
                                now,
                            ),
                            profile,
                            "install",
                            Some(version),
                        )
                    }
                    Plan::Remove { profile } => {
                        let Some(p) = profiles.get(&profile) else {
                            continue;
                        };
                        let command = Command::RemoveProfile {
                            identifier: p.identifier.clone(),
                        };
                        (
                            self.new_command(&command, target, QueuedBy::Reconciler, now)?,
                            profile,
                            "remove",
                            None,
                        )
                    }
                };
                planned.push(PlannedProfileCommand {
                    command: new,
                    profile_id: profile,
                    action,
                    version,
                });
            }
        }
        stats.planned = planned.len();
        stats.queued = unit.queue_planned_profile_commands(&planned, now).await?;
        // Apps: licences wanted and app commands, in the same unit (Apple is called by the licence pass).
        let (licences_wanted, app_commands) =
            self.reconcile_apps(unit, claimed, &groups, now).await?;
        stats.licences_wanted = licences_wanted;
        stats.queued += app_commands;
        let settings_queued = self
            .reconcile_shared_ipads(unit, &devices, &tenants, &groups, now)
            .await?;
        stats.planned += settings_queued;
        stats.queued += settings_queued;
        Ok(())
    }

    /// How many devices wait for the reconciler (a gauge; no tenant's data).
    pub async fn reconcile_backlog(&self, _system: &SystemCtx) -> Result<i64, CoreError> {
        Ok(self.store.reconcile_backlog().await?)
    }
}

/// The reconciler as a job: every node runs it (claims skip each other, queueing is guarded), woken when a
/// unit marked devices and otherwise every `interval` for due retries.
pub struct ReconcilerJob {
    orchard: Arc<Orchard>,
    system: SystemCtx,
}

impl ReconcilerJob {
    pub fn new(orchard: Arc<Orchard>, system: SystemCtx) -> Self {
        Self { orchard, system }
    }
}

impl Job for ReconcilerJob {
    fn name(&self) -> &str {
        "reconciler"
    }

    fn interval(&self) -> Duration {
        self.orchard.reconciler.settings.interval
    }

    fn wake_signal(&self) -> Option<Arc<Notify>> {
        Some(self.orchard.reconciler.wake.clone())
    }

    async fn run_once(&self) -> Result<Step, CoreError> {
        let stats = self.orchard.reconcile_once(&self.system).await?;
        // Licences the pass wanted (or that wait for a retry) go to Apple now; a failure stays on the rows.
        let licences = match self.orchard.app_licences_once(&self.system).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "licence pass failed");
                crate::apps::installs::LicencePassStats::default()
            }
        };
        let batch = usize::try_from(self.orchard.reconciler.settings.batch).unwrap_or(usize::MAX);
        Ok(if stats.devices >= batch || licences.done > 0 {
            Step::More(Duration::ZERO)
        } else {
            Step::Idle
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchard_store::AssignmentTarget;
    use orchard_types::Udid;

    #[test]
    fn every_plan_input_moves_the_digest() {
        let tenant = TenantId::new();
        let base = plan_inputs_digest(tenant, Some("18.1"), Some("F9FX00000001"), false);
        assert!(base.starts_with("v1:"));
        assert_eq!(
            plan_inputs_digest(tenant, Some("18.1"), Some("F9FX00000001"), false),
            base
        );
        for other in [
            plan_inputs_digest(TenantId::new(), Some("18.1"), Some("F9FX00000001"), false),
            plan_inputs_digest(tenant, Some("18.1.1"), Some("F9FX00000001"), false),
            plan_inputs_digest(tenant, None, Some("F9FX00000001"), false),
            plan_inputs_digest(tenant, Some("18.1"), Some("F9FX00000002"), false),
            plan_inputs_digest(tenant, Some("18.1"), None, false),
            plan_inputs_digest(tenant, Some("18.1"), Some("F9FX00000001"), true),
            // Parts are separated: moving a character from one to the next is another digest.
            plan_inputs_digest(tenant, Some("18.1F"), Some("9FX00000001"), false),
        ] {
            assert_ne!(other, base);
        }
    }

    fn device(tenant: TenantId) -> ReconcileDevice {
        ReconcileDevice {
            id: DeviceId::new(),
            tenant_id: tenant,
            udid: Udid::parse("00008030-000A1C2E0C38802E").expect("udid"),
            enrolled: true,
            os_version: Some("18.1".into()),
        }
    }

    fn assignment(
        tenant: TenantId,
        profile: ProfileId,
        targets: Vec<AssignmentTarget>,
    ) -> AssignmentRecord {
        AssignmentRecord {
            id: orchard_types::AssignmentId::new(),
            tenant_id: tenant,
            object_kind: "profile".into(),
            object_id: profile.to_string(),
            version_policy: "latest".into(),
            all_devices: false,
            delivery: "command".into(),
            targets,
            created_at: UnixTime(0),
            created_by: None,
            updated_at: UnixTime(0),
        }
    }

    fn known(device: DeviceId, profile: ProfileId) -> KnownDeviceProfile {
        KnownDeviceProfile {
            device_id: device,
            profile_id: profile,
            installed_version: None,
            installed_payload_uuid: None,
            pending_action: None,
            pending_command: None,
            pending_live: false,
            next_attempt_at: None,
            reconciled: false,
            declared_version: None,
        }
    }

    #[test]
    fn plans_the_difference_once_and_respects_pending_backoff_and_ownership() {
        let tenant = TenantId::new();
        let d = device(tenant);
        let group = GroupId::new();
        let profile = ProfileId::new();
        let mut profiles = HashMap::new();
        profiles.insert(
            profile,
            ReconcileProfile {
                id: profile,
                tenant_id: None,
                identifier: "edu.example.wifi".into(),
                latest_version: 2,
                archived: false,
            },
        );
        let by_group = assignment(
            tenant,
            profile,
            vec![AssignmentTarget {
                kind: "group".into(),
                id: group.to_string(),
                exclude: false,
            }],
        );
        let member: HashSet<GroupId> = [group].into();
        let now = UnixTime(1_000);
        // Wanted, not there: install the latest version.
        let plans = plan_device(
            &d,
            std::slice::from_ref(&by_group),
            &member,
            &[],
            &profiles,
            now,
        )
        .commands;
        assert_eq!(
            plans,
            [Plan::Install {
                profile,
                version: 2
            }]
        );
        // Old version installed: replaced.
        let mut old = known(d.id, profile);
        old.installed_version = Some(1);
        let plans = plan_device(
            &d,
            std::slice::from_ref(&by_group),
            &member,
            &[&old],
            &profiles,
            now,
        )
        .commands;
        assert_eq!(
            plans,
            [Plan::Install {
                profile,
                version: 2
            }]
        );
        // Pending: nothing more.
        old.pending_command = Some("c1".into());
        old.pending_live = true;
        let plans = plan_device(
            &d,
            std::slice::from_ref(&by_group),
            &member,
            &[&old],
            &profiles,
            now,
        )
        .commands;
        assert!(plans.is_empty());
        // A failure waiting for its retry: nothing yet.
        let mut failed = known(d.id, profile);
        failed.next_attempt_at = Some(UnixTime(2_000));
        let plans = plan_device(
            &d,
            std::slice::from_ref(&by_group),
            &member,
            &[&failed],
            &profiles,
            now,
        )
        .commands;
        assert!(plans.is_empty());
        // Excluded: not wanted; installed by the reconciler → removed; by hand → left alone.
        let mut excluded = by_group.clone();
        excluded.targets.push(AssignmentTarget {
            kind: "device".into(),
            id: d.id.to_string(),
            exclude: true,
        });
        let mut ours = known(d.id, profile);
        ours.installed_version = Some(2);
        ours.reconciled = true;
        let plans = plan_device(
            &d,
            std::slice::from_ref(&excluded),
            &member,
            &[&ours],
            &profiles,
            now,
        )
        .commands;
        assert_eq!(plans, [Plan::Remove { profile }]);
        ours.reconciled = false;
        let plans = plan_device(&d, &[excluded], &member, &[&ours], &profiles, now).commands;
        assert!(plans.is_empty());
        // Another tenant's assignment never reaches the device.
        let plans = plan_device(
            &d,
            &[assignment(
                TenantId::new(),
                profile,
                by_group.targets.clone(),
            )],
            &member,
            &[],
            &profiles,
            now,
        )
        .commands;
        assert!(plans.is_empty());
    }

    #[test]
    fn declared_profiles_travel_in_the_set_not_as_commands() {
        let tenant = TenantId::new();
        let mut d = device(tenant);
        let profile = ProfileId::new();
        let mut profiles = HashMap::new();
        profiles.insert(
            profile,
            ReconcileProfile {
                id: profile,
                tenant_id: Some(tenant),
                identifier: "edu.example.wifi".into(),
                latest_version: 3,
                archived: false,
            },
        );
        let mut declared = assignment(tenant, profile, Vec::new());
        declared.all_devices = true;
        declared.delivery = "declaration".into();
        let none = HashSet::new();
        let now = UnixTime(1_000);
        // Not yet declared: named in the set, no command.
        let plan = plan_device(
            &d,
            std::slice::from_ref(&declared),
            &none,
            &[],
            &profiles,
            now,
        );
        assert!(plan.commands.is_empty());
        assert_eq!(plan.declared, [(profile, Some(3))]);
        // Declared at this version: nothing to do; at an older one: the new version is named.
        let mut row = known(d.id, profile);
        row.declared_version = Some(3);
        row.installed_version = Some(3);
        let plan = plan_device(
            &d,
            std::slice::from_ref(&declared),
            &none,
            &[&row],
            &profiles,
            now,
        );
        assert_eq!(plan, DevicePlan::default());
        row.declared_version = Some(2);
        let plan = plan_device(
            &d,
            std::slice::from_ref(&declared),
            &none,
            &[&row],
            &profiles,
            now,
        );
        assert_eq!(plan.declared, [(profile, Some(3))]);
        assert!(plan.commands.is_empty());
        // Unassigned: the declaration goes (the device removes the profile), no RemoveProfile.
        row.declared_version = Some(3);
        row.reconciled = true;
        let plan = plan_device(&d, &[], &none, &[&row], &profiles, now);
        assert_eq!(plan.declared, [(profile, None)]);
        assert!(plan.commands.is_empty());
        // Switched back to commands: undeclared, and installed by command (the declared install does not count).
        declared.delivery = "command".into();
        let plan = plan_device(
            &d,
            std::slice::from_ref(&declared),
            &none,
            &[&row],
            &profiles,
            now,
        );
        assert_eq!(plan.declared, [(profile, None)]);
        assert_eq!(
            plan.commands,
            [Plan::Install {
                profile,
                version: 3
            }]
        );
        // iOS 14 cannot take it as a declaration: InstallProfile instead.
        declared.delivery = "declaration".into();
        d.os_version = Some("14.8".into());
        let plan = plan_device(
            &d,
            std::slice::from_ref(&declared),
            &none,
            &[],
            &profiles,
            now,
        );
        assert!(plan.declared.is_empty());
        assert_eq!(
            plan.commands,
            [Plan::Install {
                profile,
                version: 3
            }]
        );
    }
}
