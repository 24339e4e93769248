//! Push certificate requests made by Orchard: the key stays sealed in the store, Apple's certificate is
//! uploaded alone and paired with it (proved by a real push over TLS to the local APNs server), certificates
//! for unknown keys are refused, the renewal guard still holds, and the vendor-signed request verifies.

// Tests may unwrap and panic: a failed expectation is exactly what should stop them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::x509::X509Req;
use orchard_apns::fake::{issue_push_certificate, random_topic};
use orchard_core::access::principal::Principal;
use orchard_core::push::{PushCertificateUpload, VendorIdentity};
use orchard_core::CoreError;
use orchard_pki::CertificateAuthority;
use orchard_store::{AuthenticateDevice, NewCommand, Tenant, TokenUpdateRecord};
use orchard_testkit::apple::ApplePush;
use orchard_testkit::service::PushSetup as Setup;
use orchard_testkit::Backend;
use orchard_types::{
    ApnsTopic, ChannelId, Clock, CommandUuid, Role, Secret, TenantId, Udid, UnixTime,
};

const DAY: i64 = 86_400;

/// A principal of `role` on the test's database (a tenant role gets a tenant of its own).
fn principal(s: &Setup, role: Role) -> Principal {
    let tenant = (!orchard_core::access::roles::spans_all_tenants(role)).then(TenantId::new);
    s.bootstrap.act_as("test", "test", role, tenant).unwrap()
}

/// What Apple's portal does with a CSR (the stand-in Apple CA signs a certificate for the CSR's key).
fn issue(push: &ApplePush, csr_pem: &str, topic: &ApnsTopic, now: UnixTime) -> Vec<u8> {
    push.issue_for_csr(csr_pem.as_bytes(), topic, now).unwrap()
}

async fn enrolled_channel_with_command(s: &Setup) {
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
            cert_fingerprint: uuid::Uuid::new_v4().simple().to_string(),
            topic: "t".into(),
            facts: Default::default(),
            now,
        })
        .await
        .unwrap();
    let channel = ChannelId::device(&udid);
    store
        .update_token(&TokenUpdateRecord {
            device_id: device.id,
            channel: channel.clone(),
            user_short_name: None,
            user_id: None,
            push_token: vec![0xab; 32],
            push_magic: "4D7D2A9C-0000-0000-0000-000000000001".into(),
            unlock_token: None,
            awaiting_configuration: false,
            now,
        })
        .await
        .unwrap();
    store
        .enqueue_commands(&[NewCommand {
            uuid: CommandUuid::new_random(),
            device_id: device.id,
            tenant_id: device.tenant_id,
            channel,
            request_type: orchard_types::RequestType::DeviceLock,
            payload: b"<plist/>".to_vec(),
            payload_sealed: false,
            body_id: None,
            deliver_once: false,
            queued_by: None,
            queued_at: now,
            expires_at: None,
        }])
        .await
        .unwrap();
}

