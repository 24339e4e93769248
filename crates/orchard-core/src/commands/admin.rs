//! Admin operations behind `/api/v1`: tenants, enrollment links, devices, and commands. Every operation
//! takes the caller's [`Principal`]; reads go through its scope, writes check its role.

use std::collections::BTreeMap;

use orchard_protocol::commands::Command;
use orchard_protocol::report::decode_report;
use orchard_protocol::results::parse_result;
use orchard_store::{CommandRecord, Device, EnrollmentLink, NewCommand, Page, Tenant};
use orchard_types::{
    ChannelId, CommandUuid, DeviceId, EnrollmentLinkId, QueuedBy, Role, TenantId, UnixTime,
};
use serde::Serialize;

use crate::access::principal::Principal;
use crate::{random_secret, secret_hash, CoreError, Orchard};

/// A tenant's short code: lowercase letters, digits and dashes, so it is safe in URLs and file names.
fn valid_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= 32
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A newly created enrollment link; `url` is shown once (only the secret's hash is stored).
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedLink {
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub id: EnrollmentLinkId,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub tenant_id: TenantId,
    pub name: String,
    pub url: String,
    pub max_uses: Option<i64>,
    pub expires_at: Option<String>,
}

/// A channel as the API shows it: never the push token, PushMagic or UnlockToken.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChannelView {
    pub id: String,
    pub user_short_name: Option<String>,
    pub has_push_token: bool,
    pub has_unlock_token: bool,
    pub awaiting_configuration: bool,
    pub token_updated_at: Option<String>,
}

/// One device with everything the detail page shows.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceDetail {
    #[serde(flatten)]
    pub device: DeviceView,
    pub channels: Vec<ChannelView>,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub inventory: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceView {
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub id: DeviceId,
    pub udid: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub tenant_id: TenantId,
    pub serial_number: Option<String>,
    pub enrollment_state: &'static str,
    pub device_name: Option<String>,
    pub model: Option<String>,
    pub model_name: Option<String>,
    pub product_name: Option<String>,
    pub os_version: Option<String>,
    pub build_version: Option<String>,
    pub is_supervised: Option<bool>,
    pub enrolled_at: Option<String>,
    pub last_seen_at: Option<String>,
}

impl From<&Device> for DeviceView {
    fn from(d: &Device) -> Self {
        DeviceView {
            id: d.id,
            udid: d.udid.to_string(),
            tenant_id: d.tenant_id,
            serial_number: d.serial_number.clone(),
            enrollment_state: d.state.as_str(),
            device_name: d.device_name.clone(),
            model: d.model.clone(),
            model_name: d.model_name.clone(),
            product_name: d.product_name.clone(),
            os_version: d.os_version.clone(),
            build_version: d.build_version.clone(),
            is_supervised: d.is_supervised,
            enrolled_at: d.enrolled_at.map(UnixTime::to_rfc3339),
            last_seen_at: d.last_seen_at.map(UnixTime::to_rfc3339),
        }
    }
}

/// A command in a device's history, with its parsed result when there is one.
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
    pub error_chain: Option<serde_json::Value>,
    pub result: Option<serde_json::Value>,
}

impl From<&CommandRecord> for CommandView {
    fn from(c: &CommandRecord) -> Self {
        let result = c.result.as_deref().and_then(|raw| {
            let report = decode_report(raw).ok()?;
            let parsed = parse_result(c.request_type.as_str(), &report).ok()?;
            serde_json::to_value(parsed).ok()
        });
        CommandView {
            command_uuid: c.uuid.to_string(),
            request_type: c.request_type.as_str().to_owned(),
            status: c.status.as_str(),
            channel: c.channel.to_string(),
            queued_by: c.queued_by.as_ref().map(QueuedBy::to_stored),
            queued_at: c.queued_at.to_rfc3339(),
            sent_at: c.sent_at.map(UnixTime::to_rfc3339),
            completed_at: c.completed_at.map(UnixTime::to_rfc3339),
            error_chain: c
                .error_chain
                .as_deref()
                .and_then(|e| serde_json::from_str(e).ok()),
            result,
        }
    }
}

