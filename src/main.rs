//! The `orchard` binary: command-line interface and wiring. The only place that reads configuration and the
//! environment; everything else receives what it needs.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use orchard_core::access::bootstrap::LocalBootstrap;
use orchard_core::access::capability::OperatorCtx;
use orchard_core::{CoreConfig, Orchard};
use orchard_store::{ScopeAuthority, Store};
use orchard_types::{ApnsTopic, Clock, Role, SystemClock, TenantId};

mod backup;
mod cli;
mod config;
mod config_flags;
mod pki_files;
mod systemd_notify;

use config::Config;
use config_flags::{ServeArgs, StorageArgs};

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
    /// Run the server (device surface and admin API) over TLS. Settings come from the configuration file
    /// (`--config`), then the environment, then these flags.
    Serve(Box<ServeArgs>),
    /// The configuration file: check it, or print an example with every key.
    Config {
        #[command(subcommand)]
        command: ConfigCommands,
    },
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
    /// Back up the database and the key-encryption key into one file encrypted under a passphrase, while the
    /// server runs. SQLite: the whole database; PostgreSQL: the key material only (the database with pg_dump,
    /// see docs/backup.md).
    Backup(Box<backup::BackupArgs>),
    /// Restore what `orchard backup` wrote: the database into an empty data directory (SQLite), or the
    /// key-encryption key for a database pg_restore filled (PostgreSQL); then `orchard serve` on it.
    Restore(Box<backup::RestoreArgs>),
    /// Client commands over the admin API of a running server (src/cli).
    #[command(flatten)]
    Api(cli::ApiCommand),
}

#[derive(Subcommand)]
enum ConfigCommands {
    /// Validate the configuration (file, environment and flags, as `serve` would) and print the effective
    /// configuration with secrets redacted.
    Check(Box<ServeArgs>),
    /// Print a commented configuration file with every key, its default and what it means.
    Example,
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

/// The key-encryption key: the file `storage.kek_file` names, or the key itself in ORCHARD_KEK.
fn kek_config(config: &Config) -> pki_files::KekConfig {
    pki_files::KekConfig {
        file: config.storage.kek_file.clone(),
        env: std::env::var("ORCHARD_KEK")
            .ok()
            .map(orchard_types::Secret::new),
    }
}

/// The core's settings, built from the validated [`Config`]; each error names the key it comes from.
mod settings {
    use super::{read, Config};
    use anyhow::Result;

    pub fn token_policy(config: &Config) -> orchard_core::access::tokens::TokenPolicy {
        let a = &config.access;
        orchard_core::access::tokens::TokenPolicy {
            default_days: i64::from(a.token_default_days),
            max_days_operator: i64::from(a.token_max_days_operator),
            max_days_helpdesk: i64::from(a.token_max_days_helpdesk),
            max_days_admin: i64::from(a.token_max_days_admin),
            max_days_viewer: i64::from(a.token_max_days_viewer),
        }
    }

    // OIDC-BEGIN
    pub fn oidc(config: &Config) -> Result<Option<orchard_core::access::oidc::OidcSettings>> {
        let oidc = &config.oidc;
        let (Some(issuer), Some(client_id)) = (&oidc.issuer, &oidc.client_id) else {
            return Ok(None);
        };
        let secret = config.oidc_client_secret()?;
        orchard_core::access::oidc::OidcSettings::new(
            issuer,
            client_id,
            secret.as_deref(),
            oidc.redirect_url.as_deref(),
        )
        .map(|mut settings| {
            settings.login_ttl_seconds = i64::from(oidc.login_ttl_seconds);
            Some(settings)
        })
        .map_err(|e| anyhow::anyhow!("oidc: {e}"))
    }
    // OIDC-END

    pub fn activation_lock(
        config: &Config,
    ) -> Result<orchard_core::device::activation_lock::ActivationLockSettings> {
        let section = &config.activation_lock;
        match &section.url {
            None => Ok(orchard_core::device::activation_lock::ActivationLockSettings::default()),
            Some(url) => {
                let roots = section.ca.as_ref().map(|p| read(p)).transpose()?;
                orchard_core::device::activation_lock::ActivationLockSettings::with_url(
                    url,
                    roots.as_deref(),
                )
                .map_err(|e| anyhow::anyhow!("activation_lock.ca: {e}"))
            }
        }
    }

