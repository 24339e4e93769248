//! The device-facing TLS: the development certificate has a P-256 key, and a returning client resumes its
//! session from a stateless ticket instead of a full handshake (a push-all wakes every iPad; most come back
//! within the ticket's lifetime). Over the real `orchard serve` on an ephemeral port with a plain rustls client,
//! as an iPad's TLS stack would connect; and a benchmark of the server's cost per handshake, full and resumed.
//!
//! The database plays no part in TLS, so the server runs on SQLite only.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use orchard_testkit::server::TestServer;
use orchard_testkit::Backend;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, HandshakeKind, StreamOwned};

fn client_config(ca_pem: &[u8]) -> Result<Arc<ClientConfig>> {
    orchard_testkit::device_tls_config(ca_pem)
}

/// One HTTP/1.1 request on a new connection; returns how its handshake went, the server's leaf certificate
/// and the status line. Reading the whole answer also reads the tickets the server sends after the handshake.
fn get(
    config: &Arc<ClientConfig>,
    port: u16,
    path: &str,
) -> Result<(HandshakeKind, CertificateDer<'static>, String)> {
    let name = ServerName::try_from("127.0.0.1")?.to_owned();
    let connection = ClientConnection::new(config.clone(), name)?;
    let socket = TcpStream::connect(("127.0.0.1", port))?;
    let mut tls = StreamOwned::new(connection, socket);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer)?;
    let kind = tls
        .conn
        .handshake_kind()
        .context("the handshake did not finish")?;
    let leaf = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .context("no server certificate")?
        .clone()
        .into_owned();
    let status = String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    Ok((kind, leaf, status))
}

fn port_of(server: &TestServer) -> Result<u16> {
    Ok(server
        .base_url
        .rsplit(':')
        .next()
        .context("base url without a port")?
        .trim_end_matches('/')
        .parse()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_client_resumes_and_the_development_key_is_p256() -> Result<()> {
    let Some(server) = TestServer::start(Backend::Sqlite).await? else {
        return Ok(());
    };
    let port = port_of(&server)?;
    let config = client_config(&server.ca_pem)?;
    let (first, leaf, status) = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || get(&config, port, "/healthz")).await??
    };
    ensure!(status.contains(" 200 "), "first answer: {status}");
    ensure!(
        first == HandshakeKind::Full,
        "a first connection is a full handshake, not {first:?}"
    );
    let key = openssl::x509::X509::from_der(&leaf)?.public_key()?;
    ensure!(
        key.id() == openssl::pkey::Id::EC && key.bits() == 256,
        "the development TLS key is P-256, not {:?} of {} bits",
        key.id(),
        key.bits()
    );

    let (second, _, status) = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || get(&config, port, "/healthz")).await??
    };
    ensure!(status.contains(" 200 "), "resumed answer: {status}");
    ensure!(
        second == HandshakeKind::Resumed,
        "the same client's second connection resumes, not {second:?}"
    );

    // A client without a ticket (another iPad) gets a full handshake: resumption is per client.
    let stranger = client_config(&server.ca_pem)?;
    let (third, _, _) =
        tokio::task::spawn_blocking(move || get(&stranger, port, "/healthz")).await??;
    ensure!(
        third == HandshakeKind::Full,
        "a new client gets a full handshake, not {third:?}"
    );
    Ok(())
}

