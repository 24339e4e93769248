//! Commands that are hard to do by accident, and commands to many devices at once.
//!
//! EraseDevice, ClearPasscode, DeleteUser and removing management (RemoveProfile of Orchard's enrollment
//! profile) need the tenant admin role (or operator) and a confirmation equal to the device's serial number.
//! Bulk commands resolve their devices through the caller's scope, answer a dry run with the count first, and
//! a destructive bulk command needs that count as its confirmation. One bulk request is one transaction.

use orchard_protocol::commands::Command;
use orchard_store::{Device, NewCommand, UnitOfWork};
use orchard_types::{ChannelId, DeviceId};
use serde::{Deserialize, Serialize};

use crate::access::principal::Principal;
use crate::access::roles::Ability;
use crate::commands::queue::ability_to_queue;
use crate::commands::secrets::{carries_device_credential, CommandTarget};
use crate::{CoreError, Orchard};

/// The enrollment profile's identifier (removing it removes management).
pub const ENROLLMENT_PROFILE_IDENTIFIER: &str = "edu.orchard.enrollment";
/// Devices one bulk request may address.
pub const MAX_BULK_DEVICES: usize = 50_000;

/// Whether `who`'s role may queue commands in bulk at all; the server asks before it even reads the body, so a
/// viewer's request is refused before its size or content costs anything.
pub fn may_queue_bulk(who: &Principal) -> Result<(), CoreError> {
    if who.has(Ability::Query) {
        Ok(())
    } else {
        Err(CoreError::Forbidden("viewers do not queue commands".into()))
    }
}

/// Whether a command destroys data or control and so needs a confirmation.
pub fn is_dangerous(command: &Command) -> bool {
    match command {
        Command::EraseDevice { .. }
        | Command::ClearPasscode { .. }
        | Command::DeleteUser { .. } => true,
        Command::RemoveProfile { identifier } => identifier == ENROLLMENT_PROFILE_IDENTIFIER,
        _ => false,
    }
}

/// Those who administer the device's tenant may run dangerous commands.
fn may_run_dangerous(who: &Principal, device: &Device) -> bool {
    who.may(Ability::Administer, device.tenant_id)
}

/// Checks the confirmation of a dangerous command for one device.
pub(crate) fn check_confirmation(
    who: &Principal,
    device: &Device,
    command: &Command,
    confirm_serial: Option<&str>,
) -> Result<(), CoreError> {
    if !is_dangerous(command) {
        return Ok(());
    }
    if !may_run_dangerous(who, device) {
        return Err(CoreError::Forbidden(format!(
            "{} needs the tenant admin role",
            command.request_type()
        )));
    }
    let serial = device.serial_number.as_deref().unwrap_or_default();
    match confirm_serial.map(str::trim) {
        Some(given) if !serial.is_empty() && given.eq_ignore_ascii_case(serial) => Ok(()),
        _ => Err(CoreError::ConfirmationRequired(format!(
            "{} cannot be undone: set confirm_serial to the device's serial number",
            command.request_type()
        ))),
    }
}

/// Which devices a bulk command addresses: listed ids, or every enrolled device of the caller's scope
/// (optionally of one tenant).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkTarget {
    #[serde(default)]
    pub device_ids: Option<Vec<DeviceId>>,
    /// Operators: one tenant's devices (tenant roles are limited to their own anyway).
    #[serde(default)]
    pub tenant_id: Option<orchard_types::TenantId>,
    /// The members of one device group (static or smart) the caller sees.
    #[serde(default)]
    pub group_id: Option<orchard_types::GroupId>,
}

/// The outcome of a bulk request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BulkOutcome {
    pub dry_run: bool,
    /// Devices the command applies to.
    pub affected: usize,
    /// Listed ids that are not (visible) enrolled devices: nothing is queued for them.
    pub skipped: usize,
    /// Commands queued (0 for a dry run).
    pub queued: usize,
}

