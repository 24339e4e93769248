//! The commands the guides quote (`docs/guides/{en,sv}/{department,operator}.md`) are run.
//!
//! The convention, stated in the operator guide: in a fenced ```` ```sh ```` block, every line starting with
//! `orchard ` (or `sudo -u orchard orchard `, which the test runs as itself) is a command, run here with `bash -c`
//! against a real server (testkit) from a temporary directory, and must exit 0. A line that cannot be run here
//! carries a visible mark with its reason — `# not tested: …` in English, `# testas inte: …` in Swedish — and is
//! skipped; the reason `not in this version yet` (`finns inte i den här versionen än`) is checked: the command
//! must really be missing, so the mark goes when the command arrives. Other lines of a block (`export`, shell
//! around the commands) are not run. The placeholders the guides explain (`$TENANT`, `$DEVICE`, `$GROUP`,
//! `$PROFILE`) are set to objects the test makes, `ORCHARD_SERVER`/`ORCHARD_TOKEN`/`ORCHARD_CA` to the test
//! server (a department admin's token for the department handbook, an operator's for the operator guide), and
//! the database-level commands reach the test server's storage through `ORCHARD_DATA_DIR` (and
//! `ORCHARD_DATABASE_URL`). Paths under `/etc/orchard/` and `/var/backups/orchard/` are moved into the temporary directory.
//!
//! Both languages of a guide must quote the same commands, in the same order, with the same marks.
//!
//! The block marked ```` ```sh systemd ```` (the operator guide's installation) is followed step by step by
//! [`the_operator_guides_systemd_path_reaches_a_running_orchard`], without systemd as PID 1: see there what that
//! proves and what it cannot.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context, Result};
use orchard_testkit::server::{orchard_binary, TestServer};
use orchard_testkit::Backend;
use orchard_types::Role;
use serde_json::Value;

const GUIDES: [&str; 2] = ["department", "operator"];
/// The visible marks of a line the test cannot run, per language.
const UNTESTED: [(&str, &str); 2] = [("en", "# not tested:"), ("sv", "# testas inte:")];
/// The reason of a command that does not exist yet, per language.
const NOT_YET: [(&str, &str); 2] = [
    ("en", "not in this version yet"),
    ("sv", "finns inte i den här versionen än"),
];
/// At least this many commands of each guide really run (so the test cannot pass by marking everything).
const MIN_RUN: [(&str, usize); 2] = [("department", 25), ("operator", 14)];

/// One command line of a guide.
#[derive(Debug, Clone)]
struct Line {
    /// The command as written, without its mark.
    command: String,
    /// The reason, when marked as not run here.
    untested: Option<String>,
    /// In the ```` ```sh systemd ```` block.
    systemd: bool,
}

fn guide_text(lang: &str, guide: &str) -> Result<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/guides")
        .join(lang)
        .join(format!("{guide}.md"));
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

fn of_lang<'a>(table: &[(&str, &'a str)], lang: &str) -> &'a str {
    table
        .iter()
        .find(|(l, _)| *l == lang)
        .map(|(_, v)| *v)
        .unwrap_or("")
}

/// Every non-empty, non-comment line of the guide's `sh` blocks.
fn lines(lang: &str, guide: &str) -> Result<Vec<Line>> {
    let text = guide_text(lang, guide)?;
    let mark = of_lang(&UNTESTED, lang);
    let other_mark = UNTESTED
        .iter()
        .find(|(l, _)| *l != lang)
        .map(|(_, m)| *m)
        .unwrap_or("");
    let mut out = Vec::new();
    // Outside a block: None; in an `sh` block: Some(Some(systemd)); in a block of another kind: Some(None).
    let mut block: Option<Option<bool>> = None;
    for (n, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if let Some(info) = trimmed.strip_prefix("```") {
            block = match block {
                Some(_) => None,
                None => {
                    let mut words = info.split_whitespace();
                    Some(match words.next() {
                        Some("sh") => Some(words.next() == Some("systemd")),
                        _ => None,
                    })
                }
            };
            continue;
        }
        let Some(Some(systemd)) = block else { continue };
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        ensure!(
            !trimmed.contains(other_mark),
            "{lang}/{guide}.md line {}: the other language's mark",
            n + 1
        );
        let (command, untested) = match trimmed.split_once(mark) {
            Some((command, reason)) => {
                let reason = reason.trim();
                ensure!(
                    reason.split_whitespace().count() >= 3,
                    "{lang}/{guide}.md line {}: a line not tested must say why: {trimmed}",
                    n + 1
                );
                (command.trim().to_string(), Some(reason.to_string()))
            }
            None => (trimmed.to_string(), None),
        };
        out.push(Line {
            command,
            untested,
            systemd,
        });
    }
    ensure!(
        block.is_none(),
        "{lang}/{guide}.md: a code block is not closed"
    );
    Ok(out)
}

