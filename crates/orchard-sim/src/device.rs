//! One simulated iPad on the network: enrollment (profile, SCEP, Authenticate, TokenUpdate), command
//! sessions on the ServerURL, CheckOut, and raw requests for tests that send hostile input.

use std::sync::Arc;

use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::X509;
use orchard_pki::scep::{self, CertRepOutcome};
use orchard_pki::Identity;
use orchard_protocol::checkin::{
    Authenticate, CheckOut, CheckinMessage, DeclarativeManagementCheckin, GetBootstrapToken,
    SetBootstrapToken, SharedIpadUser, TokenUpdate,
};
use orchard_protocol::declarative::{
    Declaration, DeclarationItemsResponse, Endpoint, TokensResponse,
};
use orchard_protocol::profile::{EnrollmentProfile, ScepPayload};
use orchard_types::{ApnsTopic, Clock, PushMagic, SerialNumber, SystemClock, Udid, UnixTime};
use rand::RngCore;

use crate::handler::{self, CommandOutcome, FollowUp};
use crate::net::{build_client, untrusting_client, ClientOptions};
use crate::profile::{der_to_pem, open_enrollment_profile, pem_bundle_to_der};
use crate::state::{DeviceState, HandledCommand};
use crate::{SimConfig, SimError};

/// Content type of check-in messages (CheckInURL).
pub const CHECKIN_CONTENT_TYPE: &str = "application/x-apple-aspen-mdm-checkin";
/// Content type of command reports (ServerURL).
pub const COMMAND_CONTENT_TYPE: &str = "application/x-apple-aspen-mdm";
/// Content type of an enrollment profile download.
pub const PROFILE_CONTENT_TYPE: &str = "application/x-apple-aspen-config";
/// Content type of a SCEP PKIOperation request and reply.
pub const PKI_MESSAGE_CONTENT_TYPE: &str = "application/x-pki-message";
/// Header carrying the detached CMS signature over the body.
pub const MDM_SIGNATURE_HEADER: &str = "Mdm-Signature";

/// A session that hands out more commands than this is a server bug (an endless resend loop), not work.
pub const MAX_COMMANDS_PER_SESSION: usize = 500;
/// SCEP key sizes iOS accepts.
const SCEP_KEY_SIZES: [u32; 3] = [1024, 2048, 4096];
/// The server capability under which a supervised iPad escrows its bootstrap token.
const BOOTSTRAP_TOKEN_CAPABILITY: &str = "com.apple.mdm.bootstraptoken";

/// What one command session did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionSummary {
    pub udid: String,
    /// Every command answered in this session, in order.
    pub handled: Vec<HandledCommand>,
    /// Set by [`crate::Fleet::poll_all`] when the session failed.
    pub error: Option<String>,
}

/// What one declarative sync did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeclarativeSync {
    /// The server's DeclarationsToken.
    pub declarations_token: String,
    /// The identifiers of the declarations fetched (new or changed).
    pub fetched: Vec<String>,
    /// Some(full) when a status report went out.
    pub status_sent: Option<bool>,
}

/// One simulated iPad.
pub struct SimDevice {
    pub state: DeviceState,
    client: reqwest::Client,
    /// The trust (PEM) `client` was built with, so it is rebuilt only when the trust changes.
    client_trust: Option<String>,
    /// The parsed identity and the certificate PEM it was parsed from (parsing a key per request is waste).
    identity_cache: Option<(String, Identity)>,
    /// A key generated ahead of time (off the async runtime) for the next SCEP enrollment; see
    /// [`SimDevice::set_scep_key`].
    scep_key: Option<PKey<Private>>,
    clock: Arc<dyn Clock>,
    /// Where the App Store is asked whether this serial holds an Apps and Books licence (the local Apps and
    /// Books server's `/fake/licence`), with a client that trusts it. `None`: every install succeeds.
    app_store: Option<(String, reqwest::Client)>,
    /// A command report whose answer never came back (the connection broke, or the server answered 5xx):
    /// the command ran, so the device sends this report again to open its next session instead of running
    /// the command a second time, as mdmclient does.
    unsent_report: Option<Vec<u8>>,
    /// How many sessions opened with such a report sent again.
    reports_sent_again: usize,
}

impl std::fmt::Debug for SimDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimDevice")
            .field("udid", &self.state.udid)
            .field("enrolled", &self.state.enrolled)
            .finish_non_exhaustive()
    }
}

impl SimDevice {
    /// A factory-fresh iPad with random UDID, serial number and MAC addresses.
    pub fn new_random(config: &SimConfig) -> Self {
        Self::from_state(DeviceState::new_random(config))
    }

    /// A device restored from a saved state, using `client`, which must trust exactly `trust_pem` (see
    /// [`SimDevice::trust_pem`]); a fleet passes one client to many devices.
    pub fn from_state_with_client(
        state: DeviceState,
        client: reqwest::Client,
        trust_pem: Option<String>,
    ) -> Self {
        SimDevice {
            state,
            client,
            client_trust: trust_pem,
            identity_cache: None,
            scep_key: None,
            clock: Arc::new(SystemClock),
            app_store: None,
            unsent_report: None,
            reports_sent_again: 0,
        }
    }

    /// A device restored from a saved state, with its own HTTP client.
    pub fn from_state(state: DeviceState) -> Self {
        let trust = state
            .ca_pem
            .clone()
            .or_else(|| state.configured_ca_pem.clone());
        let client = trust
            .as_ref()
            .and_then(|pem| {
                build_client(&ClientOptions {
                    ca_pem: Some(pem.as_bytes().to_vec()),
                    ..ClientOptions::default()
                })
                .ok()
            })
            .unwrap_or_else(untrusting_client);
        SimDevice {
            state,
            client,
            client_trust: trust,
            identity_cache: None,
            scep_key: None,
            clock: Arc::new(SystemClock),
            app_store: None,
            unsent_report: None,
            reports_sent_again: 0,
        }
    }

    /// Shares an HTTP client (and its connection pool) built for exactly the trust `trust_pem`.
    pub fn set_client(&mut self, client: reqwest::Client, trust_pem: Option<String>) {
        self.client = client;
        self.client_trust = trust_pem;
    }

    /// Supplies the RSA key the next SCEP enrollment uses, if its size is what the profile asks for. Fleets
    /// enrolling thousands of devices generate keys on blocking threads in parallel, so key generation does
    /// not stall the async runtime that carries every other device's requests.
    pub fn set_scep_key(&mut self, key: PKey<Private>) {
        self.scep_key = Some(key);
    }

    /// From now on an Apps and Books install (InstallApplication with PurchaseMethod 1) asks the local Apps and
    /// Books server at `base_url` (its `/fake/licence`, through `client`) whether this serial holds a licence for
    /// the app, and fails without one, as a real iPad does.
    pub fn use_app_store(&mut self, base_url: &str, client: reqwest::Client) {
        self.app_store = Some((base_url.trim_end_matches('/').to_owned(), client));
    }

