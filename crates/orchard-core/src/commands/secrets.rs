//! Secrets in commands: which payloads and results carry them, sealing those at rest under the data key (bound
//! to their command), putting the UnlockToken into ClearPasscode only as it goes out (and only once), hiding
//! secret results from roles that may not see them, and resealing what an older Orchard stored in plaintext.
//!
//! Delivery of a device credential, decided here: a command that carries one (ClearPasscode) is queued without
//! it and with a short deadline ([`SecretCommandSettings`]); the UnlockToken is opened from the channel when
//! the command is handed out, and the queue hands a deliver-once command out exactly once. A replayed signed
//! poll (the protocol has no nonce) after that gets the next command, never the credential again; a device
//! that lost the answer or put the command off (NotNow) does not get it again either: the command expires at
//! its deadline and someone queues a new one. What cannot be prevented: a replay that arrives *before* the
//! device's own poll gets the command first (the real device then never receives it, which shows as a
//! ClearPasscode that expired unanswered), and any other queued command at the head of the queue is handed to
//! whoever presents a valid signed poll, because the protocol cannot tell a replay from the device.

use orchard_protocol::commands::{Command, SettingsItem};
use orchard_protocol::report::{decode_report, CommandReport};
use orchard_protocol::results::parse_result;
use orchard_store::{
    CommandRecord, LegacyCommandRow, NewCommand, QueuedCommand, ResealedCommand, UnitOfWork,
};
use orchard_types::{
    ChannelId, CommandStatus, CommandUuid, DeviceId, QueuedBy, RequestType, Secret, TenantId,
    UnixTime,
};

use crate::access::capability::SystemCtx;
use crate::access::principal::Principal;
use crate::access::roles::Ability;
use crate::commands::queue::CommandView;
use crate::{CoreError, Orchard};

/// How long a command carrying a device credential may wait in the queue by default: 15 minutes. Someone who
/// clears a passcode has the iPad at hand; a credential waiting for days is one waiting for a replay.
pub const DEFAULT_SECRET_COMMAND_TTL_SECONDS: i64 = 15 * 60;

/// Result keys that are secrets (Apple's `mdm/commands` YAML): the Activation Lock bypass code, and the
/// UnlockToken of the deprecated `RequestUnlockToken`.
pub const SECRET_RESULT_KEYS: &[&str] = &["ActivationLockBypassCode", "UnlockToken"];

/// Rows resealed per unit of work at start-up.
const RESEAL_BATCH: i64 = 200;

/// How commands that carry a device credential are delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretCommandSettings {
    /// Seconds such a command stays in the queue before it expires (delivered or not).
    pub ttl_seconds: i64,
}

impl Default for SecretCommandSettings {
    fn default() -> Self {
        Self {
            ttl_seconds: DEFAULT_SECRET_COMMAND_TTL_SECONDS,
        }
    }
}

impl SecretCommandSettings {
    pub fn new(ttl_seconds: i64) -> Result<Self, CoreError> {
        if ttl_seconds <= 0 {
            return Err(CoreError::Invalid(
                "the secret command lifetime must be at least one second".into(),
            ));
        }
        Ok(Self { ttl_seconds })
    }
}

/// Whether the stored form of `command` may hold a secret: profiles (Wi-Fi, VPN and mail passwords, SCEP
/// challenges, PKCS#12 identities), Return to Service's Wi-Fi and enrollment profiles, managed app
/// configurations (which often carry keys). Such payloads are sealed at rest.
pub(crate) fn payload_may_carry_secrets(command: &Command) -> bool {
    match command {
        Command::InstallProfile { .. } => true,
        Command::EraseDevice {
            return_to_service: Some(rts),
            ..
        } => rts.wifi_profile_data.is_some() || rts.mdm_profile_data.is_some(),
        Command::InstallApplication { configuration, .. } => configuration.is_some(),
        Command::Settings { settings } => settings.iter().any(|item| {
            matches!(
                item,
                SettingsItem::ApplicationConfiguration {
                    configuration: Some(_),
                    ..
                }
            )
        }),
        _ => false,
    }
}

