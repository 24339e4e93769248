//! `orchard maintenance …`: planned-maintenance notices (every caller lists; operators publish and withdraw).

use clap::Subcommand;
use serde_json::json;

use super::output::{fields, list};
use super::{CliError, Client, Out};

#[derive(Subcommand, Debug)]
pub enum MaintenanceCommand {
    /// The notices whose window has not ended, soonest first.
    List,
    /// Announce maintenance to every department (operators).
    Publish {
        /// Start of the window, RFC 3339 (e.g. 2026-12-05T06:00:00Z).
        #[arg(long)]
        starts_at: String,
        /// End of the window, RFC 3339.
        #[arg(long)]
        ends_at: String,
        /// The text in Swedish.
        #[arg(long)]
        text_sv: String,
        /// The text in English.
        #[arg(long)]
        text_en: String,
    },
    /// Withdraw a notice before its window ends (operators).
    Withdraw { id: String },
}

const NOTICE_FIELDS: &[(&str, &str)] = &[
    ("id", "id"),
    ("starts", "starts_at"),
    ("ends", "ends_at"),
    ("in progress", "in_progress"),
    ("text (sv)", "text_sv"),
    ("text (en)", "text_en"),
];

pub async fn run(client: &Client, out: Out, command: MaintenanceCommand) -> Result<(), CliError> {
    match command {
        MaintenanceCommand::List => {
            let v = client.get(&["maintenance"], &[]).await?;
            out.show(&v, |v| {
                list(
                    v,
                    &[
                        ("ID", "id"),
                        ("STARTS", "starts_at"),
                        ("ENDS", "ends_at"),
                        ("TEXT (EN)", "text_en"),
                    ],
                    "no maintenance announced",
                )
            })
        }
        MaintenanceCommand::Publish {
            starts_at,
            ends_at,
            text_sv,
            text_en,
        } => {
            let v = client
                .post(
                    &["maintenance"],
                    &json!({"starts_at": starts_at, "ends_at": ends_at, "text_sv": text_sv, "text_en": text_en}),
                )
                .await?;
            out.show(&v, |v| fields(v, NOTICE_FIELDS))
        }
        MaintenanceCommand::Withdraw { id } => {
            let v = client
                .send(reqwest::Method::DELETE, &["maintenance", &id], &[], None)
                .await?
                .json()?;
            if out.is_json() {
                return if v.is_null() {
                    Ok(())
                } else {
                    out.show(&v, |_| String::new())
                };
            }
            out.show(&v, |_| format!("withdrew notice {id}\n"))
        }
    }
}
