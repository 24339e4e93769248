//! `orchard group …` and `orchard assignment …`: a tenant's device groups (static members by id, serial or
//! CSV; smart groups by a JSON filter) and its assignments (a profile for the tenant, groups or devices, minus
//! exclusions). Unknown serials come back in the answer.

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::{json, Value};

use super::output::{fields, list};
use super::{CliError, Client, Out};

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// The tenant's groups.
    List {
        #[arg(long)]
        tenant: String,
    },
    /// One group.
    Show {
        id: String,
        #[arg(long)]
        tenant: String,
    },
    /// Create a static group, or a smart one with `--filter` (JSON text or @file).
    Create {
        name: String,
        #[arg(long)]
        tenant: String,
        /// A smart group's filter: `{"conditions":[{"field":"os_version","op":"lt","value":"18.2"}]}`.
        #[arg(long)]
        filter: Option<String>,
    },
    /// Rename a group or replace a smart group's filter.
    Update {
        id: String,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        filter: Option<String>,
    },
    /// Delete a group (refused while an assignment names it).
    Delete {
        id: String,
        #[arg(long)]
        tenant: String,
    },
    /// A group's members.
    Members {
        id: String,
        #[arg(long)]
        tenant: String,
    },
    /// Add devices to a static group by id, serial or a CSV of serials.
    Add {
        id: String,
        #[arg(long)]
        tenant: String,
        #[arg(long = "device")]
        devices: Vec<String>,
        #[arg(long = "serial")]
        serials: Vec<String>,
        #[arg(long)]
        csv: Option<PathBuf>,
    },
    /// Remove devices from a static group by id, serial or a CSV of serials.
    Remove {
        id: String,
        #[arg(long)]
        tenant: String,
        #[arg(long = "device")]
        devices: Vec<String>,
        #[arg(long = "serial")]
        serials: Vec<String>,
        #[arg(long)]
        csv: Option<PathBuf>,
    },
    /// Joins and leaves, newest first.
    History {
        id: String,
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum AssignmentCommand {
    /// The tenant's assignments.
    List {
        #[arg(long)]
        tenant: String,
    },
    /// Assign a profile (the tenant's or a global one) or an app of the tenant's Apps and Books location.
    #[command(group(clap::ArgGroup::new("object").required(true).args(["profile", "app"])))]
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        profile: Option<String>,
        /// An app's adamId: installed with a device licence on every device the assignment reaches.
        #[arg(long)]
        app: Option<String>,
        /// With --app: remove the app (and free its licence) instead of installing it.
        #[arg(long, requires = "app")]
        removed: bool,
        /// With --app: the managed app configuration, an XML plist file whose top level is a dictionary.
        #[arg(long, requires = "app")]
        configuration: Option<std::path::PathBuf>,
        /// With --app: keep the app when the device leaves management (default: it goes with the MDM profile).
        #[arg(long, requires = "app")]
        keep_on_unmanage: bool,
        /// Every device of the tenant.
        #[arg(long)]
        all_devices: bool,
        #[arg(long = "group")]
        groups: Vec<String>,
        #[arg(long = "device")]
        devices: Vec<String>,
        #[arg(long = "exclude-group")]
        exclude_groups: Vec<String>,
        #[arg(long = "exclude-device")]
        exclude_devices: Vec<String>,
        /// How the profile travels: `command` (InstallProfile) or `declaration` (in the declaration set of
        /// iPads on iOS 15 or later; older ones get commands).
        #[arg(long, default_value = "command")]
        delivery: String,
    },
    /// Delete an assignment (the profile leaves the devices it no longer applies to).
    Delete {
        id: String,
        #[arg(long)]
        tenant: String,
    },
}

const GROUP_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("NAME", "name"),
    ("KIND", "kind"),
    ("MEMBERS", "member_count"),
    ("UPDATED", "updated_at"),
];

