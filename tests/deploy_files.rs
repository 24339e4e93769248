//! The files in deploy/ are checked without installing anything on the machine and without a container engine:
//! the systemd unit passes `systemd-analyze verify` installed into a temporary root (with and without its port
//! 443 drop-in), the Containerfile's stages are parsed, the Kubernetes objects are parsed and cross-checked, and
//! the shipped configurations pass `orchard config check`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use orchard_testkit::server::orchard_binary;
use serde::Deserialize as _;
use serde_yaml::Value;

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

fn read(path: &str) -> Result<String> {
    std::fs::read_to_string(deploy(path)).with_context(|| format!("reading deploy/{path}"))
}

/// `orchard config check` on `file` with `extra` flags, without the calling environment's `ORCHARD_*`.
fn config_check(file: &Path, extra: &[&str]) -> Result<String> {
    let mut command = Command::new(orchard_binary()?);
    for (name, _) in std::env::vars() {
        if name.starts_with("ORCHARD_") {
            command.env_remove(name);
        }
    }
    let out = command
        .args(["config", "check", "--config"])
        .arg(file)
        .args(extra)
        .output()?;
    ensure!(
        out.status.success(),
        "config check {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// A temporary root with the system's unit files, the built binary as ExecStart's `/usr/local/bin/orchard`
/// and the unit in `/etc/systemd/system`; `systemd-analyze verify` must pass with no warning.
fn verify_unit(drop_in: Option<&str>) -> Result<()> {
    verify_units(&["systemd/orchard.service"], drop_in)
}

/// [`verify_unit`] for the deploy/ units `paths` installed together (a service and its timer).
fn verify_units(paths: &[&str], drop_in: Option<&str>) -> Result<()> {
    let root = tempfile::tempdir()?;
    let system_units = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.join("sysinit.target").exists())
        .context(
            "no systemd unit directory with sysinit.target (scripts/test.sh installs systemd)",
        )?;
    let lib = root.path().join("usr/lib/systemd");
    std::fs::create_dir_all(&lib)?;
    let copied = Command::new("cp")
        .arg("-a")
        .arg(system_units)
        .arg(lib.join("system"))
        .status()?;
    ensure!(copied.success(), "copying {}", system_units.display());
    let bin = root.path().join("usr/local/bin");
    std::fs::create_dir_all(&bin)?;
    std::fs::copy(orchard_binary()?, bin.join("orchard"))?;
    let units = root.path().join("etc/systemd/system");
    std::fs::create_dir_all(units.join("orchard.service.d"))?;
    let mut installed = Vec::new();
    for path in paths {
        let name = Path::new(path).file_name().context("unit file name")?;
        let unit = units.join(name);
        std::fs::write(&unit, read(path)?)?;
        installed.push(unit);
    }
    if let Some(text) = drop_in {
        std::fs::write(units.join("orchard.service.d/port-443.conf"), text)?;
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.path().display()))
        .args(&installed)
        .output()
        .context("running systemd-analyze (scripts/test.sh installs the systemd package)")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success(),
        "systemd-analyze verify failed: {stderr}"
    );
    // Unknown keys and misplaced lines are only warnings to systemd: none is allowed here.
    ensure!(
        stderr.trim().is_empty(),
        "systemd-analyze verify warned: {stderr}"
    );
    Ok(())
}

/// The unit's settings: its lines that are not comments.
fn settings_of(unit: &str) -> Vec<&str> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .collect()
}

