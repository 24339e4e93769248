//! `orchard apps …`: a tenant's Apps and Books location through the API — upload the content token (it is
//! never printed), see its status, take a location over from another MDM, sync, list the apps with their
//! licences, and see each device's licence and install state for an app (shortage and failures with why).

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::{json, Value};

use super::output::{fields, list};
use super::{read_file, CliError, Client, Out};

#[derive(Subcommand, Debug)]
pub enum AppsCommand {
    /// Upload (or renew) the content token downloaded from Apple School Manager (Settings > Apps and Books).
    Upload {
        #[arg(long)]
        tenant: String,
        /// The `.vpptoken` file.
        file: PathBuf,
    },
    /// The token's organization, location, expiry and claim state.
    Status {
        #[arg(long)]
        tenant: String,
    },
    /// Take the location over from the other MDM holding it (repeat its name exactly).
    TakeOver {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        confirm_other_mdm: String,
    },
    /// Sync the location's apps and licence counts now.
    Sync {
        #[arg(long)]
        tenant: String,
    },
    /// The location's apps with total, assigned and available licences.
    List {
        #[arg(long)]
        tenant: String,
    },
    /// Each device's licence and install state for one app (shortage and failures with their reason).
    Devices {
        #[arg(long)]
        tenant: String,
        /// The app's adamId.
        #[arg(long)]
        app: String,
    },
}

fn status_text(v: &Value) -> String {
    fields(
        v,
        &[
            ("Organization", "org_name"),
            ("Location", "location_name"),
            ("Claim", "claim_state"),
            ("Other MDM", "other_mdm_name"),
            ("Expires", "expires_at"),
            ("Days left", "days_to_expiry"),
            ("Last sync", "last_sync_at"),
            ("Last error", "last_error"),
        ],
    )
}

pub async fn run(client: &Client, out: Out, command: AppsCommand) -> Result<(), CliError> {
    match command {
        AppsCommand::Upload { tenant, file } => {
            let text = String::from_utf8(read_file("FILE", &file)?).map_err(|_| {
                CliError::Local(format!(
                    "{}: not a content token (not text)",
                    file.display()
                ))
            })?;
            let v = client
                .put(
                    &["tenants", &tenant, "apps", "token"],
                    &json!({"content_token": text.trim()}),
                )
                .await?;
            out.show(&v, status_text)
        }
        AppsCommand::Status { tenant } => {
            let v = client
                .get(&["tenants", &tenant, "apps", "token"], &[])
                .await?;
            out.show(&v, status_text)
        }
        AppsCommand::TakeOver {
            tenant,
            confirm_other_mdm,
        } => {
            let v = client
                .post(
                    &["tenants", &tenant, "apps", "token", "take-over"],
                    &json!({"confirm_other_mdm": confirm_other_mdm}),
                )
                .await?;
            out.show(&v, status_text)
        }
        AppsCommand::Sync { tenant } => {
            let v = super::progress::during(
                out,
                "apps sync",
                client.post(&["tenants", &tenant, "apps", "sync"], &json!({})),
            )
            .await?;
            out.show(&v, |v| {
                fields(v, &[("Claim", "claim_state"), ("Apps", "apps")])
            })
        }
        AppsCommand::List { tenant } => {
            let v = client.get(&["tenants", &tenant, "apps"], &[]).await?;
            out.show(&v, |v| {
                list(
                    v,
                    &[
                        ("ADAM ID", "adam_id"),
                        ("NAME", "name"),
                        ("TOTAL", "total"),
                        ("ASSIGNED", "assigned"),
                        ("AVAILABLE", "available"),
                        ("DEVICE", "device_assignable"),
                    ],
                    "no apps",
                )
            })
        }
        AppsCommand::Devices { tenant, app } => {
            let v = client
                .get(&["tenants", &tenant, "apps", &app, "devices"], &[])
                .await?;
            out.show(&v, |v| {
                list(
                    v,
                    &[
                        ("SERIAL", "serial_number"),
                        ("STATE", "state"),
                        ("REASON", "reason"),
                        ("DEVICE", "device_id"),
                    ],
                    "no device has or wants this app",
                )
            })
        }
    }
}
