//! Bad input on the device surface: every hostile or broken request gets the right status (never 401) and
//! leaves the store exactly as it was — on SQLite and on PostgreSQL.

use anyhow::{ensure, Context, Result};
use orchard_pki::{CertificateAuthority, Identity};
use orchard_protocol::checkin::{Authenticate, CheckinMessage, TokenUpdate};
use orchard_protocol::profile::EnrollmentProfile;
use orchard_sim::SimDevice;
use orchard_testkit::server::TestServer;
use orchard_testkit::Backend;
use orchard_types::{ApnsTopic, Clock, PushMagic, SystemClock, Udid, UnixTime};

fn now() -> UnixTime {
    SystemClock.now()
}

fn identity_of(d: &SimDevice) -> Result<Identity> {
    let cert = d
        .state
        .identity_cert_pem
        .clone()
        .context("device has no identity")?;
    Ok(Identity::from_pem(
        cert.as_bytes(),
        d.state.key_pem.as_bytes(),
    )?)
}

fn token_update_body(udid: &str, topic: &str) -> Result<Vec<u8>> {
    Ok(CheckinMessage::TokenUpdate(TokenUpdate {
        topic: ApnsTopic::parse(topic)?,
        udid: Udid::parse(udid)?,
        token: vec![7; 32],
        push_magic: PushMagic::parse("11111111-2222-3333-4444-555555555555")?,
        unlock_token: None,
        awaiting_configuration: false,
        user: None,
    })
    .encode())
}

async fn expect(
    server: &TestServer,
    what: &str,
    send: impl std::future::Future<Output = Result<(u16, Vec<u8>), orchard_sim::SimError>>,
    status: u16,
) -> Result<Vec<u8>> {
    let before = server.snapshot().await?;
    let (got, body) = send.await.map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    ensure!(
        got != 401,
        "{what}: answered 401, which makes a real device unenroll"
    );
    ensure!(
        got == status,
        "{what}: expected {status}, got {got}: {}",
        String::from_utf8_lossy(&body)
    );
    let after = server.snapshot().await?;
    ensure!(before == after, "{what}: the store changed");
    Ok(body)
}

