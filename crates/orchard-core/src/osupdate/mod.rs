//! OS currency per tenant: a policy (the latest release for each device's model, or a pinned version, by a
//! deadline), the catalogue of releases per model it resolves against, and how each device is brought there —
//! iOS 17+ through a `softwareupdate.enforcement.specific` declaration (see [`crate::declarative`]), older
//! iPads through AvailableOSUpdates → ScheduleOSUpdate → OSUpdateStatus, queued once each — and a compliance
//! view per device and per tenant.
//!
//! The policy is one per tenant for now. When generic assignments exist, an OS policy becomes an assignable
//! object like a profile: [`resolve_target`] takes the policy that applies to the device (by its assignments,
//! with the tenant's as the default) instead of the tenant's, and nothing else here changes.

pub mod catalogue;
pub mod compliance;
pub(crate) mod legacy;

use orchard_protocol::commands::Command;
use orchard_protocol::declarative::SyncTokens;
use orchard_store::{Device, OsCatalogueEntry, OsPolicyRecord};
use orchard_types::{ChannelId, QueuedBy, TenantId, UnixTime};
use serde::{Deserialize, Serialize};

use crate::access::principal::Principal;
use crate::commands::secrets::CommandTarget;
use crate::declarative::set::{self, takes_enforcement, SetInputs};
use crate::{CoreError, Orchard};

pub use catalogue::OsCatalogueSettings;

/// What a device of a tenant with a policy should run.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OsTarget {
    pub version: String,
    /// The exact build, when the policy pins one or the catalogue knows the model's.
    pub build: Option<String>,
    /// `yyyy-mm-ddThh:mm:ss`, the iPad's local time.
    pub deadline_local: String,
    pub details_url: Option<String>,
}

/// "18.10.1" → [18, 10, 1] for ordering (18.10 > 18.9); unreadable parts count as 0.
pub fn version_key(version: &str) -> Vec<u32> {
    let mut key: Vec<u32> = version
        .split('.')
        .map(|part| part.trim().parse().unwrap_or(0))
        .collect();
    while key.len() > 1 && key.last() == Some(&0) {
        key.pop();
    }
    key
}

/// Whether `current` is older than `target` (an unknown current version is behind).
pub fn is_behind(current: Option<&str>, target: &str) -> bool {
    current.is_none_or(|c| version_key(c) < version_key(target))
}

/// The target of `policy` for a device of `product_type`: the pinned version (with the pinned build, or the
/// catalogue's build for the model), or the newest release the catalogue lists for the model. None when the
/// policy follows the latest release and the catalogue does not know the model.
pub fn resolve_target(
    policy: &OsPolicyRecord,
    product_type: Option<&str>,
    catalogue: &[OsCatalogueEntry],
) -> Option<OsTarget> {
    let of_model = |e: &&OsCatalogueEntry| Some(e.product_type.as_str()) == product_type;
    let (version, build) = match (policy.target.as_str(), &policy.pinned_version) {
        ("pinned", Some(version)) => {
            let build = policy.pinned_build.clone().or_else(|| {
                catalogue
                    .iter()
                    .filter(of_model)
                    .find(|e| e.os_version == *version)
                    .map(|e| e.build.clone())
            });
            (version.clone(), build)
        }
        _ => {
            let newest = catalogue
                .iter()
                .filter(of_model)
                .max_by_key(|e| version_key(&e.os_version))?;
            (newest.os_version.clone(), Some(newest.build.clone()))
        }
    };
    Some(OsTarget {
        version,
        build,
        deadline_local: policy.deadline_local.clone(),
        details_url: policy.details_url.clone(),
    })
}

/// `PUT /tenants/{id}/os-policy`.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct OsPolicyInput {
    /// `latest` (the newest release the catalogue lists for each device's model) or `pinned`.
    pub target: String,
    /// The pinned version, e.g. `18.2` (only with `pinned`).
    #[serde(default)]
    pub version: Option<String>,
    /// The pinned build, e.g. `22C152` (optional, only with `pinned`).
    #[serde(default)]
    pub build: Option<String>,
    /// When the update must be installed, in the iPad's local time: `yyyy-mm-ddThh:mm:ss`.
    pub deadline: String,
    /// An https page shown to the user about the update.
    #[serde(default)]
    pub details_url: Option<String>,
}

/// A tenant's OS policy as the API shows it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OsPolicyView {
    pub tenant_id: String,
    pub target: String,
    pub version: Option<String>,
    pub build: Option<String>,
    pub deadline: String,
    pub details_url: Option<String>,
    /// Grows with every change.
    pub revision: i64,
    pub updated_at: String,
    pub updated_by: Option<String>,
}

impl From<&OsPolicyRecord> for OsPolicyView {
    fn from(p: &OsPolicyRecord) -> Self {
        OsPolicyView {
            tenant_id: p.tenant_id.to_string(),
            target: p.target.clone(),
            version: p.pinned_version.clone(),
            build: p.pinned_build.clone(),
            deadline: p.deadline_local.clone(),
            details_url: p.details_url.clone(),
            revision: p.revision,
            updated_at: p.updated_at.to_rfc3339(),
            updated_by: p.updated_by.clone(),
        }
    }
}