/// The line as the test runs it: `sudo -u orchard ` dropped (the test runs as itself).
fn orchard_command(command: &str) -> Option<String> {
    let command = command.strip_prefix("sudo -u orchard ").unwrap_or(command);
    command.starts_with("orchard ").then(|| command.to_string())
}

#[test]
fn both_languages_quote_the_same_commands() -> Result<()> {
    for guide in GUIDES {
        let en = lines("en", guide)?;
        let sv = lines("sv", guide)?;
        let shape = |l: &Vec<Line>| -> Vec<(String, bool, bool)> {
            l.iter()
                .map(|l| (l.command.clone(), l.untested.is_some(), l.systemd))
                .collect()
        };
        let (en_shape, sv_shape) = (shape(&en), shape(&sv));
        for (n, (e, s)) in en_shape.iter().zip(&sv_shape).enumerate() {
            ensure!(e == s, "{guide}, command {}: en {e:?} but sv {s:?}", n + 1);
        }
        ensure!(
            en_shape.len() == sv_shape.len(),
            "{guide}: {} command lines in English, {} in Swedish",
            en_shape.len(),
            sv_shape.len()
        );
        // A command that does not exist yet is marked so in both languages.
        for (e, s) in en.iter().zip(&sv) {
            let not_yet = |l: &Line, lang: &str| {
                l.untested
                    .as_deref()
                    .is_some_and(|r| r.contains(of_lang(&NOT_YET, lang)))
            };
            ensure!(
                not_yet(e, "en") == not_yet(s, "sv"),
                "{guide}: {:?} is 'not in this version yet' in one language only",
                e.command
            );
        }
        let run = en
            .iter()
            .filter(|l| !l.systemd && l.untested.is_none())
            .filter_map(|l| orchard_command(&l.command))
            .count();
        let min = MIN_RUN
            .iter()
            .find(|(g, _)| *g == guide)
            .map(|(_, n)| *n)
            .unwrap_or(1);
        ensure!(
            run >= min,
            "{guide}: only {run} commands are run (at least {min})"
        );
    }
    Ok(())
}