    /// Asks the App Store about the licence when `command_plist` is an Apps and Books install.
    async fn check_app_licence(&mut self, command_plist: &[u8]) -> Result<(), SimError> {
        self.state.app_licence_associated = None;
        let Some((base_url, client)) = &self.app_store else {
            return Ok(());
        };
        let Ok((_, command)) = orchard_protocol::commands::decode_command(command_plist) else {
            return Ok(());
        };
        let orchard_protocol::commands::Command::InstallApplication {
            itunes_store_id: Some(adam_id),
            purchase_method: Some(1),
            ..
        } = command
        else {
            return Ok(());
        };
        let answer: serde_json::Value = client
            .get(format!("{base_url}/fake/licence"))
            .query(&[
                ("serialNumber", self.state.serial_number.clone()),
                ("adamId", adam_id.to_string()),
            ])
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        self.state.app_licence_associated = Some(answer["associated"] == true);
        Ok(())
    }

    /// Replaces the clock (tests move time by hand).
    pub fn set_clock(&mut self, clock: Arc<dyn Clock>) {
        self.clock = clock;
    }

    /// The PEM this device trusts for TLS right now.
    pub fn trust_pem(&self) -> Option<String> {
        trust_of(&self.state)
    }

    pub fn udid(&self) -> &str {
        &self.state.udid
    }

    pub fn raw_client(&self) -> &reqwest::Client {
        &self.client
    }

    fn now(&self) -> UnixTime {
        self.clock.now()
    }

