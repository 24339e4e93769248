//! Backups that restore (issue 15 point 5), with the real binary and simulated iPads, on SQLite and PostgreSQL:
//! two departments, iPads enrolled, a ClearPasscode and a DeviceInformation queued (the first carries the
//! UnlockToken the iPad escrowed, sealed under the data key, put in when it is sent), an audit log; a backup
//! taken while the server runs (`orchard backup`; on PostgreSQL `pg_dump --format=custom` beside it); a restore
//! into a fresh data directory (`orchard restore`; on PostgreSQL `pg_restore` into a fresh database first); the
//! old server stopped and `orchard serve` started on the restored storage at the same address. The restored
//! server has the same tenants, devices, queued commands and audit log, answers SCEP GetCACert byte for byte as
//! before, the iPads keep talking to it with their identities, and the ClearPasscode reaches the iPad with the
//! right UnlockToken (the sealed secret opened).
//!
//! On PostgreSQL the restored database is first taken back to before its three newest migrations, which the restore
//! applies again (an older backup comes forward).
//!
//! The refusals, each leaving the target as it was: a wrong passphrase, a flipped byte, a cut file, a restore
//! over an existing database (SQLite) or an empty database (PostgreSQL), a different KEK file without --force, a
//! backup with no or a short passphrase.

use std::path::{Path, PathBuf};
use std::process::Output;

use anyhow::{bail, ensure, Context, Result};
use orchard_sim::SimDevice;
use orchard_testkit::server::{spawn_node, TestServer};
use orchard_testkit::{Backend, TestDatabase};
use serde_json::{json, Value};

const PASSPHRASE: &str = "a long passphrase for the tests";

fn run(mut command: std::process::Command) -> Result<Output> {
    Ok(command.output()?)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs the command; an error with its stderr unless it succeeded.
fn succeed(command: std::process::Command, what: &str) -> Result<Output> {
    let out = run(command)?;
    if !out.status.success() {
        bail!("{what} failed: {}", stderr(&out));
    }
    Ok(out)
}

/// Runs the command, which must fail with `expected` in its stderr.
fn refused(command: std::process::Command, expected: &str) -> Result<()> {
    let out = run(command)?;
    ensure!(!out.status.success(), "expected a refusal ({expected})");
    let text = stderr(&out);
    ensure!(
        text.contains(expected),
        "the refusal does not say {expected:?}: {text}"
    );
    ensure!(!text.contains("panicked"), "{text}");
    Ok(())
}

/// `orchard backup --out FILE` on the server's storage.
fn backup_command(
    server: &TestServer,
    out: &Path,
    passphrase_file: Option<&Path>,
) -> Result<std::process::Command> {
    let out = out.display().to_string();
    let mut args = vec!["backup", "--out", out.as_str()];
    let passphrase_file = passphrase_file.map(|p| p.display().to_string());
    if let Some(p) = &passphrase_file {
        args.extend(["--passphrase-file", p.as_str()]);
    }
    let mut command = server.database_command(&args)?;
    command.env_remove("ORCHARD_BACKUP_PASSPHRASE");
    Ok(command)
}

/// `orchard restore --from FILE` into `data_dir` (and `database_url` on PostgreSQL).
fn restore_command(
    from: &Path,
    passphrase_file: &Path,
    data_dir: &Path,
    database_url: Option<&str>,
    extra: &[&str],
) -> Result<std::process::Command> {
    let mut command = std::process::Command::new(orchard_testkit::server::orchard_binary()?);
    command
        .args(["restore", "--from"])
        .arg(from)
        .arg("--passphrase-file")
        .arg(passphrase_file)
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra)
        .env_remove("ORCHARD_KEK")
        .env_remove("ORCHARD_BACKUP_PASSPHRASE");
    if let Some(url) = database_url {
        command.arg("--database-url").arg(url);
    }
    Ok(command)
}

/// What must come back, as the API shows it.
#[derive(Debug, PartialEq)]
struct Observed {
    tenants: Vec<(String, String)>,
    /// id, udid, serial, tenant, enrollment state.
    devices: Vec<(String, String, String, String, String)>,
    /// device id, command uuid, type, status.
    commands: Vec<(String, String, String, String)>,
    audit_ids: Vec<String>,
    ca_cert: Vec<u8>,
}

