//! End-to-end tests of the APNs client against the local APNs server: real TLS 1.3 with client certificates,
//! real HTTP/2, certificates generated here with orchard-pki and openssl. Nothing is mocked.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkcs12::Pkcs12;
use orchard_apns::fake::{issue_push_certificate, random_topic, FakeApnsServer, Fault, FaultScope};
use orchard_apns::{
    ApnsClient, ApnsConfig, ApnsError, Backoff, DeviceToken, PushCertificate, PushOutcome,
    RetryPolicy, TrustRoots,
};
use orchard_pki::CertificateAuthority;
use orchard_types::{ApnsTopic, Clock, ManualClock, PushMagic, SystemClock, UnixTime};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::task::JoinSet;

const DAY: i64 = 86_400;

fn now() -> UnixTime {
    SystemClock.now()
}

/// Apple's role: the CA that signs push certificates and that the local server trusts for client auth.
struct ApplePki {
    ca: CertificateAuthority,
    topic: ApnsTopic,
    certificate: PushCertificate,
}

fn apple_pki() -> ApplePki {
    let ca = CertificateAuthority::generate("Fake Apple Push CA", now(), 3650).unwrap();
    let topic = random_topic().unwrap();
    let certificate = issue_push_certificate(
        &ca,
        &topic,
        now().plus_seconds(-DAY),
        now().plus_seconds(365 * DAY),
    )
    .unwrap();
    ApplePki {
        ca,
        topic,
        certificate,
    }
}

/// Short waits so retry and reconnect tests finish in well under a second each (429 excepted).
fn fast_config(server: &FakeApnsServer) -> ApnsConfig {
    let mut config = server.client_config();
    config.connect_timeout = Duration::from_secs(5);
    config.request_timeout = Duration::from_secs(5);
    config.retry = RetryPolicy {
        max_attempts: 4,
        backoff: Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
        },
        max_retry_after: Duration::from_secs(5),
    };
    config.reconnect = Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
    };
    config
}

async fn start() -> (ApplePki, FakeApnsServer, ApnsClient) {
    let pki = apple_pki();
    let server = FakeApnsServer::start(&pki.ca.cert_pem()).await.unwrap();
    let client = ApnsClient::new(
        pki.certificate.clone(),
        fast_config(&server),
        Arc::new(SystemClock),
    )
    .unwrap();
    (pki, server, client)
}

async fn wait_ready(client: &ApnsClient, connections: usize) {
    wait_for(
        || client.status().ready >= connections,
        || format!("connections not up: {:?}", client.status()),
    )
    .await;
}

/// Polls `done` for up to 5 s; fails with what `state` says when it never holds.
async fn wait_for(done: impl Fn() -> bool, state: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "{}", state());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn token(n: u32) -> DeviceToken {
    let mut bytes = [0x5a_u8; 32];
    bytes[..4].copy_from_slice(&n.to_be_bytes());
    DeviceToken::from_bytes(&bytes).unwrap()
}

