//! The `orchard` binary: command-line interface and wiring. The only place that reads configuration and the
//! environment; everything else receives what it needs.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use orchard_core::access::bootstrap::LocalBootstrap;
use orchard_core::access::capability::OperatorCtx;
use orchard_core::{CoreConfig, Orchard};
use orchard_store::{ScopeAuthority, Store};
use orchard_types::{ApnsTopic, Clock, Role, SystemClock, TenantId};

mod cli;
mod pki_files;

#[derive(Parser)]
#[command(
    name = "orchard",
    version,
    about = "Orchard: a self-hosted Apple MDM server for a university's iPads"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Run the server (device surface and admin API) over TLS.
    Serve(Box<ServeArgs>),
    /// Manage API tokens directly in the database (the first operator token is made this way).
    Token {
        #[command(subcommand)]
        command: TokenCommands,
    },
    /// The MDM push certificate (from Apple's Push Certificates Portal), managed directly in the database.
    PushCert {
        #[command(subcommand)]
        command: PushCertCommands,
    },
    /// Break-glass operator accounts (password sign-in at /auth/local when single sign-on is down), managed
    /// directly in the database.
    LocalAccount {
        #[command(subcommand)]
        command: LocalAccountCommands,
    },
    /// Client commands over the admin API of a running server (src/cli).
    #[command(flatten)]
    Api(cli::ApiCommand),
}

#[derive(Subcommand)]
enum LocalAccountCommands {
    /// Create or reset a break-glass operator; reads the password (16 characters or more) from stdin and prints
    /// the user id.
    Set {
        #[command(flatten)]
        storage: StorageArgs,
        #[arg(long)]
        username: String,
    },
}

#[derive(Subcommand)]
enum PushCertCommands {
    /// Make a new push key and CSR for the Apple Push Certificates Portal. The key stays sealed in the
    /// database (it is never written out); upload Apple's certificate alone with `upload --cert`.
    Csr {
        #[command(flatten)]
        storage: StorageArgs,
        /// The MDM vendor certificate chain (PEM bundle: vendor certificate, Apple WWDR intermediate, Apple Root
        /// CA): also write the vendor-signed request the portal accepts (push-request.b64).
        #[arg(long, requires = "vendor_key")]
        vendor_cert: Option<PathBuf>,
        /// The MDM vendor private key (unencrypted PEM).
        #[arg(long, requires = "vendor_cert")]
        vendor_key: Option<PathBuf>,
        /// Directory to write push.csr (and push-request.b64) into.
        #[arg(long)]
        out: PathBuf,
    },
    /// Upload the push certificate: the PEM certificate alone (when `orchard push-cert csr` made its CSR),
    /// PEM certificate and key, or a PKCS#12 file with its password.
    Upload {
        #[command(flatten)]
        storage: StorageArgs,
        /// The certificate from the portal (PEM or DER).
        #[arg(long, conflicts_with = "p12")]
        cert: Option<PathBuf>,
        /// Its private key (PEM); not needed when `orchard push-cert csr` made the CSR.
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
        /// A PKCS#12 (.p12) file with certificate and key.
        #[arg(long)]
        p12: Option<PathBuf>,
        /// The PKCS#12 password.
        #[arg(long, env = "ORCHARD_P12_PASSWORD", default_value = "")]
        password: String,
        /// Replace the certificate even though its topic differs: every enrolled iPad is lost.
        #[arg(long)]
        force: bool,
    },
    /// Show the push certificate's topic and expiry.
    Status {
        #[command(flatten)]
        storage: StorageArgs,
    },
}

#[derive(Args, Clone)]
struct StorageArgs {
    /// Directory for the SQLite database, the TLS identity and (unless given otherwise) the key-encryption key.
    #[arg(long, env = "ORCHARD_DATA_DIR", default_value = "./orchard-data")]
    data_dir: PathBuf,
    /// `postgres://user:pass@host/db` to use PostgreSQL; default: SQLite in the data directory.
    #[arg(long, env = "ORCHARD_DATABASE_URL")]
    database_url: Option<String>,
    /// File holding the key-encryption key (32 bytes, base64) that seals the CA keys, the profile signer and the
    /// data key in the database; every node of a database needs the same one. Or the KEK itself in ORCHARD_KEK.
    /// Default: `kek` in the data directory, made by the first start.
    #[arg(long, env = "ORCHARD_KEK_FILE")]
    kek_file: Option<PathBuf>,
}

