//! Interop: micromdm's `scepclient` (Debian package `scep`, installed by `scripts/test.sh`) obtains a device
//! certificate from the real Orchard `/scep` with a challenge from a downloaded enrollment profile, and is
//! refused with a made-up challenge.

use std::process::Command;

use anyhow::{ensure, Context, Result};
use orchard_protocol::profile::EnrollmentProfile;
use orchard_testkit::server::TestServer;
use orchard_testkit::Backend;

fn scepclient(
    server: &TestServer,
    dir: &std::path::Path,
    challenge: &str,
) -> Result<std::process::Output> {
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &server.ca_pem)?;
    Command::new("scepclient")
        .args([
            "-server-url",
            &server.url("/scep"),
            "-challenge",
            challenge,
            "-cn",
            "interop-ipad",
            "-private-key",
            &dir.join("key.pem").display().to_string(),
            "-certificate",
            &dir.join("cert.pem").display().to_string(),
        ])
        // Go's TLS stack reads extra trust roots from SSL_CERT_FILE: trust Orchard's server CA, nothing else.
        .env("SSL_CERT_FILE", &ca_file)
        .output()
        .context("running scepclient: install the Debian package `scep` (scripts/test.sh does)")
}

async fn scenario(backend: Backend) -> Result<()> {
    let Some(server) = TestServer::start(backend).await? else {
        return Ok(());
    };
    let tenant = server.create_tenant("Interop", "interop").await?;
    let link = server.enrollment_link(&tenant, None).await?;
    // The link's own URL is a landing page; its button downloads the profile from `<link>/profile`.
    let signed = server
        .http
        .get(format!("{link}/profile"))
        .send()
        .await?
        .bytes()
        .await?;
    let ca_der = openssl::x509::X509::from_pem(&server.ca_pem)?.to_der()?;
    let profile = EnrollmentProfile::parse(&orchard_pki::signature::verify_signed_profile(
        &signed, &ca_der,
    )?)?;

    let tmp = tempfile::tempdir()?;
    let out = scepclient(&server, tmp.path(), &profile.scep.challenge)?;
    ensure!(
        out.status.success(),
        "scepclient failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let cert_pem =
        std::fs::read(tmp.path().join("cert.pem")).context("scepclient wrote no certificate")?;
    let cert = openssl::x509::X509::from_pem(&cert_pem)?;
    let ca = openssl::x509::X509::from_pem(&server.device_ca_pem)?;
    ensure!(
        cert.verify(ca.public_key()?.as_ref())?,
        "certificate not signed by Orchard's device CA"
    );
    let cn = cert
        .subject_name()
        .entries_by_nid(openssl::nid::Nid::COMMONNAME)
        .next()
        .and_then(|e| e.data().to_string().ok());
    ensure!(cn.as_deref() == Some("interop-ipad"), "subject CN {cn:?}");

    // A challenge Orchard never handed out is refused (scepclient exits non-zero, no certificate written).
    let tmp2 = tempfile::tempdir()?;
    let out = scepclient(&server, tmp2.path(), "made-up-challenge")?;
    ensure!(!out.status.success(), "a made-up challenge was accepted");
    ensure!(!tmp2.path().join("cert.pem").exists());
    Ok(())
}

orchard_testkit::backend_tests! {
    scepclient_obtains_a_certificate_from_orchard => scenario;
}
