//! Push certificate requests made by Orchard: the key stays sealed in the store, Apple's certificate is
//! uploaded alone and paired with it (proved by a real push over TLS to the local APNs server), certificates
//! for unknown keys are refused, the renewal guard still holds, and the vendor-signed request verifies.

// Tests may unwrap and panic: a failed expectation is exactly what should stop them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::x509::extension::{BasicConstraints, ExtendedKeyUsage, KeyUsage};
use openssl::x509::{X509Builder, X509Name, X509Req};
use orchard_apns::fake::{issue_push_certificate, random_topic, FakeApnsServer};
use orchard_apns::{ApnsConfig, TrustRoots};
use orchard_core::access::bootstrap::LocalBootstrap;
use orchard_core::access::capability::OperatorCtx;
use orchard_core::access::principal::Principal;
use orchard_core::push::{PushCertificateUpload, PushSettings, VendorIdentity};
use orchard_core::{CoreConfig, CoreError, Orchard};
use orchard_pki::CertificateAuthority;
use orchard_store::{AuthenticateDevice, NewCommand, Store, Tenant, TokenUpdateRecord};
use orchard_types::{
    ApnsTopic, ChannelId, Clock, CommandUuid, ManualClock, Role, Secret, TenantId, Udid, UnixTime,
};

const DAY: i64 = 86_400;

struct Setup {
    orchard: Arc<Orchard>,
    /// The database the test opened, and its own access to it (the test acts as whoever it needs).
    store: Store,
    bootstrap: LocalBootstrap,
    clock: ManualClock,
    apple: CertificateAuthority,
    _apns: FakeApnsServer,
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
        organization: "Orchard University".into(),
        challenge_ttl_seconds: 3600,
        identity_validity_days: 365,
    };
    let clock_dyn: Arc<dyn Clock> = Arc::new(clock.clone());
    let bootstrap =
        LocalBootstrap::for_opened_database(store.clone(), scopes.clone(), clock_dyn.clone());
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
        bootstrap,
        clock,
        apple,
        _apns: apns,
        _dir: dir,
    }
}

impl Setup {
    /// A principal of `role` (a tenant role gets a tenant of its own).
    fn principal(&self, role: Role) -> Principal {
        let tenant = (!orchard_core::access::roles::spans_all_tenants(role)).then(TenantId::new);
        self.bootstrap.act_as("test", "test", role, tenant).unwrap()
    }

    fn operator(&self) -> OperatorCtx {
        self.principal(Role::Operator).operator().unwrap()
    }
}

/// What Apple's portal does with a CSR: a certificate for the CSR's public key, with Apple's subject
/// (`UID=<topic>, CN=APSP:<uuid>, C=US`) and clientAuth, signed by the stand-in Apple CA.
fn apple_signs(
    apple: &CertificateAuthority,
    csr_pem: &str,
    topic: &ApnsTopic,
    now: UnixTime,
) -> X509Builder {
    let csr = X509Req::from_pem(csr_pem.as_bytes()).unwrap();
    let public_key = csr.public_key().unwrap();
    assert!(csr.verify(&public_key).unwrap());
    let mut name = X509Name::builder().unwrap();
    name.append_entry_by_nid(Nid::USERID, topic.as_str())
        .unwrap();
    let uuid = topic.as_str().rsplit('.').next().unwrap();
    name.append_entry_by_nid(Nid::COMMONNAME, &format!("APSP:{uuid}"))
        .unwrap();
    name.append_entry_by_nid(Nid::COUNTRYNAME, "US").unwrap();
    let name = name.build();
    let mut builder = X509Builder::new().unwrap();
    builder.set_version(2).unwrap();
    let mut serial = BigNum::new().unwrap();
    serial.rand(128, MsbOption::ONE, false).unwrap();
    builder
        .set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    builder.set_subject_name(&name).unwrap();
    builder
        .set_issuer_name(apple.identity().x509().subject_name())
        .unwrap();
    builder.set_pubkey(&public_key).unwrap();
    builder
        .set_not_before(&Asn1Time::from_unix(now.0 - 60).unwrap())
        .unwrap();
    builder
        .set_not_after(&Asn1Time::from_unix(now.0 + 365 * DAY).unwrap())
        .unwrap();
    builder
        .append_extension(BasicConstraints::new().critical().build().unwrap())
        .unwrap();
    builder
        .append_extension(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .key_encipherment()
                .build()
                .unwrap(),
        )
        .unwrap();
    builder
        .append_extension(ExtendedKeyUsage::new().client_auth().build().unwrap())
        .unwrap();
    builder
}

