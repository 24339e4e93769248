//! `orchard backup` and `orchard restore`. A backup is one file, sealed under a key derived from an operator's
//! passphrase (orchard_pki::backup): a manifest (format, schema version, the key-encryption key, the CAs'
//! fingerprints) followed, on SQLite, by a consistent copy of the whole database taken while the server runs.
//! The database's own keys (CAs, profile signer, data key) are in the database, sealed under the KEK, so the
//! backup holds everything a restored server needs and, without the passphrase, nothing anyone can use.
//!
//! On PostgreSQL the database is backed up with pg_dump and restored with pg_restore (docs/backup.md); the
//! backup file then carries the KEK alone, and `orchard restore` checks that it opens the restored database's
//! keys before it writes the KEK file.
//!
//! A restore writes nothing until the whole file has authenticated: the database goes to a temporary file next
//! to its place and is renamed into place at the end; a wrong passphrase, a damaged or cut file, a newer schema,
//! an existing database or a different KEK (without `--force`) leave the target as it was.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use orchard_pki::backup::{OpenError, Opener, ScryptParams, Sealer, HEADER_LEN};
use orchard_store::{Backend, Store};
use orchard_types::{Clock, Secret, SystemClock, UnixTime};
use serde::{Deserialize, Serialize};

use crate::cli::progress::{Mode, Progress};
use crate::config::Config;
use crate::config_flags::StorageArgs;
use crate::pki_files;

/// The manifest format this code writes and reads.
const MANIFEST_FORMAT: u32 = 1;
/// A manifest is a few hundred bytes; anything longer than this is not one.
const MAX_MANIFEST_LEN: u32 = 64 * 1024;
/// Passphrases shorter than this are refused when a backup is made.
const MIN_PASSPHRASE_CHARS: usize = 16;
const PASSPHRASE_ENV: &str = "ORCHARD_BACKUP_PASSPHRASE";

#[derive(Args, Clone)]
pub struct BackupArgs {
    #[command(flatten)]
    storage: StorageArgs,
    /// The backup file to write (0600; replaced only with --force), or a directory to write
    /// `orchard-<UTC time>.backup` into.
    #[arg(long)]
    out: PathBuf,
    /// A file whose first line is the passphrase (16 characters or more) the backup is encrypted under; or the
    /// passphrase itself in ORCHARD_BACKUP_PASSPHRASE.
    #[arg(long, env = "ORCHARD_BACKUP_PASSPHRASE_FILE")]
    passphrase_file: Option<PathBuf>,
    /// Replace an existing file at --out.
    #[arg(long)]
    force: bool,
}

#[derive(Args, Clone)]
pub struct RestoreArgs {
    #[command(flatten)]
    storage: StorageArgs,
    /// The backup file `orchard backup` wrote.
    #[arg(long)]
    from: PathBuf,
    /// A file whose first line is the backup's passphrase; or the passphrase itself in ORCHARD_BACKUP_PASSPHRASE.
    #[arg(long, env = "ORCHARD_BACKUP_PASSPHRASE_FILE")]
    passphrase_file: Option<PathBuf>,
    /// Replace an existing SQLite database and a different key-encryption key file (stop the server first).
    #[arg(long)]
    force: bool,
}

/// What a backup holds besides the database. Not `Debug`: it carries the KEK.
#[derive(Serialize, Deserialize)]
struct Manifest {
    format: u32,
    orchard_version: String,
    created_at: i64,
    /// `sqlite` (the database follows the manifest) or `postgres` (it is in a pg_dump of its own).
    backend: String,
    /// The newest migration applied to the database when it was backed up.
    schema_version: i64,
    /// The key-encryption key, base64.
    kek: String,
    device_ca_sha256: String,
    server_ca_sha256: String,
    /// Bytes of the SQLite database that follow the manifest (0 on PostgreSQL).
    database_bytes: u64,
}

fn backend_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    }
}

/// The passphrase from `--passphrase-file` (its first line) or ORCHARD_BACKUP_PASSPHRASE.
fn passphrase(file: &Option<PathBuf>) -> Result<Secret<String>> {
    let text = match (file, std::env::var(PASSPHRASE_ENV).ok()) {
        (Some(_), Some(_)) => {
            bail!("give the passphrase once: --passphrase-file or {PASSPHRASE_ENV}, not both")
        }
        (Some(path), None) => std::fs::read_to_string(path)
            .with_context(|| format!("reading --passphrase-file {}", path.display()))?
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned(),
        (None, Some(text)) => text,
        (None, None) => bail!(
            "no passphrase: give --passphrase-file PATH (its first line) or set {PASSPHRASE_ENV}"
        ),
    };
    if text.is_empty() {
        bail!("the passphrase is empty");
    }
    Ok(Secret::new(text))
}

