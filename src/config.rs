//! The server's configuration: one typed [`Config`], read from a TOML file, then overridden by `ORCHARD_*`
//! environment variables and command-line flags (precedence: flag > environment > file > built-in default; the
//! flags and their environment variables are in `config_flags.rs`).
//!
//! Adding a key: a field (with its default in the section's `Default`) in the section struct below, a row in
//! [`KEYS`] (its explanation for `orchard config example`), an optional flag with `env = "ORCHARD_…"` in
//! `config_flags.rs` applied in `ServeArgs::apply`, and, if it can be wrong, a check in [`Config::validate`]
//! naming the key. A new subsystem gets its own section struct and a field in [`Config`]. The tests below fail
//! when a key has no row in [`KEYS`] or a row names no key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Where `orchard` looks for its configuration file when neither `--config` nor `ORCHARD_CONFIG` names one;
/// without a file there the built-in defaults apply.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/orchard/orchard.toml";

/// What a redacted secret prints as in `orchard config check`.
const REDACTED: &str = "<redacted>";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerSection,
    pub storage: StorageSection,
    pub tls: TlsSection,
    pub log: LogSection,
    pub enrollment: EnrollmentSection,
    pub push: PushSection,
    pub commands: CommandsSection,
    pub reconciler: ReconcilerSection,
    pub webhooks: WebhooksSection,
    pub credentials: CredentialsSection,
    pub smtp: SmtpSection,
    pub limits: LimitsSection,
    pub dep: DepSection,
    pub apps: AppsSection,
    pub os_catalogue: OsCatalogueSection,
    pub activation_lock: ActivationLockSection,
    pub billing: BillingSection,
    pub access: AccessSection,
    pub oidc: OidcSection,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSection {
    pub listen: SocketAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    pub organization: String,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            public_url: None,
            organization: "Orchard University".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSection {
    pub data_dir: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kek_file: Option<PathBuf>,
    /// Unset: the backend's default (`Backend::default_pool_size`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool_size: Option<u32>,
}

impl Default for StorageSection {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./orchard-data"),
            database_url: None,
            database_url_file: None,
            kek_file: None,
            pool_size: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// `text` (human-readable lines) or `json` (one JSON object a line, for a log collector).
    pub format: String,
    pub filter: String,
}

impl LogSection {
    /// Whether [`LogSection::format`] asks for JSON lines (validated: `text` or `json`).
    pub fn json(&self) -> bool {
        self.format == "json"
    }
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            format: "text".into(),
            filter: "info,sqlx=warn,hyper=warn".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnrollmentSection {
    pub challenge_ttl_seconds: u32,
    pub device_message_max_age_seconds: u32,
    pub device_identity_days: u32,
    pub identity_renewal_days: u32,
    pub identity_grace_days: u32,
    pub link_downloads_per_minute: u32,
}

impl Default for EnrollmentSection {
    fn default() -> Self {
        Self {
            challenge_ttl_seconds: 3600,
            device_message_max_age_seconds: 600,
            device_identity_days: 365,
            identity_renewal_days: 60,
            identity_grace_days: 7,
            link_downloads_per_minute: orchard_core::limits::LINK_DOWNLOADS_PER_MINUTE,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushSection {
    pub apns_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apns_ca: Option<PathBuf>,
    pub rate: u32,
    pub burst: u32,
    pub concurrency: u32,
    pub wake_inactive_hours: u32,
    pub claim_lease_seconds: u32,
    pub adaptive: bool,
    pub max_in_flight: u32,
    pub target_latency_ms: u32,
}

impl Default for PushSection {
    fn default() -> Self {
        let core = orchard_core::push::PushSettings::default();
        Self {
            apns_url: orchard_apns::PRODUCTION_URL.into(),
            apns_ca: None,
            rate: core.rate_per_second,
            burst: core.burst,
            concurrency: u32::try_from(core.concurrency).unwrap_or(u32::MAX),
            wake_inactive_hours: u32::try_from(core.wake_inactive_after_seconds / 3600)
                .unwrap_or(24),
            claim_lease_seconds: u32::try_from(core.claim_lease_seconds).unwrap_or(300),
            adaptive: core.adaptive,
            max_in_flight: u32::try_from(core.max_in_flight).unwrap_or(64),
            target_latency_ms: u32::try_from(core.target_latency_ms).unwrap_or(500),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommandsSection {
    pub max_attempts: u32,
    pub resend_after_minutes: u32,
    pub history_days: u32,
    pub secret_ttl_seconds: u32,
}

impl Default for CommandsSection {
    fn default() -> Self {
        use orchard_core::commands::{hygiene, secrets};
        Self {
            max_attempts: u32::try_from(hygiene::DEFAULT_MAX_ATTEMPTS).unwrap_or(0),
            resend_after_minutes: u32::try_from(hygiene::DEFAULT_RESEND_AFTER_MINUTES).unwrap_or(0),
            history_days: u32::try_from(hygiene::DEFAULT_HISTORY_DAYS).unwrap_or(0),
            secret_ttl_seconds: u32::try_from(secrets::DEFAULT_SECRET_COMMAND_TTL_SECONDS)
                .unwrap_or(900),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReconcilerSection {
    pub retry_seconds: u32,
    pub interval_seconds: u32,
}

impl Default for ReconcilerSection {
    fn default() -> Self {
        Self {
            retry_seconds: 60,
            interval_seconds: 30,
        }
    }
}

/// Webhook delivery (issue 15, point 6; docs/webhooks.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksSection {
    pub timeout_seconds: u32,
    pub retry_seconds: u32,
    pub retry_max_seconds: u32,
    pub max_attempts: u32,
    pub disable_after_failures: u32,
    pub interval_seconds: u32,
    pub retention_days: u32,
    pub danger_allow_http_localhost: bool,
}

impl Default for WebhooksSection {
    fn default() -> Self {
        Self {
            timeout_seconds: 10,
            retry_seconds: 30,
            retry_max_seconds: 3600,
            max_attempts: 8,
            disable_after_failures: 20,
            interval_seconds: 5,
            retention_days: 30,
            danger_allow_http_localhost: false,
        }
    }
}

/// The credential register's expiry warnings (issue 15, point 4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CredentialsSection {
    pub warning_days: Vec<i64>,
    pub check_minutes: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub central_it_email: Option<String>,
}

impl Default for CredentialsSection {
    fn default() -> Self {
        Self {
            warning_days: orchard_core::credentials::DEFAULT_WARNING_DAYS.to_vec(),
            check_minutes: 60,
            central_it_email: None,
        }
    }
}

/// The SMTP server expiry warnings go out through; without host and from nobody is e-mailed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub security: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
}

impl Default for SmtpSection {
    fn default() -> Self {
        Self {
            host: None,
            port: None,
            security: "starttls".into(),
            username: None,
            password: None,
            password_file: None,
            from: None,
            ca: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSection {
    pub handshake_timeout_seconds: u32,
    pub header_timeout_seconds: u32,
    pub body_timeout_seconds: u32,
    pub idle_timeout_seconds: u32,
    pub max_connections_per_ip: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_token_file: Option<PathBuf>,
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            handshake_timeout_seconds: 10,
            header_timeout_seconds: 10,
            body_timeout_seconds: 60,
            idle_timeout_seconds: 60,
            max_connections_per_ip: 1024,
            metrics_token: None,
            metrics_token_file: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DepSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_ca: Option<PathBuf>,
    pub sync_minutes: u32,
}

impl Default for DepSection {
    fn default() -> Self {
        Self {
            url: None,
            ca: None,
            device_ca: None,
            sync_minutes: 15,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppsSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    pub sync_minutes: u32,
}

impl Default for AppsSection {
    fn default() -> Self {
        Self {
            url: None,
            ca: None,
            sync_minutes: 60,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OsCatalogueSection {
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
}

impl Default for OsCatalogueSection {
    fn default() -> Self {
        Self {
            url: "https://gdmf.apple.com/v2/pmv".into(),
            ca: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ActivationLockSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BillingSection {
    /// A string so that 399.50 stays exact (the usage report parses it as a decimal).
    pub price_per_device_year: String,
    pub currency: String,
}

impl Default for BillingSection {
    fn default() -> Self {
        Self {
            price_per_device_year: "400".into(),
            currency: "SEK".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessSection {
    pub token_default_days: u32,
    pub token_max_days_operator: u32,
    pub token_max_days_helpdesk: u32,
    pub token_max_days_admin: u32,
    pub token_max_days_viewer: u32,
    pub session_ttl_seconds: u32,
}

impl Default for AccessSection {
    fn default() -> Self {
        let policy = orchard_core::access::tokens::TokenPolicy::default();
        let days = |d: i64| u32::try_from(d).unwrap_or(1);
        Self {
            token_default_days: days(policy.default_days),
            token_max_days_operator: days(policy.max_days_operator),
            token_max_days_helpdesk: days(policy.max_days_helpdesk),
            token_max_days_admin: days(policy.max_days_admin),
            token_max_days_viewer: days(policy.max_days_viewer),
            session_ttl_seconds: u32::try_from(
                orchard_core::access::oidc::DEFAULT_SESSION_TTL_SECONDS,
            )
            .unwrap_or(28_800),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OidcSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect_url: Option<String>,
    pub login_ttl_seconds: u32,
}

impl Default for OidcSection {
    fn default() -> Self {
        Self {
            issuer: None,
            client_id: None,
            client_secret: None,
            client_secret_file: None,
            redirect_url: None,
            login_ttl_seconds: u32::try_from(orchard_core::access::oidc::DEFAULT_LOGIN_TTL_SECONDS)
                .unwrap_or(600),
        }
    }
}

/// One key of the file, for `orchard config example`: where it lives, how to override it and what it means.
pub struct KeyDoc {
    pub section: &'static str,
    pub key: &'static str,
    /// The environment variable and flag that override it.
    pub env: &'static str,
    pub flag: &'static str,
    pub doc: &'static str,
    /// For a key without a default: a value to show (commented out) in the example.
    pub example: Option<&'static str>,
}

const fn key(
    section: &'static str,
    key: &'static str,
    env: &'static str,
    flag: &'static str,
    doc: &'static str,
) -> KeyDoc {
    KeyDoc {
        section,
        key,
        env,
        flag,
        doc,
        example: None,
    }
}

const fn unset(
    section: &'static str,
    key: &'static str,
    env: &'static str,
    flag: &'static str,
    doc: &'static str,
    example: &'static str,
) -> KeyDoc {
    KeyDoc {
        section,
        key,
        env,
        flag,
        doc,
        example: Some(example),
    }
}

/// Every key, in file order, with its explanation.
pub const KEYS: &[KeyDoc] = &[
    key("server", "listen", "ORCHARD_LISTEN", "--listen", "Address to listen on (port 0 picks a free port; the chosen address is printed)."),
    unset("server", "public_url", "ORCHARD_PUBLIC_URL", "--public-url", "The https origin devices reach this server at; default: https://<listen address>.", "\"https://mdm.example.edu\""),
    key("server", "organization", "ORCHARD_ORGANIZATION", "--organization", "Organization name shown in enrollment profiles."),
    key("storage", "data_dir", "ORCHARD_DATA_DIR", "--data-dir", "Directory for the SQLite database, the TLS identity and (unless kek_file says otherwise) the key-encryption key."),
    unset("storage", "database_url", "ORCHARD_DATABASE_URL", "--database-url", "postgres://user:pass@host/db to use PostgreSQL; default: SQLite in the data directory. Secret: prefer database_url_file.", "\"postgres://orchard@db.example.edu/orchard\""),
    unset("storage", "database_url_file", "ORCHARD_DATABASE_URL_FILE", "--database-url-file", "A file holding the database URL (it carries the password), instead of database_url.", "\"/run/secrets/orchard-database-url\""),
    unset("storage", "kek_file", "ORCHARD_KEK_FILE", "--kek-file", "File with the key-encryption key (32 bytes, base64) sealing the keys in the database; every node of a database needs the same one (or the key itself in ORCHARD_KEK). Default: kek in the data directory, made by the first start.", "\"/etc/orchard/kek\""),
    unset("storage", "pool_size", "ORCHARD_DATABASE_POOL_SIZE", "--database-pool-size", "Database connections this node keeps at most. Default: 4 on SQLite (one writer at a time, and each connection costs memory), 10 on PostgreSQL (mind max_connections across all nodes).", "10"),
    unset("tls", "cert", "ORCHARD_TLS_CERT", "--tls-cert", "TLS certificate chain (PEM). Default: a certificate issued by Orchard's CA, in the data directory.", "\"/etc/orchard/tls/fullchain.pem\""),
    unset("tls", "key", "ORCHARD_TLS_KEY", "--tls-key", "TLS private key (PEM), with tls.cert.", "\"/etc/orchard/tls/key.pem\""),
    key("log", "format", "ORCHARD_LOG_FORMAT", "--log-format", "text (human-readable lines) or json (one JSON object a line with request_id, route, tenant, udid and command_uuid fields)."),
    key("log", "filter", "ORCHARD_LOG", "--log-filter", "Which log lines to keep (tracing's env-filter syntax)."),
    key("enrollment", "challenge_ttl_seconds", "ORCHARD_CHALLENGE_TTL_SECONDS", "--challenge-ttl-seconds", "How long the SCEP challenge in a downloaded enrollment profile stays usable."),
    key("enrollment", "device_message_max_age_seconds", "ORCHARD_DEVICE_MESSAGE_MAX_AGE_SECONDS", "--device-message-max-age-seconds", "Replay window: Authenticate, TokenUpdate and CheckOut signed more than this long from the server's clock are refused (0 turns the check off)."),
    key("enrollment", "device_identity_days", "ORCHARD_DEVICE_IDENTITY_DAYS", "--device-identity-days", "Days a device identity certificate (issued by SCEP) is valid."),
    key("enrollment", "identity_renewal_days", "ORCHARD_IDENTITY_RENEWAL_DAYS", "--identity-renewal-days", "A device's identity is renewed when fewer than this many days of it remain."),
    key("enrollment", "identity_grace_days", "ORCHARD_IDENTITY_GRACE_DAYS", "--identity-grace-days", "Days the previous identity is still accepted after a device switched to its renewed one."),
    key("enrollment", "link_downloads_per_minute", "ORCHARD_LINK_DOWNLOADS_PER_MINUTE", "--link-downloads-per-minute", "Enrollment profiles one enrollment link hands out per minute (0: no limit)."),
    key("push", "apns_url", "ORCHARD_APNS_URL", "--apns-url", "APNs base URL: Apple's production service; the sandbox or a local APNs server otherwise."),
    unset("push", "apns_ca", "ORCHARD_APNS_CA", "--apns-ca", "PEM file with the roots APNs' TLS certificate must chain to (default: the public roots).", "\"/etc/orchard/apns-roots.pem\""),
    key("push", "rate", "ORCHARD_PUSH_RATE", "--push-rate", "Sustained pushes per second, so waking a whole university does not bring every iPad at once."),
    key("push", "burst", "ORCHARD_PUSH_BURST", "--push-burst", "Pushes that may go out at once after a quiet period."),
    key("push", "concurrency", "ORCHARD_PUSH_CONCURRENCY", "--push-concurrency", "Pushes in flight at once."),
    key("push", "wake_inactive_hours", "ORCHARD_WAKE_INACTIVE_HOURS", "--wake-inactive-hours", "A device silent this many hours gets a wake-up push (0 turns the sweep off)."),
    key("push", "claim_lease_seconds", "ORCHARD_PUSH_CLAIM_LEASE_SECONDS", "--push-claim-lease-seconds", "How long a claimed push belongs to the node that claimed it before another node may send it."),
    key("push", "adaptive", "ORCHARD_PUSH_ADAPTIVE", "--push-adaptive", "Pace pushes by what this node serves (device requests in flight and their latency), with push.rate as the upper bound; false: always push.rate."),
    key("push", "max_in_flight", "ORCHARD_PUSH_MAX_IN_FLIGHT", "--push-max-in-flight", "Adaptive pacing: more device requests than this being served on a node slows its pushes down."),
    key("push", "target_latency_ms", "ORCHARD_PUSH_TARGET_LATENCY_MS", "--push-target-latency-ms", "Adaptive pacing: device requests slower than this (smoothed, milliseconds) slow the pushes down."),
    key("commands", "max_attempts", "ORCHARD_COMMAND_MAX_ATTEMPTS", "--command-max-attempts", "A command handed out this many times without a final answer is marked failed (0: no limit)."),
    key("commands", "resend_after_minutes", "ORCHARD_COMMAND_RESEND_AFTER_MINUTES", "--command-resend-after-minutes", "A command sent but not answered is pushed for and handed out again this many minutes later."),
    key("commands", "history_days", "ORCHARD_COMMAND_HISTORY_DAYS", "--command-history-days", "Finished commands are kept in the history this many days (0: for ever)."),
    key("commands", "secret_ttl_seconds", "ORCHARD_SECRET_COMMAND_TTL_SECONDS", "--secret-command-ttl-seconds", "Seconds a command carrying a device credential (ClearPasscode) may wait in the queue."),
    key("reconciler", "retry_seconds", "ORCHARD_RECONCILE_RETRY_SECONDS", "--reconcile-retry-seconds", "A failed profile install or removal is queued again this many seconds later, doubled per failure."),
    key("reconciler", "interval_seconds", "ORCHARD_RECONCILE_INTERVAL_SECONDS", "--reconcile-interval-seconds", "The reconciler's periodic pass (reports and changes wake it at once)."),
    key("webhooks", "timeout_seconds", "ORCHARD_WEBHOOK_TIMEOUT_SECONDS", "--webhook-timeout-seconds", "Seconds a webhook receiver has to answer (connect, send, status line); 1 to 120."),
    key("webhooks", "retry_seconds", "ORCHARD_WEBHOOK_RETRY_SECONDS", "--webhook-retry-seconds", "A failed delivery is tried again this many seconds later, doubled per attempt (plus up to 20 % jitter)."),
    key("webhooks", "retry_max_seconds", "ORCHARD_WEBHOOK_RETRY_MAX_SECONDS", "--webhook-retry-max-seconds", "The longest wait between two attempts of a delivery."),
    key("webhooks", "max_attempts", "ORCHARD_WEBHOOK_MAX_ATTEMPTS", "--webhook-max-attempts", "Attempts per delivery before it is given up; 1 to 50."),
    key("webhooks", "disable_after_failures", "ORCHARD_WEBHOOK_DISABLE_AFTER_FAILURES", "--webhook-disable-after-failures", "Consecutive failed attempts after which an endpoint is disabled (audited; an admin enables it again)."),
    key("webhooks", "interval_seconds", "ORCHARD_WEBHOOK_INTERVAL_SECONDS", "--webhook-interval-seconds", "How often each node looks for due deliveries (new events wake it at once)."),
    key("webhooks", "retention_days", "ORCHARD_WEBHOOK_RETENTION_DAYS", "--webhook-retention-days", "Days delivered and given-up deliveries stay in the delivery log."),
    key("webhooks", "danger_allow_http_localhost", "ORCHARD_DANGER_WEBHOOK_ALLOW_HTTP_LOCALHOST", "--danger-webhook-allow-http-localhost", "Also accept plain-http webhook URLs on loopback (127.0.0.1, localhost, [::1]). For tests only: events and signatures would travel unencrypted."),
    key("credentials", "warning_days", "ORCHARD_CREDENTIAL_WARNING_DAYS", "--credential-warning-days", "Days before a certificate or token expires at which its owner and central IT are e-mailed, each once (flag and variable: comma-separated)."),
    key("credentials", "check_minutes", "ORCHARD_CREDENTIAL_CHECK_MINUTES", "--credential-check-minutes", "Minutes between two expiry checks (one node checks at a time)."),
    unset("credentials", "central_it_email", "ORCHARD_CENTRAL_IT_EMAIL", "--central-it-email", "Central IT's address: every expiry warning goes here too (departments' own go to their contact).", "\"mdm-admins@example.edu\""),
    unset("smtp", "host", "ORCHARD_SMTP_HOST", "--smtp-host", "SMTP server for expiry warnings (with smtp.from); without it nobody is e-mailed.", "\"smtp.example.edu\""),
    unset("smtp", "port", "ORCHARD_SMTP_PORT", "--smtp-port", "SMTP port (default: 587 for starttls, 465 for tls, 25 for plain).", "587"),
    key("smtp", "security", "ORCHARD_SMTP_SECURITY", "--smtp-security", "starttls, tls (implicit TLS) or plain (no TLS: a relay on this host, or tests)."),
    unset("smtp", "username", "ORCHARD_SMTP_USERNAME", "--smtp-username", "SMTP AUTH user name (with a password).", "\"orchard\""),
    unset("smtp", "password", "ORCHARD_SMTP_PASSWORD", "--smtp-password", "SMTP AUTH password. Secret: prefer password_file.", "\"change-me\""),
    unset("smtp", "password_file", "ORCHARD_SMTP_PASSWORD_FILE", "--smtp-password-file", "A file holding the SMTP password, instead of password.", "\"/run/secrets/orchard-smtp-password\""),
    unset("smtp", "from", "ORCHARD_SMTP_FROM", "--smtp-from", "The sender of the warnings.", "\"Orchard <orchard@example.edu>\""),
    unset("smtp", "ca", "ORCHARD_SMTP_CA", "--smtp-ca", "PEM file with the roots the SMTP server's certificate must chain to (default: the public roots).", "\"/etc/orchard/smtp-roots.pem\""),
    key("limits", "handshake_timeout_seconds", "ORCHARD_HANDSHAKE_TIMEOUT_SECONDS", "--handshake-timeout-seconds", "Seconds a client has to finish the TLS handshake."),
    key("limits", "header_timeout_seconds", "ORCHARD_HEADER_TIMEOUT_SECONDS", "--header-timeout-seconds", "Seconds a client has to send a request's headers once it starts."),
    key("limits", "body_timeout_seconds", "ORCHARD_BODY_TIMEOUT_SECONDS", "--body-timeout-seconds", "Seconds a client has to send a request's whole body after its headers."),
    key("limits", "idle_timeout_seconds", "ORCHARD_IDLE_TIMEOUT_SECONDS", "--idle-timeout-seconds", "Seconds a connection may sit idle before it is closed."),
    key("limits", "max_connections_per_ip", "ORCHARD_MAX_CONNECTIONS_PER_IP", "--max-connections-per-ip", "Connections one client address may hold at once (0: no limit); raise it behind campus NAT or a proxy."),
    unset("limits", "metrics_token", "ORCHARD_METRICS_TOKEN", "--metrics-token", "Bearer token /metrics requires; without it /metrics is open. Secret: prefer metrics_token_file.", "\"change-me\""),
    unset("limits", "metrics_token_file", "ORCHARD_METRICS_TOKEN_FILE", "--metrics-token-file", "A file holding the metrics token, instead of metrics_token.", "\"/run/secrets/orchard-metrics-token\""),
    unset("dep", "url", "ORCHARD_DEP_URL", "--dep-url", "Device Assignment (DEP/ASM) service URL: Apple's by default.", "\"https://mdmenrollment.apple.com\""),
    unset("dep", "ca", "ORCHARD_DEP_CA", "--dep-ca", "PEM file with the roots the DEP service's TLS certificate must chain to, with dep.url.", "\"/etc/orchard/dep-roots.pem\""),
    unset("dep", "device_ca", "ORCHARD_DEP_DEVICE_CA", "--dep-device-ca", "PEM file with Apple's device CA chain that signs MachineInfo in zero-touch enrollment; without it /enroll/dep refuses every device.", "\"/etc/orchard/apple-device-ca.pem\""),
    key("dep", "sync_minutes", "ORCHARD_DEP_SYNC_MINUTES", "--dep-sync-minutes", "Minutes between background syncs of every DEP token (0: only when asked)."),
    unset("apps", "url", "ORCHARD_APPS_URL", "--apps-url", "Apps and Books (VPP) service URL up to /mdm/v2: Apple's by default.", "\"https://vpp.itunes.apple.com/mdm/v2\""),
    unset("apps", "ca", "ORCHARD_APPS_CA", "--apps-ca", "PEM file with the roots the Apps and Books service must chain to, with apps.url.", "\"/etc/orchard/apps-roots.pem\""),
    key("apps", "sync_minutes", "ORCHARD_APPS_SYNC_MINUTES", "--apps-sync-minutes", "Minutes between background syncs of every tenant's Apps and Books location (0: only on request)."),
    key("os_catalogue", "url", "ORCHARD_OS_CATALOGUE_URL", "--os-catalogue-url", "Apple's public software-update feed, from which operators refresh the OS catalogue."),
    unset("os_catalogue", "ca", "ORCHARD_OS_CATALOGUE_CA", "--os-catalogue-ca", "PEM file with the roots the feed's TLS certificate must chain to (default: the public roots).", "\"/etc/orchard/apple-roots.pem\""),
    unset("activation_lock", "url", "ORCHARD_ACTIVATION_LOCK_URL", "--activation-lock-url", "Apple's activation service, used to clear Activation Lock (default: Apple's).", "\"https://deviceservices-external.apple.com/deviceservicesworkers/escrowKeyUnlock\""),
    unset("activation_lock", "ca", "ORCHARD_ACTIVATION_LOCK_CA", "--activation-lock-ca", "PEM file with the roots the activation service must chain to, with activation_lock.url.", "\"/etc/orchard/apple-roots.pem\""),
    key("billing", "price_per_device_year", "ORCHARD_PRICE_PER_DEVICE_YEAR", "--price-per-device-year", "Price of one device for one year in the usage report, e.g. \"400\" or \"399.50\"."),
    key("billing", "currency", "ORCHARD_CURRENCY", "--currency", "Currency of that price (ISO 4217)."),
    key("access", "token_default_days", "ORCHARD_TOKEN_DEFAULT_DAYS", "--token-default-days", "Lifetime of API tokens whose request names none, in days (capped by the role's maximum)."),
    key("access", "token_max_days_operator", "ORCHARD_TOKEN_MAX_DAYS", "--token-max-days operator=DAYS", "Longest lifetime of an operator's API token made through the API, in days."),
    key("access", "token_max_days_helpdesk", "ORCHARD_TOKEN_MAX_DAYS", "--token-max-days helpdesk=DAYS", "Longest lifetime of a helpdesk API token, in days."),
    key("access", "token_max_days_admin", "ORCHARD_TOKEN_MAX_DAYS", "--token-max-days admin=DAYS", "Longest lifetime of a department admin's API token, in days."),
    key("access", "token_max_days_viewer", "ORCHARD_TOKEN_MAX_DAYS", "--token-max-days viewer=DAYS", "Longest lifetime of a viewer's API token, in days."),
    key("access", "session_ttl_seconds", "ORCHARD_SESSION_TTL_SECONDS", "--session-ttl-seconds", "How long a browser session lasts before the person must sign in again."),
    unset("oidc", "issuer", "ORCHARD_OIDC_ISSUER", "--oidc-issuer", "Issuer URL of the university's OpenID Connect provider, exactly as it names itself; turns single sign-on on (with client_id).", "\"https://login.example.edu\""),
    unset("oidc", "client_id", "ORCHARD_OIDC_CLIENT_ID", "--oidc-client-id", "Client id registered for Orchard at the provider.", "\"orchard\""),
    unset("oidc", "client_secret", "ORCHARD_OIDC_CLIENT_SECRET", "--oidc-client-secret", "The client's secret. Secret: prefer client_secret_file.", "\"change-me\""),
    unset("oidc", "client_secret_file", "ORCHARD_OIDC_CLIENT_SECRET_FILE", "--oidc-client-secret-file", "A file holding the client's secret, instead of client_secret.", "\"/run/secrets/orchard-oidc-secret\""),
    unset("oidc", "redirect_url", "ORCHARD_OIDC_REDIRECT_URL", "--oidc-redirect-url", "Where the provider sends the browser back; default: <public url>/auth/callback.", "\"https://mdm.example.edu/auth/callback\""),
    key("oidc", "login_ttl_seconds", "ORCHARD_OIDC_LOGIN_TTL_SECONDS", "--oidc-login-ttl-seconds", "Seconds a person has to finish signing in at the provider before the login must start again."),
];

/// A configuration error that names its key; [`Config::load`] adds the file and line.
#[derive(Debug)]
pub struct KeyError {
    pub key: &'static str,
    pub message: String,
}

fn key_error(key: &'static str, message: impl Into<String>) -> KeyError {
    KeyError {
        key,
        message: message.into(),
    }
}

impl Config {
    /// Parses a file's text (unknown keys refused; toml's error carries the line and the key).
    pub fn parse(text: &str, origin: &Path) -> Result<Config> {
        toml::from_str::<Config>(text).map_err(|e| {
            let place = match e.span() {
                Some(span) => {
                    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                    format!("{}, line {line}", origin.display())
                }
                None => origin.display().to_string(),
            };
            // The short form first ("file, line N: unknown field `x`"), toml's excerpt of the line after it.
            anyhow::anyhow!("{place}: {}\n{e}", e.message().trim())
        })
    }

    /// The file to read: `explicit` (from `--config` or `ORCHARD_CONFIG`) must exist; otherwise
    /// [`DEFAULT_CONFIG_PATH`] when it exists, else none (built-in defaults).
    pub fn file_to_read(explicit: Option<&Path>) -> Option<PathBuf> {
        match explicit {
            Some(path) => Some(path.to_path_buf()),
            None => {
                let default = Path::new(DEFAULT_CONFIG_PATH);
                default.exists().then(|| default.to_path_buf())
            }
        }
    }

    /// Reads the file (or the defaults when there is none); overrides are applied by the caller, then
    /// [`Config::validate_against`].
    pub fn load(file: Option<&Path>) -> Result<(Config, String)> {
        match file {
            None => Ok((Config::default(), String::new())),
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("reading the configuration file {}", path.display())
                })?;
                Ok((Config::parse(&text, path)?, text))
            }
        }
    }

    /// [`Config::validate`], with the error placed at the key's line in the file it came from (when it is
    /// there; otherwise it came from a flag or the environment).
    pub fn validate_against(&self, file: Option<&Path>, text: &str) -> Result<()> {
        let Err(e) = self.validate() else {
            return Ok(());
        };
        let (section, name) = e.key.split_once('.').unwrap_or(("", e.key));
        match (file, line_of_key(text, section, name)) {
            (Some(path), Some(line)) => {
                bail!("{}, line {line}: {}: {}", path.display(), e.key, e.message)
            }
            _ => bail!(
                "{}: {} (from a flag, the environment or its default)",
                e.key,
                e.message
            ),
        }
    }

    /// Checks values that parse but cannot work, naming the key.
    pub fn validate(&self) -> std::result::Result<(), KeyError> {
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(key_error("log.format", "must be text or json"));
        }
        if let Some(url) = &self.server.public_url {
            if !url.starts_with("https://") {
                return Err(key_error(
                    "server.public_url",
                    "must be an https:// URL (Apple devices only talk to MDM over TLS)",
                ));
            }
        }
        if let Some(url) = &self.storage.database_url {
            if !(url.starts_with("postgres://")
                || url.starts_with("postgresql://")
                || url.starts_with("sqlite:"))
            {
                return Err(key_error(
                    "storage.database_url",
                    "must be postgres://… or sqlite:…",
                ));
            }
        }
        if self.storage.database_url.is_some() && self.storage.database_url_file.is_some() {
            return Err(key_error(
                "storage.database_url_file",
                "give database_url or database_url_file, not both",
            ));
        }
        if self.storage.pool_size == Some(0) {
            return Err(key_error("storage.pool_size", "at least 1 connection"));
        }
        if self.oidc.login_ttl_seconds < 60 {
            return Err(key_error("oidc.login_ttl_seconds", "at least 60 seconds"));
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(key_error("tls.key", "tls.cert and tls.key go together"));
        }
        if self.enrollment.challenge_ttl_seconds < 60 {
            return Err(key_error(
                "enrollment.challenge_ttl_seconds",
                "at least 60 seconds (an iPad needs time to install the profile)",
            ));
        }
        orchard_core::enrollment::renewal::IdentityRenewalSettings::new(
            self.enrollment.device_identity_days,
            self.enrollment.identity_renewal_days,
            self.enrollment.identity_grace_days,
        )
        .map_err(|e| key_error("enrollment.identity_renewal_days", e))?;
        if self.push.rate == 0 {
            return Err(key_error("push.rate", "at least 1 push per second"));
        }
        if self.push.burst == 0 {
            return Err(key_error("push.burst", "at least 1"));
        }
        if self.push.concurrency == 0 {
            return Err(key_error("push.concurrency", "at least 1"));
        }
        if self.push.claim_lease_seconds < 10 {
            return Err(key_error("push.claim_lease_seconds", "at least 10 seconds"));
        }
        if self.push.max_in_flight == 0 {
            return Err(key_error("push.max_in_flight", "at least 1"));
        }
        if self.push.target_latency_ms < 10 {
            return Err(key_error(
                "push.target_latency_ms",
                "at least 10 milliseconds",
            ));
        }
        orchard_core::commands::secrets::SecretCommandSettings::new(i64::from(
            self.commands.secret_ttl_seconds,
        ))
        .map_err(|e| key_error("commands.secret_ttl_seconds", e.to_string()))?;
        let w = &self.webhooks;
        if !(1..=120).contains(&w.timeout_seconds) {
            return Err(key_error("webhooks.timeout_seconds", "1 to 120 seconds"));
        }
        if !(1..=50).contains(&w.max_attempts) {
            return Err(key_error("webhooks.max_attempts", "1 to 50"));
        }
        for (key, value) in [
            ("webhooks.retry_seconds", w.retry_seconds),
            ("webhooks.retry_max_seconds", w.retry_max_seconds),
            ("webhooks.disable_after_failures", w.disable_after_failures),
            ("webhooks.interval_seconds", w.interval_seconds),
            ("webhooks.retention_days", w.retention_days),
        ] {
            if value == 0 {
                return Err(key_error(key, "at least 1"));
            }
        }
        orchard_core::credentials::CredentialSettings::default()
            .with_warning_days(&self.credentials.warning_days)
            .map_err(|e| key_error("credentials.warning_days", e.to_string()))?;
        if self.credentials.check_minutes == 0 {
            return Err(key_error("credentials.check_minutes", "at least 1 minute"));
        }
        if let Some(email) = &self.credentials.central_it_email {
            if !email.contains('@') {
                return Err(key_error(
                    "credentials.central_it_email",
                    format!("{email:?} is not an e-mail address"),
                ));
            }
        }
        orchard_core::credentials::mail::SmtpSecurity::parse(&self.smtp.security)
            .map_err(|e| key_error("smtp.security", e.to_string()))?;
        if self.smtp.host.is_some() != self.smtp.from.is_some() {
            return Err(key_error(
                "smtp.from",
                "smtp.host and smtp.from go together",
            ));
        }
        if self.smtp.password.is_some() && self.smtp.password_file.is_some() {
            return Err(key_error(
                "smtp.password_file",
                "give password or password_file, not both",
            ));
        }
        if self.smtp.username.is_some()
            != (self.smtp.password.is_some() || self.smtp.password_file.is_some())
        {
            return Err(key_error(
                "smtp.username",
                "a user name and a password go together",
            ));
        }
        if self.reconciler.interval_seconds == 0 {
            return Err(key_error(
                "reconciler.interval_seconds",
                "at least 1 second",
            ));
        }
        for (key, value) in [
            (
                "limits.handshake_timeout_seconds",
                self.limits.handshake_timeout_seconds,
            ),
            (
                "limits.header_timeout_seconds",
                self.limits.header_timeout_seconds,
            ),
            (
                "limits.body_timeout_seconds",
                self.limits.body_timeout_seconds,
            ),
            (
                "limits.idle_timeout_seconds",
                self.limits.idle_timeout_seconds,
            ),
            ("access.token_default_days", self.access.token_default_days),
            (
                "access.token_max_days_operator",
                self.access.token_max_days_operator,
            ),
            (
                "access.token_max_days_helpdesk",
                self.access.token_max_days_helpdesk,
            ),
            (
                "access.token_max_days_admin",
                self.access.token_max_days_admin,
            ),
            (
                "access.token_max_days_viewer",
                self.access.token_max_days_viewer,
            ),
            (
                "access.session_ttl_seconds",
                self.access.session_ttl_seconds,
            ),
        ] {
            if value == 0 {
                return Err(key_error(key, "must be at least 1"));
            }
        }
        if self.limits.metrics_token.is_some() && self.limits.metrics_token_file.is_some() {
            return Err(key_error(
                "limits.metrics_token_file",
                "give metrics_token or metrics_token_file, not both",
            ));
        }
        for (key, url, ca) in [
            ("dep.ca", &self.dep.url, &self.dep.ca),
            ("apps.ca", &self.apps.url, &self.apps.ca),
            (
                "activation_lock.ca",
                &self.activation_lock.url,
                &self.activation_lock.ca,
            ),
        ] {
            if ca.is_some() && url.is_none() {
                return Err(key_error(
                    key,
                    "needs the service's url in the same section",
                ));
            }
        }
        orchard_core::reporting::usage::UsageSettings::new(
            &self.billing.price_per_device_year,
            &self.billing.currency,
        )
        .map_err(|e| key_error("billing.price_per_device_year", e.to_string()))?;
        if self.oidc.issuer.is_some() != self.oidc.client_id.is_some() {
            return Err(key_error(
                "oidc.client_id",
                "oidc.issuer and oidc.client_id go together",
            ));
        }
        if self.oidc.client_secret.is_some() && self.oidc.client_secret_file.is_some() {
            return Err(key_error(
                "oidc.client_secret_file",
                "give client_secret or client_secret_file, not both",
            ));
        }
        Ok(())
    }

    /// The effective configuration for `orchard config check`: secrets replaced by a placeholder.
    pub fn redacted(&self) -> Config {
        let mut shown = self.clone();
        let redact = |s: &mut Option<String>| {
            if s.is_some() {
                *s = Some(REDACTED.into());
            }
        };
        redact(&mut shown.limits.metrics_token);
        redact(&mut shown.oidc.client_secret);
        redact(&mut shown.smtp.password);
        if let Some(url) = &mut shown.storage.database_url {
            *url = redact_url_password(url);
        }
        shown
    }

    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).context("writing the configuration as TOML")
    }

    /// The database URL, from the file `storage.database_url_file` names when given.
    pub fn database_url(&self) -> Result<Option<String>> {
        match (&self.storage.database_url, &self.storage.database_url_file) {
            (Some(url), _) => Ok(Some(url.clone())),
            (None, Some(path)) => {
                let url = read_secret_file("storage.database_url_file", path)?;
                if !(url.starts_with("postgres://")
                    || url.starts_with("postgresql://")
                    || url.starts_with("sqlite:"))
                {
                    bail!(
                        "storage.database_url_file: {} must hold a postgres://… or sqlite:… URL",
                        path.display()
                    );
                }
                Ok(Some(url))
            }
            (None, None) => Ok(None),
        }
    }

    pub fn metrics_token(&self) -> Result<Option<String>> {
        match (&self.limits.metrics_token, &self.limits.metrics_token_file) {
            (Some(token), _) => Ok(Some(token.clone())),
            (None, Some(path)) => read_secret_file("limits.metrics_token_file", path).map(Some),
            (None, None) => Ok(None),
        }
    }

    pub fn smtp_password(&self) -> Result<Option<String>> {
        match (&self.smtp.password, &self.smtp.password_file) {
            (Some(password), _) => Ok(Some(password.clone())),
            (None, Some(path)) => read_secret_file("smtp.password_file", path).map(Some),
            (None, None) => Ok(None),
        }
    }

    pub fn oidc_client_secret(&self) -> Result<Option<String>> {
        match (&self.oidc.client_secret, &self.oidc.client_secret_file) {
            (Some(secret), _) => Ok(Some(secret.clone())),
            (None, Some(path)) => read_secret_file("oidc.client_secret_file", path).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// `orchard config example`: every key with its explanation, its override and its default (keys without
    /// a default are commented out with an example value). Parsed, it gives [`Config::default`].
    pub fn example() -> Result<String> {
        let defaults =
            toml::Table::try_from(Config::default()).context("writing the defaults as TOML")?;
        let mut out = String::from(
            "# Orchard's configuration (orchard config example). Every key, with its default.\n\
             # Read from --config FILE, ORCHARD_CONFIG or /etc/orchard/orchard.toml; the environment variables\n\
             # and flags named below override the file (flag > environment > file > default).\n\
             # Secrets: prefer the *_file keys (a file readable only by the orchard user) to values here.\n",
        );
        let mut section = "";
        for doc in KEYS {
            if doc.section != section {
                section = doc.section;
                out.push_str(&format!("\n[{section}]\n"));
            }
            out.push_str(&format!(
                "# {}\n# env {}, flag {}\n",
                doc.doc, doc.env, doc.flag
            ));
            let value = defaults
                .get(doc.section)
                .and_then(|s| s.as_table())
                .and_then(|s| s.get(doc.key));
            match (value, doc.example) {
                (Some(value), _) => out.push_str(&format!("{} = {value}\n", doc.key)),
                (None, Some(example)) => out.push_str(&format!("# {} = {example}\n", doc.key)),
                (None, None) => bail!(
                    "{}.{} has neither a default nor an example",
                    doc.section,
                    doc.key
                ),
            }
        }
        Ok(out)
    }
}

fn read_secret_file(key: &str, path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{key}: reading {}", path.display()))?;
    let secret = text.trim_end_matches(['\n', '\r']).to_string();
    if secret.is_empty() {
        bail!("{key}: {} is empty", path.display());
    }
    Ok(secret)
}

/// `postgres://user:password@host/db` → `postgres://user:<redacted>@host/db`.
fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:{REDACTED}@{host}"),
        None => url.to_string(),
    }
}

/// The line (1-based) where `key` is set in `[section]` of a TOML text, for errors found after parsing.
fn line_of_key(text: &str, section: &str, key: &str) -> Option<usize> {
    let mut current = String::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            current = header.trim().to_string();
            continue;
        }
        if current == section {
            if let Some((name, _)) = line.split_once('=') {
                if name.trim() == key {
                    return Some(index + 1);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn the_example_parses_to_the_defaults() {
        let example = Config::example().unwrap();
        assert_eq!(parse(&example).unwrap(), Config::default());
    }

    #[test]
    fn every_key_has_a_row_and_every_row_a_key() {
        let defaults = toml::Table::try_from(Config::default()).unwrap();
        for (section, table) in &defaults {
            for key in table.as_table().unwrap().keys() {
                assert!(
                    KEYS.iter().any(|d| d.section == section && d.key == key),
                    "{section}.{key} has no row in KEYS"
                );
            }
        }
        for doc in KEYS {
            let in_defaults = defaults
                .get(doc.section)
                .and_then(|s| s.as_table())
                .is_some_and(|s| s.contains_key(doc.key));
            assert!(
                in_defaults || doc.example.is_some(),
                "{}.{}: no default and no example",
                doc.section,
                doc.key
            );
        }
    }

    /// Every key of the example, changed (or uncommented), is seen in the parsed configuration: no key is
    /// silently ignored, and each round-trips through TOML.
    #[test]
    fn a_change_to_any_key_is_seen() {
        let defaults = toml::Table::try_from(Config::default()).unwrap();
        for doc in KEYS {
            let changed: toml::Value = match defaults
                .get(doc.section)
                .and_then(|s| s.as_table())
                .and_then(|s| s.get(doc.key))
            {
                Some(toml::Value::Integer(n)) => toml::Value::Integer(n + 1),
                Some(toml::Value::Boolean(b)) => toml::Value::Boolean(!b),
                Some(toml::Value::String(s)) if doc.key == "listen" => {
                    toml::Value::String(s.replace("8443", "9443"))
                }
                Some(toml::Value::String(s)) if doc.key == "price_per_device_year" => {
                    toml::Value::String(format!("{s}.50"))
                }
                Some(toml::Value::String(s)) if doc.key == "currency" => {
                    toml::Value::String(if s == "SEK" { "EUR" } else { "SEK" }.into())
                }
                Some(toml::Value::String(s)) if doc.key == "format" => {
                    toml::Value::String(if s == "text" { "json" } else { "text" }.into())
                }
                Some(toml::Value::String(s)) if doc.key == "security" => {
                    toml::Value::String(if s == "starttls" { "tls" } else { "starttls" }.into())
                }
                Some(toml::Value::String(s)) => toml::Value::String(format!("{s}x")),
                // A list (the warning thresholds): one fewer is still a valid list.
                Some(toml::Value::Array(items)) if items.len() > 1 => {
                    toml::Value::Array(items[..items.len() - 1].to_vec())
                }
                Some(other) => panic!("{}.{}: unexpected type {other:?}", doc.section, doc.key),
                None => {
                    let example = doc.example.unwrap();
                    toml::from_str::<toml::Table>(&format!("v = {example}")).unwrap()["v"].clone()
                }
            };
            let mut table = toml::Table::new();
            let mut section = toml::Table::new();
            section.insert(doc.key.to_string(), changed.clone());
            table.insert(doc.section.to_string(), toml::Value::Table(section));
            let text = toml::to_string(&table).unwrap();
            let parsed =
                parse(&text).unwrap_or_else(|e| panic!("{}.{}: {e:#}", doc.section, doc.key));
            assert_ne!(
                parsed,
                Config::default(),
                "{}.{} was ignored",
                doc.section,
                doc.key
            );
            let back = toml::Table::try_from(&parsed).unwrap();
            assert_eq!(
                back[doc.section][doc.key], changed,
                "{}.{} did not round-trip",
                doc.section, doc.key
            );
        }
    }

    #[test]
    fn an_unknown_key_is_refused_with_its_name_and_line() {
        let text = "[server]\norganization = \"X\"\n\n[push]\nrate = 10\nbrust = 5\n";
        let error = format!("{:#}", parse(text).unwrap_err());
        assert!(error.contains("brust"), "{error}");
        assert!(error.contains("test.toml, line 6"), "{error}");
        let error = format!(
            "{:#}",
            parse("[servr]\nlisten = \"0.0.0.0:443\"\n").unwrap_err()
        );
        assert!(
            error.contains("servr") && error.contains("line 1"),
            "{error}"
        );
    }

    #[test]
    fn a_wrong_type_names_the_key_and_line() {
        let text = "[push]\nrate = \"fast\"\n";
        let error = format!("{:#}", parse(text).unwrap_err());
        assert!(
            error.contains("rate") && error.contains("line 2"),
            "{error}"
        );
        let error = format!(
            "{:#}",
            parse("[enrollment]\nchallenge_ttl_seconds = -5\n").unwrap_err()
        );
        assert!(
            error.contains("challenge_ttl_seconds") && error.contains("line 2"),
            "{error}"
        );
    }

    #[test]
    fn a_value_that_cannot_work_names_the_key_and_line() {
        let text = "[server]\norganization = \"X\"\n[enrollment]\ndevice_identity_days = 30\nidentity_renewal_days = 60\n";
        let config = parse(text).unwrap();
        let error = config
            .validate_against(Some(Path::new("test.toml")), text)
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("test.toml, line 5: enrollment.identity_renewal_days:"),
            "{error}"
        );
        let mut config = Config::default();
        config.server.public_url = Some("http://mdm.example.edu".into());
        let error = config.validate_against(None, "").unwrap_err().to_string();
        assert!(error.starts_with("server.public_url:"), "{error}");
        let text = "[log]\nformat = \"xml\"\n";
        let error = parse(text)
            .unwrap()
            .validate_against(Some(Path::new("test.toml")), text)
            .unwrap_err()
            .to_string();
        assert_eq!(error, "test.toml, line 2: log.format: must be text or json");
    }

    #[test]
    fn secrets_are_redacted_and_read_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics-token");
        std::fs::write(&path, "s3cret-token\n").unwrap();
        let mut config = Config::default();
        config.limits.metrics_token_file = Some(path);
        assert_eq!(
            config.metrics_token().unwrap().as_deref(),
            Some("s3cret-token")
        );
        config.oidc.client_secret = Some("oidc-s3cret".into());
        config.storage.database_url = Some("postgres://orchard:pw-s3cret@db/orchard".into());
        let shown = config.redacted().to_toml().unwrap();
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("postgres://orchard:<redacted>@db/orchard"),
            "{shown}"
        );
        let mut missing = Config::default();
        missing.oidc.client_secret_file = Some(dir.path().join("absent"));
        let error = format!("{:#}", missing.oidc_client_secret().unwrap_err());
        assert!(error.contains("oidc.client_secret_file"), "{error}");
    }
}
