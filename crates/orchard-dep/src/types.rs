//! The Device Assignment API's JSON, typed: cursors, device records, account, profile assignment results,
//! Activation Lock. Serialize and Deserialize both ways, so the local DEP server speaks exactly what the client
//! reads. Times are RFC 3339 strings on the wire and [`UnixTime`] here.

use std::collections::BTreeMap;
use std::fmt;

use orchard_types::{SerialNumber, UnixTime};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::DepError;

/// RFC 3339 (`2013-05-01T19:23:11Z`) to Unix seconds; `None` if it is not such a time.
pub fn parse_time(s: &str) -> Option<UnixTime> {
    time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| UnixTime(t.unix_timestamp()))
}

/// Unix seconds to RFC 3339 in UTC.
pub fn format_time(t: UnixTime) -> String {
    t.to_rfc3339()
}

/// `Option<UnixTime>` as an optional RFC 3339 string. Reading is lenient: a time Apple writes in a form we do not
/// know becomes `None` instead of failing the whole page.
pub(crate) mod opt_time {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Option<UnixTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_some(&format_time(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<UnixTime>, D::Error> {
        let raw: Option<String> = Option::deserialize(d)?;
        Ok(raw.as_deref().and_then(parse_time))
    }
}

/// An optional id whose empty or invalid form (Apple sends `""` for "none") reads as `None`.
pub(crate) mod opt_id {
    use super::*;

    pub fn deserialize<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<String>,
    {
        let raw: Option<String> = Option::deserialize(d)?;
        Ok(raw
            .filter(|s| !s.is_empty())
            .and_then(|s| T::try_from(s).ok()))
    }
}

/// Checks an opaque token Apple hands us (cursor, profile UUID): printable ASCII without spaces, bounded.
fn check_opaque(kind: &str, s: &str, max: usize) -> Result<(), DepError> {
    if s.is_empty() || s.len() > max || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(DepError::Malformed(format!(
            "{kind} must be 1..={max} printable ascii characters"
        )));
    }
    Ok(())
}

macro_rules! opaque_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, DepError> {
                check_opaque($kind, s, $max)?;
                Ok(Self(s.to_owned()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = DepError;
            fn try_from(s: String) -> Result<Self, DepError> {
                check_opaque($kind, &s, $max)?;
                Ok(Self(s))
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

opaque_id!(
    /// Apple's fetch/sync cursor. The caller stores it after every page; it is valid for 7 days.
    DepCursor,
    "cursor",
    8192
);
opaque_id!(
    /// The id Apple gives an ADE profile when it is defined.
    ProfileUuid,
    "profile uuid",
    128
);

/// A string enum of Apple's that may grow: known values are variants, anything else is kept in `Other`.
macro_rules! open_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
            /// A value this version does not know.
            Other(String),
        }

        impl $name {
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $text,)*
                    Self::Other(s) => s,
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                match s {
                    $($text => Self::$variant,)*
                    other => Self::Other(other.to_owned()),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Ok(Self::from(s.as_str()))
            }
        }
    };
}

open_enum!(
    /// What happened to a device, in sync records.
    OpType {
        Added => "added",
        Modified => "modified",
        Deleted => "deleted",
    }
);

open_enum!(
    /// Where the device's ADE profile stands.
    ProfileStatus {
        Empty => "empty",
        Assigned => "assigned",
        Pushed => "pushed",
        Removed => "removed",
    }
);

open_enum!(
    /// Per-serial answer of profile define, assign and remove (and `response_status` of device details).
    AssignStatus {
        Success => "SUCCESS",
        NotAccessible => "NOT_ACCESSIBLE",
        Failed => "FAILED",
        /// Too many requests for this serial: retry after `retry_after_seconds`.
        Throttled => "THROTTLED",
    }
);

open_enum!(
    /// Answer of `POST /device/activationlock`.
    ActivationLockStatus {
        Success => "SUCCESS",
        NotAccessible => "NOT_ACCESSIBLE",
        OrgNotSupported => "ORG_NOT_SUPPORTED",
        DeviceNotSupported => "DEVICE_NOT_SUPPORTED",
        DeviceAlreadyLocked => "DEVICE_ALREADY_LOCKED",
        Failed => "FAILED",
    }
);

/// One device of a fetch or sync page. Fetch records describe the current state; sync records also carry
/// `op_type` and `op_date`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub serial_number: SerialNumber,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset_tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_status: Option<ProfileStatus>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "opt_id::deserialize"
    )]
    pub profile_uuid: Option<ProfileUuid>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_time")]
    pub profile_assign_time: Option<UnixTime>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_time")]
    pub profile_push_time: Option<UnixTime>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_time")]
    pub device_assigned_date: Option<UnixTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_assigned_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_family: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op_type: Option<OpType>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_time")]
    pub op_date: Option<UnixTime>,
    /// When Apple will move the device to another MDM server without an erase (ASM's "MDM migration";
    /// protocol version 8 and later): the device is about to leave us.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_time")]
    pub mdm_migration_deadline: Option<UnixTime>,
    /// Apple's status for this record, when it sends one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_status: Option<AssignStatus>,
}