    /// Downloads the enrollment profile from `enrollment_url` (through the link's landing page when it answers
    /// one, as a person taps its button) and enrolls with it.
    pub async fn enroll(&mut self, enrollment_url: &str) -> Result<(), SimError> {
        let download_client = if self.trust_pem().is_some() {
            self.client.clone()
        } else {
            // Trust on first use: the download is the one request made without a trusted root.
            build_client(&ClientOptions {
                danger_accept_any_server_cert: true,
                keep_alive: false,
                ..ClientOptions::default()
            })?
        };
        let mut response = download_client.get(enrollment_url).send().await?;
        // Orchard's link answers a landing page; like a person, tap its download button.
        if response.status().is_success()
            && header_text(&response, reqwest::header::CONTENT_TYPE).starts_with("text/html")
        {
            let page_url = response.url().clone();
            let page = response.text().await?;
            let href = page
                .split("id=\"download\" href=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .ok_or(SimError::ContentType {
                    what: "enrollment landing page without a download button",
                    content_type: "text/html".into(),
                })?;
            let download = page_url.join(href).map_err(|_| SimError::ContentType {
                what: "enrollment landing page with a bad download link",
                content_type: "text/html".into(),
            })?;
            response = download_client.get(download).send().await?;
        }
        let status = response.status().as_u16();
        let content_type = header_text(&response, reqwest::header::CONTENT_TYPE);
        let body = response.bytes().await?;
        if status != 200 {
            return Err(SimError::Status {
                what: "enrollment profile download",
                status,
                body: body_excerpt(&body),
            });
        }
        if !content_type.starts_with(PROFILE_CONTENT_TYPE) {
            return Err(SimError::ContentType {
                what: "enrollment profile download",
                content_type,
            });
        }
        self.enroll_with_profile(&body).await
    }

    /// Installs a signed enrollment profile: verify, SCEP, Authenticate, TokenUpdate. On failure the device
    /// is left as it was, as iOS rolls back a profile that fails to install.
    pub async fn enroll_with_profile(&mut self, profile_bytes: &[u8]) -> Result<(), SimError> {
        self.enroll_with_profile_anchored(profile_bytes, &[]).await
    }

    /// [`SimDevice::enroll_with_profile`] that also accepts a profile signature chaining to one of
    /// `extra_anchors_der` (an ADE profile's `anchor_certs`).
    pub(crate) async fn enroll_with_profile_anchored(
        &mut self,
        profile_bytes: &[u8],
        extra_anchors_der: &[Vec<u8>],
    ) -> Result<(), SimError> {
        let snapshot = self.state.clone();
        let result = self
            .install_enrollment_profile(profile_bytes, extra_anchors_der)
            .await;
        if result.is_err() {
            self.state = snapshot;
        }
        result
    }

    async fn install_enrollment_profile(
        &mut self,
        profile_bytes: &[u8],
        extra_anchors_der: &[Vec<u8>],
    ) -> Result<(), SimError> {
        let configured = match &self.state.configured_ca_pem {
            Some(pem) => pem_bundle_to_der(pem.as_bytes())?,
            None => Vec::new(),
        };
        let mut anchors = configured.clone();
        for der in extra_anchors_der {
            if !anchors.contains(der) {
                anchors.push(der.clone());
            }
        }
        let opened = open_enrollment_profile(profile_bytes, &anchors)?;
        let profile = opened.profile;

        // Trust what the profile installs and the ADE anchors (and keep the configured anchor).
        let mut trust = self.state.configured_ca_pem.clone().unwrap_or_default();
        let mut trusted_ders = configured;
        for root in extra_anchors_der
            .iter()
            .chain(profile.root_ca_der.iter())
            .chain(std::iter::once(&opened.trusted_root_der))
        {
            if !trusted_ders.contains(root) {
                trust.push_str(&der_to_pem(root)?);
                trusted_ders.push(root.clone());
            }
        }
        self.state.ca_pem = Some(trust.clone());
        if self.client_trust.as_deref() != Some(trust.as_str()) {
            self.client = build_client(&ClientOptions {
                ca_pem: Some(trust.clone().into_bytes()),
                ..ClientOptions::default()
            })?;
            self.client_trust = Some(trust);
        }

        let pregenerated = self.scep_key.take();
        let (key, cert) = self.scep_enroll(&profile.scep, pregenerated).await?;
        let key_pem = key.private_key_to_pem_pkcs8()?;
        let cert_pem = cert.to_pem()?;
        self.state.key_pem = String::from_utf8_lossy(&key_pem).into_owned();
        self.state.identity_cert_pem = Some(String::from_utf8_lossy(&cert_pem).into_owned());
        self.state.server_url = profile.mdm.server_url.clone();
        self.state.check_in_url = checkin_url_of(&profile);
        self.state.topic = profile.mdm.topic.as_str().to_owned();
        self.state.check_out_when_removed = profile.mdm.check_out_when_removed;
        self.state.access_rights = profile.mdm.access_rights;

        self.authenticate().await?;
        self.token_update().await?;
        // A supervised iPad escrows its bootstrap token with a server that says it takes one.
        if self.state.supervised
            && profile
                .mdm
                .server_capabilities
                .iter()
                .any(|c| c == BOOTSTRAP_TOKEN_CAPABILITY)
        {
            self.set_bootstrap_token().await?;
        }
        self.state.enrollment_profile = Some(opened.summary);
        self.state.enrolled = true;
        Ok(())
    }

    /// SCEP (RFC 8894) as iOS does it: GetCACaps, GetCACert, then PKCSReq by POST (or GET if the CA cannot
    /// take POST). Returns the new key and certificate.
    async fn scep_enroll(
        &self,
        scep_payload: &ScepPayload,
        pregenerated: Option<PKey<Private>>,
    ) -> Result<(PKey<Private>, X509), SimError> {
        let url = scep_payload.url.as_str();
        let caps_response = self
            .client
            .get(url)
            .query(&[
                ("operation", "GetCACaps"),
                ("message", scep_payload.name.as_str()),
            ])
            .send()
            .await?;
        let caps_status = caps_response.status().as_u16();
        let caps = caps_response.text().await?;
        if caps_status != 200 {
            return Err(SimError::Status {
                what: "scep GetCACaps",
                status: caps_status,
                body: body_excerpt(caps.as_bytes()),
            });
        }
        let can_post = caps.lines().any(|l| l.trim() == "POSTPKIOperation");

        let ca_response = self
            .client
            .get(url)
            .query(&[
                ("operation", "GetCACert"),
                ("message", scep_payload.name.as_str()),
            ])
            .send()
            .await?;
        let ca_status = ca_response.status().as_u16();
        let ca_content_type = header_text(&ca_response, reqwest::header::CONTENT_TYPE);
        let ca_body = ca_response.bytes().await?;
        if ca_status != 200 {
            return Err(SimError::Status {
                what: "scep GetCACert",
                status: ca_status,
                body: body_excerpt(&ca_body),
            });
        }
        let (recipient_der, all_ca_certs) = scep_recipient(&ca_content_type, &ca_body)?;
        if let Some(expected) = &scep_payload.ca_fingerprint {
            check_ca_fingerprint(&all_ca_certs, expected)?;
        }

        let (key, pending) = start_scep_request_with_key(
            &recipient_der,
            scep_payload,
            &self.state.udid,
            self.now(),
            pregenerated,
        )?;

        let request = if can_post {
            self.client
                .post(url)
                .query(&[("operation", "PKIOperation")])
                .header(reqwest::header::CONTENT_TYPE, PKI_MESSAGE_CONTENT_TYPE)
                .body(pending.message_der.clone())
        } else {
            use base64::Engine as _;
            let message = base64::engine::general_purpose::STANDARD.encode(&pending.message_der);
            self.client
                .get(url)
                .query(&[("operation", "PKIOperation"), ("message", message.as_str())])
        };
        let reply = request.send().await?;
        let reply_status = reply.status().as_u16();
        let reply_content_type = header_text(&reply, reqwest::header::CONTENT_TYPE);
        let reply_body = reply.bytes().await?;
        if reply_status != 200 {
            return Err(SimError::Status {
                what: "scep PKIOperation",
                status: reply_status,
                body: body_excerpt(&reply_body),
            });
        }
        if !reply_content_type.starts_with(PKI_MESSAGE_CONTENT_TYPE) {
            return Err(SimError::ContentType {
                what: "scep PKIOperation",
                content_type: reply_content_type,
            });
        }
        let cert = finish_scep_request(&pending, &key, &recipient_der, &reply_body)?;
        Ok((key, cert))
    }

    async fn authenticate(&mut self) -> Result<(), SimError> {
        let message = CheckinMessage::Authenticate(Authenticate {
            topic: self.topic()?,
            udid: self.udid_typed()?,
            serial_number: SerialNumber::parse(&self.state.serial_number).ok(),
            os_version: Some(self.state.os_version.clone()),
            build_version: Some(self.state.build_version.clone()),
            product_name: Some(self.state.product_name.clone()),
            // An iPad sends neither model nor device name in Authenticate (macOS only, per Apple's schema).
            model: None,
            model_name: None,
            device_name: None,
            imei: None,
            meid: None,
        });
        self.checkin("Authenticate", message.encode()).await
    }

    async fn token_update(&mut self) -> Result<(), SimError> {
        // The thread-local generator must not live across an await (the future must stay Send).
        if self.state.push_token.is_empty() {
            self.state.push_token = random_bytes(32);
        }
        if self.state.push_magic.is_empty() {
            self.state.push_magic = uuid::Uuid::new_v4().hyphenated().to_string().to_uppercase();
        }
        if self.state.unlock_token.is_empty() {
            self.state.unlock_token = random_bytes(32);
        }
        let message = CheckinMessage::TokenUpdate(TokenUpdate {
            topic: self.topic()?,
            udid: self.udid_typed()?,
            token: self.state.push_token.clone(),
            push_magic: PushMagic::parse(&self.state.push_magic)
                .map_err(|e| SimError::InvalidArgument(e.to_string()))?,
            // A Shared iPad sends no UnlockToken.
            unlock_token: (!self.state.shared_ipad).then(|| self.state.unlock_token.clone()),
            awaiting_configuration: self.state.awaiting_configuration,
            user: None,
        });
        self.checkin("TokenUpdate", message.encode()).await
    }

    /// A student signs in on this Shared iPad: whoever was signed in is signed out, the user becomes resident
    /// (with `data_quota` bytes the first time) and logged in, and the user channel's TokenUpdate
    /// (`UserShortName`, the all-F `UserID`, its own push token and PushMagic) goes to the server.
    pub async fn sign_in_user(&mut self, user_name: &str, data_quota: i64) -> Result<(), SimError> {
        if !self.state.enrolled {
            return Err(SimError::NotEnrolled);
        }
        if !self.state.shared_ipad {
            return Err(SimError::InvalidArgument(
                "only a Shared iPad signs users in".into(),
            ));
        }
        for user in &mut self.state.shared_users {
            user.is_logged_in = false;
        }
        match self
            .state
            .shared_users
            .iter_mut()
            .find(|u| u.user_name == user_name)
        {
            Some(user) => user.is_logged_in = true,
            None => self.state.shared_users.push(crate::state::SharedUserState {
                user_name: user_name.to_owned(),
                full_name: None,
                is_logged_in: true,
                has_data_to_sync: false,
                data_quota,
                data_used: 0,
                handled_commands: Vec::new(),
            }),
        }
        let message = CheckinMessage::TokenUpdate(TokenUpdate {
            topic: self.topic()?,
            udid: self.udid_typed()?,
            token: random_bytes(32),
            push_magic: PushMagic::parse(
                &uuid::Uuid::new_v4().hyphenated().to_string().to_uppercase(),
            )
            .map_err(|e| SimError::InvalidArgument(e.to_string()))?,
            unlock_token: None,
            awaiting_configuration: false,
            user: Some(shared_user(user_name)),
        });
        self.checkin("TokenUpdate (user)", message.encode()).await
    }

    /// The signed-in user signs out (the device tells the server nothing).
    pub fn sign_out_user(&mut self) {
        for user in &mut self.state.shared_users {
            user.is_logged_in = false;
        }
    }

    /// The signed-in user's work: `data_used` bytes, `unsynced` whether some of it is not in iCloud yet.
    pub fn set_user_data(
        &mut self,
        user_name: &str,
        data_used: i64,
        unsynced: bool,
    ) -> Result<(), SimError> {
        let user = self
            .state
            .shared_users
            .iter_mut()
            .find(|u| u.user_name == user_name)
            .ok_or_else(|| SimError::InvalidArgument(format!("no user {user_name}")))?;
        user.data_used = data_used;
        user.has_data_to_sync = unsynced;
        Ok(())
    }

    /// A command session on a Shared iPad user's channel (the user must be resident): Idle, then each command
    /// answered for that user, recorded in its state; a DeclarativeManagement command is followed by the
    /// user channel's declarative sync.
    pub async fn poll_user(&mut self, user_name: &str) -> Result<SessionSummary, SimError> {
        if !self.state.enrolled {
            return Err(SimError::NotEnrolled);
        }
        if !self
            .state
            .shared_users
            .iter()
            .any(|u| u.user_name == user_name)
        {
            return Err(SimError::InvalidArgument(format!("no user {user_name}")));
        }
        let user = shared_user(user_name);
        let mut summary = SessionSummary {
            udid: self.state.udid.clone(),
            ..SessionSummary::default()
        };
        let server_url = required(&self.state.server_url)?.to_owned();
        let identity = self.cached_identity()?;
        let mut body = handler::user_idle_report(&self.state, &user)?;
        for _ in 0..MAX_COMMANDS_PER_SESSION {
            let reply = self
                .send_session_request(&server_url, &identity, body, None)
                .await?;
            if reply.iter().all(u8::is_ascii_whitespace) {
                break;
            }
            let outcome = handler::handle_user_command(&mut self.state, &user, &reply)?;
            if let (Some(handled), Some(state)) = (
                outcome.handled.as_ref(),
                self.state
                    .shared_users
                    .iter_mut()
                    .find(|u| u.user_name == user_name),
            ) {
                state.handled_commands.push(handled.clone());
            }
            summary.handled.extend(outcome.handled);
            body = outcome.report;
        }
        let asked_to_sync = summary.handled.iter().any(|h| {
            h.request_type == "DeclarativeManagement"
                && h.status == orchard_types::CommandStatus::Acknowledged
        });
        if asked_to_sync {
            self.declarative_sync_channel(Some(user)).await?;
        }
        Ok(summary)
    }

    /// Sends a TokenUpdate again (an iPad does when its push token changes); `AwaitingConfiguration` says
    /// whether the device is still held in Setup Assistant.
    pub async fn send_token_update(&mut self) -> Result<(), SimError> {
        if !self.state.enrolled {
            return Err(SimError::NotEnrolled);
        }
        self.token_update().await
    }

    /// SetBootstrapToken: escrows the device's bootstrap token (made on first use, as the device makes it once).
    async fn set_bootstrap_token(&mut self) -> Result<(), SimError> {
        if self.state.bootstrap_token.is_empty() {
            self.state.bootstrap_token = random_bytes(48);
        }
        let message = CheckinMessage::SetBootstrapToken(SetBootstrapToken {
            udid: self.udid_typed()?,
            bootstrap_token: self.state.bootstrap_token.clone(),
            awaiting_configuration: self.state.awaiting_configuration,
        });
        self.checkin("SetBootstrapToken", message.encode()).await
    }

    /// GetBootstrapToken: what the server has escrowed for this device (empty when nothing).
    pub async fn get_bootstrap_token(&mut self) -> Result<Vec<u8>, SimError> {
        let message = CheckinMessage::GetBootstrapToken(GetBootstrapToken {
            udid: self.udid_typed()?,
            awaiting_configuration: self.state.awaiting_configuration,
        });
        let reply = self
            .checkin_with_reply("GetBootstrapToken", message.encode())
            .await?;
        let dict: plist::Dictionary = plist::from_bytes(&reply)
            .map_err(|e| SimError::InvalidArgument(format!("GetBootstrapToken reply: {e}")))?;
        Ok(dict
            .get("BootstrapToken")
            .and_then(|v| v.as_data())
            .map(<[u8]>::to_vec)
            .unwrap_or_default())
    }

    /// A declarative sync of the device channel, as an iPad runs it after a DeclarativeManagement command:
    /// `tokens`; when the DeclarationsToken changed, `declaration-items` and every new or changed declaration;
    /// apply them; then upload status (a FullReport first, later only what changed).
    pub async fn declarative_sync(&mut self) -> Result<DeclarativeSync, SimError> {
        self.declarative_sync_channel(None).await
    }

    /// [`SimDevice::declarative_sync`] on the user channel of a Shared iPad user.
    pub async fn declarative_sync_user(
        &mut self,
        user_short_name: &str,
    ) -> Result<DeclarativeSync, SimError> {
        let user = SharedIpadUser {
            user_id: uuid::Uuid::new_v4().hyphenated().to_string().to_uppercase(),
            user_short_name: user_short_name.to_owned(),
            user_long_name: None,
        };
        self.declarative_sync_channel(Some(user)).await
    }

    async fn declarative_sync_channel(
        &mut self,
        user: Option<SharedIpadUser>,
    ) -> Result<DeclarativeSync, SimError> {
        if !self.state.enrolled {
            return Err(SimError::NotEnrolled);
        }
        let channel_name = user
            .as_ref()
            .map(|u| u.user_short_name.clone())
            .unwrap_or_default();
        let tokens: TokensResponse = self.ddm_json(&user, Endpoint::Tokens).await?;
        let token = tokens.sync_tokens.declarations_token;
        let known = self
            .state
            .ddm
            .get(&channel_name)
            .and_then(|c| c.declarations_token.clone());
        let mut fetched = Vec::new();
        if known.as_deref() != Some(token.as_str()) {
            let items: DeclarationItemsResponse =
                self.ddm_json(&user, Endpoint::DeclarationItems).await?;
            let wanted =
                crate::declarative::to_fetch(&self.state, &channel_name, &items.declarations);
            let mut set = Vec::new();
            for (kind, item) in items.declarations.all() {
                let declaration = if wanted.contains(&(kind, item.identifier.clone())) {
                    let d: Declaration = self
                        .ddm_json(
                            &user,
                            Endpoint::Declaration {
                                kind,
                                identifier: item.identifier.clone(),
                            },
                        )
                        .await?;
                    if d.server_token != item.server_token || d.identifier != item.identifier {
                        return Err(SimError::BadCommand(format!(
                            "declaration {} answered with another identifier or token",
                            item.identifier
                        )));
                    }
                    fetched.push(item.identifier.clone());
                    d
                } else {
                    crate::declarative::held(&self.state, &channel_name, kind, &item.identifier)
                        .ok_or_else(|| SimError::BadCommand("declaration vanished".into()))?
                };
                set.push(declaration);
            }
            crate::declarative::apply_declarations(
                &mut self.state,
                &channel_name,
                &items.declarations_token,
                set,
            );
            self.apply_legacy_profiles(&channel_name).await;
        }
        let full_report = self.send_declarative_status_of(&user).await?;
        Ok(DeclarativeSync {
            declarations_token: token,
            fetched,
            status_sent: full_report,
        })
    }

    /// Installs the profiles of new or changed `configuration.legacy` declarations from their ProfileURL and
    /// removes those of declarations that went, as an iPad does before it reports status. A download or
    /// install that fails makes the declaration invalid with the reason (reported in the status).
    async fn apply_legacy_profiles(&mut self, channel_name: &str) {
        let (install, remove) = crate::declarative::legacy_profile_work(&self.state, channel_name);
        for declaration in remove {
            crate::declarative::legacy_profile_removed(&mut self.state, channel_name, &declaration);
        }
        for (declaration, server_token, url) in install {
            let outcome = match self.download_profile(&url).await {
                Ok(bytes) => crate::handler::install_profile_bytes(&mut self.state, &bytes),
                Err(reason) => Err(reason),
            };
            crate::declarative::legacy_profile_applied(
                &mut self.state,
                channel_name,
                &declaration,
                &server_token,
                outcome,
            );
        }
    }

    /// GETs a declared profile (https only, as iOS requires).
    async fn download_profile(&self, url: &str) -> Result<Vec<u8>, String> {
        if !url.starts_with("https://") {
            return Err(format!("the profile URL is not https: {url}"));
        }
        let answer = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| format!("the profile could not be downloaded: {e}"))?;
        if !answer.status().is_success() {
            return Err(format!(
                "the profile could not be downloaded: HTTP {}",
                answer.status().as_u16()
            ));
        }
        answer
            .bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| format!("the profile could not be downloaded: {e}"))
    }

    /// Uploads the device channel's status if anything changed since its last report.
    pub async fn send_declarative_status(&mut self) -> Result<Option<bool>, SimError> {
        self.send_declarative_status_of(&None).await
    }

    /// Sends the channel's status report when there is one; Some(full) when sent.
    async fn send_declarative_status_of(
        &mut self,
        user: &Option<SharedIpadUser>,
    ) -> Result<Option<bool>, SimError> {
        let channel_name = user
            .as_ref()
            .map(|u| u.user_short_name.clone())
            .unwrap_or_default();
        let Some(report) = crate::declarative::status_report(&mut self.state, &channel_name) else {
            return Ok(None);
        };
        let message = CheckinMessage::DeclarativeManagement(DeclarativeManagementCheckin {
            udid: self.udid_typed()?,
            endpoint: Endpoint::Status.as_path(),
            data: Some(report.to_json()),
            user: user.clone(),
        });
        self.checkin("DeclarativeManagement status", message.encode())
            .await?;
        Ok(Some(report.is_full()))
    }

    /// One step of the software update an enforcement declaration started (downloading, prepared,
    /// installing, installed: then the OS version is the target), reported through the status channel.
    /// Returns the install state after the step (None: nothing pending).
    pub async fn advance_software_update(&mut self) -> Result<Option<String>, SimError> {
        let state = crate::declarative::advance_software_update(&mut self.state);
        if state.is_some() {
            self.send_declarative_status().await?;
        }
        Ok(state)
    }

    /// The pending software update fails with `reason`, reported through the status channel.
    pub async fn fail_software_update(&mut self, reason: &str) -> Result<(), SimError> {
        crate::declarative::fail_software_update(&mut self.state, reason);
        self.send_declarative_status().await?;
        Ok(())
    }

    /// A DeclarativeManagement check-in to `endpoint`; the JSON answer.
    async fn ddm_json<T: serde::de::DeserializeOwned>(
        &mut self,
        user: &Option<SharedIpadUser>,
        endpoint: Endpoint,
    ) -> Result<T, SimError> {
        let message = CheckinMessage::DeclarativeManagement(DeclarativeManagementCheckin {
            udid: self.udid_typed()?,
            endpoint: endpoint.as_path(),
            data: None,
            user: user.clone(),
        });
        let reply = self
            .checkin_with_reply("DeclarativeManagement", message.encode())
            .await?;
        serde_json::from_slice(&reply).map_err(|e| {
            SimError::BadCommand(format!(
                "{} answer is not the expected json: {e}",
                endpoint.as_path()
            ))
        })
    }

    /// Tells the server the MDM profile is gone (CheckOut), then forgets the enrollment.
    pub async fn check_out(&mut self) -> Result<(), SimError> {
        if !self.state.enrolled {
            return Err(SimError::NotEnrolled);
        }
        let message = CheckinMessage::CheckOut(CheckOut {
            topic: self.topic()?,
            udid: self.udid_typed()?,
            user: None,
        });
        let result = self.checkin("CheckOut", message.encode()).await;
        // The profile is removed whatever the server says: CheckOut is best effort on a real device too.
        self.state.unenroll();
        result
    }

    /// PUTs a signed check-in message and requires a 200.
    async fn checkin(&mut self, what: &'static str, body: Vec<u8>) -> Result<(), SimError> {
        self.checkin_with_reply(what, body).await.map(|_| ())
    }

    /// [`checkin`](Self::checkin), returning the reply body.
    async fn checkin_with_reply(
        &mut self,
        what: &'static str,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, SimError> {
        let url = required(&self.state.check_in_url)?.to_owned();
        let signature = self.sign(&body)?;
        let (status, reply) = put(
            &self.client,
            &url,
            CHECKIN_CONTENT_TYPE,
            body,
            Some(signature),
        )
        .await?;
        if status != 200 {
            return Err(SimError::Status {
                what,
                status,
                body: body_excerpt(&reply),
            });
        }
        Ok(reply)
    }

    /// One command session: PUT Idle, then answer each command until the server replies with an empty
    /// body. A 401 (or a 403 saying the device is unknown) makes the device drop its enrollment, as iOS
    /// removes its MDM profile then.
    pub async fn poll(&mut self) -> Result<SessionSummary, SimError> {
        self.run_session(None).await
    }

    /// The signed Idle report this device opens a session with: body and `Mdm-Signature`. A benchmark
    /// signs it once and replays it, so that the simulator's signing does not compete with the server for
    /// CPU (the server's verification work is the same either way).
    pub fn signed_idle(&self) -> Result<(Vec<u8>, String), SimError> {
        let body = handler::idle_report(&self.state)?;
        let signature = self.sign(&body)?;
        Ok((body, signature))
    }

    /// Parses the device's identity now, so its sessions sign with the parsed key: an iPad holds its key
    /// ready, and a benchmark should not count the simulator's PEM parsing (OpenSSL's decoders, ~0.5 ms per
    /// key) inside its measured window. The first signature made with the kept key (e.g.
    /// [`SimDevice::signed_idle`]'s) also pays OpenSSL's one-time work on it (its Montgomery contexts and
    /// blinding: 578 against 312 µs for later signatures, release build, session 27).
    pub fn load_identity(&mut self) -> Result<(), SimError> {
        self.cached_identity().map(|_| ())
    }

    /// [`SimDevice::poll`], opening with a pre-signed Idle report (see [`SimDevice::signed_idle`]).
    pub async fn poll_with_signed_idle(
        &mut self,
        signed_idle: &(Vec<u8>, String),
    ) -> Result<SessionSummary, SimError> {
        self.run_session(Some(signed_idle)).await
    }

    /// A session, then — when the server sent DeclarativeManagement in it — the declarative sync an iPad
    /// runs at once.
    async fn run_session(
        &mut self,
        signed_idle: Option<&(Vec<u8>, String)>,
    ) -> Result<SessionSummary, SimError> {
        let summary = self.run_command_session(signed_idle).await?;
        let asked_to_sync = summary.handled.iter().any(|h| {
            h.request_type == "DeclarativeManagement"
                && h.status == orchard_types::CommandStatus::Acknowledged
        });
        if asked_to_sync && self.state.enrolled {
            self.declarative_sync().await?;
        }
        Ok(summary)
    }

    async fn run_command_session(
        &mut self,
        signed_idle: Option<&(Vec<u8>, String)>,
    ) -> Result<SessionSummary, SimError> {
        if !self.state.enrolled {
            return Err(SimError::NotEnrolled);
        }
        handler::apply_installed_os_update(&mut self.state);
        let mut summary = SessionSummary {
            udid: self.state.udid.clone(),
            ..SessionSummary::default()
        };
        let mut presigned = signed_idle.map(|(_, signature)| signature.clone());
        let mut body = match (self.unsent_report.take(), signed_idle) {
            (Some(report), _) => {
                presigned = None;
                self.reports_sent_again += 1;
                report
            }
            (None, Some((body, _))) => body.clone(),
            (None, None) => handler::idle_report(&self.state)?,
        };
        for _ in 0..MAX_COMMANDS_PER_SESSION {
            // Captured before the command runs: an erase or profile removal wipes them from the state, but
            // the acknowledgement still goes out signed with the old identity, to the old server.
            let server_url = required(&self.state.server_url)?.to_owned();
            let check_in_url = self.state.check_in_url.clone();
            let topic = self.state.topic.clone();
            let identity = self.cached_identity()?;
            let reply = match self
                .send_session_request(&server_url, &identity, body.clone(), presigned.take())
                .await
            {
                Ok(reply) => reply,
                Err(e) => {
                    if is_lost_answer(&e) && !is_idle_report(&body) {
                        self.unsent_report = Some(body);
                    }
                    return Err(e);
                }
            };
            if reply.iter().all(u8::is_ascii_whitespace) {
                return Ok(summary);
            }
            if self.crashes_on_command(&reply) {
                // The MDM client died running it: no report, the session is over.
                return Ok(summary);
            }
            self.check_app_licence(&reply).await?;
            let outcome = self.handle_command(&reply)?;
            summary.handled.extend(outcome.handled.iter().cloned());
            match outcome.follow_up {
                FollowUp::Continue => body = outcome.report,
                FollowUp::ReplaceEnrollment { profile } => {
                    // The device installs the new enrollment profile before it answers the command: the
                    // answer goes out signed by the identity the device then holds.
                    body = match self.enroll_with_profile(&profile).await {
                        Ok(()) => outcome.report,
                        Err(e) => {
                            let uuid = outcome
                                .handled
                                .as_ref()
                                .map(|h| h.uuid.clone())
                                .unwrap_or_default();
                            handler::install_failed_report(&self.state, &uuid, &e.to_string())?
                        }
                    };
                }
                FollowUp::EndSession => {
                    // The device reports, then restarts or shuts down: whatever the server answers is lost
                    // and will be sent again at the next session.
                    self.send_session_request(&server_url, &identity, outcome.report, None)
                        .await?;
                    return Ok(summary);
                }
                FollowUp::Erased {
                    return_to_service_profile,
                } => {
                    self.send_session_request(&server_url, &identity, outcome.report, None)
                        .await?;
                    if let Some(profile) = return_to_service_profile {
                        self.enroll_with_profile(&profile).await?;
                    }
                    return Ok(summary);
                }
                FollowUp::Unenrolled { check_out } => {
                    self.send_session_request(&server_url, &identity, outcome.report, None)
                        .await?;
                    if check_out && !check_in_url.is_empty() && !topic.is_empty() {
                        self.send_check_out_after_removal(&check_in_url, &topic, &identity)
                            .await?;
                    }
                    return Ok(summary);
                }
            }
        }
        Err(SimError::SessionTooLong(MAX_COMMANDS_PER_SESSION))
    }

    /// Runs one command plist through the device (no network), changing its state; used by `poll` and by
    /// tests that exercise the state machine directly.
    pub fn handle_command(&mut self, command_plist: &[u8]) -> Result<CommandOutcome, SimError> {
        let now = self.now();
        let outcome = handler::handle_command(&mut self.state, command_plist, now)?;
        self.state
            .handled_commands
            .extend(outcome.handled.iter().cloned());
        Ok(outcome)
    }

    /// How many times this device ran the command `uuid` (every answer but NotNow): what exactly-once
    /// delivery is checked against.
    pub fn executions(&self, uuid: &str) -> usize {
        self.state
            .handled_commands
            .iter()
            .filter(|h| h.uuid == uuid && h.status != orchard_types::CommandStatus::NotNow)
            .count()
    }

    /// Whether a command report is waiting to be sent again (its first delivery got no answer).
    pub fn has_unsent_report(&self) -> bool {
        self.unsent_report.is_some()
    }

    /// How many sessions opened by sending again a report whose first delivery got no answer.
    pub fn reports_sent_again(&self) -> usize {
        self.reports_sent_again
    }

    /// The next `n` commands get NotNow (a real iPad does this while locked after boot).
    pub fn answer_not_now(&mut self, n: u32) {
        self.state.not_now_remaining = n;
    }

    /// From now on every command of `request_type` kills this device's MDM client: it is never answered and
    /// the session ends (a fault for tests of the server's resend and attempt limits).
    pub fn crash_on(&mut self, request_type: &str) {
        self.state.crashes_on.push(request_type.to_owned());
    }

    fn crashes_on_command(&self, command_plist: &[u8]) -> bool {
        if self.state.crashes_on.is_empty() {
            return false;
        }
        let request_type = orchard_protocol::parse_dictionary(command_plist)
            .ok()
            .and_then(|envelope| {
                envelope
                    .get("Command")
                    .and_then(plist::Value::as_dictionary)
                    .and_then(|c| c.get("RequestType"))
                    .and_then(plist::Value::as_string)
                    .map(str::to_owned)
            });
        request_type.is_some_and(|t| self.state.crashes_on.contains(&t))
    }

    async fn send_session_request(
        &mut self,
        server_url: &str,
        identity: &Identity,
        body: Vec<u8>,
        presigned: Option<String>,
    ) -> Result<Vec<u8>, SimError> {
        let signature = match presigned {
            Some(signature) => signature,
            None => orchard_pki::signature::sign_mdm_body(&body, identity)?,
        };
        let (status, reply) = put(
            &self.client,
            server_url,
            COMMAND_CONTENT_TYPE,
            body,
            Some(signature),
        )
        .await?;
        if status == 200 {
            return Ok(reply);
        }
        if status == 401 || (status == 403 && is_unrecognized_device(&reply)) {
            self.state.unenroll();
        }
        Err(SimError::Status {
            what: "command session",
            status,
            body: body_excerpt(&reply),
        })
    }

    /// CheckOut after the MDM profile was removed by command: the state is already unenrolled, so URL, topic
    /// and identity are the ones captured before the command ran.
    async fn send_check_out_after_removal(
        &mut self,
        check_in_url: &str,
        topic: &str,
        identity: &Identity,
    ) -> Result<(), SimError> {
        let message = CheckinMessage::CheckOut(CheckOut {
            topic: ApnsTopic::parse(topic).map_err(|e| SimError::InvalidArgument(e.to_string()))?,
            udid: self.udid_typed()?,
            user: None,
        });
        let body = message.encode();
        let signature = orchard_pki::signature::sign_mdm_body(&body, identity)?;
        let (status, reply) = put(
            &self.client,
            check_in_url,
            CHECKIN_CONTENT_TYPE,
            body,
            Some(signature),
        )
        .await?;
        if status != 200 {
            return Err(SimError::Status {
                what: "CheckOut",
                status,
                body: body_excerpt(&reply),
            });
        }
        Ok(())
    }

    /// The device identity from the state's PEM.
    pub fn identity(&self) -> Result<Identity, SimError> {
        let (Some(cert), false) = (&self.state.identity_cert_pem, self.state.key_pem.is_empty())
        else {
            return Err(SimError::NotEnrolled);
        };
        let key = &self.state.key_pem;
        Ok(Identity::from_pem(cert.as_bytes(), key.as_bytes())?)
    }

    /// [`SimDevice::identity`], parsed once per certificate.
    fn cached_identity(&mut self) -> Result<Identity, SimError> {
        let cert_pem = self
            .state
            .identity_cert_pem
            .as_deref()
            .ok_or(SimError::NotEnrolled)?;
        if let Some((pem, identity)) = &self.identity_cache {
            if pem == cert_pem {
                return Ok(identity.clone());
            }
        }
        let identity = self.identity()?;
        self.identity_cache = Some((cert_pem.to_owned(), identity.clone()));
        Ok(identity)
    }

    /// The `Mdm-Signature` header value this device would send with `body`, signed with the parsed identity
    /// when [`SimDevice::load_identity`] (or a session) has kept one for the current certificate.
    pub fn sign(&self, body: &[u8]) -> Result<String, SimError> {
        let kept = match (&self.identity_cache, &self.state.identity_cert_pem) {
            (Some((pem, identity)), Some(current)) if pem == current => Some(identity),
            _ => None,
        };
        let signature = match kept {
            Some(identity) => orchard_pki::signature::sign_mdm_body(body, identity)?,
            None => orchard_pki::signature::sign_mdm_body(body, &self.identity()?)?,
        };
        Ok(signature)
    }

    /// PUTs `body` as is to the CheckInURL, with `signature` as Mdm-Signature if given (bad-input tests).
    pub async fn send_checkin_raw(
        &self,
        body: Vec<u8>,
        signature: Option<String>,
    ) -> Result<(u16, Vec<u8>), SimError> {
        let url = required(&self.state.check_in_url)?;
        put(&self.client, url, CHECKIN_CONTENT_TYPE, body, signature).await
    }

    /// PUTs `body` as is to the ServerURL, with `signature` as Mdm-Signature if given (bad-input tests).
    pub async fn send_command_raw(
        &self,
        body: Vec<u8>,
        signature: Option<String>,
    ) -> Result<(u16, Vec<u8>), SimError> {
        let url = required(&self.state.server_url)?;
        put(&self.client, url, COMMAND_CONTENT_TYPE, body, signature).await
    }

    fn topic(&self) -> Result<ApnsTopic, SimError> {
        let topic = required(&self.state.topic)?;
        ApnsTopic::parse(topic).map_err(|e| SimError::InvalidArgument(e.to_string()))
    }

    fn udid_typed(&self) -> Result<Udid, SimError> {
        Udid::parse(&self.state.udid).map_err(|e| SimError::InvalidArgument(e.to_string()))
    }
}

