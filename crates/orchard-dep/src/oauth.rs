//! OAuth 1.0a (RFC 5849) with HMAC-SHA1, as Apple's `GET /session` wants it: signing for the client and the
//! verifying half for the local DEP server. Hand-written (STACK.md: simpler than the oauth1 crates).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use reqwest::Url;
use sha1::Sha1;

/// Apple's realm for the Device Assignment service.
pub const REALM: &str = "ADM";

type HmacSha1 = Hmac<Sha1>;

/// The two credential pairs that sign a request (client = consumer, token = access token).
#[derive(Clone, Copy)]
pub struct Credentials<'a> {
    pub consumer_key: &'a str,
    pub consumer_secret: &'a str,
    pub token: &'a str,
    pub token_secret: &'a str,
}

/// RFC 5849 §3.6: every byte except the unreserved `ALPHA / DIGIT / - . _ ~` becomes `%XX` (uppercase hex).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Strict percent-decoding (a `+` stays a `+`, as in header values); `None` on a broken escape or non-UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// RFC 5849 §3.4.1.2: scheme and host lowercase, default ports dropped, no query or fragment.
pub fn base_string_uri(url: &Url) -> String {
    let scheme = url.scheme().to_ascii_lowercase();
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    // `Url::port` is already `None` for the scheme's default port.
    match url.port() {
        Some(port) => format!("{scheme}://{host}:{port}{}", url.path()),
        None => format!("{scheme}://{host}{}", url.path()),
    }
}

/// RFC 5849 §3.4.1.1: `METHOD&enc(base uri)&enc(normalized parameters)`. `params` are decoded name/value
/// pairs (query, protocol parameters without `oauth_signature` and `realm`, form body); they are encoded, sorted
/// by name then value, and joined here.
pub fn signature_base_string(method: &str, base_uri: &str, params: &[(String, String)]) -> String {
    let mut encoded: Vec<(String, String)> = params
        .iter()
        .map(|(name, value)| (percent_encode(name), percent_encode(value)))
        .collect();
    encoded.sort();
    let normalized = encoded
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("&");
    format!(
        "{}&{}&{}",
        method.to_ascii_uppercase(),
        percent_encode(base_uri),
        percent_encode(&normalized)
    )
}

/// RFC 5849 §3.4.2: base64(HMAC-SHA1(enc(consumer secret) & enc(token secret), base string)).
pub fn hmac_sha1_signature(base_string: &str, consumer_secret: &str, token_secret: &str) -> String {
    BASE64.encode(hmac_sha1_raw(base_string, consumer_secret, token_secret))
}

fn signing_key(consumer_secret: &str, token_secret: &str) -> String {
    format!(
        "{}&{}",
        percent_encode(consumer_secret),
        percent_encode(token_secret)
    )
}