/// Whether `command` carries a device credential when it is sent (ClearPasscode: the UnlockToken). Such a
/// command is stored without it, delivered once and expires quickly.
pub(crate) fn carries_device_credential(request_type: RequestType) -> bool {
    request_type == RequestType::ClearPasscode
}

/// Whether a device's report holds a secret (see [`SECRET_RESULT_KEYS`]).
pub(crate) fn report_carries_secrets(report: &CommandReport) -> bool {
    SECRET_RESULT_KEYS
        .iter()
        .any(|key| report.body.contains_key(key))
}

fn payload_context(uuid: &CommandUuid) -> Vec<u8> {
    format!("commands:{uuid}:payload").into_bytes()
}

fn body_context(body_id: &str) -> Vec<u8> {
    format!("command_bodies:{body_id}:body").into_bytes()
}

fn result_context(uuid: &CommandUuid) -> Vec<u8> {
    format!("commands:{uuid}:result").into_bytes()
}

fn unlock_token_context(channel: &ChannelId) -> Vec<u8> {
    format!("channels:{channel}:unlock_token").into_bytes()
}

/// Who a new command is for.
pub(crate) struct CommandTarget<'a> {
    pub device_id: DeviceId,
    pub tenant_id: TenantId,
    pub channel: &'a ChannelId,
}

/// What start-up resealing did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ResealSummary {
    pub commands: usize,
    pub unlock_tokens: usize,
}

impl Orchard {
    /// How long commands that carry a device credential may wait (default 15 minutes).
    pub fn with_secret_command_settings(mut self, settings: SecretCommandSettings) -> Self {
        self.secret_commands = settings;
        self
    }

    /// The one way core makes a command for the queue: a credential (ClearPasscode's UnlockToken) is left out
    /// and the command marked deliver-once with the short deadline; a payload that may hold a secret is sealed.
    pub(crate) fn new_command(
        &self,
        command: &Command,
        target: CommandTarget<'_>,
        queued_by: QueuedBy,
        now: UnixTime,
    ) -> Result<NewCommand, CoreError> {
        let uuid = CommandUuid::new_random();
        let request_type = command.kind();
        let deliver_once = carries_device_credential(request_type);
        let encoded = if deliver_once {
            Command::ClearPasscode { unlock_token: None }.encode(&uuid)
        } else {
            command.encode(&uuid)
        };
        let payload_sealed = payload_may_carry_secrets(command);
        let payload = if payload_sealed {
            self.pki.data_key.seal(&encoded, &payload_context(&uuid))?
        } else {
            encoded
        };
        Ok(NewCommand {
            uuid,
            device_id: target.device_id,
            tenant_id: target.tenant_id,
            channel: target.channel.clone(),
            request_type,
            payload,
            payload_sealed,
            body_id: None,
            deliver_once,
            queued_by: Some(queued_by),
            queued_at: now,
            expires_at: deliver_once.then(|| now.plus_seconds(self.secret_commands.ttl_seconds)),
        })
    }

