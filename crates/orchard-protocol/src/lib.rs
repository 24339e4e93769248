//! Apple MDM wire formats, sans-IO: check-in messages, command reports, commands, command results and the
//! enrollment profile, all as plists.
//!
//! Every plist that comes from outside goes through [`parse_dictionary`], which bounds size and nesting depth
//! before the `plist` crate sees a byte: that crate recurses once per nesting level and a deep enough input
//! overflows the stack and aborts the whole process (STACK.md pitfall 10), which `catch_unwind` cannot stop.

// Tests may unwrap and panic (team rule); library code may not.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

use std::io::Cursor;

pub mod checkin;
pub mod commands;
pub mod declarative;
mod depth;
pub(crate) mod fields;
pub mod profile;
pub mod report;
pub mod results;

/// The largest plist we accept from outside (1 MiB). Check-ins and command reports are a few KiB; the largest
/// legitimate ones (long InstalledApplicationList reports) stay well below this.
pub const MAX_PLIST_BYTES: usize = 1 << 20;

/// The deepest nesting of arrays and dictionaries we accept (the top-level dictionary counts as 1). Apple's
/// deepest structures (SCEP subjects inside a profile inside a report) need fewer than 10 levels.
pub const MAX_PLIST_DEPTH: usize = 32;

/// The server capability a Shared iPad needs to open user channels.
pub const PER_USER_CONNECTIONS: &str = "com.apple.mdm.per-user-connections";

