//! The `orchard` client commands: every one talks HTTPS to a running server's admin API (`/api/v1`), with the
//! server URL and token from flags or the environment. Output is a table or `key: value` lines for people, the
//! API's own JSON with `--json`. On failure the API's error code, message and request id go to stderr and the
//! exit status says what kind of failure it was (see [`CliError::exit_code`]).

mod apps;
mod audit;
mod client;
mod credentials;
mod dep;
mod device;
mod group;
mod maintenance;
mod os;
mod output;
mod profile;
pub(crate) mod progress;
mod push_certificate;
mod tenant;
mod tokens;
mod users;
mod webhook;

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};

pub use client::{Client, Connection};

/// Flags every API command takes (after any subcommand: `orchard device list --json`).
#[derive(Args, Debug, Clone)]
pub struct ApiArgs {
    /// The server's https URL, e.g. `https://mdm.example.edu:8443`.
    #[arg(long, env = "ORCHARD_SERVER", global = true)]
    server: Option<String>,
    /// An API token (made with `orchard token create`).
    #[arg(long, env = "ORCHARD_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// PEM file with the CA the server's TLS certificate must chain to (e.g. the data directory's ca.pem);
    /// default: the public web roots built into orchard.
    #[arg(long, env = "ORCHARD_CA", global = true)]
    ca: Option<PathBuf>,
    /// Print the API's JSON instead of tables (errors, too, go to stderr as the API's JSON).
    #[arg(long, global = true)]
    json: bool,
}

/// The admin-API commands, flattened into the binary's top-level commands.
#[derive(Subcommand, Debug)]
pub enum ApiCommand {
    /// Tenants (departments), through the admin API.
    Tenant {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: tenant::TenantCommand,
    },
    /// API tokens through the admin API (`token create` makes one directly in the database).
    ApiToken {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: tokens::ApiTokenCommand,
    },
    /// People who signed in through the university's provider, through the admin API.
    User {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: users::UserCommand,
    },
    /// The profile library (a tenant's profiles and the global ones), through the admin API.
    Profile {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: profile::ProfileCommand,
    },
    /// Planned-maintenance notices shown to every department, through the admin API.
    Maintenance {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: maintenance::MaintenanceCommand,
    },
    /// Signed webhook endpoints (a tenant's with --tenant, else the global ones), through the admin API.
    Webhook {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: webhook::WebhookCommand,
    },
    /// Device groups of a tenant (static and smart), through the admin API.
    Group {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: group::GroupCommand,
    },
    /// Assignments of a tenant (a profile for the tenant, groups or devices), through the admin API.
    Assignment {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: group::AssignmentCommand,
    },
    /// OS currency: a tenant's OS policy and compliance, the catalogue of releases, a device's declarations.
    Os {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: os::OsCommand,
    },
    /// Enrollment links of a tenant, through the admin API.
    Link {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: tenant::LinkCommand,
    },
    /// Devices, their commands, pushes, zero-touch setup and Activation Lock, through the admin API.
    Device {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: device::DeviceCommand,
    },
    /// The MDM push certificate through the admin API of a running server (`push-cert` works on the database
    /// directly, on the server host).
    PushCertificate {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: push_certificate::PushCertificateCommand,
    },
    /// Automated Device Enrollment: DEP tokens, enrollment templates, assignments, DEP devices.
    Dep {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: dep::DepCommand,
    },
    /// Apps and Books: a tenant's content token, its location's apps and licences.
    Apps {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: apps::AppsCommand,
    },
    /// The audit log, through the admin API.
    Audit {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// The credential register: every certificate and token with its owner, expiry, state and how to renew it.
    Credentials {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// The usage report for billing, through the admin API.
    Usage {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: audit::UsageCommand,
    },
}

/// Why a command failed.
#[derive(Debug)]
pub enum CliError {
    /// The API refused or failed: its status, code, message and request id (and its JSON body, if any).
    Api {
        status: u16,
        code: String,
        message: String,
        request_id: String,
        body: Option<serde_json::Value>,
    },
    /// The command line or environment is incomplete or wrong.
    Usage(String),
    /// Nothing useful came back: network, TLS, a local file, an unreadable answer.
    Local(String),
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Api {
                status,
                code,
                message,
                request_id,
                ..
            } => {
                write!(f, "{code}: {message} (HTTP {status}")?;
                if !request_id.is_empty() {
                    write!(f, ", request id {request_id}")?;
                }
                write!(f, ")")
            }
            CliError::Usage(m) | CliError::Local(m) => f.write_str(m),
        }
    }
}

