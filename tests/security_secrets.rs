//! Attack tests for device secrets (security review findings 2–4), against the real `orchard` binary with a
//! simulated supervised iPad, on SQLite and on PostgreSQL:
//! - a viewer and helpdesk reading the command history (API and CLI) and the audit export see no bypass code,
//!   UnlockToken or profile password; operators and the tenant's admins see the bypass code where they did;
//! - the raw database rows (and on SQLite the database and WAL files byte for byte) hold none of them in
//!   plaintext;
//! - a captured signed poll replayed after a ClearPasscode was delivered gets nothing secret, also when the
//!   device answered NotNow, while the device itself got the command with the right UnlockToken;
//! - the SQLite database, its WAL and the key files are 0600, and a data directory Orchard creates is 0700.

use anyhow::{ensure, Context, Result};
use base64::Engine;
use orchard_sim::SimDevice;
use orchard_testkit::server::TestServer;
use orchard_testkit::Backend;
use orchard_types::{Clock, Role};
use serde_json::{json, Value};
use sqlx::Row;

/// A Wi-Fi profile whose password must never be readable at rest or through the API.
fn wifi_profile(password: &str) -> Vec<u8> {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0"><dict>
<key>PayloadType</key><string>Configuration</string>
<key>PayloadVersion</key><integer>1</integer>
<key>PayloadIdentifier</key><string>edu.example.wifi</string>
<key>PayloadUUID</key><string>9F6C1D0A-6C55-4C3B-9E7E-2B1D4B6F0A11</string>
<key>PayloadDisplayName</key><string>Campus Wi-Fi</string>
<key>PayloadContent</key><array><dict>
<key>PayloadType</key><string>com.apple.wifi.managed</string>
<key>PayloadVersion</key><integer>1</integer>
<key>PayloadIdentifier</key><string>edu.example.wifi.eduroam</string>
<key>PayloadUUID</key><string>0B0D6C9E-3A1F-4C52-8C7A-5D3E2F1A0B22</string>
<key>SSID_STR</key><string>campus</string>
<key>EncryptionType</key><string>WPA2</string>
<key>Password</key><string>{password}</string>
</dict></array>
</dict></plist>"#
    )
    .into_bytes()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The secrets of one run, each in the forms it could leak in.
struct Secrets {
    bypass_code: String,
    unlock_token: Vec<u8>,
    wifi_password: String,
}

impl Secrets {
    /// The first secret `bytes` contains, by name (raw, or base64 for the binary UnlockToken).
    fn found_in(&self, bytes: &[u8]) -> Option<&'static str> {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&self.unlock_token);
        let forms: [(&'static str, &[u8]); 4] = [
            ("bypass code", self.bypass_code.as_bytes()),
            ("unlock token", self.unlock_token.as_slice()),
            ("unlock token (base64)", b64.as_bytes()),
            ("wifi password", self.wifi_password.as_bytes()),
        ];
        for (name, secret) in forms {
            if contains(bytes, secret) {
                return Some(name);
            }
        }
        None
    }

    /// The secrets other than the bypass code: no API answer shows them to anyone.
    fn found_besides_bypass_code(&self, bytes: &[u8]) -> Option<&'static str> {
        self.found_in(bytes).filter(|name| *name != "bypass code")
    }
}

async fn history(server: &TestServer, token: &str, id: &str) -> Result<Value> {
    let (status, body) = server
        .api(
            token,
            reqwest::Method::GET,
            &format!("/api/v1/devices/{id}/commands?limit=100"),
            None,
        )
        .await?;
    ensure!(status == 200, "history: {status} {body}");
    Ok(body)
}

fn command_of<'a>(history: &'a Value, request_type: &str) -> Result<&'a Value> {
    history["items"]
        .as_array()
        .context("items")?
        .iter()
        .find(|c| c["request_type"] == request_type)
        .with_context(|| format!("no {request_type} in {history}"))
}

/// Every command of the device with its status, newest first.
async fn statuses(server: &TestServer, id: &str, request_type: &str) -> Result<Vec<String>> {
    Ok(history(server, &server.token, id).await?["items"]
        .as_array()
        .context("items")?
        .iter()
        .filter(|c| c["request_type"] == request_type)
        .map(|c| c["status"].as_str().unwrap_or_default().to_string())
        .collect())
}

async fn clear_passcode(server: &TestServer, id: &str, serial: &str) -> Result<()> {
    server
        .post(
            &format!("/api/v1/devices/{id}/commands"),
            json!({"type": "ClearPasscode", "confirm_serial": serial}),
        )
        .await?;
    Ok(())
}

