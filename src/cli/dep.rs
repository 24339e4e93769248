//! `orchard dep …`: Automated Device Enrollment through the API — DEP tokens (the MDM servers in Apple School
//! Manager), enrollment templates, assigning serials to templates, and the DEP device list.

use std::path::{Path, PathBuf};

use base64::Engine;
use clap::{ArgGroup, Subcommand};
use serde_json::{json, Value};

use super::output::{cell, fields, list, list_at, pretty};
use super::{read_file, write_file, CliError, Client, Out, PageArgs};

#[derive(Subcommand, Debug)]
pub enum DepCommand {
    /// DEP tokens: one per MDM server in Apple School Manager.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Enrollment templates: what Setup Assistant shows and what Orchard does during setup.
    Template {
        #[command(subcommand)]
        command: TemplateCommand,
    },
    /// Assign serials to a template (the device's tenant follows), or remove their assignment.
    #[command(group(ArgGroup::new("target").required(true).args(["template", "unassign"])))]
    Assign {
        /// The DEP token the serials belong to (`--token` is the API token).
        #[arg(long)]
        dep_token: String,
        /// The template to assign.
        #[arg(long)]
        template: Option<String>,
        /// Remove the serials' assignment instead.
        #[arg(long)]
        unassign: bool,
        /// A file of serials: one per line, or a CSV export with a serial column.
        #[arg(long)]
        csv: Option<PathBuf>,
        /// Serial numbers.
        serials: Vec<String>,
    },
    /// DEP devices (serials Apple lists for our tokens) with their assignment.
    Devices {
        /// Only this DEP token's devices.
        #[arg(long)]
        dep_token: Option<String>,
        /// Only devices assigned to this template.
        #[arg(long)]
        template: Option<String>,
        /// Also devices Apple no longer lists (released or moved away).
        #[arg(long)]
        include_deleted: bool,
        #[command(flatten)]
        page: PageArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token: its certificate is what you upload to the MDM server in Apple School Manager.
    Create {
        /// A name, e.g. "ASM Physics".
        #[arg(long)]
        name: String,
        /// Also write the certificate (PEM) to this file.
        #[arg(long)]
        cert_out: Option<PathBuf>,
    },
    /// Upload the server token (.p7m) downloaded from Apple School Manager.
    Upload {
        id: String,
        /// The .p7m file, as downloaded.
        #[arg(long)]
        p7m: PathBuf,
    },
    /// List the tokens with their expiry and last sync.
    List,
    /// Fetch the token's devices from Apple now.
    Sync { id: String },
}

#[derive(Subcommand, Debug)]
pub enum TemplateCommand {
    /// Create a template on a token from a JSON spec (name, tenant_id, profile, setup, …).
    Create {
        /// The DEP token the template belongs to.
        #[arg(long)]
        dep_token: String,
        /// The template spec (JSON).
        #[arg(long)]
        file: PathBuf,
    },
    /// List templates (all the token can see, or one DEP token's).
    List {
        /// Only this DEP token's templates.
        #[arg(long)]
        dep_token: Option<String>,
    },
    /// A template in full.
    Show { id: String },
    /// Replace a template with a new spec; its profile is defined again at Apple.
    Update {
        id: String,
        #[arg(long)]
        file: PathBuf,
    },
    /// Delete a template.
    Delete { id: String },
}

const TOKEN_FIELDS: &[(&str, &str)] = &[
    ("id", "id"),
    ("name", "name"),
    ("uploaded", "uploaded"),
    ("server name", "server_name"),
    ("organization", "org_name"),
    ("token expires", "access_token_expiry"),
    ("days left", "days_left"),
    ("last sync", "last_sync_at"),
    ("last sync error", "last_sync_error"),
];

const TEMPLATE_FIELDS: &[(&str, &str)] = &[
    ("id", "id"),
    ("name", "name"),
    ("dep token", "token_id"),
    ("tenant", "tenant_id"),
    ("auto assign", "auto_assign"),
    ("minimum os", "minimum_os_version"),
    ("profile uuid", "profile_uuid"),
    ("defined", "defined_at"),
    ("define error", "define_error"),
    ("created", "created_at"),
    ("updated", "updated_at"),
];

pub async fn run(client: &Client, out: Out, command: DepCommand) -> Result<(), CliError> {
    match command {
        DepCommand::Token { command } => run_token(client, out, command).await,
        DepCommand::Template { command } => run_template(client, out, command).await,
        DepCommand::Assign {
            dep_token: token,
            template,
            unassign,
            csv,
            serials,
        } => {
            let csv = csv
                .map(|p| {
                    String::from_utf8(read_file("--csv", &p)?).map_err(|_| {
                        CliError::Local(format!("--csv {}: not a text file", p.display()))
                    })
                })
                .transpose()?;
            if serials.is_empty() && csv.is_none() {
                return Err(CliError::Usage(
                    "give serial numbers, or --csv with a file of them".into(),
                ));
            }
            // `template_id: null` is the API's way to unassign; clap makes --template and --unassign exclusive.
            let template_id = if unassign {
                Value::Null
            } else {
                json!(template)
            };
            let mut body = json!({"serials": serials, "template_id": template_id});
            if let Some(csv) = csv {
                body["csv"] = Value::String(csv);
            }
            let v = client
                .post(&["dep-tokens", &token, "assignments"], &body)
                .await?;
            out.show(&v, assignment_text)
        }
        DepCommand::Devices {
            dep_token: token,
            template,
            include_deleted,
            page,
        } => {
            let mut query = Vec::new();
            if let Some(t) = token {
                query.push(("token", t));
            }
            if let Some(t) = template {
                query.push(("template", t));
            }
            if include_deleted {
                query.push(("include_deleted", "true".to_string()));
            }
            page.push_query(&mut query);
            let v = client.get(&["dep-devices"], &query).await?;
            out.show(&v, |v| {
                list_at(
                    v,
                    &[
                        ("SERIAL", "serial_number"),
                        ("MODEL", "model"),
                        ("TOKEN", "token_id"),
                        ("PROFILE STATUS", "profile_status"),
                        ("TEMPLATE", "template_id"),
                        ("TENANT", "tenant_id"),
                        ("ASSIGNMENT", "assign_status"),
                        ("ERROR", "assign_error"),
                    ],
                    "no DEP devices",
                    page.offset(),
                )
            })
        }
    }
}

async fn run_token(client: &Client, out: Out, command: TokenCommand) -> Result<(), CliError> {
    match command {
        TokenCommand::Create { name, cert_out } => {
            let v = client.post(&["dep-tokens"], &json!({"name": name})).await?;
            let certificate = v
                .get("certificate_pem")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if let Some(path) = &cert_out {
                write_file("--cert-out", path, certificate.as_bytes())?;
            }
            out.show(&v, |v| {
                let mut text = fields(v, &[("id", "id")]);
                match &cert_out {
                    Some(path) => text.push_str(&format!(
                        "certificate written to {}: upload it to the MDM server in Apple School Manager\n",
                        path.display()
                    )),
                    None => {
                        text.push_str(
                            "upload this certificate to the MDM server in Apple School Manager:\n",
                        );
                        text.push_str(certificate);
                        if !certificate.ends_with('\n') {
                            text.push('\n');
                        }
                    }
                }
                text
            })
        }
        TokenCommand::Upload { id, p7m } => {
            let bytes = read_file("--p7m", &p7m)?;
            let body =
                json!({"p7m_base64": base64::engine::general_purpose::STANDARD.encode(bytes)});
            let v = client.put(&["dep-tokens", &id, "token"], &body).await?;
            out.show(&v, |v| fields(v, TOKEN_FIELDS))
        }
        TokenCommand::List => {
            let v = client.get(&["dep-tokens"], &[]).await?;
            out.show(&v, |v| {
                list(
                    v,
                    &[
                        ("ID", "id"),
                        ("NAME", "name"),
                        ("UPLOADED", "uploaded"),
                        ("SERVER", "server_name"),
                        ("DAYS LEFT", "days_left"),
                        ("LAST SYNC", "last_sync_at"),
                        ("ERROR", "last_sync_error"),
                    ],
                    "no DEP tokens",
                )
            })
        }
        TokenCommand::Sync { id } => {
            let v = super::progress::during(
                out,
                "dep token sync",
                client.post(&["dep-tokens", &id, "sync"], &json!({})),
            )
            .await?;
            out.show(&v, |v| {
                fields(
                    v,
                    &[
                        ("records", "records"),
                        ("pages", "pages"),
                        ("full fetch", "full_fetch"),
                        ("removed", "removed"),
                        ("active devices", "active_devices"),
                        ("auto assigned", "auto_assigned"),
                        ("assigned at apple", "assignments.assigned"),
                        ("not accessible", "assignments.not_accessible"),
                        ("failed", "assignments.failed"),
                        ("throttled", "assignments.throttled"),
                        ("waiting for profile", "assignments.waiting_for_profile"),
                    ],
                )
            })
        }
    }
}

fn spec(path: &Path) -> Result<Value, CliError> {
    serde_json::from_slice(&read_file("--file", path)?)
        .map_err(|e| CliError::Usage(format!("--file {}: not JSON: {e}", path.display())))
}

fn template_text(v: &Value) -> String {
    let mut text = fields(v, TEMPLATE_FIELDS);
    for part in ["profile", "setup"] {
        if let Some(p) = v.get(part) {
            text.push_str(&format!("{part}: {}\n", pretty(p)));
        }
    }
    text
}

async fn run_template(client: &Client, out: Out, command: TemplateCommand) -> Result<(), CliError> {
    match command {
        TemplateCommand::Create {
            dep_token: token,
            file,
        } => {
            let body = spec(&file)?;
            let v = client
                .post(&["dep-tokens", &token, "templates"], &body)
                .await?;
            out.show(&v, template_text)
        }
        TemplateCommand::List { dep_token: token } => {
            let v = match token {
                Some(t) => client.get(&["dep-tokens", &t, "templates"], &[]).await?,
                None => client.get(&["dep-templates"], &[]).await?,
            };
            out.show(&v, |v| {
                list(
                    v,
                    &[
                        ("ID", "id"),
                        ("NAME", "name"),
                        ("DEP TOKEN", "token_id"),
                        ("TENANT", "tenant_id"),
                        ("AUTO", "auto_assign"),
                        ("PROFILE UUID", "profile_uuid"),
                        ("DEFINE ERROR", "define_error"),
                    ],
                    "no templates",
                )
            })
        }
        TemplateCommand::Show { id } => {
            let v = client.get(&["dep-templates", &id], &[]).await?;
            out.show(&v, template_text)
        }
        TemplateCommand::Update { id, file } => {
            let body = spec(&file)?;
            let v = client.put(&["dep-templates", &id], &body).await?;
            out.show(&v, template_text)
        }
        TemplateCommand::Delete { id } => {
            let v = client
                .send(reqwest::Method::DELETE, &["dep-templates", &id], &[], None)
                .await?
                .json()?;
            // 204: nothing to print with --json; people get a confirmation.
            if out.is_json() {
                if v.is_null() {
                    return Ok(());
                }
                return out.show(&v, |_| String::new());
            }
            out.show(&v, |_| format!("deleted template {id}\n"))
        }
    }
}

fn assignment_text(v: &Value) -> String {
    let mut text = fields(
        v,
        &[
            ("updated", "updated"),
            ("assigned at apple", "sent.assigned"),
            ("not accessible", "sent.not_accessible"),
            ("failed", "sent.failed"),
            ("throttled (retried later)", "sent.throttled"),
            ("waiting for profile", "sent.waiting_for_profile"),
        ],
    );
    let unknown = v
        .get("unknown")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if !unknown.is_empty() {
        let serials: Vec<String> = unknown.iter().map(|s| cell(Some(s))).collect();
        text.push_str(&format!(
            "not listed by this token ({}): {}\n",
            serials.len(),
            serials.join(" ")
        ));
    }
    text
}