impl StorageArgs {
    fn kek_config(&self) -> pki_files::KekConfig {
        pki_files::KekConfig {
            file: self.kek_file.clone(),
            env: std::env::var("ORCHARD_KEK")
                .ok()
                .map(orchard_types::Secret::new),
        }
    }
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    storage: StorageArgs,
    /// Address to listen on (port 0 picks a free port; the chosen address is printed).
    #[arg(long, env = "ORCHARD_LISTEN", default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// The https origin devices reach this server at; default: https://<listen address>.
    #[arg(long, env = "ORCHARD_PUBLIC_URL")]
    public_url: Option<String>,
    /// Organization name shown in enrollment profiles.
    #[arg(
        long,
        env = "ORCHARD_ORGANIZATION",
        default_value = "Orchard University"
    )]
    organization: String,
    /// TLS certificate chain (PEM). Default: a certificate issued by Orchard's CA, in the data directory.
    #[arg(long, env = "ORCHARD_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "ORCHARD_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, env = "ORCHARD_LOG_JSON")]
    log_json: bool,
    /// Replay window: Authenticate, TokenUpdate and CheckOut whose Mdm-Signature carries a signing time more
    /// than this many seconds from the server's clock are refused (0 turns the check off; a signature without
    /// a signing time is always accepted, as the protocol allows).
    #[arg(
        long,
        env = "ORCHARD_DEVICE_MESSAGE_MAX_AGE_SECONDS",
        default_value_t = 600
    )]
    device_message_max_age_seconds: u32,
    #[command(flatten)]
    push: PushArgs,
    #[command(flatten)]
    command_queue: CommandQueueArgs,
    #[command(flatten)]
    reconciler: ReconcilerArgs,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    credentials: CredentialArgs,
    /// Apple's public software-update feed, from which operators refresh the OS catalogue
    /// (`POST /api/v1/os-catalogue/refresh`); a local server of the same shape in tests.
    #[arg(
        long,
        env = "ORCHARD_OS_CATALOGUE_URL",
        default_value = "https://gdmf.apple.com/v2/pmv"
    )]
    os_catalogue_url: String,
    /// PEM file with the roots the feed's TLS certificate must chain to (default: the public roots; Apple serves
    /// its feed under Apple's own root, which some platforms lack).
    #[arg(long, env = "ORCHARD_OS_CATALOGUE_CA")]
    os_catalogue_ca: Option<PathBuf>,
    /// Device Assignment (DEP/ASM) service URL: Apple's by default; a local DEP server in tests.
    #[arg(long, env = "ORCHARD_DEP_URL")]
    dep_url: Option<String>,
    /// PEM file with the roots the DEP service's TLS certificate must chain to (default: the public roots).
    #[arg(long, env = "ORCHARD_DEP_CA", requires = "dep_url")]
    dep_ca: Option<PathBuf>,
    /// PEM file with the roots that sign devices' MachineInfo in zero-touch enrollment (Apple's device CA
    /// chain in production, from https://www.apple.com/certificateauthority/). Without it `/enroll/dep`
    /// refuses every device.
    #[arg(long, env = "ORCHARD_DEP_DEVICE_CA")]
    dep_device_ca: Option<PathBuf>,
    /// Minutes between background syncs of every DEP token (0: only when asked through the API).
    #[arg(long, env = "ORCHARD_DEP_SYNC_MINUTES", default_value_t = 15)]
    dep_sync_minutes: u64,
    /// Apps and Books (VPP) service URL up to `/mdm/v2`: Apple's by default; a local server in tests.
    #[arg(long, env = "ORCHARD_APPS_URL")]
    apps_url: Option<String>,
    /// PEM file with the roots the Apps and Books service's TLS certificate must chain to.
    #[arg(long, env = "ORCHARD_APPS_CA", requires = "apps_url")]
    apps_ca: Option<PathBuf>,
    /// Minutes between background syncs of every tenant's Apps and Books location (0: only on request).
    #[arg(long, env = "ORCHARD_APPS_SYNC_MINUTES", default_value_t = 60)]
    apps_sync_minutes: u64,
    /// Endpoint of Apple's activation service, used to clear Activation Lock with an escrowed bypass code
    /// (default: Apple's); a local service in tests.
    #[arg(long, env = "ORCHARD_ACTIVATION_LOCK_URL")]
    activation_lock_url: Option<String>,
    /// PEM file with the roots the activation service's TLS certificate must chain to (default: the public
    /// roots).
    #[arg(
        long,
        env = "ORCHARD_ACTIVATION_LOCK_CA",
        requires = "activation_lock_url"
    )]
    activation_lock_ca: Option<PathBuf>,
    /// Seconds a command that carries a device credential (ClearPasscode with the UnlockToken) may wait in the
    /// queue; it is delivered at most once and expires after this, answered or not.
    #[arg(long, env = "ORCHARD_SECRET_COMMAND_TTL_SECONDS", default_value_t = orchard_core::commands::secrets::DEFAULT_SECRET_COMMAND_TTL_SECONDS)]
    secret_command_ttl_seconds: i64,
    /// Days a device identity certificate (issued by SCEP) is valid.
    #[arg(long, env = "ORCHARD_DEVICE_IDENTITY_DAYS", default_value_t = 365)]
    device_identity_days: u32,
    /// Orchard renews a device's identity (a fresh enrollment profile over the existing channel) when fewer
    /// than this many days of it remain.
    #[arg(long, env = "ORCHARD_IDENTITY_RENEWAL_DAYS", default_value_t = 60)]
    identity_renewal_days: u32,
    /// Days the previous identity is still accepted after a device switched to its renewed one.
    #[arg(long, env = "ORCHARD_IDENTITY_GRACE_DAYS", default_value_t = 7)]
    identity_grace_days: u32,
    /// Price of one device for one year in the usage report (billing), e.g. 400 or 399.50.
    #[arg(long, env = "ORCHARD_PRICE_PER_DEVICE_YEAR", default_value = "400")]
    price_per_device_year: String,
    /// Currency of that price (ISO 4217).
    #[arg(long, env = "ORCHARD_CURRENCY", default_value = "SEK")]
    currency: String,
    /// Longest lifetime of API tokens made through the API, per role, as ROLE=DAYS (repeat or separate with
    /// commas). Defaults: operator=365, helpdesk=365, admin=90, viewer=180.
    #[arg(long, env = "ORCHARD_TOKEN_MAX_DAYS", value_delimiter = ',')]
    token_max_days: Vec<String>,
    /// Lifetime of API tokens whose request names none, in days (capped by the role's maximum).
    #[arg(long, env = "ORCHARD_TOKEN_DEFAULT_DAYS", default_value_t = 30, value_parser = clap::value_parser!(i64).range(1..))]
    token_default_days: i64,
    /// How long a browser session (web UI, single sign-on or break-glass) lasts, in seconds, before the person
    /// must sign in again.
    #[arg(long, env = "ORCHARD_SESSION_TTL_SECONDS", default_value_t = orchard_core::access::oidc::DEFAULT_SESSION_TTL_SECONDS, value_parser = clap::value_parser!(i64).range(1..))]
    session_ttl_seconds: i64,
    // OIDC-BEGIN
    /// University single sign-on (boxed so that `Commands::Serve` stays small).
    #[command(flatten)]
    oidc: Box<OidcArgs>,
    // OIDC-END
}

