//! `orchard device …`.

use std::path::Path;

use clap::{ArgGroup, Subcommand};
use serde_json::{json, Value};

use super::output::{cell, fields, list, pretty, table};
use super::{read_file, CliError, Client, Out, PageArgs};

#[derive(Subcommand, Debug)]
pub enum DeviceCommand {
    /// List the devices the token can see.
    List {
        #[command(flatten)]
        page: PageArgs,
        #[command(flatten)]
        filter: DeviceFilter,
    },
    /// A device's detail: identity, state, channels and inventory.
    Show {
        /// The device's id.
        id: String,
    },
    /// A device's command history, newest first.
    Commands {
        id: String,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Queue a command for a device, e.g. `--type DeviceLock --json-body '{"message":"Call IT"}'`.
    Command {
        id: String,
        /// The command's request type (DeviceInformation, DeviceLock, EraseDevice, InstallProfile, …).
        #[arg(long = "type")]
        request_type: String,
        /// The command's fields as a JSON object (snake_case, binary fields base64), or @FILE to read it.
        #[arg(long)]
        json_body: Option<String>,
    },
    /// Queue one command for many devices (listed ids, or a whole tenant). Try --dry-run first: destructive
    /// commands need the affected count as --confirm-count.
    #[command(group(ArgGroup::new("targets").required(true).args(["devices", "tenant"])))]
    BulkCommand {
        /// The command's request type.
        #[arg(long = "type")]
        request_type: String,
        /// The command's fields as a JSON object, or @FILE to read it.
        #[arg(long)]
        json_body: Option<String>,
        /// A device id (repeat for several).
        #[arg(long = "device", conflicts_with = "tenant")]
        devices: Vec<String>,
        /// Every enrolled device of this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// Only count the devices it would reach; queue nothing.
        #[arg(long)]
        dry_run: bool,
        /// The count a dry run gave: required for destructive commands.
        #[arg(long)]
        confirm_count: Option<u64>,
    },
    /// Ask Apple to wake the device so it checks in now.
    Push { id: String },
    /// The device's zero-touch setup state.
    Setup { id: String },
    /// Send DeviceConfigured although setup failed or is still running, releasing the device.
    ReleaseSetup { id: String },
    /// Whether an Activation Lock bypass code is escrowed (and the code, for those allowed to see it).
    ActivationLock { id: String },
    /// Clear the device's Activation Lock at Apple with its escrowed bypass code.
    ClearActivationLock { id: String },
    /// The device's identity certificate (grant, validity, revocation) and any open release.
    Identity { id: String },
    /// Revoke the device's identity: every request it signs is refused from now on (operators).
    RevokeIdentity {
        id: String,
        /// Why: retired, moved or suspected_theft.
        #[arg(long, value_parser = ["retired", "moved", "suspected_theft"])]
        reason: String,
    },
    /// Let another tenant's enrollment claim the device for a while (operators): the first Authenticate of
    /// such an identity moves it there.
    ReleaseForReenrollment {
        id: String,
        /// Only this tenant's enrollment may claim it (default: any tenant).
        #[arg(long)]
        tenant: Option<String>,
        /// How long the release stays open (default 7 days, at most 30).
        #[arg(long)]
        expires_in_seconds: Option<i64>,
    },
    /// A Shared iPad's resident users (from its latest UserList) and user channels.
    Users { id: String },
    /// Ask a Shared iPad for its users now (UserList).
    RefreshUsers { id: String },
    /// Log out the user signed in on a Shared iPad now.
    LogOutUser { id: String },
    /// Delete one user from a Shared iPad. A user with data not synced yet is refused unless --force, which
    /// loses that data and needs --confirm-serial.
    DeleteUser {
        id: String,
        /// The user's name (Managed Apple Account) as `device users` shows it.
        #[arg(long)]
        user: String,
        /// Delete data that is not synced yet too.
        #[arg(long)]
        force: bool,
        /// The device's serial number, confirming --force.
        #[arg(long)]
        confirm_serial: Option<String>,
    },
    /// Delete every user from a Shared iPad (logged-in users, and unsynced ones unless --force, stay).
    DeleteAllUsers {
        id: String,
        #[arg(long)]
        force: bool,
        /// The device's serial number (required).
        #[arg(long)]
        confirm_serial: String,
    },
    /// A tenant's Shared iPad policy: its own settings and its groups'.
    SharedIpadPolicy { tenant: String },
    /// Set a tenant's (or with --group a group's) Shared iPad settings, e.g.
    /// `--json-body '{"temporary_session_only": true, "temporary_session_timeout": 1800}'`.
    SetSharedIpadPolicy {
        tenant: String,
        #[arg(long)]
        group: Option<String>,
        /// The settings as a JSON object, or @FILE to read it.
        #[arg(long)]
        json_body: String,
    },
    /// Each enrolled device of a tenant against its Shared iPad settings.
    SharedIpadCompliance { tenant: String },
    /// Move the device to another tenant now (operators); say what happens to its inventory.
    #[command(group(ArgGroup::new("inventory").required(true).args(["keep_inventory", "clear_inventory"])))]
    Move {
        id: String,
        /// The tenant it moves to.
        #[arg(long)]
        tenant: String,
        /// Keep the inventory the previous tenant collected.
        #[arg(long)]
        keep_inventory: bool,
        /// Delete the inventory the previous tenant collected.
        #[arg(long)]
        clear_inventory: bool,
    },
}

const USER_COLUMNS: &[(&str, &str)] = &[
    ("user", "user_name"),
    ("logged in", "is_logged_in"),
    ("unsynced data", "has_data_to_sync"),
    ("quota", "data_quota"),
    ("used", "data_used"),
    ("channel", "has_user_channel"),
];

const COMPLIANCE_COLUMNS: &[(&str, &str)] = &[
    ("device", "device_id"),
    ("shared", "shared_ipad"),
    ("status", "status"),
    ("applied", "applied_at"),
    ("error", "last_error"),
];

/// What a user action queued, in one line.
fn queued_line(v: &Value) -> String {
    format!(
        "{} queued ({})\n",
        cell(v.get("request_type")),
        cell(v.get("command_uuid"))
    )
}

const IDENTITY_FIELDS: &[(&str, &str)] = &[
    ("device", "device_id"),
    ("tenant", "tenant_id"),
    ("fingerprint", "fingerprint"),
    ("grant", "grant"),
    ("issued", "issued_at"),
    ("expires", "not_after"),
    ("revoked", "revoked_at"),
    ("revoked because", "revoked_reason"),
    ("released until", "released_until"),
    ("released to", "released_to_tenant_id"),
];

const DEVICE_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("SERIAL", "serial_number"),
    ("NAME", "device_name"),
    ("MODEL", "model_name"),
    ("OS", "os_version"),
    ("STATE", "enrollment_state"),
    ("TENANT", "tenant_id"),
    ("LAST SEEN", "last_seen_at"),
];

