//! Command reports (`PUT /mdm/command`): the device's `Status` for a command (or `Idle` to ask for work),
//! its `ErrorChain`, and the whole body kept for result parsing.

use orchard_types::{ChannelId, CommandStatus, CommandUuid, Udid};
use serde::{Deserialize, Serialize};

use crate::checkin::{channel_of, put_user, read_udid, read_user, SharedIpadUser};
use crate::fields::{DictBuilder, Fields};
use crate::{dictionary_to_xml, parse_dictionary, ProtocolError};

/// `Status` of a command report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReportStatus {
    /// Asking for the next command; no `CommandUUID`.
    Idle,
    Acknowledged,
    Error,
    CommandFormatError,
    NotNow,
}

impl ReportStatus {
    /// Apple's spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            ReportStatus::Idle => "Idle",
            ReportStatus::Acknowledged => "Acknowledged",
            ReportStatus::Error => "Error",
            ReportStatus::CommandFormatError => "CommandFormatError",
            ReportStatus::NotNow => "NotNow",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "Idle" => ReportStatus::Idle,
            "Acknowledged" => ReportStatus::Acknowledged,
            "Error" => ReportStatus::Error,
            "CommandFormatError" => ReportStatus::CommandFormatError,
            "NotNow" => ReportStatus::NotNow,
            _ => return None,
        })
    }

    /// The queue status this report moves its command to (`None` for `Idle`).
    pub fn command_status(&self) -> Option<CommandStatus> {
        match self {
            ReportStatus::Idle => None,
            ReportStatus::Acknowledged => Some(CommandStatus::Acknowledged),
            ReportStatus::Error => Some(CommandStatus::Error),
            ReportStatus::CommandFormatError => Some(CommandStatus::CommandFormatError),
            ReportStatus::NotNow => Some(CommandStatus::NotNow),
        }
    }
}

/// One entry of `ErrorChain`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ErrorChainItem {
    #[serde(rename = "ErrorCode", default)]
    pub error_code: i64,
    #[serde(rename = "ErrorDomain", default)]
    pub error_domain: String,
    #[serde(
        rename = "LocalizedDescription",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub localized_description: Option<String>,
    #[serde(
        rename = "USEnglishDescription",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub us_english_description: Option<String>,
}

impl ErrorChainItem {
    fn to_dictionary(&self) -> plist::Dictionary {
        DictBuilder::new()
            .int("ErrorCode", self.error_code)
            .string("ErrorDomain", &self.error_domain)
            .opt_string("LocalizedDescription", self.localized_description.as_ref())
            .opt_string("USEnglishDescription", self.us_english_description.as_ref())
            .build()
    }

    fn from_dictionary(d: &plist::Dictionary) -> Result<Self, ProtocolError> {
        let f = Fields(d);
        Ok(Self {
            error_code: f.opt_int("ErrorCode")?.unwrap_or(0),
            error_domain: f.opt_string("ErrorDomain")?.unwrap_or_default(),
            localized_description: f.opt_string("LocalizedDescription")?,
            us_english_description: f.opt_string("USEnglishDescription")?,
        })
    }
}

/// A decoded command report.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandReport {
    pub udid: Udid,
    pub user: Option<SharedIpadUser>,
    pub status: ReportStatus,
    pub command_uuid: Option<CommandUuid>,
    pub error_chain: Vec<ErrorChainItem>,
    /// The whole dictionary as received, for result parsing.
    pub body: plist::Dictionary,
}

impl CommandReport {
    /// The device channel, or the Shared iPad user channel when the report names a user.
    pub fn channel(&self) -> ChannelId {
        channel_of(&self.udid, self.user.as_ref())
    }

    /// The report as a device sends it (XML plist): every key of `body`, with the structured fields written
    /// over it so they always win.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = DictBuilder(self.body.clone())
            .string("UDID", self.udid.as_str())
            .string("Status", self.status.as_str());
        if let Some(uuid) = &self.command_uuid {
            b = b.string("CommandUUID", uuid.as_str());
        }
        if !self.error_chain.is_empty() {
            b = b.value(
                "ErrorChain",
                plist::Value::Array(
                    self.error_chain
                        .iter()
                        .map(|e| plist::Value::Dictionary(e.to_dictionary()))
                        .collect(),
                ),
            );
        }
        dictionary_to_xml(put_user(b, self.user.as_ref()).build())
    }
}

