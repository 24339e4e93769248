//! The device surface's logic: authenticating each request by its Mdm-Signature, binding certificate to
//! UDID, the check-in messages, and the command session (report in, next command out).

use orchard_pki::signature::VerifiedSigner;
use orchard_protocol::checkin::{self, CheckinMessage};
use orchard_protocol::commands::Command;
use orchard_protocol::report::{self, CommandReport, ReportStatus};
use orchard_store::{
    AuthenticateDevice, CommandResultRecord, Device, DeviceFacts, IdentityStatus, IdlePoll,
    IdlePollClaim, RecordOutcome, RequestingDevice, TokenUpdateRecord, UnitOfWork,
};
use orchard_types::{ChannelId, CommandStatus, CommandUuid, QueuedBy, RequestType, UnixTime};

use crate::commands::secrets::CommandTarget;
use crate::desired::groups::MarkDevice;
use crate::device::inventory::{Applied, AppliedResult, InventoryAnswer};
use crate::enrollment::binding::{BindingDecision, CHECKED_OUT_REASON};
use crate::{CoreError, DeviceRejection, Orchard};

/// Seconds between `last_seen_at` writes for a device that keeps talking: saves a write per round trip.
const LAST_SEEN_GRANULARITY: i64 = 60;

/// What Orchard queries right after enrollment, so inventory appears without anyone asking.
pub const INVENTORY_QUERIES: &[&str] = &[
    "UDID",
    "SerialNumber",
    "DeviceName",
    "OSVersion",
    "BuildVersion",
    "ProductName",
    "Model",
    "ModelName",
    "ModelNumber",
    "DeviceCapacity",
    "AvailableDeviceCapacity",
    "BatteryLevel",
    "IsSupervised",
    "IsMultiUser",
    "IsMDMLostModeEnabled",
    "AwaitingConfiguration",
    "IsDeviceLocatorServiceEnabled",
    "WiFiMAC",
    "BluetoothMAC",
];

/// The commands queued after a device's first TokenUpdate.
pub fn initial_inventory_commands() -> Vec<Command> {
    vec![
        Command::DeviceInformation {
            queries: INVENTORY_QUERIES.iter().map(|q| q.to_string()).collect(),
        },
        Command::SecurityInfo,
        Command::InstalledApplicationList {
            identifiers: None,
            managed_apps_only: None,
        },
        Command::ProfileList { managed_only: None },
    ]
}

/// What the server sends back to a check-in.
#[derive(Debug, PartialEq, Eq)]
pub enum CheckinReply {
    /// 200 with an empty body.
    Empty,
    /// 200 with an XML plist body.
    Plist(Vec<u8>),
    /// 200 with a JSON body (declarative management).
    Json(Vec<u8>),
}

/// What the device lookup of a command request learnt about work waiting for it.
#[derive(Debug, Clone, Copy)]
struct Pending {
    /// The device is in the reconciler's work set: its session plans its own commands first.
    awaiting_reconcile: bool,
    /// The request's channel had a queued, sent or NotNow command when the device was looked up.
    channel_has_unfinished: bool,
    /// Some webhook endpoint was enabled when the device was looked up (without one, a report's unit writes
    /// no events).
    webhook_endpoints: bool,
    /// The device's tenant had an OS policy or its device channel was declarative when looked up. Without
    /// either, an answer that changes the iPad's OS has no OS evaluation to do (a policy created later
    /// evaluates every device of its tenant itself, a new channel syncs its own set).
    os_evaluation_inputs: bool,
}

impl Orchard {
    fn verify_signature(
        &self,
        signature: Option<&str>,
        body: &[u8],
        now: UnixTime,
    ) -> Result<VerifiedSigner, DeviceRejection> {
        let header =
            signature.ok_or_else(|| DeviceRejection::BadSignature("header missing".into()))?;
        self.signers
            .verify_mdm_signature(header, body, &self.pki.ca, now)
            .map_err(|e| match e {
                orchard_pki::PkiError::Malformed(m) | orchard_pki::PkiError::BadSignature(m) => {
                    DeviceRejection::BadSignature(m)
                }
                other => DeviceRejection::UntrustedIdentity(other.to_string()),
            })
    }

