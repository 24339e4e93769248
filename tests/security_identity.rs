//! Device identity attacks against the real binary (issue 10, findings 1, 4 and 7), on SQLite and PostgreSQL,
//! with simulated iPads and real SCEP, CMS and TLS:
//!
//! - another department's enrollment link cannot take over an enrolled iPad by its UDID: refused (403), the
//!   device unchanged (tenant, serial, identity, push token, queued commands), a security event audited;
//! - a replayed Authenticate of the bound identity changes nothing; an old identity's Authenticate after a
//!   re-enrollment is refused; CheckOut ends the identity, so its Authenticate cannot come back;
//! - the tenant re-enrolls its own iPad (new identity, same device);
//! - an operator releases a device to another tenant (which then enrolls it) or moves it, both audited;
//! - identities issued through a link that is then revoked cannot Authenticate, nor can its unused challenges
//!   buy one; a revoked device identity is refused on check-in and command requests;
//! - zero-touch (ADE) enrollment of a serial assigned to another tenant's template moves the device there.

use anyhow::{bail, ensure, Context, Result};
use orchard_dep::fake::FakeDepServer;
use orchard_pki::scep::{self, CertRepOutcome};
use orchard_pki::Identity;
use orchard_protocol::checkin::{Authenticate, CheckOut, CheckinMessage};
use orchard_protocol::profile::EnrollmentProfile;
use orchard_sim::{Activation, DepActivation, DeviceState, SimDevice, SimError};
use orchard_testkit::apple::AdeFixture;
use orchard_testkit::server::TestServer;
use orchard_testkit::Backend;
use orchard_types::{ApnsTopic, Clock, Role, SerialNumber, SystemClock, Udid};
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::{Connection, Row};

const REFUSED: &str = "security.device.authenticate_refused";
const MOVED_BY_ENROLLMENT: &str = "security.device.tenant_changed_by_enrollment";