    pub fn os_catalogue(config: &Config) -> Result<orchard_core::osupdate::OsCatalogueSettings> {
        let section = &config.os_catalogue;
        let roots = match &section.ca {
            Some(path) => orchard_core::dep::pem_certificates(&read(path)?)
                .map_err(|e| anyhow::anyhow!("os_catalogue.ca: {e}"))?,
            None => Vec::new(),
        };
        Ok(orchard_core::osupdate::OsCatalogueSettings {
            feed_url: section.url.clone(),
            root_certificates_der: roots,
            ..orchard_core::osupdate::OsCatalogueSettings::default()
        })
    }

    /// `anchor_certs_der`: what ADE profiles pin for our enrollment URL (Orchard's server CA when Orchard made
    /// the TLS certificate).
    pub fn dep(
        config: &Config,
        anchor_certs_der: Vec<Vec<u8>>,
    ) -> Result<orchard_core::dep::DepSettings> {
        let section = &config.dep;
        let mut settings = match &section.url {
            None => orchard_core::dep::DepSettings::default(),
            Some(url) => {
                let roots = section.ca.as_ref().map(|p| read(p)).transpose()?;
                orchard_core::dep::DepSettings::with_base_url(url, roots.as_deref())
                    .map_err(|e| anyhow::anyhow!("dep.ca: {e}"))?
            }
        };
        if let Some(path) = &section.device_ca {
            settings.device_roots_der = orchard_core::dep::pem_certificates(&read(path)?)
                .map_err(|e| anyhow::anyhow!("dep.device_ca: {e}"))?;
        }
        settings.anchor_certs_der = anchor_certs_der;
        settings.sync_interval_seconds = u64::from(section.sync_minutes) * 60;
        Ok(settings)
    }

    pub fn apps(config: &Config) -> Result<orchard_core::apps::AppsSettings> {
        let section = &config.apps;
        let mut settings = match &section.url {
            None => orchard_core::apps::AppsSettings::default(),
            Some(url) => {
                let roots = section.ca.as_ref().map(|p| read(p)).transpose()?;
                orchard_core::apps::AppsSettings::with_base_url(url, roots.as_deref())
                    .map_err(|e| anyhow::anyhow!("apps.ca: {e}"))?
            }
        };
        settings.sync_interval_seconds = u64::from(section.sync_minutes) * 60;
        Ok(settings)
    }

    pub fn connection_limits(config: &Config) -> orchard_server::ConnectionLimits {
        let l = &config.limits;
        let seconds = |s: u32| std::time::Duration::from_secs(u64::from(s));
        orchard_server::ConnectionLimits {
            handshake_timeout: seconds(l.handshake_timeout_seconds),
            header_read_timeout: seconds(l.header_timeout_seconds),
            body_read_timeout: seconds(l.body_timeout_seconds),
            idle_timeout: seconds(l.idle_timeout_seconds),
            max_connections_per_ip: l.max_connections_per_ip as usize,
            ..orchard_server::ConnectionLimits::default()
        }
    }

    pub fn metrics_access(config: &Config) -> Result<orchard_server::ops::MetricsAccess> {
        Ok(match config.metrics_token()? {
            Some(token) => orchard_server::ops::MetricsAccess::bearer(&token),
            None => orchard_server::ops::MetricsAccess::default(),
        })
    }

    pub fn push(config: &Config) -> Result<orchard_core::push::PushSettings> {
        let p = &config.push;
        let roots = match &p.apns_ca {
            Some(path) => orchard_apns::TrustRoots::from_pem(&read(path)?)
                .map_err(|e| anyhow::anyhow!("push.apns_ca: {e}"))?,
            None => orchard_apns::TrustRoots::Public,
        };
        Ok(orchard_core::push::PushSettings {
            apns: orchard_apns::ApnsConfig::with_base_url(&p.apns_url, roots),
            rate_per_second: p.rate,
            burst: p.burst,
            concurrency: p.concurrency as usize,
            wake_inactive_after_seconds: i64::from(p.wake_inactive_hours) * 3600,
            claim_lease_seconds: i64::from(p.claim_lease_seconds),
            adaptive: p.adaptive,
            max_in_flight: u64::from(p.max_in_flight),
            target_latency_ms: u64::from(p.target_latency_ms),
        })
    }