    /// Finds the enrolled device a request speaks for and checks the signer is the identity bound to it and
    /// that this identity is not revoked.
    async fn bound_device(
        &self,
        udid: &orchard_types::Udid,
        signer: &VerifiedSigner,
    ) -> Result<Device, CoreError> {
        let found = self.store.find_device_with_identity(udid, None).await?;
        Ok(self.bound_requesting_device(udid, signer, found).await?.0)
    }

    /// [`Orchard::bound_device`] of a device the store's lookup `found` (`None`: no such UDID), with what a
    /// command request asks next: whether the device awaits the reconciler, whether its channel has unfinished
    /// commands and whether any webhook endpoint is enabled.
    async fn bound_requesting_device(
        &self,
        udid: &orchard_types::Udid,
        signer: &VerifiedSigner,
        found: Option<RequestingDevice>,
    ) -> Result<(Device, Pending), CoreError> {
        let RequestingDevice {
            device,
            identity,
            awaiting_reconcile,
            channel_has_unfinished,
            webhook_endpoints,
            tenant_os_policy,
            declarative_channel,
        } = found
            .filter(|r| r.device.state != orchard_types::EnrollmentState::Unenrolled)
            .ok_or(DeviceRejection::UnrecognizedDevice)?;
        let pending = Pending {
            awaiting_reconcile,
            channel_has_unfinished,
            webhook_endpoints,
            os_evaluation_inputs: tenant_os_policy || declarative_channel,
        };
        if device.cert_fingerprint.as_deref() != Some(signer.fingerprint.as_str()) {
            // Its renewed identity's first request moves the binding; its previous one is accepted during the
            // grace period after a renewal; anything else is a mismatch.
            let device = self
                .other_identity_of(device, signer, self.clock.now())
                .await?;
            return Ok((device, pending));
        }
        if let IdentityStatus::Revoked(at) = identity {
            tracing::warn!(udid = %udid, device = %device.id, revoked_at = at.0, "request signed by a revoked identity refused");
            return Err(DeviceRejection::UntrustedIdentity("identity revoked".into()).into());
        }
        crate::observability::note_device(&device.udid, Some(device.tenant_id));
        Ok((device, pending))
    }

    /// Check-in messages that replace or destroy state (Authenticate, TokenUpdate, CheckOut) must have been
    /// signed recently when the signature says when: Apple's protocol has no nonce, so a captured message could
    /// otherwise be replayed at any later time. A signature without signingTime is accepted (the protocol does
    /// not require one).
    fn check_freshness(
        &self,
        signature: Option<&str>,
        now: UnixTime,
    ) -> Result<(), DeviceRejection> {
        let Some(max_age) = self.config.device_message_max_age_seconds else {
            return Ok(());
        };
        let Some(signed_at) =
            signature.and_then(orchard_pki::signature::mdm_signature_signing_time)
        else {
            return Ok(());
        };
        if (now.0 - signed_at.0).abs() > max_age {
            tracing::warn!(
                signed_at = signed_at.0,
                now = now.0,
                max_age,
                "check-in refused: signing time outside the freshness window"
            );
            return Err(DeviceRejection::UntrustedIdentity(
                "message signed outside the freshness window".into(),
            ));
        }
        Ok(())
    }

    async fn touch(&self, device: &Device, now: UnixTime) -> Result<(), CoreError> {
        if last_seen_stale(device, now) {
            self.store.touch_device(device.id, now).await?;
        }
        Ok(())
    }

