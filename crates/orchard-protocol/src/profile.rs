//! The enrollment profile (.mobileconfig): a Configuration profile with our CA root (so the device trusts the
//! server's TLS certificate), a SCEP payload (the device identity) and the MDM payload that points at it.
//! [`EnrollmentProfile::to_plist`] builds it for the server; [`EnrollmentProfile::parse`] reads it back for
//! the simulator. Keys follow Apple's `mdm/profiles/{TopLevel,com.apple.mdm,com.apple.security.scep,
//! com.apple.security.root}.yaml`.

use orchard_types::ApnsTopic;
use plist::{Dictionary, Value};
use uuid::Uuid;

use crate::fields::{DictBuilder, Fields};
use crate::{dictionary_to_xml, parse_dictionary, ProtocolError};

pub const ROOT_PAYLOAD_TYPE: &str = "com.apple.security.root";
pub const SCEP_PAYLOAD_TYPE: &str = "com.apple.security.scep";
pub const MDM_PAYLOAD_TYPE: &str = "com.apple.mdm";

/// `com.apple.security.scep` → `PayloadContent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScepPayload {
    pub url: String,
    /// The CA identifier (`Name`).
    pub name: String,
    /// X.500 subject as (OID or short name, value) pairs, e.g. `("CN", "Orchard device")`.
    pub subject: Vec<(String, String)>,
    /// The one-time challenge password.
    pub challenge: String,
    /// RSA key size (2048).
    pub key_size: u32,
    /// 1 = signing, 4 = encryption, 5 = both.
    pub key_usage: u32,
    /// SHA-256 of the CA certificate, so the device can pin it.
    pub ca_fingerprint: Option<Vec<u8>>,
}

/// `com.apple.mdm`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdmPayload {
    pub server_url: String,
    pub check_in_url: String,
    pub topic: ApnsTopic,
    pub sign_message: bool,
    pub check_out_when_removed: bool,
    /// 8191 = every right.
    pub access_rights: u32,
    /// Includes [`crate::PER_USER_CONNECTIONS`] for Shared iPads.
    pub server_capabilities: Vec<String>,
    pub use_development_apns: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentProfile {
    /// Top-level PayloadIdentifier; the payloads use `<identifier>.root|.scep|.mdm`.
    pub identifier: String,
    pub uuid: Uuid,
    pub display_name: String,
    pub organization: String,
    pub description: Option<String>,
    /// Our CA root (DER); when present the device trusts it for TLS.
    pub root_ca_der: Option<Vec<u8>>,
    pub root_payload_uuid: Uuid,
    pub scep: ScepPayload,
    pub scep_payload_uuid: Uuid,
    pub mdm: MdmPayload,
    pub mdm_payload_uuid: Uuid,
}

/// Apple writes payload UUIDs in upper case; IdentityCertificateUUID must match the SCEP PayloadUUID exactly.
fn uuid_string(u: &Uuid) -> String {
    u.hyphenated().to_string().to_uppercase()
}

fn common_payload(
    payload_type: &str,
    identifier: String,
    uuid: &Uuid,
    display_name: &str,
    organization: &str,
) -> DictBuilder {
    DictBuilder::new()
        .string("PayloadType", payload_type)
        .int("PayloadVersion", 1)
        .string("PayloadIdentifier", &identifier)
        .string("PayloadUUID", &uuid_string(uuid))
        .string("PayloadDisplayName", display_name)
        .string("PayloadOrganization", organization)
}

impl EnrollmentProfile {
    /// The unsigned profile (XML plist); the server signs it with CMS before serving it.
    pub fn to_plist(&self) -> Vec<u8> {
        dictionary_to_xml(self.to_dictionary())
    }