const COMMAND_FIELDS: &[(&str, &str)] = &[
    ("command uuid", "command_uuid"),
    ("type", "request_type"),
    ("status", "status"),
    ("channel", "channel"),
    ("queued by", "queued_by"),
    ("queued", "queued_at"),
    ("sent", "sent_at"),
    ("completed", "completed_at"),
];

const SETUP_FIELDS: &[(&str, &str)] = &[
    ("template", "template_id"),
    ("state", "state"),
    ("error", "error"),
    ("updated", "updated_at"),
];

pub async fn run(client: &Client, out: Out, command: DeviceCommand) -> Result<(), CliError> {
    match command {
        DeviceCommand::List { page, filter } => {
            let mut query = Vec::new();
            page.push_query(&mut query);
            filter.push_query(&mut query);
            let v = client.get(&["devices"], &query).await?;
            out.show(&v, |v| list(v, DEVICE_COLUMNS, "no devices"))
        }
        DeviceCommand::Show { id } => {
            let v = client.get(&["devices", &id], &[]).await?;
            out.show(&v, device_detail)
        }
        DeviceCommand::Commands { id, page } => {
            let mut query = Vec::new();
            page.push_query(&mut query);
            let v = client.get(&["devices", &id, "commands"], &query).await?;
            out.show(&v, |v| {
                list(
                    v,
                    &[
                        ("COMMAND UUID", "command_uuid"),
                        ("TYPE", "request_type"),
                        ("STATUS", "status"),
                        ("QUEUED", "queued_at"),
                        ("COMPLETED", "completed_at"),
                        ("BY", "queued_by"),
                    ],
                    "no commands",
                )
            })
        }
        DeviceCommand::Command {
            id,
            request_type,
            json_body,
        } => {
            let body = command_body(&request_type, json_body.as_deref())?;
            let v = client.post(&["devices", &id, "commands"], &body).await?;
            out.show(&v, |v| fields(v, COMMAND_FIELDS))
        }
        DeviceCommand::BulkCommand {
            request_type,
            json_body,
            devices,
            tenant,
            dry_run,
            confirm_count,
        } => {
            let command = command_body(&request_type, json_body.as_deref())?;
            let mut body = json!({"command": command, "dry_run": dry_run});
            if !devices.is_empty() {
                body["device_ids"] = json!(devices);
            }
            if let Some(t) = tenant {
                body["tenant_id"] = json!(t);
            }
            if let Some(n) = confirm_count {
                body["confirm_count"] = json!(n);
            }
            let label = if dry_run {
                "bulk command (dry run)"
            } else {
                "bulk command"
            };
            let v = super::progress::during(out, label, client.post(&["commands", "bulk"], &body))
                .await?;
            out.show(&v, |v| {
                let (affected, skipped) = (cell(v.get("affected")), cell(v.get("skipped")));
                if v.get("dry_run").and_then(Value::as_bool) == Some(true) {
                    format!(
                        "dry run: {request_type} would reach {affected} device(s); {skipped} skipped\n"
                    )
                } else {
                    format!(
                        "queued {request_type} for {} device(s); {skipped} skipped\n",
                        cell(v.get("queued"))
                    )
                }
            })
        }
        DeviceCommand::Push { id } => {
            let v = client
                .send(reqwest::Method::POST, &["devices", &id, "push"], &[], None)
                .await?
                .json()?;
            out.show(&v, |v| {
                format!(
                    "push queued for {} channel(s) of device {id}\n",
                    cell(v.get("channels"))
                )
            })
        }
        DeviceCommand::Identity { id } => {
            let v = client.get(&["devices", &id, "identity"], &[]).await?;
            out.show(&v, |v| fields(v, IDENTITY_FIELDS))
        }
        DeviceCommand::RevokeIdentity { id, reason } => {
            let v = client
                .post(
                    &["devices", &id, "identity", "revoke"],
                    &json!({ "reason": reason }),
                )
                .await?;
            out.show(&v, |v| fields(v, IDENTITY_FIELDS))
        }
        DeviceCommand::ReleaseForReenrollment {
            id,
            tenant,
            expires_in_seconds,
        } => {
            let v = client
                .post(
                    &["devices", &id, "release"],
                    &json!({ "tenant_id": tenant, "expires_in_seconds": expires_in_seconds }),
                )
                .await?;
            out.show(&v, |v| fields(v, IDENTITY_FIELDS))
        }
        DeviceCommand::Move {
            id,
            tenant,
            keep_inventory,
            clear_inventory: _,
        } => {
            let v = client
                .post(
                    &["devices", &id, "move"],
                    &json!({ "tenant_id": tenant, "keep_inventory": keep_inventory }),
                )
                .await?;
            out.show(&v, |v| fields(v, IDENTITY_FIELDS))
        }
        DeviceCommand::Users { id } => {
            let v = client.get(&["devices", &id, "users"], &[]).await?;
            out.show(&v, |v| {
                let users = v.get("users").and_then(Value::as_array).cloned();
                format!(
                    "shared ipad: {}; refreshed: {}\n{}",
                    cell(v.get("shared_ipad")),
                    cell(v.get("refreshed_at")),
                    table(&users.unwrap_or_default(), USER_COLUMNS)
                )
            })
        }
        DeviceCommand::RefreshUsers { id } => {
            let v = client
                .post(&["devices", &id, "users", "refresh"], &json!({}))
                .await?;
            out.show(&v, queued_line)
        }
        DeviceCommand::LogOutUser { id } => {
            let v = client
                .post(&["devices", &id, "users", "log-out"], &json!({}))
                .await?;
            out.show(&v, queued_line)
        }
        DeviceCommand::DeleteUser {
            id,
            user,
            force,
            confirm_serial,
        } => {
            let body = json!({"user_name": user, "force_deletion": force, "confirm_serial": confirm_serial});
            let v = client
                .post(&["devices", &id, "users", "delete"], &body)
                .await?;
            out.show(&v, queued_line)
        }
        DeviceCommand::DeleteAllUsers {
            id,
            force,
            confirm_serial,
        } => {
            let body = json!({"force_deletion": force, "confirm_serial": confirm_serial});
            let v = client
                .post(&["devices", &id, "users", "delete-all"], &body)
                .await?;
            out.show(&v, queued_line)
        }
        DeviceCommand::SharedIpadPolicy { tenant } => {
            let v = client
                .get(&["tenants", &tenant, "shared-ipad-policy"], &[])
                .await?;
            out.show(&v, pretty)
        }
        DeviceCommand::SetSharedIpadPolicy {
            tenant,
            group,
            json_body,
        } => {
            let text = match json_body.strip_prefix('@') {
                Some(path) => String::from_utf8(read_file("--json-body", Path::new(path))?)
                    .map_err(|_| CliError::Local(format!("--json-body {path}: not UTF-8")))?,
                None => json_body,
            };
            let body: Value = serde_json::from_str(&text)
                .map_err(|e| CliError::Usage(format!("--json-body is not JSON: {e}")))?;
            let v = match &group {
                Some(g) => {
                    client
                        .put(
                            &["tenants", &tenant, "groups", g, "shared-ipad-policy"],
                            &body,
                        )
                        .await?
                }
                None => {
                    client
                        .put(&["tenants", &tenant, "shared-ipad-policy"], &body)
                        .await?
                }
            };
            out.show(&v, pretty)
        }
        DeviceCommand::SharedIpadCompliance { tenant } => {
            let v = client
                .get(&["tenants", &tenant, "shared-ipad-compliance"], &[])
                .await?;
            out.show(&v, |v| {
                let devices = v.get("devices").and_then(Value::as_array).cloned();
                format!(
                    "shared ipads: {}, compliant: {}\n{}",
                    cell(v.get("shared_ipads")),
                    cell(v.get("compliant")),
                    table(&devices.unwrap_or_default(), COMPLIANCE_COLUMNS)
                )
            })
        }
        DeviceCommand::Setup { id } => {
            let v = client.get(&["devices", &id, "setup"], &[]).await?;
            out.show(&v, |v| fields(v, SETUP_FIELDS))
        }
        DeviceCommand::ReleaseSetup { id } => {
            let v = client
                .send(
                    reqwest::Method::POST,
                    &["devices", &id, "setup", "release"],
                    &[],
                    None,
                )
                .await?
                .json()?;
            out.show(&v, |v| fields(v, SETUP_FIELDS))
        }
        DeviceCommand::ClearActivationLock { id } => {
            let v = client
                .send(
                    reqwest::Method::POST,
                    &["devices", &id, "activation-lock", "clear"],
                    &[],
                    None,
                )
                .await?
                .json()?;
            out.show(&v, |v| {
                fields(
                    v,
                    &[
                        ("device", "device_id"),
                        ("serial", "serial_number"),
                        ("cleared", "cleared"),
                        ("cleared with", "cleared_with"),
                        ("attempted", "attempted_at"),
                    ],
                )
            })
        }
        DeviceCommand::ActivationLock { id } => {
            let v = client
                .get(&["devices", &id, "activation-lock"], &[])
                .await?;
            out.show(&v, |v| {
                fields(
                    v,
                    &[
                        ("bypass code escrowed", "bypass_code_escrowed"),
                        ("escrowed", "escrowed_at"),
                        ("bypass code", "bypass_code"),
                    ],
                )
            })
        }
    }
}

