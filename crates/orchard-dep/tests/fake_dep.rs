//! The client against the local DEP server, over real TLS: fetch and sync, cursors, sessions, injected failures,
//! profiles, Activation Lock, the `.p7m` upload flow, and a device's activation up to its verified MachineInfo.
#![cfg(feature = "fake")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use orchard_dep::fake::{
    encrypt_server_token, fetch_cloud_configuration, FakeDepConfig, FakeDepServer,
    SessionExpiryAnswer, TokenCipher,
};
use orchard_dep::machine_info::sign_machine_info;
use orchard_dep::{
    decrypt_server_token, generate_token_keypair, ActivationLockRequest, ActivationLockStatus,
    AdeProfile, AssignStatus, BypassCode, DepClient, DepConfig, DepCursor, DepError, DevicePage,
    DeviceRecord, DeviceSink, MachineInfo, MachineInfoVerifier, OpType, ProfileStatus, SinkError,
    SkipSetupItem, SyncPhase,
};
use orchard_pki::CertificateAuthority;
use orchard_types::{Clock, ManualClock, SerialNumber, SystemClock, Udid, UnixTime};

struct Harness {
    server: FakeDepServer,
    client: DepClient,
    clock: ManualClock,
}

async fn harness_with(
    server_config: impl FnOnce(&mut FakeDepConfig),
    client_config: impl FnOnce(&mut DepConfig),
) -> Harness {
    let clock = ManualClock::new(SystemClock.now());
    let mut config = FakeDepConfig {
        clock: Arc::new(clock.clone()),
        ..FakeDepConfig::default()
    };
    server_config(&mut config);
    let server = FakeDepServer::start(config).await.unwrap();
    let mut dep = server.client_config();
    // Fast backoff for 5xx without Retry-After; Retry-After itself is honoured as sent.
    dep.retry.initial_backoff = Duration::from_millis(20);
    client_config(&mut dep);
    let client = DepClient::new(dep, server.server_token(), Arc::new(clock.clone())).unwrap();
    Harness {
        server,
        client,
        clock,
    }
}

async fn harness() -> Harness {
    harness_with(|_| {}, |_| {}).await
}

/// A sink that applies pages to an in-memory model, as the store would, and records what it saw.
#[derive(Default)]
struct Recorder {
    full_fetch_starts: u32,
    pages: Vec<(SyncPhase, usize)>,
    cursors: Vec<DepCursor>,
    model: BTreeMap<String, DeviceRecord>,
    delivered: u64,
}

impl DeviceSink for Recorder {
    async fn on_full_fetch_start(&mut self) -> Result<(), SinkError> {
        self.full_fetch_starts += 1;
        // A full fetch lists every assigned device: what it does not list is gone.
        self.model.clear();
        Ok(())
    }

    async fn on_page(&mut self, page: &DevicePage) -> Result<(), SinkError> {
        let serials: HashSet<&str> = page
            .devices
            .iter()
            .map(|d| d.serial_number.as_str())
            .collect();
        assert_eq!(
            serials.len(),
            page.devices.len(),
            "a page holds each serial once"
        );
        for record in &page.devices {
            if record.op_type == Some(OpType::Deleted) {
                self.model.remove(record.serial_number.as_str());
            } else {
                self.model
                    .insert(record.serial_number.to_string(), record.clone());
            }
        }
        self.delivered += page.devices.len() as u64;
        self.pages.push((page.phase, page.devices.len()));
        self.cursors.push(page.cursor.clone());
        Ok(())
    }
}

fn model_serials(recorder: &Recorder) -> Vec<String> {
    recorder.model.keys().cloned().collect()
}

fn server_serials(server: &FakeDepServer) -> Vec<String> {
    server.serials().iter().map(|s| s.to_string()).collect()
}

fn serial(s: &str) -> SerialNumber {
    SerialNumber::parse(s).unwrap()
}

