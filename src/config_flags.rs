//! Command-line flags (each with its `ORCHARD_*` environment variable) that override the configuration file.
//! A flag has no default of its own: absent flag and variable leave the file's value (or the built-in default)
//! in place, so the precedence is flag > environment > file > default (clap reads the variable when the flag is
//! absent). The keys, their defaults and explanations are in `config.rs`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::config::Config;

/// Where the configuration and the database are: every command that opens the database takes these.
#[derive(Args, Clone, Default)]
pub struct StorageArgs {
    /// Configuration file (TOML; `orchard config example` prints every key). Default: /etc/orchard/orchard.toml
    /// when it exists, else the built-in defaults.
    #[arg(long, env = "ORCHARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory for the SQLite database, the TLS identity and (unless given otherwise) the key-encryption key
    /// [storage.data_dir; default ./orchard-data].
    #[arg(long, env = "ORCHARD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// `postgres://user:pass@host/db` to use PostgreSQL; default: SQLite in the data directory
    /// [storage.database_url].
    #[arg(long, env = "ORCHARD_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// A file holding the database URL [storage.database_url_file].
    #[arg(long, env = "ORCHARD_DATABASE_URL_FILE")]
    pub database_url_file: Option<PathBuf>,
    /// File holding the key-encryption key (32 bytes, base64) that seals the CA keys, the profile signer and the
    /// data key in the database; every node of a database needs the same one. Or the KEK itself in ORCHARD_KEK.
    /// Default: `kek` in the data directory, made by the first start [storage.kek_file].
    #[arg(long, env = "ORCHARD_KEK_FILE")]
    pub kek_file: Option<PathBuf>,
    /// Database connections this node keeps at most [storage.pool_size; default 4 on SQLite, 10 on PostgreSQL].
    #[arg(long, env = "ORCHARD_DATABASE_POOL_SIZE")]
    pub database_pool_size: Option<u32>,
}

/// A configuration with its overrides applied and validated, and where it came from.
pub struct Resolved {
    pub config: Config,
    pub file: Option<PathBuf>,
}

impl StorageArgs {
    /// The file's configuration (or the defaults) with these flags applied, not yet validated.
    fn load(&self) -> Result<(Config, Option<PathBuf>, String)> {
        let file = Config::file_to_read(self.config.as_deref());
        let (mut config, text) = Config::load(file.as_deref())?;
        let storage = &mut config.storage;
        if let Some(v) = &self.data_dir {
            storage.data_dir = v.clone();
        }
        if let Some(v) = &self.database_url {
            storage.database_url = Some(v.clone());
            storage.database_url_file = None;
        }
        if let Some(v) = &self.database_url_file {
            storage.database_url_file = Some(v.clone());
            storage.database_url = None;
        }
        if let Some(v) = &self.kek_file {
            storage.kek_file = Some(v.clone());
        }
        set_some(&mut storage.pool_size, &self.database_pool_size);
        Ok((config, file, text))
    }

    /// The configuration for the commands that work on the database directly.
    pub fn resolve(&self) -> Result<Resolved> {
        let (config, file, text) = self.load()?;
        config.validate_against(file.as_deref(), &text)?;
        Ok(Resolved { config, file })
    }
}