async fn certificate_alone_is_paired_with_the_sealed_key_and_pushes(backend: Backend) {
    let Some(s) = Setup::start(backend).await else {
        return;
    };
    let csr = s.orchard.create_push_csr(&s.operator, None).await.unwrap();
    assert!(csr
        .csr_pem
        .starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
    assert!(!csr.csr_pem.contains("PRIVATE"));
    assert_eq!(csr.vendor_signed_request_b64, None);
    let parsed = X509Req::from_pem(csr.csr_pem.as_bytes()).unwrap();
    let cn = parsed
        .subject_name()
        .entries_by_nid(Nid::COMMONNAME)
        .next()
        .unwrap()
        .data()
        .to_string()
        .unwrap();
    assert_eq!(cn, orchard_core::push::PUSH_CSR_COMMON_NAME);

    // The key is in the store, sealed: the stored bytes are not a PEM key.
    let keys = s.store.list_push_csr_keys().await.unwrap();
    assert_eq!(keys.len(), 1);
    assert!(!String::from_utf8_lossy(&keys[0].key_encrypted).contains("PRIVATE KEY"));

    let topic = random_topic().unwrap();
    let now = s.clock.now();
    let status = s
        .orchard
        .upload_push_certificate(
            &s.operator,
            PushCertificateUpload::CertificateOnly {
                certificate: issue(&s.push, &csr.csr_pem, &topic, now),
            },
            false,
        )
        .await
        .unwrap();
    assert_eq!(status.topic, topic.as_str());
    assert_eq!(s.orchard.current_topic(), topic);
    assert!(status.pushes_stopped.is_none());

    // The paired key is the right one: APNs (over mutual TLS) accepts the certificate and delivers a push.
    enrolled_channel_with_command(&s).await;
    let stats = s
        .orchard
        .dispatch_pushes_once(&s.orchard.system(), 10)
        .await
        .unwrap();
    assert_eq!(stats.delivered, 1, "{stats:?}");
}

async fn der_certificates_and_the_renewal_guard(backend: Backend) {
    let Some(s) = Setup::start(backend).await else {
        return;
    };
    let operator = &s.operator;
    let topic = random_topic().unwrap();
    let first = s.orchard.create_push_csr(operator, None).await.unwrap();
    // Apple's portal also hands out DER (.cer).
    let pem = issue(&s.push, &first.csr_pem, &topic, s.clock.now());
    let der = openssl::x509::X509::from_pem(&pem)
        .unwrap()
        .to_der()
        .unwrap();
    s.orchard
        .upload_push_certificate(
            operator,
            PushCertificateUpload::CertificateOnly { certificate: der },
            false,
        )
        .await
        .unwrap();

    // A renewal (new CSR, same topic) is accepted; another topic is refused unless forced.
    let renewal = s.orchard.create_push_csr(operator, None).await.unwrap();
    let renewed = issue(&s.push, &renewal.csr_pem, &topic, s.clock.now());
    s.orchard
        .upload_push_certificate(
            operator,
            PushCertificateUpload::CertificateOnly {
                certificate: renewed,
            },
            false,
        )
        .await
        .unwrap();
    let other_topic = random_topic().unwrap();
    let other = s.orchard.create_push_csr(operator, None).await.unwrap();
    let other_cert = issue(&s.push, &other.csr_pem, &other_topic, s.clock.now());
    let refused = s
        .orchard
        .upload_push_certificate(
            operator,
            PushCertificateUpload::CertificateOnly {
                certificate: other_cert.clone(),
            },
            false,
        )
        .await;
    match refused {
        Err(CoreError::Conflict(m)) => assert!(m.contains("would be lost"), "{m}"),
        other => panic!("expected the renewal guard, got {other:?}"),
    }
    assert_eq!(s.orchard.current_topic(), topic);
    s.orchard
        .upload_push_certificate(
            operator,
            PushCertificateUpload::CertificateOnly {
                certificate: other_cert,
            },
            true,
        )
        .await
        .unwrap();
    assert_eq!(s.orchard.current_topic(), other_topic);
}

async fn unknown_keys_garbage_and_non_operators_are_refused(backend: Backend) {
    let Some(s) = Setup::start(backend).await else {
        return;
    };
    let operator = &s.operator;
    let topic = random_topic().unwrap();
    let now = s.clock.now();
    // A push certificate whose key Orchard never made.
    let foreign = issue_push_certificate(
        &s.push.ca,
        &topic,
        UnixTime(now.0 - 60),
        now.plus_seconds(DAY),
    )
    .unwrap();
    let refused = s
        .orchard
        .upload_push_certificate(
            operator,
            PushCertificateUpload::CertificateOnly {
                certificate: foreign.cert_pem(),
            },
            false,
        )
        .await;
    match refused {
        Err(CoreError::Invalid(m)) => assert!(m.contains("no stored key matches"), "{m}"),
        other => panic!("expected a clear refusal, got {other:?}"),
    }
    assert!(s.orchard.push_certificate_status().is_none());
    assert!(matches!(
        s.orchard
            .upload_push_certificate(
                operator,
                PushCertificateUpload::CertificateOnly {
                    certificate: b"not a certificate".to_vec(),
                },
                false
            )
            .await,
        Err(CoreError::Invalid(_))
    ));
    for role in [Role::Admin, Role::Helpdesk, Role::Viewer] {
        assert!(matches!(
            principal(&s, role).operator(),
            Err(CoreError::Forbidden(_))
        ));
    }
    assert!(s.store.list_push_csr_keys().await.unwrap().is_empty());
}

async fn vendor_signed_request_verifies_and_bad_vendor_input_stores_nothing(backend: Backend) {
    let Some(s) = Setup::start(backend).await else {
        return;
    };
    let now = s.clock.now();
    let wwdr = CertificateAuthority::generate("Test WWDR", UnixTime(now.0 - DAY), 3650).unwrap();
    let root =
        CertificateAuthority::generate("Test Apple Root", UnixTime(now.0 - DAY), 3650).unwrap();
    let vendor = wwdr
        .issue_signing_identity("MDM Vendor: Orchard", UnixTime(now.0 - DAY), 365)
        .unwrap();
    let mut chain = vendor.cert_pem();
    chain.extend(wwdr.cert_pem());
    chain.extend(root.cert_pem());
    let csr = s
        .orchard
        .create_push_csr(
            &s.operator,
            Some(VendorIdentity {
                cert_chain_pem: chain.clone(),
                key_pem: vendor.key_pem(),
            }),
        )
        .await
        .unwrap();
    let request = orchard_pki::push_csr::decode_push_certificate_request(
        csr.vendor_signed_request_b64.as_deref().unwrap(),
    )
    .unwrap();
    let csr_der = X509Req::from_pem(csr.csr_pem.as_bytes())
        .unwrap()
        .to_der()
        .unwrap();
    assert_eq!(request.csr_der, csr_der);
    let vendor_public = vendor.x509().public_key().unwrap();
    let mut verifier =
        openssl::sign::Verifier::new(MessageDigest::sha256(), &vendor_public).unwrap();
    verifier.update(&request.csr_der).unwrap();
    assert!(verifier.verify(&request.signature).unwrap());
    assert_eq!(s.store.list_push_csr_keys().await.unwrap().len(), 1);

    // A vendor key that does not belong to the chain: a clear 400-class error, and no key kept.
    let stranger = orchard_pki::Identity::generate_self_signed_rsa("stranger", now, 1).unwrap();
    let refused = s
        .orchard
        .create_push_csr(
            &s.operator,
            Some(VendorIdentity {
                cert_chain_pem: chain,
                key_pem: Secret::new(stranger.key_pem().expose().clone()),
            }),
        )
        .await;
    match refused {
        Err(CoreError::Invalid(m)) => assert!(m.contains("vendor"), "{m}"),
        other => panic!("expected invalid vendor input, got {other:?}"),
    }
    assert_eq!(s.store.list_push_csr_keys().await.unwrap().len(), 1);
}

orchard_testkit::backend_tests! {
    certificate_alone_is_paired_with_the_sealed_key_and_pushes => certificate_alone_is_paired_with_the_sealed_key_and_pushes;
    der_certificates_and_the_renewal_guard => der_certificates_and_the_renewal_guard;
    unknown_keys_garbage_and_non_operators_are_refused => unknown_keys_garbage_and_non_operators_are_refused;
    vendor_signed_request_verifies_and_bad_vendor_input_stores_nothing => vendor_signed_request_verifies_and_bad_vendor_input_stores_nothing;
}