/// The backup service (docs/backup.md) verifies with its timer, is hardened as the server's unit is, writes
/// into its own state directory with the passphrase as a credential, and old backups age out.
#[test]
fn the_backup_timer_and_service_verify_and_are_hardened() -> Result<()> {
    let service = read("systemd/orchard-backup.service")?;
    let server = read("systemd/orchard.service")?;
    let settings = settings_of(&service);
    // Every hardening line of the server's unit is in the backup's too.
    let hardening = server
        .split("# Hardening")
        .nth(1)
        .context("orchard.service has a hardening block")?;
    for wanted in settings_of(hardening) {
        if wanted.starts_with('[') || wanted.starts_with("WantedBy") {
            continue;
        }
        ensure!(settings.contains(&wanted), "the backup unit lacks {wanted}");
    }
    for wanted in [
        "Type=oneshot",
        "User=orchard",
        "StateDirectory=orchard orchard-backups",
        "LoadCredential=backup-passphrase:/etc/orchard/backup-passphrase",
        "ExecStart=/usr/local/bin/orchard backup --config /etc/orchard/orchard.toml --out /var/lib/orchard-backups --passphrase-file %d/backup-passphrase",
    ] {
        ensure!(settings.contains(&wanted), "the backup unit lacks {wanted}");
    }
    let timer = read("systemd/orchard-backup.timer")?;
    for wanted in [
        "OnCalendar=daily",
        "Persistent=true",
        "WantedBy=timers.target",
    ] {
        ensure!(
            settings_of(&timer).contains(&wanted),
            "the timer lacks {wanted}"
        );
    }
    let tmpfiles = read("systemd/orchard-backup.tmpfiles")?;
    ensure!(
        tmpfiles
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == [
                    "d",
                    "/var/lib/orchard-backups",
                    "0700",
                    "orchard",
                    "orchard",
                    "30d"
                ]),
        "the tmpfiles rule does not make the directory 0700 and age backups out"
    );
    // The command line parses as the binary's (`--help` after it: clap checks every flag first).
    let args: Vec<&str> = settings
        .iter()
        .find_map(|s| s.strip_prefix("ExecStart=/usr/local/bin/orchard "))
        .context("ExecStart")?
        .split_whitespace()
        .collect();
    let out = Command::new(orchard_binary()?)
        .args(&args)
        .arg("--help")
        .output()?;
    ensure!(
        out.status.success(),
        "orchard {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    verify_units(
        &[
            "systemd/orchard-backup.service",
            "systemd/orchard-backup.timer",
        ],
        None,
    )
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() -> Result<()> {
    let unit = read("systemd/orchard.service")?;
    let settings: Vec<&str> = unit
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .collect();
    for wanted in [
        "User=orchard",
        // `systemctl start` returns when Orchard says READY=1, so the guide's curl right after it answers.
        "Type=notify",
        "Restart=on-failure",
        "ProtectSystem=strict",
        "StateDirectory=orchard",
        "NoNewPrivileges=yes",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectControlGroups=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "RestrictNamespaces=yes",
        "RestrictSUIDSGID=yes",
        "CapabilityBoundingSet=",
        "AmbientCapabilities=",
        "ExecStart=/usr/local/bin/orchard serve --config /etc/orchard/orchard.toml",
    ] {
        ensure!(settings.contains(&wanted), "the unit lacks {wanted}");
    }
    ensure!(
        !settings.iter().any(|s| s.contains("CAP_NET_BIND_SERVICE")),
        "the unit itself grants no capability"
    );
    verify_unit(None)?;

    // The port 443 drop-in is all comments as shipped; uncommented it verifies too and grants exactly that.
    let drop_in = read("systemd/orchard.service.d/port-443.conf")?;
    ensure!(
        drop_in
            .lines()
            .all(|l| l.trim().is_empty() || l.starts_with('#')),
        "the drop-in is not active as shipped"
    );
    let from_section = drop_in
        .find("# [Service]")
        .context("the drop-in has a commented [Service] section")?;
    let active: String = drop_in[from_section..]
        .lines()
        .map(|l| format!("{}\n", l.trim_start_matches("# ")))
        .collect();
    ensure!(active.contains("AmbientCapabilities=CAP_NET_BIND_SERVICE\n"));
    verify_unit(Some(&active))?;
    Ok(())
}

/// One stage of the Containerfile: its base image, name and instructions (continuation lines joined).
struct Stage {
    base: String,
    name: String,
    instructions: Vec<(String, String)>,
}