/// The database's URL as the configuration names it (SQLite in the data directory when none), without
/// creating anything.
fn target_database_url(config: &Config) -> Result<String> {
    if let Some(url) = config.database_url()? {
        return Ok(url);
    }
    let data_dir = &config.storage.data_dir;
    let absolute = if data_dir.is_absolute() {
        data_dir.clone()
    } else {
        std::env::current_dir()?.join(data_dir)
    };
    Ok(format!(
        "sqlite://{}",
        absolute.join("orchard.db").display()
    ))
}

/// Where the KEK goes on restore (and is read from on backup): `storage.kek_file`, else `kek` in the data dir.
fn kek_path(config: &Config) -> PathBuf {
    config
        .storage
        .kek_file
        .clone()
        .unwrap_or_else(|| config.storage.data_dir.join(pki_files::KEK_FILE))
}

/// `<path>` with `suffix` appended to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// A new file for the owner alone (0600), replacing one left by an earlier failed attempt.
fn create_private_file(path: &Path) -> Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))
}

/// Seals a byte stream chunk by chunk into the backup file.
struct SealingWriter<'a> {
    sealer: Sealer,
    buffer: Vec<u8>,
    out: std::fs::File,
    progress: &'a Progress,
}

impl SealingWriter<'_> {
    fn write(&mut self, mut data: &[u8]) -> Result<()> {
        let size = self.sealer.chunk_size();
        while !data.is_empty() {
            let take = (size - self.buffer.len()).min(data.len());
            let (now, rest) = data.split_at(take);
            self.buffer.extend_from_slice(now);
            data = rest;
            if self.buffer.len() == size {
                let sealed = self.sealer.seal_chunk(&self.buffer, false)?;
                self.out.write_all(&sealed).context("writing the backup")?;
                self.progress.advance(self.buffer.len() as u64);
                self.buffer.clear();
            }
        }
        Ok(())
    }

    /// Seals what is left as the last chunk (empty when the stream ended on a chunk boundary).
    fn finish(mut self) -> Result<std::fs::File> {
        let sealed = self.sealer.seal_chunk(&self.buffer, true)?;
        self.out.write_all(&sealed).context("writing the backup")?;
        self.progress.advance(self.buffer.len() as u64);
        Ok(self.out)
    }
}

/// Where the backup goes: `--out` itself, or in `--out` when it is a directory a file named after the time
/// (`orchard-2026-12-04T211300Z.backup`), so a timer can write one a day into the same directory.
fn backup_path(out: &Path, now: UnixTime) -> PathBuf {
    if out.is_dir() {
        out.join(format!(
            "orchard-{}.backup",
            now.to_rfc3339().replace(':', "")
        ))
    } else {
        out.to_owned()
    }
}

/// `orchard backup --out FILE`.
pub async fn backup(args: BackupArgs) -> Result<()> {
    crate::init_logging(false);
    let passphrase = passphrase(&args.passphrase_file)?;
    if passphrase.expose().chars().count() < MIN_PASSPHRASE_CHARS {
        bail!("the passphrase must have {MIN_PASSPHRASE_CHARS} characters or more");
    }
    let out = backup_path(&args.out, SystemClock.now());
    if out.exists() && !args.force {
        bail!(
            "{} exists; choose another --out, or --force to replace it",
            out.display()
        );
    }
    let config = args.storage.resolve()?.config;
    let url = target_database_url(&config)?;
    // The database is copied as it stands: a binary newer than the running server must not migrate it.
    if let Some(file) = orchard_store::sqlite_database_file(&url) {
        if !file.is_file() {
            bail!("there is no database at {}", file.display());
        }
    }
    match Store::schema_version_without_migrating(&url)
        .await
        .context("opening the database")?
    {
        Some(_) => {}
        None => bail!(
            "the database at {} has no Orchard schema",
            url_for_people(&url)
        ),
    }
    let store = Store::connect_without_migrating(&url)
        .await
        .context("opening the database")?;
    let result = write_backup(&out, &config, &store, &passphrase).await;
    store.close().await;
    result
}