/// The typed command the API takes: `{"type": <request type>, …fields}`.
fn command_body(request_type: &str, json_body: Option<&str>) -> Result<Value, CliError> {
    let text = match json_body {
        None => None,
        Some(arg) => match arg.strip_prefix('@') {
            Some(path) => Some(
                String::from_utf8(read_file("--json-body", Path::new(path))?)
                    .map_err(|_| CliError::Local(format!("--json-body {path}: not UTF-8")))?,
            ),
            None => Some(arg.to_string()),
        },
    };
    let mut body = match text {
        None => json!({}),
        Some(t) => serde_json::from_str::<Value>(&t)
            .map_err(|e| CliError::Usage(format!("--json-body is not JSON: {e}")))?,
    };
    let Some(object) = body.as_object_mut() else {
        return Err(CliError::Usage(
            "--json-body must be a JSON object of the command's fields".into(),
        ));
    };
    match object.get("type").and_then(Value::as_str) {
        Some(t) if t != request_type => {
            return Err(CliError::Usage(format!(
                "--json-body says type {t:?} but --type is {request_type:?}"
            )))
        }
        _ => {}
    }
    object.insert("type".into(), Value::String(request_type.to_string()));
    Ok(body)
}

fn device_detail(v: &Value) -> String {
    let mut text = fields(
        v,
        &[
            ("id", "id"),
            ("udid", "udid"),
            ("serial", "serial_number"),
            ("tenant", "tenant_id"),
            ("state", "enrollment_state"),
            ("name", "device_name"),
            ("model", "model_name"),
            ("model id", "model"),
            ("product", "product_name"),
            ("os", "os_version"),
            ("build", "build_version"),
            ("supervised", "is_supervised"),
            ("enrolled", "enrolled_at"),
            ("last seen", "last_seen_at"),
        ],
    );
    let channels = v.get("channels").and_then(Value::as_array);
    if let Some(channels) = channels.filter(|c| !c.is_empty()) {
        text.push_str("\nchannels:\n");
        text.push_str(&table(
            channels,
            &[
                ("ID", "id"),
                ("USER", "user_short_name"),
                ("PUSH TOKEN", "has_push_token"),
                ("UNLOCK TOKEN", "has_unlock_token"),
                ("AWAITING CONFIG", "awaiting_configuration"),
            ],
        ));
    }
    if let Some(inventory) = v.get("inventory").and_then(Value::as_object) {
        if !inventory.is_empty() {
            text.push_str("\ninventory:\n");
            for (key, value) in inventory {
                let shown = match value {
                    Value::Array(_) | Value::Object(_) => pretty(value),
                    other => cell(Some(other)),
                };
                text.push_str(&format!("  {key}: {shown}\n"));
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_bodies_are_typed() {
        assert_eq!(
            command_body("DeviceLock", Some(r#"{"message":"Call IT"}"#)).unwrap(),
            json!({"type": "DeviceLock", "message": "Call IT"})
        );
        assert_eq!(
            command_body("SecurityInfo", None).unwrap(),
            json!({"type": "SecurityInfo"})
        );
        assert!(
            command_body("DeviceLock", Some(r#"{"type":"EraseDevice"}"#))
                .unwrap_err()
                .to_string()
                .contains("EraseDevice")
        );
        assert!(command_body("DeviceLock", Some("[1]")).is_err());
        assert!(command_body("DeviceLock", Some("{nope")).is_err());
    }
}

/// `device list` filters (the API's `GET /devices` query).
#[derive(clap::Args, Debug, Default)]
pub struct DeviceFilter {
    /// Only this tenant's devices (operators and helpdesk).
    #[arg(long = "tenant")]
    tenant: Option<String>,
    /// Model identifier or name, e.g. iPad13,18.
    #[arg(long)]
    model: Option<String>,
    /// OS version, exact (18.1) or a prefix ending in a dot (17.).
    #[arg(long)]
    os_version: Option<String>,
    /// pending, enrolled or unenrolled.
    #[arg(long)]
    state: Option<String>,
    /// Last seen before this time (unix seconds, RFC 3339 or YYYY-MM-DD).
    #[arg(long)]
    last_seen_before: Option<String>,
    #[arg(long)]
    last_seen_after: Option<String>,
    /// Text search over name, serial number, UDID and model name.
    #[arg(long = "search")]
    search: Option<String>,
    /// enrolled_at, last_seen, name, serial, os_version or model.
    #[arg(long)]
    sort: Option<String>,
    /// Sort descending.
    #[arg(long)]
    desc: bool,
}

impl DeviceFilter {
    fn push_query(&self, query: &mut Vec<(&'static str, String)>) {
        let pairs: [(&'static str, &Option<String>); 8] = [
            ("tenant", &self.tenant),
            ("model", &self.model),
            ("os_version", &self.os_version),
            ("state", &self.state),
            ("last_seen_before", &self.last_seen_before),
            ("last_seen_after", &self.last_seen_after),
            ("q", &self.search),
            ("sort", &self.sort),
        ];
        for (key, value) in pairs {
            if let Some(v) = value {
                query.push((key, v.clone()));
            }
        }
        if self.desc {
            query.push(("order", "desc".to_owned()));
        }
    }
}
