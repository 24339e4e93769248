//! Start-up wiring: Orchard's PKI material in the data directory, created on first start and loaded afterwards.
//! It lives in the binary because only `orchard serve` and the database-level commands read the data directory;
//! core receives the loaded [`PkiMaterial`]. (The next step moves these keys into the database.)
//!
//! Files: `ca.pem`/`ca.key` (the device CA: issues device identities through SCEP and is the SCEP RA; devices
//! never trust it for anything), `server-ca.pem`/`.key` (the server CA: installed on every enrolled iPad, so
//! name-constrained to the server's own names; it issues `profile-signer.pem/.key`, which signs enrollment
//! profiles, and `tls.pem`/`tls.key`, the development TLS identity), `data.key` (seals secrets stored in the
//! database). Keys are written with mode 0600. Leaf identities are re-issued when missing, within 30 days of
//! expiry or not issued by the current server CA; the server CA is replaced when its constraints do not cover
//! the server's names (a new public URL), which enrolled devices will not trust until they get the new one.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use orchard_pki::seal::DataKey;
use orchard_pki::{CertificateAuthority, Identity};
use orchard_types::UnixTime;

use anyhow::{Context, Result};
use orchard_core::PkiMaterial;

const CA_VALIDITY_DAYS: u32 = 3650;
const LEAF_VALIDITY_DAYS: u32 = 397;
const RENEW_BEFORE_SECONDS: i64 = 30 * 86_400;

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| path.display().to_string())?;
    // The mode above applies only to a new file: an existing one (an older version's) is tightened first.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| path.display().to_string())?;
    }
    f.write_all(bytes)
        .with_context(|| path.display().to_string())
}

/// A key file an older version may have left readable by others becomes the owner's alone (0600).
fn restrict_to_owner(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .with_context(|| path.display().to_string())?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .with_context(|| path.display().to_string())?;
            tracing::warn!(path = %path.display(), "a key file was readable by others; it is 0600 now");
        }
    }
    Ok(())
}

/// Creates the data directory (and missing parents) for the owner alone (0700): it holds the CA key, the data
/// key and, on SQLite, the database. An existing directory is left as it is, with a warning when others may
/// enter it.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir)
            .with_context(|| dir.display().to_string())?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            tracing::warn!(path = %dir.display(), mode = format!("{:o}", mode & 0o777), "the data directory is open to other users; 0700 is recommended");
        }
    }
    Ok(())
}

/// A certificate PEM and its key PEM, as read from the data directory.
struct PemPair {
    cert: Vec<u8>,
    key: Vec<u8>,
}

fn read_pair(dir: &Path, name: &str) -> Result<Option<PemPair>> {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    if !cert.exists() || !key.exists() {
        return Ok(None);
    }
    let c = std::fs::read(&cert).with_context(|| cert.display().to_string())?;
    restrict_to_owner(&key)?;
    let k = std::fs::read(&key).with_context(|| key.display().to_string())?;
    Ok(Some(PemPair { cert: c, key: k }))
}

fn write_pair(dir: &Path, name: &str, id: &Identity) -> Result<()> {
    let cert = dir.join(format!("{name}.pem"));
    std::fs::write(&cert, id.cert_pem()).with_context(|| cert.display().to_string())?;
    write_private(&dir.join(format!("{name}.key")), id.key_pem().expose())
}

fn not_after(id: &Identity) -> Option<UnixTime> {
    orchard_pki::cert_validity(&id.cert_der())
        .ok()
        .map(|(_, not_after)| not_after)
}

fn needs_renewal(id: &Identity, now: UnixTime) -> bool {
    match not_after(id) {
        Some(t) => t.0 - now.0 < RENEW_BEFORE_SECONDS,
        None => true,
    }
}

/// The data directory's PKI, created or refreshed as needed.
pub struct DataDirPki {
    pub material: PkiMaterial,
    pub tls: Identity,
    /// `server-ca.pem`: what API clients (`ORCHARD_CA`) trust for Orchard's own TLS certificate.
    pub server_ca_path: PathBuf,
}

