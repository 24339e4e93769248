//! `orchard webhook …`: signed webhook endpoints. With `--tenant` a department's endpoints (its admins and
//! operators), without it the global ones (operators). The secret is printed once, at `create`.

use clap::Subcommand;
use serde_json::{json, Map, Value};

use super::output::{fields, list};
use super::{CliError, Client, Out};

#[derive(Subcommand, Debug)]
pub enum WebhookCommand {
    /// The endpoints of a tenant, or the global ones.
    List {
        /// The tenant (id); omit for the global endpoints.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Create an endpoint; prints its secret once (the HMAC key of `Orchard-Signature`).
    Create {
        #[arg(long)]
        tenant: Option<String>,
        /// Where events are POSTed (https://).
        #[arg(long)]
        url: String,
        /// Event types, comma-separated: device.enrolled, device.checked_out, command.result, dep.sync,
        /// app.result, expiry.warning.
        #[arg(long, value_delimiter = ',', required = true)]
        events: Vec<String>,
        /// Create it disabled.
        #[arg(long)]
        disabled: bool,
    },
    /// Show one endpoint.
    Show {
        id: String,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Change an endpoint's URL or event types.
    Update {
        id: String,
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        url: Option<String>,
        #[arg(long, value_delimiter = ',')]
        events: Option<Vec<String>>,
    },
    /// Enable an endpoint (again after repeated failures disabled it: its failure count starts over).
    Enable {
        id: String,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Disable an endpoint: nothing is sent to it until it is enabled.
    Disable {
        id: String,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Delete an endpoint and its delivery log.
    Delete {
        id: String,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// The endpoint's recent deliveries: state, attempts, last status, next try.
    Deliveries {
        id: String,
        #[arg(long)]
        tenant: Option<String>,
    },
}

const WEBHOOK_FIELDS: &[(&str, &str)] = &[
    ("id", "id"),
    ("tenant", "tenant_id"),
    ("url", "url"),
    ("events", "event_types"),
    ("enabled", "enabled"),
    ("consecutive failures", "consecutive_failures"),
    ("disabled at", "disabled_at"),
    ("disabled because", "disabled_reason"),
];

/// The path of the endpoint list (a tenant's or the global one), plus `rest`.
fn path<'a>(tenant: &'a Option<String>, rest: &[&'a str]) -> Vec<&'a str> {
    let mut segments = match tenant {
        Some(t) => vec!["tenants", t.as_str(), "webhooks"],
        None => vec!["webhooks"],
    };
    segments.extend_from_slice(rest);
    segments
}

async fn patch(
    client: &Client,
    tenant: &Option<String>,
    id: &str,
    body: Value,
) -> Result<Value, CliError> {
    client
        .send(
            reqwest::Method::PATCH,
            &path(tenant, &[id]),
            &[],
            Some(&body),
        )
        .await?
        .json()
}

pub async fn run(client: &Client, out: Out, command: WebhookCommand) -> Result<(), CliError> {
    match command {
        WebhookCommand::List { tenant } => {
            let v = client.get(&path(&tenant, &[]), &[]).await?;
            out.show(&v, |v| {
                list(
                    v,
                    &[
                        ("ID", "id"),
                        ("URL", "url"),
                        ("EVENTS", "event_types"),
                        ("ENABLED", "enabled"),
                        ("FAILURES", "consecutive_failures"),
                    ],
                    "no webhooks",
                )
            })
        }
        WebhookCommand::Create {
            tenant,
            url,
            events,
            disabled,
        } => {
            let v = client
                .post(
                    &path(&tenant, &[]),
                    &json!({"url": url, "event_types": events, "enabled": !disabled}),
                )
                .await?;
            out.show(&v, |v| {
                let mut shown = fields(&v["webhook"], WEBHOOK_FIELDS);
                shown.push_str(&format!(
                    "secret: {}\n(shown only now: give it to the receiver, which verifies Orchard-Signature with it)\n",
                    v["secret"].as_str().unwrap_or_default()
                ));
                shown
            })
        }
        WebhookCommand::Show { id, tenant } => {
            let v = client.get(&path(&tenant, &[&id]), &[]).await?;
            out.show(&v, |v| fields(v, WEBHOOK_FIELDS))
        }
        WebhookCommand::Update {
            id,
            tenant,
            url,
            events,
        } => {
            let mut body = Map::new();
            if let Some(url) = url {
                body.insert("url".into(), json!(url));
            }
            if let Some(events) = events {
                body.insert("event_types".into(), json!(events));
            }
            let v = patch(client, &tenant, &id, Value::Object(body)).await?;
            out.show(&v, |v| fields(v, WEBHOOK_FIELDS))
        }
        WebhookCommand::Enable { id, tenant } => {
            let v = patch(client, &tenant, &id, json!({"enabled": true})).await?;
            out.show(&v, |v| fields(v, WEBHOOK_FIELDS))
        }
        WebhookCommand::Disable { id, tenant } => {
            let v = patch(client, &tenant, &id, json!({"enabled": false})).await?;
            out.show(&v, |v| fields(v, WEBHOOK_FIELDS))
        }
        WebhookCommand::Delete { id, tenant } => {
            let v = client
                .send(reqwest::Method::DELETE, &path(&tenant, &[&id]), &[], None)
                .await?
                .json()?;
            if out.is_json() {
                return if v.is_null() {
                    Ok(())
                } else {
                    out.show(&v, |_| String::new())
                };
            }
            out.show(&v, |_| format!("deleted webhook {id}\n"))
        }
        WebhookCommand::Deliveries { id, tenant } => {
            let v = client
                .get(&path(&tenant, &[&id, "deliveries"]), &[])
                .await?;
            out.show(&v, |v| {
                list(
                    v,
                    &[
                        ("EVENT", "event_id"),
                        ("TYPE", "event_type"),
                        ("STATE", "state"),
                        ("ATTEMPTS", "attempts"),
                        ("LAST STATUS", "last_status"),
                        ("NEXT TRY", "next_attempt_at"),
                        ("LAST ERROR", "last_error"),
                    ],
                    "no deliveries",
                )
            })
        }
    }
}