fn stages(text: &str) -> Result<Vec<Stage>> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if current.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(start) => current.push_str(start),
            None => {
                current.push_str(line);
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages: Vec<Stage> = Vec::new();
    for instruction in joined {
        let (keyword, rest) = instruction
            .split_once(char::is_whitespace)
            .unwrap_or((instruction.as_str(), ""));
        let keyword = keyword.to_ascii_uppercase();
        let rest = rest.trim().to_string();
        if keyword == "FROM" {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let [base, as_word, name] = words[..] else {
                bail!("FROM without a stage name: {rest}");
            };
            ensure!(as_word.eq_ignore_ascii_case("as"), "FROM {rest}");
            stages.push(Stage {
                base: base.into(),
                name: name.into(),
                instructions: Vec::new(),
            });
        } else {
            let stage = stages.last_mut().context("an instruction before FROM")?;
            stage.instructions.push((keyword, rest));
        }
    }
    Ok(stages)
}

impl Stage {
    fn all(&self, keyword: &str) -> Vec<&str> {
        self.instructions
            .iter()
            .filter(|(k, _)| k == keyword)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

#[test]
fn the_containerfile_builds_in_one_stage_and_runs_unprivileged_in_another() -> Result<()> {
    let stages = stages(&read("Containerfile")?)?;
    ensure!(stages.len() == 2, "two stages, build and runtime");
    let (build, runtime) = (&stages[0], &stages[1]);
    ensure!(build.name == "build" && runtime.name == "runtime");
    ensure!(
        build.base.contains("rust:"),
        "build from a Rust image: {}",
        build.base
    );
    ensure!(
        build.all("COPY").contains(&". ."),
        "the build copies the checkout"
    );
    ensure!(
        build
            .all("RUN")
            .iter()
            .any(|r| r.contains("cargo build --release --locked")),
        "the build runs cargo build --release --locked"
    );
    ensure!(
        runtime.base.starts_with("docker.io/library/debian:") && runtime.base.ends_with("-slim"),
        "a slim Debian runtime: {}",
        runtime.base
    );
    ensure!(
        runtime
            .all("COPY")
            .iter()
            .any(|c| c.starts_with("--from=build ") && c.contains("/usr/local/bin/orchard")),
        "the runtime copies the binary from the build stage"
    );
    let user = runtime.all("USER");
    let user = user.last().context("USER in the runtime stage")?;
    let uid = user.split(':').next().unwrap_or("");
    ensure!(
        !["root", "0", ""].contains(&uid),
        "the runtime runs as a non-root user: USER {user}"
    );
    ensure!(runtime.all("EXPOSE") == ["8443"], "EXPOSE 8443");
    let health = runtime.all("HEALTHCHECK");
    ensure!(
        health.len() == 1 && health[0].contains("https://127.0.0.1:8443/readyz"),
        "HEALTHCHECK asks /readyz: {health:?}"
    );
    let entry = runtime.all("ENTRYPOINT");
    ensure!(entry == [r#"["/usr/local/bin/orchard"]"#], "{entry:?}");

    // What the binary links at run time is installed in the runtime stage (libc and friends are in the base).
    let runtime_packages = runtime.all("RUN").join(" ");
    let ldd = Command::new("ldd").arg(orchard_binary()?).output()?;
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let library = line.split_whitespace().next().unwrap_or("");
        let in_base = [
            "linux-vdso",
            "libc.so",
            "libm.so",
            "libgcc_s.so",
            "libpthread.so",
            "libdl.so",
            "librt.so",
            "ld-linux",
            "/lib64/ld-linux",
        ]
        .iter()
        .any(|b| library.starts_with(b));
        let package = if library.starts_with("libssl.so.3") || library.starts_with("libcrypto.so.3")
        {
            Some("libssl3")
        } else {
            None
        };
        match (in_base, package) {
            (true, _) => {}
            (false, Some(package)) => ensure!(
                runtime_packages.contains(package),
                "{library} needs {package} in the runtime stage"
            ),
            (false, None) => {
                bail!("the binary links {library}: add its package to the runtime stage")
            }
        }
    }

    // A clean checkout: the local build output stays out of the build context.
    let ignore =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(".dockerignore"))?;
    ensure!(
        ignore.lines().any(|l| l.trim() == "target/"),
        ".dockerignore leaves target/ out"
    );
    Ok(())
}

fn get<'a>(value: &'a Value, path: &[&str]) -> Result<&'a Value> {
    let mut at = value;
    for key in path {
        at = at
            .get(*key)
            .with_context(|| format!("no {} in {at:?}", path.join(".")))?;
    }
    Ok(at)
}