impl Orchard {
    /// Resolves a bulk target through the caller's scope to enrolled devices; returns them and how many
    /// listed ids were skipped.
    async fn bulk_devices(
        &self,
        who: &Principal,
        target: &BulkTarget,
    ) -> Result<(Vec<Device>, usize), CoreError> {
        let scope = match target.tenant_id {
            None => who.scope(),
            Some(t) => match who.scope().narrowed_to(t) {
                Some(narrowed) => narrowed,
                // Another tenant's devices look like none at all.
                None => return Ok((Vec::new(), target.device_ids.as_ref().map_or(0, Vec::len))),
            },
        };
        let group_members = match target.group_id {
            None => None,
            Some(group) => {
                if target.device_ids.is_some() {
                    return Err(CoreError::Invalid(
                        "name device_ids or group_id, not both".into(),
                    ));
                }
                let g = self
                    .store
                    .group_in_scope(scope, group)
                    .await?
                    .ok_or(CoreError::NotFound)?;
                Some(self.store.group_member_ids(g.id).await?)
            }
        };
        match group_members.as_ref().or(target.device_ids.as_ref()) {
            Some(ids) => {
                if ids.len() > MAX_BULK_DEVICES {
                    return Err(CoreError::Invalid(format!(
                        "at most {MAX_BULK_DEVICES} devices per request"
                    )));
                }
                let mut unique = ids.clone();
                unique.sort();
                unique.dedup();
                let mut devices = self.store.enrolled_devices_among(scope, &unique).await?;
                devices.sort_by_key(|d| d.id);
                let skipped = ids.len() - devices.len();
                Ok((devices, skipped))
            }
            None => {
                // One more than allowed tells a scope that is too large.
                let devices = self
                    .store
                    .enrolled_devices(scope, MAX_BULK_DEVICES as i64 + 1)
                    .await?;
                if devices.len() > MAX_BULK_DEVICES {
                    return Err(CoreError::Invalid(format!(
                        "more than {MAX_BULK_DEVICES} devices: narrow the request"
                    )));
                }
                Ok((devices, 0))
            }
        }
    }

    /// Queues one command for many devices in one transaction, or (dry run) only counts them. A destructive
    /// command needs `confirm_count` equal to the number of devices it would reach.
    pub async fn queue_bulk_command(
        &self,
        who: &Principal,
        target: BulkTarget,
        command: Command,
        dry_run: bool,
        confirm_count: Option<usize>,
    ) -> Result<BulkOutcome, CoreError> {
        let prepared = self
            .prepare_bulk(
                who,
                &target,
                std::slice::from_ref(&command),
                dry_run,
                confirm_count,
            )
            .await?;
        if dry_run {
            return Ok(BulkOutcome {
                dry_run: true,
                affected: prepared.devices.len(),
                skipped: prepared.skipped,
                queued: 0,
            });
        }
        let mut unit = self.store.begin_unit().await?;
        let queued = self
            .bulk_commands(
                &mut unit,
                who,
                &prepared.devices,
                std::slice::from_ref(&command),
            )
            .await?;
        unit.enqueue_commands(&queued).await?;
        unit.commit().await?;
        self.wake_dispatcher();
        tracing::info!(count = queued.len(), request_type = command.request_type(), actor = %who.actor(), "bulk command queued");
        Ok(BulkOutcome {
            dry_run: false,
            affected: prepared.devices.len(),
            skipped: prepared.skipped,
            queued: queued.len(),
        })
    }

