//! The APNs device token of one channel, kept as the lowercase hex that goes into the request path.

use std::fmt;

use bytes::Bytes;
use http::uri::PathAndQuery;

use crate::ApnsError;

/// The request path is this prefix followed by the token in hex.
const PATH_PREFIX: &str = "/3/device/";

/// Apple documents device tokens as opaque and "up to 100 bytes" (they are 32 bytes today).
const MAX_TOKEN_BYTES: usize = 100;

/// A device (or Shared iPad user channel) push token from TokenUpdate.
///
/// Stored as the request path `/3/device/<lowercase hex>`, the form every push needs: built once at
/// construction, each push shares it instead of formatting and allocating a path.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceToken {
    /// `/3/device/<hex>`, ASCII only.
    path: Bytes,
}

impl DeviceToken {
    /// From the raw `Token` bytes of a TokenUpdate.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ApnsError> {
        check_len(bytes.len())?;
        Ok(Self::with_hex(&hex::encode(bytes)))
    }

    /// From hex (either case), e.g. read back from storage or from a request path.
    pub fn from_hex(hex_token: &str) -> Result<Self, ApnsError> {
        let whole_bytes = hex_token.as_bytes().chunks_exact(2).remainder().is_empty();
        if !whole_bytes || !hex_token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ApnsError::InvalidDeviceToken(
                "a device token must be an even number of hex digits".into(),
            ));
        }
        check_len(hex_token.len() / 2)?;
        Ok(Self::with_hex(&hex_token.to_ascii_lowercase()))
    }

    fn with_hex(lowercase_hex: &str) -> Self {
        let mut path = String::with_capacity(PATH_PREFIX.len() + lowercase_hex.len());
        path.push_str(PATH_PREFIX);
        path.push_str(lowercase_hex);
        Self {
            path: Bytes::from(path),
        }
    }

    /// Lowercase hex, as used in the request path.
    pub fn as_hex(&self) -> &str {
        // The path was built from a prefix and hex digits, so it is ASCII and the slice is in bounds.
        std::str::from_utf8(&self.path)
            .ok()
            .and_then(|path| path.get(PATH_PREFIX.len()..))
            .unwrap_or_default()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        // The hex was validated at construction, so decoding cannot fail.
        hex::decode(self.as_hex()).unwrap_or_default()
    }

    /// `/3/device/<hex>`, sharing the token's buffer.
    pub(crate) fn request_path(&self) -> Result<PathAndQuery, ApnsError> {
        PathAndQuery::from_maybe_shared(self.path.clone())
            .map_err(|e| ApnsError::InvalidDeviceToken(e.to_string()))
    }
}

fn check_len(len: usize) -> Result<(), ApnsError> {
    if len == 0 {
        return Err(ApnsError::InvalidDeviceToken(
            "a device token must not be empty".into(),
        ));
    }
    if len > MAX_TOKEN_BYTES {
        return Err(ApnsError::InvalidDeviceToken(format!(
            "a device token has at most {MAX_TOKEN_BYTES} bytes, this one has {len}"
        )));
    }
    Ok(())
}

impl fmt::Debug for DeviceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceToken({})", self.as_hex())
    }
}

impl fmt::Display for DeviceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_hex())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_limits() {
        let token = DeviceToken::from_bytes(&[0xAB; 32]).unwrap();
        assert_eq!(token.as_hex(), "ab".repeat(32));
        assert_eq!(token.to_bytes(), vec![0xAB; 32]);
        assert_eq!(DeviceToken::from_hex(&"AB".repeat(32)).unwrap(), token);
        assert!(DeviceToken::from_bytes(&[]).is_err());
        assert!(DeviceToken::from_bytes(&[1; 101]).is_err());
        assert!(DeviceToken::from_hex("abc").is_err());
        assert!(DeviceToken::from_hex("zz").is_err());
        assert!(DeviceToken::from_hex("").is_err());
        assert_eq!(
            token.request_path().unwrap().as_str(),
            format!("/3/device/{}", "ab".repeat(32))
        );
    }
}