impl CliError {
    /// The exit status: scripts can tell "not there" from "not allowed" from "try again later".
    /// 1 no answer (network, TLS, local file), 2 usage, 3 unauthenticated, 4 forbidden, 5 not found or gone,
    /// 6 other refusals (invalid request, conflict), 7 server error.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Local(_) => 1,
            CliError::Usage(_) => 2,
            CliError::Api { status, .. } => match status {
                401 => 3,
                403 => 4,
                404 | 410 => 5,
                500.. => 7,
                _ => 6,
            },
        }
    }
}

/// How results are printed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Out {
    json: bool,
}

impl Out {
    pub(crate) fn is_json(&self) -> bool {
        self.json
    }

    /// The API's JSON as is with `--json`; otherwise what `human` makes of it.
    pub(crate) fn show(
        &self,
        value: &serde_json::Value,
        human: impl FnOnce(&serde_json::Value) -> String,
    ) -> Result<(), CliError> {
        let text = if self.json {
            let mut s = serde_json::to_string_pretty(value)
                .map_err(|e| CliError::Local(format!("printing JSON: {e}")))?;
            s.push('\n');
            s
        } else {
            human(value)
        };
        print_stdout(text.as_bytes())
    }
}

pub(crate) fn print_stdout(bytes: &[u8]) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        // `orchard audit list | head`: the reader has what it wanted; that is not a failure.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => Err(CliError::Local(format!("writing to stdout: {e}"))),
    }
}

/// Runs one API command. Failures are reported on stderr and end the process with [`CliError::exit_code`].
pub async fn run(command: ApiCommand) -> anyhow::Result<()> {
    let api = match &command {
        ApiCommand::Tenant { api, .. }
        | ApiCommand::ApiToken { api, .. }
        | ApiCommand::Link { api, .. }
        | ApiCommand::Maintenance { api, .. }
        | ApiCommand::Webhook { api, .. }
        | ApiCommand::Profile { api, .. }
        | ApiCommand::Group { api, .. }
        | ApiCommand::Assignment { api, .. }
        | ApiCommand::Os { api, .. }
        | ApiCommand::User { api, .. }
        | ApiCommand::Device { api, .. }
        | ApiCommand::PushCertificate { api, .. }
        | ApiCommand::Dep { api, .. }
        | ApiCommand::Apps { api, .. }
        | ApiCommand::Audit { api, .. }
        | ApiCommand::Credentials { api }
        | ApiCommand::Usage { api, .. } => api.clone(),
    };
    let out = Out { json: api.json };
    match execute(&api, out, command).await {
        Ok(()) => Ok(()),
        Err(e) => {
            report(&e, out);
            std::process::exit(e.exit_code());
        }
    }
}

async fn execute(api: &ApiArgs, out: Out, command: ApiCommand) -> Result<(), CliError> {
    let client = Client::new(&Connection {
        server: api.server.as_deref(),
        token: api.token.as_deref(),
        ca: api.ca.as_deref(),
    })?;
    match command {
        ApiCommand::Tenant { command, .. } => tenant::run_tenant(&client, out, command).await,
        ApiCommand::ApiToken { command, .. } => tokens::run(&client, out, command).await,
        ApiCommand::Link { command, .. } => tenant::run_link(&client, out, command).await,
        ApiCommand::Maintenance { command, .. } => maintenance::run(&client, out, command).await,
        ApiCommand::Webhook { command, .. } => webhook::run(&client, out, command).await,
        ApiCommand::Profile { command, .. } => profile::run(&client, out, command).await,
        ApiCommand::Group { command, .. } => group::run_group(&client, out, command).await,
        ApiCommand::Assignment { command, .. } => {
            group::run_assignment(&client, out, command).await
        }
        ApiCommand::Os { command, .. } => os::run(&client, out, command).await,
        ApiCommand::User { command, .. } => users::run(&client, out, command).await,
        ApiCommand::Device { command, .. } => device::run(&client, out, command).await,
        ApiCommand::PushCertificate { command, .. } => {
            push_certificate::run(&client, out, command).await
        }
        ApiCommand::Dep { command, .. } => dep::run(&client, out, command).await,
        ApiCommand::Apps { command, .. } => apps::run(&client, out, command).await,
        ApiCommand::Audit { command, .. } => audit::run_audit(&client, out, command).await,
        ApiCommand::Credentials { .. } => credentials::run(&client, out).await,
        ApiCommand::Usage { command, .. } => audit::run_usage(&client, out, command).await,
    }
}