/// The server's CPU per handshake with the development identity, full and resumed, in memory (no sockets):
/// `cargo test --release --test tls_resumption -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark: prints the server's cost per TLS handshake"]
fn server_handshake_cost() -> Result<()> {
    use rustls::ServerConnection;
    let now = orchard_types::UnixTime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
            .try_into()?,
    );
    let ca = orchard_pki::CertificateAuthority::generate("Orchard Server CA", now, 3650)?;
    let leaf = ca.issue_tls_server(&[], &["127.0.0.1".parse()?], now, 30)?;
    let mut chain = leaf.cert_pem();
    chain.extend_from_slice(&ca.cert_pem());
    let server = Arc::new(
        orchard_server::tls_server_config(&chain, leaf.key_pem().expose())
            .map_err(anyhow::Error::msg)?,
    );
    // The same server with an RSA-2048 leaf (what the development certificate was before), for comparison.
    let (rsa_leaf_pem, rsa_key_pem) = rsa_tls_leaf(&ca)?;
    let mut rsa_chain = rsa_leaf_pem;
    rsa_chain.extend_from_slice(&ca.cert_pem());
    let rsa_server = Arc::new(
        orchard_server::tls_server_config(&rsa_chain, &rsa_key_pem).map_err(anyhow::Error::msg)?,
    );

    // Runs one handshake between a fresh client connection of `client` and a new server connection, moving
    // the bytes by hand; returns the kind and the time spent in the server's processing.
    let handshake = |server: &Arc<rustls::ServerConfig>,
                     client: &Arc<ClientConfig>|
     -> Result<(HandshakeKind, std::time::Duration)> {
        let mut c = ClientConnection::new(
            client.clone(),
            ServerName::try_from("127.0.0.1")?.to_owned(),
        )?;
        let mut s = ServerConnection::new(server.clone())?;
        let mut server_time = std::time::Duration::ZERO;
        let mut buf = Vec::new();
        for _ in 0..10 {
            buf.clear();
            c.write_tls(&mut buf)?;
            let mut read = &buf[..];
            while !read.is_empty() {
                s.read_tls(&mut read)?;
            }
            let started = Instant::now();
            s.process_new_packets()?;
            buf.clear();
            s.write_tls(&mut buf)?;
            server_time += started.elapsed();
            let mut read = &buf[..];
            while !read.is_empty() {
                c.read_tls(&mut read)?;
            }
            c.process_new_packets()?;
            if !c.is_handshaking() && !s.is_handshaking() && !s.wants_write() && !c.wants_write() {
                break;
            }
        }
        Ok((c.handshake_kind().context("unfinished")?, server_time))
    };

    // Wall time of the server's own processing per handshake; the machine may be shared, so the median and
    // the minimum are printed (preemption only ever adds).
    let rounds = 2_000;
    let ca_pem = ca.cert_pem();
    let summary = |mut times: Vec<std::time::Duration>| {
        times.sort();
        let micros = |d: std::time::Duration| d.as_secs_f64() * 1e6;
        format!(
            "median {:.1} µs, min {:.1} µs",
            micros(times[times.len() / 2]),
            micros(times[0])
        )
    };
    let mut full = Vec::with_capacity(rounds);
    let mut full_rsa = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let fresh = client_config(&ca_pem)?;
        let (kind, t) = handshake(&server, &fresh)?;
        ensure!(kind == HandshakeKind::Full, "{kind:?}");
        full.push(t);
        let (kind, t) = handshake(&rsa_server, &fresh)?;
        ensure!(kind == HandshakeKind::Full, "{kind:?}");
        full_rsa.push(t);
    }
    let returning = client_config(&ca_pem)?;
    handshake(&server, &returning)?;
    let mut resumed = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let (kind, t) = handshake(&server, &returning)?;
        ensure!(kind == HandshakeKind::Resumed, "{kind:?}");
        resumed.push(t);
    }
    println!(
        "server time per TLS 1.3 handshake ({rounds} each; load {}): P-256 full {}; P-256 resumed {}; RSA-2048 full {}",
        std::fs::read_to_string("/proc/loadavg")?
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        summary(full),
        summary(resumed),
        summary(full_rsa)
    );
    Ok(())
}

/// An RSA-2048 serverAuth leaf for 127.0.0.1 issued by `ca` (certificate PEM, key PEM).
fn rsa_tls_leaf(ca: &orchard_pki::CertificateAuthority) -> Result<(Vec<u8>, Vec<u8>)> {
    use openssl::{asn1::Asn1Time, bn::BigNum, hash::MessageDigest, pkey::PKey, rsa::Rsa, x509};
    let key = PKey::from_rsa(Rsa::generate(2048)?)?;
    let mut name = x509::X509NameBuilder::new()?;
    name.append_entry_by_text("CN", "Orchard server (127.0.0.1)")?;
    let name = name.build();
    let mut builder = x509::X509Builder::new()?;
    builder.set_version(2)?;
    builder.set_serial_number(BigNum::from_u32(7)?.to_asn1_integer()?.as_ref())?;
    builder.set_subject_name(&name)?;
    builder.set_issuer_name(ca.identity().x509().subject_name())?;
    builder.set_pubkey(&key)?;
    builder.set_not_before(Asn1Time::days_from_now(0)?.as_ref())?;
    builder.set_not_after(Asn1Time::days_from_now(30)?.as_ref())?;
    builder.append_extension(
        x509::extension::ExtendedKeyUsage::new()
            .server_auth()
            .build()?,
    )?;
    let san = x509::extension::SubjectAlternativeName::new()
        .ip("127.0.0.1")
        .build(&builder.x509v3_context(Some(ca.identity().x509()), None))?;
    builder.append_extension(san)?;
    builder.sign(ca.identity().private_key(), MessageDigest::sha256())?;
    Ok((builder.build().to_pem()?, key.private_key_to_pem_pkcs8()?))
}
