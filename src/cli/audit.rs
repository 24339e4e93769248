//! `orchard audit …` and `orchard usage …`: the audit log and the usage report for billing.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::Value;

use super::output::{cell, fields, list, table};
use super::{print_stdout, write_file, CliError, Client, Out, PageArgs};

/// The audit log's filters (all optional, combined with "and").
#[derive(Args, Debug, Clone)]
pub struct AuditFilter {
    /// Only events of this tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// Only events by this actor (e.g. `token:<id>`).
    #[arg(long)]
    actor: Option<String>,
    /// Only this action; may end in * (e.g. "device.*").
    #[arg(long)]
    action: Option<String>,
    /// From (inclusive): unix seconds, RFC 3339, or YYYY-MM-DD.
    #[arg(long)]
    from: Option<String>,
    /// To (inclusive): unix seconds, RFC 3339, or YYYY-MM-DD (the whole day).
    #[arg(long)]
    to: Option<String>,
}

impl AuditFilter {
    fn query(&self) -> Vec<(&'static str, String)> {
        [
            ("tenant", &self.tenant),
            ("actor", &self.actor),
            ("action", &self.action),
            ("from", &self.from),
            ("to", &self.to),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
        .collect()
    }
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Audit events, newest first.
    List {
        #[command(flatten)]
        filter: AuditFilter,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Export audit events as CSV.
    Export {
        #[command(flatten)]
        filter: AuditFilter,
        #[command(flatten)]
        page: PageArgs,
        /// Write the CSV to this file (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum UsageCommand {
    /// Device-days and amounts per tenant for the days FROM..=TO.
    Report {
        /// First day, YYYY-MM-DD.
        #[arg(long)]
        from: String,
        /// Last day (included), YYYY-MM-DD.
        #[arg(long)]
        to: String,
        /// The report as CSV (one line per tenant) instead of a table.
        #[arg(long)]
        csv: bool,
        /// Write the report to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub async fn run_audit(client: &Client, out: Out, command: AuditCommand) -> Result<(), CliError> {
    match command {
        AuditCommand::List { filter, page } => {
            let mut query = filter.query();
            page.push_query(&mut query);
            let v = client.get(&["audit"], &query).await?;
            out.show(&v, |v| {
                list(
                    v,
                    &[
                        ("AT", "at"),
                        ("ACTOR", "actor"),
                        ("ROLE", "actor_role"),
                        ("TENANT", "tenant_id"),
                        ("ACTION", "action"),
                        ("TARGET", "target"),
                        ("OUTCOME", "outcome"),
                        ("STATUS", "status"),
                        ("REQUEST ID", "request_id"),
                    ],
                    "no audit events",
                )
            })
        }
        AuditCommand::Export {
            filter,
            page,
            out: path,
        } => {
            let mut query = filter.query();
            page.push_query(&mut query);
            let answer = super::progress::during(
                out,
                "audit export",
                client.send(Method::GET, &["audit.csv"], &query, None),
            )
            .await?;
            emit_bytes(&answer.body, path.as_ref())
        }
    }
}

pub async fn run_usage(client: &Client, out: Out, command: UsageCommand) -> Result<(), CliError> {
    match command {
        UsageCommand::Report {
            from,
            to,
            csv,
            out: path,
        } => {
            let mut query = vec![("from", from), ("to", to)];
            if csv && out.is_json() {
                return Err(CliError::Usage("give --csv or --json, not both".into()));
            }
            if csv {
                query.push(("format", "csv".to_string()));
                let answer = client.send(Method::GET, &["usage"], &query, None).await?;
                return emit_bytes(&answer.body, path.as_ref());
            }
            let v = client.get(&["usage"], &query).await?;
            match path {
                Some(p) => {
                    let text = if out.is_json() {
                        format!("{}\n", super::output::pretty(&v))
                    } else {
                        usage_text(&v)
                    };
                    write_file("--out", &p, text.as_bytes())
                }
                None => out.show(&v, usage_text),
            }
        }
    }
}

fn emit_bytes(bytes: &[u8], path: Option<&PathBuf>) -> Result<(), CliError> {
    match path {
        Some(p) => write_file("--out", p, bytes),
        None => print_stdout(bytes),
    }
}

fn usage_text(v: &Value) -> String {
    let mut text = fields(
        v,
        &[
            ("period", "from"),
            ("to", "to"),
            ("days", "days"),
            ("price per device and year", "price_per_device_year"),
            ("currency", "currency"),
        ],
    );
    text.push('\n');
    let tenants = v
        .get("tenants")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if tenants.is_empty() {
        text.push_str("no tenant had enrolled devices in the period\n");
    } else {
        text.push_str(&table(
            tenants,
            &[
                ("TENANT", "tenant_code"),
                ("NAME", "tenant_name"),
                ("DEVICE-DAYS", "device_days"),
                ("DAYS COUNTED", "days_counted"),
                ("AMOUNT", "amount"),
            ],
        ));
    }
    text.push_str(&format!(
        "total: {} device-days, {} {}\n",
        cell(v.get("total_device_days")),
        cell(v.get("total_amount")),
        cell(v.get("currency"))
    ));
    let missing = v
        .get("missing_days")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if !missing.is_empty() {
        // A long outage or a period reaching into the future would flood the screen; --json has them all.
        const SHOWN: usize = 6;
        let mut days: Vec<String> = missing.iter().take(SHOWN).map(|d| cell(Some(d))).collect();
        if missing.len() > SHOWN {
            days.push(format!("… and {} more (see --json)", missing.len() - SHOWN));
        }
        text.push_str(&format!(
            "warning: no snapshot for {} day(s), not counted: {}\n",
            missing.len(),
            days.join(" ")
        ));
    }
    text
}