/// With `--json`, an API error goes to stderr as the API's own JSON (one line) so scripts can parse it.
fn report(e: &CliError, out: Out) {
    let _ = std::io::stdout().flush();
    let mut stderr = std::io::stderr().lock();
    match e {
        CliError::Api {
            body: Some(body), ..
        } if out.json => {
            let _ = writeln!(stderr, "{body}");
        }
        _ => {
            let _ = writeln!(stderr, "orchard: error: {e}");
        }
    }
}

/// Reads a file the user named, saying which flag it came from when it cannot be read.
pub(crate) fn read_file(flag: &str, path: &std::path::Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path)
        .map_err(|e| CliError::Local(format!("reading {flag} {}: {e}", path.display())))
}

pub(crate) fn write_file(flag: &str, path: &std::path::Path, bytes: &[u8]) -> Result<(), CliError> {
    std::fs::write(path, bytes)
        .map_err(|e| CliError::Local(format!("writing {flag} {}: {e}", path.display())))
}

/// `--limit`/`--offset` as query parameters (only those given: the server's defaults apply otherwise).
#[derive(Args, Debug, Clone, Copy)]
pub(crate) struct PageArgs {
    /// How many to show (the server's default and maximum apply).
    #[arg(long)]
    limit: Option<i64>,
    /// How many to skip.
    #[arg(long)]
    offset: Option<i64>,
}

impl PageArgs {
    /// The offset asked for (lists that do not repeat it in their answer still number their rows right).
    pub(crate) fn offset(&self) -> i64 {
        self.offset.unwrap_or(0).max(0)
    }

    pub(crate) fn push_query(&self, query: &mut Vec<(&'static str, String)>) {
        if let Some(l) = self.limit {
            query.push(("limit", l.to_string()));
        }
        if let Some(o) = self.offset {
            query.push(("offset", o.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_status() {
        let api = |status| CliError::Api {
            status,
            code: String::new(),
            message: String::new(),
            request_id: String::new(),
            body: None,
        };
        assert_eq!(api(401).exit_code(), 3);
        assert_eq!(api(403).exit_code(), 4);
        assert_eq!(api(404).exit_code(), 5);
        assert_eq!(api(409).exit_code(), 6);
        assert_eq!(api(400).exit_code(), 6);
        assert_eq!(api(503).exit_code(), 7);
        assert_eq!(CliError::Usage(String::new()).exit_code(), 2);
        assert_eq!(CliError::Local(String::new()).exit_code(), 1);
    }

    #[test]
    fn api_errors_name_code_and_request_id() {
        let e = CliError::Api {
            status: 404,
            code: "not_found".into(),
            message: "not found".into(),
            request_id: "0193-abc".into(),
            body: None,
        };
        assert_eq!(
            e.to_string(),
            "not_found: not found (HTTP 404, request id 0193-abc)"
        );
    }
}

#[cfg(test)]
mod shape_tests {
    use clap::{Command, Subcommand};

    /// Every command's own flags, walked recursively.
    fn walk(cmd: &Command, path: &str, seen: &mut Vec<(String, String)>) {
        for arg in cmd.get_arguments() {
            if let Some(long) = arg.get_long() {
                seen.push((path.to_string(), long.to_string()));
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, &format!("{path} {}", sub.get_name()), seen);
        }
    }

    /// A subcommand flag named like a global one (`--token` for a DEP token) would silently take the API
    /// token's place: clap merges them.
    #[test]
    fn no_subcommand_flag_shadows_a_global_flag() {
        let root = super::ApiCommand::augment_subcommands(Command::new("orchard"));
        root.clone().debug_assert();
        let globals = ["server", "token", "ca", "json"];
        for top in root.get_subcommands() {
            let mut seen = Vec::new();
            for sub in top.get_subcommands() {
                walk(
                    sub,
                    &format!("{} {}", top.get_name(), sub.get_name()),
                    &mut seen,
                );
            }
            for (path, long) in seen {
                assert!(
                    !globals.contains(&long.as_str()),
                    "`orchard {path}` has its own --{long}, which shadows the global one"
                );
            }
        }
    }
}
