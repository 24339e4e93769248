//! Zero-touch enrollment (Automated Device Enrollment) and what follows it in Setup Assistant.
//!
//! 1. The device POSTs its CMS-signed MachineInfo to `/enroll/dep` (the ADE profile's `url`). Orchard checks the
//!    signature against the configured device roots (Apple's device CA in production), that the serial is one
//!    of ours and assigned to a template, and the template's minimum iOS; it answers the documented 403
//!    `com.apple.softwareupdate.required` or an enrollment profile whose SCEP challenge carries the template's
//!    tenant.
//! 2. After the first TokenUpdate the template's setup commands are queued (device name, organization info,
//!    the template's own commands, the Activation Lock bypass code). When all of them succeeded, Orchard sends
//!    `DeviceConfigured` and Setup Assistant ends. A failing setup command leaves the device waiting with the
//!    failure on its page (`setup_state = failed`), until an operator or the tenant's admin releases it.
//!
//! The bypass code is kept sealed with the data key, so an Activation-Locked iPad can be released for reuse.
//!
//! Setup moves only inside a use case's unit of work (first TokenUpdate, a setup command's report, a release
//! by hand): the state change and the commands it queues commit together, so a failure half-way leaves the
//! state before and the device's retry (or the person's) does the whole step. The moves follow
//! [`SetupState`]'s diagram; each is a conditional update from the expected state, so two nodes racing
//! move a device (and queue DeviceConfigured) once.

use orchard_dep::{MachineInfoVerifier, SoftwareUpdateRequired};
use orchard_protocol::commands::{Command, SettingsItem};
use orchard_protocol::report::CommandReport;
use orchard_store::{Device, IdentityGrant, NewCommand, ScepChallenge, UnitOfWork};
use orchard_types::{
    ChannelId, CommandStatus, DeviceId, QueuedBy, RequestType, SetupState, UnixTime,
};
use serde::Serialize;

use crate::access::principal::Principal;
use crate::access::roles::Ability;
use crate::dep::templates::{device_name, template_parts};
use crate::{random_secret, secret_hash, CoreError, DeviceRejection, Orchard};

/// What the zero-touch endpoint answers a device.
#[derive(Debug, PartialEq, Eq)]
pub enum ZeroTouchAnswer {
    /// 200 `application/x-apple-aspen-config`: the signed enrollment profile.
    Profile(Vec<u8>),
    /// 403 `application/json`: update iOS first (Apple's documented body).
    SoftwareUpdateRequired(Vec<u8>),
}

/// Why the zero-touch endpoint refused a device (always 403; the reason goes to the log, not the device).
fn refuse(reason: impl Into<String>) -> CoreError {
    CoreError::Device(DeviceRejection::UntrustedIdentity(reason.into()))
}

/// What a device's bypass code is sealed to (its device).
pub(crate) fn bypass_seal_context(device: DeviceId) -> Vec<u8> {
    format!("devices:{device}:bypass_code").into_bytes()
}

/// The Activation Lock state Orchard holds for a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ActivationLockView {
    /// A bypass code is escrowed.
    pub bypass_code_escrowed: bool,
    pub escrowed_at: Option<String>,
    /// The code itself: only for operators and the device tenant's admins.
    pub bypass_code: Option<String>,
}

/// A device's zero-touch setup as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SetupView {
    pub template_id: Option<String>,
    /// configuring | releasing | configured | failed (absent: not enrolled through a template).
    pub state: Option<String>,
    pub error: Option<String>,
    pub updated_at: Option<String>,
}

impl Orchard {
    fn machine_info_verifier(&self) -> Result<MachineInfoVerifier, CoreError> {
        self.dep.machine_info_verifier.clone().ok_or_else(|| {
            tracing::error!(
                "zero-touch enrollment refused: no device roots configured (--dep-device-ca)"
            );
            refuse("no device roots configured for machineinfo verification")
        })
    }