    /// The profile as a plist dictionary.
    pub fn to_dictionary(&self) -> Dictionary {
        let mut payloads = Vec::new();
        if let Some(der) = &self.root_ca_der {
            payloads.push(Value::Dictionary(
                common_payload(
                    ROOT_PAYLOAD_TYPE,
                    format!("{}.root", self.identifier),
                    &self.root_payload_uuid,
                    "Root certificate",
                    &self.organization,
                )
                .string("PayloadCertificateFileName", "root.cer")
                .data("PayloadContent", der)
                .build(),
            ));
        }
        let subject = Value::Array(
            self.scep
                .subject
                .iter()
                .map(|(oid, value)| {
                    Value::Array(vec![Value::Array(vec![
                        Value::String(oid.clone()),
                        Value::String(value.clone()),
                    ])])
                })
                .collect(),
        );
        let scep_content = DictBuilder::new()
            .string("URL", &self.scep.url)
            .string("Name", &self.scep.name)
            .value("Subject", subject)
            .string("Challenge", &self.scep.challenge)
            .int("Keysize", i64::from(self.scep.key_size))
            .string("Key Type", "RSA")
            .int("Key Usage", i64::from(self.scep.key_usage))
            .opt_data("CAFingerprint", self.scep.ca_fingerprint.as_ref())
            .build();
        payloads.push(Value::Dictionary(
            common_payload(
                SCEP_PAYLOAD_TYPE,
                format!("{}.scep", self.identifier),
                &self.scep_payload_uuid,
                "Device identity",
                &self.organization,
            )
            .dict("PayloadContent", scep_content)
            .build(),
        ));
        payloads.push(Value::Dictionary(
            common_payload(
                MDM_PAYLOAD_TYPE,
                format!("{}.mdm", self.identifier),
                &self.mdm_payload_uuid,
                "Device management",
                &self.organization,
            )
            .string("ServerURL", &self.mdm.server_url)
            .string("CheckInURL", &self.mdm.check_in_url)
            .string("Topic", self.mdm.topic.as_str())
            .string(
                "IdentityCertificateUUID",
                &uuid_string(&self.scep_payload_uuid),
            )
            .bool("SignMessage", self.mdm.sign_message)
            .bool("CheckOutWhenRemoved", self.mdm.check_out_when_removed)
            .int("AccessRights", i64::from(self.mdm.access_rights))
            .strings("ServerCapabilities", &self.mdm.server_capabilities)
            .bool("UseDevelopmentAPNS", self.mdm.use_development_apns)
            .build(),
        ));
        DictBuilder::new()
            .string("PayloadType", "Configuration")
            .int("PayloadVersion", 1)
            .string("PayloadIdentifier", &self.identifier)
            .string("PayloadUUID", &uuid_string(&self.uuid))
            .string("PayloadDisplayName", &self.display_name)
            .string("PayloadOrganization", &self.organization)
            .opt_string("PayloadDescription", self.description.as_ref())
            .value("PayloadContent", Value::Array(payloads))
            .build()
    }

