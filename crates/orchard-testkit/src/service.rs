//! Orchard in-process for core's tests: the service over a test database, with PKI made in memory (no data
//! directory) and the configuration every core test uses.

use std::sync::Arc;

use orchard_core::access::bootstrap::LocalBootstrap;
use orchard_core::access::capability::OperatorCtx;
use orchard_core::access::principal::Principal;
use orchard_core::push::{DispatchStats, PushCertificateUpload, PushSettings};
use orchard_core::CoreError;
use orchard_core::{CoreConfig, Orchard, PkiMaterial};
use orchard_pki::scep::{self, CertRepOutcome};
use orchard_pki::seal::DataKey;
use orchard_pki::signature::sign_mdm_body;
use orchard_pki::CertificateAuthority;
use orchard_pki::Identity;
use orchard_protocol::checkin::{Authenticate, CheckinMessage, TokenUpdate};
use orchard_protocol::commands::Command;
use orchard_protocol::report::{CommandReport, ReportStatus};
use orchard_store::{
    AuthenticateDevice, Device, EnrollmentLink, IdentityGrant, NewCommand, ScepChallenge,
    ScopeAuthority, Store, Tenant, TokenUpdateRecord,
};
use orchard_types::{
    ApnsTopic, ChannelId, Clock, CommandUuid, DeviceId, EnrollmentLinkId, ManualClock, PushMagic,
    RequestType, Role, SystemClock, TenantId, Udid, UnixTime,
};

use crate::apple::ApplePush;
use crate::{Backend, TestDatabase};

/// The development topic of test servers (no push certificate uploaded).
pub const TEST_TOPIC: &str = "com.apple.mgmt.External.orchard-dev-test";

/// Long enough for every clock a test moves forward (usage runs over days, push certificates over a year).
const TEST_CA_DAYS: u32 = 3650;

/// A device CA, a server CA for `mdm.example.edu`, a profile signer issued by the server CA and a data key,
/// valid from `now`: what the binary loads from its data directory, made in memory.
pub fn test_pki(now: UnixTime) -> PkiMaterial {
    let ca = CertificateAuthority::generate("Orchard Test CA", now, TEST_CA_DAYS).expect("test ca");
    let server_ca = CertificateAuthority::generate_server_ca(
        "Orchard Test Server CA",
        &["mdm.example.edu".to_owned()],
        &[],
        now,
        TEST_CA_DAYS,
    )
    .expect("test server ca");
    let profile_signer = server_ca
        .issue_signing_identity("Orchard Test Profile Signing", now, TEST_CA_DAYS)
        .expect("test profile signer");
    PkiMaterial {
        ca,
        server_ca,
        profile_signer,
        data_key: DataKey::generate().expect("test data key"),
    }
}

/// The configuration of an in-process test Orchard: `https://mdm.example.edu`, the test topic.
pub fn test_config() -> CoreConfig {
    CoreConfig {
        public_url: "https://mdm.example.edu".into(),
        topic: ApnsTopic::parse(TEST_TOPIC).expect("test topic"),
        organization: "Orchard University".into(),
        challenge_ttl_seconds: 3600,
        identity_validity_days: 365,
        // Simulated iPads sign with OpenSSL's wall clock while these tests inject theirs.
        device_message_max_age_seconds: None,
    }
}

/// An `Orchard` over `store` (with the `scopes` that came with it) with fresh test PKI and [`test_config`];
/// `with_*` settings can follow.
pub fn test_orchard(
    store: Store,
    scopes: ScopeAuthority,
    clock: Arc<dyn Clock>,
    push: PushSettings,
) -> Orchard {
    let pki = Arc::new(test_pki(clock.now()));
    test_node(store, scopes, pki, clock, push)
}

/// An `Orchard` over `store` with the given PKI: several of these with one PKI are the nodes of one
/// installation (they open each other's sealed secrets, as nodes with a copied data directory do).
pub fn test_node(
    store: Store,
    scopes: ScopeAuthority,
    pki: Arc<PkiMaterial>,
    clock: Arc<dyn Clock>,
    push: PushSettings,
) -> Orchard {
    Orchard::new(store, scopes, pki, test_config(), clock, push)
}