/// Replays the captured signed Idle poll; the reply must carry no UnlockToken (nor any other secret).
async fn replay(ipad: &SimDevice, captured: &(Vec<u8>, String), secrets: &Secrets) -> Result<()> {
    let (status, reply) = ipad
        .send_command_raw(captured.0.clone(), Some(captured.1.clone()))
        .await?;
    ensure!(status == 200, "replay: {status}");
    ensure!(
        !contains(&reply, b"UnlockToken"),
        "a replayed poll got an UnlockToken: {}",
        String::from_utf8_lossy(&reply)
    );
    ensure!(
        secrets.found_in(&reply).is_none(),
        "a replayed poll got a secret"
    );
    Ok(())
}

/// The deadline of commands carrying a credential, as configured (the default is 15 minutes).
const SECRET_COMMAND_TTL_SECONDS: i64 = 600;

async fn scenario(backend: Backend) -> Result<()> {
    let ttl = [
        "--secret-command-ttl-seconds".to_string(),
        SECRET_COMMAND_TTL_SECONDS.to_string(),
    ];
    let Some(server) = TestServer::start_with(backend, &ttl).await? else {
        return Ok(());
    };
    let physics = server.create_tenant("Physics", "physics").await?;
    let link = server.enrollment_link(&physics, None).await?;
    let mut ipad = SimDevice::new_random(&server.sim_config());
    ipad.enroll(&link).await.context("enrollment")?;
    ipad.poll().await?;
    let detail = server.device_by_udid(&ipad.state.udid).await?;
    let id = detail["id"].as_str().context("device id")?.to_string();
    let serial = detail["serial_number"]
        .as_str()
        .context("serial")?
        .to_string();

    // The iPad escrows its bypass code and installs a Wi-Fi profile with a password.
    server
        .post(
            &format!("/api/v1/devices/{id}/commands"),
            json!({"type": "ActivationLockBypassCode"}),
        )
        .await?;
    let wifi_password = format!("wifi-{}", uuid::Uuid::new_v4().simple());
    let profile_b64 =
        base64::engine::general_purpose::STANDARD.encode(wifi_profile(&wifi_password));
    let queued = server
        .post(
            &format!("/api/v1/devices/{id}/commands"),
            json!({"type": "InstallProfile", "payload": profile_b64}),
        )
        .await?;
    ensure!(queued["status"] == "queued", "{queued}");
    ipad.poll().await?;
    let secrets = Secrets {
        bypass_code: ipad
            .state
            .activation_lock_bypass_code
            .clone()
            .context("a supervised simulated iPad has a bypass code")?,
        unlock_token: ipad.state.unlock_token.clone(),
        wifi_password,
    };
    ensure!(
        !secrets.unlock_token.is_empty(),
        "the iPad escrowed no UnlockToken"
    );
    ensure!(
        statuses(&server, &id, "InstallProfile").await? == ["acknowledged"],
        "the sealed profile reached the device intact"
    );

    // Replay: a captured signed poll (the protocol has no nonce; an Idle body never changes).
    let captured = ipad.signed_idle()?;

    // 1. The device runs a ClearPasscode: it gets the right UnlockToken (it acknowledges only then)...
    clear_passcode(&server, &id, &serial).await?;
    let queued = command_of(
        &history(&server, &server.token, &id).await?,
        "ClearPasscode",
    )?
    .clone();
    ensure!(
        queued["expires_at"].is_string(),
        "a command carrying a credential expires soon: {queued}"
    );
    ipad.poll().await?;
    ensure!(
        statuses(&server, &id, "ClearPasscode").await? == ["acknowledged"],
        "ClearPasscode with the injected UnlockToken"
    );
    // ...and a replay afterwards gets nothing secret.
    replay(&ipad, &captured, &secrets).await?;

    // 2. Delivered but not yet answered (the attacker replays while the device works on it): the first
    // delivery carries the token, the replay does not.
    clear_passcode(&server, &id, &serial).await?;
    let (status, first) = ipad
        .send_command_raw(captured.0.clone(), Some(captured.1.clone()))
        .await?;
    ensure!(status == 200, "first delivery: {status}");
    ensure!(
        contains(&first, b"ClearPasscode") && contains(&first, b"UnlockToken"),
        "the first delivery carries the UnlockToken: {}",
        String::from_utf8_lossy(&first)
    );
    replay(&ipad, &captured, &secrets).await?;
    // The device itself does not get it again either: it would have to be queued anew.
    let session = ipad.poll().await?;
    ensure!(
        !session
            .handled
            .iter()
            .any(|h| h.request_type == "ClearPasscode"),
        "{session:?}"
    );

    // 3. The device puts it off (NotNow): not resent, not replayable.
    clear_passcode(&server, &id, &serial).await?;
    ipad.answer_not_now(1);
    ipad.poll().await?;
    replay(&ipad, &captured, &secrets).await?;
    let session = ipad.poll().await?;
    ensure!(
        !session
            .handled
            .iter()
            .any(|h| h.request_type == "ClearPasscode"),
        "{session:?}"
    );
    ensure!(
        statuses(&server, &id, "ClearPasscode").await? == ["not_now", "sent", "acknowledged"],
        "{:?}",
        statuses(&server, &id, "ClearPasscode").await?
    );

    // Who sees what in the command history.
    let helpdesk = server.create_token(Role::Helpdesk, None, "helpdesk")?;
    let viewer = server.create_token(Role::Viewer, Some(&physics), "physics-viewer")?;
    let admin = server.create_token(Role::Admin, Some(&physics), "physics-admin")?;
    for (role, token) in [("viewer", &viewer), ("helpdesk", &helpdesk)] {
        let body = history(&server, token, &id).await?;
        let text = body.to_string();
        ensure!(
            secrets.found_in(text.as_bytes()).is_none(),
            "{role} reads a secret in the command history: {text}"
        );
        let escrow = command_of(&body, "ActivationLockBypassCode")?;
        ensure!(
            escrow["result"].is_null() && escrow["result_redacted"] == true,
            "{role}: {escrow}"
        );
        // The CLI shows what the API shows.
        let out = server
            .client_command(&["device", "commands", &id, "--json"])?
            .env("ORCHARD_TOKEN", token)
            .output()?;
        ensure!(out.status.success(), "{role} cli: {out:?}");
        ensure!(
            secrets.found_in(&out.stdout).is_none(),
            "{role} reads a secret through the CLI"
        );
    }
    for (role, token) in [("operator", &server.token), ("admin", &admin)] {
        let body = history(&server, token, &id).await?;
        let escrow = command_of(&body, "ActivationLockBypassCode")?;
        ensure!(
            escrow["result"]["data"] == secrets.bypass_code.as_str()
                && escrow["result_redacted"] == false,
            "{role} sees the bypass code it may use: {escrow}"
        );
        ensure!(
            secrets
                .found_besides_bypass_code(body.to_string().as_bytes())
                .is_none(),
            "{role}: payloads are never shown"
        );
    }
    // The audit log (and its export) never held any of them.
    let (status, audit) = server
        .api(
            &server.token,
            reqwest::Method::GET,
            "/api/v1/audit.csv",
            None,
        )
        .await?;
    ensure!(status == 200, "audit export: {status}");
    ensure!(
        secrets.found_in(audit.to_string().as_bytes()).is_none(),
        "the audit export holds a secret"
    );

    // At rest: the rows hold none of them in plaintext.
    let mut db = server.connect_database().await?;
    let deadlines = sqlx::query(
        "SELECT expires_at - queued_at AS ttl, deliver_once FROM commands WHERE request_type = 'ClearPasscode'",
    )
    .fetch_all(&mut db)
    .await?;
    ensure!(deadlines.len() == 3);
    for row in deadlines {
        ensure!(row.try_get::<i64, _>("ttl")? == SECRET_COMMAND_TTL_SECONDS);
        ensure!(row.try_get::<i64, _>("deliver_once")? == 1);
    }
    let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
    for row in sqlx::query("SELECT request_type, payload, result, payload_sealed FROM commands")
        .fetch_all(&mut db)
        .await?
    {
        let request_type: String = row.try_get("request_type")?;
        let payload: Vec<u8> = row.try_get("payload")?;
        if request_type == "InstallProfile" {
            ensure!(row.try_get::<i64, _>("payload_sealed")? == 1);
            ensure!(
                !contains(&payload, b"InstallProfile"),
                "the profile is stored readable"
            );
        }
        blobs.push((format!("{request_type} payload"), payload));
        let result: Option<Vec<u8>> = row.try_get("result")?;
        blobs.push((format!("{request_type} result"), result.unwrap_or_default()));
    }
    for row in sqlx::query("SELECT unlock_token FROM channels")
        .fetch_all(&mut db)
        .await?
    {
        let token: Option<Vec<u8>> = row.try_get("unlock_token")?;
        ensure!(
            token.is_some(),
            "the channel keeps its UnlockToken (sealed)"
        );
        blobs.push(("channel".into(), token.unwrap_or_default()));
    }
    for (what, bytes) in &blobs {
        ensure!(
            secrets.found_in(bytes).is_none(),
            "{what} holds the {} in plaintext",
            secrets.found_in(bytes).unwrap_or_default()
        );
    }

    if backend == Backend::Sqlite {
        // Byte for byte: the database and its write-ahead log.
        for file in ["orchard.db", "orchard.db-wal"] {
            let path = server.data_dir.join(file);
            if let Ok(bytes) = std::fs::read(&path) {
                ensure!(
                    secrets.found_in(&bytes).is_none(),
                    "{file} holds the {} in plaintext",
                    secrets.found_in(&bytes).unwrap_or_default()
                );
            }
        }
        file_modes(&server).await?;
    }
    Ok(())
}

