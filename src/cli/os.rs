//! `orchard os …`: OS currency — a tenant's OS policy and compliance, the operators' catalogue of releases,
//! and a device's declarations.

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::{json, Value};

use super::output::{fields, table};
use super::{CliError, Client, Out};

#[derive(Subcommand, Debug)]
pub enum OsCommand {
    /// A tenant's OS policy.
    Policy {
        /// The tenant's id.
        #[arg(long)]
        tenant: String,
    },
    /// Set a tenant's OS policy (its admins and operators).
    SetPolicy {
        #[arg(long)]
        tenant: String,
        /// `latest` (the newest release for each model) or `pinned`.
        #[arg(long, default_value = "pinned")]
        target: String,
        /// The pinned version, e.g. 18.2.
        #[arg(long)]
        version: Option<String>,
        /// The pinned build, e.g. 22C152.
        #[arg(long)]
        build: Option<String>,
        /// When it must be installed, in the iPad's local time: yyyy-mm-ddThh:mm:ss.
        #[arg(long)]
        deadline: String,
        /// An https page about the update, shown to users.
        #[arg(long)]
        details_url: Option<String>,
    },
    /// Where a tenant's devices stand against its policy.
    Compliance {
        #[arg(long)]
        tenant: String,
    },
    /// The catalogue of releases (operators).
    Catalogue,
    /// Replace the catalogue from a JSON file: Apple's feed document or {"entries": [...]} (operators).
    SetCatalogue {
        #[arg(long)]
        file: PathBuf,
    },
    /// Refresh the catalogue from Apple's feed (operators).
    RefreshCatalogue,
    /// A device's declarations per channel, with the device's status of each.
    Declarations { device: String },
}

const POLICY_FIELDS: &[(&str, &str)] = &[
    ("tenant", "tenant_id"),
    ("target", "target"),
    ("version", "version"),
    ("build", "build"),
    ("deadline", "deadline"),
    ("details", "details_url"),
    ("revision", "revision"),
    ("updated", "updated_at"),
    ("by", "updated_by"),
];

const CATALOGUE_FIELDS: &[(&str, &str)] = &[
    ("revision", "revision"),
    ("source", "source"),
    ("entries", "entries"),
    ("updated", "updated_at"),
    ("by", "updated_by"),
];

fn catalogue_text(v: &Value) -> String {
    let rows = v["latest"].as_array().cloned().unwrap_or_default();
    format!(
        "{}\n{}",
        fields(v, CATALOGUE_FIELDS),
        table(
            &rows,
            &[
                ("MODEL", "product_type"),
                ("LATEST", "os_version"),
                ("BUILD", "build")
            ]
        )
    )
}

pub async fn run(client: &Client, out: Out, command: OsCommand) -> Result<(), CliError> {
    match command {
        OsCommand::Policy { tenant } => {
            let v = client.get(&["tenants", &tenant, "os-policy"], &[]).await?;
            out.show(&v, |v| fields(v, POLICY_FIELDS))
        }
        OsCommand::SetPolicy {
            tenant,
            target,
            version,
            build,
            deadline,
            details_url,
        } => {
            let body = json!({"target": target, "version": version, "build": build,
                              "deadline": deadline, "details_url": details_url});
            let v = client
                .put(&["tenants", &tenant, "os-policy"], &body)
                .await?;
            out.show(&v, |v| fields(v, POLICY_FIELDS))
        }
        OsCommand::Compliance { tenant } => {
            let v = client
                .get(&["tenants", &tenant, "os-compliance"], &[])
                .await?;
            out.show(&v, |v| {
                let rows = v["devices"].as_array().cloned().unwrap_or_default();
                format!(
                    "{}\n{}",
                    v["summary"]["text"].as_str().unwrap_or(""),
                    table(
                        &rows,
                        &[
                            ("DEVICE", "device_id"),
                            ("SERIAL", "serial_number"),
                            ("MODEL", "product_type"),
                            ("OS", "os_version"),
                            ("TARGET", "target_version"),
                            ("STATE", "state"),
                            ("REASON", "reason"),
                        ],
                    )
                )
            })
        }
        OsCommand::Catalogue => {
            let v = client.get(&["os-catalogue"], &[]).await?;
            out.show(&v, catalogue_text)
        }
        OsCommand::SetCatalogue { file } => {
            let text = std::fs::read(&file)
                .map_err(|e| CliError::Local(format!("{}: {e}", file.display())))?;
            let doc: Value = serde_json::from_slice(&text)
                .map_err(|e| CliError::Usage(format!("{}: not JSON: {e}", file.display())))?;
            let v = client
                .send(
                    reqwest::Method::PUT,
                    &["os-catalogue"],
                    &[("source", "file".to_owned())],
                    Some(&doc),
                )
                .await?
                .json()?;
            out.show(&v, catalogue_text)
        }
        OsCommand::RefreshCatalogue => {
            let v = client
                .post(&["os-catalogue", "refresh"], &Value::Null)
                .await?;
            out.show(&v, catalogue_text)
        }
        OsCommand::Declarations { device } => {
            let v = client
                .get(&["devices", &device, "declarations"], &[])
                .await?;
            out.show(&v, |v| {
                let mut text = String::new();
                for channel in v["channels"].as_array().cloned().unwrap_or_default() {
                    text.push_str(&format!(
                        "{} channel{} token {}{}\n",
                        channel["channel"].as_str().unwrap_or(""),
                        channel["user"]
                            .as_str()
                            .map(|u| format!(" ({u})"))
                            .unwrap_or_default(),
                        channel["declarations_token"].as_str().unwrap_or(""),
                        if channel["sync_pending"] == true {
                            ", sync pending"
                        } else {
                            ""
                        },
                    ));
                    let rows = channel["declarations"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    text.push_str(&table(
                        &rows,
                        &[
                            ("KIND", "kind"),
                            ("IDENTIFIER", "identifier"),
                            ("STATE", "state"),
                            ("VALID", "valid"),
                        ],
                    ));
                }
                if text.is_empty() {
                    text.push_str("no declarative management on this device\n");
                }
                text
            })
        }
    }
}