fn hmac_sha1_raw(base_string: &str, consumer_secret: &str, token_secret: &str) -> Vec<u8> {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail; fall back to an empty tag regardless.
    match HmacSha1::new_from_slice(signing_key(consumer_secret, token_secret).as_bytes()) {
        Ok(mut mac) => {
            mac.update(base_string.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

/// The protocol parameters of one signed request, in the order the header lists them.
fn protocol_params(creds: &Credentials<'_>, timestamp: i64, nonce: &str) -> Vec<(String, String)> {
    vec![
        ("oauth_consumer_key".into(), creds.consumer_key.into()),
        ("oauth_token".into(), creds.token.into()),
        ("oauth_signature_method".into(), "HMAC-SHA1".into()),
        ("oauth_timestamp".into(), timestamp.to_string()),
        ("oauth_nonce".into(), nonce.into()),
        ("oauth_version".into(), "1.0".into()),
    ]
}

/// Query parameters of `url`, form-decoded (RFC 5849 §3.4.1.3.1).
fn query_params(url: &Url) -> Vec<(String, String)> {
    url.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The complete `Authorization` header value for `method url`, signed with `creds`.
pub fn authorization_header(
    method: &str,
    url: &Url,
    creds: &Credentials<'_>,
    timestamp: i64,
    nonce: &str,
) -> String {
    let protocol = protocol_params(creds, timestamp, nonce);
    let mut all = query_params(url);
    all.extend(protocol.iter().cloned());
    let base = signature_base_string(method, &base_string_uri(url), &all);
    let signature = hmac_sha1_signature(&base, creds.consumer_secret, creds.token_secret);
    let mut header = format!("OAuth realm=\"{REALM}\"");
    for (name, value) in protocol
        .iter()
        .chain(std::iter::once(&("oauth_signature".to_string(), signature)))
    {
        header.push_str(&format!(", {name}=\"{}\"", percent_encode(value)));
    }
    header
}

/// Parses `OAuth realm="…", name="value", …` into decoded pairs (realm included). `None` if it is not an OAuth
/// header or a value is not quoted and percent-encoded properly.
pub fn parse_authorization_header(value: &str) -> Option<Vec<(String, String)>> {
    let rest = value.trim().strip_prefix("OAuth")?;
    let mut pairs = Vec::new();
    for part in rest.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (name, quoted) = part.split_once('=')?;
        let inner = quoted.trim().strip_prefix('"')?.strip_suffix('"')?;
        pairs.push((percent_decode(name.trim())?, percent_decode(inner)?));
    }
    Some(pairs)
}

/// The OAuth parameters a server extracted from a verified request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedOAuth {
    pub consumer_key: String,
    pub token: String,
    pub timestamp: i64,
    pub nonce: String,
}

/// Why a server refused an OAuth-signed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OAuthRejection {
    Malformed(&'static str),
    UnknownCredentials,
    BadSignature,
}

/// Server side: checks the header is HMAC-SHA1, names `creds`' consumer key and token, and carries the right
/// signature over `method url`. Freshness (timestamp window, nonce reuse) is the caller's policy.
pub fn verify_authorization(
    method: &str,
    url: &Url,
    header: &str,
    creds: &Credentials<'_>,
) -> Result<VerifiedOAuth, OAuthRejection> {
    let pairs = parse_authorization_header(header).ok_or(OAuthRejection::Malformed("header"))?;
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let signature = get("oauth_signature").ok_or(OAuthRejection::Malformed("oauth_signature"))?;
    if get("oauth_signature_method") != Some("HMAC-SHA1") {
        return Err(OAuthRejection::Malformed("oauth_signature_method"));
    }
    let consumer_key =
        get("oauth_consumer_key").ok_or(OAuthRejection::Malformed("oauth_consumer_key"))?;
    let token = get("oauth_token").ok_or(OAuthRejection::Malformed("oauth_token"))?;
    let timestamp = get("oauth_timestamp")
        .and_then(|t| t.parse::<i64>().ok())
        .ok_or(OAuthRejection::Malformed("oauth_timestamp"))?;
    let nonce = get("oauth_nonce").ok_or(OAuthRejection::Malformed("oauth_nonce"))?;
    if consumer_key != creds.consumer_key || token != creds.token {
        return Err(OAuthRejection::UnknownCredentials);
    }
    let mut params = query_params(url);
    params.extend(
        pairs
            .iter()
            .filter(|(k, _)| k != "realm" && k != "oauth_signature")
            .cloned(),
    );
    let base = signature_base_string(method, &base_string_uri(url), &params);
    let claimed = BASE64
        .decode(signature)
        .map_err(|_| OAuthRejection::Malformed("oauth_signature"))?;
    let mut mac =
        HmacSha1::new_from_slice(signing_key(creds.consumer_secret, creds.token_secret).as_bytes())
            .map_err(|_| OAuthRejection::BadSignature)?;
    mac.update(base.as_bytes());
    // Constant-time comparison.
    mac.verify_slice(&claimed)
        .map_err(|_| OAuthRejection::BadSignature)?;
    Ok(VerifiedOAuth {
        consumer_key: consumer_key.to_owned(),
        token: token.to_owned(),
        timestamp,
        nonce: nonce.to_owned(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// RFC 5849 §3.4.1.1 / §3.4.1.3: the worked signature base string, from the fully decoded parameters.
    #[test]
    fn rfc5849_signature_base_string() {
        let params = pairs(&[
            ("b5", "=%3D"),
            ("a3", "a"),
            ("c@", ""),
            ("a2", "r b"),
            ("oauth_consumer_key", "9djdj82h48djs9d2"),
            ("oauth_token", "kkk9d7dh3k39sjv7"),
            ("oauth_signature_method", "HMAC-SHA1"),
            ("oauth_timestamp", "137131201"),
            ("oauth_nonce", "7d8f3e4a"),
            ("c2", ""),
            ("a3", "2 q"),
        ]);
        let url = Url::parse("http://EXAMPLE.COM:80/request?b5=%3D%253D").unwrap();
        let base = signature_base_string("post", &base_string_uri(&url), &params);
        assert_eq!(
            base,
            "POST&http%3A%2F%2Fexample.com%2Frequest&a2%3Dr%2520b%26a3%3D2%2520q\
             %26a3%3Da%26b5%3D%253D%25253D%26c%2540%3D%26c2%3D%26oauth_consumer_\
             key%3D9djdj82h48djs9d2%26oauth_nonce%3D7d8f3e4a%26oauth_signature_m\
             ethod%3DHMAC-SHA1%26oauth_timestamp%3D137131201%26oauth_token%3Dkkk\
             9d7dh3k39sjv7"
        );
    }

    /// RFC 5849 §3.4.1.2: the base string URI examples.
    #[test]
    fn rfc5849_base_string_uri() {
        let url = Url::parse("http://EXAMPLE.COM:80/r%20v/X?id=123").unwrap();
        assert_eq!(base_string_uri(&url), "http://example.com/r%20v/X");
        let url = Url::parse("https://www.example.net:8080/?q=1").unwrap();
        assert_eq!(base_string_uri(&url), "https://www.example.net:8080/");
    }

    /// RFC 5849 §1.2: Jane's photo request, signed with the example's client and token credentials.
    #[test]
    fn rfc5849_worked_example_signature() {
        let creds = Credentials {
            consumer_key: "dpf43f3p2l4k3l03",
            consumer_secret: "kd94hf93k423kf44",
            token: "nnch734d00sl2jdk",
            token_secret: "pfkkdhi9sl3r4s00",
        };
        let url =
            Url::parse("http://photos.example.net/photos?file=vacation.jpg&size=original").unwrap();
        let mut params = query_params(&url);
        params.extend(pairs(&[
            ("oauth_consumer_key", creds.consumer_key),
            ("oauth_token", creds.token),
            ("oauth_signature_method", "HMAC-SHA1"),
            ("oauth_timestamp", "137131202"),
            ("oauth_nonce", "chapoH"),
        ]));
        let base = signature_base_string("GET", &base_string_uri(&url), &params);
        assert_eq!(
            hmac_sha1_signature(&base, creds.consumer_secret, creds.token_secret),
            "MdpQcU8iPSUjWoN/UDMsK2sui9I="
        );
    }

    #[test]
    fn percent_encoding_follows_rfc5849() {
        assert_eq!(percent_encode("a b+c~d_e.f-g"), "a%20b%2Bc~d_e.f-g");
        assert_eq!(percent_encode("é"), "%C3%A9");
        assert_eq!(percent_decode("%C3%A9%2B+").as_deref(), Some("é++"));
        assert_eq!(percent_decode("%G1"), None);
        assert_eq!(percent_decode("%2"), None);
    }

    #[test]
    fn header_round_trips_through_verification() {
        let creds = Credentials {
            consumer_key: "CK_abc",
            consumer_secret: "CS_s3cr3t/+=",
            token: "AT_tok",
            token_secret: "AS_äöü",
        };
        let url = Url::parse("https://127.0.0.1:8443/session").unwrap();
        let header = authorization_header("GET", &url, &creds, 1_700_000_000, "n0nce");
        assert!(header.starts_with("OAuth realm=\"ADM\", oauth_consumer_key=\"CK_abc\""));
        assert!(header.contains("oauth_version=\"1.0\""));
        let verified = verify_authorization("GET", &url, &header, &creds).unwrap();
        assert_eq!(verified.timestamp, 1_700_000_000);
        assert_eq!(verified.nonce, "n0nce");

        let wrong_secret = Credentials {
            consumer_secret: "other",
            ..creds
        };
        assert_eq!(
            verify_authorization("GET", &url, &header, &wrong_secret),
            Err(OAuthRejection::BadSignature)
        );
        let other_path = Url::parse("https://127.0.0.1:8443/account").unwrap();
        assert_eq!(
            verify_authorization("GET", &other_path, &header, &creds),
            Err(OAuthRejection::BadSignature)
        );
        assert!(verify_authorization("GET", &url, "Bearer x", &creds).is_err());
    }
}