    /// The credential register's warnings and the mailer they go out through.
    pub fn credentials(
        config: &Config,
        tls_certificate_not_after: Option<orchard_types::UnixTime>,
    ) -> Result<orchard_core::credentials::CredentialSettings> {
        use orchard_core::credentials::mail::{Mailer, SmtpSecurity, SmtpSettings};
        let smtp = &config.smtp;
        let mail = match (&smtp.host, &smtp.from) {
            (Some(host), Some(from)) => {
                let security = SmtpSecurity::parse(&smtp.security)
                    .map_err(|e| anyhow::anyhow!("smtp.security: {e}"))?;
                let port = smtp.port.unwrap_or(match security {
                    SmtpSecurity::StartTls => 587,
                    SmtpSecurity::ImplicitTls => 465,
                    SmtpSecurity::DangerPlaintext => 25,
                });
                let roots_pem = smtp.ca.as_ref().map(|p| read(p)).transpose()?;
                let settings = SmtpSettings {
                    host: host.clone(),
                    port,
                    security,
                    username: smtp.username.clone(),
                    password: config.smtp_password()?.map(orchard_types::Secret::new),
                    from: from.clone(),
                    roots_pem,
                    timeout: std::time::Duration::from_secs(30),
                };
                Some(Mailer::new(&settings).map_err(|e| anyhow::anyhow!("smtp: {e}"))?)
            }
            _ => None,
        };
        let mut settings = orchard_core::credentials::CredentialSettings::default()
            .with_warning_days(&config.credentials.warning_days)
            .map_err(|e| anyhow::anyhow!("credentials.warning_days: {e}"))?;
        settings.central_it_email = config.credentials.central_it_email.clone();
        settings.tls_certificate_not_after = tls_certificate_not_after;
        settings.mail = mail;
        settings.check_interval =
            std::time::Duration::from_secs(u64::from(config.credentials.check_minutes) * 60);
        Ok(settings)
    }

    pub fn webhooks(config: &Config) -> orchard_core::webhooks::WebhookSettings {
        let w = &config.webhooks;
        orchard_core::webhooks::WebhookSettings {
            timeout: std::time::Duration::from_secs(u64::from(w.timeout_seconds)),
            retry_base_seconds: i64::from(w.retry_seconds),
            retry_max_seconds: i64::from(w.retry_max_seconds),
            max_attempts: i64::from(w.max_attempts),
            disable_after_failures: i64::from(w.disable_after_failures),
            interval: std::time::Duration::from_secs(u64::from(w.interval_seconds)),
            retention_days: i64::from(w.retention_days),
            danger_allow_http_localhost: w.danger_allow_http_localhost,
            ..Default::default()
        }
    }

    pub fn reconciler(config: &Config) -> orchard_core::desired::reconciler::ReconcilerSettings {
        orchard_core::desired::reconciler::ReconcilerSettings {
            retry_base_seconds: i64::from(config.reconciler.retry_seconds),
            interval: std::time::Duration::from_secs(u64::from(config.reconciler.interval_seconds)),
            ..Default::default()
        }
    }

    pub fn command_queue(config: &Config) -> orchard_core::commands::hygiene::CommandQueueSettings {
        let q = &config.commands;
        orchard_core::commands::hygiene::CommandQueueSettings {
            policy: orchard_store::QueuePolicy {
                max_attempts: i64::from(q.max_attempts),
                resend_after_seconds: i64::from(q.resend_after_minutes) * 60,
            },
            history_days: i64::from(q.history_days),
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
            Commands::Config { command } => config_command(command),
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
            Commands::Backup(args) => backup::backup(*args).await,
            Commands::Restore(args) => backup::restore(*args).await,
            Commands::Api(command) => cli::run(command).await,
        }
    })
}

