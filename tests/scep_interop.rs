//! SCEP per RFC 8894 against the real Orchard `/scep` over HTTPS, on SQLite and PostgreSQL:
//! - an independent client, micromdm's `scepclient` (Debian package `scep`, installed by `scripts/test.sh`),
//!   obtains a device certificate with a challenge from a downloaded enrollment profile, gets the same
//!   certificate again when it retries with the same key, and is refused with a made-up challenge;
//! - the client half of `orchard_pki::scep` (what the simulator uses) enrolls signing with the requested key and
//!   with a separate throwaway key, with AES-256 + SHA-256 and other advertised choices; a retry answers the same
//!   certificate, CertPoll (GetCertInitial) is answered, the same transactionID for another key is refused;
//! - every refusal of a decodable request (RSA-1024, EC P-256, Blowfish, MD5, a broken signature, a made-up
//!   challenge) is HTTP 200 with a CertRep FAILURE and the right failInfo, and leaves the one-time challenge
//!   usable; only undecodable bytes are HTTP 400.

use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::symm::Cipher;
use openssl::x509::X509;
use orchard_pki::scep::{self, CertRepOutcome, ClientChoices, FailInfo, PendingRequest};
use orchard_protocol::profile::EnrollmentProfile;
use orchard_testkit::server::TestServer;
use orchard_testkit::Backend;
use orchard_types::UnixTime;

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

/// Downloads an enrollment profile through a fresh link of a fresh tenant and returns its one-time challenge.
async fn fresh_challenge(server: &TestServer, code: &str) -> Result<String> {
    let tenant = server.create_tenant(code, code).await?;
    let link = server.enrollment_link(&tenant, None).await?;
    // The link's own URL is a landing page; its button downloads the profile from `<link>/profile`.
    let signed = server
        .http
        .get(format!("{link}/profile"))
        .send()
        .await?
        .bytes()
        .await?;
    let ca_der = X509::from_pem(&server.ca_pem)?.to_der()?;
    let profile = EnrollmentProfile::parse(&orchard_pki::signature::verify_signed_profile(
        &signed, &ca_der,
    )?)?;
    Ok(profile.scep.challenge)
}

async fn scenario(backend: Backend) -> Result<()> {
    let Some(server) = TestServer::start(backend).await? else {
        return Ok(());
    };
    let challenge = fresh_challenge(&server, "interop").await?;

    let tmp = tempfile::tempdir()?;
    let out = scepclient(&server, tmp.path(), &challenge)?;
    ensure!(
        out.status.success(),
        "scepclient failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let cert_pem =
        std::fs::read(tmp.path().join("cert.pem")).context("scepclient wrote no certificate")?;
    let cert = X509::from_pem(&cert_pem)?;
    let ca = X509::from_pem(&server.device_ca_pem)?;
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

    // The client retries after a lost answer: same key (so the same transactionID), the spent challenge. It
    // gets the same certificate, not a refusal and not a second one.
    std::fs::remove_file(tmp.path().join("cert.pem"))?;
    let out = scepclient(&server, tmp.path(), &challenge)?;
    ensure!(
        out.status.success(),
        "scepclient retry failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let again = X509::from_pem(&std::fs::read(tmp.path().join("cert.pem"))?)?;
    ensure!(
        again.to_der()? == cert.to_der()?,
        "the retry got another certificate"
    );

    // A challenge Orchard never handed out is refused (scepclient exits non-zero, no certificate written).
    let tmp2 = tempfile::tempdir()?;
    let out = scepclient(&server, tmp2.path(), "made-up-challenge")?;
    ensure!(!out.status.success(), "a made-up challenge was accepted");
    ensure!(!tmp2.path().join("cert.pem").exists());
    Ok(())
}

/// A SCEP client over HTTPS built on `orchard_pki::scep`'s client half.
struct Client<'a> {
    server: &'a TestServer,
    ca_der: Vec<u8>,
}

impl<'a> Client<'a> {
    fn new(server: &'a TestServer) -> Result<Self> {
        Ok(Client {
            server,
            ca_der: X509::from_pem(&server.device_ca_pem)?.to_der()?,
        })
    }

    fn pkcs_req(
        &self,
        key: &PKey<Private>,
        challenge: &str,
        choices: &ClientChoices<'_>,
    ) -> Result<PendingRequest> {
        Ok(scep::build_pkcs_req_as(
            &self.ca_der,
            key,
            "scep-interop-device",
            Some(challenge),
            now(),
            choices,
        )?)
    }

    /// POSTs a PKIOperation: the HTTP status and body.
    async fn post(&self, message: &[u8]) -> Result<(u16, Vec<u8>)> {
        let response = self
            .server
            .http
            .post(self.server.url("/scep?operation=PKIOperation"))
            .header("content-type", scep::PKI_MESSAGE_CONTENT_TYPE)
            .body(message.to_vec())
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.bytes().await?.to_vec()))
    }

    /// Sends `pending` and reads the CertRep as the client that holds `key` (the requested key).
    async fn outcome(
        &self,
        pending: &PendingRequest,
        key: &PKey<Private>,
    ) -> Result<CertRepOutcome> {
        let (status, body) = self.post(&pending.message_der).await?;
        ensure!(
            status == 200,
            "PKIOperation answered HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        );
        Ok(scep::decode_cert_rep(pending, key, &self.ca_der, &body)?)
    }

    async fn certificate(&self, pending: &PendingRequest, key: &PKey<Private>) -> Result<Vec<u8>> {
        match self.outcome(pending, key).await? {
            CertRepOutcome::Success(der) => {
                let cert = X509::from_der(&der)?;
                ensure!(
                    cert.public_key()?.public_eq(key),
                    "certificate for another key"
                );
                ensure!(cert.verify(X509::from_der(&self.ca_der)?.public_key()?.as_ref())?);
                Ok(der)
            }
            other => bail!("expected a certificate, got {other:?}"),
        }
    }
}

