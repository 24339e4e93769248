//! Adaptive push pacing measures a device's wait from when its connection was accepted, not from when its first
//! request was read: an iPad woken by a push opens a connection, and a saturated node makes it wait for the TLS
//! handshake before any request exists (S1 at 50,000 iPads, session 13). `serve_tls` hands every request a
//! [`RequestArrival`]: the TCP accept for a connection's first request, the request's own arrival for later ones.
//! Checked by ordering alone (no timing): the first request's arrival precedes the end of the client's TLS
//! handshake, which no request can; the second's follows the client's sending it.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use axum::routing::get;
use axum::{Extension, Router};
use orchard_pki::CertificateAuthority;
use orchard_server::{serve_tls, tls_server_config, ConnectionLimits, RequestArrival};
use orchard_types::{Clock, SystemClock};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};

/// Reads one HTTP/1.1 answer with a Content-Length body; returns the body.
fn read_answer(tls: &mut impl Read) -> Result<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tls.read_exact(&mut byte)
            .context("reading the answer's head")?;
        head.push(byte[0]);
    }
    let head = String::from_utf8(head)?;
    ensure!(head.starts_with("HTTP/1.1 200"), "answer: {head}");
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_owned())
        })
        .context("no content-length")?
        .parse()?;
    let mut body = vec![0u8; length];
    tls.read_exact(&mut body)?;
    Ok(String::from_utf8(body)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connections_first_request_waited_since_the_accept_later_ones_since_they_came(
) -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let base = Instant::now();
    let now = SystemClock.now();
    let ips = [IpAddr::V4(Ipv4Addr::LOCALHOST)];
    let server_ca = CertificateAuthority::generate_server_ca("Arrival Test CA", &[], &ips, now, 2)?;
    let identity = server_ca.issue_tls_server(&[], &ips, now, 2)?;
    let mut chain = identity.cert_pem();
    chain.extend_from_slice(&server_ca.cert_pem());
    let config =
        tls_server_config(&chain, identity.key_pem().expose()).map_err(anyhow::Error::msg)?;
    // The route answers its request's arrival, in microseconds after `base`.
    let app = Router::new().route(
        "/arrival",
        get(
            move |Extension(RequestArrival(at)): Extension<RequestArrival>| async move {
                at.duration_since(base).as_micros().to_string()
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(serve_tls(
        listener,
        config,
        app,
        ConnectionLimits::default(),
        std::future::pending(),
    ));

    let client = orchard_testkit::device_tls_config(&server_ca.cert_pem())?;
    let micros = move |at: Instant| at.duration_since(base).as_micros();
    let (first, handshake_done, second, second_sent) =
        tokio::task::spawn_blocking(move || -> Result<(u128, u128, u128, u128)> {
            let name = ServerName::try_from("127.0.0.1")?.to_owned();
            let mut connection = ClientConnection::new(Arc::clone(&client), name)?;
            let mut socket = TcpStream::connect(("127.0.0.1", port))?;
            while connection.is_handshaking() {
                connection.complete_io(&mut socket)?;
            }
            let handshake_done = micros(Instant::now());
            let mut tls = StreamOwned::new(connection, socket);
            let request = b"GET /arrival HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
            tls.write_all(request)?;
            let first: u128 = read_answer(&mut tls)?.parse()?;
            let second_sent = micros(Instant::now());
            tls.write_all(request)?;
            let second: u128 = read_answer(&mut tls)?.parse()?;
            Ok((first, handshake_done, second, second_sent))
        })
        .await??;
    ensure!(
        first < handshake_done,
        "the first request's wait began at {first} µs, after the handshake ended at {handshake_done} µs: \
         it was measured from the request, not from the accept"
    );
    ensure!(
        second >= second_sent,
        "the second request's wait began at {second} µs, before it was sent at {second_sent} µs: a later \
         request on the connection must not inherit the accept"
    );
    Ok(())
}
