//! Commands to one device from the admin side: queued through the caller's scope (another tenant's device is
//! "not found"), allowed by the role table (commands that only read or wake need [`Ability::Query`], every
//! other command [`Ability::Administer`]), and the device's command history.

use orchard_protocol::commands::Command;
use orchard_store::{CommandRecord, Page};
use orchard_types::{ChannelId, DeviceId, QueuedBy, UnixTime};
use serde::Serialize;

use crate::access::principal::Principal;
use crate::access::roles::Ability;
use crate::commands::secrets::CommandTarget;
use crate::{CoreError, Orchard};

/// A command in a device's history, with its parsed result when there is one. A result holding a secret (an
/// Activation Lock bypass code) is shown only to callers the role table lets see device secrets; for everyone
/// else `result` is null and `result_redacted` true. Payloads are never shown.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommandView {
    pub command_uuid: String,
    pub request_type: String,
    pub status: &'static str,
    pub channel: String,
    pub queued_by: Option<String>,
    pub queued_at: String,
    pub sent_at: Option<String>,
    pub completed_at: Option<String>,
    pub expires_at: Option<String>,
    pub error_chain: Option<serde_json::Value>,
    pub result: Option<serde_json::Value>,
    /// The result holds a secret this caller may not see, so it is left out.
    pub result_redacted: bool,
}

impl CommandView {
    /// `result` is what the caller may see of the parsed result (see [`Orchard::command_view`]).
    pub(crate) fn new(
        c: &CommandRecord,
        result: Option<serde_json::Value>,
        result_redacted: bool,
    ) -> Self {
        CommandView {
            command_uuid: c.uuid.to_string(),
            request_type: c.request_type.as_str().to_owned(),
            status: c.status.as_str(),
            channel: c.channel.to_string(),
            queued_by: c.queued_by.as_ref().map(QueuedBy::to_stored),
            queued_at: c.queued_at.to_rfc3339(),
            sent_at: c.sent_at.map(UnixTime::to_rfc3339),
            completed_at: c.completed_at.map(UnixTime::to_rfc3339),
            expires_at: c.expires_at.map(UnixTime::to_rfc3339),
            error_chain: c
                .error_chain
                .as_deref()
                .and_then(|e| serde_json::from_str(e).ok()),
            result,
            result_redacted,
        }
    }
}

/// Commands that only read or wake a device, never change it: what [`Ability::Query`] allows.
pub(crate) fn only_reads_or_wakes(command: &Command) -> bool {
    matches!(
        command,
        Command::DeviceInformation { .. }
            | Command::SecurityInfo
            | Command::InstalledApplicationList { .. }
            | Command::ProfileList { .. }
            | Command::CertificateList { .. }
            | Command::ManagedApplicationList { .. }
            | Command::UserList
            | Command::AvailableOSUpdates
            | Command::OSUpdateStatus
    )
}

/// The ability queuing `command` needs.
pub(crate) fn ability_to_queue(command: &Command) -> Ability {
    if only_reads_or_wakes(command) {
        Ability::Query
    } else {
        Ability::Administer
    }
}

impl Orchard {
    /// Queues a command for a device's device channel. Returns the stored command.
    pub async fn queue_command(
        &self,
        who: &Principal,
        device_id: DeviceId,
        command: Command,
    ) -> Result<CommandRecord, CoreError> {
        self.queue_confirmed_command(who, device_id, command, None)
            .await
    }

    /// [`Orchard::queue_command`] with the confirmation dangerous commands need (the device's serial number).
    pub async fn queue_confirmed_command(
        &self,
        who: &Principal,
        device_id: DeviceId,
        command: Command,
        confirm_serial: Option<&str>,
    ) -> Result<CommandRecord, CoreError> {
        let scope = who.scope();
        let device = self
            .store
            .get_device(scope, device_id)
            .await?
            .ok_or(CoreError::NotFound)?;
        who.require(
            ability_to_queue(&command),
            device.tenant_id,
            &format!(
                "the {} role may not queue {}",
                who.role().as_str(),
                command.request_type()
            ),
        )?;
        crate::commands::policy::check_confirmation(who, &device, &command, confirm_serial)?;
        let command = self
            .prepare_return_to_service(scope, &device, command)
            .await?;
        let channel = ChannelId::device(&device.udid);
        // The UnlockToken itself goes in only when the command is sent (commands::secrets); here only its
        // presence is checked, so a ClearPasscode that could not work is refused now.
        if matches!(command, Command::ClearPasscode { .. })
            && self
                .store
                .get_channel(&channel)
                .await?
                .and_then(|c| c.unlock_token)
                .is_none()
        {
            return Err(CoreError::Invalid(
                "the device has not escrowed an UnlockToken".into(),
            ));
        }
        let now = self.clock.now();
        let new = self.new_command(
            &command,
            CommandTarget {
                device_id: device.id,
                tenant_id: device.tenant_id,
                channel: &channel,
            },
            who.queued_by(),
            now,
        )?;
        let uuid = new.uuid.clone();
        self.store
            .enqueue_commands(std::slice::from_ref(&new))
            .await?;
        self.wake_dispatcher();
        tracing::info!(device = %device.id, command = %uuid, request_type = command.request_type(), actor = %who.actor(), "command queued");
        self.store
            .get_command(scope, &uuid)
            .await?
            .ok_or_else(|| CoreError::Internal("queued command vanished".into()))
    }

    /// The device's commands, newest first, as `who` may see them (secret results redacted by role).
    pub async fn command_history(
        &self,
        who: &Principal,
        device_id: DeviceId,
        page: Page,
    ) -> Result<Vec<CommandView>, CoreError> {
        let scope = who.scope();
        // Resolve the device through the scope first, so another tenant's device is simply "not found".
        self.store
            .get_device(scope, device_id)
            .await?
            .ok_or(CoreError::NotFound)?;
        Ok(self
            .store
            .list_commands(scope, device_id, page)
            .await?
            .iter()
            .map(|record| self.command_view(who, record))
            .collect())
    }
}