    /// Reads an unsigned profile back (the simulator's side; unwrap the CMS signature first).
    pub fn parse(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let top = parse_dictionary(bytes)?;
        let f = Fields(&top);
        let payload_type = f.string("PayloadType")?;
        if payload_type != "Configuration" {
            return Err(ProtocolError::InvalidValue {
                key: "PayloadType",
                reason: format!("expected Configuration, got {payload_type:?}"),
            });
        }
        let payloads = f
            .opt_dicts("PayloadContent")?
            .ok_or(ProtocolError::MissingKey("PayloadContent"))?;
        let find = |wanted: &str| {
            payloads
                .iter()
                .copied()
                .find(|p| p.get("PayloadType").and_then(Value::as_string) == Some(wanted))
        };
        let root = find(ROOT_PAYLOAD_TYPE);
        let scep =
            find(SCEP_PAYLOAD_TYPE).ok_or(ProtocolError::MissingKey("com.apple.security.scep"))?;
        let mdm = find(MDM_PAYLOAD_TYPE).ok_or(ProtocolError::MissingKey("com.apple.mdm"))?;

        let scep_f = Fields(scep);
        let content = Fields(scep_f.dict("PayloadContent")?);
        let mdm_f = Fields(mdm);
        let scep_payload_uuid = read_uuid(scep_f, "PayloadUUID")?;
        let identity_uuid = read_uuid(mdm_f, "IdentityCertificateUUID")?;
        if identity_uuid != scep_payload_uuid {
            return Err(ProtocolError::InvalidValue {
                key: "IdentityCertificateUUID",
                reason: "does not name the SCEP payload".into(),
            });
        }
        let topic = mdm_f.string("Topic")?;
        Ok(Self {
            identifier: f.string("PayloadIdentifier")?,
            uuid: read_uuid(f, "PayloadUUID")?,
            display_name: f.opt_string("PayloadDisplayName")?.unwrap_or_default(),
            organization: f.opt_string("PayloadOrganization")?.unwrap_or_default(),
            description: f.opt_string("PayloadDescription")?,
            root_ca_der: root.map(|r| Fields(r).data("PayloadContent")).transpose()?,
            root_payload_uuid: root
                .map(|r| read_uuid(Fields(r), "PayloadUUID"))
                .transpose()?
                .unwrap_or_else(Uuid::nil),
            scep: ScepPayload {
                url: content.string("URL")?,
                name: content.opt_string("Name")?.unwrap_or_default(),
                subject: read_subject(content)?,
                challenge: content.opt_string("Challenge")?.unwrap_or_default(),
                key_size: read_u32(content, "Keysize")?.unwrap_or(2048),
                key_usage: read_u32(content, "Key Usage")?.unwrap_or(0),
                ca_fingerprint: content.opt_data("CAFingerprint")?,
            },
            scep_payload_uuid,
            mdm: MdmPayload {
                server_url: mdm_f.string("ServerURL")?,
                check_in_url: mdm_f
                    .opt_string("CheckInURL")?
                    .map_or_else(|| mdm_f.string("ServerURL"), Ok)?,
                topic: ApnsTopic::parse(&topic).map_err(|e| ProtocolError::InvalidValue {
                    key: "Topic",
                    reason: e.to_string(),
                })?,
                sign_message: mdm_f.opt_bool("SignMessage")?.unwrap_or(false),
                check_out_when_removed: mdm_f.opt_bool("CheckOutWhenRemoved")?.unwrap_or(false),
                access_rights: read_u32(mdm_f, "AccessRights")?.unwrap_or(0),
                server_capabilities: mdm_f.opt_strings("ServerCapabilities")?.unwrap_or_default(),
                use_development_apns: mdm_f.opt_bool("UseDevelopmentAPNS")?.unwrap_or(false),
            },
            mdm_payload_uuid: read_uuid(mdm_f, "PayloadUUID")?,
        })
    }
}

fn read_uuid(f: Fields<'_>, key: &'static str) -> Result<Uuid, ProtocolError> {
    let s = f.string(key)?;
    Uuid::parse_str(&s).map_err(|e| ProtocolError::InvalidValue {
        key,
        reason: e.to_string(),
    })
}

fn read_u32(f: Fields<'_>, key: &'static str) -> Result<Option<u32>, ProtocolError> {
    f.opt_int(key)?
        .map(|v| {
            u32::try_from(v).map_err(|_| ProtocolError::InvalidValue {
                key,
                reason: "out of range".into(),
            })
        })
        .transpose()
}

/// `Subject`: `[[[oid, value]], …]` (each RDN is an array of pairs; we read every pair in order).
fn read_subject(content: Fields<'_>) -> Result<Vec<(String, String)>, ProtocolError> {
    let invalid = || ProtocolError::InvalidValue {
        key: "Subject",
        reason: "expected [[[oid, value]]]".into(),
    };
    let Some(rdns) = content.opt_array("Subject")? else {
        return Ok(Vec::new());
    };
    let mut pairs = Vec::new();
    for rdn in rdns {
        for pair in rdn.as_array().ok_or_else(invalid)? {
            match pair.as_array().map(Vec::as_slice) {
                Some([Value::String(oid), Value::String(value)]) => {
                    pairs.push((oid.clone(), value.clone()))
                }
                _ => return Err(invalid()),
            }
        }
    }
    Ok(pairs)
}