// OIDC-BEGIN
#[derive(Args)]
struct OidcArgs {
    /// Issuer URL of the university's OpenID Connect provider, exactly as it names itself; turns single
    /// sign-on on (with --oidc-client-id).
    #[arg(long, env = "ORCHARD_OIDC_ISSUER", requires = "oidc_client_id")]
    oidc_issuer: Option<String>,
    /// Client id registered for Orchard at the provider.
    #[arg(long, env = "ORCHARD_OIDC_CLIENT_ID", requires = "oidc_issuer")]
    oidc_client_id: Option<String>,
    /// The client's secret (prefer the environment variable: command lines are visible on the machine).
    #[arg(long, env = "ORCHARD_OIDC_CLIENT_SECRET", hide_env_values = true)]
    oidc_client_secret: Option<String>,
    /// Where the provider sends the browser back; default: <public url>/auth/callback.
    #[arg(long, env = "ORCHARD_OIDC_REDIRECT_URL")]
    oidc_redirect_url: Option<String>,
}
// OIDC-END

impl ServeArgs {
    fn token_policy(&self) -> Result<orchard_core::access::tokens::TokenPolicy> {
        let mut policy = orchard_core::access::tokens::TokenPolicy {
            default_days: self.token_default_days,
            ..Default::default()
        };
        for spec in &self.token_max_days {
            policy
                .set_from_spec(spec)
                .map_err(|e| anyhow::anyhow!("--token-max-days: {e}"))?;
        }
        Ok(policy)
    }

    // OIDC-BEGIN
    fn oidc_settings(&self) -> Result<Option<orchard_core::access::oidc::OidcSettings>> {
        let oidc = &self.oidc;
        let (Some(issuer), Some(client_id)) = (&oidc.oidc_issuer, &oidc.oidc_client_id) else {
            return Ok(None);
        };
        orchard_core::access::oidc::OidcSettings::new(
            issuer,
            client_id,
            oidc.oidc_client_secret.as_deref(),
            oidc.oidc_redirect_url.as_deref(),
        )
        .map(Some)
        .map_err(|e| anyhow::anyhow!("--oidc-*: {e}"))
    }
    // OIDC-END

    fn activation_lock_settings(
        &self,
    ) -> Result<orchard_core::device::activation_lock::ActivationLockSettings> {
        match &self.activation_lock_url {
            None => Ok(orchard_core::device::activation_lock::ActivationLockSettings::default()),
            Some(url) => {
                let roots = self
                    .activation_lock_ca
                    .as_ref()
                    .map(|p| read(p))
                    .transpose()?;
                orchard_core::device::activation_lock::ActivationLockSettings::with_url(
                    url,
                    roots.as_deref(),
                )
                .map_err(|e| anyhow::anyhow!("--activation-lock-ca: {e}"))
            }
        }
    }

    /// `anchor_certs_der`: what ADE profiles pin for our enrollment URL (Orchard's server CA when Orchard made
    /// the TLS certificate).
    fn os_catalogue_settings(&self) -> Result<orchard_core::osupdate::OsCatalogueSettings> {
        let roots = match &self.os_catalogue_ca {
            Some(path) => orchard_core::dep::pem_certificates(&read(path)?)
                .map_err(|e| anyhow::anyhow!("--os-catalogue-ca: {e}"))?,
            None => Vec::new(),
        };
        Ok(orchard_core::osupdate::OsCatalogueSettings {
            feed_url: self.os_catalogue_url.clone(),
            root_certificates_der: roots,
            ..orchard_core::osupdate::OsCatalogueSettings::default()
        })
    }

    fn dep_settings(
        &self,
        anchor_certs_der: Vec<Vec<u8>>,
    ) -> Result<orchard_core::dep::DepSettings> {
        let mut settings = match &self.dep_url {
            None => orchard_core::dep::DepSettings::default(),
            Some(url) => {
                let roots = self.dep_ca.as_ref().map(|p| read(p)).transpose()?;
                orchard_core::dep::DepSettings::with_base_url(url, roots.as_deref())
                    .map_err(|e| anyhow::anyhow!("--dep-ca: {e}"))?
            }
        };
        if let Some(path) = &self.dep_device_ca {
            settings.device_roots_der = orchard_core::dep::pem_certificates(&read(path)?)
                .map_err(|e| anyhow::anyhow!("--dep-device-ca: {e}"))?;
        }
        settings.anchor_certs_der = anchor_certs_der;
        settings.sync_interval_seconds = self.dep_sync_minutes.saturating_mul(60);
        Ok(settings)
    }