/// Everything the database holds about a device that an attack could change: its row, its channels (push
/// token, PushMagic) and its commands' statuses.
async fn device_rows(server: &TestServer, udid: &str) -> Result<Value> {
    let mut conn = server.connect_database().await?;
    let device = sqlx::query(
        "SELECT id, tenant_id, serial_number, state, cert_fingerprint, enrolled_at FROM devices WHERE udid = $1",
    )
    .bind(udid)
    .fetch_one(&mut conn)
    .await?;
    let id: String = device.try_get("id")?;
    let channels = sqlx::query(
        "SELECT id, push_token, push_magic FROM channels WHERE device_id = $1 ORDER BY id",
    )
    .bind(&id)
    .fetch_all(&mut conn)
    .await?
    .iter()
    .map(|r| {
        Ok(json!({
            "id": r.try_get::<String, _>("id")?,
            "push_token": hex(&r.try_get::<Option<Vec<u8>>, _>("push_token")?.unwrap_or_default()),
            "push_magic": r.try_get::<Option<String>, _>("push_magic")?,
        }))
    })
    .collect::<Result<Vec<_>>>()?;
    let commands =
        sqlx::query("SELECT command_uuid, status FROM commands WHERE device_id = $1 ORDER BY seq")
            .bind(&id)
            .fetch_all(&mut conn)
            .await?
            .iter()
            .map(|r| {
                Ok(json!([
                    r.try_get::<String, _>("command_uuid")?,
                    r.try_get::<String, _>("status")?
                ]))
            })
            .collect::<Result<Vec<_>>>()?;
    let inventory: i64 =
        sqlx::query("SELECT COUNT(*) AS n FROM inventory_sections WHERE device_id = $1")
            .bind(&id)
            .fetch_one(&mut conn)
            .await?
            .try_get("n")?;
    conn.close().await?;
    Ok(json!({
        "id": id,
        "tenant_id": device.try_get::<String, _>("tenant_id")?,
        "serial_number": device.try_get::<Option<String>, _>("serial_number")?,
        "state": device.try_get::<String, _>("state")?,
        "cert_fingerprint": device.try_get::<Option<String>, _>("cert_fingerprint")?,
        "enrolled_at": device.try_get::<Option<i64>, _>("enrolled_at")?,
        "channels": channels,
        "commands": commands,
        "inventory_sections": inventory,
    }))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Audit events of `action` as the operator sees them.
async fn audit_events(server: &TestServer, token: &str, action: &str) -> Result<Vec<Value>> {
    let (status, v) = server
        .api(
            token,
            Method::GET,
            &format!("/api/v1/audit?action={action}&limit=100"),
            None,
        )
        .await?;
    ensure!(status == 200, "audit → {status}: {v}");
    Ok(v["items"].as_array().cloned().unwrap_or_default())
}

/// The signed Authenticate `device` would send (its current identity), for capture and replay.
fn signed_authenticate(device: &SimDevice) -> Result<(Vec<u8>, String)> {
    let body = CheckinMessage::Authenticate(Authenticate {
        topic: ApnsTopic::parse(&device.state.topic)?,
        udid: Udid::parse(&device.state.udid)?,
        serial_number: SerialNumber::parse(&device.state.serial_number).ok(),
        os_version: Some(device.state.os_version.clone()),
        build_version: Some(device.state.build_version.clone()),
        product_name: Some(device.state.product_name.clone()),
        model: None,
        model_name: None,
        device_name: None,
        imei: None,
        meid: None,
    })
    .encode();
    let signature = device.sign(&body)?;
    Ok((body, signature))
}

/// A SCEP identity bought with the challenge of one profile download from `link` (no Authenticate yet).
async fn identity_from_link(server: &TestServer, link: &str) -> Result<Identity> {
    let challenge = download_challenge(server, link).await?;
    match scep_request(server, &challenge).await? {
        (CertRepOutcome::Success(der), key) => Ok(Identity::from_parts(
            openssl::x509::X509::from_der(&der)?,
            key,
        )?),
        (other, _) => bail!("scep refused: {other:?}"),
    }
}

async fn download_challenge(server: &TestServer, link: &str) -> Result<String> {
    // The link answers a landing page; its download button fetches `<link>/profile`.
    let signed = server
        .http
        .get(format!("{link}/profile"))
        .send()
        .await?
        .bytes()
        .await?;
    let ca_der = openssl::x509::X509::from_pem(&server.ca_pem)?.to_der()?;
    let content = orchard_pki::signature::verify_signed_profile(&signed, &ca_der)?;
    Ok(EnrollmentProfile::parse(&content)?.scep.challenge.clone())
}

async fn scep_request(
    server: &TestServer,
    challenge: &str,
) -> Result<(CertRepOutcome, openssl::pkey::PKey<openssl::pkey::Private>)> {
    // SCEP goes to the device CA (the RA); the profile chains to the server CA.
    let ca_der = openssl::x509::X509::from_pem(&server.device_ca_pem)?.to_der()?;
    let key = openssl::rsa::Rsa::generate(2048).and_then(openssl::pkey::PKey::from_rsa)?;
    let pending = scep::build_pkcs_req(
        &ca_der,
        &key,
        "attacker",
        Some(challenge),
        SystemClock.now(),
    )?;
    let resp = server
        .http
        .post(server.url("/scep?operation=PKIOperation"))
        .header("content-type", "application/x-pki-message")
        .body(pending.message_der.clone())
        .send()
        .await?;
    ensure!(resp.status() == 200, "scep → {}", resp.status());
    let der = resp.bytes().await?;
    Ok((scep::decode_cert_rep(&pending, &key, &ca_der, &der)?, key))
}

/// An Authenticate for `udid` signed by `identity`, PUT through `via`'s connection; the status.
async fn authenticate_as(via: &SimDevice, identity: &Identity, udid: &str) -> Result<u16> {
    let body = CheckinMessage::Authenticate(Authenticate {
        topic: ApnsTopic::parse(&via.state.topic)?,
        udid: Udid::parse(udid)?,
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
    let signature = orchard_pki::signature::sign_mdm_body(&body, identity)?;
    Ok(via.send_checkin_raw(body, Some(signature)).await?.0)
}

fn refused_with_403(result: std::result::Result<(), SimError>, what: &str) -> Result<()> {
    match result {
        Err(SimError::Status { status: 403, .. }) => Ok(()),
        other => bail!("{what}: expected a 403 refusal, got {other:?}"),
    }
}

/// The same hardware as `device` after an erase (same UDID and serial, nothing enrolled).
fn erased_twin(server: &TestServer, device: &SimDevice) -> SimDevice {
    let mut state = DeviceState::new_random(&server.sim_config());
    state.udid = device.state.udid.clone();
    state.serial_number = device.state.serial_number.clone();
    SimDevice::from_state(state)
}

async fn cli(server: &TestServer, args: &[&str]) -> Result<String> {
    let out = server.client_command(args)?.output()?;
    ensure!(
        out.status.success(),
        "orchard {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

async fn link_enrollment(backend: Backend) -> Result<()> {
    let Some(server) = TestServer::start(backend).await? else {
        return Ok(());
    };
    let physics = server.create_tenant("Physics", "physics").await?;
    let music = server.create_tenant("Music", "music").await?;
    let config = server.sim_config();
    let mut fleet = server.enroll_devices(&config, &physics, 3).await?;
    let music_link = server.enrollment_link(&music, None).await?;
    let physics_link = server.enrollment_link(&physics, None).await?;
    let music_admin = server.create_token(Role::Admin, Some(&music), "music-admin")?;

    // The victim has a command waiting (its iPad has not polled since).
    let victim_id = server.device_by_udid(&fleet[0].state.udid).await?["id"]
        .as_str()
        .context("id")?
        .to_owned();
    server
        .post(
            &format!("/api/v1/devices/{victim_id}/commands"),
            json!({"type": "DeviceInformation", "queries": ["UDID"]}),
        )
        .await?;
    let before = device_rows(&server, &fleet[0].state.udid).await?;
    ensure!(before["channels"][0]["push_token"] != "", "{before}");
    ensure!(
        before["commands"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c[1] == "queued")),
        "{before}"
    );

    // 1. Music's link and physics' UDID: refused, nothing changed, a security event for central IT only.
    let mut attacker = erased_twin(&server, &fleet[0]);
    refused_with_403(
        attacker.enroll(&music_link).await,
        "cross-tenant authenticate",
    )?;
    ensure!(
        device_rows(&server, &fleet[0].state.udid).await? == before,
        "the refused takeover changed the device"
    );
    let events = audit_events(&server, &server.token, REFUSED).await?;
    ensure!(events.len() == 1, "{events:?}");
    let event = &events[0];
    ensure!(
        event["outcome"] == "denied"
            && event["target"] == victim_id.as_str()
            && event["details"]["reason"] == "device enrolled in another tenant"
            && event["details"]["identity_tenant_id"] == music.as_str()
            && event["details"]["device_tenant_id"] == physics.as_str(),
        "{event}"
    );
    ensure!(
        audit_events(&server, &music_admin, REFUSED)
            .await?
            .is_empty(),
        "the attacker's tenant sees the victim in its audit log"
    );

    // 2. A replayed Authenticate of the bound identity: 200, nothing changed (push token, queue).
    let (body, signature) = signed_authenticate(&fleet[0])?;
    let (status, _) = fleet[0]
        .send_checkin_raw(body.clone(), Some(signature.clone()))
        .await?;
    ensure!(status == 200, "replayed authenticate → {status}");
    ensure!(
        device_rows(&server, &fleet[0].state.udid).await? == before,
        "a replayed authenticate changed the device"
    );
    // The real iPad still works and gets its queued command.
    let session = fleet[0].poll().await?;
    ensure!(session.handled.len() == 1, "{session:?}");

    // 3. The tenant re-enrolls its own iPad (new identity, same record); the old identity's captured
    //    Authenticate is refused afterwards.
    fleet[0].enroll(&physics_link).await?;
    let after = device_rows(&server, &fleet[0].state.udid).await?;
    ensure!(
        after["id"] == before["id"]
            && after["tenant_id"] == physics.as_str()
            && after["cert_fingerprint"] != before["cert_fingerprint"],
        "{after}"
    );
    let (status, _) = fleet[0].send_checkin_raw(body, Some(signature)).await?;
    ensure!(status == 403, "old identity's authenticate → {status}");
    ensure!(
        device_rows(&server, &fleet[0].state.udid).await? == after,
        "the superseded identity changed the device"
    );
    fleet[0].poll().await?;

    // 4. Release for re-enrollment (operator CLI): music may enroll fleet[1] now; the move is audited.
    let second = fleet[1].state.udid.clone();
    let second_id = server.device_by_udid(&second).await?["id"]
        .as_str()
        .context("id")?
        .to_owned();
    let mut music_ipad = erased_twin(&server, &fleet[1]);
    refused_with_403(music_ipad.enroll(&music_link).await, "before the release")?;
    let (status, _) = server
        .api(
            &music_admin,
            Method::POST,
            &format!("/api/v1/devices/{second_id}/release"),
            Some(json!({"tenant_id": music})),
        )
        .await?;
    ensure!(status == 403, "a tenant admin released a device → {status}");
    cli(
        &server,
        &[
            "device",
            "release-for-reenrollment",
            &second_id,
            "--tenant",
            &music,
        ],
    )
    .await?;
    let identity = server
        .get(&format!("/api/v1/devices/{second_id}/identity"))
        .await?;
    ensure!(
        identity["released_to_tenant_id"] == music.as_str(),
        "{identity}"
    );
    music_ipad.enroll(&music_link).await?;
    music_ipad.poll().await?;
    let moved = server.device_by_udid(&second).await?;
    ensure!(
        moved["id"] == second_id.as_str() && moved["tenant_id"] == music.as_str(),
        "{moved}"
    );
    ensure!(
        server
            .get(&format!("/api/v1/devices/{second_id}/identity"))
            .await?["released_until"]
            .is_null(),
        "the release ends with the enrollment it allowed"
    );
    ensure!(
        !audit_events(&server, &server.token, "device.release_for_reenrollment")
            .await?
            .is_empty(),
        "release not audited"
    );
    let moved_events = audit_events(&server, &server.token, MOVED_BY_ENROLLMENT).await?;
    ensure!(
        moved_events.len() == 1 && moved_events[0]["details"]["claim"] == "operator_release",
        "{moved_events:?}"
    );
    // The physics iPad's old identity no longer speaks for the device.
    ensure!(
        fleet[1].poll().await.is_err(),
        "old owner's identity still accepted"
    );

    // 5. Move (operator CLI), inventory kept: the device keeps talking under its new tenant.
    let third = fleet[2].state.udid.clone();
    let third_id = server.device_by_udid(&third).await?["id"]
        .as_str()
        .context("id")?
        .to_owned();
    let before_move = device_rows(&server, &third).await?;
    ensure!(
        before_move["inventory_sections"].as_i64() > Some(0),
        "{before_move}"
    );
    cli(
        &server,
        &[
            "device",
            "move",
            &third_id,
            "--tenant",
            &music,
            "--keep-inventory",
        ],
    )
    .await?;
    let after_move = device_rows(&server, &third).await?;
    ensure!(
        after_move["tenant_id"] == music.as_str()
            && after_move["inventory_sections"] == before_move["inventory_sections"]
            && after_move["cert_fingerprint"] == before_move["cert_fingerprint"],
        "{after_move}"
    );
    fleet[2].poll().await?;
    let moves = audit_events(&server, &server.token, "device.move").await?;
    ensure!(
        moves.len() == 1
            && moves[0]["tenant_id"] == music.as_str()
            && moves[0]["details"]["from_tenant_id"] == physics.as_str()
            && moves[0]["details"]["keep_inventory"] == true,
        "{moves:?}"
    );

    // 6. CheckOut ends the identity: its captured Authenticate cannot enroll the UDID again.
    let (auth, auth_signature) = signed_authenticate(&fleet[2])?;
    let checkout = CheckinMessage::CheckOut(CheckOut {
        topic: ApnsTopic::parse(&fleet[2].state.topic)?,
        udid: Udid::parse(&third)?,
        user: None,
    })
    .encode();
    let checkout_signature = fleet[2].sign(&checkout)?;
    let (status, _) = fleet[2]
        .send_checkin_raw(checkout.clone(), Some(checkout_signature.clone()))
        .await?;
    ensure!(status == 200, "checkout → {status}");
    let checked_out = device_rows(&server, &third).await?;
    ensure!(checked_out["state"] == "unenrolled", "{checked_out}");
    let (status, _) = fleet[2]
        .send_checkin_raw(auth, Some(auth_signature))
        .await?;
    ensure!(status == 403, "authenticate after checkout → {status}");
    let (status, _) = fleet[2]
        .send_checkin_raw(checkout, Some(checkout_signature))
        .await?;
    ensure!(status == 403, "replayed checkout → {status}");
    ensure!(
        device_rows(&server, &third).await? == checked_out,
        "replays after checkout changed the device"
    );
    // A device that checked out itself has no enrollment left to protect: another tenant may enroll it.
    let mut handed_over = erased_twin(&server, &fleet[2]);
    handed_over.enroll(&physics_link).await?;
    let reenrolled = device_rows(&server, &third).await?;
    ensure!(
        reenrolled["id"] == checked_out["id"] && reenrolled["tenant_id"] == physics.as_str(),
        "{reenrolled}"
    );
    let moved_events = audit_events(&server, &server.token, MOVED_BY_ENROLLMENT).await?;
    ensure!(
        moved_events.len() == 2 && moved_events[0]["details"]["claim"] == "after_checkout",
        "{moved_events:?}"
    );

    // 7. Revoking a link revokes the identities it issued that never bound, and its unused challenges.
    let revoked_link = server
        .post(
            &format!("/api/v1/tenants/{music}/enrollment-links"),
            json!({"name": "to revoke"}),
        )
        .await?;
    let revoked_url = revoked_link["url"].as_str().context("url")?.to_owned();
    let unbound = identity_from_link(&server, &revoked_url).await?;
    let unused_challenge = download_challenge(&server, &revoked_url).await?;
    let live = identity_from_link(&server, &music_link).await?;
    let (status, _) = server
        .api(
            &server.token,
            Method::DELETE,
            &format!(
                "/api/v1/tenants/{music}/enrollment-links/{}",
                revoked_link["id"].as_str().unwrap_or_default()
            ),
            None,
        )
        .await?;
    ensure!(status == 204, "revoke link → {status}");
    let revocations =
        audit_events(&server, &server.token, "tenants.enrollment_links.delete").await?;
    ensure!(
        revocations.len() == 1 && revocations[0]["details"]["revoked_identities"] == 1,
        "{revocations:?}"
    );
    let devices_before = server.devices().await?.len();
    let new_udid = DeviceState::new_random(&config).udid;
    ensure!(
        authenticate_as(&fleet[0], &unbound, &new_udid).await? == 403,
        "an identity of a revoked link authenticated"
    );
    match scep_request(&server, &unused_challenge).await?.0 {
        CertRepOutcome::Failure(_) => {}
        other => bail!("a revoked link's challenge bought an identity: {other:?}"),
    }
    ensure!(
        server.devices().await?.len() == devices_before,
        "a device appeared"
    );
    // The control: an identity of a live link enrolls a new UDID.
    ensure!(
        authenticate_as(&fleet[0], &live, &new_udid).await? == 200,
        "an identity of a live link was refused"
    );

    // 8. A revoked device identity (suspected theft) is refused on check-in and command requests.
    let victim_before = device_rows(&server, &fleet[0].state.udid).await?;
    let (status, _) = server
        .api(
            &music_admin,
            Method::POST,
            &format!("/api/v1/devices/{victim_id}/identity/revoke"),
            Some(json!({"reason": "suspected_theft"})),
        )
        .await?;
    ensure!(
        status == 403,
        "a tenant admin revoked an identity → {status}"
    );
    cli(
        &server,
        &[
            "device",
            "revoke-identity",
            &victim_id,
            "--reason",
            "suspected_theft",
        ],
    )
    .await?;
    let identity = server
        .get(&format!("/api/v1/devices/{victim_id}/identity"))
        .await?;
    ensure!(
        identity["revoked_reason"] == "suspected_theft",
        "{identity}"
    );
    let (idle, idle_signature) = fleet[0].signed_idle()?;
    let (status, _) = fleet[0]
        .send_command_raw(idle, Some(idle_signature))
        .await?;
    ensure!(
        status == 403,
        "command request of a revoked identity → {status}"
    );
    match fleet[0].send_token_update().await {
        Err(SimError::Status { status: 403, .. }) => {}
        other => bail!("token update of a revoked identity: {other:?}"),
    }
    let (body, signature) = signed_authenticate(&fleet[0])?;
    let (status, _) = fleet[0].send_checkin_raw(body, Some(signature)).await?;
    ensure!(
        status == 403,
        "authenticate of a revoked identity → {status}"
    );
    let victim_after = device_rows(&server, &fleet[0].state.udid).await?;
    ensure!(
        victim_after == victim_before,
        "a revoked identity changed the device"
    );
    ensure!(
        !audit_events(&server, &server.token, "device.identity.revoke")
            .await?
            .is_empty(),
        "revocation not audited"
    );
    Ok(())
}

/// Zero-touch: a physics iPad whose serial Apple now assigns to music's template enrolls into music after an
/// erase; the same serial under physics' own link stays refused for music's ordinary link.
async fn ade_reenrollment(backend: Backend) -> Result<()> {
    let serials = FakeDepServer::make_serials("SI", 0, 2);
    let ade = AdeFixture::start(&serials).await?;
    let (fake, apple) = (&ade.dep.server, &ade.apple);
    let Some(server) = TestServer::start_with(backend, &ade.serve_args()).await? else {
        return Ok(());
    };
    let physics = server.create_tenant("Physics", "physics").await?;
    let music = server.create_tenant("Music", "music").await?;

    // The physics iPad, enrolled through a physics link, with inventory.
    let mut state = DeviceState::new_random(&server.sim_config());
    state.serial_number = serials[0].as_str().to_owned();
    let mut ipad = SimDevice::from_state(state);
    ipad.enroll(&server.enrollment_link(&physics, None).await?)
        .await?;
    ipad.poll().await?;
    let before = device_rows(&server, &ipad.state.udid).await?;
    ensure!(before["inventory_sections"].as_i64() > Some(0), "{before}");

    // Apple assigns the serial to music's template.
    let (token_id, _) = server.upload_dep_token(fake, "ASM").await?;
    let template = server
        .post(
            &format!("/api/v1/dep-tokens/{token_id}/templates"),
            json!({"name": "Music studio", "tenant_id": music}),
        )
        .await?;
    server
        .post(&format!("/api/v1/dep-tokens/{token_id}/sync"), json!({}))
        .await?;
    let (status, v) = server
        .api(
            &server.token,
            Method::POST,
            &format!("/api/v1/dep-tokens/{token_id}/assignments"),
            Some(json!({"serials": [serials[0].as_str()], "template_id": template["id"]})),
        )
        .await?;
    ensure!(status == 200, "assign → {status}: {v}");

    // Erased, it activates: MachineInfo signed by its Apple identity, SCEP, Authenticate into music.
    let mut erased = erased_twin(&server, &ipad);
    let identity = apple.issue(&erased.state.serial_number, &erased.state.udid)?;
    erased.set_apple_identity(&identity)?;
    let Activation::Enrolled(_) = erased.activate(&DepActivation::for_server(fake)).await? else {
        bail!("the assigned iPad did not enroll");
    };
    let after = device_rows(&server, &ipad.state.udid).await?;
    ensure!(
        after["id"] == before["id"]
            && after["tenant_id"] == music.as_str()
            && after["cert_fingerprint"] != before["cert_fingerprint"]
            && after["inventory_sections"] == 0,
        "{after}"
    );
    let moved = audit_events(&server, &server.token, MOVED_BY_ENROLLMENT).await?;
    ensure!(
        moved.len() == 1
            && moved[0]["details"]["claim"] == "ade_assignment"
            && moved[0]["details"]["from_tenant_id"] == physics.as_str(),
        "{moved:?}"
    );
    ensure!(
        ipad.poll().await.is_err(),
        "the physics identity still speaks for the device"
    );
    Ok(())
}

orchard_testkit::backend_tests! {
    link_enrollment_cannot_take_over_devices => link_enrollment;
    ade_reenrollment_follows_apples_assignment => ade_reenrollment;
}
