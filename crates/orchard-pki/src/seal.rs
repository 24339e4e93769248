//! Secrets at rest: AES-256-GCM under Orchard's data key (a 32-byte key in the data directory). Used for the
//! push certificate's private key and, later, UnlockTokens, bypass codes and Apple service tokens.
//!
//! Sealed format: `0x01 || nonce (12) || ciphertext || tag (16)`. The version byte lets the format change.

use openssl::symm::{decrypt_aead, encrypt_aead, Cipher};
use orchard_types::Secret;

use crate::PkiError;

const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
pub const DATA_KEY_LEN: usize = 32;

/// The key that seals secrets stored in the database. Never printed.
pub struct DataKey(Secret<[u8; DATA_KEY_LEN]>);

impl DataKey {
    /// A fresh random key.
    pub fn generate() -> Result<Self, PkiError> {
        let mut k = [0u8; DATA_KEY_LEN];
        openssl::rand::rand_bytes(&mut k)?;
        Ok(Self(Secret::new(k)))
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, PkiError> {
        let k: [u8; DATA_KEY_LEN] = bytes
            .try_into()
            .map_err(|_| PkiError::Malformed(format!("data key must be {DATA_KEY_LEN} bytes")))?;
        Ok(Self(Secret::new(k)))
    }

    pub fn to_bytes(&self) -> Secret<[u8; DATA_KEY_LEN]> {
        self.0.clone()
    }

    /// Encrypts and authenticates `plaintext`; `context` (e.g. a table and row id) is bound as associated
    /// data, so a sealed value copied to another row does not open.
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> Result<Vec<u8>, PkiError> {
        let mut nonce = [0u8; NONCE_LEN];
        openssl::rand::rand_bytes(&mut nonce)?;
        let mut tag = [0u8; TAG_LEN];
        let ct = encrypt_aead(
            Cipher::aes_256_gcm(),
            self.0.expose(),
            Some(&nonce),
            context,
            plaintext,
            &mut tag,
        )?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len() + TAG_LEN);
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// An HMAC-SHA256 tag of `message` under a key derived from the data key for `purpose`, so tags of one
    /// purpose (e.g. capability URLs) never verify as another's and the data key itself never signs.
    pub fn mac(&self, purpose: &[u8], message: &[u8]) -> Result<[u8; 32], PkiError> {
        let derived = hmac_sha256(self.0.expose(), &[b"orchard mac v1\0", purpose])?;
        hmac_sha256(&derived, &[message])
    }

    /// Whether `tag` is [`mac`](Self::mac) of `message` for `purpose`, compared in constant time.
    pub fn verify_mac(&self, purpose: &[u8], message: &[u8], tag: &[u8]) -> bool {
        self.mac(purpose, message).is_ok_and(|expected| {
            tag.len() == expected.len() && openssl::memcmp::eq(&expected, tag)
        })
    }

    /// Opens what [`seal`](Self::seal) made with the same key and context.
    pub fn open(&self, sealed: &[u8], context: &[u8]) -> Result<Secret<Vec<u8>>, PkiError> {
        let bad = || PkiError::BadSignature("sealed value does not open with this data key".into());
        let (&version, rest) = sealed.split_first().ok_or_else(bad)?;
        if version != VERSION || rest.len() < NONCE_LEN + TAG_LEN {
            return Err(bad());
        }
        let (nonce, rest) = rest.split_at(NONCE_LEN);
        let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
        decrypt_aead(
            Cipher::aes_256_gcm(),
            self.0.expose(),
            Some(nonce),
            context,
            ct,
            tag,
        )
        .map(Secret::new)
        .map_err(|_| bad())
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(***)")
    }
}

/// HMAC-SHA256 of `message` under `key` (webhook signatures: the key is the endpoint's secret).
pub fn hmac_sha256_of(key: &[u8], message: &[u8]) -> Result<[u8; 32], PkiError> {
    hmac_sha256(key, &[message])
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Result<[u8; 32], PkiError> {
    let key = openssl::pkey::PKey::hmac(key)?;
    let mut signer = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &key)?;
    for part in parts {
        signer.update(part)?;
    }
    let mut out = [0u8; 32];
    signer.sign(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trips_and_binds_context() {
        let k = DataKey::generate().unwrap();
        let sealed = k.seal(b"private key", b"push_certificates:1").unwrap();
        assert_eq!(
            k.open(&sealed, b"push_certificates:1").unwrap().expose(),
            b"private key"
        );
        assert!(k.open(&sealed, b"push_certificates:2").is_err());
        let other = DataKey::generate().unwrap();
        assert!(other.open(&sealed, b"push_certificates:1").is_err());
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(k.open(&tampered, b"push_certificates:1").is_err());
        assert!(k.open(&[], b"").is_err());
        assert!(k.open(&[1, 2, 3], b"").is_err());
        assert_eq!(format!("{k:?}"), "DataKey(***)");
    }

    #[test]
    fn macs_verify_only_for_their_key_purpose_and_message() {
        let k = DataKey::generate().unwrap();
        let tag = k.mac(b"profile-url", b"device|profile|1").unwrap();
        assert_eq!(tag, k.mac(b"profile-url", b"device|profile|1").unwrap());
        assert!(k.verify_mac(b"profile-url", b"device|profile|1", &tag));
        assert!(!k.verify_mac(b"profile-url", b"device|profile|2", &tag));
        assert!(!k.verify_mac(b"other-purpose", b"device|profile|1", &tag));
        assert!(!k.verify_mac(b"profile-url", b"device|profile|1", &tag[..31]));
        assert!(!k.verify_mac(b"profile-url", b"device|profile|1", &[]));
        let other = DataKey::generate().unwrap();
        assert!(!other.verify_mac(b"profile-url", b"device|profile|1", &tag));
    }
}
