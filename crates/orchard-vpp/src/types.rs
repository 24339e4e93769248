//! The wire types of the Apps and Books API v2, named as Apple documents them. Unknown fields are ignored and
//! missing optional ones default, so a newer answer still reads.

use std::collections::BTreeMap;
use std::fmt;

use orchard_types::UnixTime;
use serde::{Deserialize, Serialize};

/// Apple's dates: ISO 8601 with a `+0000` offset (`2027-06-27T16:28:18+0000`); RFC 3339 is accepted too.
pub fn parse_apple_time(s: &str) -> Option<UnixTime> {
    let s = s.trim();
    if let Some(t) = UnixTime::parse_rfc3339(s) {
        return Some(t);
    }
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second][offset_hour sign:mandatory][offset_minute]"
    );
    if let Ok(t) = time::OffsetDateTime::parse(s, format) {
        return Some(UnixTime(t.unix_timestamp()));
    }
    let with_millis = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond][offset_hour sign:mandatory][offset_minute]"
    );
    time::OffsetDateTime::parse(s, with_millis)
        .ok()
        .map(|t| UnixTime(t.unix_timestamp()))
}

/// Writes a date the way Apple does (`+0000`).
pub fn format_apple_time(t: UnixTime) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]+0000");
    t.to_offset_date_time()
        .format(format)
        .unwrap_or_else(|_| "1970-01-01T00:00:00+0000".into())
}

/// An App Store product id (`adamId`), digits only.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AdamId(String);

impl AdamId {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "adamId must be 1 to 20 digits, not {:?}",
                s.chars().take(24).collect::<String>()
            ));
        }
        Ok(Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AdamId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<AdamId> for String {
    fn from(v: AdamId) -> String {
        v.0
    }
}

impl fmt::Display for AdamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Licence quality: `STDQ` (standard) or `PLUS` (high); others kept as sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum PricingParam {
    Stdq,
    Plus,
    Other(String),
}

impl PricingParam {
    pub fn as_str(&self) -> &str {
        match self {
            PricingParam::Stdq => "STDQ",
            PricingParam::Plus => "PLUS",
            PricingParam::Other(s) => s,
        }
    }
}

impl From<String> for PricingParam {
    fn from(s: String) -> Self {
        match s.as_str() {
            "STDQ" => PricingParam::Stdq,
            "PLUS" => PricingParam::Plus,
            _ => PricingParam::Other(s),
        }
    }
}

impl From<PricingParam> for String {
    fn from(p: PricingParam) -> String {
        p.as_str().to_owned()
    }
}

/// Apple's asynchronous event id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(pub String);

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An error body (`ErrorResponse`): synchronous answers and the `failures` of an event status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ApiError {
    pub error_number: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// Which items failed (`serialNumbers`, `clientUserIds`, `assets` …), for diagnostics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_info: Option<ErrorInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ErrorInfo {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub serial_numbers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_user_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub assets: Vec<AssetRef>,
}

/// Who manages a location, as the MDM that claimed it told Apple (`mdmInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct MdmInfo {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
    #[serde(default)]
    pub name: String,
}

/// Request limits from service config. Apple's defaults apply to fields it leaves out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    #[serde(default = "default_max_assets")]
    pub max_assets: usize,
    #[serde(default = "default_max_serials")]
    pub max_serial_numbers: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_client_user_ids: Option<usize>,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

fn default_max_assets() -> usize {
    25
}
fn default_max_serials() -> usize {
    1000
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_assets: default_max_assets(),
            max_serial_numbers: default_max_serials(),
            max_client_user_ids: None,
            other: BTreeMap::new(),
        }
    }
}

/// `GET /mdm/v2/service/config` (no authentication).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ServiceConfig {
    #[serde(default)]
    pub error_codes: Vec<ApiError>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub notification_types: Vec<String>,
    #[serde(default)]
    pub urls: BTreeMap<String, serde_json::Value>,
}

/// `GET`/`POST /mdm/v2/client/config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ClientConfig {
    #[serde(
        default,
        rename = "countryISO2ACode",
        skip_serializing_if = "Option::is_none"
    )]
    pub country_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_platform: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mdm_info: Option<MdmInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification_url: Option<String>,
    #[serde(default)]
    pub subscribed_notification_types: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_expiration_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub u_id: Option<String>,
    #[serde(
        default,
        rename = "websiteURL",
        skip_serializing_if = "Option::is_none"
    )]
    pub website_url: Option<String>,
}

