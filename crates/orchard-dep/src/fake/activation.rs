//! A local stand-in for Apple's device activation service (feature `fake`): HTTPS on 127.0.0.1 with its own
//! test root, and — like Apple — a TLS handshake that REQUIRES a client certificate chained to a given CA (the
//! stand-in for Apple's push CA, so the client must present its MDM push certificate). It serves
//! `POST /deviceservicesworkflow/deviceActivation`, records each request's form fields and the client
//! certificate, and answers 200, or an injected failure.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use hyper_util::rt::{TokioExecutor, TokioIo};
use openssl::x509::X509;
use orchard_pki::CertificateAuthority;
use orchard_types::{Clock, SystemClock};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower::ServiceExt;

use crate::activation_service::{name_to_string, ActivationServiceConfig, ActivationServiceError};

/// The path of Apple's endpoint, served here too.
pub const DEVICE_ACTIVATION_PATH: &str = "/deviceservicesworkflow/deviceActivation";
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BODY_BYTES: usize = 64 * 1024;

/// One request the server received (whatever it answered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivationRequestRecord {
    /// The decoded form fields (the last value wins when a name repeats).
    pub fields: BTreeMap<String, String>,
    /// The `Content-Type` the client sent.
    pub content_type: Option<String>,
    /// The TLS client certificate (DER) and its subject.
    pub client_certificate_der: Vec<u8>,
    pub client_subject: String,
    /// The status answered.
    pub status: u16,
}

/// An answer other than 200, injected for the next requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectedFailure {
    pub status: u16,
    pub body: String,
}

#[derive(Default)]
struct FakeState {
    requests: Vec<ActivationRequestRecord>,
    failures: VecDeque<InjectedFailure>,
}

struct Shared {
    state: Mutex<FakeState>,
    tls_failures: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The client certificate of the connection a request came on.
#[derive(Clone)]
struct PeerCertificate(Vec<u8>);

/// A running fake activation service. Dropping it stops the server.
pub struct FakeActivationServer {
    shared: Arc<Shared>,
    url: String,
    root_der: Vec<u8>,
    root_pem: Vec<u8>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for FakeActivationServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeActivationServer")
            .field("url", &self.url)
            .finish()
    }
}

fn config_error(what: &str, e: impl std::fmt::Display) -> ActivationServiceError {
    ActivationServiceError::Config(format!("fake activation service {what}: {e}"))
}

impl FakeActivationServer {
    /// Binds 127.0.0.1 on a free port. Only clients whose certificate chains to a certificate in
    /// `client_ca_pem` complete the TLS handshake.
    pub async fn start(client_ca_pem: &[u8]) -> Result<Self, ActivationServiceError> {
        let mut client_roots = RootCertStore::empty();
        let cas = X509::stack_from_pem(client_ca_pem).map_err(|e| config_error("client ca", e))?;
        if cas.is_empty() {
            return Err(config_error("client ca", "no certificate in the pem"));
        }
        for ca in &cas {
            let der = ca.to_der().map_err(|e| config_error("client ca", e))?;
            client_roots
                .add(CertificateDer::from(der))
                .map_err(|e| config_error("client ca", e))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(client_roots), provider.clone())
                .build()
                .map_err(|e| config_error("client certificate verifier", e))?;

        // rustls checks certificate validity against the wall clock.
        let now = SystemClock.now();
        let root = CertificateAuthority::generate("Orchard Fake Activation Root", now, 30)
            .map_err(|e| config_error("root", e))?;
        let identity = root
            .issue_tls_server(
                &["localhost".to_owned()],
                &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
                now,
                30,
            )
            .map_err(|e| config_error("server certificate", e))?;
        let key_der = identity
            .private_key()
            .private_key_to_pkcs8()
            .map_err(|e| config_error("server key", e))?;
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| config_error("tls versions", e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![CertificateDer::from(identity.cert_der())],
                PrivateKeyDer::Pkcs8(key_der.into()),
            )
            .map_err(|e| config_error("tls identity", e))?;
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];

