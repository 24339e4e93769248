//! Server tokens: the key pair and certificate the operator uploads to Apple School Manager for an "MDM server",
//! and the decryption of the `.p7m` server token ASM hands back (S/MIME EnvelopedData, AES-256 or 3DES, STACK.md
//! pitfall 6) into OAuth credentials.

use openssl::nid::Nid;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use orchard_pki::Identity;
use orchard_types::{Secret, UnixTime};
use serde::{Deserialize, Serialize};

use crate::types::{format_time, parse_time};
use crate::{oauth, DepError};

/// How long the certificate we generate for ASM stays valid. Apple renews the token yearly, encrypted to the same
/// certificate, so the certificate outlives a few renewals.
pub const TOKEN_CERT_VALIDITY_DAYS: u32 = 3 * 365;

/// A `.p7m` is a few KiB; anything far larger is not a server token.
const MAX_P7M_BYTES: usize = 256 * 1024;

const MESSAGE_BEGIN: &str = "-----BEGIN MESSAGE-----";
const MESSAGE_END: &str = "-----END MESSAGE-----";

/// The OAuth credentials inside a decrypted server token. Secrets never print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerToken {
    pub consumer_key: String,
    pub consumer_secret: Secret<String>,
    pub access_token: String,
    pub access_secret: Secret<String>,
    pub access_token_expiry: UnixTime,
}

/// The token's JSON as Apple writes it (and as we store it, encrypted).
#[derive(Serialize, Deserialize)]
struct TokenJson {
    consumer_key: String,
    consumer_secret: String,
    access_token: String,
    access_secret: String,
    access_token_expiry: String,
}

impl ServerToken {
    /// Parses Apple's token JSON `{consumer_key, consumer_secret, access_token, access_secret,
    /// access_token_expiry}`; the expiry is an RFC 3339 time such as `2026-03-08T21:02:30Z`.
    pub fn from_json(bytes: &[u8]) -> Result<Self, DepError> {
        let json: TokenJson = serde_json::from_slice(bytes)
            .map_err(|e| DepError::InvalidToken(format!("token json: {e}")))?;
        for (name, value) in [
            ("consumer_key", &json.consumer_key),
            ("consumer_secret", &json.consumer_secret),
            ("access_token", &json.access_token),
            ("access_secret", &json.access_secret),
        ] {
            if value.trim().is_empty() {
                return Err(DepError::InvalidToken(format!("{name} is empty")));
            }
        }
        let expiry = parse_time(&json.access_token_expiry).ok_or_else(|| {
            DepError::InvalidToken(format!(
                "access_token_expiry {:?} is not a time",
                json.access_token_expiry
            ))
        })?;
        Ok(Self {
            consumer_key: json.consumer_key,
            consumer_secret: Secret::new(json.consumer_secret),
            access_token: json.access_token,
            access_secret: Secret::new(json.access_secret),
            access_token_expiry: expiry,
        })
    }

    /// The same JSON, for storage (the caller encrypts it at rest).
    pub fn to_json(&self) -> Secret<String> {
        let json = TokenJson {
            consumer_key: self.consumer_key.clone(),
            consumer_secret: self.consumer_secret.expose().clone(),
            access_token: self.access_token.clone(),
            access_secret: self.access_secret.expose().clone(),
            access_token_expiry: format_time(self.access_token_expiry),
        };
        Secret::new(serde_json::to_string(&json).unwrap_or_default())
    }

    pub fn is_expired(&self, now: UnixTime) -> bool {
        now >= self.access_token_expiry
    }

    /// Seconds left (negative once expired), for "renew your token" warnings.
    pub fn seconds_until_expiry(&self, now: UnixTime) -> i64 {
        self.access_token_expiry.0.saturating_sub(now.0)
    }

    /// The credentials in the form the OAuth signer takes.
    pub fn oauth_credentials(&self) -> oauth::Credentials<'_> {
        oauth::Credentials {
            consumer_key: &self.consumer_key,
            consumer_secret: self.consumer_secret.expose(),
            token: &self.access_token,
            token_secret: self.access_secret.expose(),
        }
    }
}

