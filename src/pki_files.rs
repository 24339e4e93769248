//! Start-up wiring: Orchard's keys. The keys every node shares (the device CA, the server CA, the profile
//! signer and the data key) live in the database, sealed under the key-encryption key (KEK) each node gets from
//! its configuration (`--kek-file`, `ORCHARD_KEK`, or `kek` in the data directory, which the first start makes
//! when the database holds no keys yet). Only the TLS identity stays a file of the data directory, with the
//! public certificates `ca.pem` and `server-ca.pem` written there for clients. It lives in the binary because
//! only the binary reads configuration; core receives the loaded [`PkiMaterial`].
//!
//! The device CA issues device identities through SCEP and is the SCEP RA (devices never trust it for
//! anything); the server CA is installed on every enrolled iPad, so it is name-constrained to the server's own
//! names, and it issues the profile signer (signs enrollment profiles) and the development TLS identity; the
//! data key seals secrets stored in the database. A node whose KEK does not open the stored keys, or that has
//! no KEK while the database holds keys, refuses to start; the first start creates the set in one transaction,
//! each row only if absent, then reads back what is stored, so racing first starts end with one CA. Keys an
//! older version kept as files in the data directory (`ca.key`, `server-ca.key`, `profile-signer.key`,
//! `data.key`) are imported by that first start, so enrolled devices keep their CA. `orchard serve` renews the
//! profile signer within 30 days of expiry and replaces the server CA when its constraints do not cover the
//! server's names (a new public URL), each by compare-and-swap; database-level commands only read.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use orchard_pki::seal::DataKey;
use orchard_pki::{CertificateAuthority, Identity};
use orchard_store::{ServerKeyRecord, Store};
use orchard_types::{Secret, UnixTime};

use anyhow::{bail, Context, Result};
use base64::Engine;
use orchard_core::PkiMaterial;

const CA_VALIDITY_DAYS: u32 = 3650;
const LEAF_VALIDITY_DAYS: u32 = 397;
const RENEW_BEFORE_SECONDS: i64 = 30 * 86_400;

pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
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

/// The KEK's file in the data directory: made by the first start when nothing else names a KEK.
pub const KEK_FILE: &str = "kek";
const KEK_LEN: usize = 32;
const KEK_CHECK: &str = "kek_check";
const KEK_CHECK_TEXT: &[u8] = b"orchard key-encryption key check v1";
const DEVICE_CA: &str = "device_ca";
const SERVER_CA: &str = "server_ca";
const PROFILE_SIGNER: &str = "profile_signer";
const DATA_KEY: &str = "data_key";

/// Where this node's KEK comes from, as configured (main.rs reads the command line and the environment).
pub struct KekConfig {
    /// `--kek-file`.
    pub file: Option<PathBuf>,
    /// `ORCHARD_KEK`: the KEK itself.
    pub env: Option<Secret<String>>,
}

/// The key-encryption key: AES-256-GCM over each shared key, with the key's name bound as associated data so a
/// sealed key copied to another row does not open.
struct Kek(DataKey);

impl Kek {
    /// 32 bytes as base64 (what `openssl rand -base64 32` prints) or as 64 hex digits.
    fn parse(text: &str, origin: &str) -> Result<Kek> {
        let text = text.trim();
        let bytes = if text.len() == 2 * KEK_LEN && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..KEK_LEN)
                .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .ok()
        } else {
            base64::engine::general_purpose::STANDARD.decode(text).ok()
        };
        match bytes {
            Some(b) if b.len() == KEK_LEN => Ok(Kek(DataKey::from_bytes(&b)?)),
            _ => bail!(
                "the key-encryption key from {origin} is not 32 bytes in base64 or hex (make one with `openssl rand -base64 32`)"
            ),
        }
    }

    fn to_text(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0.to_bytes().expose())
    }

    fn context(name: &str) -> Vec<u8> {
        format!("orchard server_keys:{name}").into_bytes()
    }

    fn seal(&self, name: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        Ok(self.0.seal(plaintext, &Self::context(name))?)
    }

    fn open(&self, name: &str, sealed: &[u8]) -> Result<Secret<Vec<u8>>> {
        Ok(self.0.open(sealed, &Self::context(name))?)
    }
}

