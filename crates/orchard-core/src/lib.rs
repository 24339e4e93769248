//! Orchard's domain services: enrollment, the device check-in and command protocol, the command queue,
//! inventory, and the admin operations behind the API. No HTTP types here: the server crate adapts.

pub mod access;
#[cfg(feature = "openapi")]
pub mod api_schema;
pub mod apps;
pub mod commands;
pub mod credentials;
pub mod declarative;
pub mod dep;
pub mod desired;
pub mod device;
pub mod enrollment;
pub mod error;
pub mod jobs;
pub mod limits;
pub mod observability;
pub mod osupdate;
pub mod push;
pub mod reporting;
pub mod tenancy;
pub mod webhooks;

use std::sync::Arc;

use orchard_pki::seal::DataKey;
use orchard_pki::{CertificateAuthority, Identity};
use orchard_store::{ScopeAuthority, Store};
use orchard_types::{ApnsTopic, Clock, UnixTime};

pub use error::{CoreError, DeviceRejection};

/// Settings the core needs, validated by the binary before it builds an [`Orchard`].
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// The https origin devices use, e.g. `https://mdm.example.edu:8443` (no trailing slash).
    pub public_url: String,
    /// The development topic used until a push certificate is uploaded (then the certificate's topic rules).
    pub topic: ApnsTopic,
    /// Shown in profiles and organization info.
    pub organization: String,
    /// How long a SCEP challenge handed out with a profile stays usable.
    pub challenge_ttl_seconds: i64,
    /// Lifetime of device identity certificates issued by SCEP.
    pub identity_validity_days: u32,
    /// Authenticate, TokenUpdate and CheckOut whose Mdm-Signature carries a signingTime further than this from
    /// the server's clock are refused (replay window); None turns the check off.
    pub device_message_max_age_seconds: Option<i64>,
}

impl CoreConfig {
    pub fn checkin_url(&self) -> String {
        format!("{}/mdm/checkin", self.public_url)
    }
    pub fn server_url(&self) -> String {
        format!("{}/mdm/command", self.public_url)
    }
    pub fn scep_url(&self) -> String {
        format!("{}/scep", self.public_url)
    }
    pub fn enrollment_url(&self, link_secret: &str) -> String {
        format!("{}/enroll/{}", self.public_url, link_secret)
    }
    /// Where Automated Device Enrollment sends the device's signed MachineInfo (the ADE profile's `url`).
    pub fn dep_enrollment_url(&self) -> String {
        format!("{}/enroll/dep", self.public_url)
    }
}

/// The PKI material a running server holds: the device CA (which is also the SCEP RA), the server CA and the
/// identity that signs enrollment profiles.
pub struct PkiMaterial {
    /// Issues device identities; never installed on devices as a trusted root.
    pub ca: CertificateAuthority,
    /// Installed on devices by the enrollment profile and pinned by ADE profiles: it issued the profile
    /// signer (and Orchard's own TLS certificate), and its name constraints keep it from vouching for any
    /// other site.
    pub server_ca: CertificateAuthority,
    /// Issued by the server CA.
    pub profile_signer: Identity,
    /// Seals secrets stored in the database.
    pub data_key: DataKey,
}

/// The core service. Cheap to share behind an `Arc`; handlers call its methods.
pub struct Orchard {
    pub(crate) store: Store,
    /// Turns authenticated principals into scopes; only the access module can use it.
    pub(crate) scopes: access::capability::ScopeMint,
    pub(crate) pki: Arc<PkiMaterial>,
    pub(crate) config: CoreConfig,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) push: push::PushState,
    pub(crate) dep: dep::DepState,
    /// Apps and Books (Apple's service unless configured otherwise).
    pub(crate) apps: Arc<apps::AppsSettings>,
    /// Where Activation Lock is cleared (Apple's activation service unless configured otherwise).
    pub(crate) activation_lock: device::activation_lock::ActivationLockSettings,
    /// Price and currency of the usage report.
    pub(crate) usage: reporting::usage::UsageSettings,
    /// University single sign-on (off until [`Orchard::with_oidc_settings`]).
    pub(crate) oidc: access::oidc::OidcState,
    /// How long API tokens made through the API may live, per role.
    pub(crate) token_policy: access::tokens::TokenPolicy,
    /// How commands carrying a device credential are delivered (short deadline).
    pub(crate) secret_commands: commands::secrets::SecretCommandSettings,
    /// Sign-in throttling, concurrent password checks and per-link download rates (this node's memory).
    pub(crate) abuse: limits::AbuseLimits,
    /// Resends, attempts and history retention of the command queue.
    pub(crate) command_queue: commands::hygiene::CommandQueueSettings,
    pub(crate) renewal: enrollment::renewal::IdentityRenewalSettings,
    /// Device certificates already proved to be issued by `pki.ca`: a device's next request skips that check.
    pub(crate) signers: orchard_pki::signature::SignerCache,
    /// The reconciler's settings and this node's wake-up signal for it.
    pub(crate) reconciler: desired::reconciler::ReconcilerState,
    /// Rendered declaration sets per channel (this node's memory, checked against the database per request).
    pub(crate) declarative: declarative::DeclarativeState,
    /// Each tenant's smart-group filters (this node's memory, checked against the database's revision).
    pub(crate) smart_groups: desired::smart_group_cache::SmartGroupCache,
    /// Where the OS catalogue is refreshed from.
    pub(crate) os_catalogue: osupdate::OsCatalogueSettings,
    /// Webhook delivery settings and this node's wake-up signal for the delivery job.
    pub(crate) webhooks: webhooks::WebhookState,
    /// The credential register's thresholds, central IT's address, the TLS certificate's expiry and the mailer.
    pub(crate) credentials: credentials::CredentialSettings,
    /// This node's counters for `/metrics`.
    pub(crate) metrics: observability::Metrics,
}