/// The SCEP request iOS makes from the profile's SCEP payload: a fresh RSA key of `Keysize`, a CSR with the
/// payload's subject CN (else `fallback_cn`) and challenge, enveloped to `recipient_der`.
#[cfg(test)]
pub(crate) fn start_scep_request(
    recipient_der: &[u8],
    scep_payload: &ScepPayload,
    fallback_cn: &str,
    now: UnixTime,
) -> Result<(PKey<Private>, scep::PendingRequest), SimError> {
    start_scep_request_with_key(recipient_der, scep_payload, fallback_cn, now, None)
}

/// [`start_scep_request`] with a key made beforehand; it is used only if its size is the payload's `Keysize`
/// (otherwise a fresh key of the right size is generated, as the device must honour the payload).
pub(crate) fn start_scep_request_with_key(
    recipient_der: &[u8],
    scep_payload: &ScepPayload,
    fallback_cn: &str,
    now: UnixTime,
    pregenerated: Option<PKey<Private>>,
) -> Result<(PKey<Private>, scep::PendingRequest), SimError> {
    let key_size = scep_payload.key_size;
    if !SCEP_KEY_SIZES.contains(&key_size) {
        return Err(SimError::Scep(format!("unsupported key size {key_size}")));
    }
    let key = match pregenerated.filter(|k| k.bits() == key_size) {
        Some(key) => key,
        None => PKey::from_rsa(Rsa::generate(key_size)?)?,
    };
    let subject_cn = scep_payload
        .subject
        .iter()
        .find(|(oid, _)| oid == "CN" || oid == "2.5.4.3")
        .map(|(_, value)| value.clone())
        .unwrap_or_else(|| fallback_cn.to_owned());
    let challenge = Some(scep_payload.challenge.as_str()).filter(|c| !c.is_empty());
    let pending = scep::build_pkcs_req(recipient_der, &key, &subject_cn, challenge, now)?;
    Ok((key, pending))
}

