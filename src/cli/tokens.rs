//! `orchard api-token …`: API tokens through the API. (`orchard token create` makes one directly in the
//! database, on the server host: that is how the first operator token comes to be.)

use clap::Subcommand;
use serde_json::{json, Map, Value};

use super::output::{fields, list};
use super::{CliError, Client, Out, PageArgs};

#[derive(Subcommand, Debug)]
pub enum ApiTokenCommand {
    /// Tokens the caller manages (operators: all; a tenant admin: its tenant's).
    List {
        #[command(flatten)]
        page: PageArgs,
    },
    /// Create a token; its secret is printed once (only a hash is stored).
    Create {
        /// A name saying who or what uses the token.
        #[arg(long)]
        name: String,
        /// operator, helpdesk, admin or viewer.
        #[arg(long)]
        role: String,
        /// The tenant, for the admin and viewer roles.
        #[arg(long)]
        tenant: Option<String>,
        /// Days until the token expires (the server's default and maximum apply).
        #[arg(long)]
        expires_in_days: Option<i64>,
    },
    /// Revoke a token: it is refused from now on (it stays listed, for the audit trail).
    Revoke { id: String },
}

const TOKEN_FIELDS: &[(&str, &str)] = &[
    ("id", "id"),
    ("name", "name"),
    ("role", "role"),
    ("tenant", "tenant_id"),
    ("active", "active"),
    ("created", "created_at"),
    ("created by", "created_by"),
    ("expires", "expires_at"),
    ("revoked", "revoked_at"),
    ("last used", "last_used_at"),
];

pub async fn run(client: &Client, out: Out, command: ApiTokenCommand) -> Result<(), CliError> {
    match command {
        ApiTokenCommand::List { page } => {
            let mut query = Vec::new();
            page.push_query(&mut query);
            let v = client.get(&["tokens"], &query).await?;
            out.show(&v, |v| {
                list(
                    v,
                    &[
                        ("ID", "id"),
                        ("NAME", "name"),
                        ("ROLE", "role"),
                        ("TENANT", "tenant_id"),
                        ("ACTIVE", "active"),
                        ("EXPIRES", "expires_at"),
                        ("LAST USED", "last_used_at"),
                    ],
                    "no tokens",
                )
            })
        }
        ApiTokenCommand::Create {
            name,
            role,
            tenant,
            expires_in_days,
        } => {
            let mut body = Map::new();
            body.insert("name".into(), json!(name));
            body.insert("role".into(), json!(role));
            if let Some(t) = tenant {
                body.insert("tenant_id".into(), json!(t));
            }
            if let Some(d) = expires_in_days {
                body.insert("expires_in_days".into(), json!(d));
            }
            let v = client.post(&["tokens"], &Value::Object(body)).await?;
            out.show(&v, |v| {
                let mut text = fields(v, TOKEN_FIELDS);
                text.push_str(&fields(v, &[("secret", "secret")]));
                text.push_str("(the secret is shown only once)\n");
                text
            })
        }
        ApiTokenCommand::Revoke { id } => {
            let v = client
                .send(reqwest::Method::DELETE, &["tokens", &id], &[], None)
                .await?
                .json()?;
            out.show(&v, |v| fields(v, TOKEN_FIELDS))
        }
    }
}