impl DeviceRecord {
    /// A record with only the serial number set.
    pub fn new(serial_number: SerialNumber) -> Self {
        Self {
            serial_number,
            model: None,
            description: None,
            color: None,
            asset_tag: None,
            profile_status: None,
            profile_uuid: None,
            profile_assign_time: None,
            profile_push_time: None,
            device_assigned_date: None,
            device_assigned_by: None,
            os: None,
            device_family: None,
            op_type: None,
            op_date: None,
            mdm_migration_deadline: None,
            response_status: None,
        }
    }
}

/// One entry of `POST /devices` (device details). Entries Apple cannot show carry only `response_status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceDetails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset_tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_status: Option<ProfileStatus>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "opt_id::deserialize"
    )]
    pub profile_uuid: Option<ProfileUuid>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_time")]
    pub profile_assign_time: Option<UnixTime>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_time")]
    pub profile_push_time: Option<UnixTime>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_time")]
    pub device_assigned_date: Option<UnixTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_assigned_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_family: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_time")]
    pub mdm_migration_deadline: Option<UnixTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_status: Option<AssignStatus>,
}

impl From<&DeviceRecord> for DeviceDetails {
    fn from(r: &DeviceRecord) -> Self {
        Self {
            serial_number: Some(r.serial_number.to_string()),
            model: r.model.clone(),
            description: r.description.clone(),
            color: r.color.clone(),
            asset_tag: r.asset_tag.clone(),
            profile_status: r.profile_status.clone(),
            profile_uuid: r.profile_uuid.clone(),
            profile_assign_time: r.profile_assign_time,
            profile_push_time: r.profile_push_time,
            device_assigned_date: r.device_assigned_date,
            device_assigned_by: r.device_assigned_by.clone(),
            os: r.os.clone(),
            device_family: r.device_family.clone(),
            mdm_migration_deadline: r.mdm_migration_deadline,
            response_status: Some(AssignStatus::Success),
        }
    }
}

/// `GET /account`: the ASM "MDM server" this token belongs to and its organization.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Account {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id_hash: Option<String>,
    /// `edu` or `org`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_type: Option<String>,
    /// `v1` or `v2` (ASM is v2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_version: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<AccountUrl>,
}

/// One endpoint of the account with its request limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountUrl {
    pub uri: String,
    #[serde(default)]
    pub http_method: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<UrlLimit>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UrlLimit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum: Option<u32>,
}

/// Answer of `POST /profile` (define): the new profile's id and, per serial listed in the profile, the result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefinedProfile {
    pub profile_uuid: ProfileUuid,
    #[serde(default)]
    pub devices: BTreeMap<String, AssignStatus>,
}

/// Outcome of assigning (or removing) a profile for many serials, after chunking and THROTTLED retries. Every
/// distinct input serial ends in exactly one list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AssignmentReport {
    pub succeeded: Vec<SerialNumber>,
    /// Not in this MDM server's device set (released, or assigned to another MDM server).
    pub not_accessible: Vec<SerialNumber>,
    pub failed: Vec<SerialNumber>,
    /// Still THROTTLED after the retries the policy allows: try again later.
    pub still_throttled: Vec<SerialNumber>,
    /// Requests sent (chunks plus THROTTLED retries).
    pub requests: u32,
}