/// Reads the CA's CertRep and returns the issued certificate, which must be for our key.
pub(crate) fn finish_scep_request(
    pending: &scep::PendingRequest,
    key: &PKey<Private>,
    recipient_der: &[u8],
    reply: &[u8],
) -> Result<X509, SimError> {
    match scep::decode_cert_rep(pending, key, recipient_der, reply)? {
        CertRepOutcome::Success(cert_der) => {
            let cert = X509::from_der(&cert_der)?;
            if !cert.public_key()?.public_eq(key) {
                return Err(SimError::Scep(
                    "issued certificate is not for our key".into(),
                ));
            }
            Ok(cert)
        }
        CertRepOutcome::Failure(fail) => {
            Err(SimError::Scep(format!("ca refused the request: {fail:?}")))
        }
        CertRepOutcome::Pending => Err(SimError::Scep(
            "ca left the request pending (manual approval is not simulated)".into(),
        )),
    }
}

/// What a device trusts for TLS: the installed roots, else the configured anchor.
pub(crate) fn trust_of(state: &DeviceState) -> Option<String> {
    state
        .ca_pem
        .clone()
        .or_else(|| state.configured_ca_pem.clone())
}

/// An enrollment field that is empty until the device enrolled.
fn required(field: &str) -> Result<&str, SimError> {
    if field.is_empty() {
        Err(SimError::NotEnrolled)
    } else {
        Ok(field)
    }
}