/// `orchard config check` and `orchard config example`.
fn config_command(command: ConfigCommands) -> Result<()> {
    match command {
        ConfigCommands::Example => print!("{}", Config::example()?),
        ConfigCommands::Check(args) => {
            let resolved = args.resolve()?;
            // Secret files are read too, so a missing or empty one shows now rather than at start.
            resolved.config.database_url()?;
            resolved.config.metrics_token()?;
            resolved.config.oidc_client_secret()?;
            match &resolved.file {
                Some(path) => eprintln!("{}: ok", path.display()),
                None => eprintln!(
                    "no configuration file ({} does not exist): built-in defaults, environment and flags: ok",
                    config::DEFAULT_CONFIG_PATH
                ),
            }
            print!("{}", resolved.config.redacted().to_toml()?);
        }
    }
    Ok(())
}

/// Logging for the server (`log.filter`, `log.format`); the one-shot commands log at the default filter.
fn init_logging(json: bool) {
    init_logging_with(json, &config::LogSection::default().filter);
}

fn init_logging_with(json: bool, filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(filter)
        .unwrap_or_else(|_| EnvFilter::new(config::LogSection::default().filter));
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

fn database_url(config: &Config) -> Result<String> {
    if let Some(url) = config.database_url()? {
        return Ok(url);
    }
    let data_dir = &config.storage.data_dir;
    pki_files::create_private_dir(data_dir)?;
    let abs = std::fs::canonicalize(data_dir)?;
    Ok(format!("sqlite://{}", abs.join("orchard.db").display()))
}

/// Opens the database: the store, and the scope authority over its tenants that core's access module keeps.
async fn open_store(config: &Config) -> Result<(Store, ScopeAuthority)> {
    let url = database_url(config)?;
    let pool_size = match config.storage.pool_size {
        Some(size) => size,
        None => orchard_store::Backend::from_url(&url)?.default_pool_size(),
    };
    Store::connect_with_pool_size(&url, pool_size)
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
    let resolved = args.resolve()?;
    let config = resolved.config;
    init_logging_with(config.log.json(), &config.log.filter);
    if let Some(file) = &resolved.file {
        tracing::info!(config = %file.display(), "configuration read");
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (store, scopes) = open_store(&config).await?;

    let listen = config.server.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let local = listener.local_addr()?;
    let public_url = config
        .server
        .public_url
        .clone()
        .unwrap_or_else(|| format!("https://{local}"))
        .trim_end_matches('/')
        .to_string();
    let (dns, ips) = tls_names(&public_url, local.ip());
    let data_dir = &config.storage.data_dir;
    let material = pki_files::load_shared_keys(
        &store,
        data_dir,
        &kek_config(&config),
        Some(pki_files::ServerNames {
            dns: &dns,
            ips: &ips,
        }),
        clock.now(),
    )
    .await?;
    let tls_identity =
        pki_files::tls_identity(data_dir, &material.server_ca, &dns, &ips, clock.now())
            .context("preparing the TLS identity")?;
    let server_ca_path = data_dir.join("server-ca.pem");
    let topic = development_topic(&material.ca.cert_der())?;

    // Devices in Setup Assistant must trust our TLS certificate before any profile is installed: when Orchard
    // made it, the ADE profile pins Orchard's server CA (name-constrained to our names, never the device CA);
    // an operator's certificate chains to a public root.
    let anchor_certs_der = match &config.tls.cert {
        Some(_) => Vec::new(),
        None => vec![material.server_ca.cert_der()],
    };
    let (tls_cert, tls_key) = match (&config.tls.cert, &config.tls.key) {
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

    let enrollment = &config.enrollment;
    let core_config = CoreConfig {
        public_url: public_url.clone(),
        topic,
        organization: config.server.organization.clone(),
        challenge_ttl_seconds: i64::from(enrollment.challenge_ttl_seconds),
        identity_validity_days: enrollment.device_identity_days,
        device_message_max_age_seconds: (enrollment.device_message_max_age_seconds > 0)
            .then_some(i64::from(enrollment.device_message_max_age_seconds)),
    };
    let orchard = Arc::new(
        Orchard::new(
            store.clone(),
            scopes,
            Arc::new(material),
            core_config,
            clock,
            settings::push(&config)?,
        )
        .with_dep_settings(settings::dep(&config, anchor_certs_der)?)
        .with_os_catalogue_settings(settings::os_catalogue(&config)?)
        .with_apps_settings(settings::apps(&config)?)
        .with_identity_renewal(
            orchard_core::enrollment::renewal::IdentityRenewalSettings::new(
                enrollment.device_identity_days,
                enrollment.identity_renewal_days,
                enrollment.identity_grace_days,
            )
            .map_err(|e| anyhow::anyhow!("enrollment.identity_renewal_days: {e}"))?,
        )
        .with_activation_lock_settings(settings::activation_lock(&config)?)
        .with_secret_command_settings(
            orchard_core::commands::secrets::SecretCommandSettings::new(i64::from(
                config.commands.secret_ttl_seconds,
            ))
            .map_err(|e| anyhow::anyhow!("commands.secret_ttl_seconds: {e}"))?,
        )
        .with_usage_settings(
            orchard_core::reporting::usage::UsageSettings::new(
                &config.billing.price_per_device_year,
                &config.billing.currency,
            )
            .map_err(|e| anyhow::anyhow!("billing: {e}"))?,
        )
        .with_token_policy(settings::token_policy(&config))
        .with_session_ttl_seconds(i64::from(config.access.session_ttl_seconds))
        .with_command_queue_settings(settings::command_queue(&config))
        .with_reconciler_settings(settings::reconciler(&config))
        .with_webhook_settings(settings::webhooks(&config))
        .with_credential_settings(settings::credentials(&config, Some(tls_not_after))?)
        .with_link_download_limit(enrollment.link_downloads_per_minute)
        .with_oidc_settings(settings::oidc(&config)?), // OIDC
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
        settings::metrics_access(&config)?,
    );

    // The first line on stdout says where we listen, so scripts and tests can find an ephemeral port.
    println!(
        "listening on https://{local} (public url {public_url}, ca {})",
        server_ca_path.display()
    );
    tracing::info!(%local, %public_url, backend = ?store.backend(), "orchard serving");
    // Under systemd (Type=notify), `systemctl start` waits for this: the socket listens and the state is made.
    if let Some(socket) = std::env::var_os("NOTIFY_SOCKET") {
        if let Err(e) = systemd_notify::notify(&socket, "READY=1") {
            tracing::warn!(error = %format!("{e:#}"), "could not tell systemd that Orchard is ready");
        }
    }
    // At SIGTERM the jobs stop at once (a step under lease is dropped and its lease released, so another node
    // takes over now) while the requests being answered finish.
    orchard_server::serve_tls(
        listener,
        tls,
        app,
        settings::connection_limits(&config),
        async move {
            shutdown_signal().await;
            drop(stop_jobs);
        },
    )
    .await;
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
    let (store, scopes) = open_store(&storage.resolve()?.config).await?;
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
    let config = storage.resolve()?.config;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (store, scopes) = open_store(&config).await?;
    let operator =
        LocalBootstrap::for_opened_database(store.clone(), scopes.clone(), clock.clone())
            .operator()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    let material = pki_files::load_shared_keys(
        &store,
        &config.storage.data_dir,
        &kek_config(&config),
        None,
        clock.now(),
    )
    .await?;
    let topic = development_topic(&material.ca.cert_der())?;
    let core_config = CoreConfig {
        public_url: "https://localhost".into(),
        topic,
        organization: String::new(),
        challenge_ttl_seconds: i64::from(config.enrollment.challenge_ttl_seconds),
        identity_validity_days: config.enrollment.device_identity_days,
        device_message_max_age_seconds: None,
    };
    let orchard = Orchard::new(
        store.clone(),
        scopes,
        Arc::new(material),
        core_config,
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
    let (store, scopes) = open_store(&storage.resolve()?.config).await?;
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