fn issue(apple: &CertificateAuthority, csr_pem: &str, topic: &ApnsTopic, now: UnixTime) -> Vec<u8> {
    let mut builder = apple_signs(apple, csr_pem, topic, now);
    builder
        .sign(apple.identity().private_key(), MessageDigest::sha256())
        .unwrap();
    builder.build().to_pem().unwrap()
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
            queued_by: None,
            queued_at: now,
            expires_at: None,
        }])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_alone_is_paired_with_the_sealed_key_and_pushes() {
    let s = setup().await;
    let csr = s
        .orchard
        .create_push_csr(&s.operator(), None)
        .await
        .unwrap();
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
            &s.operator(),
            PushCertificateUpload::CertificateOnly {
                certificate: issue(&s.apple, &csr.csr_pem, &topic, now),
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
    let stats = s.orchard.dispatch_pushes_once(10).await.unwrap();
    assert_eq!(stats.delivered, 1, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn der_certificates_and_the_renewal_guard() {
    let s = setup().await;
    let operator = s.operator();
    let topic = random_topic().unwrap();
    let first = s.orchard.create_push_csr(&operator, None).await.unwrap();
    // Apple's portal also hands out DER (.cer).
    let pem = issue(&s.apple, &first.csr_pem, &topic, s.clock.now());
    let der = openssl::x509::X509::from_pem(&pem)
        .unwrap()
        .to_der()
        .unwrap();
    s.orchard
        .upload_push_certificate(
            &operator,
            PushCertificateUpload::CertificateOnly { certificate: der },
            false,
        )
        .await
        .unwrap();

    // A renewal (new CSR, same topic) is accepted; another topic is refused unless forced.
    let renewal = s.orchard.create_push_csr(&operator, None).await.unwrap();
    let renewed = issue(&s.apple, &renewal.csr_pem, &topic, s.clock.now());
    s.orchard
        .upload_push_certificate(
            &operator,
            PushCertificateUpload::CertificateOnly {
                certificate: renewed,
            },
            false,
        )
        .await
        .unwrap();
    let other_topic = random_topic().unwrap();
    let other = s.orchard.create_push_csr(&operator, None).await.unwrap();
    let other_cert = issue(&s.apple, &other.csr_pem, &other_topic, s.clock.now());
    let refused = s
        .orchard
        .upload_push_certificate(
            &operator,
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
            &operator,
            PushCertificateUpload::CertificateOnly {
                certificate: other_cert,
            },
            true,
        )
        .await
        .unwrap();
    assert_eq!(s.orchard.current_topic(), other_topic);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_keys_garbage_and_non_operators_are_refused() {
    let s = setup().await;
    let operator = s.operator();
    let topic = random_topic().unwrap();
    let now = s.clock.now();
    // A push certificate whose key Orchard never made.
    let foreign = issue_push_certificate(
        &s.apple,
        &topic,
        UnixTime(now.0 - 60),
        now.plus_seconds(DAY),
    )
    .unwrap();
    let refused = s
        .orchard
        .upload_push_certificate(
            &operator,
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
                &operator,
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
            s.principal(role).operator(),
            Err(CoreError::Forbidden(_))
        ));
    }
    assert!(s.store.list_push_csr_keys().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vendor_signed_request_verifies_and_bad_vendor_input_stores_nothing() {
    let s = setup().await;
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
            &s.operator(),
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
            &s.operator(),
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