/// A fresh RSA-2048 key and a self-signed certificate (PEM via [`Identity::cert_pem`]) for the operator to
/// upload to ASM. Keep the key (encrypted): every token for this MDM server is encrypted to it.
pub fn generate_token_keypair(common_name: &str, now: UnixTime) -> Result<Identity, DepError> {
    Identity::generate_self_signed_rsa(common_name, now, TOKEN_CERT_VALIDITY_DAYS)
        .map_err(|e| DepError::Crypto(e.to_string()))
}

/// Decrypts a server token downloaded from ASM (`…_Token_…_smime.p7m`: S/MIME, or bare PEM/DER CMS) with the
/// key pair whose certificate was uploaded, and parses the credentials inside.
pub fn decrypt_server_token(p7m: &[u8], keypair: &Identity) -> Result<ServerToken, DepError> {
    if p7m.len() > MAX_P7M_BYTES {
        return Err(DepError::InvalidToken("file is too large".into()));
    }
    let pkcs7 = parse_enveloped(p7m)?;
    let is_enveloped = pkcs7
        .type_()
        .map(|t| t.nid() == Nid::PKCS7_ENVELOPED)
        .unwrap_or(false);
    if !is_enveloped {
        return Err(DepError::InvalidToken(
            "not an encrypted (enveloped-data) message".into(),
        ));
    }
    let plain = pkcs7
        .decrypt(keypair.private_key(), keypair.x509(), Pkcs7Flags::empty())
        .map_err(|e| {
            DepError::TokenKeyMismatch(format!(
                "the token was not encrypted to this certificate ({e}); upload this certificate to the mdm \
                 server in apple school manager and download its token again"
            ))
        })?;
    ServerToken::from_json(extract_token_json(&plain)?.as_bytes())
}

fn parse_enveloped(p7m: &[u8]) -> Result<Pkcs7, DepError> {
    if let Ok((pkcs7, _)) = Pkcs7::from_smime(p7m) {
        return Ok(pkcs7);
    }
    if let Ok(pkcs7) = Pkcs7::from_pem(p7m) {
        return Ok(pkcs7);
    }
    Pkcs7::from_der(p7m)
        .map_err(|e| DepError::InvalidToken(format!("not an s/mime, pem or der cms message: {e}")))
}

/// The decrypted content is a MIME entity (`Content-Type: text/plain…`, blank line) whose body wraps the JSON in
/// `-----BEGIN MESSAGE-----` / `-----END MESSAGE-----`. Older tokens lack the markers; then the JSON object
/// itself is taken.
fn extract_token_json(plain: &[u8]) -> Result<String, DepError> {
    let text = std::str::from_utf8(plain)
        .map_err(|_| DepError::InvalidToken("decrypted token is not utf-8".into()))?;
    if let Some(start) = text.find(MESSAGE_BEGIN) {
        let after = text.get(start + MESSAGE_BEGIN.len()..).unwrap_or_default();
        let end = after
            .find(MESSAGE_END)
            .ok_or_else(|| DepError::InvalidToken("message end marker missing".into()))?;
        return Ok(after.get(..end).unwrap_or_default().trim().to_owned());
    }
    match (text.find('{'), text.rfind('}')) {
        (Some(open), Some(close)) if open < close => {
            Ok(text.get(open..=close).unwrap_or_default().to_owned())
        }
        _ => Err(DepError::InvalidToken(
            "decrypted token holds no json object".into(),
        )),
    }
}