    fn apps_settings(&self) -> Result<orchard_core::apps::AppsSettings> {
        let mut settings = match &self.apps_url {
            None => orchard_core::apps::AppsSettings::default(),
            Some(url) => {
                let roots = self.apps_ca.as_ref().map(|p| read(p)).transpose()?;
                orchard_core::apps::AppsSettings::with_base_url(url, roots.as_deref())
                    .map_err(|e| anyhow::anyhow!("--apps-ca: {e}"))?
            }
        };
        settings.sync_interval_seconds = self.apps_sync_minutes.saturating_mul(60);
        Ok(settings)
    }
}

/// Abuse limits of the listener, and who may read `/metrics`.
#[derive(Args, Clone)]
struct LimitArgs {
    /// Seconds a client has to send a request's headers (HTTP/1.1) once it starts.
    #[arg(long, env = "ORCHARD_HEADER_TIMEOUT_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    header_timeout_seconds: u64,
    /// Seconds a client has to send a request's whole body after its headers.
    #[arg(long, env = "ORCHARD_BODY_TIMEOUT_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    body_timeout_seconds: u64,
    /// Seconds a connection may sit idle (no byte either way, no request being answered) before it is closed.
    #[arg(long, env = "ORCHARD_IDLE_TIMEOUT_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout_seconds: u64,
    /// Connections one client address may hold at once (0: no limit). Every iPad keeps its own connection
    /// alive for a while, so many iPads behind one address (campus NAT) or a proxy in front of Orchard need
    /// this raised (or 0).
    #[arg(long, env = "ORCHARD_MAX_CONNECTIONS_PER_IP", default_value_t = 1024)]
    max_connections_per_ip: usize,
    /// Enrollment profiles one enrollment link hands out per minute (each mints a SCEP challenge); 0: no
    /// limit (benchmarks enrolling thousands of simulated iPads through one link).
    #[arg(long, env = "ORCHARD_LINK_DOWNLOADS_PER_MINUTE", default_value_t = orchard_core::limits::LINK_DOWNLOADS_PER_MINUTE)]
    link_downloads_per_minute: u32,
    /// Bearer token `/metrics` requires (prefer the environment variable); without it `/metrics` is open.
    #[arg(long, env = "ORCHARD_METRICS_TOKEN", hide_env_values = true)]
    metrics_token: Option<String>,
}

impl LimitArgs {
    fn connection_limits(&self) -> orchard_server::ConnectionLimits {
        orchard_server::ConnectionLimits {
            header_read_timeout: std::time::Duration::from_secs(self.header_timeout_seconds),
            body_read_timeout: std::time::Duration::from_secs(self.body_timeout_seconds),
            idle_timeout: std::time::Duration::from_secs(self.idle_timeout_seconds),
            max_connections_per_ip: self.max_connections_per_ip,
            ..orchard_server::ConnectionLimits::default()
        }
    }

    fn metrics_access(&self) -> orchard_server::ops::MetricsAccess {
        match &self.metrics_token {
            Some(token) => orchard_server::ops::MetricsAccess::bearer(token),
            None => orchard_server::ops::MetricsAccess::default(),
        }
    }
}

/// The credential register's expiry warnings: thresholds, central IT's address and the SMTP server.
#[derive(Args, Clone)]
struct CredentialArgs {
    /// Days before a certificate or token expires at which its owner and central IT are e-mailed (each once).
    #[arg(long, env = "ORCHARD_CREDENTIAL_WARNING_DAYS", value_delimiter = ',', default_values_t = orchard_core::credentials::DEFAULT_WARNING_DAYS)]
    credential_warning_days: Vec<i64>,
    /// Minutes between two expiry checks (one node checks at a time).
    #[arg(long, env = "ORCHARD_CREDENTIAL_CHECK_MINUTES", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    credential_check_minutes: u64,
    /// Central IT's address: every expiry warning goes here too (departments' own go to their contact).
    #[arg(long, env = "ORCHARD_CENTRAL_IT_EMAIL")]
    central_it_email: Option<String>,
    /// SMTP server for expiry warnings; without it nobody is e-mailed.
    #[arg(long, env = "ORCHARD_SMTP_HOST", requires = "smtp_from")]
    smtp_host: Option<String>,
    /// SMTP port (default: 587 for starttls, 465 for tls, 25 for plain).
    #[arg(long, env = "ORCHARD_SMTP_PORT")]
    smtp_port: Option<u16>,
    /// starttls (default), tls (implicit TLS) or plain (no TLS: a relay on this host, or tests).
    #[arg(long, env = "ORCHARD_SMTP_SECURITY", default_value = "starttls")]
    smtp_security: String,
    /// SMTP AUTH user name (with --smtp-password).
    #[arg(long, env = "ORCHARD_SMTP_USERNAME", requires = "smtp_password")]
    smtp_username: Option<String>,
    /// SMTP AUTH password (prefer the environment variable).
    #[arg(
        long,
        env = "ORCHARD_SMTP_PASSWORD",
        hide_env_values = true,
        requires = "smtp_username"
    )]
    smtp_password: Option<String>,
    /// The sender of the warnings, e.g. "Orchard <orchard@example.edu>".
    #[arg(long, env = "ORCHARD_SMTP_FROM")]
    smtp_from: Option<String>,
    /// PEM file with the roots the SMTP server's certificate must chain to (default: the public roots).
    #[arg(long, env = "ORCHARD_SMTP_CA")]
    smtp_ca: Option<PathBuf>,
}

