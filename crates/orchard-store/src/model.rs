//! The records the store reads and writes: plain data, no behaviour, decoupled from the SQL.

use orchard_types::{
    ChannelId, CommandStatus, CommandUuid, DeviceId, EnrollmentLinkId, EnrollmentState, QueuedBy,
    RequestType, Role, Secret, TenantId, TokenId, Udid, UnixTime,
};

/// One page of a list; `limit` rows starting at `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub limit: i64,
    pub offset: i64,
}

impl Default for Page {
    fn default() -> Self {
        Page {
            limit: 100,
            offset: 0,
        }
    }
}

/// A department.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    /// Short unique handle (e.g. `physics`).
    pub code: String,
    pub created_at: UnixTime,
}

/// An API token; only the SHA-256 hex of its secret is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub id: TokenId,
    pub name: String,
    pub role: Role,
    /// None for central roles (operator, helpdesk).
    pub tenant_id: Option<TenantId>,
    pub token_hash: String,
    pub created_at: UnixTime,
    pub expires_at: Option<UnixTime>,
    pub revoked_at: Option<UnixTime>,
    /// The person (users.id) the token acts for when a person minted it, directly or through another of
    /// their tokens: the token stops working when that person is disabled. None for service and bootstrap
    /// tokens.
    pub owner_user_id: Option<String>,
}

/// A link that hands out enrollment profiles for one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentLink {
    pub id: EnrollmentLinkId,
    pub tenant_id: TenantId,
    pub name: String,
    pub secret_hash: String,
    pub max_uses: Option<i64>,
    pub uses: i64,
    pub expires_at: Option<UnixTime>,
    pub created_at: UnixTime,
    pub created_by: Option<String>,
}

/// A one-time SCEP challenge handed out in one enrollment profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScepChallenge {
    pub challenge_hash: String,
    pub link_id: EnrollmentLinkId,
    pub tenant_id: TenantId,
    /// Which devices the identity it buys may claim (copied onto the issued certificate).
    pub grant: IdentityGrant,
    pub created_at: UnixTime,
    pub expires_at: UnixTime,
    pub used_at: Option<UnixTime>,
}

/// What an identity was issued for, recorded with its challenge and certificate, so that Authenticate decides
/// by data which device the identity may claim (issue 10).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum IdentityGrant {
    /// A profile downloaded through an enrollment link: a device new to Orchard, or one of the link's tenant.
    #[default]
    Link,
    /// Automated Device Enrollment: the MachineInfo that Apple's device CA signed named this serial and UDID.
    Ade { serial: String, udid: Udid },
    /// Issued for one known device (identity renewal, Return to Service): only that device may bind it.
    Device {
        device_id: DeviceId,
        purpose: DeviceGrantPurpose,
    },
}

/// What an identity issued for one known device is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceGrantPurpose {
    /// A fresh identity for the same enrollment (renewal profile or SCEP RenewalReq): the binding moves to it,
    /// channels and queue stay.
    #[default]
    Renewal,
    /// The erased device enrolls anew by itself (EraseDevice with Return to Service): a new enrollment of the
    /// same device record.
    ReturnToService,
}

impl DeviceGrantPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceGrantPurpose::Renewal => "renewal",
            DeviceGrantPurpose::ReturnToService => "return_to_service",
        }
    }
}

impl IdentityGrant {
    pub fn kind(&self) -> &'static str {
        match self {
            IdentityGrant::Link => "link",
            IdentityGrant::Ade { .. } => "ade",
            IdentityGrant::Device { .. } => "device",
        }
    }
}

/// A device identity certificate we issued by SCEP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    /// Lowercase hex SHA-256 of the certificate DER.
    pub fingerprint: String,
    pub serial_hex: String,
    pub subject: String,
    pub tenant_id: TenantId,
    pub link_id: Option<EnrollmentLinkId>,
    /// The grant the issuing challenge (or renewed identity) carried.
    pub grant: IdentityGrant,
    pub issued_at: UnixTime,
    pub not_after: UnixTime,
    /// The device it was bound to at its first Authenticate (an identity binds once, to one device).
    pub bound_device_id: Option<DeviceId>,
    pub bound_at: Option<UnixTime>,
    /// Revoked identities are refused on every device request.
    pub revoked_at: Option<UnixTime>,
    pub revoked_reason: Option<String>,
    /// When the device's binding moved from this identity to its renewed successor (the grace period runs
    /// from here).
    pub renewed_at: Option<UnixTime>,
}