/// A fully populated sample profile for tests (ours and the simulator's).
#[doc(hidden)]
pub fn sample_profile() -> EnrollmentProfile {
    EnrollmentProfile {
        identifier: "edu.example.orchard.enroll".into(),
        uuid: Uuid::from_u128(0x1111_2222_3333_4444_5555_6666_7777_8888),
        display_name: "Orchard enrollment".into(),
        organization: "Example University".into(),
        description: Some("Enrolls this iPad in Orchard".into()),
        root_ca_der: Some(vec![0x30, 0x82, 0x01, 0x00]),
        root_payload_uuid: Uuid::from_u128(0xAAAA_0000_0000_0000_0000_0000_0000_0001),
        scep: ScepPayload {
            url: "https://mdm.example.edu/scep".into(),
            name: "orchard-ca".into(),
            subject: vec![
                ("O".into(), "Example University".into()),
                ("CN".into(), "Orchard device".into()),
            ],
            challenge: "one-time-secret".into(),
            key_size: 2048,
            key_usage: 5,
            ca_fingerprint: Some(vec![0xAB; 32]),
        },
        scep_payload_uuid: Uuid::from_u128(0xabcd_ef00_0000_0000_0000_0000_0000_0002),
        mdm: MdmPayload {
            server_url: "https://mdm.example.edu/mdm/command".into(),
            check_in_url: "https://mdm.example.edu/mdm/checkin".into(),
            topic: ApnsTopic::parse("com.apple.mgmt.External.e0bd1eac-1f17-4c8e-8a63-dd17d3dd35d9")
                .unwrap_or_else(|_| unreachable!("the sample topic is valid")),
            sign_message: true,
            check_out_when_removed: true,
            access_rights: 8191,
            server_capabilities: vec![crate::PER_USER_CONNECTIONS.into()],
            use_development_apns: false,
        },
        mdm_payload_uuid: Uuid::from_u128(0xAAAA_0000_0000_0000_0000_0000_0000_0003),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let profile = sample_profile();
        assert_eq!(
            EnrollmentProfile::parse(&profile.to_plist()).unwrap(),
            profile
        );
        let without_root = EnrollmentProfile {
            root_ca_der: None,
            root_payload_uuid: Uuid::nil(),
            ..sample_profile()
        };
        assert_eq!(
            EnrollmentProfile::parse(&without_root.to_plist()).unwrap(),
            without_root
        );
    }

    #[test]
    fn identity_certificate_uuid_is_the_scep_payload_uuid_in_upper_case() {
        let profile = sample_profile();
        let dict = profile.to_dictionary();
        let payloads = dict
            .get("PayloadContent")
            .and_then(Value::as_array)
            .unwrap();
        assert_eq!(payloads.len(), 3);
        let scep = payloads[1].as_dictionary().unwrap();
        let mdm = payloads[2].as_dictionary().unwrap();
        let scep_uuid = scep.get("PayloadUUID").and_then(Value::as_string).unwrap();
        assert_eq!(scep_uuid, "ABCDEF00-0000-0000-0000-000000000002");
        assert_eq!(
            mdm.get("IdentityCertificateUUID")
                .and_then(Value::as_string),
            Some(scep_uuid)
        );
        let content = scep
            .get("PayloadContent")
            .and_then(Value::as_dictionary)
            .unwrap();
        assert_eq!(
            content.get("Key Type").and_then(Value::as_string),
            Some("RSA")
        );
        let root = payloads[0].as_dictionary().unwrap();
        assert_eq!(
            root.get("PayloadContent").and_then(Value::as_data),
            Some(&[0x30, 0x82, 0x01, 0x00][..])
        );
    }

    #[test]
    fn mismatched_identity_uuid_is_rejected() {
        let mut dict = sample_profile().to_dictionary();
        if let Some(Value::Array(payloads)) = dict.get_mut("PayloadContent") {
            if let Some(Value::Dictionary(mdm)) = payloads.last_mut() {
                mdm.insert(
                    "IdentityCertificateUUID".into(),
                    Value::String(uuid_string(&Uuid::nil())),
                );
            }
        }
        assert!(matches!(
            EnrollmentProfile::parse(&dictionary_to_xml(dict)),
            Err(ProtocolError::InvalidValue {
                key: "IdentityCertificateUUID",
                ..
            })
        ));
    }
}
