//! The real `orchard` binary for end-to-end tests: `orchard serve` on 127.0.0.1:0 over a fresh database, an
//! operator token made the way the first one is made (`orchard token create`), tokens of every role, an HTTPS
//! client that trusts only the server's CA, the binary's other commands on the same storage, and simulated iPads
//! enrolled through the server.
//!
//! The binary is the one cargo built for the calling test (`CARGO_BIN_EXE_orchard`, set when cargo runs the
//! root package's tests), so only those tests can start it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use orchard_sim::{SimConfig, SimDevice};
use orchard_types::Role;
use serde_json::{json, Value};

use crate::{install_crypto_provider, Backend, TestDatabase};

/// The `orchard` binary cargo built for this test.
pub fn orchard_binary() -> Result<PathBuf> {
    let path = std::env::var_os("CARGO_BIN_EXE_orchard").context(
        "CARGO_BIN_EXE_orchard is not set: only the root package's tests (tests/*.rs) can start the binary",
    )?;
    Ok(PathBuf::from(path))
}

/// A running `orchard serve` (killed when dropped, then its database removed).
pub struct TestServer {
    pub base_url: String,
    /// `--data-dir`: the CA, TLS and data-key files, and on SQLite the database.
    pub data_dir: PathBuf,
    /// The server CA (`server-ca.pem`): what the server's TLS certificate and enrollment profiles chain to,
    /// and what enrolled iPads trust.
    pub ca_pem: Vec<u8>,
    /// The device CA (`ca.pem`): issues device identities through SCEP (the RA a PKCSReq is encrypted to).
    pub device_ca_pem: Vec<u8>,
    /// An operator token, made with `orchard token create` before the server started (as the first one is).
    pub token: String,
    /// `--database-url`: `None` on SQLite (the binary's default database in the data directory).
    pub database_url: Option<String>,
    /// HTTPS client trusting only the server's CA.
    pub http: reqwest::Client,
    child: Child,
    // Declared after `child`, so the database outlives the process that uses it.
    database: TestDatabase,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TestServer {
    /// Starts `orchard serve` on 127.0.0.1:0 over a fresh database. `None` when PostgreSQL is skipped on purpose.
    pub async fn start(backend: Backend) -> Result<Option<TestServer>> {
        Self::start_with(backend, &[]).await
    }

    /// Like [`start`](Self::start), with extra `orchard serve` arguments.
    pub async fn start_with(backend: Backend, extra: &[String]) -> Result<Option<TestServer>> {
        Self::start_logging(backend, extra, None).await
    }

    /// Like [`start_with`](Self::start_with), logging with `ORCHARD_LOG=filter` into `file` (the server's whole
    /// stderr), for tests that read the logs.
    pub async fn start_logged(
        backend: Backend,
        extra: &[String],
        filter: &str,
        file: &Path,
    ) -> Result<Option<TestServer>> {
        Self::start_logging(backend, extra, Some((filter, file))).await
    }

    /// Like [`start_with`](Self::start_with), after `prepare` filled the fresh data directory (an older
    /// version's layout, say).
    pub async fn start_prepared(
        backend: Backend,
        extra: &[String],
        prepare: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<Option<TestServer>> {
        Self::start_inner(backend, extra, None, prepare).await
    }

    async fn start_logging(
        backend: Backend,
        extra: &[String],
        log: Option<(&str, &Path)>,
    ) -> Result<Option<TestServer>> {
        Self::start_inner(backend, extra, log, |_| Ok(())).await
    }

    /// Like [`start_with`](Self::start_with), on a database the test made (on a PostgreSQL server of its own,
    /// say).
    pub async fn start_on(database: TestDatabase, extra: &[String]) -> Result<TestServer> {
        Self::start_on_database(database, extra, None, |_| Ok(())).await
    }

    async fn start_inner(
        backend: Backend,
        extra: &[String],
        log: Option<(&str, &Path)>,
        prepare: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<Option<TestServer>> {
        install_crypto_provider();
        let Some(database) = TestDatabase::create(backend).await? else {
            return Ok(None);
        };
        Self::start_on_database(database, extra, log, prepare)
            .await
            .map(Some)
    }

    async fn start_on_database(
        database: TestDatabase,
        extra: &[String],
        log: Option<(&str, &Path)>,
        prepare: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<TestServer> {
        install_crypto_provider();
        let data_dir = database.dir().to_owned();
        prepare(&data_dir)?;
        let database_url = database.binary_database_url();
        let token = database_command(
            &data_dir,
            &database_url,
            &token_args(Role::Operator, None, "e2e-operator"),
        )
        .and_then(|mut command| run_for_secret(&mut command))?;
        let (child, base_url) = spawn_serve(&data_dir, &database_url, extra, log)
            .await
            .context("starting orchard serve")?;
        let ca_pem = std::fs::read(data_dir.join("server-ca.pem"))?;
        let device_ca_pem = std::fs::read(data_dir.join("ca.pem"))?;
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca_pem)?)
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(TestServer {
            base_url,
            data_dir,
            ca_pem,
            device_ca_pem,
            token,
            database_url,
            http,
            child,
            database,
        })
    }

    pub fn backend(&self) -> Backend {
        self.database.backend()
    }

    /// The server CA's certificate file (what `--ca`/`ORCHARD_CA` of the client commands take).
    pub fn ca_path(&self) -> PathBuf {
        self.data_dir.join("server-ca.pem")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// A connection to the server's database, for checks that must go around the API.
    pub async fn connect_database(&self) -> Result<sqlx::AnyConnection> {
        self.database.connect().await
    }

    /// The binary with `args`, then this server's storage (`--data-dir`, `--database-url`): the commands that
    /// work on the database directly (`token create`, `local-account`, `push-cert`).
    pub fn database_command(&self, args: &[&str]) -> Result<Command> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        database_command(&self.data_dir, &self.database_url, &args)
    }

    /// `orchard local-account set --username <username>` with the password typed on stdin, as an operator at
    /// the server's console does; the command's output, for tests of its refusals.
    pub fn local_account_set(
        &self,
        username: &str,
        password: &str,
    ) -> Result<std::process::Output> {
        use std::io::Write;
        let mut child = self
            .database_command(&["local-account", "set", "--username", username])?
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(format!("{password}\n").as_bytes())?;
        Ok(child.wait_with_output()?)
    }

    /// A break-glass account `username` with `password` (see [`TestServer::local_account_set`]); an error
    /// carries the command's stderr.
    pub fn set_local_account(&self, username: &str, password: &str) -> Result<()> {
        let out = self.local_account_set(username, password)?;
        if !out.status.success() {
            bail!(
                "local-account set: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// The binary as an API client of this server (`ORCHARD_SERVER`, `ORCHARD_TOKEN` = the operator token,
    /// `ORCHARD_CA`), with `args`.
    pub fn client_command(&self, args: &[&str]) -> Result<Command> {
        let mut command = Command::new(orchard_binary()?);
        command
            .args(args)
            .env("ORCHARD_SERVER", &self.base_url)
            .env("ORCHARD_TOKEN", &self.token)
            .env("ORCHARD_CA", self.ca_path());
        Ok(command)
    }

    /// A token of `role` (of `tenant` for admins and viewers) made with `orchard token create`; its secret.
    pub fn create_token(&self, role: Role, tenant: Option<&str>, name: &str) -> Result<String> {
        let mut command = database_command(
            &self.data_dir,
            &self.database_url,
            &token_args(role, tenant, name),
        )?;
        run_for_secret(&mut command)
    }

    /// Another `orchard serve` node on this server's storage (same data directory and database).
    pub async fn start_node(&self, extra: &[String]) -> Result<Node> {
        let (child, base_url) =
            spawn_serve(&self.data_dir, &self.database_url, extra, None).await?;
        Ok(Node { child, base_url })
    }

    /// Stops this server's process and starts `orchard serve` again on the same address, data directory and
    /// database, with `extra` arguments (enrolled devices keep their server URL).
    pub async fn restart(&mut self, extra: &[String]) -> Result<()> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let address = self
            .base_url
            .strip_prefix("https://")
            .context("base url")?
            .to_owned();
        let mut args = vec!["--listen".to_owned(), address];
        args.extend_from_slice(extra);
        let (child, base_url) =
            spawn_serve(&self.data_dir, &self.database_url, &args, None).await?;
        self.child = child;
        self.base_url = base_url;
        Ok(())
    }

    /// Sends this server's process SIGTERM (as systemd stops a service): it shuts down gracefully. See
    /// [`TestServer::wait_exit`].
    pub fn terminate(&self) -> Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        ensure!(status.success(), "kill -TERM failed: {status}");
        Ok(())
    }

    /// Waits (at most `bound`) for this server's process to exit, and says how it exited.
    pub async fn wait_exit(&mut self, bound: Duration) -> Result<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "orchard serve did not exit within {bound:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops this server's process; the database stays (for other nodes on it) until the server is dropped.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The `--database-url` a node with another data directory uses to share this server's database (on SQLite
    /// the database file in this server's data directory).
    pub fn shared_database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("orchard.db").display()),
        }
    }