        let listener = TcpListener::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0))
            .await
            .map_err(|e| config_error("bind", e))?;
        let address = listener
            .local_addr()
            .map_err(|e| config_error("address", e))?;
        let shared = Arc::new(Shared {
            state: Mutex::new(FakeState::default()),
            tls_failures: AtomicU64::new(0),
        });
        let app = Router::new()
            .route(DEVICE_ACTIVATION_PATH, post(device_activation))
            .with_state(shared.clone());
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let task = tokio::spawn(serve(listener, tls, app, shared.clone(), shutdown_rx));
        Ok(Self {
            shared,
            url: format!("https://{address}{DEVICE_ACTIVATION_PATH}"),
            root_der: root.cert_der(),
            root_pem: root.cert_pem(),
            shutdown: Some(shutdown_tx),
            task: Some(task),
        })
    }

    /// The endpoint URL (`https://127.0.0.1:<port>/deviceservicesworkflow/deviceActivation`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The test root that issued the server's TLS certificate.
    pub fn root_certificate_der(&self) -> Vec<u8> {
        self.root_der.clone()
    }

    pub fn root_certificate_pem(&self) -> Vec<u8> {
        self.root_pem.clone()
    }

    /// A client configuration pointing at this server and trusting its root.
    pub fn client_config(&self) -> ActivationServiceConfig {
        ActivationServiceConfig {
            url: self.url.clone(),
            root_certificates_der: vec![self.root_der.clone()],
            ..ActivationServiceConfig::default()
        }
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<ActivationRequestRecord> {
        self.shared.lock().requests.clone()
    }

    /// Answers the next `times` well-formed requests with `status` and `body` instead of 200.
    pub fn inject_failure(&self, status: u16, body: &str, times: u32) {
        let mut state = self.shared.lock();
        for _ in 0..times {
            state.failures.push_back(InjectedFailure {
                status,
                body: body.to_owned(),
            });
        }
    }

    /// TLS handshakes that failed (e.g. no client certificate, or one from another CA).
    pub fn tls_failures(&self) -> u64 {
        self.shared.tls_failures.load(Ordering::Relaxed)
    }
}

impl Drop for FakeActivationServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn serve(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    app: Router,
    shared: Arc<Shared>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    loop {
        let tcp = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // E.g. out of file descriptors: wait instead of spinning.
                    tracing::warn!(error = %e, "fake activation service: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
                .await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "fake activation service: tls handshake refused");
                    shared.tls_failures.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(_) => {
                    shared.tls_failures.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            // The verifier demanded a certificate, so there is one; an empty one still gets recorded.
            let peer = PeerCertificate(
                stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|certs| certs.first())
                    .map(|c| c.as_ref().to_vec())
                    .unwrap_or_default(),
            );
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let mut req = req.map(Body::new);
                    req.extensions_mut().insert(peer.clone());
                    app.clone().oneshot(req)
                });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn device_activation(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<PeerCertificate>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let client_subject = X509::from_der(&peer.0)
        .map(|c| name_to_string(c.subject_name()))
        .unwrap_or_default();
    let parsed = if body.len() > MAX_BODY_BYTES {
        Err("body too large".to_owned())
    } else if !content_type
        .as_deref()
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"))
    {
        Err("content type must be application/x-www-form-urlencoded".to_owned())
    } else {
        parse_form(&body)
    };
    let mut state = shared.lock();
    let (status, answer, fields) = match parsed {
        Err(reason) => (StatusCode::BAD_REQUEST, reason, BTreeMap::new()),
        Ok(fields) => {
            let missing = ["serial", "productType", "escrowKey"]
                .into_iter()
                .find(|name| fields.get(*name).is_none_or(|v| v.trim().is_empty()));
            match (missing, state.failures.pop_front()) {
                (Some(name), _) => (StatusCode::BAD_REQUEST, format!("missing {name}"), fields),
                (None, Some(failure)) => (
                    StatusCode::from_u16(failure.status)
                        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    failure.body,
                    fields,
                ),
                (None, None) => (StatusCode::OK, String::new(), fields),
            }
        }
    };
    state.requests.push(ActivationRequestRecord {
        fields,
        content_type,
        client_certificate_der: peer.0,
        client_subject,
        status: status.as_u16(),
    });
    (status, [(CONTENT_TYPE, "text/plain")], answer).into_response()
}

/// Decodes `application/x-www-form-urlencoded`: `&`-separated `name=value` pairs, `+` for space, `%XX`
/// escapes, UTF-8 text. A broken escape or invalid UTF-8 is an error, not a guess.
pub fn parse_form(body: &[u8]) -> Result<BTreeMap<String, String>, String> {
    let mut fields = BTreeMap::new();
    for pair in body.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        let mut parts = pair.splitn(2, |b| *b == b'=');
        let name = decode_component(parts.next().unwrap_or_default())?;
        let value = decode_component(parts.next().unwrap_or_default())?;
        fields.insert(name, value);
    }
    Ok(fields)
}

fn decode_component(raw: &[u8]) -> Result<String, String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = raw
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| "broken percent escape in form".to_owned())?;
                out.push(hex);
                i += 2;
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| "form field is not utf-8".to_owned())
}

#[cfg(test)]
mod tests {
    use openssl::asn1::Asn1Time;
    use openssl::bn::{BigNum, MsbOption};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use openssl::x509::extension::{BasicConstraints, ExtendedKeyUsage, KeyUsage};
    use openssl::x509::{X509Builder, X509Name};
    use orchard_types::Secret;