/// Loads the CA and identities from `dir`, creating whatever is missing. `tls_names` are the DNS names and
/// IP addresses the TLS certificate must cover.
pub fn load_or_create(
    dir: &Path,
    tls_dns: &[String],
    tls_ips: &[IpAddr],
    now: UnixTime,
) -> Result<DataDirPki> {
    create_private_dir(dir)?;
    let ca = match read_pair(dir, "ca")? {
        Some(p) => CertificateAuthority::from_pem(&p.cert, &p.key)?,
        None => {
            let ca = CertificateAuthority::generate("Orchard Device CA", now, CA_VALIDITY_DAYS)?;
            write_pair(dir, "ca", ca.identity())?;
            tracing::info!(path = %dir.join("ca.pem").display(), "created a new Orchard device CA");
            ca
        }
    };
    // A caller that only needs the CAs (a CLI command) names no host: cover localhost.
    let localhost = ["localhost".to_string()];
    let dns = if tls_dns.is_empty() && tls_ips.is_empty() {
        &localhost[..]
    } else {
        tls_dns
    };
    let server_ca = match read_pair(dir, "server-ca")? {
        Some(p) => Some(CertificateAuthority::from_pem(&p.cert, &p.key)?),
        None => None,
    };
    let server_ca = match server_ca {
        Some(ca) if !needs_renewal(ca.identity(), now) && ca.permits_server_names(dns, tls_ips) => {
            ca
        }
        previous => {
            let ca = CertificateAuthority::generate_server_ca(
                "Orchard Server CA",
                dns,
                tls_ips,
                now,
                CA_VALIDITY_DAYS,
            )?;
            write_pair(dir, "server-ca", ca.identity())?;
            if previous.is_some() {
                tracing::warn!(?dns, ips = ?tls_ips, "made a new server CA for the server's names: devices enrolled under the previous one do not trust it until they are given it");
            } else {
                tracing::info!(path = %dir.join("server-ca.pem").display(), "created a new Orchard server CA (constrained to the server's names)");
            }
            ca
        }
    };
    let signer = match read_pair(dir, "profile-signer")? {
        Some(p) => Some(Identity::from_pem(&p.cert, &p.key)?),
        None => None,
    };
    let signer = match signer {
        Some(s) if !needs_renewal(&s, now) && server_ca.is_issued_by_me(&s.cert_der()) => s,
        _ => {
            let s = server_ca.issue_signing_identity(
                "Orchard Profile Signing",
                now,
                LEAF_VALIDITY_DAYS,
            )?;
            write_pair(dir, "profile-signer", &s)?;
            s
        }
    };
    let tls = match read_pair(dir, "tls")? {
        Some(p) => Some(Identity::from_pem(&p.cert, &p.key)?),
        None => None,
    };
    let tls = match tls {
        Some(t) if !needs_renewal(&t, now) && server_ca.is_issued_by_me(&t.cert_der()) => t,
        _ => {
            let t = server_ca.issue_tls_server(dns, tls_ips, now, LEAF_VALIDITY_DAYS)?;
            write_pair(dir, "tls", &t)?;
            tracing::info!("issued a self-signed TLS certificate from the Orchard server CA");
            t
        }
    };
    let data_key_path = dir.join("data.key");
    let data_key = if data_key_path.exists() {
        restrict_to_owner(&data_key_path)?;
        let bytes =
            std::fs::read(&data_key_path).with_context(|| data_key_path.display().to_string())?;
        DataKey::from_bytes(&bytes)?
    } else {
        let k = DataKey::generate()?;
        write_private(&data_key_path, k.to_bytes().expose())?;
        tracing::info!(path = %data_key_path.display(), "created a new data key (seals secrets in the database)");
        k
    };
    Ok(DataDirPki {
        material: PkiMaterial {
            ca,
            server_ca,
            profile_signer: signer,
            data_key,
        },
        tls,
        server_ca_path: dir.join("server-ca.pem"),
    })
}