async fn scenario(backend: Backend) -> Result<()> {
    let Some(server) = TestServer::start(backend).await? else {
        return Ok(());
    };
    let tenant = server.create_tenant("Chemistry", "chemistry").await?;
    let link = server.enrollment_link(&tenant, None).await?;
    let config = server.sim_config();
    let mut a = SimDevice::new_random(&config);
    let mut b = SimDevice::new_random(&config);
    a.enroll(&link).await?;
    b.enroll(&link).await?;
    a.poll().await?;
    b.poll().await?;
    let topic = a.state.topic.clone();
    let id_a = identity_of(&a)?;

    // Malformed plist, correctly signed: 400.
    let garbage =
        b"<?xml version=\"1.0\"?><plist><dict><key>MessageType</key><string>TokenUp".to_vec();
    let sig = orchard_pki::signature::sign_mdm_body(&garbage, &id_a)?;
    expect(
        &server,
        "malformed check-in",
        a.send_checkin_raw(garbage.clone(), Some(sig.clone())),
        400,
    )
    .await?;
    expect(
        &server,
        "malformed report",
        a.send_command_raw(garbage, Some(sig)),
        400,
    )
    .await?;

    // A binary plist with NUL inside a string (which neither its XML form nor PostgreSQL's TEXT can carry),
    // correctly signed: 400 as malformed, not a failure when it is stored.
    let mut nul_dict = plist::Dictionary::new();
    nul_dict.insert("MessageType".into(), "Authenticate".into());
    nul_dict.insert("Topic".into(), topic.clone().into());
    nul_dict.insert("UDID".into(), a.state.udid.clone().into());
    nul_dict.insert("DeviceName".into(), "iPad\0evil".into());
    let mut nul_body = Vec::new();
    plist::Value::Dictionary(nul_dict).to_writer_binary(&mut nul_body)?;
    let sig = orchard_pki::signature::sign_mdm_body(&nul_body, &id_a)?;
    expect(
        &server,
        "NUL in a binary plist string",
        a.send_checkin_raw(nul_body, Some(sig)),
        400,
    )
    .await?;

    // Missing and broken Mdm-Signature: 400.
    let body = token_update_body(&a.state.udid, &topic)?;
    expect(
        &server,
        "missing signature",
        a.send_checkin_raw(body.clone(), None),
        400,
    )
    .await?;
    expect(
        &server,
        "non-base64 signature",
        a.send_checkin_raw(body.clone(), Some("%%%not base64".into())),
        400,
    )
    .await?;
    let other_body_sig = orchard_pki::signature::sign_mdm_body(b"another body", &id_a)?;
    expect(
        &server,
        "signature over another body",
        a.send_checkin_raw(body.clone(), Some(other_body_sig)),
        400,
    )
    .await?;

    // A signature by a certificate another CA issued: 403.
    let rogue_ca = CertificateAuthority::generate("Rogue CA", now(), 30)?;
    let rogue = rogue_ca.issue_signing_identity("rogue device", now(), 30)?;
    let sig = orchard_pki::signature::sign_mdm_body(&body, &rogue)?;
    expect(
        &server,
        "foreign CA",
        a.send_checkin_raw(body.clone(), Some(sig)),
        403,
    )
    .await?;

    // Device A's certificate presented for device B's UDID: 403.
    let body_b = token_update_body(&b.state.udid, &topic)?;
    let sig = orchard_pki::signature::sign_mdm_body(&body_b, &id_a)?;
    expect(
        &server,
        "certificate of another UDID",
        a.send_checkin_raw(body_b, Some(sig)),
        403,
    )
    .await?;

    // Device A's certificate in an Authenticate for device B (a take-over attempt): 403.
    let auth_b = CheckinMessage::Authenticate(Authenticate {
        topic: ApnsTopic::parse(&topic)?,
        udid: Udid::parse(&b.state.udid)?,
        serial_number: None,
        os_version: None,
        build_version: None,
        product_name: None,
        model: None,
        model_name: None,
        device_name: None,
        imei: None,
        meid: None,
    })
    .encode();
    let sig = orchard_pki::signature::sign_mdm_body(&auth_b, &id_a)?;
    expect(
        &server,
        "authenticate another UDID with a bound certificate",
        a.send_checkin_raw(auth_b, Some(sig)),
        403,
    )
    .await?;

    // An unknown device: 403 with the documented unrecognized-device body.
    let body_x = token_update_body("00008103-000A1B2C3D4E5F60", &topic)?;
    let sig = orchard_pki::signature::sign_mdm_body(&body_x, &id_a)?;
    let answer = expect(
        &server,
        "unknown device",
        a.send_checkin_raw(body_x, Some(sig)),
        403,
    )
    .await?;
    let answer: serde_json::Value = serde_json::from_slice(&answer)?;
    ensure!(
        answer["code"] == "com.apple.unrecognized.device",
        "{answer}"
    );

    // Wrong topic: 400.
    let body_t = token_update_body(&a.state.udid, "com.apple.mgmt.External.someone-else")?;
    let sig = orchard_pki::signature::sign_mdm_body(&body_t, &id_a)?;
    expect(
        &server,
        "wrong topic",
        a.send_checkin_raw(body_t, Some(sig)),
        400,
    )
    .await?;

    // Oversize body: 413, before anything is parsed. The server answers as soon as the limit is passed and
    // closes the connection, so the client may still be uploading and see the connection reset instead of the
    // answer (a race of the client, not of the server): retry until the 413 is seen, the store unchanged.
    let before = server.snapshot().await?;
    let mut seen_413 = false;
    for _ in 0..5 {
        match a.send_checkin_raw(vec![b'a'; 2 << 20], None).await {
            Ok((413, _)) => {
                seen_413 = true;
                break;
            }
            Ok((other, body)) => anyhow::bail!(
                "oversize body: expected 413, got {other}: {}",
                String::from_utf8_lossy(&body)
            ),
            Err(_) => continue,
        }
    }
    ensure!(seen_413, "oversize body: never answered 413");
    ensure!(
        server.snapshot().await? == before,
        "oversize body: the store changed"
    );

    // SCEP with a wrong challenge, and with a challenge already used: failure CertRep.
    scep_refusals(&server, &link).await?;
    Ok(())
}