    /// `PUT /mdm/checkin`.
    pub async fn checkin(
        &self,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<CheckinReply, CoreError> {
        self.checkin_arrived(signature, body, std::time::Instant::now())
            .await
    }

    /// [`Orchard::checkin`] of a request whose wait began at `arrived` (for a device's first request on a
    /// connection, when the connection was accepted): adaptive push pacing counts the latency from there.
    pub async fn checkin_arrived(
        &self,
        signature: Option<&str>,
        body: &[u8],
        arrived: std::time::Instant,
    ) -> Result<CheckinReply, CoreError> {
        let now = self.clock.now();
        let signer = self.verify_signature(signature, body, now)?;
        // Counted while it is served (adaptive push pacing), once the signature verified.
        let _serving = self.device_request_verified(arrived);
        let message = checkin::decode_checkin(body)
            .map_err(|e| DeviceRejection::MalformedBody(e.to_string()))?;
        self.metrics.checkin(message.message_type());
        crate::observability::note_device(message.udid(), None);
        if let Some(topic) = message.topic() {
            if *topic != self.current_topic() {
                return Err(DeviceRejection::WrongTopic.into());
            }
        }
        if matches!(
            message,
            CheckinMessage::Authenticate(_)
                | CheckinMessage::TokenUpdate(_)
                | CheckinMessage::CheckOut(_)
        ) {
            self.check_freshness(signature, now)?;
        }
        match message {
            CheckinMessage::Authenticate(a) => self.authenticate(a, &signer, now).await,
            CheckinMessage::TokenUpdate(t) => self.token_update(t, &signer, now).await,
            CheckinMessage::CheckOut(c) => {
                let device = self.bound_device(&c.udid, &signer).await?;
                if c.user.is_none() {
                    // The profile (and with it this identity) is gone from the device: the identity ends with
                    // the enrollment, so a replay of its Authenticate can never enroll the UDID again.
                    let mut unit = self.store.begin_unit().await?;
                    unit.check_out(&c.udid, now).await?;
                    unit.revoke_identity(&signer.fingerprint, CHECKED_OUT_REASON, now)
                        .await?;
                    // It leaves its smart groups with the enrollment.
                    self.device_inventory_changed(
                        &mut unit,
                        device.id,
                        device.tenant_id,
                        "checked_out",
                        MarkDevice::Always,
                        None,
                        now,
                    )
                    .await?;
                    self.record_webhook_event(
                        &mut unit,
                        Some(device.tenant_id),
                        crate::webhooks::EVENT_DEVICE_CHECKED_OUT,
                        device_event_data(&device),
                        now,
                    )
                    .await?;
                    self.commit_unit(unit).await?;
                    tracing::info!(udid = %c.udid, "device checked out");
                }
                Ok(CheckinReply::Empty)
            }
            CheckinMessage::DeclarativeManagement(d) => {
                let device = self.bound_device(&d.udid, &signer).await?;
                self.touch(&device, now).await?;
                self.declarative_checkin(&device, &d, now).await
            }
            CheckinMessage::GetBootstrapToken(g) => {
                let device = self.bound_device(&g.udid, &signer).await?;
                self.get_bootstrap_token(&device, &g).await
            }
            CheckinMessage::SetBootstrapToken(s) => {
                let device = self.bound_device(&s.udid, &signer).await?;
                self.set_bootstrap_token(&device, &s, now).await
            }
            CheckinMessage::GetToken(g) => {
                self.bound_device(&g.udid, &signer).await?;
                Err(
                    DeviceRejection::Unsupported(format!("token service {}", g.token_service_type))
                        .into(),
                )
            }
        }
    }

    /// Authenticate: binds the signing identity to the UDID when its grant may claim that device (see
    /// [`crate::enrollment::binding`]), in one unit of work that also resets the enrollment (channels and
    /// unfinished commands). An Authenticate of the identity the device is already bound to changes nothing
    /// (a replay, or a device repeating itself). Refusals change nothing, are answered 403 and are audited as
    /// security events.
    async fn authenticate(
        &self,
        a: checkin::Authenticate,
        signer: &VerifiedSigner,
        now: UnixTime,
    ) -> Result<CheckinReply, CoreError> {
        // Only identities we issued through SCEP may enroll; the issuing challenge decided tenant and grant.
        let issued = self
            .store
            .find_issued_certificate(&signer.fingerprint)
            .await?
            .ok_or_else(|| {
                DeviceRejection::UntrustedIdentity("certificate was not issued by our scep".into())
            })?;
        let mut unit = self.store.begin_unit().await?;
        let current = unit.device_binding(&a.udid).await?;
        let decision = self
            .binding_decision(&issued, &a.udid, current.as_ref(), now)
            .await?;
        let claim = match decision {
            BindingDecision::AlreadyBound => {
                unit.rollback().await?;
                tracing::info!(udid = %a.udid, "authenticate of the identity already bound: nothing changed");
                return Ok(CheckinReply::Empty);
            }
            BindingDecision::Refuse(reason) => {
                unit.rollback().await?;
                return Err(self
                    .refuse_binding(&issued, &a.udid, current.as_ref(), reason)
                    .await);
            }
            BindingDecision::Bind(claim) => claim,
        };
        if let Some(device) = current
            .as_ref()
            .map(|b| &b.device)
            .filter(|d| crate::enrollment::renewal::is_renewal_of(&issued, d))
        {
            // The device reinstalled its enrollment profile with a renewed identity: the same enrollment goes
            // on (channels, queue and setup stay), only the binding moves.
            unit.rollback().await?;
            return match self.move_to_renewed_identity(device, &issued, now).await? {
                Some(_) => Ok(CheckinReply::Empty),
                None => Err(self
                    .refuse_binding(
                        &issued,
                        &a.udid,
                        current.as_ref(),
                        "device changed meanwhile",
                    )
                    .await),
            };
        }
        let tenant_id = claim.tenant(&issued, current.as_ref());
        let bound = unit
            .bind_identity(
                &AuthenticateDevice {
                    udid: a.udid.clone(),
                    tenant_id,
                    cert_fingerprint: signer.fingerprint.clone(),
                    topic: a.topic.to_string(),
                    facts: DeviceFacts {
                        serial_number: a.serial_number.map(|s| s.to_string()),
                        device_name: a.device_name,
                        model: a.model,
                        model_name: a.model_name,
                        product_name: a.product_name,
                        os_version: a.os_version,
                        build_version: a.build_version,
                        is_supervised: None,
                        facts_digest: None,
                        plan_inputs_digest: None,
                    },
                    now,
                },
                current.as_ref().map(|b| &b.device),
            )
            .await?;
        let Some(device) = bound else {
            unit.rollback().await?;
            return Err(self
                .refuse_binding(
                    &issued,
                    &a.udid,
                    current.as_ref(),
                    "device changed meanwhile",
                )
                .await);
        };
        self.commit_unit(unit).await?;
        let previous_tenant = current.as_ref().map(|b| b.device.tenant_id);
        if previous_tenant.is_some_and(|t| t != device.tenant_id) {
            self.audit_cross_tenant_bind(&issued, &device, previous_tenant, claim)
                .await;
        }
        tracing::info!(udid = %a.udid, device = %device.id, tenant = %device.tenant_id, claim = claim.as_str(), "authenticate: new enrollment");
        Ok(CheckinReply::Empty)
    }

    /// TokenUpdate. The first one of a device channel is one unit of work: the token, the inventory queries,
    /// the setup state and the setup commands commit together or not at all, so a device whose first
    /// TokenUpdate failed half-way is still "first" when it retries and gets its setup.
    async fn token_update(
        &self,
        t: checkin::TokenUpdate,
        signer: &VerifiedSigner,
        now: UnixTime,
    ) -> Result<CheckinReply, CoreError> {
        let device = self.bound_device(&t.udid, signer).await?;
        let channel = match &t.user {
            Some(u) => ChannelId::user(&t.udid, &u.user_short_name),
            None => ChannelId::device(&t.udid),
        };
        let mut unit = self.store.begin_unit().await?;
        let outcome = unit
            .update_token(&TokenUpdateRecord {
                device_id: device.id,
                channel: channel.clone(),
                user_short_name: t.user.as_ref().map(|u| u.user_short_name.clone()),
                user_id: t.user.as_ref().map(|u| u.user_id.clone()),
                push_token: t.token,
                push_magic: t.push_magic.to_string(),
                unlock_token: self.seal_unlock_token(&channel, t.unlock_token)?,
                awaiting_configuration: t.awaiting_configuration,
                now,
            })
            .await?;
        let first_of_device = outcome.first && t.user.is_none();
        let first_of_user = outcome.first && t.user.is_some();
        if let Some(user) = t.user.as_ref().filter(|_| first_of_user) {
            // A Shared iPad user's first sign-in: its channel gets its user-scoped declarations.
            self.sync_user_declarations(&mut unit, &device, &user.user_short_name, now)
                .await?;
        }
        if first_of_device {
            let cmds = initial_inventory_commands()
                .iter()
                .map(|c| {
                    let target = CommandTarget {
                        device_id: device.id,
                        tenant_id: device.tenant_id,
                        channel: &channel,
                    };
                    self.new_command(c, target, QueuedBy::Enrollment, now)
                })
                .collect::<Result<Vec<_>, CoreError>>()?;
            unit.enqueue_commands(&cmds).await?;
            self.start_setup(&mut unit, &device, &channel, t.awaiting_configuration, now)
                .await?;
            // Enrolled now: its smart groups and assignments apply.
            self.device_inventory_changed(
                &mut unit,
                device.id,
                device.tenant_id,
                "enrollment",
                MarkDevice::Always,
                None,
                now,
            )
            .await?;
            self.record_webhook_event(
                &mut unit,
                Some(device.tenant_id),
                crate::webhooks::EVENT_DEVICE_ENROLLED,
                device_event_data(&device),
                now,
            )
            .await?;
        }
        self.commit_unit(unit).await?;
        if first_of_device {
            self.wake_reconciler();
        }
        if first_of_device {
            tracing::info!(udid = %t.udid, "first token update: inventory queued");
        }
        if first_of_user {
            tracing::info!(udid = %t.udid, channel = %channel, "first token update of a shared ipad user");
        }
        Ok(CheckinReply::Empty)
    }

    /// `PUT /mdm/command`: stores the report of the previous command (if any) and answers the next one, or
    /// `None` for an empty body (nothing to do).
    pub async fn command_report(
        &self,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<Option<Vec<u8>>, CoreError> {
        self.command_report_arrived(signature, body, std::time::Instant::now())
            .await
    }

    /// [`Orchard::command_report`] of a request whose wait began at `arrived` (see [`Orchard::checkin_arrived`]).
    pub async fn command_report_arrived(
        &self,
        signature: Option<&str>,
        body: &[u8],
        arrived: std::time::Instant,
    ) -> Result<Option<Vec<u8>>, CoreError> {
        let now = self.clock.now();
        let signer = self.verify_signature(signature, body, now)?;
        let _serving = self.device_request_verified(arrived);
        let report = report::decode_report(body)
            .map_err(|e| DeviceRejection::MalformedBody(e.to_string()))?;
        crate::observability::note_device(&report.udid, None);
        let channel = report.channel();
        let policy = &self.command_queue.policy;
        // An idle poll that may claim at once (as the checks below decide from the lookup) claims in the
        // lookup's own statement where the store can (PostgreSQL): one round trip for the common poll.
        let (found, claim) = if report.status == ReportStatus::Idle {
            match self
                .store
                .find_device_for_idle_poll(&IdlePoll {
                    udid: &report.udid,
                    channel: &channel,
                    signer_fingerprint: &signer.fingerprint,
                    now,
                    last_seen_granularity: LAST_SEEN_GRANULARITY,
                    policy,
                })
                .await?
            {
                Some((found, claim)) => (Some(found), claim),
                None => (None, IdlePollClaim::NotTried),
            }
        } else {
            let found = self
                .store
                .find_device_with_identity(&report.udid, Some(&channel))
                .await?;
            (found, IdlePollClaim::NotTried)
        };
        let (device, pending) = self
            .bound_requesting_device(&report.udid, &signer, found)
            .await?;
        if let IdlePollClaim::Tried(next) = claim {
            return self.command_for_delivery(&channel, next).await;
        }
        // An idle poll the reconciler did not just plan for knows from the lookup whether anything waits: an
        // empty queue answers with no further statement, a full one goes straight to the claim, which then also
        // writes the last-seen time. After a report (or a plan) the queue may have changed since the lookup, so
        // it is read again.
        let known = report.status == ReportStatus::Idle && !pending.awaiting_reconcile;
        let stale = last_seen_stale(&device, now);
        let touch_with_claim = stale && known && pending.channel_has_unfinished;
        if stale && !touch_with_claim {
            self.store.touch_device(device.id, now).await?;
        }
        if pending.awaiting_reconcile {
            self.reconcile_arriving_device(device.id, now).await?;
        }

        let mut maybe_more = true;
        if report.status != ReportStatus::Idle {
            maybe_more = self
                .store_report(&device, &channel, &report, body, pending, now)
                .await?;
        }
        if !maybe_more {
            // The report found the channel's queue empty and queued nothing itself: the common last answer of
            // a session needs no read for its empty reply (a command queued since is pushed).
            return Ok(None);
        }
        // After NotNow (or any report) the rest of this session skips NotNow commands, so a device that
        // cannot run one now is not asked again in a loop; an Idle (a new session) gets them again.
        let skip_not_now = report.status != ReportStatus::Idle;
        let next = match (known, pending.channel_has_unfinished) {
            (true, false) => None,
            (true, true) if touch_with_claim => {
                self.store
                    .touch_and_claim_next_command(device.id, &channel, skip_not_now, now, policy)
                    .await?
            }
            (true, true) => {
                self.store
                    .claim_next_command(&channel, skip_not_now, now, policy)
                    .await?
            }
            (false, _) => {
                self.store
                    .next_command_with(&channel, skip_not_now, now, policy)
                    .await?
            }
        };
        self.command_for_delivery(&channel, next).await
    }

    /// One report is one unit of work: the result, its inventory effects, the bypass-code escrow and the
    /// setup progress (up to queueing DeviceConfigured) commit together. A report whose unit failed left no
    /// trace, so the device's retry is recorded and applied, not ignored as a duplicate.
    ///
    /// Returns whether the channel may have more work: false only when the recorded command was its last
    /// unfinished one and the unit queued nothing. Its webhook events are written only when the request's
    /// device lookup saw an enabled endpoint (`pending`).
    async fn store_report(
        &self,
        device: &Device,
        channel: &ChannelId,
        report: &CommandReport,
        raw: &[u8],
        pending: Pending,
        now: UnixTime,
    ) -> Result<bool, CoreError> {
        let Some(uuid) = &report.command_uuid else {
            return Err(DeviceRejection::MalformedBody("CommandUUID missing".into()).into());
        };
        let status = match report.status {
            ReportStatus::Acknowledged => CommandStatus::Acknowledged,
            ReportStatus::Error => CommandStatus::Error,
            ReportStatus::CommandFormatError => CommandStatus::CommandFormatError,
            ReportStatus::NotNow => CommandStatus::NotNow,
            ReportStatus::Idle => return Ok(true),
        };
        let error_chain = if report.error_chain.is_empty() {
            None
        } else {
            serde_json::to_string(&report.error_chain).ok()
        };
        let (result, result_sealed) = self.result_to_store(uuid, status, report, raw)?;
        // A DeviceInformation answer is parsed and classified once, for the shortcut and the general path.
        let inventory = (status == CommandStatus::Acknowledged)
            .then(|| InventoryAnswer::read(device, report))
            .flatten();
        if let Some(answer) = inventory
            .as_ref()
            .filter(|_| error_chain.is_none() && !pending.webhook_endpoints)
        {
            if let Some(more_unfinished) = self
                .store_repeated_facts_answer(
                    device,
                    channel,
                    uuid,
                    answer,
                    (result.as_deref(), result_sealed),
                    now,
                )
                .await?
            {
                let request_type = RequestType::DeviceInformation.as_str();
                crate::observability::note_command(uuid, request_type);
                tracing::debug!(udid = %device.udid, command = %uuid, request_type, status = status.as_str(), "command report");
                self.metrics.command_result(request_type, status.as_str());
                return Ok(more_unfinished);
            }
        }
        let mut reconcile = false;
        // Counted once the unit commits: a report whose unit failed is recorded again when the device retries.
        let mut counted = None;
        let mut maybe_more = true;
        let mut unit = self.store.begin_unit().await?;
        if !pending.webhook_endpoints {
            unit.assume_no_webhook_endpoints();
        }
        let outcome = unit
            .record_result(&CommandResultRecord {
                channel: channel.clone(),
                uuid: uuid.clone(),
                status,
                result,
                result_sealed,
                error_chain: error_chain.clone(),
                now,
            })
            .await?;
        match outcome {
            RecordOutcome::Recorded {
                request_type,
                queued_by,
                more_unfinished,
                ..
            } => {
                maybe_more = more_unfinished;
                crate::observability::note_command(uuid, request_type.as_str());
                counted = Some((request_type.as_str(), status.as_str()));
                tracing::debug!(udid = %device.udid, command = %uuid, %request_type, status = status.as_str(), "command report");
                if status != CommandStatus::NotNow {
                    self.command_result_events(
                        &mut unit,
                        device,
                        channel,
                        uuid,
                        request_type,
                        status,
                        error_chain.as_deref(),
                        now,
                    )
                    .await?;
                }
                // A DeviceInformation answer that repeats the OS facts and model of the last one (which was
                // evaluated) needs no new OS evaluation, nor one for an iPad without an OS policy or declarations.
                let mut skip_os_evaluation = !pending.os_evaluation_inputs;
                if status == CommandStatus::Acknowledged {
                    let AppliedResult {
                        applied,
                        standing,
                        groups_unchanged,
                    } = self
                        .apply_result(&mut unit, device, request_type, report, inventory, now)
                        .await?;
                    skip_os_evaluation |= applied != Applied::Stored;
                    // A DeviceInformation answer that repeats the facts groups and the reconciler read changes
                    // neither: the common daily report costs no re-evaluation and no reconciler pass.
                    // One that changes facts but none a plan reads marks the device only if it moves in a group.
                    if groups_unchanged {
                        reconcile |= applied.mark() == MarkDevice::Always;
                    } else if matches!(
                        request_type,
                        RequestType::DeviceInformation | RequestType::InstalledApplicationList
                    ) && applied != Applied::FactsUnchanged
                    {
                        reconcile |= self
                            .device_inventory_changed(
                                &mut unit,
                                device.id,
                                device.tenant_id,
                                "inventory",
                                applied.mark(),
                                standing,
                                now,
                            )
                            .await?;
                    }
                    if request_type == RequestType::UserList && !channel.is_user_channel() {
                        self.user_list_reported(&mut unit, device, report, now)
                            .await?;
                    }
                    if request_type == RequestType::ActivationLockBypassCode {
                        self.escrow_bypass_code(&mut unit, device, report, now)
                            .await?;
                    }
                }
                self.profile_command_reported(
                    &mut unit,
                    device,
                    uuid,
                    request_type,
                    status,
                    error_chain.as_deref(),
                    now,
                )
                .await?;
                if self
                    .app_command_reported(
                        &mut unit,
                        device.id,
                        uuid.as_str(),
                        request_type,
                        status,
                        report,
                        error_chain.as_deref(),
                        now,
                    )
                    .await?
                {
                    unit.mark_devices_dirty(&[device.id], now).await?;
                    reconcile = true;
                }
                // What the device has of its profiles changed (or may have): compare again.
                if matches!(
                    request_type,
                    RequestType::ProfileList
                        | RequestType::InstallProfile
                        | RequestType::RemoveProfile
                ) && status != CommandStatus::NotNow
                {
                    unit.mark_devices_dirty(&[device.id], now).await?;
                    reconcile = true;
                }
                self.desired_os_command_reported(
                    &mut unit,
                    device,
                    channel,
                    uuid,
                    request_type,
                    status,
                    report,
                    skip_os_evaluation,
                    now,
                )
                .await?;
                if request_type == RequestType::Settings
                    && queued_by == Some(QueuedBy::Reconciler)
                    && status != CommandStatus::NotNow
                    && self
                        .shared_ipad_settings_reported(
                            &mut unit,
                            device.id,
                            uuid.as_str(),
                            (status != CommandStatus::Acknowledged).then(|| {
                                error_chain
                                    .clone()
                                    .unwrap_or_else(|| status.as_str().to_owned())
                            }),
                            report,
                            now,
                        )
                        .await?
                {
                    reconcile = true;
                }
                if queued_by == Some(QueuedBy::Renewal)
                    && matches!(
                        status,
                        CommandStatus::Error | CommandStatus::CommandFormatError
                    )
                {
                    let why = error_chain
                        .clone()
                        .unwrap_or_else(|| status.as_str().to_owned());
                    self.record_renewal_failure(&mut unit, uuid, &why, now)
                        .await?;
                }
                if queued_by == Some(QueuedBy::Setup) {
                    self.setup_command_done(
                        &mut unit,
                        device,
                        channel,
                        request_type,
                        status,
                        error_chain.as_deref(),
                        now,
                    )
                    .await?;
                }
            }
            RecordOutcome::Duplicate => {
                tracing::debug!(udid = %device.udid, command = %uuid, "duplicate report ignored");
            }
            RecordOutcome::Unknown => {
                tracing::warn!(udid = %device.udid, command = %uuid, "report for a command this channel does not have");
            }
        }
        let maybe_more = maybe_more || unit.queued_commands();
        self.commit_unit(unit).await?;
        if let Some((request_type, status)) = counted {
            self.metrics.command_result(request_type, status);
        }
        if reconcile {
            self.wake_reconciler();
        }
        Ok(maybe_more)
    }
}

/// Whether the device's `last_seen_at` is older than [`LAST_SEEN_GRANULARITY`] (or unset): a request writes it.
fn last_seen_stale(device: &Device, now: UnixTime) -> bool {
    device
        .last_seen_at
        .is_none_or(|t| now.0 - t.0 >= LAST_SEEN_GRANULARITY)
}

/// What device events carry: the device's ids, never a secret.
fn device_event_data(device: &Device) -> serde_json::Value {
    serde_json::json!({
        "device_id": device.id.to_string(),
        "udid": device.udid.as_str(),
        "serial_number": device.serial_number,
        "model": device.model,
        "os_version": device.os_version,
    })
}

impl Orchard {
    /// `command.result` for every final answer, and `app.result` too for app commands, in the report's unit.
    #[allow(clippy::too_many_arguments)]
    async fn command_result_events(
        &self,
        unit: &mut UnitOfWork,
        device: &Device,
        channel: &ChannelId,
        uuid: &CommandUuid,
        request_type: RequestType,
        status: CommandStatus,
        error_chain: Option<&str>,
        now: UnixTime,
    ) -> Result<(), CoreError> {
        let data = serde_json::json!({
            "device_id": device.id.to_string(),
            "udid": device.udid.as_str(),
            "channel": channel.to_string(),
            "command_uuid": uuid.as_str(),
            "request_type": request_type.to_string(),
            "status": status.as_str(),
            "error_chain": error_chain.and_then(|e| serde_json::from_str::<serde_json::Value>(e).ok()),
        });
        let app_command = matches!(
            request_type,
            RequestType::InstallApplication
                | RequestType::RemoveApplication
                | RequestType::ManagedApplicationList
        );
        if app_command {
            self.record_webhook_event(
                unit,
                Some(device.tenant_id),
                crate::webhooks::EVENT_APP_RESULT,
                data.clone(),
                now,
            )
            .await?;
        }
        self.record_webhook_event(
            unit,
            Some(device.tenant_id),
            crate::webhooks::EVENT_COMMAND_RESULT,
            data,
            now,
        )
        .await
    }
}