/// Why a plist from a device (or for a device) could not be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProtocolError {
    #[error("malformed plist: {0}")]
    Malformed(String),
    #[error("plist is larger than {MAX_PLIST_BYTES} bytes")]
    TooLarge,
    #[error("plist nests deeper than {MAX_PLIST_DEPTH} levels")]
    TooDeep,
    #[error("required key {0} is missing")]
    MissingKey(&'static str),
    #[error("invalid value for {key}: {reason}")]
    InvalidValue { key: &'static str, reason: String },
    #[error("unknown check-in message type {0:?}")]
    UnknownMessageType(String),
    #[error("unsupported command status {0:?}")]
    UnsupportedStatus(String),
}

const BINARY_MAGIC: &[u8] = b"bplist00";

/// Bounded parse of any plist (XML or binary) coming from outside: size <= [`MAX_PLIST_BYTES`] and nesting
/// depth <= [`MAX_PLIST_DEPTH`] are checked BEFORE the plist crate sees the bytes. The top level must be a
/// dictionary. The ASCII (OpenStep) format is never parsed: devices do not send it and it would be one more
/// parser exposed to hostile input.
pub fn parse_dictionary(bytes: &[u8]) -> Result<plist::Dictionary, ProtocolError> {
    parse_value(bytes)?
        .into_dictionary()
        .ok_or_else(|| ProtocolError::Malformed("top level is not a dictionary".into()))
}

/// [`parse_dictionary`] for any top-level value.
pub fn parse_value(bytes: &[u8]) -> Result<plist::Value, ProtocolError> {
    if bytes.len() > MAX_PLIST_BYTES {
        return Err(ProtocolError::TooLarge);
    }
    let malformed = |e: plist::Error| ProtocolError::Malformed(e.to_string());
    if bytes.starts_with(BINARY_MAGIC) {
        depth::check_binary(bytes, MAX_PLIST_DEPTH)?;
        let value = plist::Value::from_reader(Cursor::new(bytes)).map_err(malformed)?;
        refuse_nul_in_strings(&value)?;
        Ok(value)
    } else {
        depth::check_xml(bytes, MAX_PLIST_DEPTH)?;
        plist::Value::from_reader_xml(bytes).map_err(malformed)
    }
}

/// A binary plist can carry NUL inside a string or a key, which its XML form cannot (the XML check refuses
/// NUL bytes) and PostgreSQL's TEXT cannot store: such a message is refused here as malformed, the same answer
/// for both encodings, instead of failing later when it is written (fuzzing finding 4, docs/fuzzing.md).
fn refuse_nul_in_strings(value: &plist::Value) -> Result<(), ProtocolError> {
    let nul = || ProtocolError::Malformed("a string contains a NUL character".into());
    let mut pending = vec![value];
    while let Some(v) = pending.pop() {
        match v {
            plist::Value::String(s) if s.contains('\0') => return Err(nul()),
            plist::Value::Array(items) => pending.extend(items),
            plist::Value::Dictionary(dict) => {
                for (key, item) in dict {
                    if key.contains('\0') {
                        return Err(nul());
                    }
                    pending.push(item);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Serializes a value we built ourselves as an XML plist.
pub(crate) fn to_xml(value: &plist::Value) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail for the value kinds we build (no I/O, no unrepresentable values), so the
    // error branch is unreachable in practice; an empty body would be rejected by the peer, never misread.
    if value.to_writer_xml(&mut out).is_err() {
        out.clear();
    }
    out
}

/// Serializes a dictionary we built ourselves as an XML plist.
pub(crate) fn dictionary_to_xml(dict: plist::Dictionary) -> Vec<u8> {
    to_xml(&plist::Value::Dictionary(dict))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn nested_xml(levels: usize, tag: &str) -> Vec<u8> {
        let mut s =
            String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\">");
        for _ in 0..levels {
            s.push_str(&format!("<{tag}>"));
        }
        for _ in 0..levels {
            s.push_str(&format!("</{tag}>"));
        }
        s.push_str("</plist>");
        s.into_bytes()
    }

    fn binary(value: plist::Value) -> Vec<u8> {
        let mut out = Vec::new();
        value.to_writer_binary(&mut out).expect("binary plist");
        out
    }

    #[test]
    fn nul_in_a_binary_string_or_key_is_refused_as_in_xml() {
        let dict = |key: &str, value: plist::Value| {
            let mut d = plist::Dictionary::new();
            d.insert(key.into(), value);
            plist::Value::Dictionary(d)
        };
        let refused = Err(ProtocolError::Malformed(
            "a string contains a NUL character".into(),
        ));
        let nul_value = dict("OSVersion", plist::Value::String("18.2\0evil".into()));
        assert_eq!(parse_dictionary(&binary(nul_value.clone())), refused);
        let nested = dict(
            "QueryResponses",
            plist::Value::Array(vec![plist::Value::from(1), nul_value]),
        );
        assert_eq!(parse_dictionary(&binary(nested)), refused);
        assert_eq!(
            parse_dictionary(&binary(dict("UD\0ID", plist::Value::from("x")))),
            refused
        );
        // The XML form of the same message was already refused before parsing.
        let mut xml = Vec::new();
        dict("OSVersion", plist::Value::String("18.2\0evil".into()))
            .to_writer_xml(&mut xml)
            .expect("xml plist");
        assert!(matches!(
            parse_dictionary(&xml),
            Err(ProtocolError::Malformed(_))
        ));
        // Strings without NUL, and data with zero bytes, still read.
        let fine = dict(
            "Token",
            plist::Value::Array(vec![
                plist::Value::Data(vec![0, 1, 0]),
                plist::Value::from("18.2"),
            ]),
        );
        assert_eq!(parse_value(&binary(fine.clone())), Ok(fine));
    }

    #[test]
    fn deep_xml_is_rejected_quickly_without_crashing() {
        let started = Instant::now();
        assert_eq!(
            parse_value(&nested_xml(10_000, "array")),
            Err(ProtocolError::TooDeep)
        );
        assert_eq!(
            parse_dictionary(&nested_xml(50_000, "dict")),
            Err(ProtocolError::TooDeep)
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn depth_limit_is_exact() {
        // 1 dict + 31 arrays = 32 levels: accepted; one more: rejected.
        let build = |arrays: usize| {
            let mut s = String::from("<plist><dict><key>a</key>");
            s.push_str(&"<array>".repeat(arrays));
            s.push_str(&"</array>".repeat(arrays));
            s.push_str("</dict></plist>");
            s.into_bytes()
        };
        assert!(parse_dictionary(&build(MAX_PLIST_DEPTH - 1)).is_ok());
        assert_eq!(
            parse_dictionary(&build(MAX_PLIST_DEPTH)),
            Err(ProtocolError::TooDeep)
        );
    }

    #[test]
    fn oversized_input_is_rejected() {
        let big = vec![b' '; MAX_PLIST_BYTES + 1];
        assert_eq!(parse_dictionary(&big), Err(ProtocolError::TooLarge));
    }

    #[test]
    fn ascii_plists_are_not_parsed() {
        let deep = "(".repeat(5_000);
        assert!(matches!(
            parse_value(deep.as_bytes()),
            Err(ProtocolError::Malformed(_))
        ));
        assert!(matches!(
            parse_dictionary(b"{ a = b; }"),
            Err(ProtocolError::Malformed(_))
        ));
    }

    #[test]
    fn top_level_must_be_a_dictionary() {
        assert!(matches!(
            parse_dictionary(b"<plist><array/></plist>"),
            Err(ProtocolError::Malformed(_))
        ));
    }

    /// Deterministic mutation fuzzing of every decoder over real and generated inputs (XML and binary):
    /// whatever the bytes, decoders return a value or an error and never panic or abort.
    #[test]
    fn decoders_never_panic_on_mutated_input() {
        let mut seeds: Vec<Vec<u8>> = vec![
            include_bytes!("../testdata/Authenticate.1.plist").to_vec(),
            include_bytes!("../testdata/TokenUpdate.1.plist").to_vec(),
            include_bytes!("../testdata/DeviceInformation.1.plist").to_vec(),
            profile::sample_profile().to_plist(),
        ];
        for command in commands::all_command_samples() {
            let uuid = orchard_types::CommandUuid::parse("C").unwrap();
            seeds.push(command.encode(&uuid));
        }
        let binary: Vec<Vec<u8>> = seeds
            .iter()
            .filter_map(|s| {
                let value = parse_value(s).ok()?;
                let mut out = Vec::new();
                value.to_writer_binary(&mut out).ok()?;
                Some(out)
            })
            .collect();
        seeds.extend(binary);
        let snippets: [&[u8]; 6] = [
            b"<array>",
            b"</dict>",
            b"<dict>",
            b"<!--",
            b"\xff",
            b"<data>AA</data>",
        ];
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for seed in &seeds {
            for _ in 0..150 {
                let mut input = seed.clone();
                for _ in 0..(next() % 4 + 1) {
                    let at = (next() as usize) % (input.len() + 1);
                    match next() % 4 {
                        0 if at < input.len() => input[at] = next() as u8,
                        1 if at < input.len() => {
                            input.remove(at);
                        }
                        2 => {
                            let snippet = snippets[(next() as usize) % snippets.len()];
                            input.splice(at..at, snippet.iter().copied());
                        }
                        _ => input.truncate(at),
                    }
                }
                let _ = checkin::decode_checkin(&input);
                let _ = report::decode_report(&input);
                let _ = commands::decode_command(&input);
                let _ = profile::EnrollmentProfile::parse(&input);
                if let Ok(r) = report::decode_report(&input) {
                    for rt in [
                        "DeviceInformation",
                        "ProfileList",
                        "DeviceLocation",
                        "ManagedApplicationList",
                    ] {
                        let _ = results::parse_result(rt, &r);
                    }
                }
            }
        }
    }

    #[test]
    fn binary_round_trip_is_accepted() {
        let mut dict = plist::Dictionary::new();
        dict.insert("UDID".into(), plist::Value::String("abc".into()));
        dict.insert(
            "List".into(),
            plist::Value::Array(vec![plist::Value::Integer(1.into())]),
        );
        let mut bytes = Vec::new();
        plist::Value::Dictionary(dict.clone())
            .to_writer_binary(&mut bytes)
            .unwrap();
        assert_eq!(parse_dictionary(&bytes).unwrap(), dict);
    }
}