    /// `POST /enroll/dep`: the device's signed MachineInfo in, an enrollment profile (or the software-update
    /// answer) out.
    pub async fn enroll_dep(&self, signed: &[u8]) -> Result<ZeroTouchAnswer, CoreError> {
        let verifier = self.machine_info_verifier()?;
        let body = signed.to_vec();
        // RSA/EC verification and chain building are CPU work: keep them off the async workers.
        let verified = tokio::task::spawn_blocking(move || verifier.verify(&body))
            .await
            .map_err(|e| CoreError::Internal(format!("machineinfo task: {e}")))?
            .map_err(|e| refuse(format!("machineinfo: {e}")))?;
        let info = verified.info;
        let serial = info.serial.as_str().to_owned();
        let Some(assigned) = self.store.dep_serial_template(&serial).await? else {
            tracing::warn!(serial = %serial, udid = %info.udid, "zero-touch: serial is not assigned to a template of ours");
            return Err(refuse(format!(
                "serial {serial} is not an assigned dep device of this server"
            )));
        };
        let template = assigned.template;
        if let Some(minimum) = &template.minimum_os_version {
            if info.requires_update_to(minimum) {
                tracing::info!(serial = %serial, os = ?info.os_version, minimum = %minimum, "zero-touch: software update required");
                let mut answer = SoftwareUpdateRequired::new(minimum.clone());
                answer.message = Some(format!(
                    "This iPad must be updated to iPadOS {minimum} or later before it can be set up."
                ));
                return Ok(ZeroTouchAnswer::SoftwareUpdateRequired(answer.to_json()));
            }
            if info.os_version_below(minimum) == Some(true) || info.os_version.is_none() {
                // The device cannot be sent to an update from Setup Assistant (before iOS 17): it would be
                // stuck, so it enrolls and the OS update is left to the OS update policy.
                tracing::warn!(serial = %serial, os = ?info.os_version, minimum = %minimum, "zero-touch: device below the template's minimum iOS cannot be asked to update; enrolling");
            }
        }
        let now = self.clock.now();
        let challenge = random_secret(24);
        self.store
            .create_scep_challenge(&ScepChallenge {
                challenge_hash: secret_hash(&challenge),
                link_id: template.link_id,
                tenant_id: template.tenant_id,
                // Apple's device CA vouched for this serial and UDID: the identity may claim exactly that
                // device, into the template's tenant, wherever it was enrolled before.
                grant: IdentityGrant::Ade {
                    serial: serial.clone(),
                    udid: info.udid.clone(),
                },
                created_at: now,
                expires_at: now.plus_seconds(self.config.challenge_ttl_seconds),
                used_at: None,
            })
            .await?;
        let profile = self.build_enrollment_profile(challenge);
        let signed_profile = orchard_pki::signature::sign_profile(
            &profile.to_plist(),
            &self.pki.profile_signer,
            &[self.pki.server_ca.identity()],
        )?;
        tracing::info!(serial = %serial, udid = %info.udid, template = %template.id, tenant = %template.tenant_id, "zero-touch enrollment profile handed out");
        Ok(ZeroTouchAnswer::Profile(signed_profile))
    }

    /// After a device's first TokenUpdate, inside its unit of work: if it enrolled through a template, queue
    /// the template's setup commands (or release it at once when there are none).
    pub(crate) async fn start_setup(
        &self,
        unit: &mut UnitOfWork,
        device: &Device,
        channel: &ChannelId,
        awaiting_configuration: bool,
        now: UnixTime,
    ) -> Result<(), CoreError> {
        let Some(fingerprint) = device.cert_fingerprint.as_deref() else {
            return Ok(());
        };
        let Some(link) = unit
            .find_issued_certificate(fingerprint)
            .await?
            .and_then(|c| c.link_id)
        else {
            return Ok(());
        };
        let Some(template) = unit.dep_template_by_link(link).await? else {
            return Ok(());
        };
        let parts = template_parts(&template)?;
        let setup = parts.setup;
        let mut commands = Vec::new();
        let mut settings = Vec::new();
        if let Some(pattern) = &setup.device_name_pattern {
            settings.push(SettingsItem::DeviceName {
                device_name: device_name(
                    pattern,
                    device.serial_number.as_deref().unwrap_or_default(),
                    device.model.as_deref().unwrap_or_default(),
                    device.udid.as_str(),
                ),
            });
        }
        if let Some(org) = &setup.organization {
            settings.push(SettingsItem::OrganizationInfo {
                organization_name: org.name.clone(),
                organization_short_name: None,
                address: org.address.clone(),
                phone: org.phone.clone(),
                email: org.email.clone(),
                magic: None,
            });
        }
        if !settings.is_empty() {
            commands.push(Command::Settings { settings });
        }
        commands.extend(setup.commands.iter().cloned());
        // Apple forbids ActivationLockBypassCode on Shared iPad (the command fails there).
        if setup.escrow_bypass_code && !parts.profile.is_multi_user {
            commands.push(Command::ActivationLockBypassCode);
        }
        unit.set_device_setup(
            device.id,
            Some(&template.id),
            SetupState::Configuring,
            None,
            now,
        )
        .await?;
        if commands.is_empty() {
            return self
                .finish_setup(unit, device, channel, awaiting_configuration, now)
                .await;
        }
        let count = commands.len();
        let new: Vec<NewCommand> = commands
            .into_iter()
            .map(|c| self.setup_command(device, channel, c, now))
            .collect::<Result<_, CoreError>>()?;
        unit.enqueue_commands(&new).await?;
        tracing::info!(udid = %device.udid, template = %template.id, commands = count, awaiting_configuration, "zero-touch setup starting");
        Ok(())
    }

