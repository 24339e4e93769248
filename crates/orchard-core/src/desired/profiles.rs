//! The profile library: per-tenant profiles and global ones operators offer to every tenant (a tenant sees its
//! own and the global ones and changes only its own). A profile is created from an uploaded .mobileconfig or
//! from JSON; every change is a new immutable numbered version whose PayloadIdentifier stays the profile's and
//! whose PayloadUUID is new. Every version is validated against Apple's schema, stored sealed (secrets
//! included) with a redacted copy for display, and installed signed by Orchard's profile signer. What each
//! device has of a profile is kept in one table (`device_profiles`) that acknowledged InstallProfile and
//! RemoveProfile commands and ProfileList results keep current; assignments and the reconciler build on it.

use orchard_protocol::commands::Command;
use orchard_protocol::results::ProfileListItem;
use orchard_store::{
    Device, DeviceProfileRecord, ProfileCommand, ProfileRecord, ProfileSource,
    ProfileVersionRecord, UnitOfWork,
};
use orchard_types::{
    ChannelId, CommandStatus, CommandUuid, DeviceId, ProfileId, RequestType, TenantId, UnixTime,
};
use plist::{Dictionary, Value};
use serde::Serialize;

use super::mobileconfig::{self, ProfileJson};
use super::profile_schema::{self, ProfileTarget, ValidationError};
use crate::access::capability::OperatorCtx;
use crate::access::principal::Principal;
use crate::access::roles::Ability;
use crate::commands::secrets::CommandTarget;
use crate::{CoreError, Orchard};

/// The longest profile name and identifier accepted.
const MAX_NAME: usize = 200;

/// How a new version arrives.
#[derive(Debug, Clone)]
pub enum ProfileInput {
    /// A .mobileconfig: XML or binary plist, or CMS-signed.
    Upload {
        bytes: Vec<u8>,
        /// Orchard's name for the profile (default: its PayloadDisplayName, else its identifier).
        name: Option<String>,
        target: ProfileTarget,
    },
    /// Built from JSON.
    Json(ProfileJson),
}

/// A profile as listed.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProfileSummary {
    pub id: String,
    /// The owning tenant; null for a global profile.
    pub tenant_id: Option<String>,
    /// `tenant` or `global`.
    pub scope: &'static str,
    pub name: String,
    /// The PayloadIdentifier, the same in every version.
    pub identifier: String,
    pub latest_version: i64,
    pub created_at: String,
    pub created_by: Option<String>,
    pub updated_at: String,
    pub archived_at: Option<String>,
}

impl From<&ProfileRecord> for ProfileSummary {
    fn from(p: &ProfileRecord) -> Self {
        ProfileSummary {
            id: p.id.to_string(),
            tenant_id: p.tenant_id.map(|t| t.to_string()),
            scope: if p.tenant_id.is_some() {
                "tenant"
            } else {
                "global"
            },
            name: p.name.clone(),
            identifier: p.identifier.clone(),
            latest_version: p.latest_version,
            created_at: p.created_at.to_rfc3339(),
            created_by: p.created_by.clone(),
            updated_at: p.updated_at.to_rfc3339(),
            archived_at: p.archived_at.map(UnixTime::to_rfc3339),
        }
    }
}

/// Who signed an uploaded signed profile (the signature verified; Orchard installs its own signature).
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SignerView {
    pub subject: Option<String>,
    pub issuer: Option<String>,
    pub expires_at: Option<String>,
}

/// One version, without its content.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProfileVersionView {
    pub version: i64,
    /// The profile's PayloadUUID in this version.
    pub payload_uuid: String,
    pub display_name: Option<String>,
    pub payload_types: Vec<String>,
    /// How many secrets the content hides (shown as `"<sealed>"`).
    pub sealed_secrets: i64,
    pub shared_ipad: bool,
    pub user_channel: bool,
    /// `upload`, `signed_upload` or `json`.
    pub source: &'static str,
    pub signer: Option<SignerView>,
    pub created_at: String,
    pub created_by: Option<String>,
}