/// The temporary directory the commands run in, with the files the guides name.
struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new(serial: &str) -> Result<Workspace> {
        let dir = tempfile::tempdir()?;
        let root = dir.path();
        std::fs::create_dir_all(root.join("bin"))?;
        std::os::unix::fs::symlink(orchard_binary()?, root.join("bin/orchard"))?;
        // What the installation put in /etc/orchard (the shipped file; its storage is overridden by the
        // environment to the test server's).
        std::fs::create_dir_all(root.join("root/etc/orchard"))?;
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/orchard.toml"),
            root.join("root/etc/orchard/orchard.toml"),
        )?;
        // The files the department handbook's commands name.
        std::fs::write(
            root.join("wifi.mobileconfig"),
            mobileconfig("edu.example.physics.wifi", "Campus Wi-Fi", "eduroam-guest"),
        )?;
        std::fs::write(
            root.join("erase.json"),
            serde_json::json!({ "confirm_serial": serial }).to_string(),
        )?;
        // The operator guide's backup passphrase and backup directory.
        std::fs::write(
            root.join("root/etc/orchard/backup-passphrase"),
            "a long passphrase kept elsewhere\n",
        )?;
        std::fs::create_dir_all(root.join("root/var/backups/orchard"))?;
        // A break-glass password, as the operator would keep it in a file.
        std::fs::write(
            root.join("password-file"),
            "correct horse battery staple 42\n",
        )?;
        Ok(Workspace { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A guide's command as run here: `/etc/orchard/` and `/var/backups/orchard/` moved into the temporary root.
    fn rerooted(&self, command: &str) -> String {
        ["/etc/orchard/", "/var/backups/orchard/"]
            .iter()
            .fold(command.to_owned(), |command, dir| {
                command.replace(dir, &format!("{}/root{dir}", self.path().display()))
            })
    }
}

fn mobileconfig(identifier: &str, name: &str, ssid: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0"><dict>
  <key>PayloadType</key><string>Configuration</string>
  <key>PayloadVersion</key><integer>1</integer>
  <key>PayloadIdentifier</key><string>{identifier}</string>
  <key>PayloadUUID</key><string>{uuid}</string>
  <key>PayloadDisplayName</key><string>{name}</string>
  <key>PayloadContent</key><array><dict>
    <key>PayloadType</key><string>com.apple.wifi.managed</string>
    <key>PayloadVersion</key><integer>1</integer>
    <key>PayloadIdentifier</key><string>{identifier}.payload</string>
    <key>PayloadUUID</key><string>{payload_uuid}</string>
    <key>SSID_STR</key><string>{ssid}</string>
    <key>EncryptionType</key><string>WPA2</string>
    <key>Password</key><string>guide-secret-Tq55</string>
    <key>AutoJoin</key><true/>
  </dict></array>
</dict></plist>"#,
        uuid = uuid::Uuid::new_v4().to_string().to_uppercase(),
        payload_uuid = uuid::Uuid::new_v4().to_string().to_uppercase(),
    )
}

/// `bash -c command` in the workspace with the server, a token and the placeholders in the environment.
fn shell(
    server: &TestServer,
    work: &Workspace,
    token: &str,
    vars: &[(&str, String)],
    command: &str,
) -> Result<std::process::Output> {
    let path = format!(
        "{}:{}",
        work.path().join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut shell = Command::new("bash");
    for (name, _) in std::env::vars() {
        if name.starts_with("ORCHARD_") {
            shell.env_remove(name);
        }
    }
    shell
        .arg("-c")
        .arg(command)
        .current_dir(work.path())
        .env("PATH", path)
        .env("ORCHARD_SERVER", &server.base_url)
        .env("ORCHARD_TOKEN", token)
        .env("ORCHARD_CA", server.ca_path())
        .env("ORCHARD_DATA_DIR", &server.data_dir)
        .stdin(Stdio::null());
    if let Some(url) = &server.database_url {
        shell.env("ORCHARD_DATABASE_URL", url);
    }
    for (name, value) in vars {
        shell.env(name, value);
    }
    Ok(shell.output()?)
}

/// An object's id from a client command's `--json` answer.
fn created_id(server: &TestServer, args: &[&str], id_at: &str, work: &Workspace) -> Result<String> {
    let out = server
        .client_command(args)?
        .current_dir(work.path())
        .output()?;
    ensure!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout)?;
    Ok(v.pointer(id_at)
        .and_then(Value::as_str)
        .with_context(|| format!("no {id_at} in {v}"))?
        .to_string())
}