impl CredentialArgs {
    fn settings(
        &self,
        tls_certificate_not_after: Option<orchard_types::UnixTime>,
    ) -> Result<orchard_core::credentials::CredentialSettings> {
        use orchard_core::credentials::mail::{Mailer, SmtpSecurity, SmtpSettings};
        let mail = match (&self.smtp_host, &self.smtp_from) {
            (Some(host), Some(from)) => {
                let security = SmtpSecurity::parse(&self.smtp_security)
                    .map_err(|e| anyhow::anyhow!("--smtp-security: {e}"))?;
                let port = self.smtp_port.unwrap_or(match security {
                    SmtpSecurity::StartTls => 587,
                    SmtpSecurity::ImplicitTls => 465,
                    SmtpSecurity::DangerPlaintext => 25,
                });
                let roots_pem = self.smtp_ca.as_ref().map(|p| read(p)).transpose()?;
                let settings = SmtpSettings {
                    host: host.clone(),
                    port,
                    security,
                    username: self.smtp_username.clone(),
                    password: self.smtp_password.clone().map(orchard_types::Secret::new),
                    from: from.clone(),
                    roots_pem,
                    timeout: std::time::Duration::from_secs(30),
                };
                Some(Mailer::new(&settings).map_err(|e| anyhow::anyhow!("--smtp-*: {e}"))?)
            }
            _ => None,
        };
        if let Some(email) = &self.central_it_email {
            if !email.contains('@') {
                bail!("--central-it-email {email:?} is not an e-mail address");
            }
        }
        let mut settings = orchard_core::credentials::CredentialSettings::default()
            .with_warning_days(&self.credential_warning_days)
            .map_err(|e| anyhow::anyhow!("--credential-warning-days: {e}"))?;
        settings.central_it_email = self.central_it_email.clone();
        settings.tls_certificate_not_after = tls_certificate_not_after;
        settings.mail = mail;
        settings.check_interval =
            std::time::Duration::from_secs(self.credential_check_minutes * 60);
        Ok(settings)
    }
}

#[derive(Args, Clone)]
struct PushArgs {
    /// APNs base URL: Apple's production service by default; the sandbox or a local APNs server otherwise.
    #[arg(long, env = "ORCHARD_APNS_URL", default_value = orchard_apns::PRODUCTION_URL)]
    apns_url: String,
    /// PEM file with the roots that APNs' TLS certificate must chain to (default: the public web roots).
    #[arg(long, env = "ORCHARD_APNS_CA")]
    apns_ca: Option<PathBuf>,
    /// Sustained pushes per second, so waking a whole university does not bring every iPad at once.
    #[arg(long, env = "ORCHARD_PUSH_RATE", default_value_t = 2000)]
    push_rate: u32,
    /// Pushes that may go out at once after a quiet period.
    #[arg(long, env = "ORCHARD_PUSH_BURST", default_value_t = 2000)]
    push_burst: u32,
    /// A device silent for this many hours gets a wake-up push (0 turns the sweep off).
    #[arg(long, env = "ORCHARD_WAKE_INACTIVE_HOURS", default_value_t = 24)]
    wake_inactive_hours: i64,
}

impl PushArgs {
    fn settings(&self) -> Result<orchard_core::push::PushSettings> {
        let roots = match &self.apns_ca {
            Some(p) => orchard_apns::TrustRoots::from_pem(&read(p)?)
                .map_err(|e| anyhow::anyhow!("--apns-ca: {e}"))?,
            None => orchard_apns::TrustRoots::Public,
        };
        Ok(orchard_core::push::PushSettings {
            apns: orchard_apns::ApnsConfig::with_base_url(&self.apns_url, roots),
            rate_per_second: self.push_rate.max(1),
            burst: self.push_burst.max(1),
            wake_inactive_after_seconds: self.wake_inactive_hours.max(0) * 3600,
            ..Default::default()
        })
    }
}

#[derive(Args)]
struct CommandQueueArgs {
    /// A command handed to a device this many times without a final answer is marked failed, so the device's
    /// later commands are not held up (0: no limit).
    #[arg(long, env = "ORCHARD_COMMAND_MAX_ATTEMPTS", default_value_t = orchard_core::commands::hygiene::DEFAULT_MAX_ATTEMPTS, value_parser = clap::value_parser!(i64).range(0..))]
    command_max_attempts: i64,
    /// A command sent but not answered is pushed for and handed out again this many minutes later.
    #[arg(long, env = "ORCHARD_COMMAND_RESEND_AFTER_MINUTES", default_value_t = orchard_core::commands::hygiene::DEFAULT_RESEND_AFTER_MINUTES, value_parser = clap::value_parser!(i64).range(0..))]
    command_resend_after_minutes: i64,
    /// Finished commands are kept in the history this many days (0: for ever).
    #[arg(long, env = "ORCHARD_COMMAND_HISTORY_DAYS", default_value_t = orchard_core::commands::hygiene::DEFAULT_HISTORY_DAYS, value_parser = clap::value_parser!(i64).range(0..))]
    command_history_days: i64,
}

#[derive(Args)]
struct ReconcilerArgs {
    /// A failed profile install or removal is queued again this many seconds later, doubled per failure.
    #[arg(long, env = "ORCHARD_RECONCILE_RETRY_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(i64).range(0..))]
    reconcile_retry_seconds: i64,
    /// The reconciler's periodic pass (due retries; reports and changes wake it at once).
    #[arg(long, env = "ORCHARD_RECONCILE_INTERVAL_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    reconcile_interval_seconds: u64,
}

impl ReconcilerArgs {
    fn settings(&self) -> orchard_core::desired::reconciler::ReconcilerSettings {
        orchard_core::desired::reconciler::ReconcilerSettings {
            retry_base_seconds: self.reconcile_retry_seconds,
            interval: std::time::Duration::from_secs(self.reconcile_interval_seconds),
            ..Default::default()
        }
    }
}

