//! `orchard user …`: the people who signed in through the university's provider.

use clap::Subcommand;
use serde_json::json;

use super::output::{fields, list};
use super::{CliError, Client, Out, PageArgs};

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Users (operators and helpdesk: all; a tenant admin: its tenant's).
    List {
        #[command(flatten)]
        page: PageArgs,
    },
    /// Disable a user at once: sessions stop working, sign-in is refused (operators).
    Disable { id: String },
    /// Enable a disabled user again (operators).
    Enable { id: String },
}

const USER_FIELDS: &[(&str, &str)] = &[
    ("id", "id"),
    ("email", "email"),
    ("name", "display_name"),
    ("issuer", "issuer"),
    ("subject", "subject"),
    ("last login", "last_login_at"),
    ("disabled", "disabled_at"),
];

pub async fn run(client: &Client, out: Out, command: UserCommand) -> Result<(), CliError> {
    match command {
        UserCommand::List { page } => {
            let mut query = Vec::new();
            page.push_query(&mut query);
            let v = client.get(&["users"], &query).await?;
            out.show(&v, |v| {
                list(
                    v,
                    &[
                        ("ID", "id"),
                        ("EMAIL", "email"),
                        ("NAME", "display_name"),
                        ("LAST LOGIN", "last_login_at"),
                        ("DISABLED", "disabled_at"),
                    ],
                    "no users",
                )
            })
        }
        UserCommand::Disable { id } => set_disabled(client, out, &id, true).await,
        UserCommand::Enable { id } => set_disabled(client, out, &id, false).await,
    }
}

async fn set_disabled(client: &Client, out: Out, id: &str, disabled: bool) -> Result<(), CliError> {
    let v = client
        .send(
            reqwest::Method::PATCH,
            &["users", id],
            &[],
            Some(&json!({ "disabled": disabled })),
        )
        .await?
        .json()?;
    out.show(&v, |v| fields(v, USER_FIELDS))
}
