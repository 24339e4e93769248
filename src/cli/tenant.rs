//! `orchard tenant …` and `orchard link …`.

use clap::Subcommand;
use serde_json::{json, Map, Value};

use super::output::{fields, list};
use super::{CliError, Client, Out};

#[derive(Subcommand, Debug)]
pub enum TenantCommand {
    /// List the tenants the token can see.
    List,
    /// A tenant's details.
    Show { id: String },
    /// Change a tenant's name or details (operators); an empty value clears a detail.
    Edit {
        id: String,
        #[arg(long)]
        name: Option<String>,
        /// The cost centre its usage is billed to.
        #[arg(long)]
        cost_centre: Option<String>,
        /// Who to contact about certificates and tokens.
        #[arg(long)]
        contact_name: Option<String>,
        #[arg(long)]
        contact_email: Option<String>,
    },
    /// Create a tenant (operators).
    Create {
        /// The department's name, e.g. "Department of Physics".
        #[arg(long)]
        name: String,
        /// Short code: lowercase letters, digits and dashes, e.g. "phys".
        #[arg(long)]
        code: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum LinkCommand {
    /// Create an enrollment link for a tenant; its URL is shown only this once.
    Create {
        /// The tenant's id.
        #[arg(long)]
        tenant: String,
        /// A name saying what the link is for.
        #[arg(long, default_value = "")]
        name: String,
        /// How many devices may enroll with it (default: no limit).
        #[arg(long)]
        max_uses: Option<i64>,
        /// Seconds until the link stops working (default: never).
        #[arg(long)]
        expires_in_seconds: Option<i64>,
    },
}

const TENANT_FIELDS: &[(&str, &str)] = &[
    ("id", "id"),
    ("code", "code"),
    ("name", "name"),
    ("created", "created_at"),
];

const TENANT_DETAIL_FIELDS: &[(&str, &str)] = &[
    ("id", "id"),
    ("code", "code"),
    ("name", "name"),
    ("cost centre", "cost_centre"),
    ("contact", "contact_name"),
    ("contact email", "contact_email"),
    ("created", "created_at"),
    ("updated", "updated_at"),
];

pub async fn run_tenant(client: &Client, out: Out, command: TenantCommand) -> Result<(), CliError> {
    match command {
        TenantCommand::List => {
            let v = client.get(&["tenants"], &[]).await?;
            out.show(&v, |v| {
                list(
                    v,
                    &[
                        ("ID", "id"),
                        ("CODE", "code"),
                        ("NAME", "name"),
                        ("CREATED", "created_at"),
                    ],
                    "no tenants",
                )
            })
        }
        TenantCommand::Show { id } => {
            let v = client.get(&["tenants", &id], &[]).await?;
            out.show(&v, |v| fields(v, TENANT_DETAIL_FIELDS))
        }
        TenantCommand::Edit {
            id,
            name,
            cost_centre,
            contact_name,
            contact_email,
        } => {
            let body: Map<String, Value> = [
                ("name", name),
                ("cost_centre", cost_centre),
                ("contact_name", contact_name),
                ("contact_email", contact_email),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_string(), Value::String(v))))
            .collect();
            if body.is_empty() {
                return Err(CliError::Usage(
                    "nothing to change: give --name, --cost-centre, --contact-name or --contact-email"
                        .into(),
                ));
            }
            let v = client
                .send(
                    reqwest::Method::PATCH,
                    &["tenants", &id],
                    &[],
                    Some(&Value::Object(body)),
                )
                .await?
                .json()?;
            out.show(&v, |v| fields(v, TENANT_DETAIL_FIELDS))
        }
        TenantCommand::Create { name, code } => {
            let v = client
                .post(&["tenants"], &json!({"name": name, "code": code}))
                .await?;
            out.show(&v, |v| fields(v, TENANT_FIELDS))
        }
    }
}

pub async fn run_link(client: &Client, out: Out, command: LinkCommand) -> Result<(), CliError> {
    match command {
        LinkCommand::Create {
            tenant,
            name,
            max_uses,
            expires_in_seconds,
        } => {
            let mut body = Map::new();
            body.insert("name".into(), Value::String(name));
            if let Some(m) = max_uses {
                body.insert("max_uses".into(), json!(m));
            }
            if let Some(s) = expires_in_seconds {
                body.insert("expires_in_seconds".into(), json!(s));
            }
            let v = client
                .post(
                    &["tenants", &tenant, "enrollment-links"],
                    &Value::Object(body),
                )
                .await?;
            out.show(&v, |v| {
                let mut text = fields(
                    v,
                    &[
                        ("id", "id"),
                        ("tenant", "tenant_id"),
                        ("name", "name"),
                        ("url", "url"),
                        ("max uses", "max_uses"),
                        ("expires", "expires_at"),
                    ],
                );
                text.push_str("(the url is shown only once: only its hash is stored)\n");
                text
            })
        }
    }
}