    /// Stores `command` within `unit` as the shared body (`command_bodies`) made from `source` (what identifies
    /// its content, e.g. `profile:{id}:{version}`), sealed when it may carry secrets, and returns its id; if
    /// another node stored a body for `source` first, that one's. Many devices' commands then name one body
    /// instead of each holding a copy of it. A caller whose source may already have a body looks it up first
    /// (`UnitOfWork::use_command_body`), before it builds the command.
    pub(crate) async fn store_command_body(
        &self,
        unit: &mut UnitOfWork,
        source: &str,
        command: &Command,
        now: UnixTime,
    ) -> Result<String, CoreError> {
        if carries_device_credential(command.kind()) {
            return Err(CoreError::Internal(
                "a command carrying a device credential cannot share a body".into(),
            ));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let encoded = command.encode_body();
        let sealed = payload_may_carry_secrets(command);
        let body = if sealed {
            self.pki.data_key.seal(&encoded, &body_context(&id))?
        } else {
            encoded
        };
        if unit
            .insert_command_body(&id, source, &body, sealed, now)
            .await?
        {
            return Ok(id);
        }
        // Another node stored the body for this source first (its transaction has committed).
        unit.use_command_body(source, now)
            .await?
            .ok_or_else(|| CoreError::Internal(format!("the command body for {source} vanished")))
    }

    /// A command for the queue made of a shared body ([`Orchard::store_command_body`]): the row holds no
    /// payload of its own.
    pub(crate) fn new_command_from_body(
        &self,
        request_type: RequestType,
        body_id: String,
        target: CommandTarget<'_>,
        queued_by: QueuedBy,
        now: UnixTime,
    ) -> NewCommand {
        NewCommand {
            uuid: CommandUuid::new_random(),
            device_id: target.device_id,
            tenant_id: target.tenant_id,
            channel: target.channel.clone(),
            request_type,
            payload: Vec::new(),
            payload_sealed: false,
            body_id: Some(body_id),
            deliver_once: false,
            queued_by: Some(queued_by),
            queued_at: now,
            expires_at: None,
        }
    }

    /// The UnlockToken of a TokenUpdate as the channel keeps it: sealed to that channel.
    pub(crate) fn seal_unlock_token(
        &self,
        channel: &ChannelId,
        unlock_token: Option<Vec<u8>>,
    ) -> Result<Option<Vec<u8>>, CoreError> {
        unlock_token
            .map(|token| {
                self.pki
                    .data_key
                    .seal(&token, &unlock_token_context(channel))
                    .map_err(CoreError::from)
            })
            .transpose()
    }

    /// The plist the device gets for the command the queue handed out: the payload opened, and a
    /// ClearPasscode given the channel's UnlockToken (the only moment it leaves the database).
    pub(crate) async fn command_for_delivery(
        &self,
        channel: &ChannelId,
        queued: Option<QueuedCommand>,
    ) -> Result<Option<Vec<u8>>, CoreError> {
        let Some(queued) = queued else {
            return Ok(None);
        };
        if let Some(body) = &queued.body {
            let opened = if body.sealed {
                Some(
                    self.pki
                        .data_key
                        .open(&body.body, &body_context(&body.id))?,
                )
            } else {
                None
            };
            let dictionary = opened.as_ref().map_or(&body.body, |o| o.expose());
            let envelope = orchard_protocol::commands::envelope_for_body(&queued.uuid, dictionary)
                .map_err(|e| {
                    CoreError::Internal(format!("command body {} does not decode: {e}", body.id))
                })?;
            return Ok(Some(envelope));
        }
        let plist = if queued.payload_sealed {
            self.pki
                .data_key
                .open(&queued.payload, &payload_context(&queued.uuid))?
                .expose()
                .clone()
        } else {
            queued.payload
        };
        if !carries_device_credential(queued.request_type) {
            return Ok(Some(plist));
        }
        let sealed = self
            .store
            .get_channel(channel)
            .await?
            .and_then(|c| c.unlock_token);
        let unlock_token = match sealed {
            Some(sealed) => Some(
                self.pki
                    .data_key
                    .open(sealed.expose(), &unlock_token_context(channel))?,
            ),
            None => {
                // Re-enrolled since it was queued: the device will refuse the command without a token.
                tracing::warn!(%channel, command = %queued.uuid, "ClearPasscode sent without an UnlockToken: none is escrowed");
                None
            }
        };
        tracing::info!(%channel, command = %queued.uuid, "ClearPasscode delivered with the escrowed UnlockToken (once)");
        Ok(Some(
            Command::ClearPasscode {
                unlock_token: unlock_token.map(|t| t.expose().clone()),
            }
            .encode(&queued.uuid),
        ))
    }

    /// A device report as the queue keeps it, and whether it is sealed: none for NotNow (the command stays
    /// queued), sealed to its command when it holds a secret, else as received.
    pub(crate) fn result_to_store(
        &self,
        uuid: &CommandUuid,
        status: CommandStatus,
        report: &CommandReport,
        raw: &[u8],
    ) -> Result<(Option<Vec<u8>>, bool), CoreError> {
        if status == CommandStatus::NotNow {
            Ok((None, false))
        } else if report_carries_secrets(report) {
            Ok((
                Some(self.pki.data_key.seal(raw, &result_context(uuid))?),
                true,
            ))
        } else {
            Ok((Some(raw.to_vec()), false))
        }
    }

    /// A command as `who` may see it: a result holding a secret only for callers with
    /// [`Ability::SeeDeviceSecrets`] over the device's tenant, otherwise left out and marked redacted.
    pub fn command_view(&self, who: &Principal, record: &CommandRecord) -> CommandView {
        let may_see_secrets = who.may(Ability::SeeDeviceSecrets, record.tenant_id);
        let raw = match (&record.result, record.result_sealed) {
            (None, _) => None,
            (Some(plain), false) => Some(Secret::new(plain.clone())),
            (Some(_), true) if !may_see_secrets => None,
            (Some(sealed), true) => match self
                .pki
                .data_key
                .open(sealed, &result_context(&record.uuid))
            {
                Ok(opened) => Some(opened),
                Err(e) => {
                    tracing::error!(command = %record.uuid, error = %e, "sealed command result does not open");
                    None
                }
            },
        };
        let report = raw.as_ref().and_then(|r| decode_report(r.expose()).ok());
        // A plaintext row an older Orchard wrote is judged by its content, like a new report.
        let redacted = !may_see_secrets
            && (record.result_sealed || report.as_ref().is_some_and(report_carries_secrets));
        let result = match (&report, redacted) {
            (Some(report), false) => parse_result(record.request_type.as_str(), report)
                .ok()
                .and_then(|parsed| serde_json::to_value(parsed).ok()),
            _ => None,
        };
        CommandView::new(record, result, redacted)
    }

    /// Seals what an Orchard before migration 0013 stored in plaintext: channels' UnlockTokens, UnlockTokens in
    /// queued ClearPasscode payloads (dropped: they are put in at delivery now), profile and configuration
    /// payloads, and bypass codes in results. Runs at start-up, before the server answers; each batch is one
    /// unit of work, and nodes starting together skip what another already did.
    pub async fn reseal_legacy_secrets(
        &self,
        _system: &SystemCtx,
    ) -> Result<ResealSummary, CoreError> {
        let mut summary = ResealSummary::default();
        loop {
            let tokens = self.store.legacy_unlock_tokens(RESEAL_BATCH).await?;
            if tokens.is_empty() {
                break;
            }
            let mut unit = self.store.begin_unit().await?;
            for legacy in &tokens {
                let sealed = self.pki.data_key.seal(
                    legacy.unlock_token.expose(),
                    &unlock_token_context(&legacy.channel),
                )?;
                unit.reseal_legacy_unlock_token(&legacy.channel, &sealed)
                    .await?;
            }
            unit.commit().await?;
            summary.unlock_tokens += tokens.len();
        }
        loop {
            let commands = self.store.legacy_plaintext_commands(RESEAL_BATCH).await?;
            if commands.is_empty() {
                break;
            }
            let mut unit = self.store.begin_unit().await?;
            for legacy in &commands {
                match &legacy.found {
                    None => unit.forget_legacy_command(&legacy.uuid).await?,
                    Some(row) => {
                        let resealed = self.resealed(&legacy.uuid, row)?;
                        unit.reseal_legacy_command(&resealed).await?;
                    }
                }
            }
            unit.commit().await?;
            summary.commands += commands.len();
        }
        if summary != ResealSummary::default() {
            tracing::info!(
                commands = summary.commands,
                unlock_tokens = summary.unlock_tokens,
                "secrets stored in plaintext by an earlier version are now sealed"
            );
        }
        Ok(summary)
    }

    fn resealed(
        &self,
        uuid: &CommandUuid,
        row: &LegacyCommandRow,
    ) -> Result<ResealedCommand, CoreError> {
        let deliver_once = carries_device_credential(row.request_type);
        let (payload, payload_sealed) = if deliver_once {
            // The token goes in at delivery from the channel; the stored copy is dropped, not sealed.
            (
                Command::ClearPasscode { unlock_token: None }.encode(uuid),
                false,
            )
        } else {
            (
                self.pki
                    .data_key
                    .seal(row.payload.expose(), &payload_context(uuid))?,
                true,
            )
        };
        let (result, result_sealed) = match &row.result {
            None => (None, false),
            Some(raw) => (
                Some(
                    self.pki
                        .data_key
                        .seal(raw.expose(), &result_context(uuid))?,
                ),
                true,
            ),
        };
        // An unfinished legacy ClearPasscode goes out once, like a new one; a finished one keeps its history.
        let unfinished = matches!(
            row.status,
            CommandStatus::Queued | CommandStatus::Sent | CommandStatus::NotNow
        );
        Ok(ResealedCommand {
            uuid: uuid.clone(),
            payload,
            payload_sealed,
            result,
            result_sealed,
            deliver_once: deliver_once && unfinished,
        })
    }
}

#[cfg(test)]
mod tests {
    use orchard_protocol::commands::ReturnToService;