#[cfg(unix)]
async fn file_modes(server: &TestServer) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &std::path::Path| -> Result<u32> {
        Ok(std::fs::metadata(path)
            .with_context(|| path.display().to_string())?
            .permissions()
            .mode()
            & 0o777)
    };
    for file in [
        "orchard.db",
        "orchard.db-wal",
        "orchard.db-shm",
        "orchard.db.migrate-lock",
        "kek",
        "tls.key",
    ] {
        let path = server.data_dir.join(file);
        ensure!(mode(&path)? == 0o600, "{file}: {:o}", mode(&path)?);
    }
    // Key files an older version left readable are the owner's alone once a node has started.
    for file in ["kek", "tls.key"] {
        std::fs::set_permissions(
            server.data_dir.join(file),
            std::fs::Permissions::from_mode(0o644),
        )?;
    }
    drop(server.start_node(&[]).await?);
    for file in ["kek", "tls.key"] {
        let path = server.data_dir.join(file);
        ensure!(
            mode(&path)? == 0o600,
            "{file} after start: {:o}",
            mode(&path)?
        );
    }
    // A data directory Orchard creates itself (here by a database-level command) is the owner's alone, and so
    // is the database it creates there.
    let fresh = tempfile::tempdir()?;
    let data_dir = fresh.path().join("new").join("orchard");
    let out = std::process::Command::new(orchard_testkit::server::orchard_binary()?)
        .args(["token", "create", "--role", "operator", "--name", "modes"])
        .arg("--data-dir")
        .arg(&data_dir)
        .output()?;
    ensure!(out.status.success(), "token create: {out:?}");
    ensure!(
        mode(&data_dir)? == 0o700,
        "data dir: {:o}",
        mode(&data_dir)?
    );
    let db = data_dir.join("orchard.db");
    ensure!(mode(&db)? == 0o600, "orchard.db: {:o}", mode(&db)?);
    Ok(())
}