impl ClientConfig {
    pub fn expires_at(&self) -> Option<UnixTime> {
        self.token_expiration_date
            .as_deref()
            .and_then(parse_apple_time)
    }
}

/// `POST /mdm/v2/client/config` body: Orchard claims the location with its `mdmInfo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ClientConfigRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mdm_info: Option<MdmInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification_auth_token: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notification_types: Vec<String>,
}

/// One purchased product and its licence counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Asset {
    pub adam_id: AdamId,
    pub pricing_param: PricingParam,
    #[serde(default)]
    pub assigned_count: i64,
    #[serde(default)]
    pub available_count: i64,
    #[serde(default)]
    pub total_count: i64,
    #[serde(default)]
    pub retired_count: i64,
    #[serde(default)]
    pub device_assignable: bool,
    #[serde(default)]
    pub revocable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_type: Option<String>,
    #[serde(default)]
    pub supported_platforms: Vec<String>,
}

/// The asset part of requests and assignments.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssetRef {
    pub adam_id: AdamId,
    pub pricing_param: PricingParam,
}

/// The paging fields Apple adds to list answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Paging {
    #[serde(default)]
    pub current_page_index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_index: Option<u32>,
    #[serde(default)]
    pub size: u32,
    #[serde(default)]
    pub total_pages: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_expiration_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub u_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mdm_info: Option<MdmInfo>,
}

/// `GET /mdm/v2/assets` (one page).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct AssetsPage {
    #[serde(default)]
    pub assets: Vec<Asset>,
    #[serde(flatten)]
    pub paging: Paging,
}

/// One licence given to a serial (or a user).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Assignment {
    pub adam_id: AdamId,
    pub pricing_param: PricingParam,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_user_id: Option<String>,
}

/// `GET /mdm/v2/assignments` (one page).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct AssignmentsPage {
    #[serde(default)]
    pub assignments: Vec<Assignment>,
    #[serde(flatten)]
    pub paging: Paging,
}

/// Which assignments to list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AssignmentFilter {
    pub adam_id: Option<AdamId>,
    pub serial_number: Option<String>,
}

/// Body of associate / disassociate / revoke.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ManageAssetsRequest {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub assets: Vec<AssetRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub serial_numbers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_user_ids: Vec<String>,
}

/// The answer to associate / disassociate / revoke (`EventResponse`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubmittedEvent {
    pub event_id: EventId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mdm_info: Option<MdmInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_expiration_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub u_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum EventStatusKind {
    Pending,
    Complete,
    Failed,
    Other(String),
}

impl From<String> for EventStatusKind {
    fn from(s: String) -> Self {
        match s.as_str() {
            "PENDING" => Self::Pending,
            "COMPLETE" => Self::Complete,
            "FAILED" => Self::Failed,
            _ => Self::Other(s),
        }
    }
}

