//! Issue 11, point 7 (bootstrap token), on the real binary with SQLite and PostgreSQL: a supervised simulated
//! iPad escrows its bootstrap token with SetBootstrapToken while enrolling (the profile advertises
//! `com.apple.mdm.bootstraptoken`), GetBootstrapToken answers it back, also while the device is held in Setup
//! Assistant; another device's identity cannot read it; the database holds it sealed only; an empty
//! SetBootstrapToken deletes it and GetBootstrapToken then answers none.

use anyhow::{ensure, Context, Result};
use orchard_protocol::checkin::{CheckinMessage, GetBootstrapToken, SetBootstrapToken};
use orchard_protocol::profile::EnrollmentProfile;
use orchard_sim::SimDevice;
use orchard_testkit::server::TestServer;
use orchard_testkit::Backend;
use orchard_types::Udid;
use sqlx::Row;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// A check-in message about `udid`, signed by `signer`'s identity: status and body.
async fn signed_checkin(signer: &SimDevice, message: CheckinMessage) -> Result<(u16, Vec<u8>)> {
    let body = message.encode();
    let signature = signer.sign(&body)?;
    Ok(signer.send_checkin_raw(body, Some(signature)).await?)
}

async fn scenario(backend: Backend) -> Result<()> {
    let Some(server) = TestServer::start(backend).await? else {
        return Ok(());
    };
    let tenant = server.create_tenant("Physics", "physics").await?;

    // The profile says Orchard takes bootstrap tokens.
    let link = server.enrollment_link(&tenant, None).await?;
    let signed = server
        .http
        .get(format!("{link}/profile"))
        .send()
        .await?
        .bytes()
        .await?;
    let content = orchard_pki::signature::verify_signed_profile(
        &signed,
        &openssl::x509::X509::from_pem(&server.ca_pem)?.to_der()?,
    )?;
    let profile = EnrollmentProfile::parse(&content)?;
    ensure!(
        profile
            .mdm
            .server_capabilities
            .iter()
            .any(|c| c == "com.apple.mdm.bootstraptoken"),
        "capability advertised: {:?}",
        profile.mdm.server_capabilities
    );

    let mut fleet = server
        .enroll_devices(&server.sim_config(), &tenant, 2)
        .await?;
    let [a, b] = &mut fleet[..] else {
        anyhow::bail!("two devices");
    };
    ensure!(a.state.supervised, "the simulated iPads are supervised");
    let token = a.state.bootstrap_token.clone();
    ensure!(
        !token.is_empty(),
        "the iPad escrowed a token while enrolling"
    );
    ensure!(token != b.state.bootstrap_token, "each iPad has its own");

    // Round trip: the device gets its own token back, also while held in Setup Assistant.
    ensure!(
        a.get_bootstrap_token().await? == token,
        "GetBootstrapToken answers the escrowed token"
    );
    let udid_a = Udid::parse(&a.state.udid)?;
    let (status, body) = signed_checkin(
        a,
        CheckinMessage::GetBootstrapToken(GetBootstrapToken {
            udid: udid_a.clone(),
            awaiting_configuration: true,
        }),
    )
    .await?;
    ensure!(status == 200, "awaiting configuration: {status}");
    let reply: plist::Dictionary = plist::from_bytes(&body)?;
    ensure!(
        reply.get("BootstrapToken").and_then(plist::Value::as_data) == Some(&token[..]),
        "awaiting configuration: answered the token"
    );

    // Another device's identity cannot read it.
    let (status, body) = signed_checkin(
        b,
        CheckinMessage::GetBootstrapToken(GetBootstrapToken {
            udid: udid_a.clone(),
            awaiting_configuration: false,
        }),
    )
    .await?;
    ensure!(
        status == 403,
        "another identity asking for a's token: {status}"
    );
    ensure!(
        !contains(&body, &token)
            && !contains(&body, openssl::base64::encode_block(&token).as_bytes()),
        "the refusal carries no token"
    );
    // Nor overwrite it.
    let (status, _) = signed_checkin(
        b,
        CheckinMessage::SetBootstrapToken(SetBootstrapToken {
            udid: udid_a.clone(),
            bootstrap_token: b"not a's token".to_vec(),
            awaiting_configuration: false,
        }),
    )
    .await?;
    ensure!(
        status == 403,
        "another identity setting a's token: {status}"
    );
    ensure!(
        a.get_bootstrap_token().await? == token,
        "a's token is unchanged"
    );

    // Stored sealed: no row of the table holds a token in the clear.
    let mut db = server.connect_database().await?;
    let rows = sqlx::query("SELECT token_sealed FROM device_bootstrap_tokens")
        .fetch_all(&mut db)
        .await?;
    ensure!(rows.len() == 2, "one token per device: {}", rows.len());
    for row in &rows {
        let sealed: Vec<u8> = row.try_get("token_sealed")?;
        ensure!(
            !contains(&sealed, &token) && !contains(&sealed, &b.state.bootstrap_token),
            "a token is stored in the clear"
        );
    }
    if backend == Backend::Sqlite {
        for file in ["orchard.db", "orchard.db-wal"] {
            if let Ok(bytes) = std::fs::read(server.data_dir.join(file)) {
                ensure!(
                    !contains(&bytes, &token),
                    "{file} holds the token in the clear"
                );
            }
        }
    }

    // An empty SetBootstrapToken deletes it: GetBootstrapToken then answers a dictionary without one.
    let (status, _) = signed_checkin(
        a,
        CheckinMessage::SetBootstrapToken(SetBootstrapToken {
            udid: udid_a.clone(),
            bootstrap_token: Vec::new(),
            awaiting_configuration: false,
        }),
    )
    .await?;
    ensure!(status == 200, "deleting: {status}");
    ensure!(a.get_bootstrap_token().await?.is_empty(), "deleted");
    ensure!(
        b.get_bootstrap_token().await? == b.state.bootstrap_token,
        "b's token stays"
    );
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM device_bootstrap_tokens")
        .fetch_one(&mut db)
        .await
        .context("count")?;
    ensure!(count == 1, "the row is gone: {count}");
    Ok(())
}

orchard_testkit::backend_tests! {
    bootstrap_token_round_trip_sealed_and_own_device_only => scenario;
}