impl From<&ProfileVersionRecord> for ProfileVersionView {
    fn from(v: &ProfileVersionRecord) -> Self {
        ProfileVersionView {
            version: v.version,
            payload_uuid: v.payload_uuid.clone(),
            display_name: v.display_name.clone(),
            payload_types: v.payload_types.clone(),
            sealed_secrets: v.sealed_secrets,
            shared_ipad: v.shared_ipad,
            user_channel: v.user_channel,
            source: v.source.as_str(),
            signer: (v.source == ProfileSource::SignedUpload).then(|| SignerView {
                subject: v.signer_subject.clone(),
                issuer: v.signer_issuer.clone(),
                expires_at: v.signer_not_after.map(UnixTime::to_rfc3339),
            }),
            created_at: v.created_at.to_rfc3339(),
            created_by: v.created_by.clone(),
        }
    }
}

/// A profile with its versions and the latest version's content (secrets replaced by `"<sealed>"`).
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProfileDetail {
    pub profile: ProfileSummary,
    /// Newest first.
    pub versions: Vec<ProfileVersionView>,
    /// The latest version as JSON (data base64, dates RFC 3339), every secret `"<sealed>"`.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub content: serde_json::Value,
}

/// One version with its content (secrets replaced by `"<sealed>"`).
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProfileVersionDetail {
    pub version: ProfileVersionView,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub content: serde_json::Value,
}

/// What a device has of a profile.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceProfileView {
    pub device_id: String,
    pub profile_id: String,
    /// The version on the device, known from an acknowledged install or its ProfileList.
    pub installed_version: Option<i64>,
    /// The PayloadUUID on the device (set whenever it has the profile, ours or not).
    pub installed_payload_uuid: Option<String>,
    pub installed_at: Option<String>,
    /// `install` or `remove`, queued and not answered yet.
    pub pending_action: Option<String>,
    pub pending_version: Option<i64>,
    pub pending_command: Option<String>,
    /// The device's error for the last profile command, if it failed.
    pub last_error: Option<serde_json::Value>,
    pub updated_at: String,
    /// `installed` (our latest-known version on the device), `pending` (a command waits for the device),
    /// `failed` (the last command failed: `last_error`, retried at `next_attempt_at`), `foreign` (a profile
    /// with this identifier that is not one of our versions), `absent`.
    pub state: &'static str,
    /// Failed commands since the last success.
    pub attempts: i64,
    /// When the reconciler tries again after a failure.
    pub next_attempt_at: Option<String>,
    /// Installed by the reconciler for an assignment (only such profiles are removed by it).
    pub assigned: bool,
    /// The version the device's declaration set names (`configuration.legacy`), when the assignment
    /// delivers the profile as a declaration; the device's status report sets `installed_version` or
    /// `last_error`.
    pub declared_version: Option<i64>,
}

impl From<&DeviceProfileRecord> for DeviceProfileView {
    fn from(r: &DeviceProfileRecord) -> Self {
        DeviceProfileView {
            device_id: r.device_id.to_string(),
            profile_id: r.profile_id.to_string(),
            installed_version: r.installed_version,
            installed_payload_uuid: r.installed_payload_uuid.clone(),
            installed_at: r.installed_at.map(UnixTime::to_rfc3339),
            pending_action: r.pending_action.clone(),
            pending_version: r.pending_version,
            pending_command: r.pending_command.clone(),
            last_error: r.last_error.as_deref().map(|e| {
                serde_json::from_str(e).unwrap_or_else(|_| serde_json::Value::String(e.into()))
            }),
            updated_at: r.updated_at.to_rfc3339(),
            state: if r.pending_action.is_some()
                || r.declared_version
                    .is_some_and(|v| r.installed_version != Some(v) && r.last_error.is_none())
            {
                "pending"
            } else if r.last_error.is_some() {
                "failed"
            } else if r.installed_version.is_some() {
                "installed"
            } else if r.installed_payload_uuid.is_some() {
                "foreign"
            } else {
                "absent"
            },
            attempts: r.attempts,
            next_attempt_at: r.next_attempt_at.map(UnixTime::to_rfc3339),
            assigned: r.reconciled || r.declared_version.is_some(),
            declared_version: r.declared_version,
        }
    }
}