async fn guide_commands(backend: Backend) -> Result<()> {
    let Some(server) = TestServer::start(backend).await? else {
        return Ok(());
    };
    // The department the examples act for, with an enrolled (simulated) iPad, a group and a profile.
    let tenant = server
        .create_tenant("Physics (guides)", "guides-phys")
        .await?;
    let fleet = server
        .enroll_devices(&server.sim_config(), &tenant, 1)
        .await?;
    let device = server.device_by_udid(fleet[0].udid()).await?;
    let device_id = device["id"].as_str().context("device id")?.to_string();
    let serial = device["serial_number"]
        .as_str()
        .context("serial")?
        .to_string();
    let work = Workspace::new(&serial)?;
    std::fs::write(
        work.path().join("base.mobileconfig"),
        mobileconfig("edu.example.physics.base", "Physics base", "physics"),
    )?;
    let profile = created_id(
        &server,
        &[
            "profile",
            "upload",
            "base.mobileconfig",
            "--tenant",
            &tenant,
            "--json",
        ],
        "/profile/id",
        &work,
    )?;
    let group = created_id(
        &server,
        &["group", "create", "Base", "--tenant", &tenant, "--json"],
        "/id",
        &work,
    )?;
    let admin = server.create_token(Role::Admin, Some(&tenant), "guide-admin")?;
    let vars = [
        ("TENANT", tenant.clone()),
        ("DEVICE", device_id),
        ("GROUP", group),
        ("PROFILE", profile),
    ];

    for guide in GUIDES {
        let token = match guide {
            "department" => &admin,
            _ => &server.token,
        };
        let mut ran = 0;
        for line in lines("en", guide)? {
            let Some(command) = orchard_command(&line.command) else {
                continue;
            };
            if line.systemd {
                continue;
            }
            if let Some(reason) = &line.untested {
                if reason.contains(of_lang(&NOT_YET, "en")) {
                    // The mark must go when the command arrives: `orchard SUB --help` fails while it is missing.
                    let sub = command.split_whitespace().nth(1).unwrap_or("");
                    let out = shell(
                        &server,
                        &work,
                        token,
                        &vars,
                        &format!("orchard {sub} --help"),
                    )?;
                    ensure!(
                        !out.status.success(),
                        "{guide}: `orchard {sub}` exists now: remove the 'not in this version yet' mark of {command:?} \
                         in both languages"
                    );
                }
                continue;
            }
            let run = work.rerooted(&command);
            let out = shell(&server, &work, token, &vars, &run)?;
            ensure!(
                out.status.success(),
                "{guide}: `{command}` exited {:?}\nstdout: {}\nstderr: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            ran += 1;
        }
        println!("{guide}: {ran} commands ran");
    }

    // The runner sees a failing command fail (so a passing run means every command exited 0).
    let refused = shell(
        &server,
        &work,
        &admin,
        &vars,
        "orchard device show 00000000-0000-0000-0000-000000000000",
    )?;
    ensure!(
        refused.status.code() == Some(5),
        "a missing device is exit status 5: {:?}",
        refused.status
    );

    // What the commands did is there: the department the operator guide made, the profile and the group the
    // handbook made, the commands it queued, the break-glass account.
    let tenants = server.get("/api/v1/tenants").await?;
    ensure!(
        tenants.to_string().contains("\"code\":\"phys\""),
        "the operator guide's department: {tenants}"
    );
    let commands = server
        .commands_of(vars[1].1.as_str())
        .await?
        .iter()
        .filter_map(|c| c["request_type"].as_str().map(str::to_string))
        .collect::<Vec<_>>();
    for wanted in [
        "DeviceLock",
        "EnableLostMode",
        "EraseDevice",
        "DisableLostMode",
    ] {
        ensure!(
            commands.iter().any(|c| c == wanted),
            "{wanted} not queued: {commands:?}"
        );
    }
    ensure!(
        work.path().join("push-request/push.csr").exists(),
        "push-cert csr wrote its request"
    );
    ensure!(work.path().join("dep-physics.pem").exists());
    ensure!(work
        .path()
        .join("root/etc/orchard/orchard.example.toml")
        .exists());
    let backups: Vec<_> = std::fs::read_dir(work.path().join("root/var/backups/orchard"))?
        .collect::<std::io::Result<_>>()?;
    ensure!(
        backups.len() == 1
            && backups[0]
                .file_name()
                .to_string_lossy()
                .ends_with(".backup")
            && backups[0].metadata()?.len() > 0,
        "orchard backup wrote one backup file: {backups:?}"
    );
    Ok(())
}

orchard_testkit::backend_tests! {
    every_orchard_command_of_the_guides_runs => guide_commands;
}

/// The system's unit directory (with `sysinit.target`), copied into the temporary root for `systemd-analyze`.
fn system_units() -> Result<&'static Path> {
    ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.join("sysinit.target").exists())
        .context("no systemd unit directory with sysinit.target (scripts/test.sh installs systemd)")
}