fn text(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

async fn observe(server: &TestServer) -> Result<Observed> {
    let tenants = server.get("/api/v1/tenants?limit=1000").await?;
    let mut tenants: Vec<(String, String)> = tenants["items"]
        .as_array()
        .context("tenants")?
        .iter()
        .map(|t| (text(t, "id"), text(t, "code")))
        .collect();
    tenants.sort();
    let mut devices = Vec::new();
    let mut commands = Vec::new();
    for d in server.devices().await? {
        let id = text(&d, "id");
        devices.push((
            id.clone(),
            text(&d, "udid"),
            text(&d, "serial_number"),
            text(&d, "tenant_id"),
            text(&d, "enrollment_state"),
        ));
        for c in server.commands_of(&id).await? {
            commands.push((
                id.clone(),
                text(&c, "command_uuid"),
                text(&c, "request_type"),
                text(&c, "status"),
            ));
        }
    }
    devices.sort();
    commands.sort();
    let audit = server.get("/api/v1/audit?limit=1000").await?;
    let mut audit_ids: Vec<String> = audit["items"]
        .as_array()
        .context("audit items")?
        .iter()
        .map(|e| text(e, "id"))
        .collect();
    audit_ids.sort();
    let resp = server
        .http
        .get(server.url("/scep?operation=GetCACert"))
        .send()
        .await?;
    ensure!(resp.status() == 200, "GetCACert: {}", resp.status());
    let ca_cert = resp.bytes().await?.to_vec();
    Ok(Observed {
        tenants,
        devices,
        commands,
        audit_ids,
        ca_cert,
    })
}

/// The PostgreSQL client tool `name` (pg_dump, pg_restore): on PATH, else PostgreSQL 15's directory.
fn postgres_tool(name: &str) -> PathBuf {
    let versioned = PathBuf::from("/usr/lib/postgresql/15/bin").join(name);
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
        .unwrap_or(false);
    if on_path || !versioned.is_file() {
        PathBuf::from(name)
    } else {
        versioned
    }
}

fn files_in(dir: &Path) -> Result<Vec<String>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    names.sort();
    Ok(names)
}

#[cfg(unix)]
fn mode(path: &Path) -> Result<u32> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o777)
}