    /// The key-encryption key the first start made in the data directory.
    pub fn kek_path(&self) -> PathBuf {
        self.data_dir.join("kek")
    }

    /// Another `orchard serve` node on this server's database with its own data directory `data_dir` (give it
    /// the KEK in `extra`).
    pub async fn start_node_in(&self, data_dir: &Path, extra: &[String]) -> Result<Node> {
        let (child, base_url) =
            spawn_serve(data_dir, &Some(self.shared_database_url()), extra, None).await?;
        Ok(Node { child, base_url })
    }

    /// The private part of the shared key `name` (`device_ca`, `server_ca`, `profile_signer`, `data_key`) as
    /// stored in the database, opened with the KEK of the data directory: what someone holding both has.
    pub async fn stored_key(&self, name: &str) -> Result<Vec<u8>> {
        use sqlx::Row;
        let kek_text = std::fs::read_to_string(self.kek_path())?;
        let kek = orchard_pki::seal::DataKey::from_bytes(&openssl::base64::decode_block(
            kek_text.trim(),
        )?)?;
        let mut db = self.connect_database().await?;
        let row = sqlx::query("SELECT key_sealed FROM server_keys WHERE name = $1")
            .bind(name)
            .fetch_one(&mut db)
            .await?;
        let sealed: Vec<u8> = row.try_get("key_sealed")?;
        Ok(kek
            .open(&sealed, format!("orchard server_keys:{name}").as_bytes())?
            .into_inner())
    }

