//! Apple's side, local: the push CA with an APNs server that trusts it, the activation service, and the DEP
//! service. Each knows the `orchard serve` flags that point the binary at it (with its TLS root in a file), and
//! the push service the settings an in-process `Orchard` needs.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use openssl::x509::X509Req;
use orchard_apns::fake::{issue_push_certificate, issue_push_certificate_for_key, FakeApnsServer};
use orchard_apns::{ApnsConfig, PushCertificate, TrustRoots};
use orchard_core::push::PushSettings;
use orchard_dep::fake::activation::FakeActivationServer;
use orchard_dep::fake::{FakeDepConfig, FakeDepServer};
use orchard_pki::CertificateAuthority;
use orchard_types::{ApnsTopic, UnixTime};
use orchard_vpp::fake::{FakeVppConfig, FakeVppServer};

const DAY: i64 = 86_400;

/// Writes a PEM file the binary reads with one of its `--…-ca` flags.
fn pem_file(dir: &Path, name: &str, pem: &[u8]) -> Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, pem).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Apple's push CA (which issues MDM push certificates) and a local APNs server that accepts clients holding one.
pub struct ApplePush {
    /// The stand-in for Apple's push certificate CA.
    pub ca: CertificateAuthority,
    pub apns: FakeApnsServer,
    root_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl ApplePush {
    /// Starts APNs; the push CA is valid from a day before `now` for 400 days, so a test clock may move on.
    pub async fn start(now: UnixTime) -> Result<ApplePush> {
        crate::install_crypto_provider();
        let ca = CertificateAuthority::generate("Test Apple Push CA", UnixTime(now.0 - DAY), 400)?;
        let apns = FakeApnsServer::start(&ca.cert_pem()).await?;
        let dir = tempfile::tempdir()?;
        let root_file = pem_file(dir.path(), "apns-root.pem", apns.root_cert_pem())?;
        Ok(ApplePush {
            ca,
            apns,
            root_file,
            _dir: dir,
        })
    }

    /// `--apns-url` and `--apns-ca` for `orchard serve`.
    pub fn serve_args(&self) -> Vec<String> {
        vec![
            "--apns-url".into(),
            self.apns.url().to_owned(),
            "--apns-ca".into(),
            self.root_file.display().to_string(),
        ]
    }

    /// Push settings of an in-process `Orchard` that pushes to this APNs.
    pub fn settings(&self) -> Result<PushSettings> {
        Ok(PushSettings {
            apns: ApnsConfig::with_base_url(
                self.apns.url(),
                TrustRoots::from_pem(self.apns.root_cert_pem())?,
            ),
            ..PushSettings::default()
        })
    }

    /// A push certificate (and its key) for `topic`, valid from a minute before `now` for `days`.
    pub fn certificate(
        &self,
        topic: &ApnsTopic,
        now: UnixTime,
        days: i64,
    ) -> Result<PushCertificate> {
        Ok(issue_push_certificate(
            &self.ca,
            topic,
            UnixTime(now.0 - 60),
            now.plus_seconds(days * DAY),
        )?)
    }

    /// What the Apple Push Certificates Portal does with a CSR: a certificate for the CSR's public key with
    /// Apple's subject shape (`UID=<topic>, CN=APSP:<uuid>, C=US`), clientAuth, valid from a minute before
    /// `now` for a year, signed by the push CA. PEM.
    pub fn issue_for_csr(
        &self,
        csr_pem: &[u8],
        topic: &ApnsTopic,
        now: UnixTime,
    ) -> Result<Vec<u8>> {
        let csr = X509Req::from_pem(csr_pem)?;
        let public_key = csr.public_key()?;
        ensure!(csr.verify(&public_key)?, "the csr is not signed by its key");
        let certificate = issue_push_certificate_for_key(
            &self.ca,
            topic,
            &public_key,
            UnixTime(now.0 - 60),
            now.plus_seconds(365 * DAY),
        )?;
        Ok(certificate.to_pem()?)
    }
}

/// Apple's activation service (clears Activation Lock), accepting clients with a certificate of `push`'s CA.
pub struct AppleActivation {
    pub server: FakeActivationServer,
    root_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl AppleActivation {
    pub async fn start(push: &ApplePush) -> Result<AppleActivation> {
        let server = FakeActivationServer::start(&push.ca.cert_pem()).await?;
        let dir = tempfile::tempdir()?;
        let root_file = pem_file(
            dir.path(),
            "activation-root.pem",
            &server.root_certificate_pem(),
        )?;
        Ok(AppleActivation {
            server,
            root_file,
            _dir: dir,
        })
    }

    /// `--activation-lock-url` and `--activation-lock-ca` for `orchard serve`.
    pub fn serve_args(&self) -> Vec<String> {
        vec![
            "--activation-lock-url".into(),
            self.server.url().to_owned(),
            "--activation-lock-ca".into(),
            self.root_file.display().to_string(),
        ]
    }
}

/// Apple's Device Assignment (DEP) service over TLS with real OAuth.
pub struct AppleDep {
    pub server: FakeDepServer,
    root_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl AppleDep {
    pub async fn start(config: FakeDepConfig) -> Result<AppleDep> {
        crate::install_crypto_provider();
        let server = FakeDepServer::start(config).await?;
        let root_der = server
            .root_certificate_der()
            .context("the local DEP server has no TLS root")?;
        let dir = tempfile::tempdir()?;
        let root_file = pem_file(
            dir.path(),
            "dep-root.pem",
            &openssl::x509::X509::from_der(&root_der)?.to_pem()?,
        )?;
        Ok(AppleDep {
            server,
            root_file,
            _dir: dir,
        })
    }

    /// `--dep-url` and `--dep-ca` for `orchard serve`.
    pub fn serve_args(&self) -> Vec<String> {
        vec![
            "--dep-url".into(),
            self.server.base_url().to_owned(),
            "--dep-ca".into(),
            self.root_file.display().to_string(),
        ]
    }
}

/// Apple's Apps and Books service (VPP) over TLS: locations with content tokens, apps, licences and events.
pub struct AppleVpp {
    pub server: FakeVppServer,
    root_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl AppleVpp {
    pub async fn start(config: FakeVppConfig) -> Result<AppleVpp> {
        crate::install_crypto_provider();
        let server = FakeVppServer::start(config).await?;
        let root_der = server
            .root_certificate_der()
            .context("the local Apps and Books server has no TLS root")?;
        let dir = tempfile::tempdir()?;
        let root_file = pem_file(
            dir.path(),
            "vpp-root.pem",
            &openssl::x509::X509::from_der(&root_der)?.to_pem()?,
        )?;
        Ok(AppleVpp {
            server,
            root_file,
            _dir: dir,
        })
    }

    /// `--apps-url` and `--apps-ca` for `orchard serve` (background sync off: tests sync on request).
    pub fn serve_args(&self) -> Vec<String> {
        vec![
            "--apps-url".into(),
            self.server.api_base_url(),
            "--apps-ca".into(),
            self.root_file.display().to_string(),
            "--apps-sync-minutes".into(),
            "0".into(),
        ]
    }
}

/// Apple's side of zero-touch enrolment for end-to-end tests: the local DEP server listing `serials`, and
/// Apple's device CA (it signs the simulated iPads' MachineInfo) written where `--dep-device-ca` reads it.
pub struct AdeFixture {
    pub dep: AppleDep,
    pub apple: orchard_sim::AppleDeviceCa,
    device_ca_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl AdeFixture {
    pub async fn start(serials: &[orchard_types::SerialNumber]) -> Result<AdeFixture> {
        let dep = AppleDep::start(FakeDepConfig::default()).await?;
        dep.server.add_devices(serials);
        let apple = orchard_sim::AppleDeviceCa::generate()?;
        let dir = tempfile::tempdir()?;
        let device_ca_file = pem_file(dir.path(), "apple-root.pem", &apple.root_pem())?;
        Ok(AdeFixture {
            dep,
            apple,
            device_ca_file,
            _dir: dir,
        })
    }

    /// The local DEP server's flags, Apple's device CA, and the DEP scheduler off (tests sync by hand).
    pub fn serve_args(&self) -> Vec<String> {
        let mut args = self.dep.serve_args();
        args.extend([
            "--dep-device-ca".into(),
            self.device_ca_file.display().to_string(),
            "--dep-sync-minutes".into(),
            "0".into(),
        ]);
        args
    }
}