/// The queued profile command.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueuedProfileCommand {
    pub command_uuid: String,
    /// `InstallProfile` or `RemoveProfile`.
    pub request_type: &'static str,
    pub device_id: String,
    pub profile_id: String,
    /// The version an install installs.
    pub version: Option<i64>,
}

/// Who owns the profile being written.
#[derive(Debug, Clone, Copy)]
enum Owner {
    Tenant(TenantId),
    Global,
}

impl Owner {
    fn tenant(self) -> Option<TenantId> {
        match self {
            Owner::Tenant(t) => Some(t),
            Owner::Global => None,
        }
    }
}

/// A version ready to store.
struct PreparedVersion {
    profile: Dictionary,
    name: String,
    identifier: String,
    source: ProfileSource,
    signer: Option<orchard_pki::signature::ProfileSigner>,
    target: ProfileTarget,
}

fn check_name(what: &str, value: &str) -> Result<(), CoreError> {
    if value.trim().is_empty() || value.len() > MAX_NAME {
        return Err(CoreError::Invalid(format!(
            "{what} must be 1 to {MAX_NAME} characters"
        )));
    }
    Ok(())
}

fn check_identifier(identifier: &str) -> Result<(), CoreError> {
    check_name("the identifier", identifier)?;
    if !identifier
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(CoreError::Invalid(format!(
            "the identifier {identifier:?} must be reverse DNS (letters, digits, '.', '-', '_')"
        )));
    }
    Ok(())
}

fn sealed_context(profile: ProfileId, version: i64) -> Vec<u8> {
    format!("profiles:{profile}:v{version}").into_bytes()
}

/// Turns the input into a profile plist with its identifier; `existing` is the profile a new version is for.
fn prepare(
    input: ProfileInput,
    existing: Option<&ProfileRecord>,
) -> Result<PreparedVersion, CoreError> {
    match input {
        ProfileInput::Json(json) => {
            check_name("the name", &json.name)?;
            let identifier = match (&json.identifier, existing) {
                (Some(given), Some(p)) if *given != p.identifier => {
                    return Err(CoreError::Invalid(format!(
                        "the identifier stays {:?} in every version of the profile",
                        p.identifier
                    )))
                }
                (_, Some(p)) => p.identifier.clone(),
                (Some(given), None) => given.trim().to_owned(),
                (None, None) => {
                    return Err(CoreError::Invalid(
                        "a new profile needs an identifier".into(),
                    ))
                }
            };
            check_identifier(&identifier)?;
            let profile = mobileconfig::build_from_json(&json, &identifier)?;
            Ok(PreparedVersion {
                profile,
                name: json.name.trim().to_owned(),
                identifier,
                source: ProfileSource::Json,
                signer: None,
                target: ProfileTarget {
                    shared_ipad: json.shared_ipad || json.user_channel,
                    user_channel: json.user_channel,
                },
            })
        }
        ProfileInput::Upload {
            bytes,
            name,
            target,
        } => {
            let opened = mobileconfig::open_upload(&bytes)?;
            let identifier = match opened.profile.get("PayloadIdentifier") {
                Some(Value::String(s)) => s.clone(),
                Some(other) => {
                    return Err(CoreError::Unprocessable(vec![ValidationError {
                        path: "profile.PayloadIdentifier".into(),
                        message: format!(
                            "expected string, found {}",
                            mobileconfig::describe(other)
                        ),
                    }]))
                }
                None => {
                    return Err(CoreError::Unprocessable(vec![ValidationError {
                        path: "profile.PayloadIdentifier".into(),
                        message: "required key is missing".into(),
                    }]))
                }
            };
            if let Some(p) = existing {
                if identifier != p.identifier {
                    return Err(CoreError::Unprocessable(vec![ValidationError {
                        path: "profile.PayloadIdentifier".into(),
                        message: format!(
                            "{identifier:?} is not the profile's identifier {:?}, which every version keeps",
                            p.identifier
                        ),
                    }]));
                }
            }
            check_identifier(&identifier)?;
            let name = name
                .map(|n| n.trim().to_owned())
                .or_else(|| existing.map(|p| p.name.clone()))
                .or_else(|| {
                    opened
                        .profile
                        .get("PayloadDisplayName")
                        .and_then(Value::as_string)
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                })
                .unwrap_or_else(|| identifier.clone());
            check_name("the name", &name)?;
            Ok(PreparedVersion {
                profile: opened.profile,
                name,
                identifier,
                source: if opened.signer.is_some() {
                    ProfileSource::SignedUpload
                } else {
                    ProfileSource::Upload
                },
                signer: opened.signer,
                target: ProfileTarget {
                    shared_ipad: target.shared_ipad || target.user_channel,
                    user_channel: target.user_channel,
                },
            })
        }
    }
}

