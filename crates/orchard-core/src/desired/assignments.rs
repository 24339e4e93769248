//! Assignments: what a tenant wants on its devices. An assignment names one object (kind + id: a profile of
//! the tenant or a global one, or an app of the tenant's Apps and Books location by adamId, with its
//! [`AppAssignmentInput`] options) with version policy `latest`, and targets
//! the whole tenant, groups or single devices, minus excluded groups and devices — all of them the tenant's
//! own. Another tenant's ids (profile, group, device, assignment) answer exactly like ids that do not exist.
//! Every change marks the tenant's devices for the reconciler in its own unit of work.

use std::collections::BTreeSet;

use orchard_store::{AssignmentRecord, AssignmentTarget};
use orchard_types::{AssignmentId, DeviceId, GroupId, ProfileId, TenantId};
use serde::{Deserialize, Serialize};

use super::profile_schema::ValidationError;
use crate::access::principal::Principal;
use crate::apps::installs::{checked_app_options, AppAssignmentInput, AppAssignmentView};
use crate::{CoreError, Orchard};

/// The most targets and exclusions one assignment may name.
const MAX_TARGETS: usize = 1_000;

/// Who an assignment reaches.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AssignmentTargets {
    /// Every device of the tenant.
    #[serde(default)]
    pub all_devices: bool,
    /// Group ids of the tenant.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Device ids of the tenant.
    #[serde(default)]
    pub devices: Vec<String>,
    /// Groups whose members never get it.
    #[serde(default)]
    pub exclude_groups: Vec<String>,
    /// Devices that never get it.
    #[serde(default)]
    pub exclude_devices: Vec<String>,
    /// `latest` (the only policy: every new version replaces the old).
    #[serde(default)]
    pub version_policy: Option<String>,
    /// How a profile travels: `command` (default: InstallProfile and RemoveProfile) or `declaration`
    /// (`configuration.legacy` in the declaration set of devices on iOS 15 or later; older ones get
    /// commands). On a change, absent keeps the assignment's current delivery.
    #[serde(default)]
    pub delivery: Option<String>,
    /// An app assignment's options (replaced when given).
    #[serde(default)]
    pub app: Option<AppAssignmentInput>,
}

/// A new assignment.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AssignmentInput {
    /// `profile` (object_id: the profile's id) or `app` (object_id: the adamId of an app of the tenant's
    /// Apps and Books location that can be assigned to devices).
    pub object_kind: String,
    pub object_id: String,
    #[serde(default)]
    pub all_devices: bool,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub devices: Vec<String>,
    #[serde(default)]
    pub exclude_groups: Vec<String>,
    #[serde(default)]
    pub exclude_devices: Vec<String>,
    #[serde(default)]
    pub version_policy: Option<String>,
    /// `command` (default) or `declaration` (profiles only): see [`AssignmentTargets::delivery`].
    #[serde(default)]
    pub delivery: Option<String>,
    /// For `app`: install behaviour, managed app configuration, removal with management.
    #[serde(default)]
    pub app: Option<AppAssignmentInput>,
}

impl AssignmentInput {
    fn targets(&self) -> AssignmentTargets {
        AssignmentTargets {
            all_devices: self.all_devices,
            groups: self.groups.clone(),
            devices: self.devices.clone(),
            exclude_groups: self.exclude_groups.clone(),
            exclude_devices: self.exclude_devices.clone(),
            version_policy: self.version_policy.clone(),
            delivery: self.delivery.clone(),
            app: self.app.clone(),
        }
    }
}

/// An assignment as the API shows it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AssignmentView {
    pub id: String,
    pub tenant_id: String,
    pub object_kind: String,
    pub object_id: String,
    pub version_policy: String,
    /// `command` or `declaration`.
    pub delivery: String,
    pub all_devices: bool,
    pub groups: Vec<String>,
    pub devices: Vec<String>,
    pub exclude_groups: Vec<String>,
    pub exclude_devices: Vec<String>,
    pub created_at: String,
    pub created_by: Option<String>,
    pub updated_at: String,
    /// An app assignment's options.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<AppAssignmentView>,
}