async fn write_backup(
    out: &Path,
    config: &Config,
    store: &Store,
    passphrase: &Secret<String>,
) -> Result<()> {
    let stored = store
        .server_keys()
        .await
        .context("reading the keys stored in the database")?;
    if stored.is_empty() {
        bail!("this database holds no Orchard keys yet: start `orchard serve` on it once, then back it up");
    }
    let kek = pki_files::configured_kek_text(&crate::kek_config(config), &config.storage.data_dir)?
        .context("this node has no key-encryption key (storage.kek_file, ORCHARD_KEK or kek in the data directory): a backup without it is useless")?;
    let fingerprints = pki_files::open_with_kek(&stored, &kek)
        .context("the configured key-encryption key does not open this database's keys")?;
    let backend = store.backend();
    let schema_version = store.schema_version().await?;

    // The database copy goes to a private directory next to the backup and is removed with it.
    let out_dir = match out.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let work = tempfile::Builder::new()
        .prefix(".orchard-backup-")
        .tempdir_in(&out_dir)
        .with_context(|| format!("making a private directory in {}", out_dir.display()))?;
    let copy = work.path().join("orchard.db");
    let database_bytes = match backend {
        Backend::Sqlite => {
            store
                .copy_sqlite_into(&copy)
                .await
                .context("copying the database")?;
            std::fs::metadata(&copy)?.len()
        }
        Backend::Postgres => 0,
    };
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        orchard_version: env!("CARGO_PKG_VERSION").to_owned(),
        created_at: SystemClock.now().0,
        backend: backend_name(backend).to_owned(),
        schema_version,
        kek: kek.expose().clone(),
        device_ca_sha256: fingerprints.device_ca_sha256.clone(),
        server_ca_sha256: fingerprints.server_ca_sha256.clone(),
        database_bytes,
    };
    let manifest_json = serde_json::to_vec(&manifest)?;

    let partial = with_suffix(out, ".partial");
    let written = seal_into(
        &partial,
        passphrase,
        &manifest_json,
        (backend == Backend::Sqlite).then_some(copy.as_path()),
        database_bytes,
    );
    if let Err(e) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, out)
        .with_context(|| format!("moving the backup to {}", out.display()))?;
    drop(work);

    println!("{}", out.display());
    eprintln!(
        "backup of the {} database (schema version {schema_version}) and its key-encryption key written to {}; \
         device CA sha256 {}",
        backend_name(backend),
        out.display(),
        fingerprints.device_ca_sha256
    );
    if backend == Backend::Postgres {
        eprintln!(
            "PostgreSQL: this file holds the key material only; back the database up with \
             `pg_dump --format=custom` (docs/backup.md) and keep both"
        );
    }
    Ok(())
}

/// Writes the sealed backup: header, then the manifest's length and the manifest, then the database copy.
fn seal_into(
    path: &Path,
    passphrase: &Secret<String>,
    manifest_json: &[u8],
    database: Option<&Path>,
    database_bytes: u64,
) -> Result<()> {
    let sealer = Sealer::new(passphrase.expose().as_bytes(), ScryptParams::default())?;
    let mut out = create_private_file(path)?;
    out.write_all(sealer.header())
        .context("writing the backup")?;
    let total = 4 + manifest_json.len() as u64 + database_bytes;
    let progress = Progress::counted(Mode::for_stderr(), "backup", total);
    let mut writer = SealingWriter {
        sealer,
        buffer: Vec::new(),
        out,
        progress: &progress,
    };
    let manifest_len = u32::try_from(manifest_json.len())?;
    writer.write(&manifest_len.to_be_bytes())?;
    writer.write(manifest_json)?;
    if let Some(database) = database {
        let mut file = std::fs::File::open(database)
            .with_context(|| format!("reading {}", database.display()))?;
        let mut buffer = vec![0u8; 256 * 1024];
        loop {
            let n = file
                .read(&mut buffer)
                .context("reading the database copy")?;
            if n == 0 {
                break;
            }
            writer.write(&buffer[..n])?;
        }
    }
    let finished = writer.finish().and_then(|out| {
        out.sync_all().context("writing the backup")?;
        Ok(())
    });
    progress.finish(finished.is_ok());
    finished
}

/// Reads a backup's chunks in order, each authenticated.
struct OpeningReader {
    opener: Opener,
    file: std::fs::File,
    /// Sealed bytes not read yet.
    remaining: u64,
    done: bool,
}