fn magic(n: u32) -> PushMagic {
    PushMagic::parse(&format!("PUSH-MAGIC-{n:08}-6F1C2B7A")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_is_delivered_with_mdm_headers_and_body() {
    let (pki, server, client) = start().await;
    let mut all = server.subscribe();
    let mut mine = server.subscribe_token(&token(1));

    let outcome = client.push(&token(1), &magic(1)).await;
    let PushOutcome::Delivered { apns_id } = outcome else {
        panic!("not delivered: {outcome:?}");
    };
    let apns_id = apns_id.expect("apns-id header");

    let pushes = server.pushes();
    assert_eq!(pushes.len(), 1);
    let push = &pushes[0];
    assert_eq!(push.token, token(1));
    assert_eq!(push.topic, pki.topic);
    assert_eq!(push.push_magic, magic(1));
    assert_eq!(push.apns_id, apns_id);
    assert_eq!(push.priority, Some(10));
    let expiration = push.expiration.expect("apns-expiration");
    assert!(
        (expiration - now().plus_seconds(7 * DAY).0).abs() <= 5,
        "{expiration}"
    );

    // A simulated iPad waits on its subscription instead of polling.
    let woken = tokio::time::timeout(Duration::from_secs(2), mine.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(woken.push_magic, magic(1));
    assert_eq!(all.recv().await.unwrap().token, token(1));
    assert_eq!(client.topic(), &pki.topic);
    wait_ready(&client, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistered_token_is_reported_dead_until_registered_again() {
    let (_pki, server, client) = start().await;
    server.mark_unregistered(&token(7));

    let outcome = client.push(&token(7), &magic(7)).await;
    match &outcome {
        PushOutcome::BadToken {
            status: 410,
            reason,
            unregistered_at: Some(at),
        } => {
            assert_eq!(reason, "Unregistered");
            assert!((at.0 - now().0).abs() <= 5);
        }
        other => panic!("expected 410 BadToken, got {other:?}"),
    }
    assert!(outcome.is_token_dead());
    // Other tokens are unaffected, and a new TokenUpdate (simulated here) revives the token.
    assert!(client.push(&token(8), &magic(8)).await.is_delivered());
    server.mark_registered(&token(7));
    assert!(client.push(&token(7), &magic(7)).await.is_delivered());

    // A one-off 410 and a 400 BadDeviceToken are dead tokens too; neither is retried.
    server.inject(FaultScope::Token(token(9)), Fault::Unregistered, 1);
    assert!(client.push(&token(9), &magic(9)).await.is_token_dead());
    server.inject(
        FaultScope::AllTokens,
        Fault::Status {
            status: 400,
            reason: "BadDeviceToken".into(),
        },
        1,
    );
    assert!(client.push(&token(9), &magic(9)).await.is_token_dead());
    assert_eq!(server.stats().requests, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_requests_with_retry_after_is_waited_out_and_delivered() {
    let (_pki, server, client) = start().await;
    server.inject(
        FaultScope::Token(token(3)),
        Fault::TooManyRequests {
            retry_after_seconds: Some(1),
        },
        1,
    );
    let started = Instant::now();
    let outcome = client.push(&token(3), &magic(3)).await;
    assert!(outcome.is_delivered(), "{outcome:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
    let stats = server.stats();
    assert_eq!((stats.requests, stats.rejected, stats.delivered), (2, 1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_then_reported() {
    let (_pki, server, client) = start().await;
    server.inject(FaultScope::AllTokens, Fault::InternalServerError, 2);
    let outcome = client.push(&token(4), &magic(4)).await;
    assert!(outcome.is_delivered(), "{outcome:?}");
    assert_eq!(server.stats().requests, 3);
    assert_eq!(server.pushes_for(&token(4)).len(), 1);

    // Still failing after every attempt: the caller is told to retry later.
    server.inject_always(FaultScope::AllTokens, Fault::ServiceUnavailable);
    match client.push(&token(5), &magic(5)).await {
        PushOutcome::Retry {
            status: 503,
            reason,
            ..
        } => assert_eq!(reason, "ServiceUnavailable"),
        other => panic!("expected Retry, got {other:?}"),
    }
    assert_eq!(server.stats().requests, 3 + 4);

    // A Retry-After longer than the policy waits out is handed to the caller at once.
    server.clear_faults();
    server.inject_always(
        FaultScope::AllTokens,
        Fault::TooManyRequests {
            retry_after_seconds: Some(3600),
        },
    );
    let started = Instant::now();
    match client.push(&token(6), &magic(6)).await {
        PushOutcome::Retry {
            after, status: 429, ..
        } => assert_eq!(after, Duration::from_secs(3600)),
        other => panic!("expected Retry, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connection_is_reestablished_and_push_arrives() {
    let (_pki, server, client) = start().await;
    assert!(client.push(&token(1), &magic(1)).await.is_delivered());
    let connections_before = server.stats().connections;

    server.inject(FaultScope::Token(token(2)), Fault::DropConnection, 1);
    let outcome = client.push(&token(2), &magic(2)).await;
    assert!(outcome.is_delivered(), "{outcome:?}");
    assert_eq!(server.pushes_for(&token(2)).len(), 1);
    let stats = server.stats();
    assert_eq!(stats.dropped_connections, 1);

    // The dropped connection comes back (after a short backoff) and carries pushes again. The server counts a
    // connection when its side of the handshake ends, which in TLS 1.3 may be after the client's: wait for it.
    wait_ready(&client, 2).await;
    wait_for(
        || server.stats().connections > connections_before,
        || format!("{:?}", server.stats()),
    )
    .await;
    assert!(client.status().last_connection_error.is_some());
    for n in 10..20 {
        assert!(client.push(&token(n), &magic(n)).await.is_delivered());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_topic_is_refused_with_403_and_reported_as_certificate_problem() {
    let (pki, server, client) = start().await;

    // The server compares apns-topic with the client certificate's UID over a real connection.
    let other_topic = random_topic().unwrap();
    let (status, body) = raw_push(
        &server,
        &pki.certificate,
        other_topic.as_str(),
        "mdm",
        r#"{"mdm":"x"}"#,
    )
    .await;
    assert_eq!(status, 403);
    assert!(body.contains("TopicDisallowed"), "{body}");
    let (status, _) = raw_push(
        &server,
        &pki.certificate,
        pki.topic.as_str(),
        "mdm",
        r#"{"mdm":"x"}"#,
    )
    .await;
    assert_eq!(status, 200);

    // The client reports such an answer as a certificate problem, without retrying it.
    server.inject(
        FaultScope::AllTokens,
        Fault::Status {
            status: 403,
            reason: "TopicDisallowed".into(),
        },
        1,
    );
    let outcome = client.push(&token(1), &magic(1)).await;
    assert_eq!(
        outcome,
        PushOutcome::CertificateProblem {
            status: Some(403),
            reason: "TopicDisallowed".into()
        }
    );
    assert!(outcome.is_certificate_problem());
    assert_eq!(server.stats().delivered, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_checks_push_type_body_and_path() {
    let (pki, server, _client) = start().await;
    let topic = pki.topic.as_str();
    let cases = [
        ("alert", r#"{"mdm":"abc"}"#, 400, "InvalidPushType"),
        ("mdm", r#"{"aps":{}}"#, 400, "BadPayload"),
        ("mdm", r#"{"mdm":"abc","extra":1}"#, 400, "BadPayload"),
        ("mdm", r#"{"mdm":42}"#, 400, "BadPayload"),
        ("mdm", "", 400, "PayloadEmpty"),
    ];
    for (push_type, body, status, reason) in cases {
        let (got_status, got_body) =
            raw_push(&server, &pki.certificate, topic, push_type, body).await;
        assert_eq!(got_status, status, "{push_type} {body}");
        assert!(got_body.contains(reason), "{got_body}");
    }
    let too_big = format!(r#"{{"mdm":"{}"}}"#, "a".repeat(5000));
    let (status, _) = raw_push(&server, &pki.certificate, topic, "mdm", &too_big).await;
    assert_eq!(status, 413);
    assert_eq!(server.stats().delivered, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_certificate_gives_a_clear_error_before_connecting() {
    let pki = apple_pki();
    let expired = issue_push_certificate(
        &pki.ca,
        &pki.topic,
        now().plus_seconds(-400 * DAY),
        now().plus_seconds(-DAY),
    )
    .unwrap();
    assert!(expired.days_left(now()) < 0);
    let server = FakeApnsServer::start(&pki.ca.cert_pem()).await.unwrap();

    let error = ApnsClient::new(expired, fast_config(&server), Arc::new(SystemClock)).unwrap_err();
    assert!(
        matches!(error, ApnsError::CertificateExpired { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("expired") && message.contains(pki.topic.as_str()),
        "{message}"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.stats().connections + server.stats().tls_failures, 0);

    // A certificate that expires while the client runs stops pushes with a certificate problem, no panic.
    let clock = ManualClock::new(now());
    let client = ApnsClient::new(
        pki.certificate.clone(),
        fast_config(&server),
        Arc::new(clock.clone()),
    )
    .unwrap();
    assert!(client.push(&token(1), &magic(1)).await.is_delivered());
    clock.advance(366 * DAY);
    match client.push(&token(1), &magic(1)).await {
        PushOutcome::CertificateProblem {
            status: None,
            reason,
        } => assert!(reason.contains("expired"), "{reason}"),
        other => panic!("expected CertificateProblem, got {other:?}"),
    }
    assert_eq!(server.stats().requests, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_from_another_ca_is_refused_at_tls() {
    let trusted = apple_pki();
    let server = FakeApnsServer::start(&trusted.ca.cert_pem()).await.unwrap();
    let impostor_ca = CertificateAuthority::generate("Not Apple", now(), 3650).unwrap();
    let impostor = issue_push_certificate(
        &impostor_ca,
        &trusted.topic,
        now().plus_seconds(-DAY),
        now().plus_seconds(DAY),
    )
    .unwrap();
    let mut config = fast_config(&server);
    config.retry.max_attempts = 2;
    let client = ApnsClient::new(impostor, config, Arc::new(SystemClock)).unwrap();

    // TLS 1.3: the server checks the client certificate after the client's side of the handshake, so the
    // client learns of the refusal either from the alert or, when it was already writing, as a broken pipe.
    // Either way the push fails, the server saw a TLS failure and no request got through.
    match client.push(&token(1), &magic(1)).await {
        PushOutcome::Failed(ApnsError::Tls(reason)) => {
            assert!(reason.to_lowercase().contains("alert"), "{reason}")
        }
        PushOutcome::Failed(ApnsError::Connection(reason)) => {
            assert!(
                reason.contains("broken pipe") || reason.contains("reset"),
                "{reason}"
            )
        }
        other => panic!("expected a TLS failure, got {other:?}"),
    }
    let stats = server.stats();
    assert!(stats.tls_failures >= 1, "{stats:?}");
    assert_eq!((stats.connections, stats.requests), (0, 0));
    assert!(matches!(
        client.status().last_connection_error,
        Some(ApnsError::Tls(_) | ApnsError::Connection(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_certificate_outside_the_trust_roots_is_refused() {
    let (pki, server, _client) = start().await;
    let mut config = fast_config(&server);
    config.trust_roots = TrustRoots::Public;
    config.retry.max_attempts = 1;
    let client = ApnsClient::new(pki.certificate.clone(), config, Arc::new(SystemClock)).unwrap();
    match client.push(&token(1), &magic(1)).await {
        PushOutcome::Failed(ApnsError::Tls(reason)) => {
            assert!(reason.contains("UnknownIssuer"), "{reason}")
        }
        other => panic!("expected a TLS failure, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_fails_without_panicking() {
    let pki = apple_pki();
    // Bind and close a port so nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config =
        ApnsConfig::with_base_url(&format!("https://127.0.0.1:{port}"), TrustRoots::Public);
    config.retry.max_attempts = 2;
    config.retry.backoff.initial = Duration::from_millis(10);
    config.reconnect.initial = Duration::from_millis(10);
    let client = ApnsClient::new(pki.certificate, config, Arc::new(SystemClock)).unwrap();
    match client.push(&token(1), &magic(1)).await {
        PushOutcome::Failed(ApnsError::Connection(reason)) => {
            assert!(reason.contains("connect"), "{reason}")
        }
        other => panic!("expected a connection failure, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_is_injected_per_token() {
    let (_pki, server, client) = start().await;
    server.set_latency(
        FaultScope::Token(token(1)),
        Some(Duration::from_millis(300)),
    );
    let started = Instant::now();
    assert!(client.push(&token(2), &magic(2)).await.is_delivered());
    assert!(started.elapsed() < Duration::from_millis(300));
    let started = Instant::now();
    assert!(client.push(&token(1), &magic(1)).await.is_delivered());
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_pushes_are_all_delivered() {
    let (_pki, server, client) = start().await;
    let mut pushes = JoinSet::new();
    for n in 0..1000 {
        let client = client.clone();
        pushes.spawn(async move { client.push(&token(n), &magic(n)).await });
    }
    let mut delivered = 0;
    while let Some(outcome) = pushes.join_next().await {
        let outcome = outcome.unwrap();
        assert!(outcome.is_delivered(), "{outcome:?}");
        delivered += 1;
    }
    assert_eq!(delivered, 1000);
    let tokens: HashSet<DeviceToken> = server.pushes().into_iter().map(|p| p.token).collect();
    assert_eq!(tokens.len(), 1000);
    assert_eq!(server.stats().delivered, 1000);
    // Both connections carried traffic: 1,000 pushes never needed more than the configured two.
    assert_eq!(server.stats().connections, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pkcs12_with_password_imports_and_pushes() {
    let pki = apple_pki();
    let identity = pki.certificate.identity();
    let p12 = Pkcs12::builder()
        .name("MDM push")
        .pkey(identity.private_key())
        .cert(identity.x509())
        .build2("s3cret pass")
        .unwrap()
        .to_der()
        .unwrap();

    let imported = PushCertificate::from_pkcs12(&p12, "s3cret pass").unwrap();
    assert_eq!(imported.topic(), &pki.topic);
    assert_eq!(imported.not_after(), pki.certificate.not_after());
    assert_eq!(
        imported.fingerprint_sha256(),
        pki.certificate.fingerprint_sha256()
    );
    assert!(imported.days_left(now()) >= 364);

    match PushCertificate::from_pkcs12(&p12, "wrong") {
        Err(ApnsError::Pkcs12(reason)) => assert!(reason.contains("wrong password"), "{reason}"),
        other => panic!("expected a wrong password error, got {other:?}"),
    }
    assert!(PushCertificate::from_pkcs12(&p12, "nul\0inside").is_err());
    assert!(PushCertificate::from_pkcs12(b"not a p12 file", "x").is_err());

    // The imported key really authenticates the TLS connection.
    let server = FakeApnsServer::start(&pki.ca.cert_pem()).await.unwrap();
    let client = ApnsClient::new(imported, fast_config(&server), Arc::new(SystemClock)).unwrap();
    assert!(client.push(&token(1), &magic(1)).await.is_delivered());
}

#[test]
fn legacy_rc2_pkcs12_imports() {
    let pki = apple_pki();
    let identity = pki.certificate.identity();
    // Writing RC2-40 needs the legacy provider too (as the old tools that wrote such files had).
    let _legacy = openssl::provider::Provider::try_load(None, "legacy", true).unwrap();
    let p12 = Pkcs12::builder()
        .pkey(identity.private_key())
        .cert(identity.x509())
        .key_algorithm(Nid::PBE_WITHSHA1AND3_KEY_TRIPLEDES_CBC)
        .cert_algorithm(Nid::PBE_WITHSHA1AND40BITRC2_CBC)
        .mac_md(MessageDigest::sha1())
        .build2("legacy")
        .unwrap()
        .to_der()
        .unwrap();
    let imported = PushCertificate::from_pkcs12(&p12, "legacy").unwrap();
    assert_eq!(imported.topic(), &pki.topic);
}

#[test]
fn pem_import_reads_topic_and_refuses_non_push_certificates() {
    let pki = apple_pki();
    let cert_pem = pki.certificate.cert_pem();
    let key_pem = pki.certificate.key_pem();
    let imported = PushCertificate::from_pem(&cert_pem, key_pem.expose()).unwrap();
    assert_eq!(imported.topic(), &pki.topic);
    assert_eq!(
        imported.subject_common_name().unwrap(),
        format!("APSP:{}", pki.topic.as_str().rsplit('.').next().unwrap())
    );

    // One combined file works for both arguments.
    let mut combined = cert_pem.clone();
    combined.extend_from_slice(key_pem.expose());
    assert_eq!(
        PushCertificate::from_pem(&combined, &combined)
            .unwrap()
            .topic(),
        &pki.topic
    );

    // A certificate without an MDM topic is refused with a reason.
    let signing = pki
        .ca
        .issue_signing_identity("Not a push cert", now(), 30)
        .unwrap();
    match PushCertificate::from_pem(&signing.cert_pem(), signing.key_pem().expose()) {
        Err(ApnsError::InvalidCertificate(reason)) => assert!(reason.contains("UID"), "{reason}"),
        other => panic!("expected InvalidCertificate, got {other:?}"),
    }
    // A key that does not belong to the certificate, and garbage, are refused.
    assert!(PushCertificate::from_pem(&cert_pem, signing.key_pem().expose()).is_err());
    assert!(PushCertificate::from_pem(b"garbage", b"garbage").is_err());
}

/// One request built by hand over a fresh TLS + HTTP/2 connection, for what ApnsClient never sends.
async fn raw_push(
    server: &FakeApnsServer,
    certificate: &PushCertificate,
    topic: &str,
    push_type: &str,
    body: &str,
) -> (u16, String) {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(server.root_cert_der().to_vec()))
        .unwrap();
    let key = certificate
        .identity()
        .private_key()
        .private_key_to_pkcs8()
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(
        vec![CertificateDer::from(certificate.identity().cert_der())],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
    )
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(server.address())
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = http::Request::post(format!("{}/3/device/{}", server.url(), token(99).as_hex()))
        .header("apns-topic", topic)
        .header("apns-push-type", push_type)
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}