impl Orchard {
    /// The previous version's plist, opened (for carrying its secrets into a new version, and for installing).
    fn open_version(&self, v: &ProfileVersionRecord) -> Result<Dictionary, CoreError> {
        let plist = self
            .pki
            .data_key
            .open(&v.plist_sealed, &sealed_context(v.profile_id, v.version))?;
        orchard_protocol::parse_dictionary(plist.expose())
            .map_err(|e| CoreError::Internal(format!("stored profile version unreadable: {e}")))
    }

    /// Validates, stamps (identifier, a new PayloadUUID) and seals a version.
    fn seal_version(
        &self,
        prepared: &mut PreparedVersion,
        profile_id: ProfileId,
        version: i64,
        previous: Option<&ProfileVersionRecord>,
        who: &Principal,
    ) -> Result<ProfileVersionRecord, CoreError> {
        let previous_plist = previous.map(|p| self.open_version(p)).transpose()?;
        let mut errors =
            mobileconfig::keep_sealed_secrets(&mut prepared.profile, previous_plist.as_ref());
        let payload_uuid = mobileconfig::new_payload_uuid();
        prepared
            .profile
            .insert("PayloadUUID".into(), Value::String(payload_uuid.clone()));
        errors.extend(profile_schema::validate(
            &prepared.profile,
            prepared.target,
        )?);
        if !errors.is_empty() {
            return Err(CoreError::Unprocessable(errors));
        }
        let xml = mobileconfig::to_xml(&prepared.profile)?;
        let (redacted, sealed_secrets) = mobileconfig::redacted(&prepared.profile);
        let now = self.clock.now();
        Ok(ProfileVersionRecord {
            profile_id,
            version,
            payload_uuid,
            display_name: prepared
                .profile
                .get("PayloadDisplayName")
                .and_then(Value::as_string)
                .map(str::to_owned),
            payload_types: mobileconfig::payload_types(&prepared.profile),
            plist_sealed: self
                .pki
                .data_key
                .seal(&xml, &sealed_context(profile_id, version))?,
            redacted_json: redacted.to_string(),
            sealed_secrets,
            shared_ipad: prepared.target.shared_ipad,
            user_channel: prepared.target.user_channel,
            source: prepared.source,
            signer_subject: prepared.signer.as_ref().map(|s| s.subject.clone()),
            signer_issuer: prepared.signer.as_ref().map(|s| s.issuer.clone()),
            signer_not_after: prepared.signer.as_ref().map(|s| s.not_after),
            created_at: now,
            created_by: Some(who.actor()),
        })
    }