    use super::*;
    use crate::activation_service::{
        ActivationAnswer, ActivationServiceClient, ClientIdentity, UnlockRequest,
    };

    /// A client certificate as Apple's push CA would issue it: subject UID = topic, clientAuth.
    fn client_identity(ca: &CertificateAuthority, topic: &str) -> ClientIdentity {
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let mut name = X509Name::builder().unwrap();
        name.append_entry_by_nid(Nid::USERID, topic).unwrap();
        name.append_entry_by_nid(Nid::COMMONNAME, &format!("APSP:{topic}"))
            .unwrap();
        let name = name.build();
        let mut b = X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        let mut serial = BigNum::new().unwrap();
        serial.rand(128, MsbOption::ONE, false).unwrap();
        b.set_serial_number(&serial.to_asn1_integer().unwrap())
            .unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(ca.identity().x509().subject_name())
            .unwrap();
        b.set_pubkey(&key).unwrap();
        let now = SystemClock.now().0;
        b.set_not_before(&Asn1Time::from_unix(now - 60).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::from_unix(now + 86_400).unwrap())
            .unwrap();
        b.append_extension(BasicConstraints::new().critical().build().unwrap())
            .unwrap();
        b.append_extension(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .key_encipherment()
                .build()
                .unwrap(),
        )
        .unwrap();
        b.append_extension(ExtendedKeyUsage::new().client_auth().build().unwrap())
            .unwrap();
        b.sign(ca.identity().private_key(), MessageDigest::sha256())
            .unwrap();
        let cert = b.build();
        ClientIdentity::from_pem(
            &cert.to_pem().unwrap(),
            &key.private_key_to_pem_pkcs8().unwrap(),
        )
        .unwrap()
    }

