//! The push dispatcher and the push certificate against a local APNs server over real TLS + HTTP/2, with an
//! injected clock: expiry warnings, dead tokens revived by TokenUpdate, retried server errors, and a refused
//! certificate stopping pushes — all without sleeping.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use orchard_apns::fake::{issue_push_certificate, random_topic, Fault, FaultScope};
use orchard_apns::DeviceToken;
use orchard_core::push::PushCertificateUpload;
use orchard_store::{AuthenticateDevice, NewCommand, Tenant, TokenUpdateRecord};
use orchard_testkit::service::PushSetup as Setup;
use orchard_testkit::Backend;
use orchard_types::{ApnsTopic, ChannelId, Clock, CommandUuid, TenantId, Udid, UnixTime};

const DAY: i64 = 86_400;

fn upload(s: &Setup, topic: &ApnsTopic, days: i64) -> PushCertificateUpload {
    let now = s.clock.now();
    let cert = issue_push_certificate(
        &s.push.ca,
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
            payload_sealed: false,
            deliver_once: false,
            queued_by: None,
            queued_at: s.clock.now(),
            expires_at: None,
        }])
        .await
        .unwrap();
}

async fn expiry_is_warned_from_60_days_and_an_expired_certificate_stops_pushes_cleanly(
    backend: Backend,
) {
    let Some(s) = Setup::start(backend).await else {
        return;
    };
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
    assert_eq!(s.push.apns.delivered_count(), 0);
    assert!(s.store.count_due_pushes().await.unwrap() >= 1);
    // An expired certificate cannot be uploaded either.
    let late = s
        .orchard
        .upload_push_certificate(&s.operator, upload(&s, &topic, -1), false)
        .await;
    assert!(late.is_err());
}

async fn dead_tokens_retries_and_refused_certificates(backend: Backend) {
    let Some(s) = Setup::start(backend).await else {
        return;
    };
    let topic = random_topic().unwrap();
    s.orchard
        .upload_push_certificate(&s.operator, upload(&s, &topic, 365), false)
        .await
        .unwrap();
    let token = [0x42u8; 32];
    let device_token = DeviceToken::from_bytes(&token).unwrap();
    let (channel, device) = enrolled(&s, &token).await;

    // 410 Unregistered: the token is dead; later work is not pushed.
    s.push.apns.mark_unregistered(&device_token);
    queue(&s, &device, &channel).await;
    let stats = s.orchard.dispatch_pushes_once(100).await.unwrap();
    assert_eq!(stats.dead_tokens, 1, "{stats:?}");
    queue(&s, &device, &channel).await;
    assert_eq!(
        s.orchard.dispatch_pushes_once(100).await.unwrap().claimed,
        0
    );

    // A new TokenUpdate revives it, and the owed push is delivered.
    s.push.apns.mark_registered(&device_token);
    token_update(&s, &device, &channel, &token).await;
    let stats = s.orchard.dispatch_pushes_once(100).await.unwrap();
    assert_eq!(stats.delivered, 1, "{stats:?}");

    // Two 500s are retried inside the client and the push arrives.
    s.push
        .apns
        .inject(FaultScope::AllTokens, Fault::InternalServerError, 2);
    queue(&s, &device, &channel).await;
    let stats = s.orchard.dispatch_pushes_once(100).await.unwrap();
    assert_eq!(stats.delivered, 1, "{stats:?}");
    assert_eq!(s.push.apns.pushes_for(&device_token).len(), 2);

    // 403: the certificate is refused; pushes stop with a reason and the push stays owed.
    s.push.apns.inject(
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

async fn renewal_guard(backend: Backend) {
    let Some(s) = Setup::start(backend).await else {
        return;
    };
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

orchard_testkit::backend_tests! {
    expiry_is_warned_from_60_days_and_an_expired_certificate_stops_pushes_cleanly => expiry_is_warned_from_60_days_and_an_expired_certificate_stops_pushes_cleanly;
    dead_tokens_retries_and_refused_certificates => dead_tokens_retries_and_refused_certificates;
    renewal_guard => renewal_guard;
}