impl CommandQueueArgs {
    fn settings(&self) -> orchard_core::commands::hygiene::CommandQueueSettings {
        orchard_core::commands::hygiene::CommandQueueSettings {
            policy: orchard_store::QueuePolicy {
                max_attempts: self.command_max_attempts,
                resend_after_seconds: self.command_resend_after_minutes * 60,
            },
            history_days: self.command_history_days,
        }
    }
}

#[derive(Subcommand)]
enum TokenCommands {
    /// Create an API token and print its secret once (only a hash is stored).
    Create {
        #[command(flatten)]
        storage: StorageArgs,
        /// operator, helpdesk, admin or viewer.
        #[arg(long)]
        role: String,
        /// Tenant id, for the admin and viewer roles.
        #[arg(long)]
        tenant: Option<String>,
        /// A name saying who or what uses the token.
        #[arg(long)]
        name: String,
        /// Days until the token expires (default 30).
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(i64).range(1..))]
        expires_in_days: i64,
        /// A token that never expires (a deliberate choice: prefer renewing a 30-day token).
        #[arg(long, conflicts_with = "expires_in_days")]
        no_expiry: bool,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Commands::Serve(args) => serve(*args).await,
            Commands::Token {
                command:
                    TokenCommands::Create {
                        storage,
                        role,
                        tenant,
                        name,
                        expires_in_days,
                        no_expiry,
                    },
            } => {
                let lifetime_days = (!no_expiry).then_some(expires_in_days);
                token_create(storage, &role, tenant, &name, lifetime_days).await
            }
            Commands::PushCert { command } => push_cert(command).await,
            Commands::LocalAccount { command } => local_account(command).await,
            Commands::Api(command) => cli::run(command).await,
        }
    })
}

fn init_logging(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("ORCHARD_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,hyper=warn"));
    // Colours only for a terminal: a log file or journald gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn database_url(storage: &StorageArgs) -> Result<String> {
    if let Some(url) = &storage.database_url {
        if !(url.starts_with("postgres://")
            || url.starts_with("postgresql://")
            || url.starts_with("sqlite:"))
        {
            bail!("--database-url must be postgres://… or sqlite:…");
        }
        return Ok(url.clone());
    }
    pki_files::create_private_dir(&storage.data_dir)?;
    let abs = std::fs::canonicalize(&storage.data_dir)?;
    Ok(format!("sqlite://{}", abs.join("orchard.db").display()))
}

/// Opens the database: the store, and the scope authority over its tenants that core's access module keeps.
async fn open_store(storage: &StorageArgs) -> Result<(Store, ScopeAuthority)> {
    let url = database_url(storage)?;
    Store::connect(&url)
        .await
        .with_context(|| "opening the database".to_string())
}

/// Until a push certificate is uploaded there is no real topic. Devices still enroll (and poll) under a
/// development topic derived from the CA, so it is the same on every node sharing that CA.
fn development_topic(ca_der: &[u8]) -> Result<ApnsTopic> {
    let fp = orchard_pki::fingerprint_sha256_hex(ca_der);
    let short = fp.get(..32).unwrap_or(&fp);
    ApnsTopic::parse(&format!("com.apple.mgmt.External.orchard-dev-{short}"))
        .map_err(|e| anyhow::anyhow!("development topic: {e}"))
}

