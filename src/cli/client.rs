//! The HTTPS client of the admin API: builds URLs (ids are path-encoded, never spliced into the path), sends
//! the bearer token, and turns the API's error body into a [`CliError::Api`].

use std::path::Path;
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

use super::CliError;

/// Where the server is and who we are: from `--server`/`--token`/`--ca` or the environment.
pub struct Connection<'a> {
    pub server: Option<&'a str>,
    pub token: Option<&'a str>,
    pub ca: Option<&'a Path>,
}

pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: String,
}

/// A successful answer: its status and body (JSON, text, or nothing).
pub struct Answer {
    pub status: StatusCode,
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON; an empty body (204) is `null`.
    pub fn json(&self) -> Result<Value, CliError> {
        if self.body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&self.body).map_err(|e| {
            CliError::Local(format!(
                "the server answered {} with a body that is not JSON: {e}",
                self.status
            ))
        })
    }
}

/// A whole run may sync thousands of DEP devices or export a long audit log; connecting must be quick.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);

impl Client {
    pub fn new(conn: &Connection<'_>) -> Result<Self, CliError> {
        let server = conn
            .server
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| {
                CliError::Usage(
                    "no server: give --server https://host:port or set ORCHARD_SERVER".into(),
                )
            })?;
        let token = conn
            .token
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                CliError::Usage("no API token: give --token or set ORCHARD_TOKEN".into())
            })?;
        let base = parse_server(server)?;

        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .https_only(true)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("orchard-cli/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = conn.ca {
            let pem = std::fs::read(ca)
                .map_err(|e| CliError::Local(format!("reading --ca {}: {e}", ca.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| CliError::Local(format!("--ca {}: {e}", ca.display())))?;
            if certs.is_empty() {
                return Err(CliError::Local(format!(
                    "--ca {}: no PEM certificate in the file",
                    ca.display()
                )));
            }
            // A private CA replaces the public roots: the server must chain to exactly what was given.
            builder = builder.tls_built_in_root_certs(false);
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| CliError::Local(format!("setting up the HTTPS client: {}", chain(&e))))?;
        Ok(Self {
            http,
            base,
            token: token.to_string(),
        })
    }

    /// `/api/v1/<segments…>?<query>`; each segment is percent-encoded, so an id can never change the path.
    pub fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(["api", "v1"]).extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        url
    }

    pub async fn send(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Answer, CliError> {
        let url = self.url(segments, query);
        let mut request = self
            .http
            .request(method.clone(), url.clone())
            .bearer_auth(&self.token);
        if let Some(b) = body {
            request = request.json(b);
        }
        self.finish(method, url, request).await
    }

    /// POSTs a file's bytes as they are (a .mobileconfig) with their content type.
    pub async fn upload(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<Value, CliError> {
        let url = self.url(segments, query);
        let request = self
            .http
            .post(url.clone())
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(bytes);
        self.finish(Method::POST, url, request).await?.json()
    }

    async fn finish(
        &self,
        method: Method,
        url: Url,
        request: reqwest::RequestBuilder,
    ) -> Result<Answer, CliError> {
        let response = request.send().await.map_err(|e| transport(&e, &url))?;
        let status = response.status();
        let header_request_id = response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| transport(&e, &url))?
            .to_vec();
        if status.is_success() {
            return Ok(Answer {
                status,
                body: bytes,
            });
        }
        Err(api_error(status, &bytes, header_request_id, &method, &url))
    }

    pub async fn get(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<Value, CliError> {
        self.send(Method::GET, segments, query, None).await?.json()
    }

    pub async fn post(&self, segments: &[&str], body: &Value) -> Result<Value, CliError> {
        self.send(Method::POST, segments, &[], Some(body))
            .await?
            .json()
    }

    pub async fn put(&self, segments: &[&str], body: &Value) -> Result<Value, CliError> {
        self.send(Method::PUT, segments, &[], Some(body))
            .await?
            .json()
    }
}

/// The server's origin (and a path prefix, behind a reverse proxy). Only https: the token must not cross the
/// network in clear.
fn parse_server(server: &str) -> Result<Url, CliError> {
    let url = Url::parse(server.trim())
        .map_err(|e| CliError::Usage(format!("--server {server:?} is not a URL: {e}")))?;
    if url.scheme() != "https" {
        return Err(CliError::Usage(format!(
            "--server {server:?} must be an https:// URL (the API token must not travel in clear)"
        )));
    }
    if url.host_str().is_none() || url.query().is_some() || url.fragment().is_some() {
        return Err(CliError::Usage(format!(
            "--server {server:?} must be https://host[:port][/prefix]"
        )));
    }
    Ok(url)
}

/// A failed API answer. The error body names the code, message and request id; anything else (a proxy's
/// page, a route the server does not have) still gives the status and the request id from the header.
fn api_error(
    status: StatusCode,
    body: &[u8],
    header_request_id: String,
    method: &Method,
    url: &Url,
) -> CliError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error = parsed
        .as_ref()
        .and_then(|v| v.get("error"))
        .filter(|e| e.is_object());
    let field = |name: &str| {
        error
            .and_then(|e| e.get(name))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let code = field("code").unwrap_or_else(|| format!("http_{}", status.as_u16()));
    let message = field("message").unwrap_or_else(|| {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        if text.is_empty() {
            format!("{method} {} answered {status}", url.path())
        } else {
            text.chars().take(500).collect()
        }
    });
    let request_id = field("request_id").unwrap_or(header_request_id);
    CliError::Api {
        status: status.as_u16(),
        code,
        message,
        request_id,
        body: error.map(|_| parsed.clone().unwrap_or(Value::Null)),
    }
}

fn transport(e: &reqwest::Error, url: &Url) -> CliError {
    let origin = url.origin().ascii_serialization();
    let mut message = format!("{origin}: {}", chain(e));
    if message.contains("certificate") || message.contains("UnknownIssuer") {
        message.push_str(
            " (is the server's CA trusted? give --ca with its PEM, e.g. the data directory's ca.pem)",
        );
    }
    CliError::Local(message)
}

/// An error with its causes: reqwest's own message alone hides the TLS or connection reason.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(server: &str) -> Client {
        Client::new(&Connection {
            server: Some(server),
            token: Some("orc_x"),
            ca: None,
        })
        .unwrap()
    }

    #[test]
    fn ids_are_path_segments_not_paths() {
        let c = client("https://mdm.example.edu:8443/");
        let url = c.url(&["devices", "../tenants?x=1", "commands"], &[]);
        assert_eq!(
            url.as_str(),
            "https://mdm.example.edu:8443/api/v1/devices/..%2Ftenants%3Fx=1/commands"
        );
    }

    #[test]
    fn a_prefix_is_kept_and_queries_are_encoded() {
        let c = client("https://proxy.example.edu/orchard");
        let url = c.url(
            &["audit"],
            &[("action", "device.*".into()), ("actor", "a b&c".into())],
        );
        assert_eq!(
            url.as_str(),
            "https://proxy.example.edu/orchard/api/v1/audit?action=device.*&actor=a+b%26c"
        );
    }

    #[test]
    fn only_https_servers_and_a_token_are_accepted() {
        let err = |server: Option<&str>, token: Option<&str>| {
            Client::new(&Connection {
                server,
                token,
                ca: None,
            })
            .err()
            .unwrap()
            .to_string()
        };
        assert!(err(Some("http://mdm.example.edu"), Some("t")).contains("https://"));
        assert!(err(None, Some("t")).contains("ORCHARD_SERVER"));
        assert!(err(Some("https://mdm.example.edu"), Some("  ")).contains("ORCHARD_TOKEN"));
        assert!(err(Some("not a url"), Some("t")).contains("not a URL"));
    }

    #[test]
    fn error_bodies_and_bare_statuses_both_give_code_and_request_id() {
        let url = Url::parse("https://h/api/v1/devices/x").unwrap();
        let body = br#"{"error":{"code":"not_found","message":"not found","request_id":"rid-1"}}"#;
        match api_error(
            StatusCode::NOT_FOUND,
            body,
            "hdr".into(),
            &Method::GET,
            &url,
        ) {
            CliError::Api {
                code, request_id, ..
            } => {
                assert_eq!(code, "not_found");
                assert_eq!(request_id, "rid-1");
            }
            other => panic!("{other}"),
        }
        match api_error(
            StatusCode::METHOD_NOT_ALLOWED,
            b"",
            "hdr-2".into(),
            &Method::DELETE,
            &url,
        ) {
            CliError::Api {
                code,
                request_id,
                message,
                ..
            } => {
                assert_eq!(code, "http_405");
                assert_eq!(request_id, "hdr-2");
                assert!(message.contains("DELETE /api/v1/devices/x"));
            }
            other => panic!("{other}"),
        }
    }
}