const DEADLINE_FORMAT: &[time::format_description::FormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");

/// The deadline as a moment, reading the iPad's local time as UTC (Orchard does not know the iPad's time
/// zone): "deadline missed" may show up to a time zone's offset early or late.
pub fn deadline_instant(deadline_local: &str) -> Option<UnixTime> {
    time::PrimitiveDateTime::parse(deadline_local, DEADLINE_FORMAT)
        .ok()
        .map(|t| UnixTime(t.assume_utc().unix_timestamp()))
}

fn validate(input: &OsPolicyInput) -> Result<(), CoreError> {
    let invalid = |m: String| Err(CoreError::Invalid(m));
    match input.target.as_str() {
        "latest" => {
            if input.version.is_some() || input.build.is_some() {
                return invalid("version and build are only for target \"pinned\"".into());
            }
        }
        "pinned" => match &input.version {
            None => return invalid("target \"pinned\" needs a version".into()),
            Some(v) if !catalogue::is_version(v) => {
                return invalid(format!("version {v:?} is not like 18.2"))
            }
            Some(_) => {
                if let Some(b) = input.build.as_deref().filter(|b| !catalogue::is_build(b)) {
                    return invalid(format!("build {b:?} is not like 22C152"));
                }
            }
        },
        other => {
            return invalid(format!(
                "target {other:?}: expected \"latest\" or \"pinned\""
            ))
        }
    }
    if deadline_instant(&input.deadline).is_none() {
        return invalid(format!(
            "deadline {:?} is not yyyy-mm-ddThh:mm:ss (the iPad's local time)",
            input.deadline
        ));
    }
    if let Some(url) = &input.details_url {
        if !url.starts_with("https://") || url.len() > 2048 || url.chars().any(char::is_whitespace)
        {
            return invalid("details_url must be an https URL".into());
        }
    }
    Ok(())
}

impl Orchard {
    /// `GET /tenants/{id}/os-policy`: the tenant's policy (everyone who sees the tenant).
    pub async fn os_policy(
        &self,
        who: &Principal,
        tenant: TenantId,
    ) -> Result<OsPolicyView, CoreError> {
        self.store
            .get_tenant(who.scope(), tenant)
            .await?
            .ok_or(CoreError::NotFound)?;
        self.store
            .os_policy(who.scope(), tenant)
            .await?
            .as_ref()
            .map(OsPolicyView::from)
            .ok_or(CoreError::NotFound)
    }

    /// `PUT /tenants/{id}/os-policy` (the tenant's admins and operators): saves the policy and, in the same
    /// unit of work, queues what each enrolled device needs — a DeclarativeManagement command where its
    /// declaration set changed (iOS 17+), AvailableOSUpdates where an older iPad is behind.
    pub async fn put_os_policy(
        &self,
        who: &Principal,
        tenant: TenantId,
        input: OsPolicyInput,
    ) -> Result<OsPolicyView, CoreError> {
        self.store
            .get_tenant(who.scope(), tenant)
            .await?
            .ok_or(CoreError::NotFound)?;
        let admin = who.tenant_admin(tenant)?;
        validate(&input)?;
        let now = self.clock.now();
        let pinned = input.target == "pinned";
        let record = OsPolicyRecord {
            tenant_id: tenant,
            target: input.target,
            pinned_version: input.version.filter(|_| pinned),
            pinned_build: input.build.filter(|_| pinned),
            deadline_local: input.deadline,
            details_url: input.details_url,
            revision: 0,
            updated_at: now,
            updated_by: Some(who.actor()),
        };
        let devices = self
            .store
            .enrolled_devices_of_tenant(admin.principal().scope(), tenant)
            .await?;
        let catalogue = self.store.os_catalogue().await?;
        let mut unit = self.store.begin_unit().await?;
        let saved = unit.put_os_policy(&record).await?;
        let queued = self
            .queue_for_policy(&mut unit, &saved, &devices, &catalogue, now)
            .await?;
        self.commit_unit(unit).await?;
        tracing::info!(%tenant, revision = saved.revision, queued, actor = %who.actor(), "os policy saved");
        Ok(OsPolicyView::from(&saved))
    }

    /// Re-applies a policy after the catalogue changed (its own unit of work).
    pub(crate) async fn apply_os_policy(
        &self,
        scope: orchard_store::Scope,
        policy: &OsPolicyRecord,
        now: UnixTime,
    ) -> Result<usize, CoreError> {
        let devices = self
            .store
            .enrolled_devices_of_tenant(scope, policy.tenant_id)
            .await?;
        let catalogue = self.store.os_catalogue().await?;
        let mut unit = self.store.begin_unit().await?;
        let queued = self
            .queue_for_policy(&mut unit, policy, &devices, &catalogue, now)
            .await?;
        self.commit_unit(unit).await?;
        Ok(queued)
    }

    async fn queue_for_policy(
        &self,
        unit: &mut orchard_store::UnitOfWork,
        policy: &OsPolicyRecord,
        devices: &[Device],
        catalogue: &[OsCatalogueEntry],
        now: UnixTime,
    ) -> Result<usize, CoreError> {
        let mut queued = 0;
        for device in devices {
            let target = resolve_target(policy, device.product_name.as_deref(), catalogue);
            if self
                .sync_device_declarations(unit, device, target.as_ref(), now)
                .await?
            {
                queued += 1;
            }
            if self
                .start_legacy_update(unit, device, target.as_ref(), now)
                .await?
            {
                queued += 1;
            }
        }
        Ok(queued)
    }

    /// Inside a unit: a Shared iPad user's channel gets its user-scoped declaration set (iOS 17+ or unknown, as
    /// the device channel) and one DeclarativeManagement command on that channel when its token changed.
    pub(crate) async fn sync_user_declarations(
        &self,
        unit: &mut orchard_store::UnitOfWork,
        device: &Device,
        user_short_name: &str,
        now: UnixTime,
    ) -> Result<bool, CoreError> {
        if !takes_enforcement(device.os_version.as_deref()) {
            return Ok(false);
        }
        let tenant = device.tenant_id.to_string();
        let id = device.id.to_string();
        let rendered = set::render(set::generate(&SetInputs {
            tenant_id: &tenant,
            device_id: &id,
            user_short_name: Some(user_short_name),
            os_version: device.os_version.as_deref(),
            os_target: None,
            extra: &[],
        }));
        let channel = ChannelId::user(&device.udid, user_short_name);
        let tokens = SyncTokens {
            declarations_token: rendered.token.clone(),
            timestamp: now.to_rfc3339(),
        };
        let command = self.new_command(
            &Command::DeclarativeManagement {
                data: Some(tokens.to_command_data()),
            },
            CommandTarget {
                device_id: device.id,
                tenant_id: device.tenant_id,
                channel: &channel,
            },
            QueuedBy::Declarative,
            now,
        )?;
        Ok(unit
            .ddm_set_changed(&channel, device.id, &rendered.token, &command, now)
            .await?)
    }

    /// Inside a unit: recomputes the device channel's declaration set (iOS 17+ or unknown) and queues one
    /// DeclarativeManagement command when its token changed and none waits. Returns whether one was queued.
    pub(crate) async fn sync_device_declarations(
        &self,
        unit: &mut orchard_store::UnitOfWork,
        device: &Device,
        target: Option<&OsTarget>,
        now: UnixTime,
    ) -> Result<bool, CoreError> {
        if !takes_enforcement(device.os_version.as_deref()) {
            return Ok(false);
        }
        self.queue_declarations_sync(unit, device, target, now)
            .await
    }

    /// The OS target of the device's tenant policy for its model, read inside a unit.
    pub(crate) async fn os_target_in_unit(
        &self,
        unit: &mut orchard_store::UnitOfWork,
        device: &Device,
    ) -> Result<Option<OsTarget>, CoreError> {
        let Some(policy) = unit.os_policy(device.tenant_id).await? else {
            return Ok(None);
        };
        let catalogue = match device.product_name.as_deref() {
            Some(model) => unit.os_catalogue_for(model).await?,
            None => Vec::new(),
        };
        Ok(resolve_target(
            &policy,
            device.product_name.as_deref(),
            &catalogue,
        ))
    }

    /// Inside a unit: the device channel's set as it is now (OS target, declared profiles) and one
    /// DeclarativeManagement command when its token changed and none waits. Returns whether one was queued.
    pub(crate) async fn queue_declarations_sync(
        &self,
        unit: &mut orchard_store::UnitOfWork,
        device: &Device,
        target: Option<&OsTarget>,
        now: UnixTime,
    ) -> Result<bool, CoreError> {
        let declared = unit.declared_profiles(device.id).await?;
        let extra = self.declared_profile_declarations(device.id, &declared)?;
        let tenant = device.tenant_id.to_string();
        let id = device.id.to_string();
        let rendered = set::render(set::generate(&SetInputs {
            tenant_id: &tenant,
            device_id: &id,
            user_short_name: None,
            os_version: device.os_version.as_deref(),
            os_target: target,
            extra: &extra,
        }));
        let channel = ChannelId::device(&device.udid);
        let tokens = SyncTokens {
            declarations_token: rendered.token.clone(),
            timestamp: now.to_rfc3339(),
        };
        let command = self.new_command(
            &Command::DeclarativeManagement {
                data: Some(tokens.to_command_data()),
            },
            CommandTarget {
                device_id: device.id,
                tenant_id: device.tenant_id,
                channel: &channel,
            },
            QueuedBy::Declarative,
            now,
        )?;
        Ok(unit
            .ddm_set_changed(&channel, device.id, &rendered.token, &command, now)
            .await?)
    }
}