fn now() -> UnixTime {
    UnixTime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default(),
    )
}

fn rsa(bits: u32) -> Result<PKey<Private>> {
    Ok(PKey::from_rsa(openssl::rsa::Rsa::generate(bits)?)?)
}

async fn enrollment_choices(backend: Backend) -> Result<()> {
    let Some(server) = TestServer::start(backend).await? else {
        return Ok(());
    };
    let client = Client::new(&server)?;

    // Signed with the requested key (what an iPad and the simulator do), AES-256 + SHA-256.
    let key = rsa(2048)?;
    let challenge = fresh_challenge(&server, "signer-same").await?;
    let pending = client.pkcs_req(&key, &challenge, &ClientChoices::default())?;
    let issued = client.certificate(&pending, &key).await?;

    // The same message again (the answer was lost): the same certificate. So does a new message for the same
    // transaction and key (new nonce, new signature).
    ensure!(client.certificate(&pending, &key).await? == issued);
    let rebuilt = client.pkcs_req(&key, &challenge, &ClientChoices::default())?;
    ensure!(rebuilt.transaction_id == pending.transaction_id);
    ensure!(client.certificate(&rebuilt, &key).await? == issued);

    // The same key again with a new challenge (enrolling anew; the transactionID, a hash of the key, is the
    // same): a new certificate, not the old one.
    let new_challenge = fresh_challenge(&server, "signer-same-again").await?;
    let anew = client.pkcs_req(&key, &new_challenge, &ClientChoices::default())?;
    ensure!(anew.transaction_id == pending.transaction_id);
    let second = client.certificate(&anew, &key).await?;
    ensure!(
        second != issued,
        "enrolling anew answered the old certificate"
    );
    // And the first request retried still gets the first certificate.
    ensure!(client.certificate(&pending, &key).await? == issued);

    // CertPoll (GetCertInitial) for that transaction: its newest certificate; for an unknown one: badCertId.
    let poll = scep::build_cert_poll(&client.ca_der, &pending, "scep-interop-device")?;
    ensure!(client.outcome(&poll, &key).await? == CertRepOutcome::Success(second.clone()));
    let stranger_key = rsa(2048)?;
    let stranger = client.pkcs_req(&stranger_key, "never-sent", &ClientChoices::default())?;
    let stranger_poll = scep::build_cert_poll(&client.ca_der, &stranger, "x")?;
    ensure!(
        client.outcome(&stranger_poll, &stranger_key).await?
            == CertRepOutcome::Failure(FailInfo::BadCertId)
    );

    // The same transactionID for another key: badRequest, and the other key's challenge stays usable.
    let other_key = rsa(2048)?;
    let other_challenge = fresh_challenge(&server, "reused-transaction").await?;
    let reused = client.pkcs_req(
        &other_key,
        &other_challenge,
        &ClientChoices {
            transaction_id: Some(&pending.transaction_id),
            ..ClientChoices::default()
        },
    )?;
    ensure!(
        client.outcome(&reused, &other_key).await? == CertRepOutcome::Failure(FailInfo::BadRequest)
    );
    let fresh = client.pkcs_req(&other_key, &other_challenge, &ClientChoices::default())?;
    client.certificate(&fresh, &other_key).await?;

    // Signed by a self-signed certificate over a separate throwaway key (RFC 8894 §2.3 allows it): the reply is
    // encrypted to the throwaway certificate, the certificate is for the requested key.
    let key = rsa(2048)?;
    let throwaway = rsa(2048)?;
    let challenge = fresh_challenge(&server, "signer-throwaway").await?;
    let pending = client.pkcs_req(
        &key,
        &challenge,
        &ClientChoices {
            signer_key: Some(&throwaway),
            ..ClientChoices::default()
        },
    )?;
    let issued = client.certificate(&pending, &key).await?;
    // Its poll is signed by the throwaway certificate too.
    let poll = scep::build_cert_poll(&client.ca_der, &pending, "scep-interop-device")?;
    ensure!(client.outcome(&poll, &key).await? == CertRepOutcome::Success(issued));

    // Other advertised choices: AES-128 + SHA-512, 3DES + SHA-256.
    for (cipher, digest, code) in [
        (
            Cipher::aes_128_cbc(),
            MessageDigest::sha512(),
            "aes128-sha512",
        ),
        (
            Cipher::des_ede3_cbc(),
            MessageDigest::sha256(),
            "des3-sha256",
        ),
    ] {
        let key = rsa(2048)?;
        let challenge = fresh_challenge(&server, code).await?;
        let choices = ClientChoices {
            cipher,
            digest,
            ..ClientChoices::default()
        };
        client
            .certificate(&client.pkcs_req(&key, &challenge, &choices)?, &key)
            .await
            .with_context(|| code.to_owned())?;
    }
    Ok(())
}