#[tokio::test]
async fn full_fetch_of_2500_devices_in_pages() {
    let h = harness().await;
    h.server
        .add_devices(&FakeDepServer::make_serials("F", 1, 2500));
    let mut recorder = Recorder::default();
    let outcome = h.client.sync(None, &mut recorder).await.unwrap();
    assert!(outcome.full_fetch);
    assert_eq!(outcome.pages, 3);
    assert_eq!(outcome.records, 2500);
    assert_eq!(
        recorder.pages,
        vec![
            (SyncPhase::Fetch, 1000),
            (SyncPhase::Fetch, 1000),
            (SyncPhase::Fetch, 500)
        ]
    );
    assert_eq!(recorder.delivered, 2500);
    assert_eq!(model_serials(&recorder), server_serials(&h.server));
    // One cursor saved per page, each a new one.
    let distinct: HashSet<_> = recorder.cursors.iter().collect();
    assert_eq!(distinct.len(), 3);
    assert_eq!(outcome.cursor.as_ref(), recorder.cursors.last());

    // The next run: the finished fetch cursor is exhausted, the loop switches to sync, nothing changed.
    let before = h.server.stats();
    let again = h.client.sync(outcome.cursor, &mut recorder).await.unwrap();
    assert!(!again.full_fetch);
    assert_eq!(again.records, 0);
    assert_eq!(recorder.pages.last(), Some(&(SyncPhase::Sync, 0)));
    let after = h.server.stats();
    assert_eq!(after.fetch_requests, before.fetch_requests + 1);
    assert_eq!(after.sync_requests, before.sync_requests + 1);
    assert_eq!(h.client.sessions_started(), 1);

    let account = h.client.account().await.unwrap();
    assert_eq!(account.org_type.as_deref(), Some("edu"));
    assert_eq!(account.org_version.as_deref(), Some("v2"));
}

#[tokio::test]
async fn incremental_sync_applies_adds_modifies_deletes_and_resolves_duplicates() {
    // Small pages spread the changes over several pages, so duplicates meet across page boundaries too.
    let h = harness_with(|_| {}, |c| c.page_limit = 7).await;
    let initial = FakeDepServer::make_serials("S", 1, 300);
    h.server.add_devices(&initial);
    let mut recorder = Recorder::default();
    let first = h.client.sync(None, &mut recorder).await.unwrap();
    assert_eq!(recorder.model.len(), 300);

    h.clock.advance(60);
    let t0 = h.clock.now();
    let added = FakeDepServer::make_serials("N", 1, 10);
    h.server.add_devices(&added);
    let modified = &initial[10..15];
    for s in modified {
        assert!(h
            .server
            .modify_device(s, |r| r.asset_tag = Some("A1".into())));
    }
    h.clock.advance(5);
    for s in modified {
        assert!(h
            .server
            .modify_device(s, |r| r.asset_tag = Some("A2".into())));
    }
    let deleted = &initial[20..23];
    for s in deleted {
        assert!(h.server.delete_device(s));
    }
    // Added and deleted within the same window: gone at the end.
    let transient = serial("TRANSIENT001");
    h.server.add_devices(std::slice::from_ref(&transient));
    h.clock.advance(5);
    h.server.delete_device(&transient);
    // A stale duplicate arriving late in the log (older op_date than what was already sent): must not win.
    let mut stale = h.server.device(&modified[0]).unwrap();
    stale.asset_tag = Some("STALE".into());
    stale.op_type = Some(OpType::Modified);
    stale.op_date = Some(t0.plus_seconds(-30));
    h.server.inject_sync_record(stale);

    let pages_before = recorder.pages.len();
    let outcome = h
        .client
        .sync(first.cursor.clone(), &mut recorder)
        .await
        .unwrap();
    assert!(!outcome.full_fetch);
    assert!(outcome.duplicates_dropped >= 1, "{outcome:?}");
    assert!(recorder.pages[pages_before..]
        .iter()
        .all(|(phase, _)| *phase == SyncPhase::Sync));
    assert!(outcome.pages > 1);
    assert_eq!(model_serials(&recorder), server_serials(&h.server));
    for s in modified {
        assert_eq!(
            recorder.model[s.as_str()].asset_tag.as_deref(),
            Some("A2"),
            "latest op_date wins for {s}"
        );
    }
    for s in &added {
        assert_eq!(recorder.model[s.as_str()].op_type, Some(OpType::Added));
    }
    for s in deleted {
        assert!(!recorder.model.contains_key(s.as_str()));
    }
    assert!(!recorder.model.contains_key("TRANSIENT001"));
    assert_eq!(recorder.model.len(), 300 + 10 - 3);
}

