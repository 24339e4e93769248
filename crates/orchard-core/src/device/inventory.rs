//! Inventory: turns acknowledged query results into the device's stored facts and inventory sections.

use orchard_protocol::report::CommandReport;
use orchard_protocol::results::{parse_result, CommandResult, DeviceInformation};
use orchard_store::{Device, DeviceFacts, DeviceStanding, RepeatedFactsAnswer, UnitOfWork};
use orchard_types::{ChannelId, CommandUuid, RequestType, TenantId, UnixTime};
use sha2::{Digest, Sha256};

use crate::desired::groups::MarkDevice;
use crate::desired::reconciler::plan_inputs_digest;
use crate::desired::smart_group_cache::moves_in_no_group;
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

/// The digest of what a DeviceInformation answer says that smart groups and the reconciler read: the
/// device's tenant and every reported fact except the ones that change from moment to moment and that nothing
/// but the inventory view shows (battery, free space, backup time, do-not-disturb, roaming, carrier network).
/// Leaving out a fact something reads would skip work that is needed, so the list of left-out keys is short
/// and only grows with a check that no filter, reconciler or policy reads the key. The version prefix makes
/// a change of this definition a full evaluation for every device, never a false match.
pub(crate) fn facts_digest(tenant: TenantId, info: &DeviceInformation) -> Option<String> {
    let mut lasting = info.clone();
    lasting.battery_level = None;
    lasting.available_device_capacity = None;
    lasting.last_cloud_backup_date = None;
    lasting.is_do_not_disturb_in_effect = None;
    lasting.is_roaming = None;
    lasting.current_carrier_network = None;
    let json = serde_json::to_vec(&lasting).ok()?;
    let mut hash = Sha256::new();
    hash.update(tenant.to_string().as_bytes());
    hash.update(b"\n");
    hash.update(&json);
    Some(format!("v1:{}", hex::encode(hash.finalize())))
}

/// The facts a DeviceInformation answer promotes to the device row, and what storing it changes (see
/// [`Applied`]): the same classification for the general path and the repeated answer's shortcut.
pub(crate) fn promoted_facts(device: &Device, info: &DeviceInformation) -> (DeviceFacts, Applied) {
    let mut applied = Applied::Stored;
    let digest = facts_digest(device.tenant_id, info);
    // The promoted columns must still say what this answer says: another path (a declarative status
    // report) may have changed one since, and this answer then changes the device after all.
    let same = |reported: &Option<String>, stored: &Option<String>| {
        reported.is_none() || reported == stored
    };
    if digest.is_some()
        && digest == device.facts_digest
        && same(&info.serial_number, &device.serial_number)
        && same(&info.device_name, &device.device_name)
        && same(&info.model, &device.model)
        && same(&info.model_name, &device.model_name)
        && same(&info.product_name, &device.product_name)
        && same(&info.os_version, &device.os_version)
        && same(&info.build_version, &device.build_version)
        && (info.is_supervised.is_none() || info.is_supervised == device.is_supervised)
    {
        applied = Applied::FactsUnchanged;
    }
    // As the device row and its inventory section will say once this answer is stored: the columns
    // keep a value the answer leaves out, the section is replaced.
    let plan_inputs = plan_inputs_digest(
        device.tenant_id,
        info.os_version
            .as_ref()
            .or(device.os_version.as_ref())
            .map(String::as_str),
        info.serial_number
            .as_ref()
            .or(device.serial_number.as_ref())
            .map(String::as_str),
        info.is_multi_user == Some(true),
    );
    // The row's own values too: another path may have changed one since the last answer. The model
    // (which picks the OS target) is not in the digest: it is compared with the row.
    if applied == Applied::Stored
        && device.plan_inputs_digest.as_deref() == Some(plan_inputs.as_str())
        && same(&info.os_version, &device.os_version)
        && same(&info.serial_number, &device.serial_number)
        && same(&info.product_name, &device.product_name)
    {
        applied = Applied::PlanInputsUnchanged;
    }
    let facts = DeviceFacts {
        serial_number: info.serial_number.clone(),
        device_name: info.device_name.clone(),
        model: info.model.clone(),
        model_name: info.model_name.clone(),
        product_name: info.product_name.clone(),
        os_version: info.os_version.clone(),
        build_version: info.build_version.clone(),
        is_supervised: info.is_supervised,
        facts_digest: digest,
        plan_inputs_digest: Some(plan_inputs),
    };
    (facts, applied)
}

/// A DeviceInformation answer parsed and classified once per report, before its command's request type is
/// known: the repeated answer's shortcut reads it, and the general path takes it over when the shortcut declines
/// (see [`Orchard::apply_result`]).
pub(crate) struct InventoryAnswer {
    result: CommandResult,
    facts: DeviceFacts,
    applied: Applied,
}