/// The push tests' set-up: an `Orchard` in-process over a test database, on a hand-moved clock that starts now,
/// pushing to a local APNs whose push CA issues the push certificates.
pub struct PushSetup {
    pub orchard: Arc<Orchard>,
    /// The database the test opened, for checks that look past the service.
    pub store: Store,
    /// The test's own access to the database it opened: it acts as whoever it needs.
    pub bootstrap: LocalBootstrap,
    /// The local operator the test acts as (from [`bootstrap`](Self::bootstrap)).
    pub operator: OperatorCtx,
    pub clock: ManualClock,
    /// Apple's push CA and the local APNs server.
    pub push: ApplePush,
    /// The PKI the node was made with, so [`PushSetup::another_node`] can make a second node of the same
    /// installation.
    pub pki: Arc<PkiMaterial>,
    /// The settings the node pushes with.
    pub settings: PushSettings,
    database: TestDatabase,
}

impl PushSetup {
    /// `None` when PostgreSQL is skipped on purpose.
    pub async fn start(backend: Backend) -> Option<PushSetup> {
        Self::start_with(backend, |_| {}).await
    }

    /// [`PushSetup::start`] with the push settings changed by `adjust` (e.g. the APNs client's retries).
    pub async fn start_with(
        backend: Backend,
        adjust: impl FnOnce(&mut PushSettings),
    ) -> Option<PushSetup> {
        let database = TestDatabase::create(backend)
            .await
            .expect("test database")?;
        let start = SystemClock.now();
        let clock = ManualClock::new(start);
        let (store, scopes) = database.store().await.expect("test store");
        let push = ApplePush::start(start).await.expect("local apns");
        let mut settings = push.settings().expect("push settings");
        adjust(&mut settings);
        let clock_dyn: Arc<dyn Clock> = Arc::new(clock.clone());
        let bootstrap =
            LocalBootstrap::for_opened_database(store.clone(), scopes.clone(), clock_dyn.clone());
        let operator = bootstrap.operator().expect("local operator");
        let pki = Arc::new(test_pki(clock.now()));
        let orchard = Arc::new(test_node(
            store.clone(),
            scopes,
            pki.clone(),
            clock_dyn,
            settings.clone(),
        ));
        Some(PushSetup {
            orchard,
            store,
            bootstrap,
            operator,
            clock,
            push,
            pki,
            settings,
            database,
        })
    }

    /// A second node of the same installation: its own connection pool on the same database, the same PKI and
    /// push settings, the same clock, its own memory (push leases, pauses, the loaded certificate).
    pub async fn another_node(&self) -> Arc<Orchard> {
        let (store, scopes) = self.database.store().await.expect("second store");
        Arc::new(test_node(
            store,
            scopes,
            self.pki.clone(),
            Arc::new(self.clock.clone()),
            self.settings.clone(),
        ))
    }

    /// This node driven as [`DeviceNode`] drives its own: iPads enrolled through its SCEP and reporting with
    /// requests their identities sign, on the same clock.
    pub fn device_node(&self) -> DeviceNode {
        DeviceNode {
            orchard: self.orchard.clone(),
            clock: self.clock.clone(),
            store: self.store.clone(),
            pki: self.pki.clone(),
        }
    }

    /// A connection of its own to the test database, for benchmarks that write rows directly.
    pub async fn connect_database(&self) -> anyhow::Result<sqlx::AnyConnection> {
        self.database.connect().await
    }

    /// A push certificate for `topic` from the local APNs's push CA, valid from a minute ago for `days`.
    pub fn push_certificate(&self, topic: &ApnsTopic, days: i64) -> PushCertificateUpload {
        let now = self.clock.now();
        let cert = orchard_apns::fake::issue_push_certificate(
            &self.push.ca,
            topic,
            UnixTime(now.0 - 60),
            now.plus_seconds(days * 86_400),
        )
        .expect("push certificate");
        PushCertificateUpload::Pem {
            certificate: cert.cert_pem(),
            private_key: cert.key_pem().expose().clone(),
        }
    }

    /// Uploads a push certificate for a new random topic, valid for a year, as the operator; returns the topic.
    pub async fn upload_push_certificate(&self) -> ApnsTopic {
        let topic = orchard_apns::fake::random_topic().expect("topic");
        self.orchard
            .upload_push_certificate(&self.operator, self.push_certificate(&topic, 365), false)
            .await
            .expect("push certificate upload");
        topic
    }

