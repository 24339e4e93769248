//! Profiles delivered as declarations (`configuration.legacy`): an assignment with delivery `declaration`
//! makes the reconciler name the profile's version in the device's declaration set instead of queueing
//! InstallProfile. The declaration carries a ProfileURL on Orchard itself that names the device, the profile
//! and the version, with a tag only Orchard can make (HMAC under a key derived from the data key): the device
//! downloads the signed profile there without other credentials, and the URL stops working as soon as the
//! device no longer has that version declared (unassigned, replaced by a newer version, moved away). The
//! device's status report tells which version it installed, or why it could not.

use orchard_protocol::declarative::{build, Declaration, DeclarationStatus};
use orchard_store::{Device, UnitOfWork};
use orchard_types::{DeviceId, ProfileId, UnixTime};

use crate::{CoreError, Orchard};

/// Identifiers of profile declarations: this prefix and the profile's id.
pub const PROFILE_DECLARATION_PREFIX: &str = "orchard.profile.";
/// What the URL tags are made for (their key is derived for this purpose only).
const URL_TAG_PURPOSE: &[u8] = b"legacy-profile-url";
/// The path under the public URL where devices download declared profiles.
pub const PROFILE_DOWNLOAD_PATH: &str = "/mdm/declared-profiles";

fn tag_message(device: DeviceId, profile: ProfileId, version: i64) -> String {
    format!("{device}|{profile}|{version}")
}

impl Orchard {
    /// The URL a device downloads a declared profile version from.
    pub(crate) fn declared_profile_url(
        &self,
        device: DeviceId,
        profile: ProfileId,
        version: i64,
    ) -> Result<String, CoreError> {
        let tag = self.pki.data_key.mac(
            URL_TAG_PURPOSE,
            tag_message(device, profile, version).as_bytes(),
        )?;
        Ok(format!(
            "{}{PROFILE_DOWNLOAD_PATH}/{device}/{profile}/{version}/{}",
            self.config.public_url,
            hex::encode(tag)
        ))
    }

    /// The `configuration.legacy` declarations of a device channel, one per declared profile version.
    pub(crate) fn declared_profile_declarations(
        &self,
        device: DeviceId,
        declared: &[(ProfileId, i64)],
    ) -> Result<Vec<Declaration>, CoreError> {
        declared
            .iter()
            .map(|&(profile, version)| {
                Ok(build::legacy_profile(
                    &format!("{PROFILE_DECLARATION_PREFIX}{profile}"),
                    &self.declared_profile_url(device, profile, version)?,
                ))
            })
            .collect()
    }

    /// Inside the reconciler's unit: the device's declared profiles changed, so its set did; one
    /// DeclarativeManagement command tells it (queued only when the token moved and none waits).
    pub(crate) async fn declared_profiles_changed(
        &self,
        unit: &mut UnitOfWork,
        device: DeviceId,
        now: UnixTime,
    ) -> Result<(), CoreError> {
        let Some(device) = unit.device(device).await? else {
            return Ok(());
        };
        let target = self.os_target_in_unit(unit, &device).await?;
        self.queue_declarations_sync(unit, &device, target.as_ref(), now)
            .await?;
        Ok(())
    }

    /// `GET /mdm/declared-profiles/{device}/{profile}/{version}/{tag}`: the signed profile, when the tag is
    /// Orchard's for exactly these three and the device still has this version declared. Everything else is
    /// NotFound (a guessed, altered or outdated URL learns nothing), with the reason logged.
    pub async fn declared_profile_download(
        &self,
        device: &str,
        profile: &str,
        version: &str,
        tag: &str,
    ) -> Result<Vec<u8>, CoreError> {
        let refuse = |why: &str| {
            tracing::warn!(
                device,
                profile,
                version,
                reason = why,
                "declared profile download refused"
            );
            CoreError::NotFound
        };
        let (Ok(device), Ok(profile), Ok(version)) = (
            DeviceId::parse(device),
            ProfileId::parse(profile),
            version.parse::<i64>(),
        ) else {
            return Err(refuse("malformed path"));
        };
        let tag = hex::decode(tag).map_err(|_| refuse("malformed tag"))?;
        if !self.pki.data_key.verify_mac(
            URL_TAG_PURPOSE,
            tag_message(device, profile, version).as_bytes(),
            &tag,
        ) {
            return Err(refuse("tag does not verify"));
        }
        let declared = self.store.declared_profiles(device).await?;
        if !declared.contains(&(profile, version)) {
            return Err(refuse("version not declared for the device"));
        }
        let record = self
            .store
            .get_profile_version(profile, version)
            .await?
            .ok_or_else(|| refuse("profile version gone"))?;
        self.installable_profile(&record)
    }

    /// From a device channel's status: what it says of its declared profiles (installed when active and
    /// valid, else the reasons), recorded for the version whose declaration it reports.
    pub(crate) async fn declared_profile_statuses(
        &self,
        device: &Device,
        statuses: &[DeclarationStatus],
        now: UnixTime,
    ) -> Result<(), CoreError> {
        let reported: Vec<&DeclarationStatus> = statuses
            .iter()
            .filter(|s| s.identifier.starts_with(PROFILE_DECLARATION_PREFIX))
            .collect();
        if reported.is_empty() {
            return Ok(());
        }
        let declared = self.store.declared_profiles(device.id).await?;
        for status in reported {
            let Ok(profile) =
                ProfileId::parse(&status.identifier[PROFILE_DECLARATION_PREFIX.len()..])
            else {
                continue;
            };
            let Some(&(_, version)) = declared.iter().find(|(p, _)| *p == profile) else {
                continue;
            };
            // Only a status of the declaration as it is now counts (not one of the previous version).
            let current = self.declared_profile_declarations(device.id, &[(profile, version)])?;
            if current
                .first()
                .is_none_or(|d| d.server_token != status.server_token)
            {
                continue;
            }
            let installed = status.active && status.valid == "valid";
            let error = (!installed).then(|| {
                let reasons: Vec<String> = status
                    .reasons
                    .iter()
                    .map(|r| match &r.description {
                        Some(d) => format!("{}: {d}", r.code),
                        None => r.code.clone(),
                    })
                    .collect();
                if reasons.is_empty() {
                    format!("declaration {}", status.valid)
                } else {
                    reasons.join("; ")
                }
            });
            self.store
                .declared_profile_reported(
                    device.id,
                    profile,
                    version,
                    installed,
                    error.as_deref(),
                    now,
                )
                .await?;
        }
        Ok(())
    }
}