/// The user keys of a Shared iPad user's channel: the all-F `UserID` (no user authentication on iPad).
fn shared_user(user_name: &str) -> SharedIpadUser {
    SharedIpadUser {
        user_id: orchard_types::SHARED_IPAD_USER_ID.to_owned(),
        user_short_name: user_name.to_owned(),
        user_long_name: None,
    }
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0_u8; n];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes
}

/// PUTs a body with the device headers; returns status and body.
pub(crate) async fn put(
    client: &reqwest::Client,
    url: &str,
    content_type: &str,
    body: Vec<u8>,
    signature: Option<String>,
) -> Result<(u16, Vec<u8>), SimError> {
    let mut request = client
        .put(url)
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .body(body);
    if let Some(signature) = signature {
        request = request.header(MDM_SIGNATURE_HEADER, signature);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let reply = response.bytes().await?;
    Ok((status, reply.to_vec()))
}

fn checkin_url_of(profile: &EnrollmentProfile) -> String {
    let check_in = profile.mdm.check_in_url.trim();
    if check_in.is_empty() {
        profile.mdm.server_url.clone()
    } else {
        check_in.to_owned()
    }
}

pub(crate) fn header_text(
    response: &reqwest::Response,
    name: reqwest::header::HeaderName,
) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The start of a reply body, for error messages.
pub(crate) fn body_excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    text.chars().take(300).collect()
}