    /// An API call with a bearer token; returns status and JSON body (Null when empty, a string when not JSON).
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

    /// A DEP token as an operator makes one: the key pair by Orchard (`POST /dep-tokens`), the `.p7m` by
    /// "ASM" (the local DEP server's token encrypted to that certificate), uploaded. Returns the token's id
    /// and the upload's answer.
    pub async fn upload_dep_token(
        &self,
        dep: &orchard_dep::fake::FakeDepServer,
        name: &str,
    ) -> Result<(String, Value)> {
        use base64::Engine as _;
        let created = self
            .post("/api/v1/dep-tokens", json!({"name": name}))
            .await?;
        let token_id = created["id"].as_str().context("dep token id")?.to_owned();
        let p7m = orchard_dep::fake::encrypt_server_token(
            &dep.server_token(),
            created["certificate_pem"]
                .as_str()
                .context("dep token certificate")?
                .as_bytes(),
            orchard_dep::fake::TokenCipher::Aes256Cbc,
        )?;
        let (status, uploaded) = self
            .api(
                &self.token,
                reqwest::Method::PUT,
                &format!("/api/v1/dep-tokens/{token_id}/token"),
                Some(json!({"p7m_base64": base64::engine::general_purpose::STANDARD.encode(&p7m)})),
            )
            .await?;
        if status != 200 {
            bail!("dep token upload → {status}: {uploaded}");
        }
        Ok((token_id, uploaded))
    }

    /// GET with the operator token; an error unless 200.
    pub async fn get(&self, path: &str) -> Result<Value> {
        let (s, v) = self
            .api(&self.token, reqwest::Method::GET, path, None)
            .await?;
        if s != 200 {
            bail!("GET {path} → {s}: {v}");
        }
        Ok(v)
    }

    /// POST with the operator token; an error unless 2xx.
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

    /// A new enrollment link of `tenant`; its URL.
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

    /// A simulated iPad's configuration that trusts this server's CA.
    pub fn sim_config(&self) -> SimConfig {
        SimConfig {
            ca_pem: Some(self.ca_pem.clone()),
            ..SimConfig::default()
        }
    }

    /// `count` new simulated iPads of `config`, each enrolled through a new link of `tenant` and through its
    /// first command session (the inventory Orchard queues), one after the other.
    pub async fn enroll_devices(
        &self,
        config: &SimConfig,
        tenant: &str,
        count: usize,
    ) -> Result<Vec<SimDevice>> {
        let link = self.enrollment_link(tenant, None).await?;
        let mut fleet: Vec<SimDevice> = (0..count).map(|_| SimDevice::new_random(config)).collect();
        for device in fleet.iter_mut() {
            device.enroll(&link).await.context("enrollment")?;
            device.poll().await?;
        }
        Ok(fleet)
    }
}