#[derive(Args, Clone, Default)]
pub struct ServeArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Address to listen on (port 0 picks a free port; the chosen address is printed) [server.listen].
    #[arg(long, env = "ORCHARD_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// The https origin devices reach this server at [server.public_url].
    #[arg(long, env = "ORCHARD_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Organization name shown in enrollment profiles [server.organization].
    #[arg(long, env = "ORCHARD_ORGANIZATION")]
    pub organization: Option<String>,
    /// TLS certificate chain (PEM) [tls.cert].
    #[arg(long, env = "ORCHARD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) [tls.key].
    #[arg(long, env = "ORCHARD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// text or json: JSON lines for a log collector [log.format].
    #[arg(long, env = "ORCHARD_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Which log lines to keep, in tracing's env-filter syntax [log.filter].
    #[arg(long, env = "ORCHARD_LOG")]
    pub log_filter: Option<String>,
    /// How long the SCEP challenge in an enrollment profile stays usable [enrollment.challenge_ttl_seconds].
    #[arg(long, env = "ORCHARD_CHALLENGE_TTL_SECONDS")]
    pub challenge_ttl_seconds: Option<u32>,
    /// Replay window for signed device messages, 0 turns it off [enrollment.device_message_max_age_seconds].
    #[arg(long, env = "ORCHARD_DEVICE_MESSAGE_MAX_AGE_SECONDS")]
    pub device_message_max_age_seconds: Option<u32>,
    /// Days a device identity certificate is valid [enrollment.device_identity_days].
    #[arg(long, env = "ORCHARD_DEVICE_IDENTITY_DAYS")]
    pub device_identity_days: Option<u32>,
    /// Renew a device's identity when fewer days remain [enrollment.identity_renewal_days].
    #[arg(long, env = "ORCHARD_IDENTITY_RENEWAL_DAYS")]
    pub identity_renewal_days: Option<u32>,
    /// Days the previous identity is still accepted [enrollment.identity_grace_days].
    #[arg(long, env = "ORCHARD_IDENTITY_GRACE_DAYS")]
    pub identity_grace_days: Option<u32>,
    /// Enrollment profiles one link hands out per minute, 0: no limit [enrollment.link_downloads_per_minute].
    #[arg(long, env = "ORCHARD_LINK_DOWNLOADS_PER_MINUTE")]
    pub link_downloads_per_minute: Option<u32>,
    /// APNs base URL [push.apns_url].
    #[arg(long, env = "ORCHARD_APNS_URL")]
    pub apns_url: Option<String>,
    /// PEM roots APNs' TLS certificate must chain to [push.apns_ca].
    #[arg(long, env = "ORCHARD_APNS_CA")]
    pub apns_ca: Option<PathBuf>,
    /// Sustained pushes per second [push.rate].
    #[arg(long, env = "ORCHARD_PUSH_RATE")]
    pub push_rate: Option<u32>,
    /// Pushes that may go out at once after a quiet period [push.burst].
    #[arg(long, env = "ORCHARD_PUSH_BURST")]
    pub push_burst: Option<u32>,
    /// Pushes in flight at once [push.concurrency].
    #[arg(long, env = "ORCHARD_PUSH_CONCURRENCY")]
    pub push_concurrency: Option<u32>,
    /// Hours of silence before a wake-up push, 0: off [push.wake_inactive_hours].
    #[arg(long, env = "ORCHARD_WAKE_INACTIVE_HOURS")]
    pub wake_inactive_hours: Option<u32>,
    /// Seconds a claimed push belongs to its node [push.claim_lease_seconds].
    #[arg(long, env = "ORCHARD_PUSH_CLAIM_LEASE_SECONDS")]
    pub push_claim_lease_seconds: Option<u32>,
    /// Pace pushes by what this node serves, push.rate the upper bound [push.adaptive].
    #[arg(long, env = "ORCHARD_PUSH_ADAPTIVE")]
    pub push_adaptive: Option<bool>,
    /// Device requests in flight on a node above which adaptive pacing slows down [push.max_in_flight].
    #[arg(long, env = "ORCHARD_PUSH_MAX_IN_FLIGHT")]
    pub push_max_in_flight: Option<u32>,
    /// Smoothed device-request latency (ms) above which adaptive pacing slows down [push.target_latency_ms].
    #[arg(long, env = "ORCHARD_PUSH_TARGET_LATENCY_MS")]
    pub push_target_latency_ms: Option<u32>,
    /// Hand-outs without a final answer before a command fails, 0: no limit [commands.max_attempts].
    #[arg(long, env = "ORCHARD_COMMAND_MAX_ATTEMPTS")]
    pub command_max_attempts: Option<u32>,
    /// Minutes before an unanswered command is handed out again [commands.resend_after_minutes].
    #[arg(long, env = "ORCHARD_COMMAND_RESEND_AFTER_MINUTES")]
    pub command_resend_after_minutes: Option<u32>,
    /// Days finished commands are kept, 0: for ever [commands.history_days].
    #[arg(long, env = "ORCHARD_COMMAND_HISTORY_DAYS")]
    pub command_history_days: Option<u32>,
    /// Seconds a command carrying a device credential may wait [commands.secret_ttl_seconds].
    #[arg(long, env = "ORCHARD_SECRET_COMMAND_TTL_SECONDS")]
    pub secret_command_ttl_seconds: Option<u32>,
    /// Seconds before a failed profile install is retried, doubled per failure [reconciler.retry_seconds].
    #[arg(long, env = "ORCHARD_RECONCILE_RETRY_SECONDS")]
    pub reconcile_retry_seconds: Option<u32>,
    /// Seconds between the reconciler's periodic passes [reconciler.interval_seconds].
    #[arg(long, env = "ORCHARD_RECONCILE_INTERVAL_SECONDS")]
    pub reconcile_interval_seconds: Option<u32>,
    /// Seconds a webhook receiver has to answer [webhooks.timeout_seconds].
    #[arg(long, env = "ORCHARD_WEBHOOK_TIMEOUT_SECONDS")]
    pub webhook_timeout_seconds: Option<u32>,
    /// Seconds before a failed delivery is retried, doubled per attempt [webhooks.retry_seconds].
    #[arg(long, env = "ORCHARD_WEBHOOK_RETRY_SECONDS")]
    pub webhook_retry_seconds: Option<u32>,
    /// The longest wait between two attempts of a delivery [webhooks.retry_max_seconds].
    #[arg(long, env = "ORCHARD_WEBHOOK_RETRY_MAX_SECONDS")]
    pub webhook_retry_max_seconds: Option<u32>,
    /// Attempts per delivery before it is given up [webhooks.max_attempts].
    #[arg(long, env = "ORCHARD_WEBHOOK_MAX_ATTEMPTS")]
    pub webhook_max_attempts: Option<u32>,
    /// Consecutive failures after which an endpoint is disabled [webhooks.disable_after_failures].
    #[arg(long, env = "ORCHARD_WEBHOOK_DISABLE_AFTER_FAILURES")]
    pub webhook_disable_after_failures: Option<u32>,
    /// Seconds between looks for due deliveries [webhooks.interval_seconds].
    #[arg(long, env = "ORCHARD_WEBHOOK_INTERVAL_SECONDS")]
    pub webhook_interval_seconds: Option<u32>,
    /// Days deliveries stay in the delivery log [webhooks.retention_days].
    #[arg(long, env = "ORCHARD_WEBHOOK_RETENTION_DAYS")]
    pub webhook_retention_days: Option<u32>,
    /// Accept plain-http webhook URLs on loopback, for tests only [webhooks.danger_allow_http_localhost].
    #[arg(long, env = "ORCHARD_DANGER_WEBHOOK_ALLOW_HTTP_LOCALHOST")]
    pub danger_webhook_allow_http_localhost: bool,
    /// Days before expiry at which warnings are e-mailed, comma-separated [credentials.warning_days].
    #[arg(long, env = "ORCHARD_CREDENTIAL_WARNING_DAYS", value_delimiter = ',')]
    pub credential_warning_days: Option<Vec<i64>>,
    /// Minutes between two expiry checks [credentials.check_minutes].
    #[arg(long, env = "ORCHARD_CREDENTIAL_CHECK_MINUTES")]
    pub credential_check_minutes: Option<u32>,
    /// Central IT's address for every expiry warning [credentials.central_it_email].
    #[arg(long, env = "ORCHARD_CENTRAL_IT_EMAIL")]
    pub central_it_email: Option<String>,
    /// SMTP server for expiry warnings [smtp.host].
    #[arg(long, env = "ORCHARD_SMTP_HOST")]
    pub smtp_host: Option<String>,
    /// SMTP port [smtp.port].
    #[arg(long, env = "ORCHARD_SMTP_PORT")]
    pub smtp_port: Option<u16>,
    /// starttls, tls or plain [smtp.security].
    #[arg(long, env = "ORCHARD_SMTP_SECURITY")]
    pub smtp_security: Option<String>,
    /// SMTP AUTH user name [smtp.username].
    #[arg(long, env = "ORCHARD_SMTP_USERNAME")]
    pub smtp_username: Option<String>,
    /// SMTP AUTH password (prefer the file) [smtp.password].
    #[arg(long, env = "ORCHARD_SMTP_PASSWORD", hide_env_values = true)]
    pub smtp_password: Option<String>,
    /// A file holding the SMTP password [smtp.password_file].
    #[arg(long, env = "ORCHARD_SMTP_PASSWORD_FILE")]
    pub smtp_password_file: Option<PathBuf>,
    /// The sender of the warnings [smtp.from].
    #[arg(long, env = "ORCHARD_SMTP_FROM")]
    pub smtp_from: Option<String>,
    /// PEM roots for the SMTP server's certificate [smtp.ca].
    #[arg(long, env = "ORCHARD_SMTP_CA")]
    pub smtp_ca: Option<PathBuf>,
    /// Seconds to finish the TLS handshake [limits.handshake_timeout_seconds].
    #[arg(long, env = "ORCHARD_HANDSHAKE_TIMEOUT_SECONDS")]
    pub handshake_timeout_seconds: Option<u32>,
    /// Seconds to send a request's headers [limits.header_timeout_seconds].
    #[arg(long, env = "ORCHARD_HEADER_TIMEOUT_SECONDS")]
    pub header_timeout_seconds: Option<u32>,
    /// Seconds to send a request's body [limits.body_timeout_seconds].
    #[arg(long, env = "ORCHARD_BODY_TIMEOUT_SECONDS")]
    pub body_timeout_seconds: Option<u32>,
    /// Seconds a connection may sit idle [limits.idle_timeout_seconds].
    #[arg(long, env = "ORCHARD_IDLE_TIMEOUT_SECONDS")]
    pub idle_timeout_seconds: Option<u32>,
    /// Connections one client address may hold, 0: no limit [limits.max_connections_per_ip].
    #[arg(long, env = "ORCHARD_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<u32>,
    /// Bearer token `/metrics` requires (prefer the file) [limits.metrics_token].
    #[arg(long, env = "ORCHARD_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// A file holding the metrics token [limits.metrics_token_file].
    #[arg(long, env = "ORCHARD_METRICS_TOKEN_FILE")]
    pub metrics_token_file: Option<PathBuf>,
    /// Device Assignment (DEP/ASM) service URL [dep.url].
    #[arg(long, env = "ORCHARD_DEP_URL")]
    pub dep_url: Option<String>,
    /// PEM roots of the DEP service [dep.ca].
    #[arg(long, env = "ORCHARD_DEP_CA")]
    pub dep_ca: Option<PathBuf>,
    /// PEM roots that sign devices' MachineInfo in zero-touch enrollment [dep.device_ca].
    #[arg(long, env = "ORCHARD_DEP_DEVICE_CA")]
    pub dep_device_ca: Option<PathBuf>,
    /// Minutes between DEP syncs, 0: only on request [dep.sync_minutes].
    #[arg(long, env = "ORCHARD_DEP_SYNC_MINUTES")]
    pub dep_sync_minutes: Option<u32>,
    /// Apps and Books service URL up to `/mdm/v2` [apps.url].
    #[arg(long, env = "ORCHARD_APPS_URL")]
    pub apps_url: Option<String>,
    /// PEM roots of the Apps and Books service [apps.ca].
    #[arg(long, env = "ORCHARD_APPS_CA")]
    pub apps_ca: Option<PathBuf>,
    /// Minutes between Apps and Books syncs, 0: only on request [apps.sync_minutes].
    #[arg(long, env = "ORCHARD_APPS_SYNC_MINUTES")]
    pub apps_sync_minutes: Option<u32>,
    /// Apple's software-update feed [os_catalogue.url].
    #[arg(long, env = "ORCHARD_OS_CATALOGUE_URL")]
    pub os_catalogue_url: Option<String>,
    /// PEM roots of the feed [os_catalogue.ca].
    #[arg(long, env = "ORCHARD_OS_CATALOGUE_CA")]
    pub os_catalogue_ca: Option<PathBuf>,
    /// Apple's activation service [activation_lock.url].
    #[arg(long, env = "ORCHARD_ACTIVATION_LOCK_URL")]
    pub activation_lock_url: Option<String>,
    /// PEM roots of the activation service [activation_lock.ca].
    #[arg(long, env = "ORCHARD_ACTIVATION_LOCK_CA")]
    pub activation_lock_ca: Option<PathBuf>,
    /// Price of one device for one year, e.g. 400 or 399.50 [billing.price_per_device_year].
    #[arg(long, env = "ORCHARD_PRICE_PER_DEVICE_YEAR")]
    pub price_per_device_year: Option<String>,
    /// Currency of that price (ISO 4217) [billing.currency].
    #[arg(long, env = "ORCHARD_CURRENCY")]
    pub currency: Option<String>,
    /// Longest lifetime of API tokens per role, as ROLE=DAYS (repeat or separate with commas)
    /// [access.token_max_days_ROLE].
    #[arg(long, env = "ORCHARD_TOKEN_MAX_DAYS", value_delimiter = ',')]
    pub token_max_days: Vec<String>,
    /// Lifetime of API tokens whose request names none, in days [access.token_default_days].
    #[arg(long, env = "ORCHARD_TOKEN_DEFAULT_DAYS")]
    pub token_default_days: Option<u32>,
    /// How long a browser session lasts, in seconds [access.session_ttl_seconds].
    #[arg(long, env = "ORCHARD_SESSION_TTL_SECONDS")]
    pub session_ttl_seconds: Option<u32>,
    /// Issuer URL of the university's OpenID Connect provider [oidc.issuer].
    #[arg(long, env = "ORCHARD_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,
    /// Client id registered for Orchard at the provider [oidc.client_id].
    #[arg(long, env = "ORCHARD_OIDC_CLIENT_ID")]
    pub oidc_client_id: Option<String>,
    /// The client's secret (prefer the file) [oidc.client_secret].
    #[arg(long, env = "ORCHARD_OIDC_CLIENT_SECRET", hide_env_values = true)]
    pub oidc_client_secret: Option<String>,
    /// A file holding the client's secret [oidc.client_secret_file].
    #[arg(long, env = "ORCHARD_OIDC_CLIENT_SECRET_FILE")]
    pub oidc_client_secret_file: Option<PathBuf>,
    /// Where the provider sends the browser back [oidc.redirect_url].
    #[arg(long, env = "ORCHARD_OIDC_REDIRECT_URL")]
    pub oidc_redirect_url: Option<String>,
    /// Seconds to finish signing in at the provider [oidc.login_ttl_seconds].
    #[arg(long, env = "ORCHARD_OIDC_LOGIN_TTL_SECONDS")]
    pub oidc_login_ttl_seconds: Option<u32>,
}