impl InventoryAnswer {
    /// `report` read as a DeviceInformation answer about `device`; `None` for any other answer (only a
    /// DeviceInformation answer carries QueryResponses, so the others skip the parse) and for one that does
    /// not parse (the general path logs it, parsing by the command's request type).
    pub(crate) fn read(device: &Device, report: &CommandReport) -> Option<Self> {
        if !report.body.contains_key("QueryResponses") {
            return None;
        }
        let result = parse_result(RequestType::DeviceInformation.as_str(), report).ok()?;
        let CommandResult::DeviceInformation(info) = &result else {
            return None;
        };
        let (facts, applied) = promoted_facts(device, info);
        Some(Self {
            result,
            facts,
            applied,
        })
    }
}

/// What applying a result found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    /// A DeviceInformation answer that repeats, in everything a group or the reconciler reads, what the
    /// device said last time (same facts digest): nothing to re-evaluate.
    FactsUnchanged,
    /// A DeviceInformation answer that changes facts but none the reconciler's plans or the OS update's
    /// evaluation read (same plan-inputs digest, see [`plan_inputs_digest`], and the model as stored): groups
    /// are re-evaluated, and the device is marked for the reconciler only if one of them changes.
    PlanInputsUnchanged,
    /// Anything else.
    Stored,
}

impl Applied {
    /// How re-evaluating the device's groups after such an answer marks it for the reconciler (an answer with
    /// unchanged facts re-evaluates nothing).
    pub(crate) fn mark(self) -> MarkDevice {
        match self {
            Applied::PlanInputsUnchanged => MarkDevice::OnGroupChange,
            Applied::FactsUnchanged | Applied::Stored => MarkDevice::Always,
        }
    }
}

/// What [`Orchard::apply_result`] did.
pub(crate) struct AppliedResult {
    pub(crate) applied: Applied,
    /// The device's standing for re-evaluating its groups, read with its new facts (and marked as
    /// [`Applied::mark`] says) by a DeviceInformation answer that changed facts.
    pub(crate) standing: Option<DeviceStanding>,
    /// A DeviceInformation answer that changed facts moves the device in no smart group, as this node's copy
    /// of its tenant's filters shows (see `desired::smart_group_cache`): nothing to re-evaluate, and the
    /// device is marked as [`Applied::mark`] says.
    pub(crate) groups_unchanged: bool,
}

