//! Orchard in-process for core's tests: the service over a test database, with PKI made in memory (no data
//! directory) and the configuration every core test uses.

use std::sync::Arc;

use orchard_core::access::bootstrap::LocalBootstrap;
use orchard_core::access::capability::OperatorCtx;
use orchard_core::push::PushSettings;
use orchard_core::{CoreConfig, Orchard, PkiMaterial};
use orchard_pki::seal::DataKey;
use orchard_pki::CertificateAuthority;
use orchard_store::{ScopeAuthority, Store};
use orchard_types::{ApnsTopic, Clock, ManualClock, SystemClock, UnixTime};

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
}