impl OpeningReader {
    fn open(path: &Path, passphrase: &Secret<String>) -> Result<OpeningReader> {
        let mut file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let length = file.metadata()?.len();
        let mut header = vec![0u8; HEADER_LEN];
        if length < HEADER_LEN as u64 {
            bail!("{} is not an orchard backup (too short)", path.display());
        }
        file.read_exact(&mut header)
            .with_context(|| format!("reading {}", path.display()))?;
        let opener = Opener::new(&header, passphrase.expose().as_bytes()).map_err(open_error)?;
        Ok(OpeningReader {
            opener,
            file,
            remaining: length - HEADER_LEN as u64,
            done: false,
        })
    }

    /// The next chunk's plaintext, `None` after the last.
    fn next_chunk(&mut self) -> Result<Option<(Vec<u8>, u64)>> {
        if self.done {
            return Ok(None);
        }
        let length = (self.opener.sealed_chunk_len() as u64).min(self.remaining);
        let mut sealed = vec![0u8; length as usize];
        self.file
            .read_exact(&mut sealed)
            .context("reading the backup")?;
        self.remaining -= length;
        let last = self.remaining == 0;
        let plaintext = self.opener.open_chunk(&sealed, last).map_err(open_error)?;
        self.done = last;
        Ok(Some((plaintext, length)))
    }
}

fn open_error(e: OpenError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// The manifest at the start of the stream, and the bytes of the first chunks that follow it.
fn read_manifest(reader: &mut OpeningReader, progress: &Progress) -> Result<(Manifest, Vec<u8>)> {
    let mut stream = Vec::new();
    loop {
        if stream.len() >= 4 {
            let length = u32::from_be_bytes([stream[0], stream[1], stream[2], stream[3]]);
            if length > MAX_MANIFEST_LEN {
                bail!("the backup's manifest is not one this orchard understands");
            }
            let end = 4 + length as usize;
            if stream.len() >= end {
                let manifest: Manifest = serde_json::from_slice(&stream[4..end])
                    .context("the backup's manifest is not one this orchard understands")?;
                return Ok((manifest, stream.split_off(end)));
            }
        }
        match reader.next_chunk()? {
            Some((chunk, sealed)) => {
                progress.advance(sealed);
                stream.extend(chunk);
            }
            None => bail!("the backup ends inside its manifest"),
        }
    }
}

/// `orchard restore --from FILE`.
pub async fn restore(args: RestoreArgs) -> Result<()> {
    crate::init_logging(false);
    let passphrase = passphrase(&args.passphrase_file)?;
    let config = args.storage.resolve()?.config;
    let url = target_database_url(&config)?;
    let backend = Backend::from_url(&url).map_err(|e| anyhow::anyhow!("{e}"))?;
    let kek_path = kek_path(&config);

    let total = std::fs::metadata(&args.from)
        .with_context(|| format!("reading {}", args.from.display()))?
        .len();
    let mut reader = OpeningReader::open(&args.from, &passphrase)
        .with_context(|| format!("restoring from {}", args.from.display()))?;
    let progress = Progress::counted(Mode::for_stderr(), "restore", total);
    progress.advance(HEADER_LEN as u64);
    let restored = restore_from(
        &args,
        &config,
        &url,
        backend,
        &kek_path,
        &mut reader,
        &progress,
    )
    .await;
    progress.finish(restored.is_ok());
    let summary = restored.with_context(|| format!("restoring from {}", args.from.display()))?;
    println!("{}", url_for_people(&url));
    eprintln!("{summary}");
    Ok(())
}

async fn restore_from(
    args: &RestoreArgs,
    config: &Config,
    url: &str,
    backend: Backend,
    kek_path: &Path,
    reader: &mut OpeningReader,
    progress: &Progress,
) -> Result<String> {
    let (manifest, first_bytes) = read_manifest(reader, progress)?;
    let known = Store::known_schema_version(backend);
    check_manifest(&manifest, backend, known)?;
    let kek = pki_files::normalized_kek_text(&manifest.kek, "the backup")?;
    check_kek_target(kek_path, &kek, args.force)?;

    match backend {
        Backend::Sqlite => {
            restore_sqlite(args, config, url, &manifest, first_bytes, reader, progress)?;
        }
        Backend::Postgres => {
            // The manifest is all there is; the stream must still end where the backup ended.
            if !first_bytes.is_empty() || manifest.database_bytes != 0 {
                bail!("the backup's manifest says PostgreSQL, yet a database follows it");
            }
            while let Some((chunk, sealed)) = reader.next_chunk()? {
                progress.advance(sealed);
                if !chunk.is_empty() {
                    bail!("the backup's manifest says PostgreSQL, yet a database follows it");
                }
            }
            match Store::schema_version_without_migrating(url).await? {
                None => bail!(
                    "the database is empty: restore it with pg_restore first (docs/backup.md), then run this again"
                ),
                Some(version) if version > known => bail!(
                    "the database has schema version {version} and this orchard knows up to {known}"
                ),
                Some(_) => {}
            }
        }
    }

    // The database is in place: it must hold the backup's keys, and they must open with the backup's KEK.
    let (store, _scopes) = Store::connect(url)
        .await
        .context("opening the restored database")?;
    let stored = store.server_keys().await;
    let schema_version = store.schema_version().await;
    store.close().await;
    let fingerprints = pki_files::open_with_kek(&stored?, &kek)
        .context("the backup's key-encryption key does not open the restored database's keys")?;
    if fingerprints.device_ca_sha256 != manifest.device_ca_sha256
        || fingerprints.server_ca_sha256 != manifest.server_ca_sha256
    {
        bail!(
            "the restored database's CAs are not the backup's (device CA {} instead of {}): is it the database this backup goes with?",
            fingerprints.device_ca_sha256,
            manifest.device_ca_sha256
        );
    }
    write_kek(kek_path, &kek, config)?;
    Ok(format!(
        "restored the {} database (schema version {} → {}) and its key-encryption key ({}); device CA sha256 {}",
        manifest.backend,
        manifest.schema_version,
        schema_version?,
        kek_path.display(),
        fingerprints.device_ca_sha256
    ))
}

/// Refuses a backup this build cannot restore into `backend`: another manifest format, another backend, or a
/// schema newer than the newest migration this build knows (`known`). An older schema is fine: opening the
/// restored database migrates it forward, as every start does.
fn check_manifest(manifest: &Manifest, backend: Backend, known: i64) -> Result<()> {
    if manifest.format != MANIFEST_FORMAT {
        bail!(
            "the backup's manifest has format {} (this orchard reads format {MANIFEST_FORMAT}); restore it with a newer orchard",
            manifest.format
        );
    }
    if manifest.backend != backend_name(backend) {
        bail!(
            "the backup holds a {} database and the configuration names a {} one: {}",
            manifest.backend,
            backend_name(backend),
            match backend {
                Backend::Sqlite =>
                    "restore a PostgreSQL backup with --database-url postgres://… after pg_restore",
                Backend::Postgres =>
                    "restore a SQLite backup into a data directory (without --database-url)",
            }
        );
    }
    if manifest.schema_version > known {
        bail!(
            "the backup's database has schema version {} and this orchard knows up to {known}: restore it with the orchard version that made it ({}) or a newer one",
            manifest.schema_version,
            manifest.orchard_version
        );
    }
    Ok(())
}

/// The database URL without a password, for the summary.
fn url_for_people(url: &str) -> String {
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, host))) => format!("{scheme}://…@{host}"),
        _ => url.to_owned(),
    }
}

