//! Inventory: turns acknowledged query results into the device's stored facts and inventory sections.

use orchard_protocol::report::CommandReport;
use orchard_protocol::results::{parse_result, CommandResult};
use orchard_store::{Device, DeviceFacts, UnitOfWork};
use orchard_types::{RequestType, UnixTime};

use crate::{CoreError, Orchard};

/// The inventory section a result is kept under, if it is inventory at all.
fn section_for(result: &CommandResult) -> Option<&'static str> {
    Some(match result {
        CommandResult::DeviceInformation(_) => "device_information",
        CommandResult::SecurityInfo(_) => "security_info",
        CommandResult::InstalledApplicationList(_) => "installed_applications",
        CommandResult::ProfileList(_) => "profiles",
        CommandResult::CertificateList(_) => "certificates",
        CommandResult::UserList(_) => "shared_ipad_users",
        CommandResult::AvailableOSUpdates(_) => "available_os_updates",
        CommandResult::OSUpdateStatus(_) => "os_update_status",
        CommandResult::ManagedApplicationList(_) => "managed_applications",
        CommandResult::DeviceLocation(_) => "location",
        _ => return None,
    })
}

impl Orchard {
    /// Applies an acknowledged result inside the report's unit of work: promotes device facts and stores the
    /// inventory section. A result we cannot parse is kept only as the raw report on the command (logged,
    /// never fatal).
    pub(crate) async fn apply_result(
        &self,
        unit: &mut UnitOfWork,
        device: &Device,
        request_type: RequestType,
        report: &CommandReport,
        now: UnixTime,
    ) -> Result<(), CoreError> {
        let result = match parse_result(request_type.as_str(), report) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(udid = %device.udid, %request_type, error = %e, "result could not be parsed; raw report kept");
                return Ok(());
            }
        };
        if let CommandResult::DeviceInformation(info) = &result {
            let facts = DeviceFacts {
                serial_number: info.serial_number.clone(),
                device_name: info.device_name.clone(),
                model: info.model.clone(),
                model_name: info.model_name.clone(),
                product_name: info.product_name.clone(),
                os_version: info.os_version.clone(),
                build_version: info.build_version.clone(),
                is_supervised: info.is_supervised,
            };
            unit.update_device_facts(device.id, &facts, now).await?;
        }
        if let CommandResult::ManagedApplicationList(apps) = &result {
            let statuses: std::collections::BTreeMap<String, String> = apps
                .iter()
                .filter_map(|(bundle_id, app)| Some((bundle_id.clone(), app.status.clone()?)))
                .collect();
            unit.managed_apps_reported(device.id, &statuses, now)
                .await?;
        }
        if let CommandResult::ProfileList(items) = &result {
            self.profile_list_reported(unit, device, items, now).await?;
        }
        if let Some(section) = section_for(&result) {
            let json = serde_json::to_string(&result)
                .map_err(|e| CoreError::Internal(format!("inventory json: {e}")))?;
            unit.put_inventory_section(device.id, section, &json, now)
                .await?;
        }
        Ok(())
    }
}