#[tokio::test]
async fn expired_cursor_restarts_with_a_full_fetch() {
    let h = harness().await;
    h.server
        .add_devices(&FakeDepServer::make_serials("E", 1, 1200));
    let mut recorder = Recorder::default();
    let first = h.client.sync(None, &mut recorder).await.unwrap();

    // Eight days later the cursor is too old; meanwhile devices came and went.
    h.clock.advance(8 * 86_400);
    for s in FakeDepServer::make_serials("E", 1, 50) {
        h.server.delete_device(&s);
    }
    h.server
        .add_devices(&FakeDepServer::make_serials("L", 1, 25));
    let outcome = h.client.sync(first.cursor, &mut recorder).await.unwrap();
    assert!(outcome.restarted_after_expired_cursor);
    assert!(outcome.full_fetch);
    assert_eq!(recorder.full_fetch_starts, 2);
    assert_eq!(outcome.records, 1175);
    assert_eq!(model_serials(&recorder), server_serials(&h.server));
    // The clock moved past the session lifetime too: the session was renewed on the way.
    assert_eq!(h.client.sessions_started(), 2);

    // The server revoking every cursor (not age) is handled the same way.
    h.server.expire_cursors();
    h.server.delete_device(&serial("E00000000051"));
    let outcome = h.client.sync(outcome.cursor, &mut recorder).await.unwrap();
    assert!(outcome.restarted_after_expired_cursor);
    assert_eq!(model_serials(&recorder), server_serials(&h.server));
    assert_eq!(recorder.model.len(), 1174);
}

#[tokio::test]
async fn invalid_cursor_is_surfaced() {
    let h = harness().await;
    let mut recorder = Recorder::default();
    let err = h
        .client
        .sync(
            Some(DepCursor::parse("bm90LWEtY3Vyc29y").unwrap()),
            &mut recorder,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, DepError::InvalidCursor), "{err}");
    let err = h
        .client
        .sync_devices(&DepCursor::parse("garbage").unwrap(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, DepError::InvalidCursor), "{err}");
}