/// Refuses, before anything is written, a KEK file or ORCHARD_KEK that holds a different key.
fn check_kek_target(path: &Path, kek: &Secret<String>, force: bool) -> Result<()> {
    if let Ok(text) = std::env::var("ORCHARD_KEK") {
        let configured = pki_files::normalized_kek_text(&text, "ORCHARD_KEK")?;
        if configured.expose() != kek.expose() {
            bail!("ORCHARD_KEK holds another key-encryption key than the backup: unset it, or set it to the backup's");
        }
        return Ok(());
    }
    if path.exists() && !force {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let existing = pki_files::normalized_kek_text(&text, &path.display().to_string())?;
        if existing.expose() != kek.expose() {
            bail!(
                "{} holds another key-encryption key than the backup; --force replaces it",
                path.display()
            );
        }
    }
    Ok(())
}

/// Writes the KEK file (0600), unless ORCHARD_KEK gives this node the key.
fn write_kek(path: &Path, kek: &Secret<String>, config: &Config) -> Result<()> {
    if std::env::var("ORCHARD_KEK").is_ok() {
        return Ok(());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if *dir == config.storage.data_dir {
            pki_files::create_private_dir(dir)?;
        }
    }
    pki_files::write_private(path, format!("{}\n", kek.expose()).as_bytes())
}

