//! Shared vocabulary of Orchard: typed identifiers, secrets that never print, and the injected clock.
//!
//! Everything here is pure: no IO, no global state. Ids are newtypes so a `TenantId` can never be passed
//! where a `DeviceId` is expected, and device-supplied strings are validated once, at the edge, by `parse`.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

mod vocabulary;

pub use vocabulary::{QueuedBy, RequestType, SetupState};

/// Why a value could not become one of our typed ids.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("{kind} must not be empty")]
    Empty { kind: &'static str },
    #[error("{kind} is too long ({len} > {max} bytes)")]
    TooLong {
        kind: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{kind} contains characters that are not allowed")]
    BadCharacters { kind: &'static str },
    #[error("{kind} is not a valid uuid")]
    NotUuid { kind: &'static str },
    /// Not one of the values of a closed vocabulary (request types, setup states, `queued_by`).
    #[error("unknown {kind} {value:?}")]
    Unknown { kind: &'static str, value: String },
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh, time-ordered id (UUID v7), so ids sort by creation.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
            pub fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }
            pub fn parse(s: &str) -> Result<Self, ParseError> {
                Uuid::parse_str(s).map(Self).map_err(|_| ParseError::NotUuid { kind: $kind })
            }
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, ParseError> {
                Self::parse(s)
            }
        }
    };
}

uuid_id!(
    /// A department (tenant).
    TenantId,
    "tenant id"
);
uuid_id!(
    /// Orchard's own id for a device record; stable across re-enrollments.
    DeviceId,
    "device id"
);
uuid_id!(
    /// An enrollment link that hands out enrollment profiles for one tenant.
    EnrollmentLinkId,
    "enrollment link id"
);
uuid_id!(
    /// An API token (the secret itself is never stored, only its hash).
    TokenId,
    "token id"
);
uuid_id!(
    /// A configuration profile of the library (a tenant's or a global one); its versions are numbered.
    ProfileId,
    "profile id"
);
uuid_id!(
    /// A planned-maintenance notice central IT publishes to every department.
    MaintenanceNoticeId,
    "maintenance notice id"
);
uuid_id!(
    /// A device group of a tenant (static or smart).
    GroupId,
    "group id"
);
uuid_id!(
    /// An assignment: one object (a profile; later an app or an OS policy) wanted on a tenant's devices.
    AssignmentId,
    "assignment id"
);
uuid_id!(
    /// A webhook endpoint (a tenant's or a global one) that receives signed events.
    WebhookId,
    "webhook id"
);

/// Checks a device-supplied identifier: printable ASCII without spaces, bounded length.
fn check_token_like(kind: &'static str, s: &str, max: usize) -> Result<(), ParseError> {
    if s.is_empty() {
        return Err(ParseError::Empty { kind });
    }
    if s.len() > max {
        return Err(ParseError::TooLong {
            kind,
            len: s.len(),
            max,
        });
    }
    if !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ParseError::BadCharacters { kind });
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, ParseError> {
                check_token_like($kind, s, $max)?;
                Ok(Self(s.to_owned()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = ParseError;
            fn try_from(s: String) -> Result<Self, ParseError> {
                check_token_like($kind, &s, $max)?;
                Ok(Self(s))
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_id!(
    /// A device's UDID as it sends it (classic 40-hex or the newer 8-4-… form).
    Udid,
    "UDID",
    64
);
string_id!(
    /// A hardware serial number.
    SerialNumber,
    "serial number",
    64
);
string_id!(
    /// The unique id of one command, echoed by the device in its report.
    CommandUuid,
    "CommandUUID",
    128
);
string_id!(
    /// The PushMagic a device hands us in TokenUpdate; the body of every push to that channel.
    PushMagic,
    "PushMagic",
    128
);
string_id!(
    /// The APNs topic of the MDM push certificate (`com.apple.mgmt.External.<uuid>`).
    ApnsTopic,
    "topic",
    256
);

impl CommandUuid {
    /// A new CommandUUID: a version 7 UUID, time-ordered with 74 random bits. The order is for the queue's
    /// indexes: the unique index on command_uuid then grows at its end instead of taking each new command on a
    /// random page (50,000 commands queued at once touched 50,000 random leaf pages). Nothing trusts a
    /// CommandUUID as a secret: a result is matched by its channel too.
    pub fn new_random() -> Self {
        Self(Uuid::now_v7().hyphenated().to_string().to_uppercase())
    }
}

/// The all-F UserID a Shared iPad sends on a user channel when the user did not authenticate.
pub const SHARED_IPAD_USER_ID: &str = "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF";

/// Identifies one command channel: the device channel or a Shared iPad user channel.
///
/// Derived in exactly one place (here) so the id of a channel never changes: the device channel is the
/// UDID; a user channel is `UDID:UserShortName`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChannelId(String);

impl ChannelId {
    pub fn device(udid: &Udid) -> Self {
        Self(udid.as_str().to_owned())
    }
    pub fn user(udid: &Udid, user_short_name: &str) -> Self {
        Self(format!("{}:{}", udid.as_str(), user_short_name))
    }
    /// Rebuilds a channel id read back from storage.
    pub fn from_stored(s: String) -> Self {
        Self(s)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn is_user_channel(&self) -> bool {
        self.0.contains(':')
    }
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A value that must never reach a log: `Debug` prints `Secret(***)`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }
    /// The secret itself; the name makes every use visible in review.
    pub fn expose(&self) -> &T {
        &self.0
    }
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Unix time in seconds. Stored as BIGINT in both databases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnixTime(pub i64);

impl UnixTime {
    pub fn plus_seconds(self, s: i64) -> Self {
        Self(self.0.saturating_add(s))
    }
    pub fn to_offset_date_time(self) -> time::OffsetDateTime {
        time::OffsetDateTime::from_unix_timestamp(self.0)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
    }
    /// RFC 3339, for JSON APIs and logs.
    pub fn to_rfc3339(self) -> String {
        self.to_offset_date_time()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    }
    /// Reads what [`UnixTime::to_rfc3339`] writes (any RFC 3339 offset); `None` for anything else.
    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .ok()
            .map(|t| Self(t.unix_timestamp()))
    }
}

/// Where "now" comes from. Injected everywhere so that expiry, backoff and lifetimes are testable.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now(&self) -> UnixTime;
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixTime {
        UnixTime(time::OffsetDateTime::now_utc().unix_timestamp())
    }
}

/// A clock tests move by hand.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn new(start: UnixTime) -> Self {
        Self(Arc::new(AtomicI64::new(start.0)))
    }
    pub fn advance(&self, seconds: i64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }
    pub fn set(&self, t: UnixTime) {
        self.0.store(t.0, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixTime {
        UnixTime(self.0.load(Ordering::SeqCst))
    }
}

/// What a principal may do. The tenancy issue grows the enforcement; the names are fixed here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Operator,
    Helpdesk,
    Admin,
    Viewer,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Helpdesk => "helpdesk",
            Role::Admin => "admin",
            Role::Viewer => "viewer",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "operator" => Some(Role::Operator),
            "helpdesk" => Some(Role::Helpdesk),
            "admin" => Some(Role::Admin),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }
}

/// Life cycle of one queued command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandStatus {
    /// Waiting to be handed to the device.
    Queued,
    /// Handed to the device; no report yet (resent if the device asks again without reporting).
    Sent,
    Acknowledged,
    Error,
    CommandFormatError,
    /// The device could not run it now; it stays queued and is sent again in a later session.
    NotNow,
    /// Its deadline passed before the device took it.
    Expired,
    /// Sent (or put off with NotNow) the configured number of times without a final answer: given up, so the
    /// channel's later commands are not held up.
    Failed,
}

impl CommandStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            CommandStatus::Queued => "queued",
            CommandStatus::Sent => "sent",
            CommandStatus::Acknowledged => "acknowledged",
            CommandStatus::Error => "error",
            CommandStatus::CommandFormatError => "command_format_error",
            CommandStatus::NotNow => "not_now",
            CommandStatus::Expired => "expired",
            CommandStatus::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => CommandStatus::Queued,
            "sent" => CommandStatus::Sent,
            "acknowledged" => CommandStatus::Acknowledged,
            "error" => CommandStatus::Error,
            "command_format_error" => CommandStatus::CommandFormatError,
            "not_now" => CommandStatus::NotNow,
            "expired" => CommandStatus::Expired,
            "failed" => CommandStatus::Failed,
            _ => return None,
        })
    }
    /// A final status: later reports for the same CommandUUID are duplicates.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            CommandStatus::Acknowledged
                | CommandStatus::Error
                | CommandStatus::CommandFormatError
                | CommandStatus::Expired
                | CommandStatus::Failed
        )
    }
}