/// Another `orchard serve` process on a server's storage; killed when dropped.
pub struct Node {
    pub base_url: String,
    child: Child,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An `orchard serve` process on `database_url` with its own `data_dir` (no token, no [`TestServer`]): for tests
/// of what several nodes do when they start together.
pub async fn spawn_node(data_dir: &Path, database_url: &str, extra: &[String]) -> Result<Node> {
    let (child, base_url) =
        spawn_serve(data_dir, &Some(database_url.to_owned()), extra, None).await?;
    Ok(Node { child, base_url })
}

fn storage_args(data_dir: &Path, database_url: &Option<String>) -> Vec<String> {
    let mut args = vec!["--data-dir".to_string(), data_dir.display().to_string()];
    if let Some(url) = database_url {
        args.push("--database-url".into());
        args.push(url.clone());
    }
    args
}

fn database_command(
    data_dir: &Path,
    database_url: &Option<String>,
    args: &[String],
) -> Result<Command> {
    let mut command = Command::new(orchard_binary()?);
    command
        .args(args)
        .args(storage_args(data_dir, database_url));
    Ok(command)
}

fn token_args(role: Role, tenant: Option<&str>, name: &str) -> Vec<String> {
    let mut args: Vec<String> = ["token", "create", "--role", role.as_str(), "--name", name]
        .iter()
        .map(|a| a.to_string())
        .collect();
    if let Some(tenant) = tenant {
        args.push("--tenant".into());
        args.push(tenant.to_owned());
    }
    args
}

/// Runs a command that prints a secret (and nothing else) on success.
fn run_for_secret(command: &mut Command) -> Result<String> {
    let out = command.output()?;
    if !out.status.success() {
        bail!(
            "token create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// Spawns `orchard serve` on 127.0.0.1:0 and reads where it listens from its first line.
async fn spawn_serve(
    data_dir: &Path,
    database_url: &Option<String>,
    extra: &[String],
    log: Option<(&str, &Path)>,
) -> Result<(Child, String)> {
    // ORCHARD_TEST_LOG widens what a test's servers log into its captured output (chasing a flaky test).
    let wider = std::env::var("ORCHARD_TEST_LOG").ok();
    let (filter, stderr) = match log {
        Some((filter, file)) => (filter, Stdio::from(std::fs::File::create(file)?)),
        None => (wider.as_deref().unwrap_or("warn"), Stdio::piped()),
    };
    // An ephemeral port unless the caller chose the address (a restart on the same port).
    let listen: &[&str] = if extra.iter().any(|a| a == "--listen") {
        &[]
    } else {
        &["--listen", "127.0.0.1:0"]
    };
    let mut child = Command::new(orchard_binary()?)
        .arg("serve")
        .args(storage_args(data_dir, database_url))
        .args(listen)
        .args(extra)
        .env("ORCHARD_LOG", filter)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()?;
    let stderr = child.stderr.take().map(relay_stderr);
    let stdout = child.stdout.take().context("no stdout")?;
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        line
    })
    .await?;
    let base_url = line
        .split_whitespace()
        .nth(2)
        .filter(|u| u.starts_with("https://"))
        .map(str::to_owned);
    match base_url {
        Some(base_url) => Ok((child, base_url)),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            let said = match stderr {
                Some(relay) => relay.join().unwrap_or_default(),
                None => "(its log went to a file)".to_owned(),
            };
            bail!("unexpected first line from orchard serve: {line:?}; it said:\n{said}")
        }
    }
}

/// Copies a server's stderr to this test's (where the test harness captures it, unlike an inherited
/// descriptor) and keeps its last lines, so a server that fails to start says why in the test's error.
fn relay_stderr(stderr: std::process::ChildStderr) -> std::thread::JoinHandle<String> {
    const KEPT: usize = 20;
    std::thread::spawn(move || {
        let mut last = std::collections::VecDeque::with_capacity(KEPT);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            eprintln!("{line}");
            if last.len() == KEPT {
                last.pop_front();
            }
            last.push_back(line);
        }
        Vec::from(last).join("\n")
    })
}
