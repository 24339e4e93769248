//! Cookies of the browser sign-in: finding one in a request, and setting one the safe way.

use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "orchard_session";

/// The value of cookie `name` in the request, if any.
pub(crate) fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// A `Set-Cookie` value: always Secure (Orchard only speaks https), HttpOnly and SameSite=Lax, so the cookie
/// travels on the provider's top-level redirect back to us but not on another site's requests.
pub(crate) fn set_cookie(
    name: &str,
    value: &str,
    path: &str,
    max_age_seconds: i64,
) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; Max-Age={}; Secure; HttpOnly; SameSite=Lax",
        max_age_seconds.max(0)
    ))
    .ok()
}

pub(crate) fn with_cookies(
    mut response: Response,
    cookies: impl IntoIterator<Item = Option<HeaderValue>>,
) -> Response {
    for c in cookies.into_iter().flatten() {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; orchard_session_x=2; orchard_session=abc"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("orchard_login=s"));
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "orchard_login"), Some("s"));
        assert_eq!(cookie(&h, "missing"), None);
    }

    #[test]
    fn session_cookies_are_secure_httponly_lax() {
        let v = set_cookie(SESSION_COOKIE, "abc", "/", 3600)
            .map(|v| v.to_str().unwrap_or("").to_string());
        assert_eq!(
            v.as_deref(),
            Some("orchard_session=abc; Path=/; Max-Age=3600; Secure; HttpOnly; SameSite=Lax")
        );
    }
}