impl From<EventStatusKind> for String {
    fn from(k: EventStatusKind) -> String {
        match k {
            EventStatusKind::Pending => "PENDING".into(),
            EventStatusKind::Complete => "COMPLETE".into(),
            EventStatusKind::Failed => "FAILED".into(),
            EventStatusKind::Other(s) => s,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum EventKind {
    Associate,
    Disassociate,
    Revoke,
    Other(String),
}

impl From<String> for EventKind {
    fn from(s: String) -> Self {
        match s.as_str() {
            "ASSOCIATE" => Self::Associate,
            "DISASSOCIATE" => Self::Disassociate,
            "REVOKE" => Self::Revoke,
            _ => Self::Other(s),
        }
    }
}

impl From<EventKind> for String {
    fn from(k: EventKind) -> String {
        match k {
            EventKind::Associate => "ASSOCIATE".into(),
            EventKind::Disassociate => "DISASSOCIATE".into(),
            EventKind::Revoke => "REVOKE".into(),
            EventKind::Other(s) => s,
        }
    }
}

/// `GET /mdm/v2/status?eventId=…`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventStatus {
    pub event_status: EventStatusKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<EventKind>,
    #[serde(default)]
    pub failures: Vec<ApiError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_completed: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_requested: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_expiration_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub u_id: Option<String>,
}

impl EventStatus {
    pub fn is_done(&self) -> bool {
        matches!(
            self.event_status,
            EventStatusKind::Complete | EventStatusKind::Failed
        )
    }

    /// The serials a failure names, with its error; serials the event did not name did what was asked.
    pub fn failed_serials(&self) -> BTreeMap<String, ApiError> {
        let mut out = BTreeMap::new();
        for failure in &self.failures {
            if let Some(info) = &failure.error_info {
                for serial in &info.serial_numbers {
                    out.insert(serial.clone(), failure.clone());
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apple_times() {
        assert_eq!(
            parse_apple_time("2027-06-27T16:28:18+0000"),
            Some(UnixTime(1_814_113_698))
        );
        assert_eq!(
            parse_apple_time("2027-06-27T16:28:18Z"),
            Some(UnixTime(1_814_113_698))
        );
        assert_eq!(
            parse_apple_time("2027-06-27T18:28:18+0200"),
            Some(UnixTime(1_814_113_698))
        );
        assert_eq!(parse_apple_time("27/06/2027"), None);
        assert_eq!(
            format_apple_time(UnixTime(1_814_113_698)),
            "2027-06-27T16:28:18+0000"
        );
    }

    #[test]
    fn golden_service_config() {
        let config: ServiceConfig =
            serde_json::from_str(include_str!("../testdata/service_config.json")).unwrap();
        assert_eq!(config.limits.max_assets, 25);
        assert_eq!(config.limits.max_serial_numbers, 1000);
        assert!(config
            .notification_types
            .contains(&"ASSET_MANAGEMENT".to_string()));
        assert!(config.error_codes.iter().any(|e| e.error_number == 9621));
    }

    #[test]
    fn golden_client_config() {
        let config: ClientConfig =
            serde_json::from_str(include_str!("../testdata/client_config.json")).unwrap();
        assert_eq!(
            config.location_name.as_deref(),
            Some("Department of Physics")
        );
        assert_eq!(config.country_code.as_deref(), Some("SE"));
        assert_eq!(
            config.mdm_info.as_ref().map(|m| m.name.as_str()),
            Some("Orchard")
        );
        assert_eq!(config.expires_at(), Some(UnixTime(1_814_113_698)));
        let json = serde_json::to_value(&config).unwrap();
        assert!(json.get("countryISO2ACode").is_some(), "{json}");
        assert!(json.get("uId").is_some(), "{json}");
    }

    #[test]
    fn golden_assets_page() {
        let page: AssetsPage =
            serde_json::from_str(include_str!("../testdata/assets.json")).unwrap();
        assert_eq!(page.assets.len(), 2);
        let first = &page.assets[0];
        assert_eq!(first.adam_id.as_str(), "361309726");
        assert_eq!(first.pricing_param, PricingParam::Stdq);
        assert_eq!(
            (
                first.total_count,
                first.assigned_count,
                first.available_count
            ),
            (100, 10, 90)
        );
        assert!(first.device_assignable);
        assert_eq!(page.paging.current_page_index, 0);
        assert_eq!(page.paging.next_page_index, Some(1));
        assert_eq!(page.paging.total_pages, 2);
    }

    #[test]
    fn golden_assignments_and_event() {
        let page: AssignmentsPage =
            serde_json::from_str(include_str!("../testdata/assignments.json")).unwrap();
        assert_eq!(
            page.assignments[0].serial_number.as_deref(),
            Some("DMPXK0ABJF8J")
        );
        assert_eq!(page.paging.version_id.as_deref(), Some("7a4c9d8e"));
        let event: SubmittedEvent =
            serde_json::from_str(include_str!("../testdata/associate_response.json")).unwrap();
        assert_eq!(event.event_id.0, "ef9cfb4a-0f5a-4a2c-9b6f-1a0d6c1e2b3c");
        let status: EventStatus =
            serde_json::from_str(include_str!("../testdata/status_failed.json")).unwrap();
        assert_eq!(status.event_status, EventStatusKind::Failed);
        assert_eq!(status.event_type, Some(EventKind::Associate));
        let failed = status.failed_serials();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed["DMPXK0ABJF8K"].error_number, 9610);
        assert!(status.is_done());
    }

    #[test]
    fn adam_ids_are_digits() {
        assert!(AdamId::parse("361309726").is_ok());
        assert!(AdamId::parse("36130x").is_err());
        assert!(AdamId::parse("").is_err());
        assert!(serde_json::from_str::<AdamId>("\"1;drop\"").is_err());
    }
}