    async fn create_profile_for(
        &self,
        who: &Principal,
        owner: Owner,
        input: ProfileInput,
    ) -> Result<ProfileDetail, CoreError> {
        let mut prepared = prepare(input, None)?;
        if self
            .store
            .profile_identifier_taken(owner.tenant(), &prepared.identifier)
            .await?
        {
            return Err(CoreError::Conflict(format!(
                "a profile with the identifier {:?} exists already (devices can hold only one)",
                prepared.identifier
            )));
        }
        let id = ProfileId::new();
        let first = self.seal_version(&mut prepared, id, 1, None, who)?;
        let record = ProfileRecord {
            id,
            tenant_id: owner.tenant(),
            name: prepared.name.clone(),
            identifier: prepared.identifier.clone(),
            latest_version: 1,
            created_at: first.created_at,
            created_by: Some(who.actor()),
            updated_at: first.created_at,
            archived_at: None,
        };
        self.store
            .create_profile(&record, &first)
            .await
            .map_err(|e| match e {
                orchard_store::StoreError::Conflict(_) => CoreError::Conflict(format!(
                    "a profile with the identifier {:?} exists already",
                    record.identifier
                )),
                other => other.into(),
            })?;
        tracing::info!(profile = %id, tenant = ?owner.tenant(), actor = %who.actor(), "profile created");
        self.detail_of(&record).await
    }

    async fn add_version_for(
        &self,
        who: &Principal,
        profile: &ProfileRecord,
        input: ProfileInput,
    ) -> Result<ProfileDetail, CoreError> {
        if profile.archived_at.is_some() {
            return Err(CoreError::Conflict("the profile is archived".into()));
        }
        let latest = self
            .store
            .get_profile_version(profile.id, profile.latest_version)
            .await?
            .ok_or_else(|| CoreError::Internal("a profile lost its latest version".into()))?;
        let mut prepared = prepare(input, Some(profile))?;
        let next = profile.latest_version + 1;
        let version = self.seal_version(&mut prepared, profile.id, next, Some(&latest), who)?;
        self.store
            .add_profile_version(&version, &prepared.name)
            .await?;
        // Devices that are assigned the profile get the new version.
        self.wake_reconciler();
        tracing::info!(profile = %profile.id, version = next, actor = %who.actor(), "profile version added");
        let updated = self
            .store
            .get_profile(who.scope(), profile.id)
            .await?
            .ok_or(CoreError::NotFound)?;
        self.detail_of(&updated).await
    }

    async fn detail_of(&self, p: &ProfileRecord) -> Result<ProfileDetail, CoreError> {
        let versions = self.store.list_profile_versions(p.id).await?;
        let content = versions
            .first()
            .map(|v| serde_json::from_str(&v.redacted_json))
            .transpose()
            .map_err(|e| CoreError::Internal(format!("stored profile view unreadable: {e}")))?
            .unwrap_or(serde_json::Value::Null);
        Ok(ProfileDetail {
            profile: ProfileSummary::from(p),
            versions: versions.iter().map(ProfileVersionView::from).collect(),
            content,
        })
    }

    /// The tenant (in the caller's scope), or NotFound.
    async fn visible_tenant(&self, who: &Principal, tenant: TenantId) -> Result<(), CoreError> {
        self.store
            .get_tenant(who.scope(), tenant)
            .await?
            .ok_or(CoreError::NotFound)?;
        Ok(())
    }

    /// A profile the tenant sees (its own or a global one), live or archived; another tenant's is NotFound.
    async fn tenant_profile(
        &self,
        who: &Principal,
        tenant: TenantId,
        id: ProfileId,
    ) -> Result<ProfileRecord, CoreError> {
        self.visible_tenant(who, tenant).await?;
        let profile = self
            .store
            .get_profile(who.scope(), id)
            .await?
            .ok_or(CoreError::NotFound)?;
        match profile.tenant_id {
            None => Ok(profile),
            Some(t) if t == tenant => Ok(profile),
            Some(_) => Err(CoreError::NotFound),
        }
    }

    /// A global profile (anyone signed in sees them).
    async fn global_profile(
        &self,
        who: &Principal,
        id: ProfileId,
    ) -> Result<ProfileRecord, CoreError> {
        match self.store.get_profile(who.scope(), id).await? {
            Some(p) if p.tenant_id.is_none() => Ok(p),
            _ => Err(CoreError::NotFound),
        }
    }

