//! Updates of iPads older than iOS 17 (no enforcement declaration): AvailableOSUpdates asks what Apple offers
//! the device, ScheduleOSUpdate installs the offered product of the target version as soon as possible, and
//! OSUpdateStatus follows it. Each step is queued once (a waiting command blocks the next, by a conditional
//! update in the store) inside the unit of work of the report that led to it.

use orchard_protocol::commands::{Command, OsUpdate};
use orchard_protocol::report::CommandReport;
use orchard_protocol::results::{parse_result, CommandResult};
use orchard_store::{Device, UnitOfWork};
use orchard_types::{
    ChannelId, CommandStatus, CommandUuid, DeviceId, QueuedBy, RequestType, UnixTime,
};

use super::{is_behind, resolve_target, OsTarget};
use crate::access::capability::SystemCtx;
use crate::commands::secrets::CommandTarget;
use crate::declarative::set::takes_enforcement;
use crate::{CoreError, Orchard};

/// How long a failed update waits before it is tried again: a DeviceInformation answer that repeats the
/// device's facts no longer re-evaluates its OS (that was the retry before), so the retry job does it.
pub const RETRY_FAILED_AFTER_SECONDS: i64 = 6 * 3600;

/// Failed updates retried per step of the retry job; a full batch asks for the next step at once.
pub const RETRY_BATCH: i64 = 200;

/// Stages in which an update is under way for its target: a new evaluation leaves it alone.
const IN_PROGRESS: &[&str] = &[
    "checking",
    "scheduling",
    "scheduled",
    "downloading",
    "installing",
];

/// ScheduleOSUpdate / OSUpdateStatus `Status` → our stage.
fn stage_of_status(status: Option<&str>) -> &'static str {
    match status {
        Some("Downloading") => "downloading",
        Some("Installing") => "installing",
        _ => "scheduled",
    }
}