/// The KEK the configuration names, or the data directory's `kek` file; `None` when there is neither.
fn configured_kek(config: &KekConfig, dir: &Path) -> Result<Option<Kek>> {
    match (&config.file, &config.env) {
        (Some(_), Some(_)) => {
            bail!("give the key-encryption key once: --kek-file or ORCHARD_KEK, not both")
        }
        (Some(path), None) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the key-encryption key {}", path.display()))?;
            Kek::parse(&text, &path.display().to_string()).map(Some)
        }
        (None, Some(text)) => Kek::parse(text.expose(), "ORCHARD_KEK").map(Some),
        (None, None) => {
            let path = dir.join(KEK_FILE);
            if !path.exists() {
                return Ok(None);
            }
            restrict_to_owner(&path)?;
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading the key-encryption key {}", path.display()))?;
            Kek::parse(&text, &path.display().to_string()).map(Some)
        }
    }
}

/// The KEK this node is configured with (as `serve` finds it), as base64 text: what a backup carries.
pub fn configured_kek_text(config: &KekConfig, dir: &Path) -> Result<Option<Secret<String>>> {
    Ok(configured_kek(config, dir)?.map(|kek| Secret::new(kek.to_text())))
}

/// `text` checked to be a KEK, as base64 text (`origin` names where it came from in the error).
pub fn normalized_kek_text(text: &str, origin: &str) -> Result<Secret<String>> {
    Kek::parse(text, origin).map(|kek| Secret::new(kek.to_text()))
}

/// The SHA-256 fingerprints of the device CA and the server CA of a stored key set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaFingerprints {
    pub device_ca_sha256: String,
    pub server_ca_sha256: String,
}

/// Opens every stored key with the KEK `kek_text` (as `serve` would) and says which CAs they are: an error
/// when the set is incomplete or the KEK does not open it.
pub fn open_with_kek(
    stored: &[ServerKeyRecord],
    kek_text: &Secret<String>,
) -> Result<CaFingerprints> {
    if stored.is_empty() {
        bail!("the database holds no Orchard keys");
    }
    let kek = Kek::parse(kek_text.expose(), "the backup")?;
    let keys = open_stored(stored, &kek)?;
    Ok(CaFingerprints {
        device_ca_sha256: orchard_pki::fingerprint_sha256_hex(&keys.ca.cert_der()),
        server_ca_sha256: orchard_pki::fingerprint_sha256_hex(&keys.server_ca.cert_der()),
    })
}

fn sealed_identity(kek: &Kek, name: &str, id: &Identity, now: UnixTime) -> Result<ServerKeyRecord> {
    Ok(ServerKeyRecord {
        name: name.to_owned(),
        cert_pem: Some(id.cert_pem()),
        key_sealed: kek.seal(name, id.key_pem().expose())?,
        created_at: now,
    })
}