const GROUP_FIELDS: &[(&str, &str)] = &[
    ("id", "id"),
    ("tenant", "tenant_id"),
    ("name", "name"),
    ("kind", "kind"),
    ("filter", "filter"),
    ("members", "member_count"),
    ("created", "created_at"),
    ("created by", "created_by"),
    ("updated", "updated_at"),
];

/// A filter given as JSON text or `@file`.
fn filter_json(text: &str) -> Result<Value, CliError> {
    let raw = match text.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| CliError::Local(format!("reading {path}: {e}")))?,
        None => text.to_owned(),
    };
    serde_json::from_str(&raw).map_err(|e| CliError::Usage(format!("the filter is not JSON: {e}")))
}

async fn change_members(
    client: &Client,
    path: &[&str],
    devices: Vec<String>,
    serials: Vec<String>,
    csv: Option<PathBuf>,
) -> Result<Value, CliError> {
    match csv {
        Some(file) => {
            let bytes = std::fs::read(&file)
                .map_err(|e| CliError::Local(format!("reading {}: {e}", file.display())))?;
            client.upload(path, &[], "text/csv", bytes).await
        }
        None => {
            client
                .post(path, &json!({"device_ids": devices, "serials": serials}))
                .await
        }
    }
}

fn outcome(v: &Value) -> String {
    let mut text = fields(v, &[("changed", "changed"), ("unchanged", "unchanged")]);
    for (label, key) in [
        ("unknown serial", "unknown_serials"),
        ("unknown device", "unknown_device_ids"),
    ] {
        for item in v[key].as_array().into_iter().flatten() {
            text.push_str(&format!("{label}: {}\n", item.as_str().unwrap_or_default()));
        }
    }
    text
}

pub async fn run_group(client: &Client, out: Out, command: GroupCommand) -> Result<(), CliError> {
    match command {
        GroupCommand::List { tenant } => {
            let v = client.get(&["tenants", &tenant, "groups"], &[]).await?;
            out.show(&v, |v| list(v, GROUP_COLUMNS, "no groups"))
        }
        GroupCommand::Show { id, tenant } => {
            let v = client
                .get(&["tenants", &tenant, "groups", &id], &[])
                .await?;
            out.show(&v, |v| fields(v, GROUP_FIELDS))
        }
        GroupCommand::Create {
            name,
            tenant,
            filter,
        } => {
            let body = match filter {
                Some(f) => json!({"name": name, "kind": "smart", "filter": filter_json(&f)?}),
                None => json!({"name": name, "kind": "static"}),
            };
            let v = client.post(&["tenants", &tenant, "groups"], &body).await?;
            out.show(&v, |v| fields(v, GROUP_FIELDS))
        }
        GroupCommand::Update {
            id,
            tenant,
            name,
            filter,
        } => {
            let mut body = json!({});
            if let Some(n) = name {
                body["name"] = json!(n);
            }
            if let Some(f) = filter {
                body["filter"] = filter_json(&f)?;
            }
            let v = client
                .send(
                    reqwest::Method::PATCH,
                    &["tenants", &tenant, "groups", &id],
                    &[],
                    Some(&body),
                )
                .await?
                .json()?;
            out.show(&v, |v| fields(v, GROUP_FIELDS))
        }
        GroupCommand::Delete { id, tenant } => {
            client
                .send(
                    reqwest::Method::DELETE,
                    &["tenants", &tenant, "groups", &id],
                    &[],
                    None,
                )
                .await?;
            out.show(&json!({"deleted": id}), |_| "deleted\n".into())
        }
        GroupCommand::Members { id, tenant } => {
            let v = client
                .get(
                    &["tenants", &tenant, "groups", &id, "members"],
                    &[("limit", "1000".to_owned())],
                )
                .await?;
            out.show(&v, |v| {
                list(
                    v,
                    &[
                        ("DEVICE", "device_id"),
                        ("SERIAL", "serial_number"),
                        ("NAME", "device_name"),
                        ("JOINED", "joined_at"),
                    ],
                    "no members",
                )
            })
        }
        GroupCommand::Add {
            id,
            tenant,
            devices,
            serials,
            csv,
        } => {
            let v = super::progress::during(
                out,
                "group add",
                change_members(
                    client,
                    &["tenants", &tenant, "groups", &id, "members"],
                    devices,
                    serials,
                    csv,
                ),
            )
            .await?;
            out.show(&v, outcome)
        }
        GroupCommand::Remove {
            id,
            tenant,
            devices,
            serials,
            csv,
        } => {
            let v = super::progress::during(
                out,
                "group remove",
                change_members(
                    client,
                    &["tenants", &tenant, "groups", &id, "members", "remove"],
                    devices,
                    serials,
                    csv,
                ),
            )
            .await?;
            out.show(&v, outcome)
        }
        GroupCommand::History { id, tenant } => {
            let v = client
                .get(&["tenants", &tenant, "groups", &id, "history"], &[])
                .await?;
            out.show(&v, |v| {
                list(
                    v,
                    &[
                        ("AT", "at"),
                        ("DEVICE", "device_id"),
                        ("EVENT", "event"),
                        ("REASON", "reason"),
                    ],
                    "no history",
                )
            })
        }
    }
}

