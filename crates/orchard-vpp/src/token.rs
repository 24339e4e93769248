//! The content token (sToken) a location's content manager downloads from Apple School Manager: base64 of a
//! JSON object `{token, expDate, orgName}`. The whole base64 text is what goes into `Authorization: Bearer`.

use base64::Engine;
use orchard_types::{Secret, UnixTime};
use serde::Deserialize;

use crate::types::parse_apple_time;
use crate::VppError;

/// A token file is a few hundred bytes; anything far larger is not one.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// A parsed content token. `Debug` never prints the secret.
#[derive(Clone, Debug)]
pub struct ContentToken {
    /// The text sent as bearer token (the base64 exactly as downloaded, whitespace trimmed).
    bearer: Secret<String>,
    /// The organization (or location) name inside the token.
    pub org_name: String,
    /// When Apple stops accepting the token.
    pub expires_at: UnixTime,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenJson {
    token: Option<String>,
    exp_date: Option<String>,
    org_name: Option<String>,
}

impl ContentToken {
    /// Reads a `.vpptoken` file's content. Errors name what is wrong without echoing the secret.
    pub fn parse(text: &str) -> Result<Self, VppError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(VppError::InvalidContentToken("the token is empty".into()));
        }
        if text.len() > MAX_TOKEN_BYTES {
            return Err(VppError::InvalidContentToken(format!(
                "the token is {} bytes; a content token is under {MAX_TOKEN_BYTES}",
                text.len()
            )));
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| {
                VppError::InvalidContentToken(format!(
                    "not base64 ({e}): upload the .vpptoken file as downloaded from apple school manager"
                ))
            })?;
        let json: TokenJson = serde_json::from_slice(&raw).map_err(|e| {
            VppError::InvalidContentToken(format!("not the JSON of a content token: {e}"))
        })?;
        let token = json.token.filter(|t| !t.trim().is_empty()).ok_or_else(|| {
            VppError::InvalidContentToken("the field \"token\" is missing or empty".into())
        })?;
        drop(token);
        let exp_date = json.exp_date.ok_or_else(|| {
            VppError::InvalidContentToken("the field \"expDate\" is missing".into())
        })?;
        let expires_at = parse_apple_time(&exp_date).ok_or_else(|| {
            VppError::InvalidContentToken(format!(
                "the field \"expDate\" is not a date: {:?}",
                truncate(&exp_date, 40)
            ))
        })?;
        let org_name = json
            .org_name
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                VppError::InvalidContentToken("the field \"orgName\" is missing or empty".into())
            })?;
        Ok(Self {
            bearer: Secret::new(text.to_owned()),
            org_name: truncate(&org_name, 200).to_owned(),
            expires_at,
        })
    }

    /// The bearer text (the whole token as downloaded). Only the HTTP client and sealing call this.
    pub fn expose_bearer(&self) -> &str {
        self.bearer.expose()
    }

    pub fn is_expired(&self, now: UnixTime) -> bool {
        self.expires_at <= now
    }

    /// Whole days left until expiry (negative once expired).
    pub fn days_to_expiry(&self, now: UnixTime) -> i64 {
        (self.expires_at.0 - now.0).div_euclid(86_400)
    }

    /// Builds the text of a token the way Apple School Manager does (for the local server and tests).
    pub fn encode(token: &str, expires_at: UnixTime, org_name: &str) -> String {
        let json = serde_json::json!({
            "token": token,
            "expDate": crate::types::format_apple_time(expires_at),
            "orgName": org_name,
        });
        base64::engine::general_purpose::STANDARD.encode(json.to_string())
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The shape of a downloaded token (fields as Apple documents them; the secret is made up).
    const GOLDEN_JSON: &str = r#"{"token":"VGhpcyBpcyBub3QgYSByZWFsIHRva2Vu","expDate":"2027-06-27T16:28:18+0000","orgName":"Department of Physics"}"#;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn parses_the_golden_token() {
        let token = ContentToken::parse(&format!("  {}\n", b64(GOLDEN_JSON))).unwrap();
        assert_eq!(token.org_name, "Department of Physics");
        assert_eq!(token.expires_at, UnixTime(1_814_113_698));
        assert_eq!(token.expose_bearer(), b64(GOLDEN_JSON));
        assert!(!format!("{token:?}").contains("VGhpcyBp"));
        assert_eq!(
            token.days_to_expiry(UnixTime(1_814_113_698 - 86_400 * 3)),
            3
        );
        assert!(token.is_expired(UnixTime(1_814_113_698)));
    }

    #[test]
    fn round_trips_encode() {
        let text = ContentToken::encode("secret", UnixTime(1_800_000_000), "Chemistry");
        let token = ContentToken::parse(&text).unwrap();
        assert_eq!(token.org_name, "Chemistry");
        assert_eq!(token.expires_at, UnixTime(1_800_000_000));
    }

    #[test]
    fn bad_tokens_name_the_problem() {
        let cases = [
            ("", "empty"),
            ("%%%not base64", "not base64"),
            (&b64("[1,2]") as &str, "not the JSON"),
            (
                &b64(r#"{"expDate":"2027-06-27T16:28:18+0000","orgName":"x"}"#),
                "\"token\"",
            ),
            (
                &b64(r#"{"token":"t","orgName":"x"}"#),
                "\"expDate\" is missing",
            ),
            (
                &b64(r#"{"token":"t","expDate":"tomorrow","orgName":"x"}"#),
                "not a date",
            ),
            (
                &b64(r#"{"token":"t","expDate":"2027-06-27T16:28:18+0000"}"#),
                "\"orgName\"",
            ),
        ];
        for (input, expected) in cases {
            let err = ContentToken::parse(input).unwrap_err().to_string();
            assert!(err.contains(expected), "{input:?}: {err}");
            assert!(!err.contains("\"t\""), "secret echoed: {err}");
        }
        let huge = "A".repeat(MAX_TOKEN_BYTES + 4);
        assert!(ContentToken::parse(&huge)
            .unwrap_err()
            .to_string()
            .contains("bytes"));
    }
}
