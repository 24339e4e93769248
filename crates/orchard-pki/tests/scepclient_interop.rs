//! Interop with Debian's `scepclient` (micromdm/scep 2.1): a minimal HTTP/1.1 server inside the test answers
//! GetCACaps / GetCACert / PKIOperation with `orchard_pki::scep`, and the real client must obtain a certificate
//! signed by our CA. CI installs the package (`apt-get install -y scep`); without it the test fails, it does not
//! skip.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use openssl::x509::X509;
use orchard_pki::scep::{self, FailInfo, MessageType};
use orchard_pki::CertificateAuthority;
use orchard_types::UnixTime;

const SCEPCLIENT: &str = "scepclient";
const CHALLENGE: &str = "orchard-interop-challenge";
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// What the server saw, for assertions and for diagnosing a failed run.
#[derive(Default)]
struct ServerLog {
    lines: Vec<String>,
    requests: Vec<scep::PkiRequest>,
}

/// How GetCACert answers.
#[derive(Clone, Copy)]
enum CaCertFormat {
    /// One DER certificate, `application/x-x509-ca-cert` (what Orchard serves: the CA is also the RA).
    SingleDer,
    /// A degenerate certs-only PKCS#7, `application/x-x509-ca-ra-cert`.
    CertsOnly,
}

struct ScepTestServer {
    address: SocketAddr,
    log: Arc<Mutex<ServerLog>>,
}

impl ScepTestServer {
    fn start(ca: CertificateAuthority, format: CaCertFormat) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(ServerLog::default()));
        let ca = Arc::new(ca);
        let server_log = Arc::clone(&log);
        // The thread lives until the test process ends; each connection serves one request and closes.
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let ca = Arc::clone(&ca);
                let log = Arc::clone(&server_log);
                thread::spawn(move || {
                    if let Err(e) = serve_connection(stream, &ca, format, &log) {
                        log.lock()
                            .unwrap()
                            .lines
                            .push(format!("connection error: {e}"));
                    }
                });
            }
        });
        Self { address, log }
    }

    fn url(&self) -> String {
        format!("http://{}/scep", self.address)
    }

    fn dump(&self) -> String {
        self.log.lock().unwrap().lines.join("\n")
    }
}

