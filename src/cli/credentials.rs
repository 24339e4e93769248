//! `orchard credentials`: the credential register — every certificate and token with its owner, expiry, state
//! and how to renew it (a table, or the API's JSON with `--json`).

use serde_json::Value;

use super::output::{cell, table};
use super::{CliError, Client, Out};

/// Prints the register the token may see.
pub async fn run(client: &Client, out: Out) -> Result<(), CliError> {
    let v = client.get(&["credentials"], &[]).await?;
    out.show(&v, register_text)
}

fn register_text(v: &Value) -> String {
    let rows: Vec<Value> = v
        .get("credentials")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .map(|c| {
            let owner = match c.pointer("/owner/tenant_name") {
                Some(Value::String(name)) => {
                    let contact = cell(c.pointer("/owner/contact_email"));
                    format!("{name} ({contact})")
                }
                _ => "central IT".into(),
            };
            let state = match (
                c.get("state").and_then(Value::as_str),
                c.get("warning_threshold_days"),
            ) {
                (Some("warning"), Some(Value::Number(n))) => format!("warning ({n} days)"),
                (Some(s), _) => s.to_owned(),
                (None, _) => "-".into(),
            };
            let renew = match c.pointer("/renew/cli").and_then(Value::as_str) {
                Some(cli) => cli.to_owned(),
                None => cell(c.pointer("/renew/api")),
            };
            serde_json::json!({
                "id": c.get("id"),
                "name": c.get("name"),
                "owner": owner,
                "expires_at": c.get("expires_at"),
                "days_left": c.get("days_left"),
                "state": state,
                "renew": renew,
            })
        })
        .collect();
    if rows.is_empty() {
        return "no credentials visible to this token\n".into();
    }
    table(
        &rows,
        &[
            ("CREDENTIAL", "id"),
            ("NAME", "name"),
            ("OWNER", "owner"),
            ("EXPIRES", "expires_at"),
            ("DAYS", "days_left"),
            ("STATE", "state"),
            ("RENEW WITH", "renew"),
        ],
    )
}