/// A device record; its id is stable across re-enrollments of the same UDID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub id: DeviceId,
    pub udid: Udid,
    pub tenant_id: TenantId,
    pub serial_number: Option<String>,
    pub state: EnrollmentState,
    pub topic: Option<String>,
    pub cert_fingerprint: Option<String>,
    pub device_name: Option<String>,
    pub model: Option<String>,
    pub model_name: Option<String>,
    pub product_name: Option<String>,
    pub os_version: Option<String>,
    pub build_version: Option<String>,
    pub is_supervised: Option<bool>,
    pub enrolled_at: Option<UnixTime>,
    pub last_seen_at: Option<UnixTime>,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
    /// The digest of its last DeviceInformation answer's facts that smart groups and the reconciler read
    /// (`facts_digest`, migration 0039): a report with the same digest skips both. None: evaluate in full.
    pub facts_digest: Option<String>,
    /// The digest of what its last DeviceInformation answer said that the reconciler's plans read
    /// (`plan_inputs_digest`, migration 0042): a changed report with the same digest marks the device for the
    /// reconciler only when it moves the device in a group. None: the next changed report marks it.
    pub plan_inputs_digest: Option<String>,
}

/// An operator's release of a device for re-enrollment: until `until`, a new identity of `tenant_id` (any
/// tenant when None) may claim it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRelease {
    pub until: UnixTime,
    pub tenant_id: Option<TenantId>,
    pub released_by: Option<String>,
}

/// A device's record as Authenticate finds it (inside the unit that may rebind it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceBinding {
    pub device: Device,
    pub release: Option<DeviceRelease>,
}

/// What an Authenticate check-in tells us, bound to the tenant its enrollment allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticateDevice {
    pub udid: Udid,
    pub tenant_id: TenantId,
    pub cert_fingerprint: String,
    pub topic: String,
    pub facts: DeviceFacts,
    pub now: UnixTime,
}

/// Device facts promoted to columns; None leaves the stored value unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceFacts {
    pub serial_number: Option<String>,
    pub device_name: Option<String>,
    pub model: Option<String>,
    pub model_name: Option<String>,
    pub product_name: Option<String>,
    pub os_version: Option<String>,
    pub build_version: Option<String>,
    pub is_supervised: Option<bool>,
    /// See [`Device::facts_digest`].
    pub facts_digest: Option<String>,
    /// See [`Device::plan_inputs_digest`].
    pub plan_inputs_digest: Option<String>,
}

/// A TokenUpdate check-in for one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenUpdateRecord {
    pub device_id: DeviceId,
    pub channel: ChannelId,
    pub user_short_name: Option<String>,
    pub user_id: Option<String>,
    pub push_token: Vec<u8>,
    pub push_magic: String,
    /// Kept as it was when None (devices send it only in some TokenUpdates).
    pub unlock_token: Option<Vec<u8>>,
    pub awaiting_configuration: bool,
    pub now: UnixTime,
}

/// Result of [`crate::Store::update_token`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenUpdateOutcome {
    /// The channel had no push token before this TokenUpdate (first TokenUpdate after enrollment).
    pub first: bool,
}

/// A command channel: the device channel or a Shared iPad user channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    pub id: ChannelId,
    pub device_id: DeviceId,
    pub user_short_name: Option<String>,
    pub user_id: Option<String>,
    pub push_token: Option<Vec<u8>>,
    pub push_magic: Option<String>,
    pub unlock_token: Option<Secret<Vec<u8>>>,
    pub awaiting_configuration: bool,
    pub token_updated_at: Option<UnixTime>,
    pub push: ChannelPushState,
}

/// Where a channel's pushes stand: owed or not, what APNs answered last, and whether its token is dead.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelPushState {
    /// A push is requested and not yet answered by APNs.
    pub owed: bool,
    pub requested_at: Option<UnixTime>,
    /// When APNs last accepted a push for this channel.
    pub last_delivered_at: Option<UnixTime>,
    /// When APNs last answered (or failed to answer) a push for this channel, and what.
    pub last_attempt_at: Option<UnixTime>,
    pub last_result: Option<String>,
    /// APNs asked to wait (Retry-After): nothing is pushed to this channel before then.
    pub not_before: Option<UnixTime>,
    /// APNs said the token is no longer valid: no push until the device sends a new one.
    pub token_dead_at: Option<UnixTime>,
    pub token_dead_reason: Option<String>,
}