/// Apple's 403 body that asks an unknown device to unenroll (`com.apple.unrecognized.device`).
fn is_unrecognized_device(body: &[u8]) -> bool {
    String::from_utf8_lossy(body).contains("com.apple.unrecognized.device")
}

/// The certificate to encrypt SCEP requests to (the single CA certificate, or from a CA+RA bundle the RA:
/// the certificate that is not self-issued), and every certificate received.
fn scep_recipient(content_type: &str, body: &[u8]) -> Result<(Vec<u8>, Vec<Vec<u8>>), SimError> {
    if content_type.starts_with("application/x-x509-ca-ra-cert") {
        let pkcs7 = openssl::pkcs7::Pkcs7::from_der(body)?;
        let certs = pkcs7
            .signed()
            .and_then(|s| s.certificates())
            .ok_or_else(|| SimError::Scep("GetCACert bundle holds no certificates".into()))?;
        let mut all = Vec::new();
        let mut recipient = None;
        for cert in certs {
            let der = cert.to_der()?;
            let self_issued = cert
                .issuer_name()
                .try_cmp(cert.subject_name())
                .map(|o| o.is_eq())
                .unwrap_or(false);
            if !self_issued && recipient.is_none() {
                recipient = Some(der.clone());
            }
            all.push(der);
        }
        let recipient = recipient
            .or_else(|| all.first().cloned())
            .ok_or_else(|| SimError::Scep("GetCACert bundle holds no certificates".into()))?;
        Ok((recipient, all))
    } else {
        // A single DER certificate (application/x-x509-ca-cert); parse to be sure it is one.
        let cert = X509::from_der(body)
            .map_err(|e| SimError::Scep(format!("GetCACert is not a certificate: {e}")))?;
        let der = cert.to_der()?;
        Ok((der.clone(), vec![der]))
    }
}