impl Orchard {
    /// Applies an acknowledged result inside the report's unit of work: promotes device facts and stores the
    /// inventory section. A result we cannot parse is kept only as the raw report on the command (logged,
    /// never fatal). `inventory` is the report already read as a DeviceInformation answer, used when the
    /// command is one.
    pub(crate) async fn apply_result(
        &self,
        unit: &mut UnitOfWork,
        device: &Device,
        request_type: RequestType,
        report: &CommandReport,
        inventory: Option<InventoryAnswer>,
        now: UnixTime,
    ) -> Result<AppliedResult, CoreError> {
        let (result, mut promoted) = match inventory
            .filter(|_| request_type == RequestType::DeviceInformation)
        {
            Some(read) => (read.result, Some((read.facts, read.applied))),
            None => match parse_result(request_type.as_str(), report) {
                Ok(r) => (r, None),
                Err(e) => {
                    tracing::warn!(udid = %device.udid, %request_type, error = %e, "result could not be parsed; raw report kept");
                    return Ok(AppliedResult {
                        applied: Applied::Stored,
                        standing: None,
                        groups_unchanged: false,
                    });
                }
            },
        };
        let mut applied = Applied::Stored;
        let mut standing = None;
        let mut groups_unchanged = false;
        // The inventory section this result replaces; written with the facts when they can go together.
        let mut section = match section_for(&result) {
            Some(name) => Some((
                name,
                serde_json::to_string(&result)
                    .map_err(|e| CoreError::Internal(format!("inventory json: {e}")))?,
            )),
            None => None,
        };
        if let CommandResult::DeviceInformation(info) = &result {
            let (facts, answer_applied) = promoted
                .take()
                .unwrap_or_else(|| promoted_facts(device, info));
            applied = answer_applied;
            let mark = applied.mark() == MarkDevice::Always;
            // This node's copy of the tenant's filters, when they read only the device row and the device's
            // memberships are what a full evaluation of its stored facts wrote (its digest is kept).
            let kept = match (applied, &device.facts_digest) {
                (Applied::FactsUnchanged, _) | (_, None) => None,
                _ => self
                    .smart_groups
                    .get(device.tenant_id)
                    .filter(|kept| kept.row_filters.is_some()),
            };
            if applied == Applied::FactsUnchanged {
                match section.take() {
                    Some((name, json)) => {
                        unit.update_device_facts_and_section(device.id, &facts, name, &json, now)
                            .await?
                    }
                    None => unit.update_device_facts(device.id, &facts, now).await?,
                }
            } else if let Some(kept) = kept {
                let revision = unit
                    .update_device_facts_reading_revision(device.id, &facts, mark, now)
                    .await?;
                let filters = kept.row_filters.as_deref().unwrap_or_default();
                if revision == kept.revision && moves_in_no_group(filters, device, &facts) {
                    groups_unchanged = true;
                } else {
                    // Marked already (as `mark` says): the re-evaluation only reads.
                    standing = Some(
                        unit.read_device_standing(device.id, device.tenant_id, None)
                            .await?,
                    );
                }
            } else {
                // Its groups are re-evaluated (the report's caller does it): read what that starts from with
                // the update, one statement on PostgreSQL.
                standing = Some(
                    unit.update_device_facts_reading_standing(
                        device.id,
                        device.tenant_id,
                        &facts,
                        mark,
                        now,
                    )
                    .await?,
                );
            }
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
        if let Some((name, json)) = section {
            unit.put_inventory_section(device.id, name, &json, now)
                .await?;
        }
        Ok(AppliedResult {
            applied,
            standing,
            groups_unchanged,
        })
    }
}

impl Orchard {
    /// The usual inventory answer's shortcut: an acknowledged DeviceInformation answer that repeats the
    /// device's facts (see [`Applied::FactsUnchanged`]) has nothing to re-evaluate, so its command's result,
    /// its facts and its inventory section are stored together without the general path's unit (one
    /// statement on PostgreSQL). Returns whether the channel may have more work, or `None` when the general
    /// path must store the answer: an answer that changes facts, or a command the store does not take this
    /// way (see `Store::record_repeated_facts_answer`). The caller has ruled out what the shortcut skips: an
    /// error chain, and webhook events (no endpoint was enabled).
    pub(crate) async fn store_repeated_facts_answer(
        &self,
        device: &Device,
        channel: &ChannelId,
        uuid: &CommandUuid,
        answer: &InventoryAnswer,
        (result, result_sealed): (Option<&[u8]>, bool),
        now: UnixTime,
    ) -> Result<Option<bool>, CoreError> {
        if answer.applied != Applied::FactsUnchanged {
            return Ok(None);
        }
        let Some(section) = section_for(&answer.result) else {
            return Ok(None);
        };
        let json = serde_json::to_string(&answer.result)
            .map_err(|e| CoreError::Internal(format!("inventory json: {e}")))?;
        Ok(self
            .store
            .record_repeated_facts_answer(&RepeatedFactsAnswer {
                device: device.id,
                channel,
                uuid,
                result,
                result_sealed,
                facts: &answer.facts,
                section,
                json: &json,
                now,
            })
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchard_protocol::report::decode_report;

    /// A DeviceInformation answer as a device sent it (see orchard-protocol's testdata).
    const CAPTURE: &[u8] =
        include_bytes!("../../../orchard-protocol/testdata/DeviceInformation.1.plist");

    fn captured() -> DeviceInformation {
        let report = decode_report(CAPTURE).expect("capture");
        match parse_result("DeviceInformation", &report).expect("parsed") {
            CommandResult::DeviceInformation(info) => info,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_digest_leaves_out_only_moment_to_moment_facts() {
        let tenant = TenantId::new();
        let info = captured();
        let digest = facts_digest(tenant, &info);
        assert!(digest.as_deref().is_some_and(|d| d.starts_with("v1:")));

        let mut later = info.clone();
        later.battery_level = Some(0.17);
        later.available_device_capacity = Some(3.5);
        later.is_do_not_disturb_in_effect = Some(true);
        assert_eq!(facts_digest(tenant, &later), digest);

        let mut updated = info.clone();
        updated.os_version = Some("26.1".into());
        assert_ne!(facts_digest(tenant, &updated), digest);
        let mut shared = info.clone();
        shared.is_multi_user = Some(!shared.is_multi_user.unwrap_or(false));
        assert_ne!(facts_digest(tenant, &shared), digest);
        let mut renamed = info.clone();
        renamed.device_name = Some("Cart 3 / 12".into());
        assert_ne!(facts_digest(tenant, &renamed), digest);
        // The same answer in another department is another device's story.
        assert_ne!(facts_digest(TenantId::new(), &info), digest);
    }

    /// What an unchanged inventory report costs desired state now: the digest of the answer.
    /// `cargo test --release -p orchard-core --lib facts_digest_cost -- --ignored --nocapture`
    #[test]
    #[ignore = "benchmark"]
    fn facts_digest_cost() {
        let tenant = TenantId::new();
        let info = captured();
        let rounds = 100_000;
        let started = std::time::Instant::now();
        let mut kept = 0;
        for _ in 0..rounds {
            kept += facts_digest(tenant, std::hint::black_box(&info)).map_or(0, |d| d.len());
        }
        let each = started.elapsed() / rounds;
        assert!(kept > 0);
        println!("facts digest of a captured DeviceInformation answer: {each:?} per report");
    }
}