impl AssignmentReport {
    /// True when every serial succeeded.
    pub fn is_complete(&self) -> bool {
        self.not_accessible.is_empty() && self.failed.is_empty() && self.still_throttled.is_empty()
    }

    pub fn total(&self) -> usize {
        self.succeeded.len()
            + self.not_accessible.len()
            + self.failed.len()
            + self.still_throttled.len()
    }
}

/// `POST /device/activationlock`: lock a supervised device with our escrow key (see [`crate::BypassCode`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivationLockRequest {
    pub device: SerialNumber,
    /// Hex PBKDF2 of the bypass code ([`crate::BypassCode::escrow_key`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escrow_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost_message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivationLockResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    pub response_status: ActivationLockStatus,
}

// ----- request and response bodies the client and the local server share -----

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SessionResponse {
    pub auth_session_token: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct CursorRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// Fetch and sync answer; `T` is [`DeviceRecord`] on the fast path and `serde_json::Value` when one record is
/// broken and the page is read record by record.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct DevicesResponse<T> {
    // Not plain `default`: serde would then require `T: Default`.
    #[serde(default = "Vec::new")]
    pub devices: Vec<T>,
    #[serde(default)]
    pub cursor: Option<String>,
    #[serde(default)]
    pub more_to_follow: bool,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_time")]
    pub fetched_until: Option<UnixTime>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SerialsRequest {
    pub devices: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ProfileDevicesRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_uuid: Option<String>,
    #[serde(default)]
    pub devices: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ProfileDevicesResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_uuid: Option<String>,
    #[serde(default)]
    pub devices: BTreeMap<String, AssignStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
}

/// `POST /devices/disown` answer: per serial SUCCESS, NOT_ACCESSIBLE or FAILED.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct DisownResponse {
    #[serde(default)]
    pub devices: BTreeMap<String, AssignStatus>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct DeviceDetailsResponse {
    #[serde(default)]
    pub devices: BTreeMap<String, DeviceDetails>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn device_record_reads_apples_json() {
        let json = r#"{"serial_number":"C8TJ500QF1MN","model":"IPAD","description":"IPAD WI-FI 16GB",
            "color":"BLACK","asset_tag":"233","profile_status":"assigned","profile_uuid":"",
            "profile_assign_time":"2013-01-01T00:00:00Z","device_assigned_date":"2013-04-05T14:25:54Z",
            "device_assigned_by":"user@example.edu","os":"iOS","device_family":"iPad",
            "op_type":"modified","op_date":"2014-10-14T07:31:36Z","new_field":42}"#;
        let r: DeviceRecord = serde_json::from_str(json).unwrap();
        assert_eq!(r.serial_number.as_str(), "C8TJ500QF1MN");
        assert_eq!(r.profile_status, Some(ProfileStatus::Assigned));
        assert_eq!(r.profile_uuid, None);
        assert_eq!(r.op_type, Some(OpType::Modified));
        assert_eq!(r.op_date, parse_time("2014-10-14T07:31:36Z"));
        assert_eq!(r.profile_push_time, None);
        let back: DeviceRecord = serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn unknown_enum_values_are_kept() {
        let s: AssignStatus = serde_json::from_str("\"SOMETHING_NEW\"").unwrap();
        assert_eq!(s, AssignStatus::Other("SOMETHING_NEW".into()));
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"SOMETHING_NEW\"");
        assert_eq!(OpType::from("deleted"), OpType::Deleted);
    }

    #[test]
    fn opaque_ids_are_checked() {
        assert!(DepCursor::parse("").is_err());
        assert!(DepCursor::parse("a b").is_err());
        assert!(DepCursor::parse("MTM4NzY0NDUyNTk4Ni0xNTA=").is_ok());
        assert!(ProfileUuid::parse(&"a".repeat(129)).is_err());
    }
}
