//! `orchard profile …`: the profile library. With `--tenant` a tenant's profiles (and the global ones it is
//! offered); without, the global profiles (operators change those). Secrets show as `"<sealed>"`.

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::{json, Value};

use super::output::{fields, list};
use super::{CliError, Client, Out};

#[derive(Subcommand, Debug)]
pub enum ProfileCommand {
    /// List profiles: a tenant's and the global ones (`--tenant`), or the global ones.
    List {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// A profile with its versions, or one version's content (`--version`).
    Show {
        id: String,
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        version: Option<i64>,
    },
    /// Create a profile, or a new version of one (`--profile`), from a .mobileconfig (plist or signed) or a
    /// .json file (name, identifier, payloads).
    Upload {
        file: PathBuf,
        #[arg(long)]
        tenant: Option<String>,
        /// Add a version to this profile instead of creating one.
        #[arg(long)]
        profile: Option<String>,
        /// Orchard's name for an uploaded .mobileconfig (default: its PayloadDisplayName).
        #[arg(long)]
        name: Option<String>,
        /// Validate for Shared iPad.
        #[arg(long)]
        shared_ipad: bool,
        /// Validate for a Shared iPad's user channel.
        #[arg(long)]
        user_channel: bool,
    },
    /// Archive a profile (it leaves the list; devices keep what they have).
    Archive {
        id: String,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Queue InstallProfile of a profile (default: its latest version) on one of the tenant's devices.
    Install {
        id: String,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        device: String,
        #[arg(long)]
        version: Option<i64>,
    },
    /// Queue RemoveProfile of a profile on one of the tenant's devices.
    Remove {
        id: String,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        device: String,
    },
    /// What the tenant's devices have of a profile (installed version, pending command, last error).
    Devices {
        id: String,
        #[arg(long)]
        tenant: String,
    },
}

const LIST_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("SCOPE", "scope"),
    ("NAME", "name"),
    ("IDENTIFIER", "identifier"),
    ("VERSION", "latest_version"),
    ("UPDATED", "updated_at"),
];

const DETAIL_FIELDS: &[(&str, &str)] = &[
    ("id", "profile.id"),
    ("scope", "profile.scope"),
    ("tenant", "profile.tenant_id"),
    ("name", "profile.name"),
    ("identifier", "profile.identifier"),
    ("latest version", "profile.latest_version"),
    ("created", "profile.created_at"),
    ("created by", "profile.created_by"),
    ("updated", "profile.updated_at"),
];

/// `["tenants", T, "profiles", …]` or `["profiles", …]`.
fn base(tenant: &Option<String>) -> Vec<&str> {
    match tenant {
        Some(t) => vec!["tenants", t.as_str(), "profiles"],
        None => vec!["profiles"],
    }
}

fn show_detail(v: &Value) -> String {
    let mut text = fields(v, DETAIL_FIELDS);
    let versions = json!({"items": v["versions"].clone()});
    text.push('\n');
    text.push_str(&list(
        &versions,
        &[
            ("VERSION", "version"),
            ("PAYLOAD UUID", "payload_uuid"),
            ("TYPES", "payload_types"),
            ("SECRETS", "sealed_secrets"),
            ("SOURCE", "source"),
            ("SIGNER", "signer.subject"),
            ("CREATED", "created_at"),
        ],
        "no versions",
    ));
    text
}

pub async fn run(client: &Client, out: Out, command: ProfileCommand) -> Result<(), CliError> {
    match command {
        ProfileCommand::List { tenant } => {
            let v = client.get(&base(&tenant), &[]).await?;
            out.show(&v, |v| list(v, LIST_COLUMNS, "no profiles"))
        }
        ProfileCommand::Show {
            id,
            tenant,
            version,
        } => {
            let mut path = base(&tenant);
            path.push(&id);
            match version {
                None => {
                    let v = client.get(&path, &[]).await?;
                    out.show(&v, show_detail)
                }
                Some(n) => {
                    let n = n.to_string();
                    path.extend(["versions", n.as_str()]);
                    let v = client.get(&path, &[]).await?;
                    out.show(&v, |v| {
                        serde_json::to_string_pretty(&v["content"]).unwrap_or_default() + "\n"
                    })
                }
            }
        }
        ProfileCommand::Upload {
            file,
            tenant,
            profile,
            name,
            shared_ipad,
            user_channel,
        } => {
            let bytes = std::fs::read(&file)
                .map_err(|e| CliError::Local(format!("reading {}: {e}", file.display())))?;
            let mut path = base(&tenant);
            if let Some(p) = &profile {
                path.extend([p.as_str(), "versions"]);
            }
            let is_json = file.extension().is_some_and(|e| e == "json");
            let v = if is_json {
                let body: Value = serde_json::from_slice(&bytes)
                    .map_err(|e| CliError::Usage(format!("{} is not JSON: {e}", file.display())))?;
                client.post(&path, &body).await?
            } else {
                let mut query = Vec::new();
                if let Some(n) = name {
                    query.push(("name", n));
                }
                if shared_ipad {
                    query.push(("shared_ipad", "true".to_owned()));
                }
                if user_channel {
                    query.push(("user_channel", "true".to_owned()));
                }
                client
                    .upload(&path, &query, "application/x-apple-aspen-config", bytes)
                    .await?
            };
            out.show(&v, show_detail)
        }
        ProfileCommand::Archive { id, tenant } => {
            let mut path = base(&tenant);
            path.push(&id);
            client
                .send(reqwest::Method::DELETE, &path, &[], None)
                .await?;
            out.show(&json!({"archived": id}), |_| "archived\n".into())
        }
        ProfileCommand::Install {
            id,
            tenant,
            device,
            version,
        } => {
            let mut body = json!({"device_id": device});
            if let Some(n) = version {
                body["version"] = json!(n);
            }
            let v = client
                .post(&["tenants", &tenant, "profiles", &id, "install"], &body)
                .await?;
            out.show(&v, queued)
        }
        ProfileCommand::Remove { id, tenant, device } => {
            let v = client
                .post(
                    &["tenants", &tenant, "profiles", &id, "remove"],
                    &json!({"device_id": device}),
                )
                .await?;
            out.show(&v, queued)
        }
        ProfileCommand::Devices { id, tenant } => {
            let v = client
                .get(&["tenants", &tenant, "profiles", &id, "devices"], &[])
                .await?;
            out.show(&v, |v| {
                list(
                    v,
                    &[
                        ("DEVICE", "device_id"),
                        ("INSTALLED", "installed_version"),
                        ("PAYLOAD UUID", "installed_payload_uuid"),
                        ("PENDING", "pending_action"),
                        ("PENDING VERSION", "pending_version"),
                        ("LAST ERROR", "last_error"),
                    ],
                    "no device has or is getting this profile",
                )
            })
        }
    }
}

fn queued(v: &Value) -> String {
    fields(
        v,
        &[
            ("command", "command_uuid"),
            ("request type", "request_type"),
            ("device", "device_id"),
            ("version", "version"),
        ],
    )
}