/// Commands a helpdesk principal may queue: they only read or wake, never change a device.
pub(crate) fn helpdesk_may_queue(command: &Command) -> bool {
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

impl Orchard {
    pub async fn create_tenant(
        &self,
        who: &Principal,
        name: &str,
        code: &str,
    ) -> Result<Tenant, CoreError> {
        if !who.is_operator() {
            return Err(CoreError::Forbidden("only operators create tenants".into()));
        }
        let name = name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(CoreError::Invalid(
                "name must be 1 to 200 characters".into(),
            ));
        }
        if !valid_code(code) {
            return Err(CoreError::Invalid(
                "code must be 1 to 32 lowercase letters, digits or dashes".into(),
            ));
        }
        let tenant = Tenant {
            id: TenantId::new(),
            name: name.to_string(),
            code: code.to_string(),
            created_at: self.clock.now(),
        };
        self.store.create_tenant(&tenant).await?;
        tracing::info!(tenant = %tenant.id, code, actor = %who.actor(), "tenant created");
        Ok(tenant)
    }

    pub async fn list_tenants(&self, who: &Principal) -> Result<Vec<Tenant>, CoreError> {
        Ok(self.store.list_tenants(who.scope()).await?)
    }

    /// Creates an enrollment link for a tenant. Another tenant's id answers exactly like a missing one.
    pub async fn create_enrollment_link(
        &self,
        who: &Principal,
        tenant_id: TenantId,
        name: &str,
        max_uses: Option<i64>,
        expires_in_seconds: Option<i64>,
    ) -> Result<CreatedLink, CoreError> {
        let tenant = self
            .store
            .get_tenant(who.scope(), tenant_id)
            .await?
            .ok_or(CoreError::NotFound)?;
        if !who.may_administer(tenant.id) {
            return Err(CoreError::Forbidden(
                "enrollment links need the operator or the tenant's admin role".into(),
            ));
        }
        if max_uses.is_some_and(|m| m < 1) {
            return Err(CoreError::Invalid("max_uses must be at least 1".into()));
        }
        if expires_in_seconds.is_some_and(|s| s < 1) {
            return Err(CoreError::Invalid(
                "expires_in_seconds must be positive".into(),
            ));
        }
        let now = self.clock.now();
        let secret = random_secret(24);
        let link = EnrollmentLink {
            id: EnrollmentLinkId::new(),
            tenant_id: tenant.id,
            name: name.trim().to_string(),
            secret_hash: secret_hash(&secret),
            max_uses,
            uses: 0,
            expires_at: expires_in_seconds.map(|s| now.plus_seconds(s)),
            created_at: now,
            created_by: Some(who.actor()),
        };
        self.store.create_enrollment_link(&link).await?;
        tracing::info!(link = %link.id, tenant = %tenant.id, actor = %who.actor(), "enrollment link created");
        Ok(CreatedLink {
            id: link.id,
            tenant_id: link.tenant_id,
            name: link.name,
            url: self.config.enrollment_url(&secret),
            max_uses: link.max_uses,
            expires_at: link.expires_at.map(UnixTime::to_rfc3339),
        })
    }

    pub async fn list_devices(
        &self,
        who: &Principal,
        page: Page,
    ) -> Result<(Vec<Device>, i64), CoreError> {
        self.search_devices(who, &orchard_store::DeviceQuery::default(), page)
            .await
    }

    /// Devices of the caller's scope matching `query` (filters, text search, sort), and how many match.
    pub async fn search_devices(
        &self,
        who: &Principal,
        query: &orchard_store::DeviceQuery,
        page: Page,
    ) -> Result<(Vec<Device>, i64), CoreError> {
        if query.text.as_ref().is_some_and(|t| t.chars().count() > 200) {
            return Err(CoreError::Invalid(
                "q must be at most 200 characters".into(),
            ));
        }
        let scope = who.scope();
        let devices = self.store.search_devices(scope, query, page).await?;
        let total = self.store.count_search_devices(scope, query).await?;
        Ok((devices, total))
    }

    pub async fn device_detail(
        &self,
        who: &Principal,
        id: DeviceId,
    ) -> Result<DeviceDetail, CoreError> {
        let scope = who.scope();
        let device = self
            .store
            .get_device(scope, id)
            .await?
            .ok_or(CoreError::NotFound)?;
        let channels = self
            .store
            .list_channels(device.id)
            .await?
            .into_iter()
            .map(|c| ChannelView {
                id: c.id.to_string(),
                user_short_name: c.user_short_name,
                has_push_token: c.push_token.is_some(),
                has_unlock_token: c.unlock_token.is_some(),
                awaiting_configuration: c.awaiting_configuration,
                token_updated_at: c.token_updated_at.map(UnixTime::to_rfc3339),
            })
            .collect();
        let inventory = self
            .store
            .get_inventory(scope, device.id)
            .await?
            .into_iter()
            .filter_map(|s| {
                let v = serde_json::from_str(&s.json).ok()?;
                Some((s.section, v))
            })
            .collect();
        Ok(DeviceDetail {
            device: DeviceView::from(&device),
            channels,
            inventory,
        })
    }

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
        mut command: Command,
        confirm_serial: Option<&str>,
    ) -> Result<CommandRecord, CoreError> {
        let scope = who.scope();
        let device = self
            .store
            .get_device(scope, device_id)
            .await?
            .ok_or(CoreError::NotFound)?;
        let allowed = match who.role {
            Role::Operator => true,
            Role::Admin => who.tenant_id == Some(device.tenant_id),
            Role::Helpdesk => helpdesk_may_queue(&command),
            Role::Viewer => false,
        };
        if !allowed {
            return Err(CoreError::Forbidden(format!(
                "the {} role may not queue {}",
                who.role.as_str(),
                command.request_type()
            )));
        }
        crate::commands::policy::check_confirmation(who, &device, &command, confirm_serial)?;
        let channel = ChannelId::device(&device.udid);
        if let Command::ClearPasscode { unlock_token } = &mut command {
            let stored = self
                .store
                .get_channel(&channel)
                .await?
                .and_then(|c| c.unlock_token)
                .ok_or_else(|| {
                    CoreError::Invalid("the device has not escrowed an UnlockToken".into())
                })?;
            *unlock_token = Some(stored.expose().clone());
        }
        let now = self.clock.now();
        let uuid = CommandUuid::new_random();
        let new = NewCommand {
            payload: command.encode(&uuid),
            request_type: command.kind(),
            uuid: uuid.clone(),
            device_id: device.id,
            tenant_id: device.tenant_id,
            channel,
            queued_by: Some(who.queued_by()),
            queued_at: now,
            expires_at: None,
        };
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

    pub async fn command_history(
        &self,
        who: &Principal,
        device_id: DeviceId,
        page: Page,
    ) -> Result<Vec<CommandRecord>, CoreError> {
        let scope = who.scope();
        // Resolve the device through the scope first, so another tenant's device is simply "not found".
        self.store
            .get_device(scope, device_id)
            .await?
            .ok_or(CoreError::NotFound)?;
        Ok(self.store.list_commands(scope, device_id, page).await?)
    }
}