    /// Everything a bulk request is checked for, in order: the role may queue bulk commands and each of
    /// `commands`; none is sent one device at a time only; the devices resolve through the caller's scope and
    /// the role may queue for each; a destructive command is the tenant admins' and carries the count it was
    /// shown (`confirm_count`, checked unless `dry_run`). The queue rows are made by [`Orchard::bulk_commands`]
    /// in the unit that queues them.
    pub(crate) async fn prepare_bulk(
        &self,
        who: &Principal,
        target: &BulkTarget,
        commands: &[Command],
        dry_run: bool,
        confirm_count: Option<usize>,
    ) -> Result<PreparedBulk, CoreError> {
        // Authorization before any database work: the role must allow queuing this command at all (a
        // viewer's request is refused here, not after resolving thousands of devices).
        may_queue_bulk(who)?;
        for command in commands {
            let needed = ability_to_queue(command);
            if !who.has(needed) {
                return Err(CoreError::Forbidden(format!(
                    "the {} role may not queue {}",
                    who.role().as_str(),
                    command.request_type()
                )));
            }
            if matches!(command, Command::ClearPasscode { .. }) {
                return Err(CoreError::Invalid(
                    "ClearPasscode is sent to one device at a time".into(),
                ));
            }
            if matches!(command, Command::EraseDevice { return_to_service: Some(r), .. } if r.enabled)
            {
                // Each device needs its own enrollment profile and its own Activation Lock check.
                return Err(CoreError::Invalid(
                    "EraseDevice with Return to Service is sent to one device at a time".into(),
                ));
            }
        }
        let (devices, skipped) = self.bulk_devices(who, target).await?;
        for command in commands {
            let needed = ability_to_queue(command);
            for d in &devices {
                who.require(
                    needed,
                    d.tenant_id,
                    &format!(
                        "the {} role may not queue {}",
                        who.role().as_str(),
                        command.request_type()
                    ),
                )?;
            }
        }
        if !who.has(Ability::Query) {
            return Err(CoreError::Forbidden("viewers do not queue commands".into()));
        }
        if !dry_run {
            for command in commands.iter().filter(|c| is_dangerous(c)) {
                if devices.iter().any(|d| !may_run_dangerous(who, d)) {
                    return Err(CoreError::Forbidden(format!(
                        "{} needs the tenant admin role",
                        command.request_type()
                    )));
                }
                if confirm_count != Some(devices.len()) {
                    return Err(CoreError::ConfirmationRequired(format!(
                        "{} cannot be undone: run a dry run and set confirm_count to the number of devices ({})",
                        command.request_type(),
                        devices.len()
                    )));
                }
            }
        }
        Ok(PreparedBulk { devices, skipped })
    }

    /// The queue rows of a checked bulk request, one per device and command, their bodies stored within `unit`.
    /// Each command's dictionary is stored once (`command_bodies`) and every device's row names it: the same
    /// plist copied for 50,000 iPads held tens of megabytes in memory while queuing and on disk after.
    pub(crate) async fn bulk_commands(
        &self,
        unit: &mut UnitOfWork,
        who: &Principal,
        devices: &[Device],
        commands: &[Command],
    ) -> Result<Vec<NewCommand>, CoreError> {
        let now = self.clock.now();
        let queued_by = who.queued_by();
        let mut bodies = Vec::with_capacity(commands.len());
        for command in commands {
            // A command that carries a device's credential is sealed to its own row and sent once; prepare_bulk
            // refuses the only such command (ClearPasscode), so this is a guard, not a path.
            let body = if carries_device_credential(command.kind()) {
                None
            } else {
                // A new source: no body can be stored for it yet.
                let source = format!("bulk:{}", uuid::Uuid::new_v4());
                Some(self.store_command_body(unit, &source, command, now).await?)
            };
            bodies.push(body);
        }
        let mut new = Vec::with_capacity(devices.len() * commands.len());
        for d in devices {
            let channel = ChannelId::device(&d.udid);
            for (command, body) in commands.iter().zip(&bodies) {
                let target = CommandTarget {
                    device_id: d.id,
                    tenant_id: d.tenant_id,
                    channel: &channel,
                };
                new.push(match body {
                    Some(body_id) => self.new_command_from_body(
                        command.kind(),
                        body_id.clone(),
                        target,
                        queued_by.clone(),
                        now,
                    ),
                    None => self.new_command(command, target, queued_by.clone(), now)?,
                });
            }
        }
        Ok(new)
    }
}

/// A bulk request checked and resolved: the devices it reaches, and how many of those asked for it skips.
pub(crate) struct PreparedBulk {
    pub(crate) devices: Vec<Device>,
    pub(crate) skipped: usize,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn dangerous_commands_are_erase_clear_passcode_delete_user_and_removing_management() {
        assert!(is_dangerous(&Command::ClearPasscode { unlock_token: None }));
        assert!(is_dangerous(&Command::DeleteUser {
            user_name: Some("s1".into()),
            force_deletion: None,
            delete_all_users: None
        }));
        assert!(is_dangerous(&Command::RemoveProfile {
            identifier: ENROLLMENT_PROFILE_IDENTIFIER.into()
        }));
        assert!(!is_dangerous(&Command::RemoveProfile {
            identifier: "edu.example.wifi".into()
        }));
        assert!(!is_dangerous(&Command::DeviceConfigured));
    }
}