impl From<&AssignmentRecord> for AssignmentView {
    fn from(a: &AssignmentRecord) -> Self {
        let pick = |kind: &str, exclude: bool| {
            a.targets
                .iter()
                .filter(|t| t.kind == kind && t.exclude == exclude)
                .map(|t| t.id.clone())
                .collect()
        };
        AssignmentView {
            id: a.id.to_string(),
            tenant_id: a.tenant_id.to_string(),
            object_kind: a.object_kind.clone(),
            object_id: a.object_id.clone(),
            version_policy: a.version_policy.clone(),
            delivery: a.delivery.clone(),
            all_devices: a.all_devices,
            groups: pick("group", false),
            devices: pick("device", false),
            exclude_groups: pick("group", true),
            exclude_devices: pick("device", true),
            created_at: a.created_at.to_rfc3339(),
            created_by: a.created_by.clone(),
            updated_at: a.updated_at.to_rfc3339(),
            app: None,
        }
    }
}

fn problem(path: impl Into<String>, message: impl Into<String>) -> ValidationError {
    ValidationError {
        path: path.into(),
        message: message.into(),
    }
}

/// How an object of `kind` travels: `command` unless a profile asks for `declaration`; `current` when the
/// input leaves it out (a change keeps it).
fn checked_delivery(
    kind: &str,
    asked: Option<&str>,
    current: &str,
) -> Result<String, ValidationError> {
    match asked {
        None => Ok(current.to_owned()),
        Some("command") => Ok("command".into()),
        Some("declaration") if kind == "profile" => Ok("declaration".into()),
        Some("declaration") => Err(problem(
            "delivery",
            "only profiles can be delivered as declarations",
        )),
        Some(_) => Err(problem(
            "delivery",
            "must be \"command\" or \"declaration\"",
        )),
    }
}

