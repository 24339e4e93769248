//! Test kit for end-to-end tests: boots the real `orchard` binary on an ephemeral port with a fresh
//! database (SQLite in a temp dir, or a new PostgreSQL database), makes an operator token, and gives an
//! API client that trusts the server's CA.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh PostgreSQL database on the server named by `ORCHARD_TEST_POSTGRES_URL`.
/// Fails (does not skip) when the variable is missing, unless ORCHARD_TEST_SKIP_POSTGRES=1.
pub async fn fresh_postgres_url() -> Result<Option<String>> {
    let Ok(base) = std::env::var("ORCHARD_TEST_POSTGRES_URL") else {
        if std::env::var("ORCHARD_TEST_SKIP_POSTGRES").as_deref() == Ok("1") {
            return Ok(None);
        }
        bail!("ORCHARD_TEST_POSTGRES_URL is not set: run the tests through scripts/test.sh (or set ORCHARD_TEST_SKIP_POSTGRES=1 to skip PostgreSQL)");
    };
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&base)
        .await
        .context("connecting to ORCHARD_TEST_POSTGRES_URL")?;
    let name = format!("orchard_e2e_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    // Replace the database path of the URL.
    let (prefix, rest) = base
        .rsplit_once('/')
        .context("ORCHARD_TEST_POSTGRES_URL has no database path")?;
    let query = rest
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();
    Ok(Some(format!("{prefix}/{name}{query}")))
}

pub struct TestServer {
    pub child: Child,
    pub base_url: String,
    pub data_dir: PathBuf,
    pub ca_pem: Vec<u8>,
    pub token: String,
    pub database_url: Option<String>,
    pub http: reqwest::Client,
    _tmp: tempfile::TempDir,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn orchard_bin() -> &'static str {
    env!("CARGO_BIN_EXE_orchard")
}

fn storage_args(data_dir: &Path, database_url: &Option<String>) -> Vec<String> {
    let mut a = vec!["--data-dir".to_string(), data_dir.display().to_string()];
    if let Some(u) = database_url {
        a.push("--database-url".into());
        a.push(u.clone());
    }
    a
}

/// Runs `orchard token create` like an operator would, returning the printed secret.
pub fn create_token(
    data_dir: &Path,
    database_url: &Option<String>,
    role: &str,
    tenant: Option<&str>,
    name: &str,
) -> Result<String> {
    let mut cmd = Command::new(orchard_bin());
    cmd.args(["token", "create", "--role", role, "--name", name])
        .args(storage_args(data_dir, database_url));
    if let Some(t) = tenant {
        cmd.args(["--tenant", t]);
    }
    let out = cmd.output()?;
    if !out.status.success() {
        bail!(
            "token create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

impl TestServer {
    /// Starts `orchard serve` on 127.0.0.1:0. Returns None when PostgreSQL is explicitly skipped.
    pub async fn start(backend: Backend) -> Result<Option<TestServer>> {
        Self::start_with(backend, &[]).await
    }

    /// Like [`start`](Self::start), with extra `orchard serve` arguments.
    pub async fn start_with(backend: Backend, extra: &[String]) -> Result<Option<TestServer>> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let database_url = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => match fresh_postgres_url().await? {
                Some(u) => Some(u),
                None => return Ok(None),
            },
        };
        let tmp = tempfile::tempdir()?;
        let data_dir = tmp.path().join("data");
        let token = create_token(&data_dir, &database_url, "operator", None, "e2e-operator")?;

        let mut child = Command::new(orchard_bin())
            .arg("serve")
            .args(storage_args(&data_dir, &database_url))
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env("ORCHARD_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().context("no stdout")?;
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            let mut reader = BufReader::new(stdout);
            let _ = reader.read_line(&mut line);
            line
        })
        .await?;
        let base_url = line
            .split_whitespace()
            .nth(2)
            .filter(|u| u.starts_with("https://"))
            .with_context(|| format!("unexpected first line from orchard serve: {line:?}"))?
            .to_string();
        let ca_pem = std::fs::read(data_dir.join("ca.pem"))?;
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca_pem)?)
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Some(TestServer {
            child,
            base_url,
            data_dir,
            ca_pem,
            token,
            database_url,
            http,
            _tmp: tmp,
        }))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// An API call with a bearer token; returns status and JSON body (Null when empty).
    pub async fn api(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value)> {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await?;
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Ok((status, v))
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        let (s, v) = self
            .api(&self.token, reqwest::Method::GET, path, None)
            .await?;
        if s != 200 {
            bail!("GET {path} → {s}: {v}");
        }
        Ok(v)
    }

    pub async fn post(&self, path: &str, body: Value) -> Result<Value> {
        let (s, v) = self
            .api(&self.token, reqwest::Method::POST, path, Some(body))
            .await?;
        if !(200..300).contains(&s) {
            bail!("POST {path} → {s}: {v}");
        }
        Ok(v)
    }

    pub async fn create_tenant(&self, name: &str, code: &str) -> Result<String> {
        let t = self
            .post("/api/v1/tenants", json!({"name": name, "code": code}))
            .await?;
        Ok(t["id"].as_str().context("tenant id")?.to_string())
    }

    pub async fn enrollment_link(&self, tenant: &str, max_uses: Option<i64>) -> Result<String> {
        let l = self
            .post(
                &format!("/api/v1/tenants/{tenant}/enrollment-links"),
                json!({"name": "test link", "max_uses": max_uses}),
            )
            .await?;
        Ok(l["url"].as_str().context("link url")?.to_string())
    }

    pub async fn devices(&self) -> Result<Vec<Value>> {
        let v = self.get("/api/v1/devices?limit=1000").await?;
        Ok(v["items"].as_array().cloned().unwrap_or_default())
    }

    pub async fn device_by_udid(&self, udid: &str) -> Result<Value> {
        let all = self.devices().await?;
        let d = all
            .into_iter()
            .find(|d| d["udid"] == udid)
            .with_context(|| format!("device {udid} not listed"))?;
        self.get(&format!(
            "/api/v1/devices/{}",
            d["id"].as_str().unwrap_or("")
        ))
        .await
    }

    pub async fn commands_of(&self, device_id: &str) -> Result<Vec<Value>> {
        let v = self
            .get(&format!("/api/v1/devices/{device_id}/commands"))
            .await?;
        Ok(v["items"].as_array().cloned().unwrap_or_default())
    }

    /// Everything the API shows about every device and its commands: compared before and after a rejected
    /// request to prove nothing changed.
    pub async fn snapshot(&self) -> Result<Value> {
        let mut out = Vec::new();
        for d in self.devices().await? {
            let id = d["id"].as_str().unwrap_or("").to_string();
            let mut detail = self.get(&format!("/api/v1/devices/{id}")).await?;
            detail["commands"] = Value::Array(self.commands_of(&id).await?);
            out.push(detail);
        }
        Ok(Value::Array(out))
    }
}