/// `key=value` settings of a unit file's `[Service]` section.
fn unit_settings(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn setting<'a>(settings: &'a [(String, String)], key: &str) -> Option<&'a str> {
    settings
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn run(command: &mut Command, what: &str) -> Result<String> {
    let out = command
        .output()
        .with_context(|| format!("running {what}"))?;
    ensure!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The running server of the systemd path (killed when dropped).
struct Started(std::process::Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The operator guide's systemd installation, step by step, in a temporary root, without systemd as PID 1.
///
/// What it proves: the block's commands are these steps and no others; the files it installs are the ones in
/// deploy/ and land where the unit and the configuration expect them; `systemd-sysusers` makes the `orchard`
/// user from the shipped sysusers file; the shipped configuration passes `orchard config check`; the installed
/// unit passes `systemd-analyze verify` (what `systemctl daemon-reload` would load); `systemctl enable` links
/// it into `multi-user.target`; the unit's `ExecStart` command line, run as written with its working directory
/// (the state directory systemd would make, with its mode) and `UMask`, starts an Orchard that makes its state
/// there (database 0600, key-encryption key) and answers the guide's `curl` of `/readyz` with `ok`, trusting the
/// `server-ca.pem` it wrote; and, the unit being `Type=notify`, that the server tells systemd `READY=1`, so
/// `systemctl enable --now` returns only when the `curl` right after it can succeed.
///
/// What it cannot: systemd does not start the service, so `User=orchard`, the sandbox (`ProtectSystem=strict`,
/// `PrivateUsers`, the system-call filter …), `Restart=` and the journal are not exercised (the test runs as
/// its own user); `install -g orchard` runs without `-g` (the `orchard` group exists only inside the temporary
/// root); and two values are moved for the test machine — the state directory `/var/lib/orchard` into the
/// temporary root (`ORCHARD_DATA_DIR`) and the port 8443 to a free one (`ORCHARD_LISTEN=127.0.0.1:0`).
/// `scripts/fresh-machine-check.sh` proves those on a fresh Debian 12 booted with systemd as PID 1
/// (docs/fresh-machine-check.md).
#[test]
fn the_operator_guides_systemd_path_reaches_a_running_orchard() -> Result<()> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root_dir = tempfile::tempdir()?;
    let root = root_dir.path();
    let reroot = |arg: &str| -> String {
        if arg.starts_with('/') {
            format!("{}{arg}", root.display())
        } else if arg == "target/release/orchard" {
            // The binary the guide builds with `cargo build --release`: this build's.
            orchard_binary()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        } else {
            arg.to_string()
        }
    };
    // systemd-analyze needs the system's units (sysinit.target …) in the root.
    std::fs::create_dir_all(root.join("usr/lib/systemd"))?;
    run(
        Command::new("cp")
            .arg("-a")
            .arg(system_units()?)
            .arg(root.join("usr/lib/systemd/system")),
        "copying the system's units",
    )?;
    std::fs::create_dir_all(root.join("etc"))?;
    for dir in ["usr/local/bin", "usr/lib/sysusers.d", "etc/systemd/system"] {
        std::fs::create_dir_all(root.join(dir))?;
    }

    let steps: Vec<Line> = lines("en", "operator")?
        .into_iter()
        .filter(|l| l.systemd)
        .collect();
    ensure!(
        steps.len() >= 8,
        "the systemd block has {} steps",
        steps.len()
    );
    let mut started: Option<(Started, String)> = None;
    let mut done = Vec::new();
    for step in &steps {
        ensure!(
            step.untested.is_none(),
            "every systemd step is followed: {step:?}"
        );
        let words = shell_words(&step.command)?;
        let program = words.first().map(String::as_str).unwrap_or("");
        match program {
            "install" => {
                let mut args = Vec::new();
                let mut skip = false;
                for w in &words[1..] {
                    if skip {
                        skip = false;
                        continue;
                    }
                    if w == "-g" || w == "-o" {
                        skip = true;
                        continue;
                    }
                    args.push(reroot(w));
                }
                run(
                    Command::new("install").args(&args).current_dir(&repo),
                    &step.command,
                )?;
            }
            "systemd-sysusers" => {
                run(
                    Command::new("systemd-sysusers").arg(format!("--root={}", root.display())),
                    &step.command,
                )?;
                let passwd = std::fs::read_to_string(root.join("etc/passwd"))?;
                ensure!(
                    passwd.lines().any(|l| l.starts_with("orchard:")),
                    "systemd-sysusers made no orchard user: {passwd}"
                );
            }
            "orchard" => {
                let args: Vec<String> = words[1..].iter().map(|w| reroot(w)).collect();
                let mut command = Command::new(root.join("usr/local/bin/orchard"));
                for (name, _) in std::env::vars() {
                    if name.starts_with("ORCHARD_") {
                        command.env_remove(name);
                    }
                }
                run(command.args(&args), &step.command)?;
            }
            "systemctl" if words[1..] == ["daemon-reload"] => {
                let out = Command::new("systemd-analyze")
                    .arg("verify")
                    .arg(format!("--root={}", root.display()))
                    .arg(root.join("etc/systemd/system/orchard.service"))
                    .output()
                    .context("running systemd-analyze (scripts/test.sh installs systemd)")?;
                let stderr = String::from_utf8_lossy(&out.stderr);
                ensure!(
                    out.status.success() && stderr.trim().is_empty(),
                    "systemd-analyze verify: {stderr}"
                );
            }
            "systemctl" if words[1..] == ["enable", "--now", "orchard"] => {
                run(
                    Command::new("systemctl")
                        .arg(format!("--root={}", root.display()))
                        .args(["enable", "orchard"]),
                    "systemctl --root enable orchard",
                )?;
                // The link is absolute inside the root (`/etc/systemd/system/orchard.service`).
                let link = std::fs::read_link(
                    root.join("etc/systemd/system/multi-user.target.wants/orchard.service"),
                )
                .context("enable linked the unit into multi-user.target")?;
                ensure!(
                    root.join(link.strip_prefix("/")?).exists(),
                    "the link leads to the installed unit: {}",
                    link.display()
                );
                started = Some(start_as_the_unit(root)?);
            }
            "curl" => {
                let (_, base_url) = started
                    .as_ref()
                    .context("curl before the service started")?;
                let port = base_url.rsplit(':').next().unwrap_or("");
                let args: Vec<String> = words[1..]
                    .iter()
                    .map(|w| reroot(w).replace(":8443/", &format!(":{port}/")))
                    .collect();
                let body = run(Command::new("curl").args(&args), &step.command)?;
                ensure!(body.trim() == "ok", "/readyz answered {body:?}");
            }
            _ => bail!(
                "the systemd path has a step this test does not know how to follow: {:?}",
                step.command
            ),
        }
        done.push(program.to_string());
    }
    for wanted in [
        "install",
        "systemd-sysusers",
        "orchard",
        "systemctl",
        "curl",
    ] {
        ensure!(done.iter().any(|d| d == wanted), "no {wanted} step");
    }
    let (server, _) = started.context("the guide never started the service")?;
    let state = root.join("var/lib/orchard");
    let db = state.join("orchard.db");
    use std::os::unix::fs::PermissionsExt;
    ensure!(db.exists(), "the database is in the state directory");
    ensure!(
        std::fs::metadata(&db)?.permissions().mode() & 0o077 == 0,
        "the database is private to its owner"
    );
    ensure!(
        state.join("kek").exists(),
        "the key-encryption key is in the state directory"
    );
    drop(server);
    Ok(())
}

/// Runs the installed unit's `ExecStart` as written, as systemd would after `enable --now`: in its
/// `WorkingDirectory` (its `StateDirectory` made first with `StateDirectoryMode`), under its `UMask`, with its
/// `Environment=` lines, and (the unit must be `Type=notify`) with a `NOTIFY_SOCKET` on which it must say
/// `READY=1` (what `systemctl start` waits for before the guide's `curl`). Returns the process and the https URL it prints.
fn start_as_the_unit(root: &Path) -> Result<(Started, String)> {
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/orchard.service"))?;
    let settings = unit_settings(&unit);
    let exec = setting(&settings, "ExecStart").context("ExecStart")?;
    let state = setting(&settings, "StateDirectory").context("StateDirectory")?;
    let state_mode = setting(&settings, "StateDirectoryMode").unwrap_or("0755");
    let state_dir = root.join("var/lib").join(state);
    std::fs::create_dir_all(&state_dir)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        &state_dir,
        std::fs::Permissions::from_mode(u32::from_str_radix(state_mode, 8)?),
    )?;
    let working = setting(&settings, "WorkingDirectory").context("WorkingDirectory")?;
    ensure!(
        Path::new(working) == Path::new("/var/lib").join(state),
        "the unit works in its state directory"
    );
    let umask = setting(&settings, "UMask").unwrap_or("0022");
    let words: Vec<String> = shell_words(exec)?
        .into_iter()
        .map(|w| {
            if w.starts_with('/') {
                format!("{}{w}", root.display())
            } else {
                w
            }
        })
        .collect();
    let script = format!(
        "umask {umask} && exec {}",
        words
            .iter()
            .map(|w| format!("'{w}'"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut command = Command::new("sh");
    for (name, _) in std::env::vars() {
        if name.starts_with("ORCHARD_") {
            command.env_remove(name);
        }
    }
    for (key, value) in &settings {
        if key == "Environment" {
            let (name, value) = value.split_once('=').context("Environment=NAME=value")?;
            command.env(name, value);
        }
    }
    // Type=notify: systemd's notification socket, on which `systemctl start` waits for READY=1. With another
    // type `systemctl enable --now` returns before Orchard listens and the guide's `curl` right after it fails.
    ensure!(
        setting(&settings, "Type") == Some("notify"),
        "the unit is Type=notify, so the guide's curl right after `systemctl enable --now` finds it listening"
    );
    std::fs::create_dir_all(root.join("run/systemd"))?;
    let notify_path = root.join("run/systemd/notify");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path)?;
    notify.set_read_timeout(Some(std::time::Duration::from_secs(120)))?;
    command.env("NOTIFY_SOCKET", &notify_path);
    let mut child = command
        .arg("-c")
        .arg(script)
        .current_dir(root.join(working.trim_start_matches('/')))
        // The test machine's values (see the test's comment): the state directory in the root, a free port.
        .env("ORCHARD_DATA_DIR", &state_dir)
        .env("ORCHARD_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let started = Started(child);
    let mut first = String::new();
    BufReader::new(stdout).read_line(&mut first)?;
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("https://"))
        .with_context(|| format!("the service printed no address: {first:?}"))?
        .to_string();
    // A bounded wait: the server sends READY=1 right after it prints its address.
    let mut buf = [0u8; 256];
    let n = notify
        .recv(&mut buf)
        .context("the service never told systemd it is ready (Type=notify)")?;
    let message = String::from_utf8_lossy(&buf[..n]);
    ensure!(
        message.lines().any(|l| l == "READY=1"),
        "the service's notification is not READY=1: {message:?}"
    );
    Ok((started, url))
}

/// Splits a command line into words: spaces separate, single and double quotes group (no escapes, no
/// variables: the systemd block has none).
fn shell_words(line: &str) -> Result<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut in_word = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, '$' | '`' | '|' | '>' | '<' | ';' | '&') => {
                bail!("the systemd block is plain commands: {line:?}")
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    ensure!(quote.is_none(), "an unclosed quote: {line:?}");
    if in_word {
        words.push(word);
    }
    Ok(words)
}