async fn serve(args: ServeArgs) -> Result<()> {
    init_logging(args.log_json);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (store, scopes) = open_store(&args.storage).await?;

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let local = listener.local_addr()?;
    let public_url = args
        .public_url
        .clone()
        .unwrap_or_else(|| format!("https://{local}"))
        .trim_end_matches('/')
        .to_string();
    if !public_url.starts_with("https://") {
        bail!("--public-url must be an https:// URL (Apple devices only talk to MDM over TLS)");
    }
    let (dns, ips) = tls_names(&public_url, local.ip());
    let material = pki_files::load_shared_keys(
        &store,
        &args.storage.data_dir,
        &args.storage.kek_config(),
        Some(pki_files::ServerNames {
            dns: &dns,
            ips: &ips,
        }),
        clock.now(),
    )
    .await?;
    let tls_identity = pki_files::tls_identity(
        &args.storage.data_dir,
        &material.server_ca,
        &dns,
        &ips,
        clock.now(),
    )
    .context("preparing the TLS identity")?;
    let server_ca_path = args.storage.data_dir.join("server-ca.pem");
    let topic = development_topic(&material.ca.cert_der())?;

    // Devices in Setup Assistant must trust our TLS certificate before any profile is installed: when Orchard
    // made it, the ADE profile pins Orchard's server CA (name-constrained to our names, never the device CA);
    // an operator's certificate chains to a public root.
    let anchor_certs_der = match &args.tls_cert {
        Some(_) => Vec::new(),
        None => vec![material.server_ca.cert_der()],
    };
    let (tls_cert, tls_key) = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => (read(c)?, read(k)?),
        _ => {
            let mut chain = tls_identity.cert_pem();
            chain.extend_from_slice(&material.server_ca.cert_pem());
            (chain, tls_identity.key_pem().expose().clone())
        }
    };
    let tls = orchard_server::tls_server_config(&tls_cert, &tls_key).map_err(anyhow::Error::msg)?;
    let tls_not_after = orchard_pki::pem_leaf_not_after(&tls_cert)
        .context("reading the TLS certificate's expiry")?;

    let config = CoreConfig {
        public_url: public_url.clone(),
        topic,
        organization: args.organization.clone(),
        challenge_ttl_seconds: 3600,
        identity_validity_days: args.device_identity_days,
        device_message_max_age_seconds: (args.device_message_max_age_seconds > 0)
            .then_some(i64::from(args.device_message_max_age_seconds)),
    };
    let orchard = Arc::new(
        Orchard::new(
            store.clone(),
            scopes,
            Arc::new(material),
            config,
            clock,
            args.push.settings()?,
        )
        .with_dep_settings(args.dep_settings(anchor_certs_der)?)
        .with_os_catalogue_settings(args.os_catalogue_settings()?)
        .with_apps_settings(args.apps_settings()?)
        .with_identity_renewal(
            orchard_core::enrollment::renewal::IdentityRenewalSettings::new(
                args.device_identity_days,
                args.identity_renewal_days,
                args.identity_grace_days,
            )
            .map_err(|e| anyhow::anyhow!("--device-identity-days/--identity-renewal-days: {e}"))?,
        )
        .with_activation_lock_settings(args.activation_lock_settings()?)
        .with_secret_command_settings(
            orchard_core::commands::secrets::SecretCommandSettings::new(
                args.secret_command_ttl_seconds,
            )
            .map_err(|e| anyhow::anyhow!("--secret-command-ttl-seconds: {e}"))?,
        )
        .with_usage_settings(
            orchard_core::reporting::usage::UsageSettings::new(
                &args.price_per_device_year,
                &args.currency,
            )
            .map_err(|e| anyhow::anyhow!("--price-per-device-year/--currency: {e}"))?,
        )
        .with_token_policy(args.token_policy()?)
        .with_session_ttl_seconds(args.session_ttl_seconds)
        .with_command_queue_settings(args.command_queue.settings())
        .with_reconciler_settings(args.reconciler.settings())
        .with_link_download_limit(args.limits.link_downloads_per_minute)
        .with_credential_settings(args.credentials.settings(Some(tls_not_after))?)
        .with_oidc_settings(args.oidc_settings()?), // OIDC
    );
    // Start-up steps act as the server itself.
    let system = orchard.system();
    orchard
        .reseal_legacy_secrets(&system)
        .await
        .context("sealing secrets an earlier version stored in plaintext")?;
    if let Err(e) = orchard.load_push_certificate(&system).await {
        tracing::error!(error = %e, "the stored push certificate could not be loaded; pushes are off");
    }
    if orchard.push_certificate_status().is_none() {
        tracing::warn!(topic = %orchard.current_topic(), "no push certificate uploaded: devices enroll under a development topic and are not woken by push; they must poll");
    }
    // Push dispatch, DEP sync and the usage snapshot run as jobs until `stop_jobs` is dropped.
    let (stop_jobs, jobs_stopped) = tokio::sync::watch::channel(());
    let jobs = orchard.start_jobs(jobs_stopped);
    let app = orchard_server::build_app_with(
        orchard.clone(),
        orchard_server::Limits::default(),
        args.limits.metrics_access(),
    );

    // The first line on stdout says where we listen, so scripts and tests can find an ephemeral port.
    println!(
        "listening on https://{local} (public url {public_url}, ca {})",
        server_ca_path.display()
    );
    tracing::info!(%local, %public_url, backend = ?store.backend(), "orchard serving");
    orchard_server::serve_tls(
        listener,
        tls,
        app,
        args.limits.connection_limits(),
        shutdown_signal(),
    )
    .await;
    drop(stop_jobs);
    jobs.join().await;
    store.close().await;
    Ok(())
}

fn read(p: &Path) -> Result<Vec<u8>> {
    std::fs::read(p).with_context(|| format!("reading {}", p.display()))
}