    /// A tenant's profile the caller may change (the tenant's admins and operators); a global profile seen
    /// from a tenant is read-only there.
    async fn changeable_tenant_profile(
        &self,
        who: &Principal,
        tenant: TenantId,
        id: ProfileId,
    ) -> Result<ProfileRecord, CoreError> {
        let profile = self.tenant_profile(who, tenant, id).await?;
        who.tenant_admin(tenant)?;
        if profile.tenant_id.is_none() {
            return Err(CoreError::Forbidden(
                "a global profile is changed by operators under /profiles".into(),
            ));
        }
        Ok(profile)
    }

    /// `GET /tenants/{id}/profiles`: the tenant's live profiles and the global ones.
    pub async fn list_tenant_profiles(
        &self,
        who: &Principal,
        tenant: TenantId,
    ) -> Result<Vec<ProfileSummary>, CoreError> {
        self.visible_tenant(who, tenant).await?;
        Ok(self
            .store
            .list_profiles(who.scope(), Some(tenant))
            .await?
            .iter()
            .map(ProfileSummary::from)
            .collect())
    }

    /// Creates a tenant's profile (its admins and operators).
    pub async fn create_tenant_profile(
        &self,
        who: &Principal,
        tenant: TenantId,
        input: ProfileInput,
    ) -> Result<ProfileDetail, CoreError> {
        self.visible_tenant(who, tenant).await?;
        who.tenant_admin(tenant)?;
        self.create_profile_for(who, Owner::Tenant(tenant), input)
            .await
    }

    /// A profile the tenant sees, with its versions.
    pub async fn tenant_profile_detail(
        &self,
        who: &Principal,
        tenant: TenantId,
        id: ProfileId,
    ) -> Result<ProfileDetail, CoreError> {
        let profile = self.tenant_profile(who, tenant, id).await?;
        self.detail_of(&profile).await
    }

    /// One version of a profile the tenant sees, with its content (secrets replaced).
    pub async fn tenant_profile_version(
        &self,
        who: &Principal,
        tenant: TenantId,
        id: ProfileId,
        version: i64,
    ) -> Result<ProfileVersionDetail, CoreError> {
        let profile = self.tenant_profile(who, tenant, id).await?;
        self.version_detail(&profile, version).await
    }

    async fn version_detail(
        &self,
        profile: &ProfileRecord,
        version: i64,
    ) -> Result<ProfileVersionDetail, CoreError> {
        let v = self
            .store
            .get_profile_version(profile.id, version)
            .await?
            .ok_or(CoreError::NotFound)?;
        Ok(ProfileVersionDetail {
            version: ProfileVersionView::from(&v),
            content: serde_json::from_str(&v.redacted_json)
                .map_err(|e| CoreError::Internal(format!("stored profile view unreadable: {e}")))?,
        })
    }

    /// A new version of a tenant's profile.
    pub async fn add_tenant_profile_version(
        &self,
        who: &Principal,
        tenant: TenantId,
        id: ProfileId,
        input: ProfileInput,
    ) -> Result<ProfileDetail, CoreError> {
        let profile = self.changeable_tenant_profile(who, tenant, id).await?;
        self.add_version_for(who, &profile, input).await
    }

    /// Archives a tenant's profile: it leaves the list and takes no new versions or installs; devices keep
    /// what they have (removing it from them is a RemoveProfile, later the reconciler's).
    pub async fn archive_tenant_profile(
        &self,
        who: &Principal,
        tenant: TenantId,
        id: ProfileId,
    ) -> Result<(), CoreError> {
        let profile = self.changeable_tenant_profile(who, tenant, id).await?;
        if profile.archived_at.is_some() {
            return Err(CoreError::Conflict(
                "the profile is archived already".into(),
            ));
        }
        self.store
            .archive_profile(profile.id, self.clock.now())
            .await?;
        tracing::info!(profile = %id, actor = %who.actor(), "profile archived");
        Ok(())
    }

    /// `GET /profiles`: the global profiles (everyone signed in).
    pub async fn list_global_profiles(
        &self,
        who: &Principal,
    ) -> Result<Vec<ProfileSummary>, CoreError> {
        Ok(self
            .store
            .list_profiles(who.scope(), None)
            .await?
            .iter()
            .map(ProfileSummary::from)
            .collect())
    }