#[tokio::test]
async fn rate_limits_server_errors_and_throttling_lose_no_serial() {
    let h = harness().await;
    let serials = FakeDepServer::make_serials("R", 1, 2500);
    h.server.add_devices(&serials);

    // Fetch through two 429s (Retry-After: 1) and one 503.
    h.server.inject_rate_limit(2, 1);
    h.server.inject_server_errors(1);
    let started = Instant::now();
    let mut recorder = Recorder::default();
    let outcome = h.client.sync(None, &mut recorder).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "retry-after honoured"
    );
    assert_eq!(outcome.records, 2500);
    assert_eq!(recorder.delivered, 2500, "no page delivered twice");
    assert_eq!(model_serials(&recorder), server_serials(&h.server));
    let stats = h.server.stats();
    assert_eq!(stats.rate_limited, 2);
    assert_eq!(stats.server_errors, 1);

    // Assign all of them (with duplicates in the input and one unknown serial) while 300 are throttled once.
    let defined = h
        .client
        .define_profile(&AdeProfile {
            url: Some("https://mdm.example.edu/dep/enroll".into()),
            ..AdeProfile::new("Lecture hall iPads")
        })
        .await
        .unwrap();
    let throttled: Vec<SerialNumber> = serials.iter().step_by(8).take(300).cloned().collect();
    h.server.throttle_serials(&throttled, 1, 1);
    let mut input = serials.clone();
    input.extend(serials[..10].iter().cloned());
    input.push(serial("UNKNOWN00001"));
    let report = h
        .client
        .assign_profile(&defined.profile_uuid, &input)
        .await
        .unwrap();
    assert_eq!(report.succeeded.len(), 2500);
    let unique: HashSet<_> = report.succeeded.iter().collect();
    assert_eq!(unique.len(), 2500, "no serial reported twice");
    assert_eq!(report.not_accessible, vec![serial("UNKNOWN00001")]);
    assert!(report.failed.is_empty() && report.still_throttled.is_empty());
    assert_eq!(report.total(), 2501);
    // Three chunks of up to 1,000, each retried once for its throttled serials.
    assert_eq!(report.requests, 6);
    assert_eq!(h.server.stats().throttled_answers, 300);
    assert_eq!(h.server.assignment_count(), 2500);
    for s in &throttled {
        assert_eq!(
            h.server.assigned_profile(s),
            Some(defined.profile_uuid.clone())
        );
    }

    // A Retry-After beyond the policy is not slept through: the caller gets a typed error to schedule.
    h.server.inject_rate_limit(1, 3600);
    let err = h.client.account().await.unwrap_err();
    assert!(
        matches!(
            err,
            DepError::RateLimited {
                retry_after_seconds: 3600
            }
        ),
        "{err}"
    );
    // Persistent 5xx ends after the bounded attempts.
    h.server.inject_server_errors(100);
    let err = h.client.account().await.unwrap_err();
    assert!(
        matches!(err, DepError::RetriesExhausted { attempts: 5, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn serials_throttled_beyond_the_policy_are_reported() {
    let h = harness_with(|_| {}, |c| c.retry.throttled_retries = 1).await;
    let serials = FakeDepServer::make_serials("T", 1, 5);
    h.server.add_devices(&serials);
    let defined = h
        .client
        .define_profile(&AdeProfile::new("x"))
        .await
        .unwrap();
    h.server.throttle_serials(&serials[..2], 10, 0);
    let report = h
        .client
        .assign_profile(&defined.profile_uuid, &serials)
        .await
        .unwrap();
    assert_eq!(report.succeeded.len(), 3);
    assert_eq!(report.still_throttled, serials[..2].to_vec());
    assert!(!report.is_complete());
}

#[tokio::test]
async fn expired_session_is_renewed_and_retried() {
    let h = harness_with(|c| c.session_lifetime_seconds = 60, |_| {}).await;
    h.client.account().await.unwrap();
    assert_eq!(h.client.sessions_started(), 1);
    h.client.account().await.unwrap();
    assert_eq!(h.client.sessions_started(), 1, "the session is reused");
    h.clock.advance(120);
    h.client.account().await.unwrap();
    assert_eq!(h.client.sessions_started(), 2);
    assert_eq!(h.server.stats().session_rejections, 1);

    // Apple's other answer for an expired session: 403 FORBIDDEN.
    let h = harness_with(
        |c| c.session_expiry_answer = SessionExpiryAnswer::Forbidden,
        |_| {},
    )
    .await;
    h.client.account().await.unwrap();
    h.server.expire_sessions();
    h.client.account().await.unwrap();
    assert_eq!(h.client.sessions_started(), 2);
}

#[tokio::test]
async fn newest_session_token_from_responses_is_kept() {
    let h = harness_with(|c| c.rotate_session_tokens = true, |_| {}).await;
    h.server
        .add_devices(&FakeDepServer::make_serials("K", 1, 30));
    for _ in 0..5 {
        h.client.account().await.unwrap();
    }
    let mut recorder = Recorder::default();
    h.client.sync(None, &mut recorder).await.unwrap();
    // Every answer retired the token it was sent with; the client always sent the newest one.
    assert_eq!(h.client.sessions_started(), 1);
    assert_eq!(h.server.stats().session_rejections, 0);
}

#[tokio::test]
async fn wrong_or_expired_credentials_are_refused() {
    let h = harness().await;
    let mut token = h.server.server_token();
    token.access_secret = orchard_types::Secret::new("AS_wrong".into());
    let clock: Arc<dyn Clock> = Arc::new(h.clock.clone());
    let client = DepClient::new(h.server.client_config(), token, clock.clone()).unwrap();
    let err = client.account().await.unwrap_err();
    assert!(matches!(err, DepError::Unauthorized(_)), "{err}");
    assert_eq!(h.server.stats().oauth_rejected, 1);

    let mut token = h.server.server_token();
    token.access_token_expiry = h.clock.now().plus_seconds(-1);
    let client = DepClient::new(h.server.client_config(), token, clock).unwrap();
    let err = client.account().await.unwrap_err();
    assert!(matches!(err, DepError::TokenExpired { .. }), "{err}");
    assert!(err.to_string().contains("download a new token"));
}

/// A nonce source that always answers the same (what a broken random source would do).
#[derive(Debug)]
struct FixedNonce;

impl orchard_dep::NonceSource for FixedNonce {
    fn nonce(&self) -> String {
        "always-the-same".into()
    }
}

#[tokio::test]
async fn reused_oauth_nonce_is_refused() {
    let h = harness().await;
    let client = DepClient::new(
        h.server.client_config(),
        h.server.server_token(),
        Arc::new(h.clock.clone()),
    )
    .unwrap()
    .with_nonce_source(Arc::new(FixedNonce));
    client.account().await.unwrap();
    // Same timestamp (the clock stands still), same nonce: the renewal's /session is a replay.
    h.server.expire_sessions();
    let err = client.account().await.unwrap_err();
    assert!(matches!(err, DepError::Unauthorized(_)), "{err}");
    assert_eq!(h.server.stats().oauth_rejected, 1);
    // A moment later the same nonce is a different (timestamp, nonce) pair.
    h.clock.advance(1);
    client.account().await.unwrap();
}

#[tokio::test]
async fn terms_not_signed_tells_the_operator_what_to_do() {
    let h = harness().await;
    h.server
        .add_devices(&FakeDepServer::make_serials("C", 1, 3));
    h.server.set_terms_not_signed(true);
    let mut recorder = Recorder::default();
    let err = h.client.sync(None, &mut recorder).await.unwrap_err();
    assert!(matches!(err, DepError::TermsNotSigned), "{err}");
    let message = err.to_string();
    assert!(message.contains("apple school manager"), "{message}");
    assert!(message.contains("accept the new terms"), "{message}");
    h.server.set_terms_not_signed(false);
    let outcome = h.client.sync(None, &mut recorder).await.unwrap();
    assert_eq!(outcome.records, 3);
}

#[tokio::test]
async fn profile_define_assign_remove_round_trip_and_device_activation() {
    let h = harness().await;
    let serials = FakeDepServer::make_serials("P", 1, 5);
    h.server.add_devices(&serials);
    let root = h.server.root_certificate_der().unwrap();

    let mut profile = AdeProfile::new("Physics department iPads");
    profile.url = Some("https://mdm.example.edu/dep/enroll".into());
    profile.is_supervised = Some(true);
    profile.is_mandatory = Some(true);
    profile.is_mdm_removable = Some(false);
    profile.is_multi_user = Some(true);
    profile.await_device_configured = Some(true);
    profile.skip_setup_items = ["AppleID", "Siri", "Location", "Privacy", "TOS"]
        .iter()
        .map(|k| SkipSetupItem::parse(k).unwrap())
        .collect();
    profile.department = Some("Physics".into());
    profile.support_phone_number = Some("+49 30 1234".into());
    profile.support_email_address = Some("ipads@physics.example.edu".into());
    profile.org_magic = Some("physics".into());
    profile.anchor_certs = vec![root.clone()];
    profile.devices = vec![
        serials[0].clone(),
        serials[1].clone(),
        serial("NOTOURS00001"),
    ];

    let defined = h.client.define_profile(&profile).await.unwrap();
    assert_eq!(defined.devices[serials[0].as_str()], AssignStatus::Success);
    assert_eq!(defined.devices[serials[1].as_str()], AssignStatus::Success);
    assert_eq!(defined.devices["NOTOURS00001"], AssignStatus::NotAccessible);

    let read_back = h.client.get_profile(&defined.profile_uuid).await.unwrap();
    let mut expected = profile.clone();
    expected.devices.clear();
    assert_eq!(read_back, expected);

    let report = h
        .client
        .assign_profile(&defined.profile_uuid, &serials[2..])
        .await
        .unwrap();
    assert!(report.is_complete());
    assert_eq!(report.succeeded, serials[2..].to_vec());
    assert_eq!(h.server.assignment_count(), 5);

    let details = h
        .client
        .device_details(&[
            serials[0].clone(),
            serials[3].clone(),
            serial("NOTOURS00001"),
        ])
        .await
        .unwrap();
    assert_eq!(
        details[&serials[3]].profile_uuid,
        Some(defined.profile_uuid.clone())
    );
    assert_eq!(
        details[&serials[3]].profile_status,
        Some(ProfileStatus::Assigned)
    );
    assert_eq!(
        details[&serial("NOTOURS00001")].response_status,
        Some(AssignStatus::NotAccessible)
    );

    // A simulated iPad activates: it asks for its cloud configuration, reads the url, and posts its signed
    // MachineInfo there; the MDM side verifies it against its configured device root.
    let config = fetch_cloud_configuration(h.server.base_url(), Some(&root), &serials[0])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(config.profile_uuid, defined.profile_uuid);
    assert_eq!(
        config.profile.url.as_deref(),
        Some("https://mdm.example.edu/dep/enroll")
    );
    assert_eq!(config.profile.await_device_configured, Some(true));
    assert_eq!(
        h.server.device(&serials[0]).unwrap().profile_status,
        Some(ProfileStatus::Pushed)
    );
    let now = UnixTime(SystemClock.now().0);
    let device_ca = CertificateAuthority::generate("Test Device CA", now, 30).unwrap();
    let device_identity = device_ca
        .issue_signing_identity("device identity", now, 30)
        .unwrap();
    let info = MachineInfo {
        udid: Udid::parse("00008120-000A11B22C33D44E").unwrap(),
        serial: serials[0].clone(),
        product: "iPad13,18".into(),
        version: "22B83".into(),
        os_version: Some("18.1".into()),
        supplemental_build_version: None,
        supplemental_os_version_extra: None,
        imei: None,
        meid: None,
        language: Some("en".into()),
        mdm_can_request_software_update: true,
        software_update_device_id: None,
        pairing_token: None,
    };
    let signed = sign_machine_info(&info, &device_identity, &[]).unwrap();
    let verifier = MachineInfoVerifier::new(&[device_ca.cert_der()]).unwrap();
    let verified = verifier.verify(&signed).unwrap();
    assert_eq!(verified.info.serial, serials[0]);
    assert!(h
        .server
        .cloud_configuration(&verified.info.serial)
        .is_some());

    let removed = h.client.remove_profile(&serials[..2]).await.unwrap();
    assert_eq!(removed.succeeded, serials[..2].to_vec());
    assert_eq!(h.server.assigned_profile(&serials[0]), None);
    assert_eq!(
        h.server.device(&serials[0]).unwrap().profile_status,
        Some(ProfileStatus::Removed)
    );
    assert!(
        fetch_cloud_configuration(h.server.base_url(), Some(&root), &serials[0])
            .await
            .unwrap()
            .is_none()
    );

    // A profile Apple would refuse is refused before it is sent.
    let requests_before = h.server.stats().profile_requests;
    let mut bad = AdeProfile::new("bad");
    bad.skip_setup_items = serde_json::from_str(r#"["NotAKey"]"#).unwrap();
    assert!(matches!(
        h.client.define_profile(&bad).await,
        Err(DepError::InvalidProfile(_))
    ));
    assert_eq!(h.server.stats().profile_requests, requests_before);
}

#[tokio::test]
async fn activation_lock_with_an_escrow_key() {
    let h = harness().await;
    let serials = FakeDepServer::make_serials("L", 1, 1);
    h.server.add_devices(&serials);
    let code = BypassCode::generate().unwrap();
    let escrow_key = code.escrow_key().unwrap();
    let request = ActivationLockRequest {
        device: serials[0].clone(),
        escrow_key: Some(escrow_key.clone()),
        lost_message: None,
    };
    let answer = h.client.activation_lock(&request).await.unwrap();
    assert_eq!(answer.response_status, ActivationLockStatus::Success);
    assert_eq!(
        h.server.activation_lock_escrow_key(&serials[0]),
        Some(Some(escrow_key))
    );
    let again = h.client.activation_lock(&request).await.unwrap();
    assert_eq!(
        again.response_status,
        ActivationLockStatus::DeviceAlreadyLocked
    );
}

#[tokio::test]
async fn server_token_from_asm_decrypts_and_works() {
    let h = harness().await;
    let now = h.clock.now();
    // The operator's side: generate the key pair, upload the certificate, download the token.
    let keypair = generate_token_keypair("Orchard (Physics)", now).unwrap();
    for cipher in [TokenCipher::Aes256Cbc, TokenCipher::TripleDes] {
        let p7m =
            encrypt_server_token(&h.server.server_token(), &keypair.cert_pem(), cipher).unwrap();
        let token = decrypt_server_token(&p7m, &keypair).unwrap();
        assert_eq!(token, h.server.server_token());
        let client =
            DepClient::new(h.server.client_config(), token, Arc::new(h.clock.clone())).unwrap();
        client.account().await.unwrap();
    }
    let stranger = generate_token_keypair("someone else", now).unwrap();
    let p7m = encrypt_server_token(
        &h.server.server_token(),
        &stranger.cert_pem(),
        TokenCipher::Aes256Cbc,
    )
    .unwrap();
    assert!(matches!(
        decrypt_server_token(&p7m, &keypair),
        Err(DepError::TokenKeyMismatch(_))
    ));
}

#[tokio::test]
async fn plain_http_mode_serves_the_same_api() {
    let h = harness_with(|c| c.tls = false, |_| {}).await;
    assert!(h.server.base_url().starts_with("http://127.0.0.1:"));
    assert!(h.server.root_certificate_der().is_none());
    h.server
        .add_devices(&FakeDepServer::make_serials("H", 1, 10));
    let mut recorder = Recorder::default();
    let outcome = h.client.sync(None, &mut recorder).await.unwrap();
    assert_eq!(outcome.records, 10);
}

/// The client speaks Apple's current protocol version, and the server shapes records by the version a client
/// names, as Apple does: `iPadOS` from 7, `mdm_migration_deadline` from 8.
#[tokio::test]
async fn current_protocol_version_brings_migration_deadline_and_ipados() {
    let h = harness().await;
    let s = serial("MIGR00000001");
    h.server.add_devices(std::slice::from_ref(&s));
    let deadline = UnixTime(h.clock.now().0 + 30 * 86_400);
    assert!(h
        .server
        .modify_device(&s, |r| r.mdm_migration_deadline = Some(deadline)));

    let mut recorder = Recorder::default();
    h.client.sync(None, &mut recorder).await.unwrap();
    assert_eq!(h.server.stats().last_protocol_version, Some(8));
    let record = &recorder.model[s.as_str()];
    assert_eq!(record.mdm_migration_deadline, Some(deadline));
    assert_eq!(record.os.as_deref(), Some("iPadOS"));
    let details = h
        .client
        .device_details(std::slice::from_ref(&s))
        .await
        .unwrap();
    assert_eq!(details[&s].mdm_migration_deadline, Some(deadline));

    // An older client (version 3) sees neither.
    let old = harness_with(|_| {}, |c| c.server_protocol_version = 3).await;
    old.server.add_devices(std::slice::from_ref(&s));
    old.server
        .modify_device(&s, |r| r.mdm_migration_deadline = Some(deadline));
    let mut recorder = Recorder::default();
    old.client.sync(None, &mut recorder).await.unwrap();
    let record = &recorder.model[s.as_str()];
    assert_eq!(record.mdm_migration_deadline, None);
    assert_eq!(record.os.as_deref(), Some("iOS"));
}

/// Assigning, removing and a device fetching its profile show up in the sync feed as `modified` records, as
/// Apple reports them (assignments made in ASM or by another server reach us this way).
#[tokio::test]
async fn assignment_changes_are_sync_events() {
    let h = harness().await;
    let serials = FakeDepServer::make_serials("EV", 1, 2);
    h.server.add_devices(&serials);
    let root = h.server.root_certificate_der().unwrap();
    let mut recorder = Recorder::default();
    let first = h.client.sync(None, &mut recorder).await.unwrap();
    let cursor = first.cursor.clone().unwrap();

    let mut profile = AdeProfile::new("Events");
    profile.url = Some("https://mdm.example.edu/dep/enroll".into());
    let defined = h.client.define_profile(&profile).await.unwrap();
    h.clock.advance(10);
    h.client
        .assign_profile(&defined.profile_uuid, &serials)
        .await
        .unwrap();
    let changes = h.client.sync_devices(&cursor, None).await.unwrap();
    assert_eq!(changes.devices.len(), 2);
    for record in &changes.devices {
        assert_eq!(record.op_type, Some(OpType::Modified));
        assert_eq!(record.profile_status, Some(ProfileStatus::Assigned));
        assert_eq!(record.profile_uuid, Some(defined.profile_uuid.clone()));
        assert!(record.op_date.is_some());
    }

    h.clock.advance(10);
    fetch_cloud_configuration(h.server.base_url(), Some(&root), &serials[0])
        .await
        .unwrap()
        .unwrap();
    h.client.remove_profile(&serials[1..]).await.unwrap();
    let more = h.client.sync_devices(&changes.cursor, None).await.unwrap();
    let by_serial: BTreeMap<&str, &DeviceRecord> = more
        .devices
        .iter()
        .map(|r| (r.serial_number.as_str(), r))
        .collect();
    let pushed = by_serial[serials[0].as_str()];
    assert_eq!(pushed.profile_status, Some(ProfileStatus::Pushed));
    assert_eq!(pushed.profile_push_time, Some(h.clock.now()));
    let removed = by_serial[serials[1].as_str()];
    assert_eq!(removed.profile_status, Some(ProfileStatus::Removed));
    assert_eq!(removed.op_type, Some(OpType::Modified));
}

/// A cursor belongs to the MDM server that issued it: another server answers INVALID_CURSOR (and the sync loop
/// surfaces it so the caller refetches), never a page of the wrong organization's feed.
#[tokio::test]
async fn cursors_are_tied_to_their_server() {
    let a = harness().await;
    let b = harness().await;
    a.server
        .add_devices(&FakeDepServer::make_serials("CA", 1, 3));
    b.server
        .add_devices(&FakeDepServer::make_serials("CB", 1, 3));
    let mut recorder = Recorder::default();
    let from_a = a
        .client
        .sync(None, &mut recorder)
        .await
        .unwrap()
        .cursor
        .unwrap();
    let err = b.client.sync_devices(&from_a, None).await.unwrap_err();
    assert!(matches!(err, DepError::InvalidCursor), "{err}");
    let mut recorder = Recorder::default();
    let err = b
        .client
        .sync(Some(from_a.clone()), &mut recorder)
        .await
        .unwrap_err();
    assert!(matches!(err, DepError::InvalidCursor), "{err}");
    assert!(recorder.model.is_empty());
    // The issuing server still takes it.
    a.client.sync_devices(&from_a, None).await.unwrap();
}

/// Disowning releases serials for good: SUCCESS for ours, NOT_ACCESSIBLE for others, and a `deleted` record in
/// the sync feed.
#[tokio::test]
async fn disown_releases_devices() {
    let h = harness().await;
    let serials = FakeDepServer::make_serials("DO", 1, 3);
    h.server.add_devices(&serials);
    let mut recorder = Recorder::default();
    let cursor = h
        .client
        .sync(None, &mut recorder)
        .await
        .unwrap()
        .cursor
        .unwrap();
    let answer = h
        .client
        .disown_devices(&[serials[0].clone(), serial("NOTOURS00002")])
        .await
        .unwrap();
    assert_eq!(answer[serials[0].as_str()], AssignStatus::Success);
    assert_eq!(answer["NOTOURS00002"], AssignStatus::NotAccessible);
    assert!(h.server.device(&serials[0]).is_none());
    assert_eq!(h.server.device_count(), 2);
    let mut recorder = Recorder::default();
    h.client.sync(Some(cursor), &mut recorder).await.unwrap();
    assert_eq!(recorder.delivered, 1);
}