    /// An enrolled device (in a tenant of its own) whose device channel has the push token `token`.
    pub async fn enrolled(&self, token: &[u8]) -> (ChannelId, Device) {
        let now = self.clock.now();
        let tenant = Tenant {
            id: TenantId::new(),
            name: "Physics".into(),
            code: format!("p{}", uuid::Uuid::new_v4().simple()),
            created_at: now,
        };
        self.store.create_tenant(&tenant).await.expect("tenant");
        let udid = Udid::parse(&uuid::Uuid::new_v4().hyphenated().to_string().to_uppercase())
            .expect("udid");
        let device = self
            .store
            .authenticate_device(&AuthenticateDevice {
                udid: udid.clone(),
                tenant_id: tenant.id,
                cert_fingerprint: uuid::Uuid::new_v4().simple().to_string(),
                topic: "t".into(),
                facts: Default::default(),
                now,
            })
            .await
            .expect("device");
        let channel = ChannelId::device(&udid);
        self.token_update(&device, &channel, token).await;
        (channel, device)
    }

    /// A TokenUpdate of the channel with the push token `token`.
    pub async fn token_update(&self, device: &Device, channel: &ChannelId, token: &[u8]) {
        self.store
            .update_token(&TokenUpdateRecord {
                device_id: device.id,
                channel: channel.clone(),
                user_short_name: None,
                user_id: None,
                push_token: token.to_vec(),
                push_magic: "4D7D2A9C-0000-0000-0000-000000000001".into(),
                unlock_token: None,
                awaiting_configuration: false,
                now: self.clock.now(),
            })
            .await
            .expect("token update");
    }

    /// Queues one command of `request_type` for the channel (a push is then owed).
    pub async fn queue(
        &self,
        device: &Device,
        channel: &ChannelId,
        request_type: RequestType,
    ) -> CommandUuid {
        let uuid = CommandUuid::new_random();
        self.store
            .enqueue_commands(&[NewCommand {
                uuid: uuid.clone(),
                device_id: device.id,
                tenant_id: device.tenant_id,
                channel: channel.clone(),
                request_type,
                payload: b"<plist/>".to_vec(),
                payload_sealed: false,
                body_id: None,
                deliver_once: false,
                queued_by: None,
                queued_at: self.clock.now(),
                expires_at: None,
            }])
            .await
            .expect("enqueue");
        uuid
    }

    /// One dispatcher pass of this node (up to 100 channels), as the server's push job runs it.
    pub async fn dispatch(&self) -> DispatchStats {
        self.orchard
            .dispatch_pushes_once(&self.orchard.system(), 100)
            .await
            .expect("dispatch")
    }
}

/// A node whose devices are driven through core's own device entry points (SCEP, check-in) with requests
/// signed as an iPad signs them, on a hand-moved clock that starts now.
pub struct DeviceNode {
    pub orchard: Arc<Orchard>,
    pub clock: ManualClock,
    pub store: Store,
    /// The PKI the node was made with, so [`DeviceNode::another_node`] can make a second node of it.
    pki: Arc<PkiMaterial>,
}

impl DeviceNode {
    /// The node, with the replay window of state-changing check-ins set to `max_age` seconds (None: off).
    pub fn new(store: Store, scopes: ScopeAuthority, max_age: Option<i64>) -> DeviceNode {
        let clock = ManualClock::new(SystemClock.now());
        let mut config = test_config();
        config.device_message_max_age_seconds = max_age;
        let pki = Arc::new(test_pki(clock.now()));
        let orchard = Arc::new(Orchard::new(
            store.clone(),
            scopes,
            pki.clone(),
            config,
            Arc::new(clock.clone()),
            PushSettings::default(),
        ));
        DeviceNode {
            orchard,
            clock,
            store,
            pki,
        }
    }