/// The first start's key set: the data directory's key files of an older version where they exist (so enrolled
/// devices keep their CA and sealed secrets keep opening), new keys for the rest.
fn import_or_generate(
    dir: &Path,
    kek: &Kek,
    dns: &[String],
    ips: &[IpAddr],
    now: UnixTime,
) -> Result<Vec<ServerKeyRecord>> {
    let mut imported = Vec::new();
    let ca = match read_pair(dir, "ca")? {
        Some(p) => {
            imported.push("ca.key");
            CertificateAuthority::from_pem(&p.cert, &p.key)?
        }
        None => CertificateAuthority::generate("Orchard Device CA", now, CA_VALIDITY_DAYS)?,
    };
    let server_ca = match read_pair(dir, "server-ca")? {
        Some(p) => {
            imported.push("server-ca.key");
            CertificateAuthority::from_pem(&p.cert, &p.key)?
        }
        None => CertificateAuthority::generate_server_ca(
            "Orchard Server CA",
            dns,
            ips,
            now,
            CA_VALIDITY_DAYS,
        )?,
    };
    let signer = match read_pair(dir, "profile-signer")? {
        Some(p) => {
            imported.push("profile-signer.key");
            Identity::from_pem(&p.cert, &p.key)?
        }
        None => {
            server_ca.issue_signing_identity("Orchard Profile Signing", now, LEAF_VALIDITY_DAYS)?
        }
    };
    let data_key_path = dir.join("data.key");
    let data_key = if data_key_path.exists() {
        imported.push("data.key");
        restrict_to_owner(&data_key_path)?;
        let bytes =
            std::fs::read(&data_key_path).with_context(|| data_key_path.display().to_string())?;
        DataKey::from_bytes(&bytes)?
    } else {
        DataKey::generate()?
    };
    if imported.is_empty() {
        tracing::info!(
            "creating Orchard's device CA, server CA, profile signer and data key in the database"
        );
    } else {
        tracing::info!(files = ?imported, dir = %dir.display(), "moving the key files of the data directory into the database (sealed under the key-encryption key)");
    }
    Ok(vec![
        ServerKeyRecord {
            name: KEK_CHECK.to_owned(),
            cert_pem: None,
            key_sealed: kek.seal(KEK_CHECK, KEK_CHECK_TEXT)?,
            created_at: now,
        },
        sealed_identity(kek, DEVICE_CA, ca.identity(), now)?,
        sealed_identity(kek, SERVER_CA, server_ca.identity(), now)?,
        sealed_identity(kek, PROFILE_SIGNER, &signer, now)?,
        ServerKeyRecord {
            name: DATA_KEY.to_owned(),
            cert_pem: None,
            key_sealed: kek.seal(DATA_KEY, data_key.to_bytes().expose())?,
            created_at: now,
        },
    ])
}

/// The stored keys, opened: each with the certificate it was stored with (what a compare-and-swap replaces).
struct OpenedKeys {
    ca: CertificateAuthority,
    server_ca: CertificateAuthority,
    server_ca_stored: Vec<u8>,
    signer: Identity,
    signer_stored: Vec<u8>,
    data_key: DataKey,
}

fn open_stored(stored: &[ServerKeyRecord], kek: &Kek) -> Result<OpenedKeys> {
    let find = |name: &str| {
        stored.iter().find(|k| k.name == name).with_context(|| {
            format!("the database's key set is incomplete ({name} is missing); restore the database from a backup")
        })
    };
    let check = find(KEK_CHECK)?;
    match kek.open(KEK_CHECK, &check.key_sealed) {
        Ok(text) if text.expose() == KEK_CHECK_TEXT => {}
        _ => bail!(
            "wrong key-encryption key: it does not open the keys stored in this database (key check failed). \
             Give this node the KEK the other nodes use (--kek-file or ORCHARD_KEK); refusing to start"
        ),
    }
    let opened = |name: &str| -> Result<(Vec<u8>, Secret<Vec<u8>>)> {
        let record = find(name)?;
        let key = kek.open(name, &record.key_sealed).with_context(|| {
            format!("the stored {name} does not open with the key-encryption key although the key check does: the database is damaged")
        })?;
        Ok((record.cert_pem.clone().unwrap_or_default(), key))
    };
    let (ca_cert, ca_key) = opened(DEVICE_CA)?;
    let (server_ca_cert, server_ca_key) = opened(SERVER_CA)?;
    let (signer_cert, signer_key) = opened(PROFILE_SIGNER)?;
    let (_, data_key) = opened(DATA_KEY)?;
    Ok(OpenedKeys {
        ca: CertificateAuthority::from_pem(&ca_cert, ca_key.expose())?,
        server_ca: CertificateAuthority::from_pem(&server_ca_cert, server_ca_key.expose())?,
        signer: Identity::from_pem(&signer_cert, signer_key.expose())?,
        server_ca_stored: server_ca_cert,
        signer_stored: signer_cert,
        data_key: DataKey::from_bytes(data_key.expose())?,
    })
}

/// What `orchard serve` may change in the shared keys: renew the profile signer, replace the server CA when it
/// does not cover these names.
pub struct ServerNames<'a> {
    pub dns: &'a [String],
    pub ips: &'a [IpAddr],
}

