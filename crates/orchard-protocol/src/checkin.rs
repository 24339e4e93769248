//! Check-in messages (`PUT /mdm/checkin`): decoding what a device sends, dispatched on `MessageType`, and
//! encoding the same messages for the simulator. Keys follow Apple's `mdm/checkin/*.yaml`; keys we do not
//! use (a Mac's `Challenge`, `DeviceName`, …) are tolerated.

use orchard_types::{ApnsTopic, ChannelId, PushMagic, SerialNumber, Udid};

use crate::fields::{DictBuilder, Fields};
use crate::{dictionary_to_xml, parse_dictionary, ProtocolError};

/// The user of a Shared iPad (or macOS) user channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedIpadUser {
    /// `UserID`; the all-F id ([`orchard_types::SHARED_IPAD_USER_ID`]) when the user did not authenticate.
    pub user_id: String,
    /// `UserShortName` (the Managed Apple Account); names the user channel.
    pub user_short_name: String,
    pub user_long_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticate {
    pub topic: ApnsTopic,
    pub udid: Udid,
    pub serial_number: Option<SerialNumber>,
    pub os_version: Option<String>,
    pub build_version: Option<String>,
    pub product_name: Option<String>,
    pub model: Option<String>,
    pub model_name: Option<String>,
    pub device_name: Option<String>,
    pub imei: Option<String>,
    pub meid: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenUpdate {
    pub topic: ApnsTopic,
    pub udid: Udid,
    /// The APNs device token.
    pub token: Vec<u8>,
    pub push_magic: PushMagic,
    /// Needed by ClearPasscode: store it as a secret.
    pub unlock_token: Option<Vec<u8>>,
    pub awaiting_configuration: bool,
    pub user: Option<SharedIpadUser>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOut {
    pub topic: ApnsTopic,
    pub udid: Udid,
    pub user: Option<SharedIpadUser>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclarativeManagementCheckin {
    pub udid: Udid,
    /// `tokens`, `declaration-items`, `status` or `declaration/<kind>/<identifier>`.
    pub endpoint: String,
    /// JSON (the status report for the `status` endpoint).
    pub data: Option<Vec<u8>>,
    pub user: Option<SharedIpadUser>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GetToken {
    pub udid: Udid,
    pub token_service_type: String,
    pub token_parameters: Option<plist::Dictionary>,
    pub user: Option<SharedIpadUser>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetBootstrapToken {
    pub udid: Udid,
    pub awaiting_configuration: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetBootstrapToken {
    pub udid: Udid,
    /// Empty means "delete the escrowed token".
    pub bootstrap_token: Vec<u8>,
    pub awaiting_configuration: bool,
}

/// One check-in request, by `MessageType`.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckinMessage {
    Authenticate(Authenticate),
    TokenUpdate(TokenUpdate),
    CheckOut(CheckOut),
    DeclarativeManagement(DeclarativeManagementCheckin),
    GetToken(GetToken),
    GetBootstrapToken(GetBootstrapToken),
    SetBootstrapToken(SetBootstrapToken),
}

impl CheckinMessage {
    pub fn udid(&self) -> &Udid {
        match self {
            CheckinMessage::Authenticate(m) => &m.udid,
            CheckinMessage::TokenUpdate(m) => &m.udid,
            CheckinMessage::CheckOut(m) => &m.udid,
            CheckinMessage::DeclarativeManagement(m) => &m.udid,
            CheckinMessage::GetToken(m) => &m.udid,
            CheckinMessage::GetBootstrapToken(m) => &m.udid,
            CheckinMessage::SetBootstrapToken(m) => &m.udid,
        }
    }

    /// The push topic, for the messages that carry one.
    pub fn topic(&self) -> Option<&ApnsTopic> {
        match self {
            CheckinMessage::Authenticate(m) => Some(&m.topic),
            CheckinMessage::TokenUpdate(m) => Some(&m.topic),
            CheckinMessage::CheckOut(m) => Some(&m.topic),
            _ => None,
        }
    }

    /// The Shared iPad user of a user-channel message.
    pub fn user(&self) -> Option<&SharedIpadUser> {
        match self {
            CheckinMessage::TokenUpdate(m) => m.user.as_ref(),
            CheckinMessage::CheckOut(m) => m.user.as_ref(),
            CheckinMessage::DeclarativeManagement(m) => m.user.as_ref(),
            CheckinMessage::GetToken(m) => m.user.as_ref(),
            _ => None,
        }
    }

    /// The device channel, or the user channel when the message names a Shared iPad user.
    pub fn channel(&self) -> ChannelId {
        channel_of(self.udid(), self.user())
    }

    pub fn message_type(&self) -> &'static str {
        match self {
            CheckinMessage::Authenticate(_) => "Authenticate",
            CheckinMessage::TokenUpdate(_) => "TokenUpdate",
            CheckinMessage::CheckOut(_) => "CheckOut",
            CheckinMessage::DeclarativeManagement(_) => "DeclarativeManagement",
            CheckinMessage::GetToken(_) => "GetToken",
            CheckinMessage::GetBootstrapToken(_) => "GetBootstrapToken",
            CheckinMessage::SetBootstrapToken(_) => "SetBootstrapToken",
        }
    }

    /// The message as a device sends it (XML plist); used by the simulator.
    pub fn encode(&self) -> Vec<u8> {
        dictionary_to_xml(self.to_dictionary())
    }

    /// The message as a plist dictionary.
    pub fn to_dictionary(&self) -> plist::Dictionary {
        let b = DictBuilder::new().string("MessageType", self.message_type());
        let b = match self {
            CheckinMessage::Authenticate(m) => b
                .string("Topic", m.topic.as_str())
                .string("UDID", m.udid.as_str())
                .opt_string(
                    "SerialNumber",
                    m.serial_number.as_ref().map(|s| s.to_string()).as_ref(),
                )
                .opt_string("OSVersion", m.os_version.as_ref())
                .opt_string("BuildVersion", m.build_version.as_ref())
                .opt_string("ProductName", m.product_name.as_ref())
                .opt_string("Model", m.model.as_ref())
                .opt_string("ModelName", m.model_name.as_ref())
                .opt_string("DeviceName", m.device_name.as_ref())
                .opt_string("IMEI", m.imei.as_ref())
                .opt_string("MEID", m.meid.as_ref()),
            CheckinMessage::TokenUpdate(m) => {
                let b = b
                    .string("Topic", m.topic.as_str())
                    .string("UDID", m.udid.as_str())
                    .data("Token", &m.token)
                    .string("PushMagic", m.push_magic.as_str())
                    .opt_data("UnlockToken", m.unlock_token.as_ref())
                    .bool("AwaitingConfiguration", m.awaiting_configuration);
                put_user(b, m.user.as_ref())
            }
            CheckinMessage::CheckOut(m) => {
                let b = b
                    .string("Topic", m.topic.as_str())
                    .string("UDID", m.udid.as_str());
                put_user(b, m.user.as_ref())
            }
            CheckinMessage::DeclarativeManagement(m) => {
                let b = b
                    .string("UDID", m.udid.as_str())
                    .string("Endpoint", &m.endpoint)
                    .opt_data("Data", m.data.as_ref());
                put_user(b, m.user.as_ref())
            }
            CheckinMessage::GetToken(m) => {
                let b = b
                    .string("UDID", m.udid.as_str())
                    .string("TokenServiceType", &m.token_service_type)
                    .opt_dict("TokenParameters", m.token_parameters.clone());
                put_user(b, m.user.as_ref())
            }
            CheckinMessage::GetBootstrapToken(m) => b
                .string("UDID", m.udid.as_str())
                .bool("AwaitingConfiguration", m.awaiting_configuration),
            CheckinMessage::SetBootstrapToken(m) => b
                .string("UDID", m.udid.as_str())
                .data("BootstrapToken", &m.bootstrap_token)
                .bool("AwaitingConfiguration", m.awaiting_configuration),
        };
        b.build()
    }
}

/// Derives the channel of a message or report: the user channel when a Shared iPad user is named.
pub(crate) fn channel_of(udid: &Udid, user: Option<&SharedIpadUser>) -> ChannelId {
    match user {
        Some(u) => ChannelId::user(udid, &u.user_short_name),
        None => ChannelId::device(udid),
    }
}

pub(crate) fn put_user(b: DictBuilder, user: Option<&SharedIpadUser>) -> DictBuilder {
    match user {
        Some(u) => b
            .string("UserID", &u.user_id)
            .string("UserShortName", &u.user_short_name)
            .opt_string("UserLongName", u.user_long_name.as_ref()),
        None => b,
    }
}

pub(crate) fn read_udid(f: Fields<'_>) -> Result<Udid, ProtocolError> {
    let s = f.string("UDID")?;
    Udid::parse(&s).map_err(|e| ProtocolError::InvalidValue {
        key: "UDID",
        reason: e.to_string(),
    })
}

fn read_topic(f: Fields<'_>) -> Result<ApnsTopic, ProtocolError> {
    let s = f.string("Topic")?;
    ApnsTopic::parse(&s).map_err(|e| ProtocolError::InvalidValue {
        key: "Topic",
        reason: e.to_string(),
    })
}

/// The longest `UserShortName` we accept; it becomes part of a channel id.
const MAX_USER_SHORT_NAME: usize = 256;

/// Reads the user-channel keys: both `UserShortName` and `UserID` or neither. The short name becomes part of
/// the channel id (`UDID:UserShortName`), so it must be non-empty, bounded and free of control characters; a
/// ':' in it is harmless because UDIDs never contain one.
pub(crate) fn read_user(f: Fields<'_>) -> Result<Option<SharedIpadUser>, ProtocolError> {
    let short_name = f.opt_string("UserShortName")?;
    let user_id = f.opt_string("UserID")?;
    let long_name = f.opt_string("UserLongName")?;
    let (short_name, user_id) = match (short_name, user_id) {
        (None, None) => return Ok(None),
        (Some(s), Some(id)) => (s, id),
        (None, Some(_)) => return Err(ProtocolError::MissingKey("UserShortName")),
        (Some(_), None) => return Err(ProtocolError::MissingKey("UserID")),
    };
    if short_name.is_empty()
        || short_name.len() > MAX_USER_SHORT_NAME
        || short_name.chars().any(char::is_control)
    {
        return Err(ProtocolError::InvalidValue {
            key: "UserShortName",
            reason: "must be 1-256 bytes without control characters".into(),
        });
    }
    Ok(Some(SharedIpadUser {
        user_id,
        user_short_name: short_name,
        user_long_name: long_name,
    }))
}

/// Decodes a check-in body. Unknown `MessageType` → [`ProtocolError::UnknownMessageType`]; a missing UDID
/// → [`ProtocolError::MissingKey`]. Never panics, whatever the input.
pub fn decode_checkin(bytes: &[u8]) -> Result<CheckinMessage, ProtocolError> {
    let dict = parse_dictionary(bytes)?;
    decode_checkin_dictionary(&dict)
}

/// [`decode_checkin`] for an already parsed dictionary.
pub fn decode_checkin_dictionary(
    dict: &plist::Dictionary,
) -> Result<CheckinMessage, ProtocolError> {
    let f = Fields(dict);
    let message_type = f.string("MessageType")?;
    let message = match message_type.as_str() {
        "Authenticate" => CheckinMessage::Authenticate(Authenticate {
            topic: read_topic(f)?,
            udid: read_udid(f)?,
            serial_number: f
                .opt_string("SerialNumber")?
                .map(|s| SerialNumber::parse(&s))
                .transpose()
                .map_err(|e| ProtocolError::InvalidValue {
                    key: "SerialNumber",
                    reason: e.to_string(),
                })?,
            os_version: f.opt_string("OSVersion")?,
            build_version: f.opt_string("BuildVersion")?,
            product_name: f.opt_string("ProductName")?,
            model: f.opt_string("Model")?,
            model_name: f.opt_string("ModelName")?,
            device_name: f.opt_string("DeviceName")?,
            imei: f.opt_string("IMEI")?,
            meid: f.opt_string("MEID")?,
        }),
        "TokenUpdate" => {
            let push_magic = f.string("PushMagic")?;
            CheckinMessage::TokenUpdate(TokenUpdate {
                topic: read_topic(f)?,
                udid: read_udid(f)?,
                token: f.data("Token")?,
                push_magic: PushMagic::parse(&push_magic).map_err(|e| {
                    ProtocolError::InvalidValue {
                        key: "PushMagic",
                        reason: e.to_string(),
                    }
                })?,
                unlock_token: f.opt_data("UnlockToken")?,
                awaiting_configuration: f.opt_bool("AwaitingConfiguration")?.unwrap_or(false),
                user: read_user(f)?,
            })
        }
        "CheckOut" => CheckinMessage::CheckOut(CheckOut {
            topic: read_topic(f)?,
            udid: read_udid(f)?,
            user: read_user(f)?,
        }),
        "DeclarativeManagement" => {
            CheckinMessage::DeclarativeManagement(DeclarativeManagementCheckin {
                udid: read_udid(f)?,
                endpoint: f.string("Endpoint")?,
                data: f.opt_data("Data")?,
                user: read_user(f)?,
            })
        }
        "GetToken" => CheckinMessage::GetToken(GetToken {
            udid: read_udid(f)?,
            token_service_type: f.string("TokenServiceType")?,
            token_parameters: f.opt_dict("TokenParameters")?.cloned(),
            user: read_user(f)?,
        }),
        "GetBootstrapToken" => CheckinMessage::GetBootstrapToken(GetBootstrapToken {
            udid: read_udid(f)?,
            awaiting_configuration: f.opt_bool("AwaitingConfiguration")?.unwrap_or(false),
        }),
        "SetBootstrapToken" => CheckinMessage::SetBootstrapToken(SetBootstrapToken {
            udid: read_udid(f)?,
            bootstrap_token: f.opt_data("BootstrapToken")?.unwrap_or_default(),
            awaiting_configuration: f.opt_bool("AwaitingConfiguration")?.unwrap_or(false),
        }),
        _ => return Err(ProtocolError::UnknownMessageType(message_type)),
    };
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchard_types::SHARED_IPAD_USER_ID;

    const AUTHENTICATE_IPAD: &[u8] = include_bytes!("../testdata/Authenticate.1.plist");
    const AUTHENTICATE_MAC: &[u8] = include_bytes!("../testdata/Authenticate.2.plist");
    const TOKEN_UPDATE_IPAD: &[u8] = include_bytes!("../testdata/TokenUpdate.1.plist");
    const TOKEN_UPDATE_MAC: &[u8] = include_bytes!("../testdata/TokenUpdate.2.plist");
    const TOPIC: &str = "com.apple.mgmt.External.e0bd1eac-1f17-4c8e-8a63-dd17d3dd35d9";

    fn udid(s: &str) -> Udid {
        Udid::parse(s).unwrap()
    }

    #[test]
    fn golden_authenticate_ipad() {
        let CheckinMessage::Authenticate(a) = decode_checkin(AUTHENTICATE_IPAD).unwrap() else {
            panic!("not Authenticate")
        };
        assert_eq!(a.topic.as_str(), TOPIC);
        assert_eq!(a.udid.as_str(), "663b07bb783e9ade1dae4fbb92ea12afc0ce5b69");
        assert_eq!(a.serial_number.unwrap().as_str(), "F5JM992LF193");
        assert_eq!(a.os_version.as_deref(), Some("9.3.5"));
        assert_eq!(a.build_version.as_deref(), Some("13G36"));
        assert_eq!(a.product_name.as_deref(), Some("iPad2,5"));
        assert_eq!(a.device_name, None);
    }

    #[test]
    fn golden_authenticate_mac_tolerates_extra_keys() {
        let msg = decode_checkin(AUTHENTICATE_MAC).unwrap();
        assert_eq!(msg.message_type(), "Authenticate");
        assert_eq!(
            msg.channel().as_str(),
            "66ADE930-5FDF-5EC4-8429-15640684C489"
        );
        let CheckinMessage::Authenticate(a) = msg else {
            panic!("not Authenticate")
        };
        assert_eq!(a.device_name.as_deref(), Some("Fruit"));
        assert_eq!(a.model.as_deref(), Some("iMac14,2"));
        assert_eq!(a.model_name.as_deref(), Some("iMac"));
    }

    #[test]
    fn golden_token_updates() {
        let CheckinMessage::TokenUpdate(t) = decode_checkin(TOKEN_UPDATE_IPAD).unwrap() else {
            panic!("not TokenUpdate")
        };
        assert_eq!(
            t.push_magic.as_str(),
            "CEFDF0BD-E342-4A27-8742-E930EA116B0A"
        );
        assert_eq!(t.token.len(), 32);
        assert!(t.unlock_token.as_ref().is_some_and(|u| u.len() > 1000));
        assert!(!t.awaiting_configuration);
        assert_eq!(t.user, None);

        let msg = decode_checkin(TOKEN_UPDATE_MAC).unwrap();
        assert_eq!(msg.topic().map(|t| t.as_str()), Some(TOPIC));
        let CheckinMessage::TokenUpdate(t) = msg else {
            panic!("not TokenUpdate")
        };
        assert_eq!(t.unlock_token, None);
    }

    #[test]
    fn golden_captures_round_trip_through_encode() {
        for bytes in [
            AUTHENTICATE_IPAD,
            AUTHENTICATE_MAC,
            TOKEN_UPDATE_IPAD,
            TOKEN_UPDATE_MAC,
        ] {
            let msg = decode_checkin(bytes).unwrap();
            assert_eq!(decode_checkin(&msg.encode()).unwrap(), msg);
        }
    }

    #[test]
    fn unknown_message_type_and_missing_udid() {
        let unknown = b"<plist><dict><key>MessageType</key><string>Bogus</string></dict></plist>";
        assert_eq!(
            decode_checkin(unknown),
            Err(ProtocolError::UnknownMessageType("Bogus".into()))
        );
        let no_udid = format!(
            "<plist><dict><key>MessageType</key><string>Authenticate</string><key>Topic</key><string>{TOPIC}</string></dict></plist>"
        );
        assert_eq!(
            decode_checkin(no_udid.as_bytes()),
            Err(ProtocolError::MissingKey("UDID"))
        );
        assert_eq!(
            decode_checkin(b"<plist><dict/></plist>"),
            Err(ProtocolError::MissingKey("MessageType"))
        );
    }

    #[test]
    fn wrong_types_are_invalid_values() {
        let bad = "<plist><dict><key>MessageType</key><string>CheckOut</string><key>Topic</key><string>t</string><key>UDID</key><integer>5</integer></dict></plist>";
        assert!(matches!(
            decode_checkin(bad.as_bytes()),
            Err(ProtocolError::InvalidValue { key: "UDID", .. })
        ));
    }

    #[test]
    fn every_message_round_trips() {
        let topic = ApnsTopic::parse(TOPIC).unwrap();
        let u = udid("ABCDEF");
        let user = Some(SharedIpadUser {
            user_id: SHARED_IPAD_USER_ID.into(),
            user_short_name: "jane@example.edu".into(),
            user_long_name: Some("Jane Doe".into()),
        });
        let mut params = plist::Dictionary::new();
        params.insert("PhoneUDID".into(), plist::Value::String("x".into()));
        let messages = vec![
            CheckinMessage::Authenticate(Authenticate {
                topic: topic.clone(),
                udid: u.clone(),
                serial_number: Some(SerialNumber::parse("SER1").unwrap()),
                os_version: Some("18.1".into()),
                build_version: Some("22B83".into()),
                product_name: Some("iPad13,18".into()),
                model: None,
                model_name: None,
                device_name: None,
                imei: Some("1".into()),
                meid: Some("2".into()),
            }),
            CheckinMessage::TokenUpdate(TokenUpdate {
                topic: topic.clone(),
                udid: u.clone(),
                token: vec![1, 2, 3],
                push_magic: PushMagic::parse("MAGIC").unwrap(),
                unlock_token: None,
                awaiting_configuration: true,
                user: user.clone(),
            }),
            CheckinMessage::CheckOut(CheckOut {
                topic,
                udid: u.clone(),
                user: None,
            }),
            CheckinMessage::DeclarativeManagement(DeclarativeManagementCheckin {
                udid: u.clone(),
                endpoint: "tokens".into(),
                data: Some(b"{}".to_vec()),
                user: user.clone(),
            }),
            CheckinMessage::GetToken(GetToken {
                udid: u.clone(),
                token_service_type: "com.apple.maid".into(),
                token_parameters: Some(params),
                user: None,
            }),
            CheckinMessage::GetBootstrapToken(GetBootstrapToken {
                udid: u.clone(),
                awaiting_configuration: false,
            }),
            CheckinMessage::SetBootstrapToken(SetBootstrapToken {
                udid: u,
                bootstrap_token: vec![9; 16],
                awaiting_configuration: true,
            }),
        ];
        for m in messages {
            assert_eq!(decode_checkin(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn user_channel_is_derived_from_short_name() {
        let body = format!(
            "<plist><dict><key>MessageType</key><string>TokenUpdate</string><key>Topic</key><string>{TOPIC}</string>\
             <key>UDID</key><string>U1</string><key>Token</key><data>AQI=</data><key>PushMagic</key><string>PM</string>\
             <key>UserID</key><string>{SHARED_IPAD_USER_ID}</string><key>UserShortName</key><string>jane</string></dict></plist>"
        );
        let msg = decode_checkin(body.as_bytes()).unwrap();
        assert_eq!(msg.channel().as_str(), "U1:jane");
    }

    #[test]
    fn hostile_bytes_never_panic() {
        let seeds: [&[u8]; 4] = [
            AUTHENTICATE_IPAD,
            TOKEN_UPDATE_IPAD,
            b"bplist00",
            b"<plist><dict>",
        ];
        for seed in seeds {
            for cut in (0..seed.len()).step_by(7) {
                let _ = decode_checkin(seed.get(..cut).unwrap());
            }
            let mut flipped = seed.to_vec();
            for i in (0..flipped.len()).step_by(13) {
                flipped[i] ^= 0x5A;
                let _ = decode_checkin(&flipped);
            }
        }
    }
}