#[cfg(not(unix))]
async fn file_modes(_server: &TestServer) -> Result<()> {
    Ok(())
}

/// A database an earlier Orchard wrote: the UnlockToken, a queued ClearPasscode carrying it and a bypass-code
/// result in plaintext, listed by migration 0013. The next node to start seals them before it serves; the
/// device then still clears its passcode (the resealed token is injected) and the admin still reads the code.
async fn legacy_scenario(backend: Backend) -> Result<()> {
    let Some(server) = TestServer::start(backend).await? else {
        return Ok(());
    };
    let physics = server.create_tenant("Physics", "physics").await?;
    let link = server.enrollment_link(&physics, None).await?;
    let mut ipad = SimDevice::new_random(&server.sim_config());
    ipad.enroll(&link).await.context("enrollment")?;
    ipad.poll().await?;
    let detail = server.device_by_udid(&ipad.state.udid).await?;
    let id = detail["id"].as_str().context("device id")?.to_string();
    server
        .post(
            &format!("/api/v1/devices/{id}/commands"),
            json!({"type": "ActivationLockBypassCode"}),
        )
        .await?;
    ipad.poll().await?;
    let code = ipad
        .state
        .activation_lock_bypass_code
        .clone()
        .context("bypass code")?;
    let unlock_token = ipad.state.unlock_token.clone();
    let escrow = command_of(
        &history(&server, &server.token, &id).await?,
        "ActivationLockBypassCode",
    )?
    .clone();
    let escrow_uuid = escrow["command_uuid"].as_str().context("uuid")?.to_string();

    // Write the rows as the earlier version had them.
    let mut db = server.connect_database().await?;
    let udid = ipad.state.udid.clone();
    sqlx::query("UPDATE channels SET unlock_token = NULL WHERE id = $1")
        .bind(&udid)
        .execute(&mut db)
        .await?;
    sqlx::query("INSERT INTO legacy_unlock_tokens (channel_id, unlock_token) VALUES ($1, $2)")
        .bind(&udid)
        .bind(unlock_token.clone())
        .execute(&mut db)
        .await?;
    let mut report = plist::Dictionary::new();
    report.insert("UDID".into(), udid.clone().into());
    report.insert("Status".into(), "Acknowledged".into());
    report.insert("CommandUUID".into(), escrow_uuid.clone().into());
    report.insert("ActivationLockBypassCode".into(), code.clone().into());
    let mut plaintext_report = Vec::new();
    plist::to_writer_xml(&mut plaintext_report, &plist::Value::Dictionary(report))?;
    sqlx::query("UPDATE commands SET result = $2, result_sealed = 0 WHERE command_uuid = $1")
        .bind(&escrow_uuid)
        .bind(plaintext_report)
        .execute(&mut db)
        .await?;
    let clear_uuid = orchard_types::CommandUuid::new_random();
    let plaintext_clear = orchard_protocol::commands::Command::ClearPasscode {
        unlock_token: Some(unlock_token.clone()),
    }
    .encode(&clear_uuid);
    sqlx::query(
        "INSERT INTO commands (command_uuid, device_id, tenant_id, channel_id, request_type, status, payload, \
         queued_at) VALUES ($1, $2, $3, $4, 'ClearPasscode', 'queued', $5, $6)",
    )
    .bind(clear_uuid.as_str())
    .bind(&id)
    .bind(&physics)
    .bind(&udid)
    .bind(plaintext_clear)
    .bind(orchard_types::SystemClock.now().0)
    .execute(&mut db)
    .await?;
    for uuid in [escrow_uuid.as_str(), clear_uuid.as_str()] {
        sqlx::query("INSERT INTO legacy_plaintext_commands (command_uuid) VALUES ($1)")
            .bind(uuid)
            .execute(&mut db)
            .await?;
    }
    // Even before resealing, a viewer gets the plaintext result redacted (judged by its content).
    let viewer = server.create_token(Role::Viewer, Some(&physics), "physics-viewer")?;
    let before = history(&server, &viewer, &id).await?;
    ensure!(
        !before.to_string().contains(&code),
        "a plaintext legacy result reaches a viewer: {before}"
    );

    // A node starts: it seals everything before it listens.
    let _node = server.start_node(&[]).await?;
    for table in ["legacy_unlock_tokens", "legacy_plaintext_commands"] {
        let left: i64 = sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}"))
            .fetch_one(&mut db)
            .await?
            .try_get("n")?;
        ensure!(left == 0, "{table} still lists {left} rows");
    }
    let secrets = Secrets {
        bypass_code: code.clone(),
        unlock_token: unlock_token.clone(),
        wifi_password: String::new(),
    };
    let channel: Option<Vec<u8>> = sqlx::query("SELECT unlock_token FROM channels WHERE id = $1")
        .bind(&udid)
        .fetch_one(&mut db)
        .await?
        .try_get("unlock_token")?;
    let channel = channel.context("the UnlockToken is kept")?;
    ensure!(
        secrets.found_in(&channel).is_none(),
        "UnlockToken still plaintext"
    );
    for row in sqlx::query("SELECT payload, result FROM commands")
        .fetch_all(&mut db)
        .await?
    {
        let payload: Vec<u8> = row.try_get("payload")?;
        let result: Option<Vec<u8>> = row.try_get("result")?;
        ensure!(
            secrets.found_in(&payload).is_none(),
            "a payload is still plaintext"
        );
        ensure!(
            secrets.found_in(&result.unwrap_or_default()).is_none(),
            "a result is still plaintext"
        );
    }

    // Everything still works: the device clears its passcode with the resealed token, once.
    let session = ipad.poll().await?;
    ensure!(
        session
            .handled
            .iter()
            .any(|h| h.request_type == "ClearPasscode" && h.uuid == clear_uuid.as_str()),
        "{session:?}"
    );
    ensure!(
        statuses(&server, &id, "ClearPasscode").await? == ["acknowledged"],
        "{:?}",
        statuses(&server, &id, "ClearPasscode").await?
    );
    let escrow = command_of(
        &history(&server, &server.token, &id).await?,
        "ActivationLockBypassCode",
    )?
    .clone();
    ensure!(escrow["result"]["data"] == code.as_str(), "{escrow}");
    Ok(())
}

orchard_testkit::backend_tests! {
    secrets_are_sealed_redacted_and_delivered_once => scenario;
    plaintext_from_an_earlier_version_is_sealed_at_start => legacy_scenario;
}
