//! Shared iPad users: who is resident on a Shared iPad (from its latest `UserList`, with the user channels
//! Orchard holds), and the day-to-day actions on them — refresh the list, log out the current user, delete a
//! user, delete all users. Each action queues its command and a `UserList` behind it, so the list (and the user
//! channels, which end when their user is gone from it) follow what the device did.
//!
//! Deleting a user with data that is not synced yet loses that data: Orchard refuses it (409) unless the caller
//! chooses `force_deletion` and confirms it with the device's serial number, as for other commands that cannot
//! be undone. Deleting all users always needs that confirmation.

use std::collections::BTreeSet;

use orchard_protocol::commands::Command;
use orchard_protocol::report::CommandReport;
use orchard_protocol::results::{parse_result, CommandResult, SharedUser};
use orchard_store::{Device, UnitOfWork};
use orchard_types::{ChannelId, DeviceId, UnixTime};
use serde::Serialize;

use crate::access::principal::Principal;
use crate::access::roles::Ability;
use crate::commands::secrets::CommandTarget;
use crate::{CoreError, Orchard};

/// The inventory section `UserList` results are kept under.
pub const USERS_SECTION: &str = "shared_ipad_users";
/// Longest user name (a Managed Apple Account) the actions accept.
const MAX_USER_NAME: usize = 255;

/// One user resident on a Shared iPad, as its latest `UserList` said, and whether Orchard holds a user channel
/// for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SharedIpadUserView {
    /// `UserName`: the Managed Apple Account.
    pub user_name: String,
    pub full_name: Option<String>,
    pub is_logged_in: bool,
    pub has_data_to_sync: bool,
    /// Bytes (`DataQuota`); null when the device sets no quota.
    pub data_quota: Option<i64>,
    /// Bytes (`DataUsed`).
    pub data_used: Option<i64>,
    /// The user signed in since enrollment and has a user channel (its own queue, push and declarations).
    pub has_user_channel: bool,
}

/// A user channel whose user the latest `UserList` does not name (yet): signed in after the list was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserChannelView {
    pub user_short_name: String,
    pub token_updated_at: Option<String>,
}

/// `GET /devices/{id}/users`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SharedIpadUsers {
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub device_id: DeviceId,
    /// The device said it is a Shared iPad (`IsMultiUser`); user actions are refused otherwise.
    pub shared_ipad: bool,
    /// When the device last answered `UserList` (RFC 3339); null before the first answer.
    pub refreshed_at: Option<String>,
    pub users: Vec<SharedIpadUserView>,
    /// User channels of users the list does not name.
    pub other_user_channels: Vec<UserChannelView>,
}

/// What an action queued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SharedIpadActionQueued {
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub device_id: DeviceId,
    /// The action's command (`UserList`, `LogOutUser`, `DeleteUser`).
    pub request_type: String,
    pub command_uuid: String,
    /// The `UserList` queued behind it (null for a refresh, which is one).
    pub refresh_command_uuid: Option<String>,
}

/// A user deletion as the caller asks for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteUsers {
    /// `None`: every user (`DeleteAllUsers`).
    pub user_name: Option<String>,
    /// Delete even data that is not synced yet.
    pub force_deletion: bool,
    /// The device's serial number: required with `force_deletion` and for deleting all users.
    pub confirm_serial: Option<String>,
}

/// The users of a stored `UserList` inventory section (its JSON as [`CommandResult`] serializes).
fn users_of_section(json: &str) -> Vec<SharedUser> {
    serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| serde_json::from_value(v["data"].clone()).ok())
        .unwrap_or_default()
}

/// A user name the actions accept: not empty, not too long, no control characters.
fn check_user_name(name: &str) -> Result<(), CoreError> {
    if name.trim().is_empty() {
        return Err(CoreError::Invalid("user_name must not be empty".into()));
    }
    if name.chars().count() > MAX_USER_NAME || name.chars().any(char::is_control) {
        return Err(CoreError::Invalid(format!(
            "user_name must be at most {MAX_USER_NAME} characters without control characters"
        )));
    }
    Ok(())
}