/// The names the development TLS certificate must cover: the public URL's host, plus localhost.
fn tls_names(public_url: &str, listen_ip: IpAddr) -> (Vec<String>, Vec<IpAddr>) {
    let host = public_url
        .trim_start_matches("https://")
        .split('/')
        .next()
        .unwrap_or("");
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut dns = vec!["localhost".to_string()];
    let mut ips: Vec<IpAddr> = vec![IpAddr::from([127, 0, 0, 1])];
    match host.parse::<IpAddr>() {
        Ok(ip) => ips.push(ip),
        Err(_) if !host.is_empty() => dns.push(host.to_string()),
        Err(_) => {}
    }
    if !listen_ip.is_unspecified() {
        ips.push(listen_ip);
    }
    dns.dedup();
    ips.sort();
    ips.dedup();
    (dns, ips)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

async fn token_create(
    storage: StorageArgs,
    role: &str,
    tenant: Option<String>,
    name: &str,
    lifetime_days: Option<i64>,
) -> Result<()> {
    init_logging(false);
    let role = Role::parse(role).context("--role must be operator, helpdesk, admin or viewer")?;
    let tenant = tenant
        .map(|t| TenantId::parse(&t).map_err(|e| anyhow::anyhow!("--tenant: {e}")))
        .transpose()?;
    let (store, scopes) = open_store(&storage).await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let expires_at = lifetime_days.map(|d| clock.now().plus_seconds(d * 86_400));
    let bootstrap = LocalBootstrap::for_opened_database(store.clone(), scopes, clock);
    let created = bootstrap
        .create_api_token(name, role, tenant, expires_at)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    store.close().await;
    println!("{}", created.secret);
    let expiry = match expires_at {
        Some(t) => format!("expires {}", t.to_rfc3339()),
        None => "never expires".to_string(),
    };
    eprintln!(
        "token {} ({}) created, {expiry}; the secret above is shown only once",
        created.token.id,
        role.as_str()
    );
    Ok(())
}

/// `orchard push-cert csr`: the key is made and sealed in the database; only the CSR (and the vendor-signed
/// request) are written, never the key.
async fn write_push_csr(
    orchard: &Orchard,
    operator: &OperatorCtx,
    vendor_cert: Option<PathBuf>,
    vendor_key: Option<PathBuf>,
    out: &Path,
) -> Result<()> {
    let vendor = match (vendor_cert, vendor_key) {
        (Some(chain), Some(key)) => Some(orchard_core::push::VendorIdentity {
            cert_chain_pem: read(&chain)?,
            key_pem: orchard_types::Secret::new(read(&key)?),
        }),
        (None, None) => None,
        _ => bail!("give --vendor-cert and --vendor-key together"),
    };
    let csr = orchard
        .create_push_csr(operator, vendor)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let csr_path = out.join("push.csr");
    std::fs::write(&csr_path, &csr.csr_pem)
        .with_context(|| format!("writing {}", csr_path.display()))?;
    println!("{}", csr_path.display());
    match csr.vendor_signed_request_b64 {
        Some(request) => {
            let request_path = out.join("push-request.b64");
            std::fs::write(&request_path, request)
                .with_context(|| format!("writing {}", request_path.display()))?;
            println!("{}", request_path.display());
            eprintln!(
                "upload push-request.b64 to https://identity.apple.com, then `orchard push-cert upload --cert <the certificate>`"
            );
        }
        None => eprintln!(
            "have push.csr signed by an mdm vendor, upload the signed request to https://identity.apple.com, then `orchard push-cert upload --cert <the certificate>`"
        ),
    }
    Ok(())
}

/// The push-certificate commands work on the database and data directory directly, as an operator would
/// through the API; a running server picks the new certificate up within 30 seconds.
/// An `Orchard` over the data directory and database, without a server, and the local operator the binary acts
/// as there (through its [`LocalBootstrap`]): for the commands that work on the database directly on the server
/// host.
async fn offline_orchard(storage: &StorageArgs) -> Result<(Orchard, OperatorCtx, Store)> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (store, scopes) = open_store(storage).await?;
    let operator =
        LocalBootstrap::for_opened_database(store.clone(), scopes.clone(), clock.clone())
            .operator()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    let material = pki_files::load_shared_keys(
        &store,
        &storage.data_dir,
        &storage.kek_config(),
        None,
        clock.now(),
    )
    .await?;
    let topic = development_topic(&material.ca.cert_der())?;
    let config = CoreConfig {
        public_url: "https://localhost".into(),
        topic,
        organization: String::new(),
        challenge_ttl_seconds: 3600,
        identity_validity_days: 365,
        device_message_max_age_seconds: None,
    };
    let orchard = Orchard::new(
        store.clone(),
        scopes,
        Arc::new(material),
        config,
        clock,
        orchard_core::push::PushSettings::default(),
    );
    Ok((orchard, operator, store))
}

/// `orchard local-account set`: the password is read from stdin (one line), never from the command line.
async fn local_account(command: LocalAccountCommands) -> Result<()> {
    init_logging(false);
    let LocalAccountCommands::Set { storage, username } = command;
    let mut password = String::new();
    std::io::stdin()
        .read_line(&mut password)
        .context("reading the password from stdin")?;
    let password = password.trim_end_matches(['\n', '\r']);
    let (store, scopes) = open_store(&storage).await?;
    let bootstrap =
        LocalBootstrap::for_opened_database(store.clone(), scopes, Arc::new(SystemClock));
    let id = bootstrap
        .set_local_account(&username, password)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    store.close().await;
    println!("{id}");
    Ok(())
}

async fn push_cert(command: PushCertCommands) -> Result<()> {
    init_logging(false);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let storage = match &command {
        PushCertCommands::Upload { storage, .. }
        | PushCertCommands::Status { storage }
        | PushCertCommands::Csr { storage, .. } => storage.clone(),
    };
    let (orchard, operator, store) = offline_orchard(&storage).await?;
    orchard
        .load_push_certificate(&orchard.system())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let status = match command {
        PushCertCommands::Upload {
            cert,
            key,
            p12,
            password,
            force,
            ..
        } => {
            let upload = match (cert, key, p12) {
                (Some(c), Some(k), None) => orchard_core::push::PushCertificateUpload::Pem {
                    certificate: read(&c)?,
                    private_key: read(&k)?,
                },
                (Some(c), None, None) => {
                    orchard_core::push::PushCertificateUpload::CertificateOnly {
                        certificate: read(&c)?,
                    }
                }
                (None, None, Some(p)) => orchard_core::push::PushCertificateUpload::Pkcs12 {
                    der: read(&p)?,
                    password,
                },
                _ => bail!("give --cert (with --key unless orchard made the csr), or --p12"),
            };
            Some(
                orchard
                    .upload_push_certificate(&operator, upload, force)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
            )
        }
        PushCertCommands::Status { .. } => orchard.push_certificate_status(),
        PushCertCommands::Csr {
            vendor_cert,
            vendor_key,
            out,
            ..
        } => {
            let written = write_push_csr(&orchard, &operator, vendor_cert, vendor_key, &out).await;
            store.close().await;
            return written;
        }
    };
    store.close().await;
    match status {
        Some(s) => println!("{}", serde_json::to_string_pretty(&s)?),
        None => println!(
            "no push certificate uploaded (development topic {})",
            orchard.current_topic()
        ),
    }
    Ok(())
}