/// One inventory section of a device as a JSON document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventorySection {
    pub section: String,
    pub json: String,
    pub updated_at: UnixTime,
}

/// A command to put in a channel's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCommand {
    pub uuid: CommandUuid,
    pub device_id: DeviceId,
    pub tenant_id: TenantId,
    pub channel: ChannelId,
    pub request_type: RequestType,
    /// The encoded command plist, or (`payload_sealed`) that plist sealed under the data key; empty when the
    /// command's dictionary is a shared body (`body_id`).
    pub payload: Vec<u8>,
    pub payload_sealed: bool,
    /// A shared command body (`command_bodies`) this command is made of, the envelope built at delivery.
    pub body_id: Option<String>,
    /// Sent at most once: a command that carries a device credential when it goes out.
    pub deliver_once: bool,
    pub queued_by: Option<QueuedBy>,
    pub queued_at: UnixTime,
    pub expires_at: Option<UnixTime>,
}

/// The command handed to a device by [`crate::Store::next_command`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedCommand {
    pub uuid: CommandUuid,
    pub request_type: RequestType,
    pub payload: Vec<u8>,
    pub payload_sealed: bool,
    /// The shared body the command is made of (its `Command` dictionary), when it has one.
    pub body: Option<CommandBody>,
}

/// A `Command` dictionary stored once and shared by many queued commands (`command_bodies`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandBody {
    pub id: String,
    /// The dictionary as an XML plist, or (`sealed`) that plist sealed under the data key.
    pub body: Vec<u8>,
    pub sealed: bool,
}

/// An acknowledged DeviceInformation answer that repeats the device's facts (the usual inventory answer): its
/// command's result, the facts written again (for their time) and the inventory section it replaces. See
/// [`Store::record_repeated_facts_answer`](crate::Store::record_repeated_facts_answer).
#[derive(Debug, Clone, Copy)]
pub struct RepeatedFactsAnswer<'a> {
    pub device: DeviceId,
    pub channel: &'a ChannelId,
    pub uuid: &'a CommandUuid,
    /// The raw report plist, or (`result_sealed`) that plist sealed under the data key.
    pub result: Option<&'a [u8]>,
    pub result_sealed: bool,
    pub facts: &'a DeviceFacts,
    /// The inventory section's name and JSON.
    pub section: &'a str,
    pub json: &'a str,
    pub now: UnixTime,
}

/// A device's report about one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandResultRecord {
    pub channel: ChannelId,
    pub uuid: CommandUuid,
    /// acknowledged | error | command_format_error | not_now.
    pub status: CommandStatus,
    /// The raw report plist, or (`result_sealed`) that plist sealed under the data key.
    pub result: Option<Vec<u8>>,
    pub result_sealed: bool,
    /// ErrorChain as JSON.
    pub error_chain: Option<String>,
    pub now: UnixTime,
}

/// What [`crate::Store::record_result`] did with a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordOutcome {
    Recorded {
        device_id: DeviceId,
        request_type: RequestType,
        /// Who queued the command ([`QueuedBy::Setup`] for zero-touch setup commands).
        queued_by: Option<QueuedBy>,
        /// Whether another command of the channel was unfinished (queued, sent or not now) when this one was
        /// recorded. False means the channel's queue was empty then; a command queued later is pushed.
        more_unfinished: bool,
    },
    /// The command already has a final status; nothing was changed.
    Duplicate,
    /// No such command on this channel.
    Unknown,
}

/// A command as stored, for the API and the UI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRecord {
    pub uuid: CommandUuid,
    pub device_id: DeviceId,
    pub tenant_id: TenantId,
    pub channel: ChannelId,
    pub request_type: RequestType,
    pub status: CommandStatus,
    pub payload: Vec<u8>,
    pub payload_sealed: bool,
    pub result: Option<Vec<u8>>,
    pub result_sealed: bool,
    pub deliver_once: bool,
    pub error_chain: Option<String>,
    pub queued_by: Option<QueuedBy>,
    pub queued_at: UnixTime,
    pub sent_at: Option<UnixTime>,
    pub completed_at: Option<UnixTime>,
    pub expires_at: Option<UnixTime>,
    pub attempts: i64,
}