    /// Creates a global profile (operators).
    pub async fn create_global_profile(
        &self,
        operator: &OperatorCtx,
        input: ProfileInput,
    ) -> Result<ProfileDetail, CoreError> {
        self.create_profile_for(operator.principal(), Owner::Global, input)
            .await
    }

    pub async fn global_profile_detail(
        &self,
        who: &Principal,
        id: ProfileId,
    ) -> Result<ProfileDetail, CoreError> {
        let profile = self.global_profile(who, id).await?;
        self.detail_of(&profile).await
    }

    pub async fn global_profile_version(
        &self,
        who: &Principal,
        id: ProfileId,
        version: i64,
    ) -> Result<ProfileVersionDetail, CoreError> {
        let profile = self.global_profile(who, id).await?;
        self.version_detail(&profile, version).await
    }

    /// A new version of a global profile (operators).
    pub async fn add_global_profile_version(
        &self,
        operator: &OperatorCtx,
        id: ProfileId,
        input: ProfileInput,
    ) -> Result<ProfileDetail, CoreError> {
        let profile = self.global_profile(operator.principal(), id).await?;
        self.add_version_for(operator.principal(), &profile, input)
            .await
    }

    /// Archives a global profile (operators).
    pub async fn archive_global_profile(
        &self,
        operator: &OperatorCtx,
        id: ProfileId,
    ) -> Result<(), CoreError> {
        let profile = self.global_profile(operator.principal(), id).await?;
        if profile.archived_at.is_some() {
            return Err(CoreError::Conflict(
                "the profile is archived already".into(),
            ));
        }
        self.store
            .archive_profile(profile.id, self.clock.now())
            .await?;
        tracing::info!(profile = %id, actor = %operator.principal().actor(), "global profile archived");
        Ok(())
    }

    /// The bytes Orchard installs for (profile, version): the profile plist signed by the profile signer, with
    /// the server CA embedded (what the enrollment profile carries).
    pub(crate) fn installable_profile(
        &self,
        v: &ProfileVersionRecord,
    ) -> Result<Vec<u8>, CoreError> {
        let plist = self
            .pki
            .data_key
            .open(&v.plist_sealed, &sealed_context(v.profile_id, v.version))?;
        Ok(orchard_pki::signature::sign_profile(
            plist.expose(),
            &self.pki.profile_signer,
            &[self.pki.server_ca.identity()],
        )?)
    }

    /// `POST /tenants/{id}/profiles/{profile}/install`: queues InstallProfile of `version` (default: the
    /// latest) for one of the tenant's devices (its admins and operators); the device's acknowledgement makes
    /// it the installed version.
    pub async fn install_profile_on_device(
        &self,
        who: &Principal,
        tenant: TenantId,
        id: ProfileId,
        device_id: DeviceId,
        version: Option<i64>,
    ) -> Result<QueuedProfileCommand, CoreError> {
        let profile = self.tenant_profile(who, tenant, id).await?;
        let device = self.tenant_device(who, tenant, device_id).await?;
        if profile.archived_at.is_some() {
            return Err(CoreError::Conflict("the profile is archived".into()));
        }
        let number = version.unwrap_or(profile.latest_version);
        let v = self
            .store
            .get_profile_version(profile.id, number)
            .await?
            .ok_or_else(|| CoreError::Invalid(format!("the profile has no version {number}")))?;
        let payload = self.installable_profile(&v)?;
        self.queue_profile_command(
            who,
            &device,
            profile.id,
            Command::InstallProfile { payload },
            "install",
            Some(number),
        )
        .await
    }

    /// `POST /tenants/{id}/profiles/{profile}/remove`: queues RemoveProfile of the profile's identifier.
    pub async fn remove_profile_from_device(
        &self,
        who: &Principal,
        tenant: TenantId,
        id: ProfileId,
        device_id: DeviceId,
    ) -> Result<QueuedProfileCommand, CoreError> {
        let profile = self.tenant_profile(who, tenant, id).await?;
        let device = self.tenant_device(who, tenant, device_id).await?;
        self.queue_profile_command(
            who,
            &device,
            profile.id,
            Command::RemoveProfile {
                identifier: profile.identifier.clone(),
            },
            "remove",
            None,
        )
        .await
    }