/// Fetches one profile (one challenge), uses the challenge once successfully, then twice more: the reuse by
/// another client and a made-up challenge both get a failure CertRep.
async fn scep_refusals(server: &TestServer, link: &str) -> Result<()> {
    use orchard_pki::scep::{self, CertRepOutcome};
    // The link's own URL is a landing page; its button downloads the profile from `<link>/profile`.
    let signed = server
        .http
        .get(format!("{link}/profile"))
        .send()
        .await?
        .bytes()
        .await?;
    let content =
        orchard_pki::signature::verify_signed_profile(&signed, &pem_to_der(&server.ca_pem)?)?;
    // SCEP goes to the device CA (the RA), not the server CA the profile chains to.
    let ca_der = pem_to_der(&server.device_ca_pem)?;
    let profile = EnrollmentProfile::parse(&content)?;
    // Each attempt is another client with its own key: the same key and transactionID again would be a retry
    // after a lost answer, which RFC 8894 answers with the certificate already issued (scep_interop tests it).
    let attempt = |challenge: String| {
        let ca_der = ca_der.clone();
        async move {
            let key = openssl::rsa::Rsa::generate(2048).and_then(openssl::pkey::PKey::from_rsa)?;
            let pending =
                scep::build_pkcs_req(&ca_der, &key, "scep test", Some(&challenge), now())?;
            let resp = server
                .http
                .post(server.url("/scep?operation=PKIOperation"))
                .header("content-type", "application/x-pki-message")
                .body(pending.message_der.clone())
                .send()
                .await?;
            ensure!(
                resp.status().as_u16() == 200,
                "scep http status {}",
                resp.status()
            );
            let der = resp.bytes().await?;
            Ok::<_, anyhow::Error>(scep::decode_cert_rep(&pending, &key, &ca_der, &der)?)
        }
    };
    let first = attempt(profile.scep.challenge.clone()).await?;
    ensure!(
        matches!(first, CertRepOutcome::Success(_)),
        "first use of the challenge must succeed"
    );
    let before = server.snapshot().await?;
    let reused = attempt(profile.scep.challenge.clone()).await?;
    ensure!(
        matches!(reused, CertRepOutcome::Failure(_)),
        "a used challenge must fail"
    );
    let wrong = attempt("not-a-challenge-we-made".into()).await?;
    ensure!(
        matches!(wrong, CertRepOutcome::Failure(_)),
        "a wrong challenge must fail"
    );
    ensure!(
        before == server.snapshot().await?,
        "a refused scep request changed the store"
    );
    Ok(())
}

fn pem_to_der(pem: &[u8]) -> Result<Vec<u8>> {
    Ok(openssl::x509::X509::from_pem(pem)?.to_der()?)
}

