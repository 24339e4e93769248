//! The push dispatcher and the push certificate against a local APNs server over real TLS + HTTP/2, with an
//! injected clock: expiry warnings, dead tokens revived by TokenUpdate, retried server errors, and a refused
//! certificate stopping pushes — all without sleeping.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use orchard_apns::fake::{issue_push_certificate, random_topic, FakeApnsServer, Fault, FaultScope};
use orchard_apns::{ApnsConfig, DeviceToken, TrustRoots};
use orchard_core::access::bootstrap::LocalBootstrap;
use orchard_core::access::capability::OperatorCtx;
use orchard_core::push::{PushCertificateUpload, PushSettings};
use orchard_core::{CoreConfig, Orchard};
use orchard_pki::CertificateAuthority;
use orchard_store::{AuthenticateDevice, NewCommand, Store, Tenant, TokenUpdateRecord};
use orchard_types::{
    ApnsTopic, ChannelId, Clock, CommandUuid, ManualClock, TenantId, Udid, UnixTime,
};

const DAY: i64 = 86_400;

struct Setup {
    orchard: Arc<Orchard>,
    /// The database the test opened, and the operator the test acts as on it.
    store: Store,
    operator: OperatorCtx,
    clock: ManualClock,
    apns: FakeApnsServer,
    apple: CertificateAuthority,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let start = UnixTime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64,
    );
    let clock = ManualClock::new(start);
    let dir = tempfile::tempdir().unwrap();
    let (store, scopes) =
        Store::connect(&format!("sqlite://{}", dir.path().join("o.db").display()))
            .await
            .unwrap();
    let pki = orchard_core::pki_files::load_or_create(dir.path(), &[], &[], start).unwrap();
    let apple =
        CertificateAuthority::generate("Test Apple Push CA", UnixTime(start.0 - DAY), 400).unwrap();
    let apns = FakeApnsServer::start(&apple.cert_pem()).await.unwrap();
    let settings = PushSettings {
        apns: ApnsConfig::with_base_url(
            apns.url(),
            TrustRoots::from_pem(apns.root_cert_pem()).unwrap(),
        ),
        ..PushSettings::default()
    };
    let config = CoreConfig {
        public_url: "https://mdm.example.edu".into(),
        topic: ApnsTopic::parse("com.apple.mgmt.External.orchard-dev-test").unwrap(),
        organization: "Test".into(),
        challenge_ttl_seconds: 3600,
        identity_validity_days: 365,
    };
    let clock_dyn: Arc<dyn Clock> = Arc::new(clock.clone());
    let operator =
        LocalBootstrap::for_opened_database(store.clone(), scopes.clone(), clock_dyn.clone())
            .operator()
            .unwrap();
    let orchard = Arc::new(Orchard::new(
        store.clone(),
        scopes,
        Arc::new(pki.material),
        config,
        clock_dyn,
        settings,
    ));
    Setup {
        orchard,
        store,
        operator,
        clock,
        apns,
        apple,
        _dir: dir,
    }
}

fn upload(s: &Setup, topic: &ApnsTopic, days: i64) -> PushCertificateUpload {
    let now = s.clock.now();
    let cert = issue_push_certificate(
        &s.apple,
        topic,
        UnixTime(now.0 - 60),
        now.plus_seconds(days * DAY),
    )
    .unwrap();
    PushCertificateUpload::Pem {
        certificate: cert.cert_pem(),
        private_key: cert.key_pem().expose().clone(),
    }
}

/// An enrolled device channel with a push token; returns the channel, token and a command factory's inputs.
async fn enrolled(s: &Setup, token: &[u8]) -> (ChannelId, orchard_store::Device) {
    let store = &s.store;
    let now = s.clock.now();
    let tenant = Tenant {
        id: TenantId::new(),
        name: "Physics".into(),
        code: format!("p{}", uuid::Uuid::new_v4().simple()),
        created_at: now,
    };
    store.create_tenant(&tenant).await.unwrap();
    let udid = Udid::parse(&uuid::Uuid::new_v4().hyphenated().to_string().to_uppercase()).unwrap();
    let device = store
        .authenticate_device(&AuthenticateDevice {
            udid: udid.clone(),
            tenant_id: tenant.id,
            cert_fingerprint: hex_of(token),
            topic: "t".into(),
            facts: Default::default(),
            now,
        })
        .await
        .unwrap();
    let channel = ChannelId::device(&udid);
    token_update(s, &device, &channel, token).await;
    (channel, device)
}