impl Orchard {
    /// Inside a unit: starts the command-driven update of an iPad older than iOS 17 that is behind its target
    /// (AvailableOSUpdates first), unless an update to that target is already under way. Returns whether a
    /// command was queued.
    pub(crate) async fn start_legacy_update(
        &self,
        unit: &mut UnitOfWork,
        device: &Device,
        target: Option<&OsTarget>,
        now: UnixTime,
    ) -> Result<bool, CoreError> {
        let Some(target) = target else {
            return Ok(false);
        };
        if takes_enforcement(device.os_version.as_deref())
            || !is_behind(device.os_version.as_deref(), &target.version)
        {
            return Ok(false);
        }
        if let Some(current) = unit.device_os_update(device.id).await? {
            if current.target_version == target.version
                && IN_PROGRESS.contains(&current.stage.as_str())
            {
                return Ok(false);
            }
        }
        self.queue_update_step(
            unit,
            device,
            &target.version,
            "checking",
            None,
            Command::AvailableOSUpdates,
            now,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn queue_update_step(
        &self,
        unit: &mut UnitOfWork,
        device: &Device,
        target_version: &str,
        stage: &str,
        product_key: Option<&str>,
        command: Command,
        now: UnixTime,
    ) -> Result<bool, CoreError> {
        let channel = ChannelId::device(&device.udid);
        let new = self.new_command(
            &command,
            CommandTarget {
                device_id: device.id,
                tenant_id: device.tenant_id,
                channel: &channel,
            },
            QueuedBy::OsUpdate,
            now,
        )?;
        Ok(unit
            .queue_os_update_step(device.id, target_version, stage, product_key, &new, now)
            .await?)
    }

    /// Inside a report's unit of work: what OS currency and declarative management do with a command's
    /// answer. A DeclarativeManagement answer frees the channel for the next sync; a DeviceInformation
    /// re-evaluates the device (its set may change with its OS, an old iPad may be behind) unless the request
    /// says there is nothing to evaluate (`skip_os_evaluation`: it repeats the OS version and model of the last
    /// one, which was evaluated, or the tenant had no OS policy and the device no declarative channel; a policy,
    /// catalogue or declared-profile change evaluates the devices itself, and a failed update is retried by
    /// [`Orchard::retry_failed_os_updates_once`]); the update commands move the device's update on.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn desired_os_command_reported(
        &self,
        unit: &mut UnitOfWork,
        device: &Device,
        channel: &ChannelId,
        uuid: &CommandUuid,
        request_type: RequestType,
        status: CommandStatus,
        report: &CommandReport,
        skip_os_evaluation: bool,
        now: UnixTime,
    ) -> Result<(), CoreError> {
        let finished = matches!(
            status,
            CommandStatus::Acknowledged | CommandStatus::Error | CommandStatus::CommandFormatError
        );
        if !finished {
            return Ok(());
        }
        if request_type == RequestType::DeclarativeManagement {
            unit.ddm_sync_answered(channel, uuid, now).await?;
            return Ok(());
        }
        if channel.is_user_channel()
            || (request_type == RequestType::DeviceInformation && skip_os_evaluation)
        {
            return Ok(());
        }
        let parsed = if status == CommandStatus::Acknowledged {
            parse_result(request_type.as_str(), report).ok()
        } else {
            None
        };
        if let Some(CommandResult::DeviceInformation(info)) = &parsed {
            let mut updated = device.clone();
            updated.os_version = info.os_version.clone().or(updated.os_version);
            updated.build_version = info.build_version.clone().or(updated.build_version);
            updated.product_name = info.product_name.clone().or(updated.product_name);
            return self.reevaluate_device(unit, &updated, now).await;
        }
        if !matches!(
            request_type,
            RequestType::AvailableOSUpdates
                | RequestType::ScheduleOSUpdate
                | RequestType::OSUpdateStatus
        ) {
            return Ok(());
        }
        let Some(update) = unit.device_os_update(device.id).await? else {
            return Ok(());
        };
        if update.pending_command.as_deref() != Some(uuid.as_str()) {
            // Someone asked by hand: their answer is in the history, our update goes on by itself.
            return Ok(());
        }
        if status != CommandStatus::Acknowledged {
            let why = if report.error_chain.is_empty() {
                status.as_str().to_owned()
            } else {
                serde_json::to_string(&report.error_chain).unwrap_or_default()
            };
            unit.os_update_answered(device.id, uuid, "failed", None, Some(&why), now)
                .await?;
            return Ok(());
        }
        match parsed {
            Some(CommandResult::AvailableOSUpdates(offered)) => {
                let target = update.target_version.clone();
                let product = offered
                    .iter()
                    .find(|u| u.version.as_deref() == Some(target.as_str()))
                    .and_then(|u| u.product_key.clone());
                match product {
                    Some(product_key) => {
                        unit.os_update_answered(device.id, uuid, "scheduling", None, None, now)
                            .await?;
                        self.queue_update_step(
                            unit,
                            device,
                            &target,
                            "scheduling",
                            Some(&product_key),
                            Command::ScheduleOSUpdate {
                                updates: vec![OsUpdate {
                                    product_key: Some(product_key.clone()),
                                    product_version: None,
                                    install_action: "InstallASAP".to_owned(),
                                }],
                            },
                            now,
                        )
                        .await?;
                    }
                    None => {
                        let versions: Vec<String> =
                            offered.iter().filter_map(|u| u.version.clone()).collect();
                        let why = format!(
                            "iOS {target} is not offered to this device (offered: {})",
                            if versions.is_empty() {
                                "none".to_owned()
                            } else {
                                versions.join(", ")
                            }
                        );
                        unit.os_update_answered(device.id, uuid, "failed", None, Some(&why), now)
                            .await?;
                    }
                }
            }
            Some(CommandResult::ScheduleOSUpdate(results)) => {
                let result = results.first();
                let failure = result
                    .and_then(|r| r.error_chain.as_ref())
                    .filter(|chain| !chain.is_empty())
                    .map(|chain| serde_json::to_string(chain).unwrap_or_default());
                match failure {
                    Some(why) => {
                        unit.os_update_answered(device.id, uuid, "failed", None, Some(&why), now)
                            .await?;
                    }
                    None => {
                        let stage = stage_of_status(result.and_then(|r| r.status.as_deref()));
                        unit.os_update_answered(device.id, uuid, stage, None, None, now)
                            .await?;
                        let product = update.product_key.clone();
                        self.queue_update_step(
                            unit,
                            device,
                            &update.target_version,
                            stage,
                            product.as_deref(),
                            Command::OSUpdateStatus,
                            now,
                        )
                        .await?;
                    }
                }
            }
            Some(CommandResult::OSUpdateStatus(items)) => {
                let item = items
                    .iter()
                    .find(|i| i.product_key.is_some() && i.product_key == update.product_key)
                    .or_else(|| items.first());
                let stage = stage_of_status(item.and_then(|i| i.status.as_deref()));
                unit.os_update_answered(device.id, uuid, stage, None, None, now)
                    .await?;
            }
            _ => {
                unit.os_update_answered(
                    device.id,
                    uuid,
                    "failed",
                    None,
                    Some("the answer could not be read"),
                    now,
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Inside a unit: a device's facts changed; with a policy for its tenant, its declaration set and its
    /// command-driven update are brought in line. Without a policy nothing is queued unless the device already
    /// speaks declarative management (its set may still change, e.g. after a policy was removed).
    pub(crate) async fn reevaluate_device(
        &self,
        unit: &mut UnitOfWork,
        device: &Device,
        now: UnixTime,
    ) -> Result<(), CoreError> {
        let policy = unit.os_policy(device.tenant_id).await?;
        let channel = ChannelId::device(&device.udid);
        let Some(policy) = policy else {
            if unit.ddm_channel(&channel).await?.is_some() {
                self.sync_device_declarations(unit, device, None, now)
                    .await?;
            }
            return Ok(());
        };
        let catalogue = match device.product_name.as_deref() {
            Some(model) => unit.os_catalogue_for(model).await?,
            None => Vec::new(),
        };
        let target = resolve_target(&policy, device.product_name.as_deref(), &catalogue);
        self.sync_device_declarations(unit, device, target.as_ref(), now)
            .await?;
        self.start_legacy_update(unit, device, target.as_ref(), now)
            .await?;
        Ok(())
    }

    /// One step of the retry job: the failed updates whose backoff has passed are evaluated again, each device
    /// in its own unit of work, so an iPad still behind its target gets AvailableOSUpdates again. Returns how
    /// many were claimed (a full batch means more may be due).
    pub async fn retry_failed_os_updates_once(
        &self,
        _system: &SystemCtx,
    ) -> Result<usize, CoreError> {
        let now = self.clock.now();
        let due = self
            .store
            .claim_failed_os_updates(
                now.plus_seconds(-RETRY_FAILED_AFTER_SECONDS),
                now,
                RETRY_BATCH,
            )
            .await?;
        for device_id in &due {
            if let Err(e) = self.retry_os_update(*device_id, now).await {
                tracing::error!(device = %device_id, error = %e, "failed os update could not be retried");
            }
        }
        if !due.is_empty() {
            tracing::info!(devices = due.len(), "failed os updates evaluated again");
        }
        Ok(due.len())
    }

    async fn retry_os_update(&self, device_id: DeviceId, now: UnixTime) -> Result<(), CoreError> {
        let mut unit = self.store.begin_unit().await?;
        let Some(device) = unit.device(device_id).await? else {
            unit.rollback().await?;
            return Ok(());
        };
        self.reevaluate_device(&mut unit, &device, now).await?;
        self.commit_unit(unit).await
    }
}
