//! Issue 11, point 5, on the real binary with SQLite and PostgreSQL: the device CA, the server CA, the profile
//! signer and the data key live in the database sealed under the key-encryption key (KEK). Two `orchard serve`
//! processes with separate data directories on one database serve the same CA and both open the push
//! certificate (uploaded on one, pushed with by the other); a node with the wrong KEK, or none, refuses to start
//! and creates nothing; an older version's key files are imported by the first start, so devices keep their CA.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use orchard_apns::fake::random_topic;
use orchard_apns::DeviceToken;
use orchard_pki::seal::DataKey;
use orchard_pki::{CertificateAuthority, Identity};
use orchard_sim::SimDevice;
use orchard_testkit::apple::ApplePush;
use orchard_testkit::server::{orchard_binary, spawn_node, TestServer};
use orchard_testkit::{Backend, TestDatabase};
use orchard_types::{Clock, SystemClock};
use serde_json::{json, Value};

/// An API call with the operator token against `base` (any node: they all chain to the same server CA).
async fn call(
    server: &TestServer,
    base: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, Value)> {
    let mut req = server
        .http
        .request(method, format!("{base}{path}"))
        .bearer_auth(&server.token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await?;
    Ok((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

async fn ca_cert(server: &TestServer, base: &str) -> Result<Vec<u8>> {
    let resp = server
        .http
        .get(format!("{base}/scep?operation=GetCACert"))
        .send()
        .await?;
    ensure!(resp.status() == 200, "GetCACert: {}", resp.status());
    Ok(resp.bytes().await?.to_vec())
}

fn pem_der(pem: &[u8]) -> Result<Vec<u8>> {
    Ok(openssl::x509::X509::from_pem(pem)?.to_der()?)
}

async fn two_nodes(backend: Backend) -> Result<()> {
    let apple = ApplePush::start(SystemClock.now()).await?;
    let Some(mut server) = TestServer::start_with(backend, &apple.serve_args()).await? else {
        return Ok(());
    };
    // The push certificate is uploaded on the first node: its key is sealed under the shared data key.
    let topic = random_topic()?;
    let cert = apple.certificate(&topic, SystemClock.now(), 365)?;
    let (status, body) = server
        .api(
            &server.token,
            reqwest::Method::PUT,
            "/api/v1/push-certificate",
            Some(json!({
                "certificate_pem": String::from_utf8(cert.cert_pem())?,
                "private_key_pem": String::from_utf8(cert.key_pem().expose().clone())?,
            })),
        )
        .await?;
    ensure!(status == 200, "upload: {status} {body}");

    // The second node has its own data directory and only the KEK of the first.
    let other_dir = tempfile::tempdir()?;
    let mut extra = apple.serve_args();
    extra.push("--kek-file".into());
    extra.push(server.kek_path().display().to_string());
    let node = server.start_node_in(other_dir.path(), &extra).await?;
    let first = ca_cert(&server, &server.base_url).await?;
    let second = ca_cert(&server, &node.base_url).await?;
    ensure!(
        first == second && !first.is_empty(),
        "both nodes serve the same CA"
    );
    ensure!(
        first == pem_der(&server.device_ca_pem)?,
        "and it is the device CA"
    );
    ensure!(
        std::fs::read(other_dir.path().join("server-ca.pem"))? == server.ca_pem,
        "the second node's server CA is the first's"
    );
    for file in [
        "kek",
        "ca.key",
        "server-ca.key",
        "profile-signer.key",
        "data.key",
    ] {
        ensure!(
            !other_dir.path().join(file).exists(),
            "{file} was written on the second node"
        );
    }
    let (status, body) = call(
        &server,
        &node.base_url,
        reqwest::Method::GET,
        "/api/v1/push-certificate",
        None,
    )
    .await?;
    ensure!(
        status == 200 && body["topic"] == topic.as_str(),
        "the second node opened the push certificate: {status} {body}"
    );

    // With the first node gone, the second pushes to a device enrolled through it: it really holds the key.
    server.stop();
    let (status, tenant) = call(
        &server,
        &node.base_url,
        reqwest::Method::POST,
        "/api/v1/tenants",
        Some(json!({"name": "Physics", "code": "physics"})),
    )
    .await?;
    ensure!(status == 201 || status == 200, "tenant: {status} {tenant}");
    let tenant = tenant["id"].as_str().context("tenant id")?;
    let (status, link) = call(
        &server,
        &node.base_url,
        reqwest::Method::POST,
        &format!("/api/v1/tenants/{tenant}/enrollment-links"),
        Some(json!({"name": "node two", "max_uses": null})),
    )
    .await?;
    ensure!(status == 201 || status == 200, "link: {status} {link}");
    let link = link["url"].as_str().context("link url")?;
    let mut device = SimDevice::new_random(&server.sim_config());
    let mut token_bytes = uuid::Uuid::new_v4().as_bytes().to_vec();
    token_bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    device.state.push_token = token_bytes;
    let mut pushes = apple
        .apns
        .subscribe_token(&DeviceToken::from_bytes(&device.state.push_token)?);
    device.enroll(link).await.context("enrollment")?;
    ensure!(
        device.state.topic == topic.as_str(),
        "enrolled under the push topic"
    );
    // The inventory queued at enrollment is pushed (a generous bound: the assertion is that it arrives).
    tokio::time::timeout(Duration::from_secs(120), pushes.recv())
        .await
        .context("no push from the second node")?
        .context("push subscription closed")?;
    drop(node);
    Ok(())
}

/// Runs `orchard` with `args` (and `env`) expecting it to refuse: its exit code and stderr. A process that is
/// still running after a minute is killed and the test fails (it should have refused at once).
fn run_refused(args: &[String], env: &[(&str, &str)]) -> Result<(i32, String)> {
    let mut command = Command::new(orchard_binary()?);
    command
        .args(args)
        .env("ORCHARD_LOG", "warn")
        .env_remove("ORCHARD_KEK")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait()? {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                std::io::Read::read_to_string(&mut pipe, &mut stderr)?;
            }
            return Ok((status.code().unwrap_or(-1), stderr));
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("orchard {args:?} kept running instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn serve_args(data_dir: &Path, database_url: &str) -> Vec<String> {
    [
        "serve",
        "--data-dir",
        &data_dir.display().to_string(),
        "--database-url",
        database_url,
        "--listen",
        "127.0.0.1:0",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect()
}

async fn refusals(backend: Backend) -> Result<()> {
    let Some(server) = TestServer::start(backend).await? else {
        return Ok(());
    };
    let shared = server.shared_database_url();
    let ca_before = ca_cert(&server, &server.base_url).await?;
    let scratch = tempfile::tempdir()?;
    let wrong = scratch.path().join("wrong.kek");
    let wrong_text = openssl::base64::encode_block(DataKey::generate()?.to_bytes().expose());
    std::fs::write(&wrong, format!("{wrong_text}\n"))?;

    // A wrong KEK, from a file or from the environment.
    let node_dir = scratch.path().join("node");
    let mut args = serve_args(&node_dir, &shared);
    args.extend(["--kek-file".to_owned(), wrong.display().to_string()]);
    let (code, stderr) = run_refused(&args, &[])?;
    ensure!(
        code != 0 && stderr.contains("wrong key-encryption key"),
        "wrong KEK file: exit {code}, {stderr}"
    );
    let (code, stderr) = run_refused(
        &serve_args(&node_dir, &shared),
        &[("ORCHARD_KEK", &wrong_text)],
    )?;
    ensure!(
        code != 0 && stderr.contains("wrong key-encryption key"),
        "wrong ORCHARD_KEK: exit {code}, {stderr}"
    );
    // No KEK at all, against a database that holds keys: the node refuses and makes no KEK or CA of its own.
    let (code, stderr) = run_refused(&serve_args(&node_dir, &shared), &[])?;
    ensure!(
        code != 0 && stderr.contains("this node has none"),
        "no KEK: exit {code}, {stderr}"
    );
    ensure!(
        !node_dir.join("kek").exists() && !node_dir.join("ca.pem").exists(),
        "a refusing node wrote keys"
    );
    // A KEK that is not 32 bytes is named as such.
    let (code, stderr) = run_refused(&serve_args(&node_dir, &shared), &[("ORCHARD_KEK", "short")])?;
    ensure!(
        code != 0 && stderr.contains("not 32 bytes"),
        "malformed KEK: exit {code}, {stderr}"
    );
    // A database-level command from another working directory uses the database's keys or refuses; it never
    // makes a CA of its own.
    let status_args: Vec<String> = [
        "push-cert",
        "status",
        "--data-dir",
        &node_dir.display().to_string(),
        "--database-url",
        &shared,
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let (code, stderr) = run_refused(&status_args, &[])?;
    ensure!(
        code != 0 && stderr.contains("this node has none"),
        "command without KEK: exit {code}, {stderr}"
    );
    let right = std::fs::read_to_string(server.kek_path())?;
    let out = Command::new(orchard_binary()?)
        .args(&status_args)
        .env("ORCHARD_KEK", right.trim())
        .output()?;
    ensure!(out.status.success(), "command with ORCHARD_KEK: {out:?}");
    ensure!(
        std::fs::read(node_dir.join("ca.pem"))? == server.device_ca_pem,
        "the command used the database's CA"
    );

    // On the default SQLite layout, losing the data directory's KEK file refuses too (the database holds keys).
    if backend == Backend::Sqlite {
        let kek = std::fs::read(server.kek_path())?;
        std::fs::remove_file(server.kek_path())?;
        let mut args = vec!["serve".to_owned(), "--data-dir".to_owned()];
        args.push(server.data_dir.display().to_string());
        args.extend(["--listen".to_owned(), "127.0.0.1:0".to_owned()]);
        let (code, stderr) = run_refused(&args, &[])?;
        ensure!(
            code != 0 && stderr.contains("this node has none"),
            "SQLite without its KEK file: exit {code}, {stderr}"
        );
        ensure!(!server.kek_path().exists(), "no new KEK was made");
        std::fs::write(server.kek_path(), kek)?;
    }

    // Still one set of keys, and the server still serves its CA.
    let mut db = server.connect_database().await?;
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM server_keys")
        .fetch_one(&mut db)
        .await?;
    ensure!(count == 5, "one key set: {count} rows");
    ensure!(ca_cert(&server, &server.base_url).await? == ca_before);
    Ok(())
}

/// What an older version left in the data directory: the four key pairs and the data key as files.
struct OldLayout {
    ca: CertificateAuthority,
    server_ca: CertificateAuthority,
    data_key: Vec<u8>,
}

fn write_old_layout(dir: &Path) -> Result<OldLayout> {
    let now = SystemClock.now();
    let ca = CertificateAuthority::generate("Orchard Device CA", now, 3650)?;
    let server_ca = CertificateAuthority::generate_server_ca(
        "Orchard Server CA",
        &["localhost".to_owned()],
        &["127.0.0.1".parse()?],
        now,
        3650,
    )?;
    let signer = server_ca.issue_signing_identity("Orchard Profile Signing", now, 397)?;
    let data_key = DataKey::generate()?.to_bytes().expose().to_vec();
    let write = |name: &str, id: &Identity| -> Result<()> {
        std::fs::write(dir.join(format!("{name}.pem")), id.cert_pem())?;
        std::fs::write(dir.join(format!("{name}.key")), id.key_pem().expose())?;
        Ok(())
    };
    write("ca", ca.identity())?;
    write("server-ca", server_ca.identity())?;
    write("profile-signer", &signer)?;
    std::fs::write(dir.join("data.key"), &data_key)?;
    Ok(OldLayout {
        ca,
        server_ca,
        data_key,
    })
}

async fn upgrade_from_files(backend: Backend) -> Result<()> {
    let mut old = None;
    let Some(mut server) = TestServer::start_prepared(backend, &[], |dir| {
        old = Some(write_old_layout(dir)?);
        Ok(())
    })
    .await?
    else {
        return Ok(());
    };
    let old = old.context("old layout")?;
    ensure!(
        server.device_ca_pem == old.ca.cert_pem(),
        "the device CA of the files is kept"
    );
    ensure!(
        server.ca_pem == old.server_ca.cert_pem(),
        "the server CA of the files is kept"
    );
    ensure!(
        server.stored_key("device_ca").await? == *old.ca.identity().key_pem().expose(),
        "the device CA's key moved into the database"
    );
    ensure!(
        server.stored_key("data_key").await? == old.data_key,
        "the data key moved into the database"
    );

    let tenant = server.create_tenant("Physics", "physics").await?;
    let mut fleet = server
        .enroll_devices(&server.sim_config(), &tenant, 1)
        .await?;
    let device = fleet.first_mut().context("device")?;

    // The old key files go; the restarted server runs on the keys in the database, and the device enrolled
    // under the imported CA still checks in and runs commands.
    for file in ["ca.key", "server-ca.key", "profile-signer.key", "data.key"] {
        std::fs::remove_file(server.data_dir.join(file))?;
    }
    server.restart(&[]).await?;
    ensure!(std::fs::read(server.data_dir.join("ca.pem"))? == old.ca.cert_pem());
    let id = server.device_by_udid(&device.state.udid).await?["id"]
        .as_str()
        .context("device id")?
        .to_owned();
    server
        .post(
            &format!("/api/v1/devices/{id}/commands"),
            json!({"type": "DeviceLock", "message": "after the upgrade"}),
        )
        .await?;
    device.poll().await.context("check-in after the upgrade")?;
    ensure!(device.state.locked, "the device ran the command");
    Ok(())
}

/// Two nodes starting at once on an empty database, with the KEK from configuration: one set of keys is stored
/// and both serve it (creation is insert-if-absent in one transaction, then both read back what is stored).
async fn racing_first_starts(backend: Backend) -> Result<()> {
    orchard_testkit::install_crypto_provider();
    let Some(database) = TestDatabase::create(backend).await? else {
        return Ok(());
    };
    // Migrated beforehand: the race under test is the keys', not the schema's.
    let (store, _) = database.store().await?;
    store.close().await;
    let url = database
        .binary_database_url()
        .unwrap_or_else(|| format!("sqlite://{}", database.dir().join("orchard.db").display()));
    let kek = database.dir().join("shared.kek");
    std::fs::write(
        &kek,
        openssl::base64::encode_block(DataKey::generate()?.to_bytes().expose()),
    )?;
    let (first_dir, second_dir) = (database.dir().join("first"), database.dir().join("second"));
    let extra = vec!["--kek-file".to_owned(), kek.display().to_string()];
    let (first, second) = tokio::join!(
        spawn_node(&first_dir, &url, &extra),
        spawn_node(&second_dir, &url, &extra)
    );
    let (first, second) = (first?, second?);
    let ca = std::fs::read(first_dir.join("ca.pem"))?;
    ensure!(
        ca == std::fs::read(second_dir.join("ca.pem"))?,
        "one device CA"
    );
    let server_ca = std::fs::read(first_dir.join("server-ca.pem"))?;
    ensure!(
        server_ca == std::fs::read(second_dir.join("server-ca.pem"))?,
        "one server CA"
    );
    let mut db = database.connect().await?;
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM server_keys")
        .fetch_one(&mut db)
        .await?;
    ensure!(count == 5, "one key set: {count} rows");
    // Both answer over TLS chaining to that server CA, with that device CA.
    let http = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&server_ca)?)
        .build()?;
    for node in [&first, &second] {
        let got = http
            .get(format!("{}/scep?operation=GetCACert", node.base_url))
            .send()
            .await?
            .bytes()
            .await?;
        ensure!(
            got.to_vec() == pem_der(&ca)?,
            "{} serves the one CA",
            node.base_url
        );
    }
    Ok(())
}

orchard_testkit::backend_tests! {
    two_nodes_share_ca_and_push_certificate => two_nodes;
    wrong_or_missing_kek_refuses => refusals;
    file_keys_are_imported_and_kept => upgrade_from_files;
    racing_first_starts_end_with_one_ca => racing_first_starts;
}