    /// The server counts a refused handshake after sending its alert, so the client may see the failure
    /// first: wait for the count instead of racing it.
    async fn tls_failure_seen(server: &FakeActivationServer) {
        for _ in 0..1000 {
            if server.tls_failures() > 0 {
                assert_eq!(server.tls_failures(), 1);
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the server never counted the refused handshake");
    }

    fn push_ca() -> CertificateAuthority {
        CertificateAuthority::generate("Test Apple Push CA", SystemClock.now(), 1).unwrap()
    }

    fn request(code: &str) -> UnlockRequest {
        UnlockRequest {
            serial: "F9FXK0AAQ1GC".into(),
            imei: Some("356938035643809".into()),
            meid: None,
            product_type: "iPad13,18".into(),
            escrow_key: Secret::new(code.into()),
            org_name: "Example University & Co".into(),
            guid: "5A0C6F1E-0000-4000-8000-000000000001".into(),
        }
    }

    #[tokio::test]
    async fn clears_over_mutual_tls_and_records_the_form_and_certificate() {
        let ca = push_ca();
        let server = FakeActivationServer::start(&ca.cert_pem()).await.unwrap();
        let identity = client_identity(&ca, "com.apple.mgmt.External.test-1");
        let client = ActivationServiceClient::new(&server.client_config(), &identity).unwrap();

        let code = "3UM43-PUYVY-QYD1-UVCC-HEHJ-FKA4";
        let answer = client.clear_activation_lock(&request(code)).await.unwrap();
        assert_eq!(answer, ActivationAnswer::Cleared);

        let requests = server.requests();
        assert_eq!(requests.len(), 1);
        let r = &requests[0];
        assert_eq!(r.status, 200);
        assert_eq!(
            r.content_type.as_deref(),
            Some("application/x-www-form-urlencoded")
        );
        let expected: BTreeMap<String, String> = [
            ("serial", "F9FXK0AAQ1GC"),
            ("imei", "356938035643809"),
            ("productType", "iPad13,18"),
            ("escrowKey", code),
            ("orgName", "Example University & Co"),
            ("guid", "5A0C6F1E-0000-4000-8000-000000000001"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(r.fields, expected);
        assert_eq!(r.client_certificate_der, identity.certificate_der());
        assert_eq!(r.client_subject, identity.subject());
        assert!(r
            .client_subject
            .contains("UID=com.apple.mgmt.External.test-1"));
    }

    #[tokio::test]
    async fn injected_failures_are_answered_in_order_then_success() {
        let ca = push_ca();
        let server = FakeActivationServer::start(&ca.cert_pem()).await.unwrap();
        let client = ActivationServiceClient::new(
            &server.client_config(),
            &client_identity(&ca, "com.apple.mgmt.External.test-2"),
        )
        .unwrap();
        server.inject_failure(400, "Invalid escrow key", 1);
        server.inject_failure(503, "", 1);
        let r = request("AAAAA-AAAAA-AAAA-AAAA-AAAA-AAAA");
        assert_eq!(
            client.clear_activation_lock(&r).await.unwrap(),
            ActivationAnswer::Refused {
                status: 400,
                reason: "Invalid escrow key".into()
            }
        );
        assert_eq!(
            client.clear_activation_lock(&r).await.unwrap(),
            ActivationAnswer::Unavailable {
                status: 503,
                reason: "Service Unavailable".into()
            }
        );
        assert!(client.clear_activation_lock(&r).await.unwrap().is_cleared());
        let statuses: Vec<u16> = server.requests().iter().map(|r| r.status).collect();
        assert_eq!(statuses, [400, 503, 200]);
    }

    #[tokio::test]
    async fn a_certificate_from_another_ca_gets_no_answer() {
        let ca = push_ca();
        let server = FakeActivationServer::start(&ca.cert_pem()).await.unwrap();
        let stranger = client_identity(&push_ca(), "com.apple.mgmt.External.stranger");
        let client = ActivationServiceClient::new(&server.client_config(), &stranger).unwrap();
        let e = client
            .clear_activation_lock(&request("AAAAA-AAAAA-AAAA-AAAA-AAAA-AAAA"))
            .await
            .unwrap_err();
        assert!(matches!(e, ActivationServiceError::Transport(_)), "{e}");
        assert!(server.requests().is_empty());
        tls_failure_seen(&server).await;
    }

    #[tokio::test]
    async fn a_client_without_certificate_is_refused() {
        let ca = push_ca();
        let server = FakeActivationServer::start(&ca.cert_pem()).await.unwrap();
        let plain = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_der(&server.root_certificate_der()).unwrap(),
            )
            .build()
            .unwrap();
        let sent = plain
            .post(server.url())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body("serial=X&productType=iPad13,18&escrowKey=K")
            .send()
            .await;
        assert!(sent.is_err(), "answered without a client certificate");
        assert!(server.requests().is_empty());
        tls_failure_seen(&server).await;
    }

    #[tokio::test]
    async fn the_client_checks_the_servers_certificate() {
        let ca = push_ca();
        let server = FakeActivationServer::start(&ca.cert_pem()).await.unwrap();
        let mut config = server.client_config();
        // Another root than the one that issued the server's certificate.
        config.root_certificates_der = vec![push_ca().cert_der()];
        let client = ActivationServiceClient::new(
            &config,
            &client_identity(&ca, "com.apple.mgmt.External.test-3"),
        )
        .unwrap();
        let e = client
            .clear_activation_lock(&request("AAAAA-AAAAA-AAAA-AAAA-AAAA-AAAA"))
            .await
            .unwrap_err();
        assert!(matches!(e, ActivationServiceError::Transport(_)), "{e}");
        assert!(server.requests().is_empty());
    }

    #[tokio::test]
    async fn requests_missing_fields_are_refused_and_recorded() {
        let ca = push_ca();
        let server = FakeActivationServer::start(&ca.cert_pem()).await.unwrap();
        let identity = client_identity(&ca, "com.apple.mgmt.External.test-4");
        // A hand-made request, since the client itself never sends an empty escrowKey.
        let mut bundle = Vec::new();
        bundle.extend(identity.bundle_pem.expose());
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .identity(reqwest::Identity::from_pem(&bundle).unwrap())
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_der(&server.root_certificate_der()).unwrap(),
            )
            .build()
            .unwrap();
        let answer = http
            .post(server.url())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body("serial=X&productType=iPad13%2C18&escrowKey=")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 400);
        assert_eq!(answer.text().await.unwrap(), "missing escrowKey");
        let answer = http
            .post(server.url())
            .header(CONTENT_TYPE, "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 400);
        let records = server.requests();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].fields["productType"], "iPad13,18");
        assert!(records[1].fields.is_empty());
    }

    #[test]
    fn forms_decode_like_browsers_encode_them() {
        let form = parse_form(b"a=1&b=x+y&c=%26%3D%2B&d=&e&=z&f=%C3%A9").unwrap();
        assert_eq!(form["a"], "1");
        assert_eq!(form["b"], "x y");
        assert_eq!(form["c"], "&=+");
        assert_eq!(form["d"], "");
        assert_eq!(form["e"], "");
        assert_eq!(form[""], "z");
        assert_eq!(form["f"], "é");
        assert!(parse_form(b"a=%2").is_err());
        assert!(parse_form(b"a=%zz").is_err());
        assert!(parse_form(b"a=%FF").is_err());
        assert!(parse_form(b"").unwrap().is_empty());
    }
}
