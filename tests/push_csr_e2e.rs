//! End to end: Orchard makes the push key and CSR (the key never leaves the server), a stand-in "Apple" CA
//! issues the push certificate for it the way the portal shapes them, and the certificate is uploaded ALONE
//! (API and CLI); the status then shows the certificate's topic. A certificate whose key Orchard does not hold
//! is refused with 400; non-operators may not make CSRs; with an MDM vendor identity the vendor-signed request
//! comes back and verifies.

use anyhow::{ensure, Context, Result};
use openssl::hash::MessageDigest;
use openssl::x509::X509Req;
use orchard_apns::fake::random_topic;
use orchard_pki::CertificateAuthority;
use orchard_testkit::apple::ApplePush;
use orchard_testkit::server::TestServer;
use orchard_testkit::Backend;
use orchard_types::{Clock, Role, SystemClock, UnixTime};
use serde_json::json;

const DAY: i64 = 86_400;

fn now() -> UnixTime {
    SystemClock.now()
}

fn orchard_cli(server: &TestServer, args: &[&str]) -> Result<String> {
    let out = server
        .database_command(args)?
        .env("ORCHARD_LOG", "warn")
        .output()?;
    ensure!(
        out.status.success(),
        "orchard {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

async fn scenario(backend: Backend) -> Result<()> {
    // A local APNs server, so the uploaded certificate's client never reaches for Apple's service.
    let apple = ApplePush::start(now()).await?;
    let dir = tempfile::tempdir()?;
    let Some(server) = TestServer::start_with(backend, &apple.serve_args()).await? else {
        return Ok(());
    };

    // The API makes the CSR; the answer carries no key.
    let csr = server
        .post("/api/v1/push-certificate/csr", json!({}))
        .await?;
    let csr_pem = csr["csr_pem"].as_str().context("csr_pem")?;
    ensure!(!csr_pem.contains("PRIVATE"), "{csr}");
    ensure!(csr["vendor_signed_request_b64"].is_null(), "{csr}");

    // "Apple" issues the certificate; it is uploaded alone.
    let topic = random_topic()?;
    let certificate = apple.issue_for_csr(csr_pem.as_bytes(), &topic, now())?;
    let (status, body) = server
        .api(
            &server.token,
            reqwest::Method::PUT,
            "/api/v1/push-certificate",
            Some(json!({"certificate_pem": String::from_utf8(certificate)?})),
        )
        .await?;
    ensure!(
        status == 200,
        "upload of the certificate alone: {status} {body}"
    );
    let shown = server.get("/api/v1/push-certificate").await?;
    ensure!(shown["topic"] == topic.as_str(), "{shown}");
    ensure!(
        shown["expired"] == false && shown["days_left"].as_i64() >= Some(360),
        "{shown}"
    );

    // A certificate whose key Orchard never made is refused with 400 and a reason.
    let foreign = apple.certificate(&topic, now(), 365)?;
    let (status, body) = server
        .api(
            &server.token,
            reqwest::Method::PUT,
            "/api/v1/push-certificate",
            Some(json!({"certificate_pem": String::from_utf8(foreign.cert_pem())?})),
        )
        .await?;
    ensure!(
        status == 400,
        "unknown key must be refused: {status} {body}"
    );
    let message = body["error"]["message"].as_str().unwrap_or("");
    ensure!(message.contains("no stored key matches"), "{body}");
    ensure!(
        server.get("/api/v1/push-certificate").await?["topic"] == topic.as_str(),
        "a refused upload changed nothing"
    );

    // No body at all means no vendor; half a vendor identity is a 400.
    let (status, body) = server
        .api(
            &server.token,
            reqwest::Method::POST,
            "/api/v1/push-certificate/csr",
            None,
        )
        .await?;
    ensure!(
        status == 201 && body["csr_pem"].is_string(),
        "{status} {body}"
    );
    let (status, body) = server
        .api(
            &server.token,
            reqwest::Method::POST,
            "/api/v1/push-certificate/csr",
            Some(json!({"vendor_key_pem": "x"})),
        )
        .await?;
    ensure!(status == 400, "half a vendor identity: {status} {body}");

    // Only operators make CSRs.
    let helpdesk = server.create_token(Role::Helpdesk, None, "e2e-helpdesk")?;
    let (status, body) = server
        .api(
            &helpdesk,
            reqwest::Method::POST,
            "/api/v1/push-certificate/csr",
            Some(json!({})),
        )
        .await?;
    ensure!(
        status == 403,
        "helpdesk must not make a csr: {status} {body}"
    );

    // With an MDM vendor identity (a stand-in WWDR chain), the vendor-signed request comes back.
    let wwdr = CertificateAuthority::generate("Test WWDR", UnixTime(now().0 - DAY), 3650)?;
    let apple_root =
        CertificateAuthority::generate("Test Apple Root CA", UnixTime(now().0 - DAY), 3650)?;
    let vendor =
        wwdr.issue_signing_identity("MDM Vendor: Orchard Test", UnixTime(now().0 - DAY), 365)?;
    let mut chain = vendor.cert_pem();
    chain.extend(wwdr.cert_pem());
    chain.extend(apple_root.cert_pem());
    let signed = server
        .post(
            "/api/v1/push-certificate/csr",
            json!({
                "vendor_cert_chain_pem": String::from_utf8(chain.clone())?,
                "vendor_key_pem": String::from_utf8(vendor.key_pem().expose().clone())?,
            }),
        )
        .await?;
    let request = orchard_pki::push_csr::decode_push_certificate_request(
        signed["vendor_signed_request_b64"]
            .as_str()
            .context("vendor_signed_request_b64")?,
    )?;
    let signed_csr = X509Req::from_pem(signed["csr_pem"].as_str().context("csr_pem")?.as_bytes())?;
    ensure!(
        request.csr_der == signed_csr.to_der()?,
        "the request carries the csr"
    );
    let vendor_public = vendor.x509().public_key()?;
    let mut verifier = openssl::sign::Verifier::new(MessageDigest::sha256(), &vendor_public)?;
    verifier.update(&request.csr_der)?;
    ensure!(verifier.verify(&request.signature)?, "vendor signature");

    // The CLI: `push-cert csr` writes the CSR and the request (never a key); `upload --cert` without --key.
    let out_dir = dir.path().join("csr-out");
    let vendor_cert_file = dir.path().join("vendor-chain.pem");
    let vendor_key_file = dir.path().join("vendor.key");
    std::fs::write(&vendor_cert_file, &chain)?;
    std::fs::write(&vendor_key_file, vendor.key_pem().expose())?;
    orchard_cli(
        &server,
        &[
            "push-cert",
            "csr",
            "--out",
            &out_dir.display().to_string(),
            "--vendor-cert",
            &vendor_cert_file.display().to_string(),
            "--vendor-key",
            &vendor_key_file.display().to_string(),
        ],
    )?;
    let mut written: Vec<String> = std::fs::read_dir(&out_dir)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    written.sort();
    ensure!(written == ["push-request.b64", "push.csr"], "{written:?}");
    for file in &written {
        let text = std::fs::read_to_string(out_dir.join(file))?;
        ensure!(!text.contains("PRIVATE KEY"), "{file} holds a key");
    }
    let cli_request = orchard_pki::push_csr::decode_push_certificate_request(
        &std::fs::read_to_string(out_dir.join("push-request.b64"))?,
    )?;
    let cli_csr = std::fs::read(out_dir.join("push.csr"))?;
    ensure!(cli_request.csr_der == X509Req::from_pem(&cli_csr)?.to_der()?);
    let renewed = dir.path().join("renewed.pem");
    std::fs::write(&renewed, apple.issue_for_csr(&cli_csr, &topic, now())?)?;
    let printed = orchard_cli(
        &server,
        &[
            "push-cert",
            "upload",
            "--cert",
            &renewed.display().to_string(),
        ],
    )?;
    let status: serde_json::Value = serde_json::from_str(&printed)?;
    ensure!(status["topic"] == topic.as_str(), "{printed}");
    Ok(())
}

orchard_testkit::backend_tests! {
    push_csr_and_certificate_only_upload => scenario;
}