/// Restores the SQLite database of the stream: into `<file>.restoring`, renamed into place once every chunk
/// authenticated.
fn restore_sqlite(
    args: &RestoreArgs,
    config: &Config,
    url: &str,
    manifest: &Manifest,
    first_bytes: Vec<u8>,
    reader: &mut OpeningReader,
    progress: &Progress,
) -> Result<()> {
    let target = orchard_store::sqlite_database_file(url)
        .with_context(|| format!("{url} names no database file"))?;
    if target.exists() && std::fs::metadata(&target)?.len() > 0 && !args.force {
        bail!(
            "{} holds a database already; restore into an empty data directory, or --force to replace it (stop the server first)",
            target.display()
        );
    }
    let dir = target
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let created_dir = !dir.exists();
    if created_dir {
        pki_files::create_private_dir(&dir)?;
    } else if dir == config.storage.data_dir {
        // Warns when the existing data directory is open to others.
        pki_files::create_private_dir(&dir)?;
    }
    let partial = with_suffix(&target, ".restoring");
    let written = write_database(&partial, manifest, first_bytes, reader, progress);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&partial);
        if created_dir {
            let _ = std::fs::remove_dir(&dir);
        }
        return Err(e);
    }
    // A replaced database's write-ahead log must not be applied to the restored one.
    for companion in ["-wal", "-shm"] {
        let path = with_suffix(&target, companion);
        if path.exists() {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    std::fs::rename(&partial, &target)
        .with_context(|| format!("moving the restored database to {}", target.display()))
}

fn write_database(
    path: &Path,
    manifest: &Manifest,
    first_bytes: Vec<u8>,
    reader: &mut OpeningReader,
    progress: &Progress,
) -> Result<()> {
    let mut file = create_private_file(path)?;
    let mut written = first_bytes.len() as u64;
    file.write_all(&first_bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    while let Some((chunk, sealed)) = reader.next_chunk()? {
        file.write_all(&chunk)
            .with_context(|| format!("writing {}", path.display()))?;
        written += chunk.len() as u64;
        progress.advance(sealed);
    }
    if written != manifest.database_bytes {
        bail!(
            "the backup holds {written} bytes of database where its manifest says {}",
            manifest.database_bytes
        );
    }
    file.sync_all()
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn manifest(backend: &str, schema_version: i64) -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT,
            orchard_version: "0.1.0".into(),
            created_at: 1_800_000_000,
            backend: backend.into(),
            schema_version,
            kek: String::new(),
            device_ca_sha256: String::new(),
            server_ca_sha256: String::new(),
            database_bytes: 0,
        }
    }

    #[test]
    fn a_backup_of_a_newer_schema_is_refused_and_an_older_one_accepted() {
        let error = check_manifest(&manifest("sqlite", 38), Backend::Sqlite, 37)
            .unwrap_err()
            .to_string();
        assert!(error.contains("schema version 38"), "{error}");
        assert!(error.contains("knows up to 37"), "{error}");
        assert!(check_manifest(&manifest("sqlite", 37), Backend::Sqlite, 37).is_ok());
        assert!(check_manifest(&manifest("sqlite", 20), Backend::Sqlite, 37).is_ok());
    }

    #[test]
    fn a_backup_of_another_backend_or_manifest_format_is_refused() {
        let error = check_manifest(&manifest("sqlite", 37), Backend::Postgres, 37)
            .unwrap_err()
            .to_string();
        assert!(error.contains("holds a sqlite database"), "{error}");
        let mut newer = manifest("postgres", 37);
        newer.format = MANIFEST_FORMAT + 1;
        let error = check_manifest(&newer, Backend::Postgres, 37)
            .unwrap_err()
            .to_string();
        assert!(error.contains("newer orchard"), "{error}");
    }

    #[test]
    fn a_directory_gets_a_file_named_after_the_time() {
        let dir = tempfile::tempdir().unwrap();
        let now = UnixTime::parse_rfc3339("2026-12-04T21:13:05Z").unwrap();
        assert_eq!(
            backup_path(dir.path(), now),
            dir.path().join("orchard-2026-12-04T211305Z.backup")
        );
        let file = dir.path().join("mine.backup");
        assert_eq!(backup_path(&file, now), file);
    }

    #[test]
    fn the_summary_hides_the_database_password() {
        assert_eq!(
            url_for_people("postgres://orchard:secret@db.example.edu:5432/orchard"),
            "postgres://…@db.example.edu:5432/orchard"
        );
        assert_eq!(
            url_for_people("sqlite:///var/lib/orchard/orchard.db"),
            "sqlite:///var/lib/orchard/orchard.db"
        );
    }
}