    /// Every setup command succeeded: send DeviceConfigured if the device waits for it, else it is done.
    async fn finish_setup(
        &self,
        unit: &mut UnitOfWork,
        device: &Device,
        channel: &ChannelId,
        awaiting_configuration: bool,
        now: UnixTime,
    ) -> Result<(), CoreError> {
        if !awaiting_configuration {
            unit.advance_device_setup(
                device.id,
                SetupState::Configuring,
                SetupState::Configured,
                None,
                now,
            )
            .await?;
            tracing::info!(udid = %device.udid, "zero-touch setup done (device did not wait)");
            return Ok(());
        }
        // Only the unit that moves the state queues DeviceConfigured: two reports racing release once.
        if unit
            .advance_device_setup(
                device.id,
                SetupState::Configuring,
                SetupState::Releasing,
                None,
                now,
            )
            .await?
        {
            let cmd = self.setup_command(device, channel, Command::DeviceConfigured, now)?;
            unit.enqueue_commands(&[cmd]).await?;
            tracing::info!(udid = %device.udid, "zero-touch setup done: queueing DeviceConfigured");
        }
        Ok(())
    }

    /// A setup command got its final answer (inside its report's unit of work): advance the device's setup.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn setup_command_done(
        &self,
        unit: &mut UnitOfWork,
        device: &Device,
        channel: &ChannelId,
        request_type: RequestType,
        status: CommandStatus,
        error_chain: Option<&str>,
        now: UnixTime,
    ) -> Result<(), CoreError> {
        if status == CommandStatus::NotNow {
            return Ok(());
        }
        let failed = status != CommandStatus::Acknowledged;
        if request_type == RequestType::DeviceConfigured {
            let (to, error) = if failed {
                (
                    SetupState::Failed,
                    Some(failure_text(request_type, status, error_chain)),
                )
            } else {
                (SetupState::Configured, None)
            };
            unit.advance_device_setup(device.id, SetupState::Releasing, to, error.as_deref(), now)
                .await?;
            tracing::info!(udid = %device.udid, state = %to, "zero-touch release answered");
            return Ok(());
        }
        if failed {
            let error = failure_text(request_type, status, error_chain);
            tracing::warn!(udid = %device.udid, %request_type, error = %error, "zero-touch setup command failed; device stays in setup");
            unit.advance_device_setup(
                device.id,
                SetupState::Configuring,
                SetupState::Failed,
                Some(&error),
                now,
            )
            .await?;
            return Ok(());
        }
        // Counted inside the unit, so this report's own command already counts as finished.
        if unit.count_unfinished_setup_commands(device.id).await? > 0 {
            return Ok(());
        }
        let awaiting = unit
            .get_channel(channel)
            .await?
            .is_some_and(|c| c.awaiting_configuration);
        self.finish_setup(unit, device, channel, awaiting, now)
            .await
    }

    /// Releases a device from Setup Assistant although its setup failed or is still running (operators and
    /// the device tenant's admins): DeviceConfigured is queued now, in the same unit of work that moves the
    /// state to `releasing`.
    pub async fn release_device_setup(
        &self,
        who: &Principal,
        device_id: DeviceId,
    ) -> Result<SetupView, CoreError> {
        let device = self
            .store
            .get_device(who.scope(), device_id)
            .await?
            .ok_or(CoreError::NotFound)?;
        if !who.may(Ability::Administer, device.tenant_id) {
            return Err(CoreError::Forbidden(
                "only operators and the tenant's admins release devices from setup".into(),
            ));
        }
        let now = self.clock.now();
        let mut unit = self.store.begin_unit().await?;
        let setup = unit
            .device_setup(device.id)
            .await?
            .ok_or(CoreError::NotFound)?;
        let released = match setup.state {
            Some(from) if from.may_be_released() => {
                let moved = unit
                    .advance_device_setup(
                        device.id,
                        from,
                        SetupState::Releasing,
                        setup.error.as_deref(),
                        now,
                    )
                    .await?;
                if moved {
                    let channel = ChannelId::device(&device.udid);
                    let cmd =
                        self.setup_command(&device, &channel, Command::DeviceConfigured, now)?;
                    unit.enqueue_commands(&[cmd]).await?;
                }
                moved
            }
            Some(other) => {
                return Err(CoreError::Conflict(format!(
                    "the device's setup is {other}; nothing to release"
                )))
            }
            None => {
                return Err(CoreError::Conflict(
                    "the device did not enroll through an enrollment template".into(),
                ))
            }
        };
        self.commit_unit(unit).await?;
        if released {
            tracing::info!(udid = %device.udid, actor = %who.actor(), "device released from setup by hand");
        }
        self.device_setup_view(who, device_id).await
    }

    /// The device's zero-touch setup state.
    pub async fn device_setup_view(
        &self,
        who: &Principal,
        device_id: DeviceId,
    ) -> Result<SetupView, CoreError> {
        self.store
            .get_device(who.scope(), device_id)
            .await?
            .ok_or(CoreError::NotFound)?;
        let setup = self
            .store
            .device_setup(device_id)
            .await?
            .ok_or(CoreError::NotFound)?;
        Ok(SetupView {
            template_id: setup.template_id,
            state: setup.state.map(|s| s.as_str().to_owned()),
            error: setup.error,
            updated_at: setup.updated_at.map(UnixTime::to_rfc3339),
        })
    }

    /// Keeps the code an `ActivationLockBypassCode` answer carries (sealed), inside the report's unit of work.
    /// An empty answer (no code on the device) keeps nothing.
    pub(crate) async fn escrow_bypass_code(
        &self,
        unit: &mut UnitOfWork,
        device: &Device,
        report: &CommandReport,
        now: UnixTime,
    ) -> Result<(), CoreError> {
        let Some(code) = report
            .body
            .get("ActivationLockBypassCode")
            .and_then(|v| v.as_string())
            .map(str::trim)
            .filter(|c| !c.is_empty())
        else {
            tracing::info!(udid = %device.udid, "device has no activation lock bypass code");
            return Ok(());
        };
        if code.len() > 200 {
            tracing::warn!(udid = %device.udid, "activation lock bypass code too long; not kept");
            return Ok(());
        }
        let sealed = self
            .pki
            .data_key
            .seal(code.as_bytes(), &bypass_seal_context(device.id))?;
        unit.store_bypass_code(device.id, &sealed, now).await?;
        tracing::info!(udid = %device.udid, "activation lock bypass code escrowed");
        Ok(())
    }

    /// The Activation Lock state of a device; the code itself only for operators and the tenant's admins.
    pub async fn activation_lock_view(
        &self,
        who: &Principal,
        device_id: DeviceId,
    ) -> Result<ActivationLockView, CoreError> {
        let device = self
            .store
            .get_device(who.scope(), device_id)
            .await?
            .ok_or(CoreError::NotFound)?;
        let stored = self.store.bypass_code(device.id).await?;
        let Some((sealed, at)) = stored else {
            return Ok(ActivationLockView {
                bypass_code_escrowed: false,
                escrowed_at: None,
                bypass_code: None,
            });
        };
        let code = if who.may(Ability::SeeDeviceSecrets, device.tenant_id) {
            let opened = self
                .pki
                .data_key
                .open(&sealed, &bypass_seal_context(device.id))?;
            Some(
                String::from_utf8(opened.expose().clone())
                    .map_err(|_| CoreError::Internal("bypass code is not text".into()))?,
            )
        } else {
            None
        };
        Ok(ActivationLockView {
            bypass_code_escrowed: true,
            escrowed_at: Some(at.to_rfc3339()),
            bypass_code: code,
        })
    }
}

fn failure_text(
    request_type: RequestType,
    status: CommandStatus,
    error_chain: Option<&str>,
) -> String {
    match error_chain {
        Some(chain) => format!("{request_type}: {} ({chain})", status.as_str()),
        None => format!("{request_type}: {}", status.as_str()),
    }
}

impl Orchard {
    /// A zero-touch setup command for `device` (secrets handled like any command: `commands::secrets`).
    fn setup_command(
        &self,
        device: &Device,
        channel: &ChannelId,
        c: Command,
        now: UnixTime,
    ) -> Result<NewCommand, CoreError> {
        self.new_command(
            &c,
            crate::commands::secrets::CommandTarget {
                device_id: device.id,
                tenant_id: device.tenant_id,
                channel,
            },
            QueuedBy::Setup,
            now,
        )
    }
}
