//! The profile library through the real binary (SQLite and PostgreSQL): a .mobileconfig uploaded as a plist
//! and one signed by someone else (unwrapped, signer shown; a tampered signature refused), one built from
//! JSON, validation errors naming their keys (422), a second version keeping its secret through "<sealed>",
//! installing that version on a simulated iPad (the installed version known once it acknowledges, and again
//! from its ProfileList), removing it; tenants' isolation and the viewer's read-only access; and no secret
//! ever coming back from the API or lying in the database in plaintext.

use anyhow::{ensure, Context, Result};
use orchard_testkit::server::TestServer;
use orchard_testkit::Backend;
use orchard_types::{Role, UnixTime};
use reqwest::Method;
use serde_json::{json, Value};

const WIFI_SECRET: &str = "wifi-secret-Kx81";
const JSON_SECRET: &str = "vpn-shared-Qz42";
const SIGNED_SECRET: &str = "mail-pass-Lw07";

fn wifi_mobileconfig(identifier: &str, ssid: &str, password: &str) -> Vec<u8> {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0"><dict>
  <key>PayloadType</key><string>Configuration</string>
  <key>PayloadVersion</key><integer>1</integer>
  <key>PayloadIdentifier</key><string>{identifier}</string>
  <key>PayloadUUID</key><string>0C6AD2A5-5F86-4E0D-9D64-0D1A0F5E0001</string>
  <key>PayloadDisplayName</key><string>Campus Wi-Fi</string>
  <key>PayloadContent</key><array><dict>
    <key>PayloadType</key><string>com.apple.wifi.managed</string>
    <key>PayloadVersion</key><integer>1</integer>
    <key>PayloadIdentifier</key><string>{identifier}.wifi</string>
    <key>PayloadUUID</key><string>0C6AD2A5-5F86-4E0D-9D64-0D1A0F5E0002</string>
    <key>SSID_STR</key><string>{ssid}</string>
    <key>EncryptionType</key><string>WPA2</string>
    <key>Password</key><string>{password}</string>
    <key>AutoJoin</key><true/>
  </dict></array>
</dict></plist>"#
    )
    .into_bytes()
}

fn mail_mobileconfig() -> Vec<u8> {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict>
  <key>PayloadType</key><string>Configuration</string>
  <key>PayloadVersion</key><integer>1</integer>
  <key>PayloadIdentifier</key><string>edu.example.mail</string>
  <key>PayloadUUID</key><string>5B1E0D0C-0000-4000-8000-000000000001</string>
  <key>PayloadContent</key><array><dict>
    <key>PayloadType</key><string>com.apple.mail.managed</string>
    <key>PayloadVersion</key><integer>1</integer>
    <key>PayloadIdentifier</key><string>edu.example.mail.account</string>
    <key>PayloadUUID</key><string>5B1E0D0C-0000-4000-8000-000000000002</string>
    <key>EmailAccountType</key><string>EmailTypeIMAP</string>
    <key>IncomingMailServerHostName</key><string>imap.example.edu</string>
    <key>IncomingMailServerAuthentication</key><string>EmailAuthPassword</string>
    <key>IncomingPassword</key><string>{SIGNED_SECRET}</string>
    <key>OutgoingMailServerHostName</key><string>smtp.example.edu</string>
    <key>OutgoingMailServerAuthentication</key><string>EmailAuthPassword</string>
  </dict></array>
</dict></plist>"#
    )
    .into_bytes()
}

