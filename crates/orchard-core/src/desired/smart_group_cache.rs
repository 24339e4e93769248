//! This node's copy of each tenant's smart-group filters, kept with the revision the database showed them at
//! (`tenants.smart_groups_revision`, raised in the unit of every change of a smart group).
//!
//! A DeviceInformation answer that changes facts re-evaluates the device's smart groups. When every filter of
//! its tenant reads only columns of the device row (model, OS version, name, supervision), the node can tell
//! from the row as the request's lookup found it and from the answer whether the device moves in any group:
//! a filter that says the same of both leaves the membership as the last evaluation wrote it. Such an answer
//! then needs neither the groups nor the memberships from the database, only its update, which returns the
//! revision: a copy at another revision is stale (another node may have changed a filter) and the answer is
//! evaluated in full, which also refreshes the copy.
//!
//! What the copy relies on: a smart group's membership is what its filter said of the device's stored facts at
//! the last evaluation, and every change of those facts or of the filters evaluates again. A device whose
//! `facts_digest` was forgotten (its tenant's filters changed since, or one of them reads a fact that changes
//! without a report) is always evaluated in full, so the copy only ever confirms memberships a full evaluation
//! wrote under the same revision.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use orchard_store::{Device, DeviceFacts as AnsweredFacts, DeviceGroupFacts, FactSections};
use orchard_types::{EnrollmentState, GroupId, TenantId};

use super::groups::{DeviceFacts, SmartFilter};

/// A tenant's smart-group filters at one revision.
#[derive(Debug)]
pub(crate) struct TenantFilters {
    pub(crate) revision: i64,
    /// None when some filter cannot be evaluated from the device row alone (it reads an inventory section or a
    /// fact that changes without a report, or it could not be read): its tenant's answers are evaluated in full.
    pub(crate) row_filters: Option<Vec<(GroupId, SmartFilter)>>,
}

/// See the module documentation. One entry per tenant that reported since the node started.
#[derive(Debug, Default)]
pub(crate) struct SmartGroupCache {
    tenants: Mutex<HashMap<TenantId, Arc<TenantFilters>>>,
}

impl SmartGroupCache {
    /// The tenant's filters as last kept, whatever their revision (the caller compares).
    pub(crate) fn get(&self, tenant: TenantId) -> Option<Arc<TenantFilters>> {
        self.lock().get(&tenant).cloned()
    }

    /// Keeps what a full evaluation read: every smart group of the tenant at `revision`, with `unreadable`
    /// counting those whose stored filter could not be parsed. An older revision never replaces a newer one
    /// (two answers of one tenant evaluated at once on this node).
    pub(crate) fn keep(
        &self,
        tenant: TenantId,
        revision: i64,
        filters: &[(GroupId, SmartFilter)],
        unreadable: usize,
    ) {
        let row_only = unreadable == 0
            && filters.iter().all(|(_, f)| {
                f.reads_only_reported_facts() && f.sections() == FactSections::default()
            });
        let mut tenants = self.lock();
        if tenants
            .get(&tenant)
            .is_some_and(|kept| kept.revision > revision)
        {
            return;
        }
        tenants.insert(
            tenant,
            Arc::new(TenantFilters {
                revision,
                row_filters: row_only.then(|| filters.to_vec()),
            }),
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, Arc<TenantFilters>>> {
        // A panic while holding the lock left a consistent map (every write is one insert).
        self.tenants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Whether every filter says the same of the device as its row was found (`before`) and as it is once the
/// answer's facts are stored (`answered`, whose absent values keep the row's).
pub(crate) fn moves_in_no_group(
    filters: &[(GroupId, SmartFilter)],
    before: &Device,
    answered: &AnsweredFacts,
) -> bool {
    let before = row_facts(before);
    let mut after = before.clone();
    let keep_or = |new: &Option<String>, old: &mut Option<String>| {
        if new.is_some() {
            old.clone_from(new);
        }
    };
    keep_or(&answered.model, &mut after.model);
    keep_or(&answered.model_name, &mut after.model_name);
    keep_or(&answered.product_name, &mut after.product_name);
    keep_or(&answered.os_version, &mut after.os_version);
    keep_or(&answered.device_name, &mut after.device_name);
    if answered.is_supervised.is_some() {
        after.supervised = answered.is_supervised;
    }
    let (before, after) = (DeviceFacts::new(&before), DeviceFacts::new(&after));
    filters
        .iter()
        .all(|(_, f)| f.matches(&before) == f.matches(&after))
}

/// The facts a row-only filter reads, from the device row (the rest left empty: no such filter reads them).
fn row_facts(device: &Device) -> DeviceGroupFacts {
    DeviceGroupFacts {
        device_id: device.id,
        tenant_id: device.tenant_id,
        enrolled: device.state == EnrollmentState::Enrolled,
        model: device.model.clone(),
        model_name: device.model_name.clone(),
        product_name: device.product_name.clone(),
        os_version: device.os_version.clone(),
        device_name: device.device_name.clone(),
        supervised: device.is_supervised,
        last_seen_at: None,
        dep_template_id: None,
        identity_not_after: None,
        device_information_json: None,
        installed_applications_json: None,
    }
}