    /// A second node of the same installation (`scopes`: the authority the database was opened with): the
    /// same database, PKI and clock, its own memory. Its iPads are this node's.
    pub fn another_node(&self, scopes: ScopeAuthority) -> DeviceNode {
        DeviceNode {
            orchard: Arc::new(test_node(
                self.store.clone(),
                scopes,
                self.pki.clone(),
                Arc::new(self.clock.clone()),
                PushSettings::default(),
            )),
            clock: self.clock.clone(),
            store: self.store.clone(),
            pki: self.pki.clone(),
        }
    }

    /// A central-IT operator of this node's database (`scopes`: the authority it was opened with), signed in
    /// by API token as the admin API signs one in.
    pub async fn operator(&self, scopes: &ScopeAuthority) -> Principal {
        let created = LocalBootstrap::for_opened_database(
            self.store.clone(),
            scopes.clone(),
            Arc::new(self.clock.clone()),
        )
        .create_api_token("central-it", Role::Operator, None, None)
        .await
        .expect("operator token");
        self.orchard
            .authenticate_bearer(&created.secret)
            .await
            .expect("operator signs in")
    }

    /// Asks the iPad for the inventory facts through the API's use case (`who` may manage it): a
    /// DeviceInformation of its OS version and battery level, answered in its next session.
    pub async fn ask_inventory(&self, who: &Principal, ipad: &SignedIpad) {
        self.orchard
            .queue_command(
                who,
                ipad.device_id,
                Command::DeviceInformation {
                    queries: vec!["OSVersion".into(), "BatteryLevel".into()],
                },
            )
            .await
            .expect("DeviceInformation queued");
    }

    /// A device identity bought through SCEP with a fresh challenge of a new link of a new tenant.
    pub async fn identity(&self) -> Identity {
        self.identity_with(IdentityGrant::Link).await.0
    }

    /// An identity whose SCEP challenge carried `grant`, and the tenant of its link.
    pub async fn identity_with(&self, grant: IdentityGrant) -> (Identity, TenantId) {
        let now = self.clock.now();
        let tenant = Tenant {
            id: TenantId::new(),
            name: "Physics".into(),
            code: format!("p{}", uuid::Uuid::new_v4().simple())
                .chars()
                .take(30)
                .collect(),
            created_at: now,
        };
        self.store.create_tenant(&tenant).await.expect("tenant");
        let link = EnrollmentLink {
            id: EnrollmentLinkId::new(),
            tenant_id: tenant.id,
            name: "cart".into(),
            secret_hash: orchard_core::secret_hash(&uuid::Uuid::new_v4().to_string()),
            max_uses: None,
            uses: 0,
            expires_at: None,
            created_at: now,
            created_by: None,
        };
        self.store
            .create_enrollment_link(&link)
            .await
            .expect("link");
        let challenge = uuid::Uuid::new_v4().to_string();
        self.store
            .create_scep_challenge(&ScepChallenge {
                challenge_hash: orchard_core::secret_hash(&challenge),
                link_id: link.id,
                tenant_id: tenant.id,
                grant,
                created_at: now,
                expires_at: now.plus_seconds(3600),
                used_at: None,
            })
            .await
            .expect("challenge");
        let key = openssl::rsa::Rsa::generate(2048)
            .and_then(openssl::pkey::PKey::from_rsa)
            .expect("device key");
        let ca_der = self.orchard.ca().cert_der();
        let pending =
            scep::build_pkcs_req(&ca_der, &key, "ipad", Some(&challenge), now).expect("pkcs req");
        let reply = self
            .orchard
            .scep_pki_operation(&pending.message_der)
            .await
            .expect("scep answer");
        let CertRepOutcome::Success(der) =
            scep::decode_cert_rep(&pending, &key, &ca_der, &reply.body).expect("cert rep")
        else {
            panic!("scep refused");
        };
        let cert = openssl::x509::X509::from_der(&der).expect("issued certificate");
        (
            Identity::from_parts(cert, key).expect("identity"),
            tenant.id,
        )
    }

    /// A check-in body signed by `identity` (its Mdm-Signature), through core's check-in entry point.
    pub async fn checkin(&self, identity: &Identity, body: &[u8]) -> Result<(), CoreError> {
        let signature = sign_mdm_body(body, identity).expect("mdm signature");
        self.orchard
            .checkin(Some(&signature), body)
            .await
            .map(|_| ())
    }
}