struct HttpRequest {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn read_request(stream: &TcpStream) -> std::io::Result<HttpRequest> {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let length = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .and_then(|(_, value)| value.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(HttpRequest {
        method,
        target,
        headers,
        body,
    })
}

fn write_response(
    mut stream: &TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

fn query_parameter(target: &str, name: &str) -> Option<String> {
    let query = target.split_once('?')?.1;
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name).then(|| percent_decode(value))
    })
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        let escaped = bytes
            .get(i + 1..i + 3)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (byte, escaped) {
            (b'%', Some(decoded)) => {
                out.push(decoded);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (other, _) => {
                out.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn unix_now() -> UnixTime {
    UnixTime(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64,
    )
}

fn serve_connection(
    stream: TcpStream,
    ca: &CertificateAuthority,
    format: CaCertFormat,
    log: &Mutex<ServerLog>,
) -> std::io::Result<()> {
    let request = read_request(&stream)?;
    let operation = query_parameter(&request.target, "operation").unwrap_or_default();
    let content_type = request
        .headers
        .iter()
        .find(|(name, _)| name == "content-type")
        .map(|(_, value)| value.clone())
        .unwrap_or_default();
    log.lock().unwrap().lines.push(format!(
        "{} {} (content-type {content_type:?}, {} body bytes)",
        request.method,
        request.target.chars().take(80).collect::<String>(),
        request.body.len()
    ));
    match operation.as_str() {
        "GetCACaps" => write_response(&stream, "200 OK", "text/plain", scep::CA_CAPS.as_bytes()),
        "GetCACert" => match format {
            CaCertFormat::SingleDer => write_response(
                &stream,
                "200 OK",
                scep::CA_CERT_CONTENT_TYPE,
                &ca.cert_der(),
            ),
            CaCertFormat::CertsOnly => write_response(
                &stream,
                "200 OK",
                "application/x-x509-ca-ra-cert",
                &scep::certs_only_der(&[ca.identity().x509()]).unwrap(),
            ),
        },
        "PKIOperation" => {
            let message = if request.method == "POST" {
                request.body
            } else {
                let encoded = query_parameter(&request.target, "message").unwrap_or_default();
                BASE64.decode(encoded.trim()).unwrap_or_default()
            };
            match pki_operation(ca, &message, log) {
                Ok(reply) => {
                    write_response(&stream, "200 OK", scep::PKI_MESSAGE_CONTENT_TYPE, &reply)
                }
                Err(e) => {
                    log.lock()
                        .unwrap()
                        .lines
                        .push(format!("pki operation refused: {e}"));
                    write_response(&stream, "400 Bad Request", "text/plain", e.as_bytes())
                }
            }
        }
        _ => write_response(&stream, "404 Not Found", "text/plain", b"unknown operation"),
    }
}

/// What the real server does: decode, check the challenge, issue or fail.
fn pki_operation(
    ca: &CertificateAuthority,
    message: &[u8],
    log: &Mutex<ServerLog>,
) -> Result<Vec<u8>, String> {
    let request = scep::decode_pki_message(ca, message).map_err(|e| e.to_string())?;
    log.lock().unwrap().lines.push(format!(
        "decoded {:?} transaction {} cipher {:?} cn {:?} nonce {} bytes",
        request.message_type,
        request.transaction_id,
        request.content_cipher,
        request.subject_common_name,
        request.sender_nonce.len()
    ));
    let challenge_ok = request
        .challenge_password
        .as_ref()
        .is_some_and(|challenge| challenge.expose() == CHALLENGE);
    let reply = if request.message_type == MessageType::PkcsReq && challenge_ok {
        let issued =
            scep::issue_certificate(ca, &request, unix_now(), 365).map_err(|e| e.to_string())?;
        scep::cert_rep_success(ca, &request, &issued)
    } else {
        scep::cert_rep_failure(ca, &request, FailInfo::BadRequest)
    }
    .map_err(|e| e.to_string())?;
    log.lock().unwrap().requests.push(request);
    Ok(reply)
}

/// Runs scepclient with a deadline; a missing binary is a test failure with instructions.
fn run_scepclient(args: &[&str]) -> Output {
    let child = Command::new(SCEPCLIENT)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => panic!(
            "cannot run `{SCEPCLIENT}` ({e}): install Debian's scep package (`apt-get install -y scep`); \
             this interop test must not be skipped"
        ),
    };
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if started.elapsed() > CLIENT_TIMEOUT {
            child.kill().ok();
            let output = child.wait_with_output().unwrap();
            panic!(
                "scepclient did not finish within {CLIENT_TIMEOUT:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn scepclient_args<'a>(
    server_url: &'a str,
    key: &'a str,
    cert: &'a str,
    challenge: &'a str,
) -> Vec<&'a str> {
    vec![
        "-server-url",
        server_url,
        "-private-key",
        key,
        "-certificate",
        cert,
        "-cn",
        "ORCHARD-INTEROP-DEVICE",
        "-challenge",
        challenge,
        "-debug",
    ]
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn scepclient_obtains_a_certificate_signed_by_our_ca() {
    enroll_with_scepclient(CaCertFormat::SingleDer);
}

#[test]
fn scepclient_also_accepts_a_certs_only_ca_answer() {
    enroll_with_scepclient(CaCertFormat::CertsOnly);
}

fn enroll_with_scepclient(format: CaCertFormat) {
    let ca = CertificateAuthority::generate("Orchard Interop CA", unix_now(), 30).unwrap();
    let ca_der = ca.cert_der();
    let ca_check =
        CertificateAuthority::from_pem(&ca.cert_pem(), ca.identity().key_pem().expose()).unwrap();
    let server = ScepTestServer::start(ca, format);
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("device.key");
    let cert_path = dir.path().join("device.pem");
    let url = server.url();
    let args = scepclient_args(&url, path_str(&key_path), path_str(&cert_path), CHALLENGE);
    let output = run_scepclient(&args);
    let diagnostics = format!(
        "command: {SCEPCLIENT} {}\nstatus: {:?}\nstdout: {}\nstderr: {}\nserver:\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        server.dump()
    );
    assert!(output.status.success(), "scepclient failed\n{diagnostics}");

    let pem = std::fs::read(&cert_path)
        .unwrap_or_else(|e| panic!("no certificate written ({e})\n{diagnostics}"));
    let cert = X509::from_pem(&pem).unwrap();
    let der = cert.to_der().unwrap();
    assert!(
        ca_check.is_issued_by_me(&der),
        "certificate not signed by our CA\n{diagnostics}"
    );
    assert_ne!(der, ca_der);
    let cn = cert
        .subject_name()
        .entries_by_nid(openssl::nid::Nid::COMMONNAME)
        .next()
        .map(|entry| entry.data().to_string().unwrap());
    assert_eq!(cn.as_deref(), Some("ORCHARD-INTEROP-DEVICE"));
    let log = server.log.lock().unwrap();
    assert_eq!(log.requests.len(), 1, "{diagnostics}");
    assert_eq!(log.requests[0].message_type, MessageType::PkcsReq);
    // Print what the lead's server must mirror (visible with --nocapture).
    println!("{diagnostics}");
}

#[test]
fn scepclient_with_a_wrong_challenge_is_refused() {
    let ca = CertificateAuthority::generate("Orchard Interop CA", unix_now(), 30).unwrap();
    let server = ScepTestServer::start(ca, CaCertFormat::SingleDer);
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("device.key");
    let cert_path = dir.path().join("device.pem");
    let url = server.url();
    let args = scepclient_args(
        &url,
        path_str(&key_path),
        path_str(&cert_path),
        "wrong-challenge",
    );
    let output = run_scepclient(&args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !output.status.success(),
        "scepclient succeeded with a wrong challenge\n{}",
        server.dump()
    );
    assert!(!cert_path.exists());
    // It understood our failure CertRep (rather than failing to parse it).
    assert!(
        stderr.contains("badRequest")
            || String::from_utf8_lossy(&output.stdout).contains("badRequest"),
        "stderr: {stderr}\nserver:\n{}",
        server.dump()
    );
}