    /// A device of the tenant the caller may administer; another tenant's device is NotFound.
    async fn tenant_device(
        &self,
        who: &Principal,
        tenant: TenantId,
        device_id: DeviceId,
    ) -> Result<Device, CoreError> {
        let device = self
            .store
            .get_device(who.scope(), device_id)
            .await?
            .filter(|d| d.tenant_id == tenant)
            .ok_or(CoreError::NotFound)?;
        who.require(
            Ability::Administer,
            tenant,
            &format!(
                "the {} role may not install or remove profiles",
                who.role().as_str()
            ),
        )?;
        Ok(device)
    }

    async fn queue_profile_command(
        &self,
        who: &Principal,
        device: &Device,
        profile: ProfileId,
        command: Command,
        action: &'static str,
        version: Option<i64>,
    ) -> Result<QueuedProfileCommand, CoreError> {
        let channel = ChannelId::device(&device.udid);
        let new = self.new_command(
            &command,
            CommandTarget {
                device_id: device.id,
                tenant_id: device.tenant_id,
                channel: &channel,
            },
            who.queued_by(),
            self.clock.now(),
        )?;
        let queued = QueuedProfileCommand {
            command_uuid: new.uuid.to_string(),
            request_type: command.kind().as_str(),
            device_id: device.id.to_string(),
            profile_id: profile.to_string(),
            version,
        };
        self.store
            .queue_profile_command(&ProfileCommand {
                command: new,
                profile_id: profile,
                action,
                version,
            })
            .await?;
        self.wake_dispatcher();
        tracing::info!(device = %device.id, %profile, action, actor = %who.actor(), "profile command queued");
        Ok(queued)
    }

    /// `GET /tenants/{id}/profiles/{profile}/devices`: what the tenant's devices have of the profile.
    pub async fn profile_devices(
        &self,
        who: &Principal,
        tenant: TenantId,
        id: ProfileId,
    ) -> Result<Vec<DeviceProfileView>, CoreError> {
        let profile = self.tenant_profile(who, tenant, id).await?;
        Ok(self
            .store
            .list_profile_devices(who.scope(), tenant, profile.id)
            .await?
            .iter()
            .map(DeviceProfileView::from)
            .collect())
    }

    /// Inside a report's unit of work: a profile command the library queued was answered.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn profile_command_reported(
        &self,
        unit: &mut UnitOfWork,
        device: &Device,
        uuid: &CommandUuid,
        request_type: RequestType,
        status: CommandStatus,
        error_chain: Option<&str>,
        now: UnixTime,
    ) -> Result<(), CoreError> {
        if !matches!(
            request_type,
            RequestType::InstallProfile | RequestType::RemoveProfile
        ) {
            return Ok(());
        }
        let error = match status {
            CommandStatus::Acknowledged => None,
            CommandStatus::Error | CommandStatus::CommandFormatError => {
                Some(error_chain.unwrap_or(status.as_str()))
            }
            _ => return Ok(()),
        };
        unit.profile_command_answered(
            device.id,
            uuid,
            error,
            self.reconciler.settings.retry_base_seconds,
            now,
        )
        .await?;
        Ok(())
    }

    /// Inside a report's unit of work: a ProfileList says which profiles the device has.
    pub(crate) async fn profile_list_reported(
        &self,
        unit: &mut UnitOfWork,
        device: &Device,
        items: &[ProfileListItem],
        now: UnixTime,
    ) -> Result<(), CoreError> {
        let installed: Vec<(String, String)> = items
            .iter()
            .filter_map(|item| {
                Some((
                    item.payload_identifier.clone()?,
                    item.payload_uuid.clone().unwrap_or_default(),
                ))
            })
            .collect();
        unit.profiles_reported(device.id, device.tenant_id, &installed, now)
            .await?;
        Ok(())
    }
}
