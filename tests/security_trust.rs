//! Issue 10, finding 8 (the CA on every iPad was an unconstrained root that also issued the server's TLS
//! certificate), on the real binary with SQLite and PostgreSQL: the enrollment profile installs the server CA,
//! never the device CA; the server CA is name-constrained to the server's names, so even someone holding its
//! key cannot make a certificate for another site that an iPad would accept; the server's TLS certificate and
//! the profile signature chain to the server CA; device identities chain to the device CA.

use anyhow::{ensure, Context, Result};
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::{X509StoreContext, X509VerifyResult, X509};
use orchard_pki::{CertificateAuthority, Identity};
use orchard_protocol::profile::EnrollmentProfile;
use orchard_testkit::server::TestServer;
use orchard_testkit::Backend;
use orchard_types::{Clock, SystemClock};

/// OpenSSL's `X509_V_ERR_PERMITTED_VIOLATION` ("permitted subtree violation", x509_vfy.h).
const X509_V_ERR_PERMITTED_VIOLATION: i32 = 47;

/// OpenSSL's verdict on `leaf` with `root` as the only trusted root, as an iPad that installed it would judge.
fn verify_under(root: &X509, leaf: &X509) -> Result<X509VerifyResult> {
    let mut store = X509StoreBuilder::new()?;
    store.add_cert(root.clone())?;
    let store = store.build();
    let mut ctx = X509StoreContext::new()?;
    let chain = Stack::new()?;
    Ok(ctx.init(&store, leaf, &chain, |c| {
        c.verify_cert()?;
        Ok(c.error())
    })?)
}

async fn scenario(backend: Backend) -> Result<()> {
    let Some(server) = TestServer::start(backend).await? else {
        return Ok(());
    };
    let server_ca = X509::from_pem(&server.ca_pem)?;
    let device_ca = X509::from_pem(&server.device_ca_pem)?;
    ensure!(
        server_ca.to_der()? != device_ca.to_der()?,
        "two different CAs"
    );

    // The profile a department's link hands out: signed under the server CA, installing the server CA only.
    let tenant = server.create_tenant("Physics", "physics").await?;
    let link = server.enrollment_link(&tenant, None).await?;
    // The link answers a landing page; its download button fetches `<link>/profile`.
    let signed = server
        .http
        .get(format!("{link}/profile"))
        .send()
        .await?
        .bytes()
        .await?;
    let content = orchard_pki::signature::verify_signed_profile(&signed, &server_ca.to_der()?)
        .context("the profile signature chains to the server CA")?;
    let profile = EnrollmentProfile::parse(&content)?;
    ensure!(
        profile.root_ca_der.as_deref() == Some(&server_ca.to_der()?[..]),
        "the profile's root payload is the server CA"
    );
    let device_ca_der = device_ca.to_der()?;
    ensure!(
        !signed
            .windows(device_ca_der.len())
            .any(|w| w == &device_ca_der[..]),
        "the device CA appears nowhere in the profile (neither as a payload nor in the signature's chain)"
    );

    // The server CA is name-constrained (critical) with a path length of 0.
    let text = String::from_utf8(server_ca.to_text()?)?;
    ensure!(text.contains("X509v3 Name Constraints: critical"), "{text}");
    ensure!(text.contains("pathlen:0"), "{text}");
    ensure!(
        !String::from_utf8(device_ca.to_text()?)?.contains("Name Constraints"),
        "the device CA is never installed on devices, so it needs none"
    );

    // Whoever steals the server CA's key (sealed in the database: whoever holds the database and the KEK) still
    // cannot impersonate another site to the iPads: a certificate it makes for any other name fails the iPad's
    // chain check.
    let key = server.stored_key("server_ca").await?;
    let stolen = CertificateAuthority::from_identity(Identity::from_pem(&server.ca_pem, &key)?)?;
    let now = SystemClock.now();
    for (dns, ips) in [
        (vec!["www.apple.com".to_owned()], vec![]),
        (vec!["login.example.edu".to_owned()], vec![]),
        (vec![], vec!["10.1.2.3".parse()?]),
    ] {
        let forged = stolen.issue_tls_server(&dns, &ips, now, 30)?;
        let verdict = verify_under(&server_ca, &X509::from_der(&forged.cert_der())?)?;
        ensure!(
            verdict.as_raw() == X509_V_ERR_PERMITTED_VIOLATION,
            "a certificate for {dns:?} {ips:?} is refused for its name, got {verdict}"
        );
    }
    let own =
        stolen.issue_tls_server(&["localhost".to_owned()], &["127.0.0.1".parse()?], now, 30)?;
    ensure!(
        verify_under(&server_ca, &X509::from_der(&own.cert_der())?)? == X509VerifyResult::OK,
        "its own names still verify"
    );

    // The server's TLS certificate chains to the server CA: the test client trusts nothing else. Device
    // identities chain to the device CA: an enrolled iPad's certificate is issued by it.
    let fleet = server
        .enroll_devices(&server.sim_config(), &tenant, 1)
        .await?;
    let identity_pem = fleet
        .first()
        .and_then(|d| d.state.identity_cert_pem.clone())
        .context("enrolled device identity")?;
    let identity = X509::from_pem(identity_pem.as_bytes())?;
    ensure!(identity.verify(device_ca.public_key()?.as_ref())?);
    ensure!(!identity.verify(server_ca.public_key()?.as_ref())?);
    Ok(())
}

orchard_testkit::backend_tests! {
    server_ca_is_constrained_and_device_ca_stays_off_devices => scenario;
}