const ASSIGNMENT_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("KIND", "object_kind"),
    ("OBJECT", "object_id"),
    ("DELIVERY", "delivery"),
    ("ALL", "all_devices"),
    ("GROUPS", "groups"),
    ("DEVICES", "devices"),
    ("EXCLUDED GROUPS", "exclude_groups"),
    ("EXCLUDED DEVICES", "exclude_devices"),
];

pub async fn run_assignment(
    client: &Client,
    out: Out,
    command: AssignmentCommand,
) -> Result<(), CliError> {
    match command {
        AssignmentCommand::List { tenant } => {
            let v = client
                .get(&["tenants", &tenant, "assignments"], &[])
                .await?;
            out.show(&v, |v| list(v, ASSIGNMENT_COLUMNS, "no assignments"))
        }
        AssignmentCommand::Create {
            tenant,
            profile,
            app,
            removed,
            configuration,
            keep_on_unmanage,
            all_devices,
            groups,
            devices,
            exclude_groups,
            exclude_devices,
            delivery,
        } => {
            let mut body = json!({
                "all_devices": all_devices,
                "groups": groups, "devices": devices,
                "exclude_groups": exclude_groups, "exclude_devices": exclude_devices,
                "delivery": delivery,
            });
            match (profile, app) {
                (_, Some(app)) => {
                    let configuration = match configuration {
                        Some(path) => Some(
                            String::from_utf8(super::read_file("--configuration", &path)?)
                                .map_err(|_| {
                                    CliError::Local(format!(
                                        "{}: not a plist (not text)",
                                        path.display()
                                    ))
                                })?,
                        ),
                        None => None,
                    };
                    body["object_kind"] = json!("app");
                    body["object_id"] = json!(app);
                    body["app"] = json!({
                        "install_behaviour": if removed { "removed" } else { "required" },
                        "configuration": configuration,
                        "remove_on_unmanage": !keep_on_unmanage,
                    });
                }
                (profile, None) => {
                    body["object_kind"] = json!("profile");
                    body["object_id"] = json!(profile);
                }
            }
            let v = client
                .post(&["tenants", &tenant, "assignments"], &body)
                .await?;
            out.show(&v, |v| {
                fields(
                    v,
                    &[
                        ("id", "id"),
                        ("object", "object_id"),
                        ("delivery", "delivery"),
                        ("all devices", "all_devices"),
                        ("groups", "groups"),
                        ("devices", "devices"),
                        ("excluded groups", "exclude_groups"),
                        ("excluded devices", "exclude_devices"),
                    ],
                )
            })
        }
        AssignmentCommand::Delete { id, tenant } => {
            client
                .send(
                    reqwest::Method::DELETE,
                    &["tenants", &tenant, "assignments", &id],
                    &[],
                    None,
                )
                .await?;
            out.show(&json!({"deleted": id}), |_| "deleted\n".into())
        }
    }
}