/// Device certificates whose issuance is remembered (about 0.8 KB each with the key kept as bytes, so at most
/// ~40 MB; a kept OpenSSL key alone was ~2.6 KB): a large university's fleet. Beyond it, the least recently seen
/// devices pay the full check again.
const SIGNER_CACHE_CAPACITY: usize = 50_000;

impl Orchard {
    /// `store` and `scopes` are what [`Store::connect`] returned: the binary opens the database and hands both
    /// over, so scopes are made only inside core's access module.
    pub fn new(
        store: Store,
        scopes: ScopeAuthority,
        pki: Arc<PkiMaterial>,
        config: CoreConfig,
        clock: Arc<dyn Clock>,
        push_settings: push::PushSettings,
    ) -> Self {
        Self {
            signers: orchard_pki::signature::SignerCache::new(&pki.ca, SIGNER_CACHE_CAPACITY),
            store,
            scopes: access::capability::ScopeMint::new(scopes),
            pki,
            config,
            clock,
            push: push::PushState::new(push_settings),
            dep: dep::DepState::new(dep::DepSettings::default()),
            apps: Arc::new(apps::AppsSettings::default()),
            activation_lock: device::activation_lock::ActivationLockSettings::default(),
            usage: reporting::usage::UsageSettings::default(),
            oidc: access::oidc::OidcState::default(),
            token_policy: access::tokens::TokenPolicy::default(),
            secret_commands: commands::secrets::SecretCommandSettings::default(),
            abuse: limits::AbuseLimits::default(),
            command_queue: commands::hygiene::CommandQueueSettings::default(),
            renewal: enrollment::renewal::IdentityRenewalSettings::default(),
            reconciler: desired::reconciler::ReconcilerState::default(),
            declarative: declarative::DeclarativeState::default(),
            smart_groups: desired::smart_group_cache::SmartGroupCache::default(),
            os_catalogue: osupdate::OsCatalogueSettings::default(),
            webhooks: webhooks::WebhookState::default(),
            credentials: credentials::CredentialSettings::default(),
            metrics: observability::Metrics::default(),
        }
    }

    /// Lifetimes of API tokens made through the API (default: [`access::tokens::TokenPolicy::default`]).
    pub fn with_token_policy(mut self, policy: access::tokens::TokenPolicy) -> Self {
        self.token_policy = policy;
        self
    }

    /// The usage report's price per device and year and its currency (default 400 SEK).
    pub fn with_usage_settings(mut self, settings: reporting::usage::UsageSettings) -> Self {
        self.usage = settings;
        self
    }

    pub fn usage_settings(&self) -> &reporting::usage::UsageSettings {
        &self.usage
    }

    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// The injected clock's time (the web UI computes "not seen for N days" and checklist ages from it).
    pub fn now(&self) -> UnixTime {
        self.clock.now()
    }

    pub fn ca(&self) -> &CertificateAuthority {
        &self.pki.ca
    }
}

/// SHA-256 hex of a secret; what we store instead of tokens, link secrets and challenges.
pub fn secret_hash(secret: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

/// A random url-safe secret of `bytes` random bytes.
pub fn random_secret(bytes: usize) -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

impl Orchard {
    /// Readiness for `/readyz`: the database answers a round trip. The server's own check, no tenant data.
    pub async fn database_ready(
        &self,
        _system: &access::capability::SystemCtx,
    ) -> Result<(), CoreError> {
        self.store.ping().await.map_err(CoreError::from)
    }
}