async fn refusals(backend: Backend) -> Result<()> {
    let Some(server) = TestServer::start(backend).await? else {
        return Ok(());
    };
    let client = Client::new(&server)?;
    let challenge = fresh_challenge(&server, "refusals").await?;
    let good = rsa(2048)?;
    scep::load_legacy_ciphers()?;

    let weak = rsa(1024)?;
    let ec = PKey::from_ec_key(openssl::ec::EcKey::generate(
        openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)?.as_ref(),
    )?)?;
    let defaults = ClientChoices::default();
    let cases: Vec<(&str, &PKey<Private>, ClientChoices<'_>, FailInfo)> = vec![
        ("rsa-1024", &weak, defaults, FailInfo::BadAlg),
        // Signed by the EC key itself: no reply could be encrypted to it.
        ("ec-p256", &ec, defaults, FailInfo::BadAlg),
        // Signed by an RSA throwaway key: a reply could be, but device identities are RSA.
        (
            "ec-p256 signed by rsa",
            &ec,
            ClientChoices {
                signer_key: Some(&good),
                ..defaults
            },
            FailInfo::BadAlg,
        ),
        (
            "blowfish",
            &good,
            ClientChoices {
                cipher: Cipher::bf_cbc(),
                ..defaults
            },
            FailInfo::BadAlg,
        ),
        (
            "md5",
            &good,
            ClientChoices {
                digest: MessageDigest::md5(),
                ..defaults
            },
            FailInfo::BadAlg,
        ),
    ];
    for (what, key, choices, expected) in cases {
        let pending = client.pkcs_req(key, &challenge, &choices)?;
        // The reply is encrypted to (and read by) whoever signed; a failure has no envelope, so any key reads it.
        let outcome = client.outcome(&pending, &good).await.context(what)?;
        ensure!(
            outcome == CertRepOutcome::Failure(expected),
            "{what}: {outcome:?}"
        );
    }

    // A broken signature: badMessageCheck (the signature value is the message's last bytes).
    let pending = client.pkcs_req(&good, &challenge, &defaults)?;
    let mut tampered = pending.message_der.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let (status, body) = client.post(&tampered).await?;
    ensure!(status == 200, "tampered message answered HTTP {status}");
    ensure!(
        scep::decode_cert_rep(&pending, &good, &client.ca_der, &body)?
            == CertRepOutcome::Failure(FailInfo::BadMessageCheck)
    );

    // A made-up challenge: badRequest.
    let stranger = rsa(2048)?;
    let pending = client.pkcs_req(&stranger, "made-up", &defaults)?;
    ensure!(
        client.outcome(&pending, &stranger).await? == CertRepOutcome::Failure(FailInfo::BadRequest)
    );

    // Undecodable bytes are the only HTTP 400.
    for garbage in [
        &b"not cms"[..],
        &[][..],
        &[0x30, 0x03, 0x02, 0x01, 0x01][..],
    ] {
        let (status, _) = client.post(garbage).await?;
        ensure!(status == 400, "garbage answered HTTP {status}");
    }

    // None of that spent the challenge: a good request with it enrolls; then it is spent.
    let pending = client.pkcs_req(&good, &challenge, &defaults)?;
    client.certificate(&pending, &good).await?;
    let late = rsa(2048)?;
    let pending = client.pkcs_req(&late, &challenge, &defaults)?;
    ensure!(
        client.outcome(&pending, &late).await? == CertRepOutcome::Failure(FailInfo::BadRequest)
    );
    Ok(())
}

orchard_testkit::backend_tests! {
    scepclient_obtains_a_certificate_from_orchard => scenario;
    pkcs_req_signed_with_the_request_key_or_a_throwaway_key_enrolls => enrollment_choices;
    every_refusal_is_a_cert_rep_failure_and_keeps_the_challenge => refusals;
}