/// `target = value` when the flag (or its variable) was given.
fn set<T: Clone>(target: &mut T, value: &Option<T>) {
    if let Some(v) = value {
        *target = v.clone();
    }
}

fn set_some<T: Clone>(target: &mut Option<T>, value: &Option<T>) {
    if value.is_some() {
        *target = value.clone();
    }
}

impl ServeArgs {
    /// The file's configuration with every given flag (or its environment variable) applied, validated.
    pub fn resolve(&self) -> Result<Resolved> {
        let (mut config, file, text) = self.storage.load()?;
        self.apply(&mut config)?;
        config.validate_against(file.as_deref(), &text)?;
        Ok(Resolved { config, file })
    }

    fn apply(&self, c: &mut Config) -> Result<()> {
        set(&mut c.server.listen, &self.listen);
        set_some(&mut c.server.public_url, &self.public_url);
        set(&mut c.server.organization, &self.organization);
        set_some(&mut c.tls.cert, &self.tls_cert);
        set_some(&mut c.tls.key, &self.tls_key);
        set(&mut c.log.format, &self.log_format);
        set(&mut c.log.filter, &self.log_filter);
        let e = &mut c.enrollment;
        set(&mut e.challenge_ttl_seconds, &self.challenge_ttl_seconds);
        set(
            &mut e.device_message_max_age_seconds,
            &self.device_message_max_age_seconds,
        );
        set(&mut e.device_identity_days, &self.device_identity_days);
        set(&mut e.identity_renewal_days, &self.identity_renewal_days);
        set(&mut e.identity_grace_days, &self.identity_grace_days);
        set(
            &mut e.link_downloads_per_minute,
            &self.link_downloads_per_minute,
        );
        let p = &mut c.push;
        set(&mut p.apns_url, &self.apns_url);
        set_some(&mut p.apns_ca, &self.apns_ca);
        set(&mut p.rate, &self.push_rate);
        set(&mut p.burst, &self.push_burst);
        set(&mut p.concurrency, &self.push_concurrency);
        set(&mut p.wake_inactive_hours, &self.wake_inactive_hours);
        set(&mut p.claim_lease_seconds, &self.push_claim_lease_seconds);
        set(&mut p.adaptive, &self.push_adaptive);
        set(&mut p.max_in_flight, &self.push_max_in_flight);
        set(&mut p.target_latency_ms, &self.push_target_latency_ms);
        let q = &mut c.commands;
        set(&mut q.max_attempts, &self.command_max_attempts);
        set(
            &mut q.resend_after_minutes,
            &self.command_resend_after_minutes,
        );
        set(&mut q.history_days, &self.command_history_days);
        set(&mut q.secret_ttl_seconds, &self.secret_command_ttl_seconds);
        set(
            &mut c.reconciler.retry_seconds,
            &self.reconcile_retry_seconds,
        );
        set(
            &mut c.reconciler.interval_seconds,
            &self.reconcile_interval_seconds,
        );
        let cr = &mut c.credentials;
        set(&mut cr.warning_days, &self.credential_warning_days);
        set(&mut cr.check_minutes, &self.credential_check_minutes);
        set_some(&mut cr.central_it_email, &self.central_it_email);
        let m = &mut c.smtp;
        set_some(&mut m.host, &self.smtp_host);
        set_some(&mut m.port, &self.smtp_port);
        set(&mut m.security, &self.smtp_security);
        set_some(&mut m.username, &self.smtp_username);
        if self.smtp_password.is_some() {
            m.password = self.smtp_password.clone();
            m.password_file = None;
        }
        if self.smtp_password_file.is_some() {
            m.password_file = self.smtp_password_file.clone();
            m.password = None;
        }
        set_some(&mut m.from, &self.smtp_from);
        set_some(&mut m.ca, &self.smtp_ca);
        let w = &mut c.webhooks;
        set(&mut w.timeout_seconds, &self.webhook_timeout_seconds);
        set(&mut w.retry_seconds, &self.webhook_retry_seconds);
        set(&mut w.retry_max_seconds, &self.webhook_retry_max_seconds);
        set(&mut w.max_attempts, &self.webhook_max_attempts);
        set(
            &mut w.disable_after_failures,
            &self.webhook_disable_after_failures,
        );
        set(&mut w.interval_seconds, &self.webhook_interval_seconds);
        set(&mut w.retention_days, &self.webhook_retention_days);
        if self.danger_webhook_allow_http_localhost {
            w.danger_allow_http_localhost = true;
        }
        let l = &mut c.limits;
        set(
            &mut l.handshake_timeout_seconds,
            &self.handshake_timeout_seconds,
        );
        set(&mut l.header_timeout_seconds, &self.header_timeout_seconds);
        set(&mut l.body_timeout_seconds, &self.body_timeout_seconds);
        set(&mut l.idle_timeout_seconds, &self.idle_timeout_seconds);
        set(&mut l.max_connections_per_ip, &self.max_connections_per_ip);
        if self.metrics_token.is_some() {
            l.metrics_token = self.metrics_token.clone();
            l.metrics_token_file = None;
        }
        if self.metrics_token_file.is_some() {
            l.metrics_token_file = self.metrics_token_file.clone();
            l.metrics_token = None;
        }
        set_some(&mut c.dep.url, &self.dep_url);
        set_some(&mut c.dep.ca, &self.dep_ca);
        set_some(&mut c.dep.device_ca, &self.dep_device_ca);
        set(&mut c.dep.sync_minutes, &self.dep_sync_minutes);
        set_some(&mut c.apps.url, &self.apps_url);
        set_some(&mut c.apps.ca, &self.apps_ca);
        set(&mut c.apps.sync_minutes, &self.apps_sync_minutes);
        set(&mut c.os_catalogue.url, &self.os_catalogue_url);
        set_some(&mut c.os_catalogue.ca, &self.os_catalogue_ca);
        set_some(&mut c.activation_lock.url, &self.activation_lock_url);
        set_some(&mut c.activation_lock.ca, &self.activation_lock_ca);
        set(
            &mut c.billing.price_per_device_year,
            &self.price_per_device_year,
        );
        set(&mut c.billing.currency, &self.currency);
        let a = &mut c.access;
        set(&mut a.token_default_days, &self.token_default_days);
        set(&mut a.session_ttl_seconds, &self.session_ttl_seconds);
        for spec in &self.token_max_days {
            let (role, days) = spec
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--token-max-days {spec:?}: expected ROLE=DAYS"))?;
            let days: u32 = days.trim().parse().map_err(|_| {
                anyhow::anyhow!("--token-max-days {spec:?}: {days:?} is not a number of days")
            })?;
            let target = match role.trim() {
                "operator" => &mut a.token_max_days_operator,
                "helpdesk" => &mut a.token_max_days_helpdesk,
                "admin" => &mut a.token_max_days_admin,
                "viewer" => &mut a.token_max_days_viewer,
                other => anyhow::bail!("--token-max-days {spec:?}: unknown role {other:?}"),
            };
            *target = days;
        }
        let o = &mut c.oidc;
        set_some(&mut o.issuer, &self.oidc_issuer);
        set_some(&mut o.client_id, &self.oidc_client_id);
        if self.oidc_client_secret.is_some() {
            o.client_secret = self.oidc_client_secret.clone();
            o.client_secret_file = None;
        }
        if self.oidc_client_secret_file.is_some() {
            o.client_secret_file = self.oidc_client_secret_file.clone();
            o.client_secret = None;
        }
        set_some(&mut o.redirect_url, &self.oidc_redirect_url);
        set(&mut o.login_ttl_seconds, &self.oidc_login_ttl_seconds);
        Ok(())
    }
}