/// The MIME entity ASM encrypts: headers, blank line, the JSON between message markers.
pub fn mime_wrap_token_json(json: &str) -> Vec<u8> {
    format!(
        "Content-Type: text/plain;charset=UTF-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n\
         {MESSAGE_BEGIN}\r\n{json}\r\n{MESSAGE_END}\r\n"
    )
    .into_bytes()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use openssl::stack::Stack;
    use openssl::symm::Cipher;
    use openssl::x509::X509;

    const NOW: UnixTime = UnixTime(1_764_460_800); // 2025-11-30T00:00:00Z

    const TOKEN_JSON: &str = r#"{"consumer_key":"CK_48dd68d198350f51258e885ce9a5c37ab7f98543c4a697323d75682a6c10a32501cb247e3db08105db868f73f2c972bdb6ae77112aea803b9219eb52689d42e6","consumer_secret":"CS_34c7b2b531a600d99a0e4edcf4a78ded79b86ef318118c2f5bcfee1b011108c32d5302df801adbe29d446eb78f02b13144e323eb9aad51c79f01e50cb45c3a68","access_token":"AT_927696831c59ba510cfe4ec1a69e5267c19881257d4bca2906a99d0785b785a6f6fdeb09774954fdd5e2d0ad952e3af52c6d8d2f21c924ba0caf4a031c158b89","access_secret":"AS_c31afd7a09691d83548489336e8ff1cb11b82b6bca13f793344496a556b1f4972eaff4dde6deb5ac9cf076fdfa97ec97699c34d515947b9cf9ed31c99dded6ba","access_token_expiry":"2026-11-29T21:02:30Z"}"#;

    /// Encrypts the MIME-wrapped token JSON to `cert_pem` and writes S/MIME, as ASM does.
    fn asm_token(cert_pem: &[u8], cipher: Cipher) -> Vec<u8> {
        let cert = X509::from_pem(cert_pem).unwrap();
        let mut recipients = Stack::new().unwrap();
        recipients.push(cert).unwrap();
        let content = mime_wrap_token_json(TOKEN_JSON);
        let pkcs7 = Pkcs7::encrypt(&recipients, &content, cipher, Pkcs7Flags::BINARY).unwrap();
        pkcs7.to_smime(&[], Pkcs7Flags::empty()).unwrap()
    }

    #[test]
    fn decrypts_tokens_in_both_ciphers_asm_uses() {
        let keypair = generate_token_keypair("Orchard DEP token", NOW).unwrap();
        assert!(String::from_utf8(keypair.cert_pem())
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----"));
        for cipher in [Cipher::aes_256_cbc(), Cipher::des_ede3_cbc()] {
            let p7m = asm_token(&keypair.cert_pem(), cipher);
            assert!(String::from_utf8_lossy(&p7m).contains("application/"));
            let token = decrypt_server_token(&p7m, &keypair).unwrap();
            assert!(token.consumer_key.starts_with("CK_48dd"));
            assert!(token.consumer_secret.expose().starts_with("CS_34c7"));
            assert!(token.access_token.starts_with("AT_9276"));
            assert!(token.access_secret.expose().starts_with("AS_c31a"));
            assert_eq!(token.access_token_expiry, UnixTime(1_795_986_150));
            assert!(!token.is_expired(NOW));
            assert!(token.is_expired(UnixTime(1_795_986_150)));
            assert!(!format!("{token:?}").contains("CS_34c7"));
            // Storage round trip.
            let again = ServerToken::from_json(token.to_json().expose().as_bytes()).unwrap();
            assert_eq!(again, token);
        }
    }

    #[test]
    fn token_for_another_key_fails_cleanly() {
        let ours = generate_token_keypair("ours", NOW).unwrap();
        let theirs = generate_token_keypair("theirs", NOW).unwrap();
        let p7m = asm_token(&theirs.cert_pem(), Cipher::aes_256_cbc());
        let err = decrypt_server_token(&p7m, &ours).unwrap_err();
        assert!(matches!(err, DepError::TokenKeyMismatch(_)), "{err}");
        assert!(err.to_string().contains("apple school manager"));
        // OpenSSL's error queue is left clean for the next caller on this thread.
        assert!(openssl::error::ErrorStack::get().errors().is_empty());
    }

    #[test]
    fn garbage_is_refused() {
        let keypair = generate_token_keypair("ours", NOW).unwrap();
        assert!(matches!(
            decrypt_server_token(b"not a token", &keypair),
            Err(DepError::InvalidToken(_))
        ));
        assert!(matches!(
            decrypt_server_token(&vec![b'A'; MAX_P7M_BYTES + 1], &keypair),
            Err(DepError::InvalidToken(_))
        ));
        assert!(ServerToken::from_json(br#"{"consumer_key":""}"#).is_err());
        let no_time = TOKEN_JSON.replace("2026-11-29T21:02:30Z", "soon");
        assert!(ServerToken::from_json(no_time.as_bytes()).is_err());
    }

    #[test]
    fn json_without_markers_is_accepted() {
        let plain = format!("Content-Type: text/plain\r\n\r\n{TOKEN_JSON}\r\n");
        assert_eq!(extract_token_json(plain.as_bytes()).unwrap(), TOKEN_JSON);
    }
}