/// Where a device is in its life with us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnrollmentState {
    /// Authenticate received; no push token yet.
    Pending,
    /// TokenUpdate received: the device can be pushed and commanded.
    Enrolled,
    /// CheckOut received or removed by an operator.
    Unenrolled,
}

impl EnrollmentState {
    pub fn as_str(&self) -> &'static str {
        match self {
            EnrollmentState::Pending => "pending",
            EnrollmentState::Enrolled => "enrolled",
            EnrollmentState::Unenrolled => "unenrolled",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => EnrollmentState::Pending,
            "enrolled" => EnrollmentState::Enrolled,
            "unenrolled" => EnrollmentState::Unenrolled,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udid_rejects_hostile_strings() {
        assert!(Udid::parse("").is_err());
        assert!(Udid::parse("a b").is_err());
        assert!(Udid::parse(&"a".repeat(65)).is_err());
        assert_eq!(
            Udid::parse("66ADE930-5FDF-5EC4-8429-15640684C489")
                .map(|u| u.to_string())
                .as_deref(),
            Ok("66ADE930-5FDF-5EC4-8429-15640684C489")
        );
    }

    #[test]
    fn channel_ids_are_derived_one_way() {
        let udid = Udid::parse("ABC").unwrap_or_else(|_| unreachable!());
        assert_eq!(ChannelId::device(&udid).as_str(), "ABC");
        assert!(!ChannelId::device(&udid).is_user_channel());
        assert_eq!(ChannelId::user(&udid, "jane").as_str(), "ABC:jane");
        assert!(ChannelId::user(&udid, "jane").is_user_channel());
    }

    #[test]
    fn secrets_do_not_print() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(***)");
    }

    #[test]
    fn command_status_round_trips() {
        for s in [
            CommandStatus::Queued,
            CommandStatus::Sent,
            CommandStatus::Acknowledged,
            CommandStatus::Error,
            CommandStatus::CommandFormatError,
            CommandStatus::NotNow,
            CommandStatus::Expired,
        ] {
            assert_eq!(CommandStatus::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(UnixTime(100));
        assert_eq!(c.now(), UnixTime(100));
        c.advance(5);
        assert_eq!(c.now(), UnixTime(105));
    }
}