async fn upload(
    server: &TestServer,
    token: &str,
    path: &str,
    bytes: Vec<u8>,
) -> Result<(u16, Value)> {
    let resp = server
        .http
        .post(server.url(path))
        .bearer_auth(token)
        .header("content-type", "application/x-apple-aspen-config")
        .body(bytes)
        .send()
        .await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

fn no_secret_in(what: &str, text: &str) -> Result<()> {
    for secret in [WIFI_SECRET, JSON_SECRET, SIGNED_SECRET] {
        ensure!(!text.contains(secret), "{what} shows {secret}: {text}");
    }
    Ok(())
}

async fn scenario(backend: Backend) -> Result<()> {
    let Some(server) = TestServer::start(backend).await? else {
        return Ok(());
    };
    let physics = server.create_tenant("Physics", "physics").await?;
    let music = server.create_tenant("Music", "music").await?;
    let mut ipads = server
        .enroll_devices(&server.sim_config(), &physics, 1)
        .await?;
    let ipad = &mut ipads[0];
    let device_id = server.device_by_udid(&ipad.state.udid).await?["id"]
        .as_str()
        .context("device id")?
        .to_owned();
    let admin = server.create_token(Role::Admin, Some(&physics), "physics-admin")?;
    let viewer = server.create_token(Role::Viewer, Some(&physics), "physics-viewer")?;
    let music_admin = server.create_token(Role::Admin, Some(&music), "music-admin")?;
    let base = format!("/api/v1/tenants/{physics}/profiles");
    let mut answers = String::new();

    // 1. An unsigned .mobileconfig.
    let (status, wifi) = upload(
        &server,
        &admin,
        &base,
        wifi_mobileconfig("edu.example.wifi", "eduroam", WIFI_SECRET),
    )
    .await?;
    ensure!(status == 201, "upload → {status}: {wifi}");
    answers.push_str(&wifi.to_string());
    let wifi_id = wifi["profile"]["id"].as_str().context("id")?.to_owned();
    ensure!(
        wifi["profile"]["identifier"] == "edu.example.wifi",
        "{wifi}"
    );
    ensure!(
        wifi["content"]["PayloadContent"][0]["Password"] == "<sealed>",
        "{wifi}"
    );
    ensure!(wifi["versions"][0]["sealed_secrets"] == 1, "{wifi}");
    ensure!(wifi["versions"][0]["source"] == "upload", "{wifi}");
    let v1_uuid = wifi["versions"][0]["payload_uuid"]
        .as_str()
        .context("uuid")?
        .to_owned();
    ensure!(
        v1_uuid != "0C6AD2A5-5F86-4E0D-9D64-0D1A0F5E0001",
        "a new PayloadUUID per version"
    );

    // 2. A profile signed elsewhere: unwrapped, its signer shown; tampered, refused.
    let signer = orchard_pki::Identity::generate_self_signed_rsa(
        "Example Profile Signer",
        UnixTime(1_800_000_000),
        365,
    )?;
    let signed = orchard_pki::signature::sign_profile(&mail_mobileconfig(), &signer, &[])?;
    let (status, mail) = upload(&server, &admin, &base, signed.clone()).await?;
    ensure!(status == 201, "signed upload → {status}: {mail}");
    answers.push_str(&mail.to_string());
    let version = &mail["versions"][0];
    ensure!(version["source"] == "signed_upload", "{mail}");
    ensure!(
        version["signer"]["subject"]
            .as_str()
            .is_some_and(|s| s.contains("CN=Example Profile Signer")),
        "{mail}"
    );
    ensure!(version["signer"]["expires_at"].is_string(), "{mail}");
    let mut tampered = signed.clone();
    let at = tampered
        .windows(b"imap.example.edu".len())
        .position(|w| w == b"imap.example.edu")
        .context("content inside the signature")?;
    tampered[at] = b'I';
    let (status, refused) = upload(&server, &admin, &base, tampered).await?;
    ensure!(
        status == 400
            && refused["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("signature does not verify")),
        "tampered → {status}: {refused}"
    );

    // 3. JSON: errors name their keys; a valid one is created.
    let bad = json!({
        "name": "VPN", "identifier": "edu.example.vpn",
        "payloads": [
            {"PayloadType": "com.apple.wifi.managed", "SSID_STR": "x", "EncryptionType": "WPA4", "Colour": "red"},
            {"PayloadType": "com.apple.wifi.managed", "SSID_STR": 42},
            {"PayloadType": "com.example.nothing"}
        ]
    });
    let (status, problem) = server.api(&admin, Method::POST, &base, Some(bad)).await?;
    ensure!(
        status == 422 && problem["error"]["code"] == "validation_failed",
        "{status}: {problem}"
    );
    let errors: Vec<String> = problem["error"]["errors"]
        .as_array()
        .context("errors")?
        .iter()
        .map(|e| {
            format!(
                "{}: {}",
                e["path"].as_str().unwrap_or(""),
                e["message"].as_str().unwrap_or("")
            )
        })
        .collect();
    for expected in [
        "com.apple.wifi.managed[0].EncryptionType: \"WPA4\" is not one of WEP, WPA, WPA2, WPA3, Any, None",
        "com.apple.wifi.managed[0].Colour: unknown key",
        "com.apple.wifi.managed[1].SSID_STR: expected string, found integer",
        "com.example.nothing[2]: unknown PayloadType \"com.example.nothing\"",
    ] {
        ensure!(errors.iter().any(|e| e == expected), "{expected} missing from {errors:?}");
    }
    let good = json!({
        "name": "Library VPN", "identifier": "edu.example.vpn",
        "payloads": [{
            "PayloadType": "com.apple.vpn.managed", "UserDefinedName": "Library", "VPNType": "IPSec",
            "IPSec": {"RemoteAddress": "vpn.example.edu", "AuthenticationMethod": "SharedSecret",
                      "SharedSecret": base64_of(JSON_SECRET)}
        }]
    });
    let (status, vpn) = server.api(&admin, Method::POST, &base, Some(good)).await?;
    ensure!(status == 201, "json → {status}: {vpn}");
    answers.push_str(&vpn.to_string());
    ensure!(
        vpn["content"]["PayloadContent"][0]["IPSec"]["SharedSecret"] == "<sealed>",
        "{vpn}"
    );
    // Identifiers are unique per tenant (and against the global ones).
    let (status, _) = upload(
        &server,
        &admin,
        &base,
        wifi_mobileconfig("edu.example.wifi", "other", "x"),
    )
    .await?;
    ensure!(status == 409, "duplicate identifier → {status}");

    // 4. A second version from JSON keeps the Wi-Fi password through "<sealed>".
    let mut payload = wifi["content"]["PayloadContent"][0].clone();
    payload["SSID_STR"] = json!("eduroam-5G");
    let (status, v2) = server
        .api(
            &admin,
            Method::POST,
            &format!("{base}/{wifi_id}/versions"),
            Some(json!({"name": "Campus Wi-Fi", "payloads": [payload]})),
        )
        .await?;
    ensure!(
        status == 201 && v2["profile"]["latest_version"] == 2,
        "v2 → {status}: {v2}"
    );
    answers.push_str(&v2.to_string());
    let v2_uuid = v2["versions"][0]["payload_uuid"]
        .as_str()
        .context("uuid")?
        .to_owned();
    ensure!(
        v2_uuid != v1_uuid && v2["profile"]["identifier"] == "edu.example.wifi",
        "{v2}"
    );
    // An upload with another identifier is not a version of this profile.
    let (status, problem) = upload(
        &server,
        &admin,
        &format!("{base}/{wifi_id}/versions"),
        wifi_mobileconfig("edu.example.other", "x", "y"),
    )
    .await?;
    ensure!(status == 422, "other identifier → {status}: {problem}");

    // 5. Isolation: the viewer reads but changes nothing; another tenant sees nothing.
    let (status, _) = server
        .api(&viewer, Method::GET, &format!("{base}/{wifi_id}"), None)
        .await?;
    ensure!(status == 200, "viewer reads → {status}");
    let (status, v) = upload(
        &server,
        &viewer,
        &base,
        wifi_mobileconfig("edu.example.viewer", "x", "y"),
    )
    .await?;
    ensure!(status == 403, "viewer creates → {status}: {v}");
    let (status, v) = server
        .api(
            &viewer,
            Method::POST,
            &format!("{base}/{wifi_id}/install"),
            Some(json!({"device_id": device_id})),
        )
        .await?;
    ensure!(status == 403, "viewer installs → {status}: {v}");
    for path in [
        format!("{base}/{wifi_id}"),
        format!("/api/v1/tenants/{music}/profiles/{wifi_id}"),
    ] {
        let (status, v) = server.api(&music_admin, Method::GET, &path, None).await?;
        ensure!(
            status == 404 && v["error"]["code"] == "not_found",
            "music reads {path} → {status}: {v}"
        );
    }
    let (status, list) = server
        .api(
            &music_admin,
            Method::GET,
            &format!("/api/v1/tenants/{music}/profiles"),
            None,
        )
        .await?;
    ensure!(
        status == 200 && list["items"] == json!([]),
        "music's list → {list}"
    );
    let (status, v) = server
        .api(
            &music_admin,
            Method::POST,
            &format!("/api/v1/tenants/{music}/profiles/{wifi_id}/install"),
            Some(json!({"device_id": device_id})),
        )
        .await?;
    ensure!(
        status == 404,
        "music installs physics' profile → {status}: {v}"
    );

    // 6. Install version 2 on the iPad: the device gets Orchard's signed profile, and once it acknowledges,
    // version 2 is what it has.
    let (status, queued) = server
        .api(
            &admin,
            Method::POST,
            &format!("{base}/{wifi_id}/install"),
            Some(json!({"device_id": device_id})),
        )
        .await?;
    ensure!(
        status == 202 && queued["version"] == 2,
        "install → {status}: {queued}"
    );
    let devices_path = format!("{base}/{wifi_id}/devices");
    let pending = server.get(&devices_path).await?;
    ensure!(
        pending["items"][0]["pending_action"] == "install",
        "{pending}"
    );
    let session = ipad.poll().await?;
    ensure!(
        session
            .handled
            .iter()
            .any(|h| h.request_type == "InstallProfile"),
        "{:?}",
        session.handled
    );
    let on_device = ipad
        .state
        .installed_profiles
        .iter()
        .find(|p| p.identifier == "edu.example.wifi")
        .context("installed on the iPad")?;
    ensure!(on_device.uuid == v2_uuid, "the iPad has {}", on_device.uuid);
    ensure!(
        !on_device.signer_certificates.is_empty(),
        "Orchard signs what it installs"
    );
    let known = server.get(&devices_path).await?;
    let row = &known["items"][0];
    ensure!(
        row["installed_version"] == 2
            && row["installed_payload_uuid"] == v2_uuid
            && row["pending_action"].is_null(),
        "{known}"
    );
    // ProfileList from inventory says the same.
    server
        .post(
            &format!("/api/v1/devices/{device_id}/commands"),
            json!({"type": "ProfileList"}),
        )
        .await?;
    ipad.poll().await?;
    let known = server.get(&devices_path).await?;
    ensure!(known["items"][0]["installed_version"] == 2, "{known}");

    // 7. Remove it.
    let (status, queued) = server
        .api(
            &admin,
            Method::POST,
            &format!("{base}/{wifi_id}/remove"),
            Some(json!({"device_id": device_id})),
        )
        .await?;
    ensure!(
        status == 202 && queued["request_type"] == "RemoveProfile",
        "remove → {status}: {queued}"
    );
    ipad.poll().await?;
    ensure!(
        ipad.state
            .installed_profiles
            .iter()
            .all(|p| p.identifier != "edu.example.wifi"),
        "removed from the iPad"
    );
    let known = server.get(&devices_path).await?;
    ensure!(
        known["items"][0]["installed_version"].is_null()
            && known["items"][0]["installed_payload_uuid"].is_null(),
        "{known}"
    );

    // 7b. Version 1 on request; a profile removed on the device by hand shows as not installed after ProfileList.
    let (status, queued) = server
        .api(
            &admin,
            Method::POST,
            &format!("{base}/{wifi_id}/install"),
            Some(json!({"device_id": device_id, "version": 1})),
        )
        .await?;
    ensure!(
        status == 202 && queued["version"] == 1,
        "install v1 → {status}: {queued}"
    );
    ipad.poll().await?;
    let known = server.get(&devices_path).await?;
    ensure!(known["items"][0]["installed_version"] == 1, "{known}");
    ipad.state
        .installed_profiles
        .retain(|p| p.identifier != "edu.example.wifi");
    server
        .post(
            &format!("/api/v1/devices/{device_id}/commands"),
            json!({"type": "ProfileList"}),
        )
        .await?;
    ipad.poll().await?;
    let known = server.get(&devices_path).await?;
    ensure!(
        known["items"][0]["installed_payload_uuid"].is_null(),
        "drift not seen: {known}"
    );
    // Removing what the device no longer has: the device's error is kept.
    server
        .api(
            &admin,
            Method::POST,
            &format!("{base}/{wifi_id}/remove"),
            Some(json!({"device_id": device_id})),
        )
        .await?;
    ipad.poll().await?;
    let known = server.get(&devices_path).await?;
    ensure!(
        !known["items"][0]["last_error"].is_null() && known["items"][0]["pending_action"].is_null(),
        "{known}"
    );

    // 8. Global profiles: operators make them, every tenant sees them and cannot change them.
    let (status, global) = upload(
        &server,
        &server.token,
        "/api/v1/profiles",
        wifi_mobileconfig("edu.example.global-wifi", "campus", WIFI_SECRET),
    )
    .await?;
    ensure!(
        status == 201 && global["profile"]["scope"] == "global",
        "global → {status}: {global}"
    );
    answers.push_str(&global.to_string());
    let global_id = global["profile"]["id"].as_str().context("id")?.to_owned();
    let (status, v) = upload(
        &server,
        &admin,
        "/api/v1/profiles",
        wifi_mobileconfig("edu.example.admin-global", "x", "y"),
    )
    .await?;
    ensure!(
        status == 403,
        "admin makes a global profile → {status}: {v}"
    );
    let (_, music_list) = server
        .api(
            &music_admin,
            Method::GET,
            &format!("/api/v1/tenants/{music}/profiles"),
            None,
        )
        .await?;
    ensure!(
        music_list["items"][0]["id"] == global_id.as_str(),
        "{music_list}"
    );
    let (status, v) = server
        .api(
            &music_admin,
            Method::DELETE,
            &format!("/api/v1/tenants/{music}/profiles/{global_id}"),
            None,
        )
        .await?;
    ensure!(
        status == 403,
        "a tenant archives a global profile → {status}: {v}"
    );

    // 8b. The CLI: a JSON file becomes a profile; its version shows the secret sealed.
    let input_dir = tempfile::tempdir()?;
    let file = input_dir.path().join("eap.json");
    std::fs::write(
        &file,
        json!({"name": "EAP Wi-Fi", "identifier": "edu.example.eap", "payloads": [{
            "PayloadType": "com.apple.wifi.managed", "SSID_STR": "staff", "EncryptionType": "WPA2",
            "EAPClientConfiguration": {"AcceptEAPTypes": [25], "UserName": "staff", "UserPassword": JSON_SECRET}
        }]})
        .to_string(),
    )?;
    let run = |args: &[&str]| -> Result<String> {
        let out = server.client_command(args)?.output()?;
        ensure!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    };
    let created = run(&[
        "profile",
        "upload",
        file.to_str().context("path")?,
        "--tenant",
        &physics,
        "--json",
    ])?;
    let created: Value = serde_json::from_str(&created)?;
    let eap_id = created["profile"]["id"]
        .as_str()
        .context("eap id")?
        .to_owned();
    let listed = run(&["profile", "list", "--tenant", &physics])?;
    ensure!(
        listed.contains("edu.example.eap") && listed.contains("edu.example.wifi"),
        "{listed}"
    );
    let shown = run(&[
        "profile",
        "show",
        &eap_id,
        "--tenant",
        &physics,
        "--version",
        "1",
    ])?;
    ensure!(
        shown.contains("<sealed>") && shown.contains("UserPassword"),
        "{shown}"
    );
    answers.push_str(&created.to_string());
    answers.push_str(&shown);
    answers.push_str(&run(&[
        "profile", "devices", &wifi_id, "--tenant", &physics,
    ])?);

    // 9. Secrets never come back, and are not stored in plaintext.
    for path in [
        format!("{base}/{wifi_id}"),
        format!("{base}/{wifi_id}/versions/1"),
        format!("{base}/{wifi_id}/versions/2"),
        format!("/api/v1/profiles/{global_id}"),
        base.clone(),
        format!("/api/v1/devices/{device_id}/commands"),
        "/api/v1/audit?limit=1000".to_string(),
    ] {
        let v = server.get(&path).await?;
        answers.push_str(&v.to_string());
    }
    no_secret_in("the API", &answers)?;
    let mut db = server.connect_database().await?;
    for (table, columns) in [
        (
            "profile_versions",
            "redacted_json || COALESCE(display_name, '') || payload_types",
        ),
        ("profiles", "name || identifier"),
        ("audit_events", "action || COALESCE(details, '')"),
    ] {
        use sqlx::Row;
        let rows = sqlx::query(&format!("SELECT {columns} AS t FROM {table}"))
            .fetch_all(&mut db)
            .await?;
        for row in rows {
            let text: String = row.try_get("t")?;
            no_secret_in(table, &text)?;
        }
    }
    if backend == Backend::Sqlite {
        // Every byte on disk: database, WAL and anything else in the data directory.
        for entry in std::fs::read_dir(&server.data_dir)? {
            let path = entry?.path();
            if path.is_file() {
                let bytes = std::fs::read(&path)?;
                for secret in [WIFI_SECRET, JSON_SECRET, SIGNED_SECRET] {
                    let b64 = base64_of(secret);
                    ensure!(
                        !contains(&bytes, secret.as_bytes()) && !contains(&bytes, b64.as_bytes()),
                        "{} holds {secret}",
                        path.display()
                    );
                }
            }
        }
    }
    Ok(())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn base64_of(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

orchard_testkit::backend_tests! {
    profile_library => scenario;
}