fn str_at<'a>(value: &'a Value, path: &[&str]) -> Result<&'a str> {
    get(value, path)?
        .as_str()
        .with_context(|| format!("{} is not a string", path.join(".")))
}

#[test]
fn the_kubernetes_example_names_probes_replicas_secret_and_budget() -> Result<()> {
    let text = read("kubernetes/orchard.yaml")?;
    let mut objects = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value = Value::deserialize(document)?;
        if !value.is_null() {
            objects.push(value);
        }
    }
    let of_kind = |kind: &str| -> Result<&Value> {
        objects
            .iter()
            .find(|o| o.get("kind").and_then(Value::as_str) == Some(kind))
            .with_context(|| format!("no {kind}"))
    };
    let deployment = of_kind("Deployment")?;
    let secret = of_kind("Secret")?;
    let config_map = of_kind("ConfigMap")?;
    let budget = of_kind("PodDisruptionBudget")?;
    let service = of_kind("Service")?;

    let replicas = get(deployment, &["spec", "replicas"])?
        .as_u64()
        .context("replicas")?;
    ensure!(replicas >= 2, "several replicas: {replicas}");
    let pod = get(deployment, &["spec", "template", "spec"])?;
    let container = get(pod, &["containers"])?
        .as_sequence()
        .and_then(|c| c.first())
        .context("a container")?;
    ensure!(str_at(container, &["readinessProbe", "httpGet", "path"])? == "/readyz");
    ensure!(str_at(container, &["livenessProbe", "httpGet", "path"])? == "/healthz");
    ensure!(str_at(container, &["readinessProbe", "httpGet", "scheme"])? == "HTTPS");
    ensure!(get(pod, &["securityContext", "runAsNonRoot"])?.as_bool() == Some(true));

    // The Secret holds the KEK and is what the pod mounts; the configuration points at its files.
    let secret_name = str_at(secret, &["metadata", "name"])?;
    ensure!(
        get(secret, &["stringData", "kek"]).is_ok(),
        "the Secret has the kek"
    );
    let volumes = get(pod, &["volumes"])?.as_sequence().context("volumes")?;
    ensure!(
        volumes
            .iter()
            .any(|v| str_at(v, &["secret", "secretName"]).ok() == Some(secret_name)),
        "the pod mounts the Secret"
    );

    // The budget and the Service select the Deployment's pods.
    let labels = get(deployment, &["spec", "template", "metadata", "labels"])?;
    ensure!(get(budget, &["spec", "selector", "matchLabels"])? == labels);
    ensure!(get(budget, &["spec", "minAvailable"])?.as_u64() < Some(replicas));
    ensure!(get(service, &["spec", "selector"])? == labels);

    // The configuration in the ConfigMap passes `orchard config check` (its secret file made up here).
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("orchard.toml");
    std::fs::write(&config, str_at(config_map, &["data", "orchard.toml"])?)?;
    let database_url = dir.path().join("database-url");
    std::fs::write(&database_url, "postgres://orchard:pw@db/orchard\n")?;
    let url_flag = database_url.to_str().context("utf-8 path")?;
    let effective = config_check(&config, &["--database-url-file", url_flag])?;
    ensure!(
        effective.contains("public_url = \"https://mdm.example.edu\""),
        "{effective}"
    );
    Ok(())
}

#[test]
fn the_shipped_configuration_passes_config_check() -> Result<()> {
    let effective = config_check(&deploy("orchard.toml"), &[])?;
    ensure!(
        effective.contains("data_dir = \"/var/lib/orchard\""),
        "{effective}"
    );
    ensure!(
        effective.contains("listen = \"0.0.0.0:8443\""),
        "{effective}"
    );
    Ok(())
}