impl Orchard {
    /// The device (through the caller's scope), whether it said it is a Shared iPad, and its users section.
    async fn shared_ipad_state(
        &self,
        who: &Principal,
        device_id: DeviceId,
    ) -> Result<(Device, bool, Option<orchard_store::InventorySection>), CoreError> {
        let scope = who.scope();
        let device = self
            .store
            .get_device(scope, device_id)
            .await?
            .ok_or(CoreError::NotFound)?;
        let inventory = self.store.get_inventory(scope, device.id).await?;
        let shared = inventory
            .iter()
            .find(|s| s.section == "device_information")
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s.json).ok())
            .and_then(|v| v["data"]["IsMultiUser"].as_bool())
            .unwrap_or(false);
        let users = inventory.into_iter().find(|s| s.section == USERS_SECTION);
        Ok((device, shared, users))
    }

    /// `GET /devices/{id}/users`: the device's resident users (from its latest `UserList`) and user channels.
    pub async fn shared_ipad_users(
        &self,
        who: &Principal,
        device_id: DeviceId,
    ) -> Result<SharedIpadUsers, CoreError> {
        let (device, shared, section) = self.shared_ipad_state(who, device_id).await?;
        let channels = self.store.list_channels(device.id).await?;
        let mut with_channel: BTreeSet<String> = channels
            .iter()
            .filter_map(|c| c.user_short_name.clone())
            .collect();
        let users: Vec<SharedIpadUserView> = section
            .as_ref()
            .map(|s| users_of_section(&s.json))
            .unwrap_or_default()
            .into_iter()
            .filter_map(|u| {
                let user_name = u.user_name?;
                Some(SharedIpadUserView {
                    has_user_channel: with_channel.remove(&user_name),
                    user_name,
                    full_name: u.full_name,
                    is_logged_in: u.is_logged_in.unwrap_or(false),
                    has_data_to_sync: u.has_data_to_sync.unwrap_or(false),
                    data_quota: u.data_quota,
                    data_used: u.data_used,
                })
            })
            .collect();
        let other_user_channels = channels
            .iter()
            .filter_map(|c| {
                let name = c.user_short_name.as_ref()?;
                with_channel.contains(name).then(|| UserChannelView {
                    user_short_name: name.clone(),
                    token_updated_at: c.token_updated_at.map(UnixTime::to_rfc3339),
                })
            })
            .collect();
        Ok(SharedIpadUsers {
            device_id: device.id,
            shared_ipad: shared,
            refreshed_at: section.map(|s| s.updated_at.to_rfc3339()),
            users,
            other_user_channels,
        })
    }

    /// `POST /devices/{id}/users/refresh`: queues `UserList` (a query: helpdesk may).
    pub async fn refresh_shared_ipad_users(
        &self,
        who: &Principal,
        device_id: DeviceId,
    ) -> Result<SharedIpadActionQueued, CoreError> {
        let (device, shared, _) = self.shared_ipad_state(who, device_id).await?;
        who.require(
            Ability::Query,
            device.tenant_id,
            "viewers do not queue commands",
        )?;
        require_shared(shared)?;
        self.queue_user_action(who, &device, Command::UserList, false)
            .await
    }

    /// `POST /devices/{id}/users/log-out`: logs out the user signed in now (`LogOutUser`).
    pub async fn log_out_shared_ipad_user(
        &self,
        who: &Principal,
        device_id: DeviceId,
    ) -> Result<SharedIpadActionQueued, CoreError> {
        let (device, shared, _) = self.shared_ipad_state(who, device_id).await?;
        who.require(
            Ability::Administer,
            device.tenant_id,
            "only operators and the tenant's admins log users out",
        )?;
        require_shared(shared)?;
        self.queue_user_action(who, &device, Command::LogOutUser, true)
            .await
    }

    /// `POST /devices/{id}/users/{user}/delete` and `/users/delete-all`: queues `DeleteUser`. A user the latest
    /// list shows with unsynced data (or logged in) is refused unless forced (see the module documentation); the
    /// device refuses again if its state changed meanwhile, and that refusal shows in the command history.
    pub async fn delete_shared_ipad_users(
        &self,
        who: &Principal,
        device_id: DeviceId,
        request: DeleteUsers,
    ) -> Result<SharedIpadActionQueued, CoreError> {
        if let Some(name) = &request.user_name {
            check_user_name(name)?;
        }
        let (device, shared, section) = self.shared_ipad_state(who, device_id).await?;
        who.require(
            Ability::Administer,
            device.tenant_id,
            "only operators and the tenant's admins delete users",
        )?;
        require_shared(shared)?;
        let needs_confirmation = request.force_deletion || request.user_name.is_none();
        if needs_confirmation {
            let serial = device.serial_number.as_deref().unwrap_or_default();
            let confirmed = request
                .confirm_serial
                .as_deref()
                .map(str::trim)
                .is_some_and(|given| !serial.is_empty() && given.eq_ignore_ascii_case(serial));
            if !confirmed {
                let what = if request.user_name.is_none() {
                    "deleting all users"
                } else {
                    "force deletion loses data that is not synced yet, and"
                };
                return Err(CoreError::ConfirmationRequired(format!(
                    "{what} cannot be undone: set confirm_serial to the device's serial number"
                )));
            }
        }
        if let Some(name) = &request.user_name {
            let known = section
                .as_ref()
                .map(|s| users_of_section(&s.json))
                .unwrap_or_default()
                .into_iter()
                .find(|u| u.user_name.as_deref() == Some(name.as_str()));
            if let Some(user) = known {
                if user.is_logged_in == Some(true) {
                    return Err(CoreError::Conflict(format!(
                        "the user {name:?} is logged in: log them out first"
                    )));
                }
                if user.has_data_to_sync == Some(true) && !request.force_deletion {
                    return Err(CoreError::Conflict(format!(
                        "the user {name:?} has data that is not synced yet: deleting loses it; to delete \
                         anyway set force_deletion to true and confirm_serial to the device's serial number"
                    )));
                }
            }
        }
        let command = Command::DeleteUser {
            user_name: request.user_name.clone(),
            force_deletion: Some(request.force_deletion),
            delete_all_users: request.user_name.is_none().then_some(true),
        };
        self.queue_user_action(who, &device, command, true).await
    }

    /// Queues `command` on the device channel and, when `then_refresh`, a `UserList` behind it: one unit.
    async fn queue_user_action(
        &self,
        who: &Principal,
        device: &Device,
        command: Command,
        then_refresh: bool,
    ) -> Result<SharedIpadActionQueued, CoreError> {
        let now = self.clock.now();
        let channel = ChannelId::device(&device.udid);
        let target = || CommandTarget {
            device_id: device.id,
            tenant_id: device.tenant_id,
            channel: &channel,
        };
        let action = self.new_command(&command, target(), who.queued_by(), now)?;
        let command_uuid = action.uuid.to_string();
        let mut commands = vec![action];
        let mut refresh_command_uuid = None;
        if then_refresh {
            let refresh = self.new_command(&Command::UserList, target(), who.queued_by(), now)?;
            refresh_command_uuid = Some(refresh.uuid.to_string());
            commands.push(refresh);
        }
        let mut unit = self.store.begin_unit().await?;
        unit.enqueue_commands(&commands).await?;
        self.commit_unit(unit).await?;
        tracing::info!(device = %device.id, request_type = command.request_type(), actor = %who.actor(), "shared ipad user action queued");
        Ok(SharedIpadActionQueued {
            device_id: device.id,
            request_type: command.request_type().to_owned(),
            command_uuid,
            refresh_command_uuid,
        })
    }

    /// Inside a report's unit: an acknowledged `UserList` ends the user channels of users it no longer names
    /// (deleted on the device, by Orchard or by hand). Returns how many ended.
    pub(crate) async fn user_list_reported(
        &self,
        unit: &mut UnitOfWork,
        device: &Device,
        report: &CommandReport,
        now: UnixTime,
    ) -> Result<usize, CoreError> {
        let Ok(CommandResult::UserList(users)) = parse_result("UserList", report) else {
            return Ok(0);
        };
        let resident: BTreeSet<String> = users.into_iter().filter_map(|u| u.user_name).collect();
        let mut ended = 0;
        for channel in unit.list_channels(device.id).await? {
            let Some(name) = channel.user_short_name.as_deref() else {
                continue;
            };
            if !resident.contains(name)
                && unit.end_user_channel(device.id, &channel.id, now).await?
            {
                tracing::info!(udid = %device.udid, user = name, "user gone from the shared ipad: its channel ended");
                ended += 1;
            }
        }
        Ok(ended)
    }
}

fn require_shared(shared: bool) -> Result<(), CoreError> {
    if shared {
        Ok(())
    } else {
        Err(CoreError::Conflict(
            "the device has not reported that it is a Shared iPad (DeviceInformation IsMultiUser)"
                .into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_read_from_the_stored_user_list() {
        let json = r#"{"type":"UserList","data":[{"UserName":"jane@uni.edu","IsLoggedIn":true,"HasDataToSync":false,"DataQuota":1024,"DataUsed":12}]}"#;
        let users = users_of_section(json);
        assert_eq!(users.len(), 1);
        assert_eq!(users[0].user_name.as_deref(), Some("jane@uni.edu"));
        assert_eq!(users[0].is_logged_in, Some(true));
        assert!(users_of_section("not json").is_empty());
    }

    #[test]
    fn user_names_are_checked() {
        assert!(check_user_name("jane@uni.edu").is_ok());
        assert!(check_user_name(" ").is_err());
        assert!(check_user_name("a\nb").is_err());
        assert!(check_user_name(&"x".repeat(256)).is_err());
    }
}