/// `CAFingerprint` is a hash of the CA certificate; its length says which hash (MD5, SHA-1 or SHA-256).
fn check_ca_fingerprint(ca_certs: &[Vec<u8>], expected: &[u8]) -> Result<(), SimError> {
    use openssl::hash::{hash, MessageDigest};
    let digest = match expected.len() {
        16 => MessageDigest::md5(),
        20 => MessageDigest::sha1(),
        32 => MessageDigest::sha256(),
        n => return Err(SimError::Scep(format!("ca fingerprint of {n} bytes"))),
    };
    for cert in ca_certs {
        if hash(digest, cert)?.as_ref() == expected {
            return Ok(());
        }
    }
    Err(SimError::Scep(
        "ca certificate does not match CAFingerprint".into(),
    ))
}

/// Whether a failed session request may have been lost on the way (no answer, a broken connection, or a
/// server error): what a device sends again. A 4xx is an answer.
fn is_lost_answer(error: &SimError) -> bool {
    match error {
        SimError::Http(_) => true,
        SimError::Status { status, .. } => *status >= 500,
        _ => false,
    }
}

/// Whether a session request body is the Idle that opens a session (nothing to send again).
fn is_idle_report(body: &[u8]) -> bool {
    orchard_protocol::parse_dictionary(body)
        .ok()
        .and_then(|d| {
            d.get("Status")
                .and_then(plist::Value::as_string)
                .map(|s| s == "Idle")
        })
        .unwrap_or(false)
}