async fn token_update(
    s: &Setup,
    device: &orchard_store::Device,
    channel: &ChannelId,
    token: &[u8],
) {
    s.store
        .update_token(&TokenUpdateRecord {
            device_id: device.id,
            channel: channel.clone(),
            user_short_name: None,
            user_id: None,
            push_token: token.to_vec(),
            push_magic: "4D7D2A9C-0000-0000-0000-000000000001".into(),
            unlock_token: None,
            awaiting_configuration: false,
            now: s.clock.now(),
        })
        .await
        .unwrap();
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn queue(s: &Setup, device: &orchard_store::Device, channel: &ChannelId) {
    s.store
        .enqueue_commands(&[NewCommand {
            uuid: CommandUuid::new_random(),
            device_id: device.id,
            tenant_id: device.tenant_id,
            channel: channel.clone(),
            request_type: orchard_types::RequestType::DeviceLock,
            payload: b"<plist/>".to_vec(),
            queued_by: None,
            queued_at: s.clock.now(),
            expires_at: None,
        }])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_is_warned_from_60_days_and_an_expired_certificate_stops_pushes_cleanly() {
    let s = setup().await;
    let topic = random_topic().unwrap();
    let status = s
        .orchard
        .upload_push_certificate(&s.operator, upload(&s, &topic, 100), false)
        .await
        .unwrap();
    assert_eq!(status.topic, topic.as_str());
    assert!(!status.expiry_warning);
    assert!(status.days_left >= 99);

    s.clock.advance(41 * DAY);
    let status = s.orchard.push_certificate_status().unwrap();
    assert!(status.expiry_warning, "{status:?}");
    assert!(!status.expired);

    s.clock.advance(60 * DAY);
    let status = s.orchard.push_certificate_status().unwrap();
    assert!(status.expired);
    assert!(status.pushes_stopped.is_some());
    // Work is queued but nothing is pushed and nothing panics; the push stays owed.
    let token = [7u8; 32];
    let (channel, device) = enrolled(&s, &token).await;
    queue(&s, &device, &channel).await;
    let stats = s.orchard.dispatch_pushes_once(100).await.unwrap();
    assert_eq!(stats.delivered, 0);
    assert_eq!(s.apns.delivered_count(), 0);
    assert!(s.store.count_due_pushes().await.unwrap() >= 1);
    // An expired certificate cannot be uploaded either.
    let late = s
        .orchard
        .upload_push_certificate(&s.operator, upload(&s, &topic, -1), false)
        .await;
    assert!(late.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_tokens_retries_and_refused_certificates() {
    let s = setup().await;
    let topic = random_topic().unwrap();
    s.orchard
        .upload_push_certificate(&s.operator, upload(&s, &topic, 365), false)
        .await
        .unwrap();
    let token = [0x42u8; 32];
    let device_token = DeviceToken::from_bytes(&token).unwrap();
    let (channel, device) = enrolled(&s, &token).await;

    // 410 Unregistered: the token is dead; later work is not pushed.
    s.apns.mark_unregistered(&device_token);
    queue(&s, &device, &channel).await;
    let stats = s.orchard.dispatch_pushes_once(100).await.unwrap();
    assert_eq!(stats.dead_tokens, 1, "{stats:?}");
    queue(&s, &device, &channel).await;
    assert_eq!(
        s.orchard.dispatch_pushes_once(100).await.unwrap().claimed,
        0
    );

    // A new TokenUpdate revives it, and the owed push is delivered.
    s.apns.mark_registered(&device_token);
    token_update(&s, &device, &channel, &token).await;
    let stats = s.orchard.dispatch_pushes_once(100).await.unwrap();
    assert_eq!(stats.delivered, 1, "{stats:?}");

    // Two 500s are retried inside the client and the push arrives.
    s.apns
        .inject(FaultScope::AllTokens, Fault::InternalServerError, 2);
    queue(&s, &device, &channel).await;
    let stats = s.orchard.dispatch_pushes_once(100).await.unwrap();
    assert_eq!(stats.delivered, 1, "{stats:?}");
    assert_eq!(s.apns.pushes_for(&device_token).len(), 2);

    // 403: the certificate is refused; pushes stop with a reason and the push stays owed.
    s.apns.inject(
        FaultScope::AllTokens,
        Fault::Status {
            status: 403,
            reason: "BadCertificate".into(),
        },
        1,
    );
    queue(&s, &device, &channel).await;
    let stats = s.orchard.dispatch_pushes_once(100).await.unwrap();
    assert_eq!(stats.requeued, 1, "{stats:?}");
    let status = s.orchard.push_certificate_status().unwrap();
    assert!(status.pushes_stopped.is_some(), "{status:?}");
    assert_eq!(
        s.orchard.dispatch_pushes_once(100).await.unwrap().claimed,
        0
    );
    assert_eq!(s.store.count_due_pushes().await.unwrap(), 1);

    // Uploading a (renewed, same-topic) certificate resumes pushing.
    s.orchard
        .upload_push_certificate(&s.operator, upload(&s, &topic, 365), false)
        .await
        .unwrap();
    let stats = s.orchard.dispatch_pushes_once(100).await.unwrap();
    assert_eq!(stats.delivered, 1, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_guard() {
    let s = setup().await;
    let topic = random_topic().unwrap();
    s.orchard
        .upload_push_certificate(&s.operator, upload(&s, &topic, 365), false)
        .await
        .unwrap();
    // Same topic: a renewal.
    s.orchard
        .upload_push_certificate(&s.operator, upload(&s, &topic, 365), false)
        .await
        .unwrap();
    // Another topic: refused with an explanation, accepted with force.
    let other = random_topic().unwrap();
    let refused = s
        .orchard
        .upload_push_certificate(&s.operator, upload(&s, &other, 365), false)
        .await;
    let message = format!("{}", refused.err().unwrap());
    assert!(message.contains("would be lost"), "{message}");
    assert_eq!(s.orchard.current_topic(), topic);
    s.orchard
        .upload_push_certificate(&s.operator, upload(&s, &other, 365), true)
        .await
        .unwrap();
    assert_eq!(s.orchard.current_topic(), other);
}