/// Orchard's shared keys from the database, created on the first start (or imported from an older version's
/// key files). `serving` is `Some` for `orchard serve`, which may renew; database-level commands pass `None`
/// and only read (or create the set, when the database has none yet).
pub async fn load_shared_keys(
    store: &Store,
    dir: &Path,
    kek_config: &KekConfig,
    serving: Option<ServerNames<'_>>,
    now: UnixTime,
) -> Result<PkiMaterial> {
    create_private_dir(dir)?;
    let mut stored = store
        .server_keys()
        .await
        .context("reading the keys stored in the database")?;
    // The KEK file this start made, if it did: it is taken back when another node stored its keys first.
    let mut generated = None;
    let kek = match configured_kek(kek_config, dir)? {
        Some(kek) => kek,
        None if stored.is_empty() => {
            let kek = Kek(DataKey::generate()?);
            let path = dir.join(KEK_FILE);
            write_private(&path, format!("{}\n", kek.to_text()).as_bytes())?;
            tracing::info!(path = %path.display(), "created a key-encryption key; every other node on this database needs it (--kek-file or ORCHARD_KEK), and backups of the database are useless without it");
            generated = Some(path);
            kek
        }
        None => bail!(
            "this database holds Orchard's keys sealed under a key-encryption key, and this node has none: \
             give it the KEK the other nodes use (--kek-file PATH or ORCHARD_KEK); refusing to start"
        ),
    };
    // A caller that only needs the CAs (a command) names no host: cover localhost.
    let localhost = ["localhost".to_string()];
    let (dns, ips) = match &serving {
        Some(names) if !(names.dns.is_empty() && names.ips.is_empty()) => (names.dns, names.ips),
        _ => (&localhost[..], &[][..]),
    };
    if stored.is_empty() {
        let set = import_or_generate(dir, &kek, dns, ips, now)?;
        let inserted = store
            .insert_server_keys_if_absent(&set)
            .await
            .context("storing the keys in the database")?;
        if inserted == 0 {
            if let Some(path) = generated {
                std::fs::remove_file(&path).with_context(|| path.display().to_string())?;
                bail!(
                    "another node stored Orchard's keys in this database first, under its own key-encryption \
                     key: give this node that KEK (--kek-file PATH or ORCHARD_KEK); refusing to start"
                );
            }
            tracing::info!("another node stored the keys first; using those");
        }
        stored = store.server_keys().await?;
    }
    let mut keys = open_stored(&stored, &kek)?;
    if serving.is_some() {
        if let Some(replacements) = renewals(&keys, &kek, dns, ips, now)? {
            if !store.replace_server_keys(&replacements).await? {
                tracing::info!("another node renewed the server keys first; using those");
            }
            keys = open_stored(&store.server_keys().await?, &kek)?;
        }
    }
    // The public certificates, for API clients (`ORCHARD_CA`) and operators; the keys stay in the database.
    std::fs::write(dir.join("ca.pem"), keys.ca.cert_pem())
        .with_context(|| dir.join("ca.pem").display().to_string())?;
    std::fs::write(dir.join("server-ca.pem"), keys.server_ca.cert_pem())
        .with_context(|| dir.join("server-ca.pem").display().to_string())?;
    let leftovers: Vec<&str> = ["ca.key", "server-ca.key", "profile-signer.key", "data.key"]
        .into_iter()
        .filter(|f| dir.join(f).exists())
        .collect();
    if !leftovers.is_empty() {
        tracing::warn!(files = ?leftovers, dir = %dir.display(), "key files of an older version are still in the data directory; Orchard uses the keys in the database now: remove them once they are backed up");
    }
    Ok(PkiMaterial {
        ca: keys.ca,
        server_ca: keys.server_ca,
        profile_signer: keys.signer,
        data_key: keys.data_key,
    })
}

/// A renewed key and the certificate it replaces (what the compare-and-swap expects to find).
type Replacement = (ServerKeyRecord, Vec<u8>);

