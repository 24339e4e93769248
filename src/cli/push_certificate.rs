//! `orchard push-certificate …`: the MDM push certificate through the API (operators). The database-level
//! `orchard push-cert …` does the same on the server host without a running server or a token.

use std::path::PathBuf;

use base64::Engine;
use clap::Subcommand;
use serde_json::{json, Map, Value};

use super::output::fields;
use super::{read_file, write_file, CliError, Client, Out};

#[derive(Subcommand, Debug)]
pub enum PushCertificateCommand {
    /// The push certificate's topic and expiry (or that none is uploaded yet).
    Status,
    /// Make a push key (kept sealed on the server) and a CSR for the Apple Push Certificates Portal.
    Csr {
        /// Directory to write push.csr (and push-request.b64 with a vendor identity) into.
        #[arg(long)]
        out: PathBuf,
        /// The MDM vendor certificate chain (PEM): also get the vendor-signed request the portal accepts.
        #[arg(long, requires = "vendor_key")]
        vendor_cert: Option<PathBuf>,
        /// The MDM vendor private key (unencrypted PEM).
        #[arg(long, requires = "vendor_cert")]
        vendor_key: Option<PathBuf>,
    },
    /// Upload the certificate from the portal: PEM alone (after `csr`), PEM with its key, or PKCS#12.
    Upload {
        /// The certificate (PEM).
        #[arg(long, conflicts_with = "p12")]
        cert: Option<PathBuf>,
        /// Its private key (PEM); not needed when the server made the CSR.
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
        /// A PKCS#12 (.p12) file with certificate and key.
        #[arg(long)]
        p12: Option<PathBuf>,
        /// The PKCS#12 password.
        #[arg(long, env = "ORCHARD_P12_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// Replace the certificate even though its topic differs: every enrolled iPad is lost.
        #[arg(long)]
        force: bool,
    },
}

const STATUS_FIELDS: &[(&str, &str)] = &[
    ("topic", "topic"),
    ("expires", "not_after"),
    ("days left", "days_left"),
    ("expired", "expired"),
    ("expiry warning", "expiry_warning"),
    ("pushes stopped", "pushes_stopped"),
];

fn status_text(v: &Value) -> String {
    if v.get("development_topic").and_then(Value::as_bool) == Some(true) {
        return fields(
            v,
            &[
                ("topic", "topic"),
                ("development topic", "development_topic"),
                ("note", "message"),
            ],
        );
    }
    fields(v, STATUS_FIELDS)
}

fn pem_text(flag: &str, path: &std::path::Path) -> Result<String, CliError> {
    String::from_utf8(read_file(flag, path)?)
        .map_err(|_| CliError::Local(format!("{flag} {}: not a PEM (text) file", path.display())))
}

pub async fn run(
    client: &Client,
    out: Out,
    command: PushCertificateCommand,
) -> Result<(), CliError> {
    match command {
        PushCertificateCommand::Status => {
            let v = client.get(&["push-certificate"], &[]).await?;
            out.show(&v, status_text)
        }
        PushCertificateCommand::Csr {
            out: dir,
            vendor_cert,
            vendor_key,
        } => {
            let body = match (vendor_cert, vendor_key) {
                (Some(c), Some(k)) => json!({
                    "vendor_cert_chain_pem": pem_text("--vendor-cert", &c)?,
                    "vendor_key_pem": pem_text("--vendor-key", &k)?,
                }),
                _ => json!({}),
            };
            let v = client.post(&["push-certificate", "csr"], &body).await?;
            std::fs::create_dir_all(&dir)
                .map_err(|e| CliError::Local(format!("creating --out {}: {e}", dir.display())))?;
            let csr = v
                .get("csr_pem")
                .and_then(Value::as_str)
                .ok_or_else(|| CliError::Local("the server's answer has no csr_pem".into()))?;
            let csr_path = dir.join("push.csr");
            write_file("--out", &csr_path, csr.as_bytes())?;
            let mut written = vec![csr_path];
            let signed = v.get("vendor_signed_request_b64").and_then(Value::as_str);
            if let Some(request) = signed {
                let path = dir.join("push-request.b64");
                write_file("--out", &path, request.as_bytes())?;
                written.push(path);
            }
            out.show(&v, |_| {
                let mut text: String = written
                    .iter()
                    .map(|p| format!("wrote {}\n", p.display()))
                    .collect();
                text.push_str(if signed.is_some() {
                    "upload push-request.b64 to https://identity.apple.com, then \
                     `orchard push-certificate upload --cert <the certificate>`\n"
                } else {
                    "have push.csr signed by an MDM vendor, upload the signed request to \
                     https://identity.apple.com, then `orchard push-certificate upload --cert <the certificate>`\n"
                });
                text
            })
        }
        PushCertificateCommand::Upload {
            cert,
            key,
            p12,
            password,
            force,
        } => {
            let mut body = Map::new();
            match (cert, key, p12) {
                (Some(c), key, None) => {
                    body.insert("certificate_pem".into(), pem_text("--cert", &c)?.into());
                    if let Some(k) = key {
                        body.insert("private_key_pem".into(), pem_text("--key", &k)?.into());
                    }
                }
                (None, None, Some(p)) => {
                    let der = read_file("--p12", &p)?;
                    body.insert(
                        "pkcs12_base64".into(),
                        base64::engine::general_purpose::STANDARD.encode(der).into(),
                    );
                    body.insert("password".into(), password.unwrap_or_default().into());
                }
                _ => {
                    return Err(CliError::Usage(
                        "give --cert (with --key unless the server made the csr), or --p12".into(),
                    ))
                }
            }
            body.insert("force".into(), force.into());
            let v = client
                .put(&["push-certificate"], &Value::Object(body))
                .await?;
            out.show(&v, status_text)
        }
    }
}