/// Decodes a command report. `CommandUUID` is required unless `Status` is `Idle`; an unknown `Status` is
/// [`ProtocolError::UnsupportedStatus`]. Never panics, whatever the input.
pub fn decode_report(bytes: &[u8]) -> Result<CommandReport, ProtocolError> {
    let body = parse_dictionary(bytes)?;
    let f = Fields(&body);
    let udid = read_udid(f)?;
    let status_text = f.string("Status")?;
    let status =
        ReportStatus::parse(&status_text).ok_or(ProtocolError::UnsupportedStatus(status_text))?;
    let command_uuid = match f.opt_string("CommandUUID")? {
        Some(s) => Some(
            CommandUuid::parse(&s).map_err(|e| ProtocolError::InvalidValue {
                key: "CommandUUID",
                reason: e.to_string(),
            })?,
        ),
        None if status == ReportStatus::Idle => None,
        None => return Err(ProtocolError::MissingKey("CommandUUID")),
    };
    let error_chain = f
        .opt_dicts("ErrorChain")?
        .unwrap_or_default()
        .into_iter()
        .map(ErrorChainItem::from_dictionary)
        .collect::<Result<Vec<_>, _>>()?;
    let user = read_user(f)?;
    Ok(CommandReport {
        udid,
        user,
        status,
        command_uuid,
        error_chain,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEVICE_INFORMATION: &[u8] = include_bytes!("../testdata/DeviceInformation.1.plist");

    #[test]
    fn golden_device_information_report() {
        let r = decode_report(DEVICE_INFORMATION).unwrap();
        assert_eq!(r.status, ReportStatus::Acknowledged);
        assert_eq!(
            r.command_uuid.as_ref().map(|c| c.as_str()),
            Some("76eda240-5488-4989-8339-f2ae160113c4")
        );
        assert_eq!(r.udid.as_str(), "66ADE930-5FDF-5EC4-8429-15640684C489");
        assert_eq!(r.channel().as_str(), "66ADE930-5FDF-5EC4-8429-15640684C489");
        assert!(r.body.contains_key("QueryResponses"));
        assert!(r.error_chain.is_empty());
        assert_eq!(decode_report(&r.encode()).unwrap(), r);
    }

    #[test]
    fn idle_needs_no_uuid_but_others_do() {
        let idle = b"<plist><dict><key>UDID</key><string>U</string><key>Status</key><string>Idle</string></dict></plist>";
        let r = decode_report(idle).unwrap();
        assert_eq!(r.status, ReportStatus::Idle);
        assert_eq!(r.command_uuid, None);
        let ack = b"<plist><dict><key>UDID</key><string>U</string><key>Status</key><string>Acknowledged</string></dict></plist>";
        assert_eq!(
            decode_report(ack),
            Err(ProtocolError::MissingKey("CommandUUID"))
        );
        let weird = b"<plist><dict><key>UDID</key><string>U</string><key>Status</key><string>Sleeping</string></dict></plist>";
        assert_eq!(
            decode_report(weird),
            Err(ProtocolError::UnsupportedStatus("Sleeping".into()))
        );
    }

    #[test]
    fn error_chain_round_trips() {
        let report = CommandReport {
            udid: Udid::parse("U1").unwrap(),
            user: Some(SharedIpadUser {
                user_id: orchard_types::SHARED_IPAD_USER_ID.into(),
                user_short_name: "jane".into(),
                user_long_name: None,
            }),
            status: ReportStatus::Error,
            command_uuid: Some(CommandUuid::parse("C1").unwrap()),
            error_chain: vec![ErrorChainItem {
                error_code: 4001,
                error_domain: "MCProfileErrorDomain".into(),
                localized_description: Some("Profile failed".into()),
                us_english_description: None,
            }],
            body: plist::Dictionary::new(),
        };
        let decoded = decode_report(&report.encode()).unwrap();
        assert_eq!(decoded.error_chain, report.error_chain);
        assert_eq!(decoded.channel().as_str(), "U1:jane");
        assert_eq!(decoded.status.command_status(), Some(CommandStatus::Error));
        let json = serde_json::to_value(&report.error_chain[0]).unwrap();
        assert_eq!(json["USEnglishDescription"], serde_json::Value::Null);
        assert_eq!(json["ErrorDomain"], "MCProfileErrorDomain");
    }
}