/// One figure of this node's `/metrics` page.
async fn metric(server: &TestServer, family: &str) -> Result<f64> {
    let text = server
        .http
        .get(server.url("/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(family))
        .with_context(|| format!("/metrics has no {family}:\n{text}"))?;
    let value = line
        .split_whitespace()
        .nth(1)
        .context("metric without value")?;
    Ok(value.parse()?)
}

/// Adaptive push pacing reads how busy a node is from its device requests. Anyone can reach `/mdm/checkin`
/// and `/mdm/command`, so only requests whose Mdm-Signature verified may count: a flood of unsigned and badly
/// signed requests (all at once, some with large bodies that are slow to hash) leaves the node's served count,
/// its in-flight count and its pacing rate as they were, and each is refused with a 4xx. The served count
/// moving for a real device's session shows the figures are live, so this is no vacuous pass.
async fn flood_scenario(backend: Backend) -> Result<()> {
    let Some(server) = TestServer::start(backend).await? else {
        return Ok(());
    };
    let tenant = server.create_tenant("Chemistry", "chemistry").await?;
    let link = server.enrollment_link(&tenant, None).await?;
    let config = server.sim_config();
    let mut device = SimDevice::new_random(&config);
    device.enroll(&link).await?;
    device.poll().await?;
    let topic = device.state.topic.clone();
    let identity = identity_of(&device)?;

    let served_before = metric(&server, "orchard_device_requests_served_total").await?;
    let rate_before = metric(&server, "orchard_push_pacing_rate").await?;
    ensure!(
        served_before > 0.0,
        "the enrolled device's requests were not counted"
    );

    let body = token_update_body(&device.state.udid, &topic)?;
    let rogue_ca = CertificateAuthority::generate("Rogue CA", now(), 30)?;
    let rogue = rogue_ca.issue_signing_identity("rogue device", now(), 30)?;
    let rogue_signature = orchard_pki::signature::sign_mdm_body(&body, &rogue)?;
    let other_body_signature = orchard_pki::signature::sign_mdm_body(b"another body", &identity)?;
    // Large enough that hashing it for the signature check takes a while, under the device body limit.
    let mut large = body.clone();
    large.resize(512 * 1024, b' ');
    let large_signature = orchard_pki::signature::sign_mdm_body(b"not this body", &identity)?;
    let attempts: Vec<(Vec<u8>, Option<String>)> = vec![
        (body.clone(), None),
        (body.clone(), Some("%%%not base64".into())),
        (body.clone(), Some(other_body_signature)),
        (body.clone(), Some(rogue_signature)),
        (large, Some(large_signature)),
    ];
    let (device_ref, attempts) = (&device, &attempts);
    let flood = (0..40).flat_map(move |round| {
        attempts
            .iter()
            .enumerate()
            .map(move |(i, (body, signature))| {
                let device = device_ref;
                async move {
                    let (status, _) = if (round + i) % 2 == 0 {
                        device
                            .send_checkin_raw(body.clone(), signature.clone())
                            .await
                    } else {
                        device
                            .send_command_raw(body.clone(), signature.clone())
                            .await
                    }
                    .map_err(|e| anyhow::anyhow!("flood request {round}/{i}: {e}"))?;
                    ensure!(
                        (400..500).contains(&status) && status != 401,
                        "flood request {round}/{i} answered {status}"
                    );
                    Ok(())
                }
            })
    });
    futures::future::try_join_all(flood).await?;

    ensure!(
        metric(&server, "orchard_device_requests_in_flight").await? == 0.0,
        "unauthenticated requests are counted in flight"
    );
    let served_after = metric(&server, "orchard_device_requests_served_total").await?;
    ensure!(
        served_after == served_before,
        "unauthenticated requests fed the pacing signal: served {served_before} before the flood, {served_after} after"
    );
    ensure!(
        metric(&server, "orchard_push_pacing_rate").await? == rate_before,
        "the flood moved the push pacing rate"
    );

    // A real session is counted: the figures are live.
    device.poll().await?;
    ensure!(
        metric(&server, "orchard_device_requests_served_total").await? > served_after,
        "a verified device session was not counted"
    );
    ensure!(metric(&server, "orchard_device_requests_in_flight").await? == 0.0);
    Ok(())
}

orchard_testkit::backend_tests! {
    bad_device_input_is_rejected_and_changes_nothing => scenario;
    unauthenticated_flood_leaves_push_pacing_alone => flood_scenario;
}