async fn scenario(backend: Backend) -> Result<()> {
    let Some(mut server) = TestServer::start(backend).await? else {
        return Ok(());
    };
    let work = tempfile::tempdir()?;
    let passphrase_file = work.path().join("passphrase");
    std::fs::write(&passphrase_file, format!("{PASSPHRASE}\n"))?;
    let wrong_passphrase = work.path().join("wrong");
    std::fs::write(&wrong_passphrase, "not the passphrase of this backup\n")?;

    // Two departments, iPads enrolled, commands queued (the ClearPasscode needs the sealed UnlockToken).
    let physics = server.create_tenant("Physics", "physics").await?;
    let chemistry = server.create_tenant("Chemistry", "chemistry").await?;
    let config = server.sim_config();
    let mut physics_ipads = server.enroll_devices(&config, &physics, 2).await?;
    let mut chemistry_ipads = server.enroll_devices(&config, &chemistry, 1).await?;
    let first = server.device_by_udid(&physics_ipads[0].state.udid).await?;
    let first_id = text(&first, "id");
    ensure!(
        !physics_ipads[0].state.unlock_token.is_empty(),
        "the iPad escrowed no UnlockToken"
    );
    let clear = server
        .post(
            &format!("/api/v1/devices/{first_id}/commands"),
            json!({"type": "ClearPasscode", "confirm_serial": text(&first, "serial_number")}),
        )
        .await?;
    ensure!(clear["status"] == "queued", "{clear}");
    let chem = server
        .device_by_udid(&chemistry_ipads[0].state.udid)
        .await?;
    let info = server
        .post(
            &format!("/api/v1/devices/{}/commands", text(&chem, "id")),
            json!({"type": "DeviceInformation", "queries": ["OSVersion"]}),
        )
        .await?;
    ensure!(info["status"] == "queued", "{info}");
    let before = observe(&server).await?;
    ensure!(
        before.tenants.len() == 2 && before.devices.len() == 3,
        "{before:?}"
    );
    ensure!(
        before.commands.iter().filter(|c| c.3 == "queued").count() == 2,
        "{:?}",
        before.commands
    );
    ensure!(!before.audit_ids.is_empty(), "no audit events");

    // Bad input to backup: no passphrase, a short one. Nothing is written.
    let backup_file = work.path().join("orchard.backup");
    let mut no_passphrase = backup_command(&server, &backup_file, None)?;
    no_passphrase
        .env_remove("ORCHARD_BACKUP_PASSPHRASE")
        .env_remove("ORCHARD_BACKUP_PASSPHRASE_FILE");
    refused(no_passphrase, "--passphrase-file")?;
    let short = work.path().join("short");
    std::fs::write(&short, "too short\n")?;
    refused(
        backup_command(&server, &backup_file, Some(&short))?,
        "16 characters",
    )?;
    // No database where the configuration points: refused, and nothing is created there.
    let nowhere = work.path().join("no-data-dir");
    let mut no_database = std::process::Command::new(orchard_testkit::server::orchard_binary()?);
    no_database
        .args(["backup", "--out"])
        .arg(&backup_file)
        .arg("--passphrase-file")
        .arg(&passphrase_file)
        .arg("--data-dir")
        .arg(&nowhere)
        .env_remove("ORCHARD_DATABASE_URL");
    refused(no_database, "there is no database")?;
    ensure!(
        !nowhere.exists(),
        "a refused backup made the data directory"
    );
    ensure!(!backup_file.exists(), "a refused backup wrote its file");

    // The backup, while the server runs.
    let out = succeed(
        backup_command(&server, &backup_file, Some(&passphrase_file))?,
        "orchard backup",
    )?;
    ensure!(
        String::from_utf8_lossy(&out.stdout).trim() == backup_file.display().to_string(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    ensure!(stderr(&out).contains("backup: done"), "{}", stderr(&out));
    #[cfg(unix)]
    ensure!(mode(&backup_file)? == 0o600, "the backup file is not 0600");
    let sealed = std::fs::read(&backup_file)?;
    let kek_text = std::fs::read_to_string(server.kek_path())?;
    for clear in [kek_text.trim(), "Chemistry", "chemistry", "SQLite format"] {
        ensure!(
            !String::from_utf8_lossy(&sealed).contains(clear),
            "the backup carries {clear:?} in clear"
        );
    }
    ensure!(
        files_in(work.path())?
            .iter()
            .all(|f| !f.starts_with(".orchard-backup")),
        "the database copy was left behind: {:?}",
        files_in(work.path())?
    );
    // Refused again without --force: the file exists.
    refused(
        backup_command(&server, &backup_file, Some(&passphrase_file))?,
        "--force",
    )?;

    // PostgreSQL: the database itself with pg_dump, restored with pg_restore into a fresh database.
    let dump = work.path().join("orchard.pgdump");
    let restored_database = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => {
            let url = server.shared_database_url();
            let mut pg_dump = std::process::Command::new(postgres_tool("pg_dump"));
            pg_dump
                .args(["--format=custom", "--file"])
                .arg(&dump)
                .arg("--dbname")
                .arg(&url);
            succeed(pg_dump, "pg_dump")?;
            Some(
                TestDatabase::create(Backend::Postgres)
                    .await?
                    .context("a PostgreSQL database")?,
            )
        }
    };
    let restored_url = restored_database.as_ref().map(|d| d.url().to_owned());

    // The refusals. Each leaves the target as it was: no data directory appears.
    let target_root = tempfile::tempdir()?;
    let target = target_root.path().join("data");
    refused(
        restore_command(
            &backup_file,
            &wrong_passphrase,
            &target,
            restored_url.as_deref(),
            &[],
        )?,
        "wrong passphrase",
    )?;
    let mut flipped = sealed.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    let flipped_file = work.path().join("flipped.backup");
    std::fs::write(&flipped_file, &flipped)?;
    refused(
        restore_command(
            &flipped_file,
            &passphrase_file,
            &target,
            restored_url.as_deref(),
            &[],
        )?,
        "damaged or was changed",
    )?;
    let cut_file = work.path().join("cut.backup");
    std::fs::write(&cut_file, &sealed[..sealed.len() - 100])?;
    refused(
        restore_command(
            &cut_file,
            &passphrase_file,
            &target,
            restored_url.as_deref(),
            &[],
        )?,
        "damaged or was changed",
    )?;
    let not_a_backup = work.path().join("not.backup");
    std::fs::write(&not_a_backup, vec![b'x'; 200])?;
    refused(
        restore_command(
            &not_a_backup,
            &passphrase_file,
            &target,
            restored_url.as_deref(),
            &[],
        )?,
        "not an orchard backup",
    )?;
    ensure!(
        !target.exists(),
        "a refused restore left {:?}",
        files_in(&target)?
    );
    // A different KEK where the restore would write its own: refused without --force.
    std::fs::create_dir_all(&target)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o700))?;
    }
    std::fs::write(
        target.join("kek"),
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",
    )?;
    refused(
        restore_command(
            &backup_file,
            &passphrase_file,
            &target,
            restored_url.as_deref(),
            &[],
        )?,
        "another key-encryption key",
    )?;
    ensure!(
        files_in(&target)? == ["kek"],
        "a refused restore wrote {:?}",
        files_in(&target)?
    );
    std::fs::remove_file(target.join("kek"))?;

    match backend {
        Backend::Sqlite => {
            // Over the running server's own database: refused, and the database is untouched.
            let database = server.data_dir.join("orchard.db");
            let size = std::fs::metadata(&database)?.len();
            refused(
                restore_command(&backup_file, &passphrase_file, &server.data_dir, None, &[])?,
                "holds a database already",
            )?;
            ensure!(std::fs::metadata(&database)?.len() == size);
            ensure!(!server.data_dir.join("orchard.db.restoring").exists());
        }
        Backend::Postgres => {
            // Before pg_restore the database is empty: refused, and nothing is created in it.
            let url = restored_url.as_deref().context("restored url")?;
            refused(
                restore_command(&backup_file, &passphrase_file, &target, Some(url), &[])?,
                "pg_restore first",
            )?;
            ensure!(
                orchard_store::Store::schema_version_without_migrating(url)
                    .await?
                    .is_none(),
                "the refused restore created a schema"
            );
            ensure!(!target.join("kek").exists());
            let mut pg_restore = std::process::Command::new(postgres_tool("pg_restore"));
            pg_restore
                .args([
                    "--no-owner",
                    "--no-privileges",
                    "--exit-on-error",
                    "--dbname",
                ])
                .arg(url)
                .arg(&dump);
            succeed(pg_restore, "pg_restore")?;
            // An older schema comes forward: the restored database is taken back to before migration 37 (the
            // effects of 43 to 37 undone, their rows forgotten), as a dump of that version would be;
            // `orchard restore` opens it the way every start does, which applies 37 to 43 again. A new migration
            // must be undone here too (newest first), or the restored schema is not older than the binary's.
            let mut db = restored_database
                .as_ref()
                .context("restored database")?
                .connect()
                .await?;
            for statement in [
                "ALTER TABLE tenants DROP COLUMN smart_groups_revision",
                "DELETE FROM _sqlx_migrations WHERE version = 43",
                "ALTER TABLE devices DROP COLUMN plan_inputs_digest",
                "DELETE FROM _sqlx_migrations WHERE version = 42",
                "ALTER TABLE reconcile_dirty ADD CONSTRAINT reconcile_dirty_device_id_fkey \
                 FOREIGN KEY (device_id) REFERENCES devices (id) ON DELETE CASCADE",
                "DELETE FROM _sqlx_migrations WHERE version = 41",
                "DROP INDEX reconcile_dirty_marked",
                "CREATE INDEX reconcile_dirty_marked ON reconcile_dirty (marked_at)",
                "DELETE FROM _sqlx_migrations WHERE version = 40",
                "ALTER TABLE devices DROP COLUMN facts_digest",
                "DELETE FROM _sqlx_migrations WHERE version = 39",
                "DROP INDEX commands_status_queued_at_idx",
                "DELETE FROM _sqlx_migrations WHERE version = 38",
                "ALTER TABLE commands DROP COLUMN body_id",
                "ALTER TABLE command_history DROP COLUMN body_id",
                "DROP TABLE command_bodies",
                "DELETE FROM _sqlx_migrations WHERE version = 37",
            ] {
                sqlx::query(statement).execute(&mut db).await?;
            }
            sqlx::Connection::close(db).await?;
            let older = orchard_store::Store::schema_version_without_migrating(url).await?;
            ensure!(
                older.is_some_and(|v| v < orchard_store::Store::known_schema_version(backend)),
                "{older:?}"
            );
        }
    }

    // The restore.
    let out = succeed(
        restore_command(
            &backup_file,
            &passphrase_file,
            &target,
            restored_url.as_deref(),
            &[],
        )?,
        "orchard restore",
    )?;
    ensure!(stderr(&out).contains("restore: done"), "{}", stderr(&out));
    ensure!(
        std::fs::read_to_string(target.join("kek"))?.trim() == kek_text.trim(),
        "the restored KEK differs"
    );
    if let Some(url) = &restored_url {
        ensure!(
            orchard_store::Store::schema_version_without_migrating(url).await?
                == Some(orchard_store::Store::known_schema_version(backend)),
            "the restore did not bring the older schema forward"
        );
    }
    #[cfg(unix)]
    {
        ensure!(mode(&target.join("kek"))? == 0o600, "the KEK is not 0600");
        if backend == Backend::Sqlite {
            ensure!(
                mode(&target.join("orchard.db"))? == 0o600,
                "the database is not 0600"
            );
        }
    }

    // The old server goes; a server on the restored storage takes its place at the same address.
    let address = server
        .base_url
        .strip_prefix("https://")
        .context("base url")?
        .to_owned();
    server.stop();
    let database_url = match &restored_url {
        Some(url) => url.clone(),
        None => format!("sqlite://{}", target.join("orchard.db").display()),
    };
    let node = spawn_node(&target, &database_url, &["--listen".to_owned(), address]).await?;
    ensure!(node.base_url == server.base_url, "{}", node.base_url);
    ensure!(
        std::fs::read(target.join("server-ca.pem"))? == server.ca_pem,
        "the restored server CA differs"
    );
    ensure!(
        std::fs::read(target.join("ca.pem"))? == server.device_ca_pem,
        "the restored device CA differs"
    );
    let after = observe(&server).await?;
    ensure!(
        after.ca_cert == before.ca_cert,
        "GetCACert answers another CA"
    );
    ensure!(after.tenants == before.tenants, "{:?}", after.tenants);
    ensure!(after.devices == before.devices, "{:?}", after.devices);
    ensure!(after.commands == before.commands, "{:?}", after.commands);
    ensure!(
        before
            .audit_ids
            .iter()
            .all(|id| after.audit_ids.contains(id)),
        "audit events are missing after the restore"
    );

    // The iPads talk to the restored server with their identities; the ClearPasscode carries the UnlockToken
    // (sealed under the restored data key) and the iPad accepts it.
    physics_ipads[0]
        .poll()
        .await
        .context("polling the restored server")?;
    chemistry_ipads[0].poll().await?;
    physics_ipads[1].poll().await?;
    let statuses: Vec<(String, String)> = server
        .commands_of(&first_id)
        .await?
        .iter()
        .map(|c| (text(c, "request_type"), text(c, "status")))
        .collect();
    ensure!(
        statuses.contains(&("ClearPasscode".to_owned(), "acknowledged".to_owned())),
        "{statuses:?}"
    );
    ensure!(
        !physics_ipads[0].state.passcode_present,
        "the UnlockToken did not open the passcode"
    );
    let info_status: Vec<String> = server
        .commands_of(&text(&chem, "id"))
        .await?
        .iter()
        .filter(|c| text(c, "request_type") == "DeviceInformation")
        .map(|c| text(c, "status"))
        .collect();
    ensure!(
        info_status.contains(&"acknowledged".to_owned()),
        "{info_status:?}"
    );
    // A new iPad enrolls on the restored server.
    let mut newcomer = SimDevice::new_random(&config);
    newcomer
        .enroll(&server.enrollment_link(&physics, None).await?)
        .await
        .context("enrolling on the restored server")?;
    drop(node);

    // Again over the restored data directory: refused without --force; with it, the database (and the WAL the
    // server left) is replaced by the backup's.
    if backend == Backend::Sqlite {
        refused(
            restore_command(&backup_file, &passphrase_file, &target, None, &[])?,
            "holds a database already",
        )?;
        succeed(
            restore_command(&backup_file, &passphrase_file, &target, None, &["--force"])?,
            "orchard restore --force",
        )?;
        ensure!(
            !target.join("orchard.db-wal").exists()
                && !target.join("orchard.db.restoring").exists(),
            "{:?}",
            files_in(&target)?
        );
        let (store, _) = orchard_store::Store::connect(&format!(
            "sqlite://{}",
            target.join("orchard.db").display()
        ))
        .await?;
        let keys = store.server_keys().await?.len();
        store.close().await;
        ensure!(keys > 0, "the replaced database holds no keys");
    }
    drop(restored_database);
    Ok(())
}

orchard_testkit::backend_tests! {
    backup_restores_the_same_data_and_ca => scenario;
}