/// The replacements `orchard serve` makes, if any: a new server CA (and a signer from it) when the stored one
/// is near expiry or does not cover the server's names, else a new signer when the stored one is near expiry
/// or not issued by the server CA.
fn renewals(
    keys: &OpenedKeys,
    kek: &Kek,
    dns: &[String],
    ips: &[IpAddr],
    now: UnixTime,
) -> Result<Option<Vec<Replacement>>> {
    let server_ca_fits = !needs_renewal(keys.server_ca.identity(), now)
        && keys.server_ca.permits_server_names(dns, ips);
    let mut replacements = Vec::new();
    let server_ca = if server_ca_fits {
        None
    } else {
        let ca = CertificateAuthority::generate_server_ca(
            "Orchard Server CA",
            dns,
            ips,
            now,
            CA_VALIDITY_DAYS,
        )?;
        tracing::warn!(?dns, ?ips, "made a new server CA for the server's names: devices enrolled under the previous one do not trust it until they are given it");
        replacements.push((
            sealed_identity(kek, SERVER_CA, ca.identity(), now)?,
            keys.server_ca_stored.clone(),
        ));
        Some(ca)
    };
    let issuer = server_ca.as_ref().unwrap_or(&keys.server_ca);
    if server_ca.is_some()
        || needs_renewal(&keys.signer, now)
        || !issuer.is_issued_by_me(&keys.signer.cert_der())
    {
        let signer =
            issuer.issue_signing_identity("Orchard Profile Signing", now, LEAF_VALIDITY_DAYS)?;
        replacements.push((
            sealed_identity(kek, PROFILE_SIGNER, &signer, now)?,
            keys.signer_stored.clone(),
        ));
    }
    Ok((!replacements.is_empty()).then_some(replacements))
}

/// The development TLS identity (a file of the data directory, each node its own), issued by the server CA for
/// `dns`/`ips`; re-issued when missing, within 30 days of expiry, not issued by the current server CA, or an RSA
/// key made by an older Orchard (devices trust the server CA, not this leaf, so a new leaf changes nothing for
/// them, and its P-256 key makes every full handshake cheaper).
pub fn tls_identity(
    dir: &Path,
    server_ca: &CertificateAuthority,
    dns: &[String],
    ips: &[IpAddr],
    now: UnixTime,
) -> Result<Identity> {
    let tls = match read_pair(dir, "tls")? {
        Some(p) => Some(Identity::from_pem(&p.cert, &p.key)?),
        None => None,
    };
    Ok(match tls {
        Some(t)
            if !needs_renewal(&t, now)
                && server_ca.is_issued_by_me(&t.cert_der())
                && t.has_ec_key() =>
        {
            t
        }
        _ => {
            let t = server_ca.issue_tls_server(dns, ips, now, LEAF_VALIDITY_DAYS)?;
            write_pair(dir, "tls", &t)?;
            tracing::info!("issued a self-signed TLS certificate from the Orchard server CA");
            t
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixTime = UnixTime(1_780_000_000);

    #[test]
    fn the_development_tls_identity_is_p256_and_an_older_rsa_one_is_replaced() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let ca = CertificateAuthority::generate("Orchard Server CA", NOW, 3650)?;
        let ips: Vec<IpAddr> = vec!["127.0.0.1".parse()?];
        let first = tls_identity(dir.path(), &ca, &[], &ips, NOW)?;
        assert!(first.has_ec_key());
        // Kept while valid: a restart serves the same certificate.
        let again = tls_identity(dir.path(), &ca, &[], &ips, NOW)?;
        assert_eq!(again.cert_der(), first.cert_der());
        // An RSA pair from an older Orchard (issued by the same CA) is replaced by a P-256 one.
        let rsa = ca.issue_signing_identity("Orchard server (127.0.0.1)", NOW, 397)?;
        write_pair(dir.path(), "tls", &rsa)?;
        let replaced = tls_identity(dir.path(), &ca, &[], &ips, NOW)?;
        assert!(replaced.has_ec_key());
        assert_ne!(replaced.cert_der(), rsa.cert_der());
        let on_disk = read_pair(dir.path(), "tls")?.expect("written");
        assert_eq!(
            Identity::from_pem(&on_disk.cert, &on_disk.key)?.cert_der(),
            replaced.cert_der()
        );
        Ok(())
    }
}