impl Orchard {
    /// Checks targets against the tenant: every id must be one of its groups or devices (another tenant's
    /// look missing), at least one target, nothing both targeted and excluded.
    async fn checked_targets(
        &self,
        tenant: TenantId,
        t: &AssignmentTargets,
    ) -> Result<(bool, String, Vec<AssignmentTarget>), CoreError> {
        let mut errors = Vec::new();
        let policy = t.version_policy.clone().unwrap_or_else(|| "latest".into());
        if policy != "latest" {
            errors.push(problem("version_policy", "must be \"latest\""));
        }
        if t.groups.len() + t.devices.len() + t.exclude_groups.len() + t.exclude_devices.len()
            > MAX_TARGETS
        {
            return Err(CoreError::Unprocessable(vec![problem(
                "groups",
                format!("at most {MAX_TARGETS} targets and exclusions"),
            )]));
        }
        if !t.all_devices && t.groups.is_empty() && t.devices.is_empty() {
            errors.push(problem(
                "all_devices",
                "an assignment targets all_devices, groups or devices",
            ));
        }
        let mut targets: Vec<AssignmentTarget> = Vec::new();
        for (field, list, exclude) in [
            ("groups", &t.groups, false),
            ("exclude_groups", &t.exclude_groups, true),
        ] {
            let parsed: Vec<Option<GroupId>> =
                list.iter().map(|g| GroupId::parse(g.trim()).ok()).collect();
            let ids: Vec<GroupId> = parsed.iter().flatten().copied().collect();
            let found = self.store.tenant_groups_among(tenant, &ids).await?;
            for (i, g) in parsed.iter().enumerate() {
                match g {
                    Some(g) if found.contains(g) => targets.push(AssignmentTarget {
                        kind: "group".into(),
                        id: g.to_string(),
                        exclude,
                    }),
                    _ => errors.push(problem(format!("{field}[{i}]"), "no such group")),
                }
            }
        }
        for (field, list, exclude) in [
            ("devices", &t.devices, false),
            ("exclude_devices", &t.exclude_devices, true),
        ] {
            let parsed: Vec<Option<DeviceId>> = list
                .iter()
                .map(|d| DeviceId::parse(d.trim()).ok())
                .collect();
            let ids: Vec<DeviceId> = parsed.iter().flatten().copied().collect();
            let found = self.store.tenant_devices_among(tenant, &ids).await?;
            for (i, d) in parsed.iter().enumerate() {
                match d {
                    Some(d) if found.contains(d) => targets.push(AssignmentTarget {
                        kind: "device".into(),
                        id: d.to_string(),
                        exclude,
                    }),
                    _ => errors.push(problem(format!("{field}[{i}]"), "no such device")),
                }
            }
        }
        let mut seen = BTreeSet::new();
        for target in &targets {
            if !seen.insert((target.kind.clone(), target.id.clone())) {
                errors.push(problem(
                    if target.kind == "group" {
                        "groups"
                    } else {
                        "devices"
                    },
                    format!(
                        "{} {} is named twice (targets and exclusions are exclusive)",
                        target.kind, target.id
                    ),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(CoreError::Unprocessable(errors));
        }
        targets.sort();
        Ok((t.all_devices, policy, targets))
    }

    /// The object an assignment names, checked: a live profile of the tenant or a global one.
    async fn checked_object(
        &self,
        who: &Principal,
        tenant: TenantId,
        kind: &str,
        id: &str,
    ) -> Result<String, CoreError> {
        if kind == "app" {
            let adam_id = id.trim();
            let app = self
                .store
                .list_app_assets(who.scope(), tenant)
                .await?
                .into_iter()
                .find(|a| a.adam_id == adam_id);
            return match app {
                Some(a) if a.device_assignable => Ok(a.adam_id),
                Some(_) => Err(CoreError::Unprocessable(vec![problem(
                    "object_id",
                    "this app's licences cannot be assigned to devices",
                )])),
                None => Err(CoreError::Unprocessable(vec![problem(
                    "object_id",
                    "no such app in the department's apps and books location",
                )])),
            };
        }
        if kind != "profile" {
            return Err(CoreError::Unprocessable(vec![problem(
                "object_kind",
                "must be \"profile\" or \"app\" (OS policies are not assignable yet)",
            )]));
        }
        let missing = || CoreError::Unprocessable(vec![problem("object_id", "no such profile")]);
        let profile = ProfileId::parse(id.trim()).map_err(|_| missing())?;
        match self.store.get_profile(who.scope(), profile).await? {
            Some(p) if p.archived_at.is_none() && p.tenant_id.is_none_or(|t| t == tenant) => {
                Ok(p.id.to_string())
            }
            _ => Err(missing()),
        }
    }

    async fn seen_assignment(
        &self,
        who: &Principal,
        tenant: TenantId,
        id: AssignmentId,
    ) -> Result<AssignmentRecord, CoreError> {
        self.seen_tenant(who, tenant).await?;
        self.store
            .get_assignment(who.scope(), tenant, id)
            .await?
            .ok_or(CoreError::NotFound)
    }

    /// Views of assignments with their app options.
    async fn views(&self, list: &[AssignmentRecord]) -> Result<Vec<AssignmentView>, CoreError> {
        let apps: Vec<AssignmentId> = list
            .iter()
            .filter(|a| a.object_kind == "app")
            .map(|a| a.id)
            .collect();
        let options = if apps.is_empty() {
            Vec::new()
        } else {
            self.store.app_options_of(&apps).await?
        };
        Ok(list
            .iter()
            .map(|a| AssignmentView {
                app: options
                    .iter()
                    .find(|o| o.assignment_id == a.id)
                    .map(AppAssignmentView::from),
                ..AssignmentView::from(a)
            })
            .collect())
    }

    /// `GET /tenants/{id}/assignments`.
    pub async fn list_assignments(
        &self,
        who: &Principal,
        tenant: TenantId,
    ) -> Result<Vec<AssignmentView>, CoreError> {
        self.seen_tenant(who, tenant).await?;
        let list = self.store.list_assignments(who.scope(), tenant).await?;
        self.views(&list).await
    }

    /// `GET /tenants/{id}/assignments/{assignment}`.
    pub async fn assignment_detail(
        &self,
        who: &Principal,
        tenant: TenantId,
        id: AssignmentId,
    ) -> Result<AssignmentView, CoreError> {
        let record = self.seen_assignment(who, tenant, id).await?;
        self.views(std::slice::from_ref(&record))
            .await?
            .pop()
            .ok_or(CoreError::NotFound)
    }

    /// Creates an assignment (the tenant's admins and operators); Conflict when the object is assigned already.
    pub async fn create_assignment(
        &self,
        who: &Principal,
        tenant: TenantId,
        input: AssignmentInput,
    ) -> Result<AssignmentView, CoreError> {
        self.seen_tenant(who, tenant).await?;
        who.tenant_admin(tenant)?;
        // Every problem at once: the object and each target named by its field.
        let object = self
            .checked_object(who, tenant, &input.object_kind, &input.object_id)
            .await;
        let mut checked = self.checked_targets(tenant, &input.targets()).await;
        let id = AssignmentId::new();
        let mut app_options = None;
        if input.object_kind == "app" {
            match checked_app_options(input.app.as_ref(), id) {
                Ok(o) => app_options = Some(o),
                Err(errors) => {
                    checked = match checked {
                        Err(CoreError::Unprocessable(mut a)) => {
                            a.extend(errors);
                            Err(CoreError::Unprocessable(a))
                        }
                        Ok(_) => Err(CoreError::Unprocessable(errors)),
                        other => other,
                    }
                }
            }
        } else if input.app.is_some() {
            let e = vec![problem(
                "app",
                "only an assignment of kind \"app\" has app options",
            )];
            checked = match checked {
                Err(CoreError::Unprocessable(mut a)) => {
                    a.extend(e);
                    Err(CoreError::Unprocessable(a))
                }
                Ok(_) => Err(CoreError::Unprocessable(e)),
                other => other,
            }
        }
        let delivery = checked_delivery(&input.object_kind, input.delivery.as_deref(), "command");
        if let Err(e) = &delivery {
            checked = match checked {
                Err(CoreError::Unprocessable(mut a)) => {
                    a.push(e.clone());
                    Err(CoreError::Unprocessable(a))
                }
                Ok(_) => Err(CoreError::Unprocessable(vec![e.clone()])),
                other => other,
            };
        }
        let (object_id, (all_devices, version_policy, targets)) = match (object, checked) {
            (Ok(o), Ok(t)) => (o, t),
            (Err(CoreError::Unprocessable(mut a)), Err(CoreError::Unprocessable(b))) => {
                a.extend(b);
                return Err(CoreError::Unprocessable(a));
            }
            (Err(e), _) | (_, Err(e)) => return Err(e),
        };
        let delivery = delivery.unwrap_or_else(|_| "command".into());
        let now = self.clock.now();
        let record = AssignmentRecord {
            id,
            tenant_id: tenant,
            object_kind: input.object_kind.clone(),
            object_id,
            version_policy,
            all_devices,
            delivery,
            targets,
            created_at: now,
            created_by: Some(who.actor()),
            updated_at: now,
        };
        self.store
            .create_assignment_with_options(&record, app_options.as_ref())
            .await
            .map_err(|e| match CoreError::from(e) {
                CoreError::Conflict(_) => CoreError::Conflict(
                    "the tenant assigns this object already: change that assignment".into(),
                ),
                other => other,
            })?;
        self.wake_reconciler();
        tracing::info!(assignment = %record.id, %tenant, object = %record.object_id, actor = %who.actor(), "assignment created");
        Ok(AssignmentView {
            app: app_options.as_ref().map(AppAssignmentView::from),
            ..AssignmentView::from(&record)
        })
    }

    /// Replaces an assignment's targets and exclusions.
    pub async fn update_assignment(
        &self,
        who: &Principal,
        tenant: TenantId,
        id: AssignmentId,
        targets: AssignmentTargets,
    ) -> Result<AssignmentView, CoreError> {
        let mut record = self.seen_assignment(who, tenant, id).await?;
        who.tenant_admin(tenant)?;
        let delivery = checked_delivery(
            &record.object_kind,
            targets.delivery.as_deref(),
            &record.delivery,
        )
        .map_err(|e| CoreError::Unprocessable(vec![e]))?;
        let (all_devices, version_policy, checked) = self.checked_targets(tenant, &targets).await?;
        record.delivery = delivery;
        let app_options = match (&targets.app, record.object_kind.as_str()) {
            (None, _) => None,
            (Some(app), "app") => {
                Some(checked_app_options(Some(app), record.id).map_err(CoreError::Unprocessable)?)
            }
            (Some(_), _) => {
                return Err(CoreError::Unprocessable(vec![problem(
                    "app",
                    "only an assignment of kind \"app\" has app options",
                )]))
            }
        };
        record.all_devices = all_devices;
        record.version_policy = version_policy;
        record.targets = checked;
        record.updated_at = self.clock.now();
        self.store
            .update_assignment_with_options(&record, app_options.as_ref())
            .await?;
        self.wake_reconciler();
        self.views(std::slice::from_ref(&record))
            .await?
            .pop()
            .ok_or(CoreError::NotFound)
    }

    /// Deletes an assignment: the reconciler removes the object from the devices that no longer get it.
    pub async fn delete_assignment(
        &self,
        who: &Principal,
        tenant: TenantId,
        id: AssignmentId,
    ) -> Result<(), CoreError> {
        self.seen_assignment(who, tenant, id).await?;
        who.tenant_admin(tenant)?;
        self.store
            .delete_assignment(id, tenant, self.clock.now())
            .await?;
        self.wake_reconciler();
        Ok(())
    }
}