/// An iPad enrolled through core's check-in entry point ([`DeviceNode::enroll_ipad`]), whose requests its
/// identity signs.
pub struct SignedIpad {
    pub udid: Udid,
    pub identity: Identity,
    pub device_id: DeviceId,
    /// The tenant of the enrollment link its identity came through.
    pub tenant: TenantId,
}

impl DeviceNode {
    /// An iPad13,18 on iOS 18.1 enrolled by link: its Authenticate and TokenUpdate signed by an identity our
    /// SCEP issued.
    pub async fn enroll_ipad(&self) -> SignedIpad {
        let (identity, tenant) = self.identity_with(IdentityGrant::Link).await;
        let udid = random_udid();
        for message in [
            CheckinMessage::Authenticate(Authenticate {
                topic: self.orchard.current_topic(),
                udid: udid.clone(),
                serial_number: None,
                os_version: Some("18.1".into()),
                build_version: None,
                product_name: Some("iPad13,18".into()),
                model: None,
                model_name: None,
                device_name: None,
                imei: None,
                meid: None,
            }),
            CheckinMessage::TokenUpdate(TokenUpdate {
                topic: self.orchard.current_topic(),
                udid: udid.clone(),
                token: vec![0x42; 32],
                push_magic: PushMagic::parse("8E5E2D5B-6F3E-4E59-9F39-2C0C5A9B7A11")
                    .expect("push magic"),
                unlock_token: None,
                awaiting_configuration: false,
                user: None,
            }),
        ] {
            self.checkin(&identity, &message.encode())
                .await
                .expect("check-in");
        }
        let device_id = self
            .store
            .find_device_by_udid(&udid)
            .await
            .expect("device lookup")
            .expect("enrolled device")
            .id;
        SignedIpad {
            udid,
            identity,
            device_id,
            tenant,
        }
    }

    /// A command report of the iPad's device channel signed by its identity, through core's entry point: the
    /// next command's plist, if any.
    pub async fn report(
        &self,
        ipad: &SignedIpad,
        status: ReportStatus,
        uuid: Option<CommandUuid>,
        body: plist::Dictionary,
    ) -> Option<Vec<u8>> {
        let body = CommandReport {
            udid: ipad.udid.clone(),
            user: None,
            status,
            command_uuid: uuid,
            error_chain: Vec::new(),
            body,
        }
        .encode();
        let signature = sign_mdm_body(&body, &ipad.identity).expect("mdm signature");
        self.orchard
            .command_report(Some(&signature), &body)
            .await
            .expect("command report")
    }
}

/// What a simulated iPad says of itself in a DeviceInformation answer: the facts smart groups and the
/// reconciler read, and a battery level (which differs in every answer, as a real battery does, and which no
/// group or plan reads). It is an iPad13,18, supervised.
#[derive(Debug, Clone, Copy)]
pub struct DeviceInformationAnswer<'a> {
    pub serial_number: &'a str,
    pub device_name: &'a str,
    pub os_version: &'a str,
    pub shared_ipad: bool,
    pub battery_level: f64,
}

impl DeviceInformationAnswer<'_> {
    /// The acknowledged report's body (`QueryResponses`) for `udid`.
    pub fn body(&self, udid: &Udid) -> plist::Dictionary {
        let mut responses = plist::Dictionary::new();
        responses.insert("UDID".into(), udid.as_str().into());
        responses.insert("SerialNumber".into(), self.serial_number.into());
        responses.insert("DeviceName".into(), self.device_name.into());
        responses.insert("OSVersion".into(), self.os_version.into());
        responses.insert("ProductName".into(), "iPad13,18".into());
        responses.insert("IsSupervised".into(), true.into());
        responses.insert("IsMultiUser".into(), self.shared_ipad.into());
        responses.insert("BatteryLevel".into(), self.battery_level.into());
        responses.insert(
            "AvailableDeviceCapacity".into(),
            (40.0 - self.battery_level).into(),
        );
        let mut body = plist::Dictionary::new();
        body.insert("QueryResponses".into(), responses.into());
        body
    }
}

/// A random UDID in the form iPads send.
pub fn random_udid() -> Udid {
    Udid::parse(&uuid::Uuid::new_v4().hyphenated().to_string().to_uppercase()).expect("udid")
}