    use super::*;

    #[test]
    fn payloads_that_may_hold_secrets_are_profiles_rts_data_and_app_configurations() {
        assert!(payload_may_carry_secrets(&Command::InstallProfile {
            payload: b"profile".to_vec()
        }));
        let erase = |rts| Command::EraseDevice {
            preserve_data_plan: None,
            disallow_proximity_setup: None,
            return_to_service: rts,
        };
        assert!(!payload_may_carry_secrets(&erase(None)));
        assert!(payload_may_carry_secrets(&erase(Some(ReturnToService {
            enabled: true,
            wifi_profile_data: Some(b"wifi".to_vec()),
            mdm_profile_data: None,
        }))));
        assert!(!payload_may_carry_secrets(&Command::DeviceLock {
            message: Some("call IT".into()),
            phone_number: None,
        }));
        assert!(!payload_may_carry_secrets(&Command::ClearPasscode {
            unlock_token: None
        }));
        assert!(carries_device_credential(RequestType::ClearPasscode));
        assert!(!carries_device_credential(RequestType::EraseDevice));
    }

    fn report_with(extra: &str) -> CommandReport {
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><plist version=\"1.0\"><dict>\
             <key>UDID</key><string>00008030-001A2B3C4D5E6F70</string>\
             <key>Status</key><string>Acknowledged</string>\
             <key>CommandUUID</key><string>6F2D1C2A-7E1B-4C8B-9B0E-3C1E2D4F5A6B</string>{extra}\
             </dict></plist>"
        );
        decode_report(xml.as_bytes()).unwrap()
    }

    #[test]
    fn reports_holding_a_bypass_code_or_unlock_token_carry_secrets() {
        assert!(report_carries_secrets(&report_with(
            "<key>ActivationLockBypassCode</key><string>AAAA-BBBB</string>"
        )));
        assert!(report_carries_secrets(&report_with(
            "<key>UnlockToken</key><data>AQID</data>"
        )));
        assert!(!report_carries_secrets(&report_with(
            "<key>SecurityInfo</key><dict><key>PasscodePresent</key><true/></dict>"
        )));
    }

    #[test]
    fn the_secret_command_lifetime_must_be_positive() {
        assert!(SecretCommandSettings::new(0).is_err());
        assert_eq!(SecretCommandSettings::new(60).unwrap().ttl_seconds, 60);
        assert_eq!(
            SecretCommandSettings::default().ttl_seconds,
            DEFAULT_SECRET_COMMAND_TTL_SECONDS
        );
    }
}
